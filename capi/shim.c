// The public C names of libhashevict, each forwarding to the Go export of
// the same name with the prefix hevgo_ (capi/main.go). This file earns its
// place three ways: the exported symbols carry the exact signatures of the
// hand-written header, const included (cgo cannot express const pointers,
// and its generated prototypes would conflict with the header's); an engine
// pointer crosses into Go as an integer (uintptr_t), never as a pointer Go
// could mistake for its own memory (handles are tagged numbers, not
// addresses); and the static strings and the thread-local last error live
// in plain C, where a pointer to them stays valid after the call returns.
#include <stddef.h>
#include <string.h>

#include "hashevict.h"
#include "_cgo_export.h"

static _Thread_local char last_error[1024];

void hev_set_last_error(const char *msg, size_t n) {
    if (n >= sizeof last_error) n = sizeof last_error - 1;
    memcpy(last_error, msg, n);
    last_error[n] = '\0';
}

const char *hashevict_last_error(void) { return last_error; }

const char *hashevict_status_string(hashevict_status status) {
    switch (status) {
    case HASHEVICT_OK: return "HASHEVICT_OK";
    case HASHEVICT_ERR_INVALID_ARGUMENT: return "HASHEVICT_ERR_INVALID_ARGUMENT";
    case HASHEVICT_ERR_INVALID_HANDLE: return "HASHEVICT_ERR_INVALID_HANDLE";
    case HASHEVICT_ERR_OUT_OF_RANGE: return "HASHEVICT_ERR_OUT_OF_RANGE";
    case HASHEVICT_ERR_INVALID_PARAMS: return "HASHEVICT_ERR_INVALID_PARAMS";
    case HASHEVICT_ERR_UNSUPPORTED: return "HASHEVICT_ERR_UNSUPPORTED";
    case HASHEVICT_ERR_SHAPE: return "HASHEVICT_ERR_SHAPE";
    case HASHEVICT_ERR_NONFINITE: return "HASHEVICT_ERR_NONFINITE";
    case HASHEVICT_ERR_UNKNOWN_SEQUENCE: return "HASHEVICT_ERR_UNKNOWN_SEQUENCE";
    case HASHEVICT_ERR_SEQUENCE_EXISTS: return "HASHEVICT_ERR_SEQUENCE_EXISTS";
    case HASHEVICT_ERR_CHUNK_TOO_LARGE: return "HASHEVICT_ERR_CHUNK_TOO_LARGE";
    case HASHEVICT_ERR_BUFFER_TOO_SMALL: return "HASHEVICT_ERR_BUFFER_TOO_SMALL";
    case HASHEVICT_ERR_MEMORY_CAP: return "HASHEVICT_ERR_MEMORY_CAP";
    case HASHEVICT_ERR_POSITION: return "HASHEVICT_ERR_POSITION";
    case HASHEVICT_ERR_WRONG_MODE: return "HASHEVICT_ERR_WRONG_MODE";
    case HASHEVICT_ERR_CORRUPT_STATE: return "HASHEVICT_ERR_CORRUPT_STATE";
    case HASHEVICT_ERR_INCOMPATIBLE_STATE: return "HASHEVICT_ERR_INCOMPATIBLE_STATE";
    case HASHEVICT_ERR_INTERNAL: return "HASHEVICT_ERR_INTERNAL";
    }
    return "HASHEVICT_ERR_UNKNOWN_STATUS";
}

const char *hashevict_version(void) { return HASHEVICT_VERSION_STRING; }

int32_t hashevict_abi_version(void) { return HASHEVICT_ABI_VERSION; }

hashevict_params hashevict_default_params_v2(void) {
    hashevict_params p;
    memset(&p, 0, sizeof p);
    hevgo_default_params(&p);
    return p;
}

/* hashevict_params as headers up to 0.4.0 laid it out. A binary built
 * against them calls the symbol hashevict_default_params and receives the
 * struct by value in a buffer of this size: returning the larger struct
 * there would write past it, and its size field would promise fields the
 * caller never allocated. */
typedef struct hev_params_v1 {
    uint32_t size;
    int32_t mode, policy, probe, score, n_layers, n_kv_heads, n_q_heads,
        head_dim, hash_bits, budget, n_sink, n_recent, max_seqs;
    float decay;
    uint64_t seed;
    uint64_t memory_cap_bytes;
} hev_params_v1;

_Static_assert(sizeof(hev_params_v1) ==
                   offsetof(hashevict_params, memory_cap_bytes) + sizeof(uint64_t),
               "hev_params_v1 must be the prefix of hashevict_params up to memory_cap_bytes");
_Static_assert(offsetof(hev_params_v1, seed) == offsetof(hashevict_params, seed),
               "hev_params_v1 must lay its fields out as hashevict_params does");

#undef hashevict_default_params
hev_params_v1 hashevict_default_params(void);
hev_params_v1 hashevict_default_params(void) {
    hashevict_params p = hashevict_default_params_v2();
    hev_params_v1 v1;
    memcpy(&v1, &p, sizeof v1);
    v1.size = sizeof v1;
    return v1;
}

hashevict_status hashevict_engine_create(const hashevict_params *params,
                                         hashevict_engine **out) {
    uintptr_t h = 0;
    hashevict_status st = hevgo_engine_create((hashevict_params *)params, out != NULL, &h);
    if (out != NULL) *out = (hashevict_engine *)h;
    return st;
}

void hashevict_engine_free(hashevict_engine *engine) {
    if (engine != NULL) hevgo_engine_free((uintptr_t)engine);
}

hashevict_status hashevict_engine_params(const hashevict_engine *engine,
                                         hashevict_params *out) {
    return hevgo_engine_params((uintptr_t)engine, out);
}

const char *hashevict_kernels(void) {
    const char *name = hevgo_kernels();
    return name != NULL ? name : "unknown";
}

hashevict_status hashevict_seq_add(hashevict_engine *engine, int32_t seq) {
    return hevgo_seq_add((uintptr_t)engine, seq);
}

hashevict_status hashevict_seq_remove(hashevict_engine *engine, int32_t seq) {
    return hevgo_seq_remove((uintptr_t)engine, seq);
}

hashevict_status hashevict_seq_reset(hashevict_engine *engine, int32_t seq) {
    return hevgo_seq_reset((uintptr_t)engine, seq);
}

hashevict_status hashevict_seq_fork(hashevict_engine *engine, int32_t src,
                                    int32_t dst) {
    return hevgo_seq_fork((uintptr_t)engine, src, dst);
}

hashevict_status hashevict_place(hashevict_engine *engine, int32_t seq,
                                 int32_t layer, const hashevict_tensor *q,
                                 const hashevict_tensor *k,
                                 const int32_t *positions, int32_t n_tokens,
                                 int32_t *out_slots, int32_t *out_evicted) {
    return hevgo_place((uintptr_t)engine, seq, layer, (hashevict_tensor *)q,
                       (hashevict_tensor *)k, (int32_t *)positions, n_tokens,
                       out_slots, out_evicted);
}

hashevict_status hashevict_place_async(hashevict_engine *engine, int32_t seq,
                                       int32_t layer,
                                       const hashevict_tensor *q,
                                       const hashevict_tensor *k,
                                       const int32_t *positions,
                                       int32_t n_tokens, int32_t *out_slots,
                                       int32_t *out_evicted) {
    /* The outputs are device addresses: integers to Go, never pointers. */
    return hevgo_place_async((uintptr_t)engine, seq, layer,
                             (hashevict_tensor *)q, (hashevict_tensor *)k,
                             (int32_t *)positions, n_tokens,
                             (uintptr_t)out_slots, (uintptr_t)out_evicted);
}

hashevict_status hashevict_observe(hashevict_engine *engine, int32_t seq,
                                   int32_t layer, const hashevict_tensor *q,
                                   const hashevict_tensor *k,
                                   const int32_t *positions, int32_t n_tokens) {
    return hevgo_observe((uintptr_t)engine, seq, layer, (hashevict_tensor *)q,
                         (hashevict_tensor *)k, (int32_t *)positions, n_tokens);
}

hashevict_status hashevict_compress(hashevict_engine *engine, int32_t seq,
                                    int32_t layer,
                                    const hashevict_tensor *q_window,
                                    int32_t n_window,
                                    const hashevict_tensor *k,
                                    const int32_t *positions, int32_t n_tokens,
                                    int32_t pool, int32_t score_form,
                                    int32_t *out_slots) {
    return hevgo_compress((uintptr_t)engine, seq, layer,
                          (hashevict_tensor *)q_window, n_window,
                          (hashevict_tensor *)k, (int32_t *)positions,
                          n_tokens, pool, score_form, out_slots);
}

hashevict_status hashevict_compress_score(hashevict_engine *engine,
                                          int32_t seq, int32_t layer,
                                          const hashevict_tensor *q_window,
                                          const int32_t *window_positions,
                                          int32_t n_window, int32_t pool,
                                          int32_t score_form) {
    return hevgo_compress_score((uintptr_t)engine, seq, layer,
                                (hashevict_tensor *)q_window,
                                (int32_t *)window_positions, n_window, pool,
                                score_form);
}

hashevict_status hashevict_slot_positions(hashevict_engine *engine,
                                          int32_t seq, int32_t layer,
                                          int32_t kv_head,
                                          int32_t *out_positions,
                                          int32_t capacity) {
    return hevgo_slot_positions((uintptr_t)engine, seq, layer, kv_head,
                                out_positions, capacity);
}

hashevict_status hashevict_evictions(hashevict_engine *engine, int32_t seq,
                                     int32_t *out_positions, int32_t capacity,
                                     int32_t *out_count) {
    return hevgo_evictions((uintptr_t)engine, seq, out_positions, capacity,
                           out_count);
}

hashevict_status hashevict_token_positions(hashevict_engine *engine,
                                           int32_t seq, int32_t *out_positions,
                                           int32_t capacity,
                                           int32_t *out_count) {
    return hevgo_token_positions((uintptr_t)engine, seq, out_positions,
                                 capacity, out_count);
}

hashevict_status hashevict_set_layer_window(hashevict_engine *engine,
                                            int32_t layer, int32_t window) {
    return hevgo_set_layer_window((uintptr_t)engine, layer, window);
}

hashevict_status hashevict_hash(hashevict_engine *engine, int32_t layer,
                                const hashevict_tensor *x, uint64_t *out,
                                int64_t capacity) {
    return hevgo_hash((uintptr_t)engine, layer, (hashevict_tensor *)x, out,
                      capacity);
}

hashevict_status hashevict_projection(hashevict_engine *engine, int32_t layer,
                                      float *out, int64_t capacity) {
    return hevgo_projection((uintptr_t)engine, layer, out, capacity);
}

hashevict_status hashevict_stats_get(hashevict_engine *engine, int32_t seq,
                                     hashevict_stats *out) {
    return hevgo_stats_get((uintptr_t)engine, seq, out);
}

hashevict_status hashevict_seq_state_size(hashevict_engine *engine,
                                          int32_t seq, size_t *out_size) {
    return hevgo_seq_state_size((uintptr_t)engine, seq, out_size);
}

hashevict_status hashevict_seq_state_save(hashevict_engine *engine,
                                          int32_t seq, void *buf,
                                          size_t capacity,
                                          size_t *out_written) {
    return hevgo_seq_state_save((uintptr_t)engine, seq, buf, capacity,
                                out_written);
}

hashevict_status hashevict_seq_state_load(hashevict_engine *engine,
                                          int32_t seq, const void *buf,
                                          size_t size) {
    return hevgo_seq_state_load((uintptr_t)engine, seq, (void *)buf, size);
}
