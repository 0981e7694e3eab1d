/*
 * hashevict_llama.h — HashEvict for a stock llama.cpp context.
 *
 * Any llama.cpp program adds eviction in four calls:
 *
 *   hev_llama *hl = hev_llama_new(model, &params, err, sizeof err);
 *   hev_llama_attach(hl, &cparams);          // before llama_init_from_model
 *   ...
 *   hev_llama_begin(hl, seq, positions, n);  // before each llama_decode
 *   llama_decode(ctx, batch);
 *   hev_llama_evict(hl, ctx, seq, &dropped); // after it: drops positions
 *
 * How it works: the llama.cpp graph callback (cb_eval) asks for the nodes
 * named "Qcur-<layer>" and "Kcur-<layer>" whose op is GGML_OP_ROPE, i.e. the
 * queries and keys after rotary embedding; the filter runs in C, so only
 * 2 nodes per layer are surfaced. Their rows go to libhashevict in token
 * mode (hashevict_observe); after the decode, hashevict_evictions chooses
 * positions and llama_memory_seq_rm drops them from every layer.
 *
 * Costs and limits (measured in docs/llamacpp.md):
 *  - Decisions are one step late: the tokens dropped after step t were still
 *    attended to at step t (stock llama.cpp has no hook between Q/K and
 *    attention that could change the cache).
 *  - Asking for a node makes the ggml scheduler stop and hand it over: one
 *    synchronisation per observed node, 2 per layer per ubatch.
 *  - One sequence per llama_decode batch (the batch's tokens must all belong
 *    to the sequence passed to hev_llama_begin, in position order).
 *  - The context needs n_ctx >= budget + the largest batch.
 *
 * Thread rules: one hev_llama per llama_context; calls from the thread that
 * drives that context.
 */
#ifndef HASHEVICT_LLAMA_H
#define HASHEVICT_LLAMA_H

#include <stddef.h>
#include <stdint.h>

#include "hashevict.h"
#include "llama.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hev_llama hev_llama;

/* Costs measured by the integration, cumulative. */
typedef struct hev_llama_stats {
    uint64_t nodes_observed;   /* Q/K nodes handed over by the scheduler */
    uint64_t observe_ns;       /* time inside hashevict_observe (+ copies) */
    uint64_t evict_ns;         /* time in hashevict_evictions + seq_rm */
    uint64_t positions_dropped;
    uint64_t decodes;
} hev_llama_stats;

/* Creates the integration for `model`. `params` gives the policy fields
 * (policy, probe, score, hash_bits, budget, n_sink, n_recent, seed, ...);
 * the shape fields (n_layers, n_kv_heads, n_q_heads, head_dim) and mode are
 * filled in from the model when the first graph runs. params->budget is the
 * number of positions kept per sequence. Returns NULL and writes a message
 * to err on failure. */
hev_llama *hev_llama_new(const struct llama_model *model,
                         const hashevict_params *params, char *err,
                         size_t err_len);

void hev_llama_free(hev_llama *hl);

/* Installs the graph callback into context parameters; call before
 * llama_init_from_model. */
void hev_llama_attach(hev_llama *hl, struct llama_context_params *cparams);

/* Declares the positions of the next llama_decode batch of `seq`. */
int hev_llama_begin(hev_llama *hl, llama_seq_id seq, const llama_pos *positions,
                    int32_t n_tokens);

/* After llama_decode: chooses positions to drop so that at most budget
 * remain, and drops them with llama_memory_seq_rm. *n_dropped (optional)
 * receives how many. Returns 0, or -1 with hev_llama_error() set (including
 * errors that happened inside the graph callback). */
int hev_llama_evict(hev_llama *hl, struct llama_context *ctx, llama_seq_id seq,
                    int32_t *n_dropped);

/* Forgets a sequence (after llama_memory_seq_rm(mem, seq, -1, -1)). */
int hev_llama_reset(hev_llama *hl, llama_seq_id seq);

/* The last error message ("" if none); owned by hl. */
const char *hev_llama_error(const hev_llama *hl);

hev_llama_stats hev_llama_get_stats(const hev_llama *hl);

/* The engine, once created (NULL before the first graph). */
hashevict_engine *hev_llama_engine(hev_llama *hl);

#ifdef __cplusplus
}
#endif

#endif
