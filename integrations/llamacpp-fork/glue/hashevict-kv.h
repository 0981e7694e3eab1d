// hashevict-kv.h — a llama_kv_placer backed by libhashevict (slot mode): one engine per
// context, one hashevict sequence per llama sequence. Copied into llama.cpp's common/ by
// integrations/llamacpp-fork/build.sh; needs only llama.h, ggml.h and hashevict.h.
#pragma once

#include "llama.h"

#include <cstdint>
#include <string>

// The --kv-evict* options. Enum values are those of hashevict.h.
struct hashevict_kv_config {
    bool     enabled = false;
    int32_t  policy  = 0;     // hashevict_policy (HASH)
    int32_t  budget  = 0;     // cells per sequence; 0: keep * (context per sequence)
    float    keep    = 0.5f;
    int32_t  bits    = 16;
    int32_t  probe   = 0;     // hashevict_probe (QUERY)
    int32_t  score   = 0;     // hashevict_score (INSTANT)
    int32_t  sink    = 4;
    int32_t  recent  = 10;
    uint64_t seed    = 0;
};

// Names on the command line -> enum values; false for an unknown name.
bool hashevict_kv_parse_policy(const std::string & name, int32_t & out); // hash sink-recent knorm random oracle
bool hashevict_kv_parse_probe (const std::string & name, int32_t & out); // query key
bool hashevict_kv_parse_score (const std::string & name, int32_t & out); // instant accumulated decayed

struct hashevict_kv;
struct hashevict_engine;

// n_ctx_seq: the context of one sequence, for cfg.keep. NULL with err set on bad options.
hashevict_kv * hashevict_kv_init(const llama_model * model, const hashevict_kv_config & cfg,
                                 uint32_t n_seq_max, uint32_t n_ctx_seq, std::string & err);
void hashevict_kv_free(hashevict_kv * kv); // NULL is a no-op; after the context is freed

// Borrowed by llama_context_params.kv_placer; lives as long as kv.
const llama_kv_placer * hashevict_kv_placer(const hashevict_kv * kv);

// The engine, created at the first placement (its head_dim comes from the graph); NULL before.
hashevict_engine * hashevict_kv_engine(hashevict_kv * kv);

// Placements that failed (logged; their tokens went to the KV cache's own cells).
int64_t hashevict_kv_failures(const hashevict_kv * kv);
