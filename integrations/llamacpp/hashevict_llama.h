/*
 * hashevict_llama.h — HashEvict for a stock llama.cpp context.
 * SPDX-License-Identifier: MIT (see LICENSE)
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
 * How it works: the graph callback (cb_eval) asks for the nodes named exactly
 * "Qcur-<layer>" and "Kcur-<layer>" whose op is GGML_OP_ROPE, i.e. the
 * queries and keys after rotary embedding, so only 2 nodes per layer are
 * surfaced, and copies their rows as f32. Nothing calls libhashevict inside
 * the graph: hev_llama_evict, after llama_decode returned, feeds the copies
 * to hashevict_observe layer by layer (token mode), asks hashevict_evictions
 * which positions to drop, and drops them from every layer with
 * llama_memory_seq_rm.
 *
 * Costs and limits (measured in docs/llamacpp.md):
 *  - Decisions are one step late: the tokens dropped after step t were still
 *    attended to at step t (stock llama.cpp has no hook between Q/K and
 *    attention that could change the cache).
 *  - Asking for a node makes the ggml scheduler stop and hand it over: one
 *    synchronisation per observed node, 2 per layer per ubatch. Attach a
 *    ggml threadpool to the context, or every stop starts and joins the
 *    worker threads.
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
    uint64_t compress_ns;      /* time in hev_llama_compress (scores + seq_rm) */
} hev_llama_stats;

/* Creates the integration for `model` and its token-mode engine. `params`
 * gives the policy fields (policy, probe, score, hash_bits, budget, n_sink,
 * n_recent, seed, ...); the shape fields (n_layers, n_kv_heads, n_q_heads,
 * head_dim) are read from the model here, and mode is always TOKEN.
 * params->budget is the number of positions kept per sequence. Returns NULL
 * and writes a message to err (when err_len > 0) on failure. */
hev_llama *hev_llama_new(const struct llama_model *model,
                         const hashevict_params *params, char *err,
                         size_t err_len);

void hev_llama_free(hev_llama *hl);

/* Installs the graph callback into context parameters; call before
 * llama_init_from_model. A cb_eval already set in cparams is kept and
 * chained: it is asked about every node with its own user data, the
 * scheduler stops at the nodes either callback asks for, and it is handed
 * exactly the nodes it asked for (its false still cancels the graph). Set
 * your own callback before this call; attaching twice is harmless. */
void hev_llama_attach(hev_llama *hl, struct llama_context_params *cparams);

/* Declares the positions of the next llama_decode batch of `seq` (adds the
 * sequence to the engine the first time). Returns 0, or -1 with
 * hev_llama_error() set. */
int hev_llama_begin(hev_llama *hl, llama_seq_id seq, const llama_pos *positions,
                    int32_t n_tokens);

/* After llama_decode: chooses positions to drop so that at most budget
 * remain, and drops them with llama_memory_seq_rm. *n_dropped (optional)
 * receives how many. Returns 0, or -1 with hev_llama_error() set (including
 * errors that happened inside the graph callback). */
int hev_llama_evict(hev_llama *hl, struct llama_context *ctx, llama_seq_id seq,
                    int32_t *n_dropped);

/* Compress after prefill (SnapKV's setting; docs/llamacpp.md). While the
 * prompt is read, call this after each llama_decode instead of
 * hev_llama_evict: the batch is fed to the engine but nothing is dropped
 * (the context needs n_ctx >= prompt + batch), and the queries of the
 * newest `keep_window` positions of `seq` are kept for hev_llama_compress.
 * Returns 0, or -1 with hev_llama_error() set. */
int hev_llama_observe(hev_llama *hl, llama_seq_id seq, int32_t keep_window);

/* After the prompt was read with hev_llama_observe: scores every held
 * position of `seq` from the queries of its newest min(n_window, kept)
 * positions (hashevict_compress_score on every layer; pool and form as
 * there), then drops positions down to the budget with llama_memory_seq_rm,
 * as hev_llama_evict does. Policies other than hash drop by their own
 * scores, gathered while the prompt was observed. Later steps use
 * hev_llama_evict as usual. *n_dropped (optional) receives how many were
 * dropped. Returns 0, or -1 with hev_llama_error() set. */
int hev_llama_compress(hev_llama *hl, struct llama_context *ctx, llama_seq_id seq, int32_t n_window, int32_t pool,
                       int32_t form, int32_t *n_dropped);

/* Forgets a sequence (after llama_memory_seq_rm(mem, seq, -1, -1)).
 * Returns 0, or -1 with hev_llama_error() set. */
int hev_llama_reset(hev_llama *hl, llama_seq_id seq);

/* The last error message ("" if none); owned by hl, valid until the next
 * call on hl. */
const char *hev_llama_error(const hev_llama *hl);

hev_llama_stats hev_llama_get_stats(const hev_llama *hl);

/* The token-mode engine created by hev_llama_new; owned by hl. */
hashevict_engine *hev_llama_engine(hev_llama *hl);

#ifdef __cplusplus
}
#endif

#endif
