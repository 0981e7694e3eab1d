/*
 * hashevict.h — the C contract of libhashevict.
 * SPDX-License-Identifier: MIT. Copyright the hashevict authors (LICENSE).
 *
 * HashEvict (arXiv 2412.16187) decides, before attention runs, which cached
 * token a KV cache drops: every cached key carries a short binary code (the
 * signs of a Gaussian projection), every step hashes a probe (the query by
 * default), and the cached token whose code is farthest in Hamming distance
 * from the probe is evicted. No attention weights are needed.
 *
 * This header is hand-written and is the documentation. Every function states
 * its thread rules and who owns the memory it touches.
 *
 * General rules
 *  - Every function returning hashevict_status returns HASHEVICT_OK (0) on
 *    success and never aborts the process: a bug inside the library is
 *    reported as HASHEVICT_ERR_INTERNAL and poisons that engine.
 *  - On failure, hashevict_last_error() gives a message for the calling
 *    thread. Failing calls leave the engine and the sequence unchanged unless
 *    the function says otherwise.
 *  - Pointers passed in are borrowed for the duration of the call only; the
 *    library never keeps them.
 *  - Thread safety: all functions may be called from any thread. Calls on
 *    different sequences of one engine run in parallel; calls on the same
 *    sequence are serialised by the library. hashevict_engine_free must not
 *    race with other calls on the same engine: calls that start after it
 *    return HASHEVICT_ERR_INVALID_HANDLE.
 */
#ifndef HASHEVICT_H
#define HASHEVICT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HASHEVICT_VERSION_MAJOR 0
#define HASHEVICT_VERSION_MINOR 6
#define HASHEVICT_VERSION_PATCH 0
#define HASHEVICT_VERSION_STRING "0.6.0"
/* Bumped on every incompatible change of a struct or a signature. */
#define HASHEVICT_ABI_VERSION 1

/* ------------------------------------------------------------------------ */
/* Status codes. Values are pinned: never renumbered, never reused.         */
/* ------------------------------------------------------------------------ */
typedef int32_t hashevict_status;

#define HASHEVICT_OK                      0
/* A required pointer is NULL or a scalar argument is out of its domain. */
#define HASHEVICT_ERR_INVALID_ARGUMENT    1
/* The engine handle is NULL, already freed, or not from this library. */
#define HASHEVICT_ERR_INVALID_HANDLE      2
/* A layer, head or sequence id is outside [0, count). */
#define HASHEVICT_ERR_OUT_OF_RANGE        3
/* hashevict_params rejected by hashevict_engine_create (message says why). */
#define HASHEVICT_ERR_INVALID_PARAMS      4
/* A dtype, device or feature this build or machine does not support. */
#define HASHEVICT_ERR_UNSUPPORTED         5
/* A tensor descriptor's shape or strides disagree with the engine. */
#define HASHEVICT_ERR_SHAPE               6
/* An input vector holds NaN or +-Inf. */
#define HASHEVICT_ERR_NONFINITE           7
/* The sequence id is in range but was never added (or was removed). */
#define HASHEVICT_ERR_UNKNOWN_SEQUENCE    8
/* hashevict_seq_add / _fork onto an id that already exists. */
#define HASHEVICT_ERR_SEQUENCE_EXISTS     9
/* A chunk has more tokens than there are free plus evictable slots. */
#define HASHEVICT_ERR_CHUNK_TOO_LARGE    10
/* An output buffer is too small; the message gives the size needed. */
#define HASHEVICT_ERR_BUFFER_TOO_SMALL   11
/* The memory the engine would hold exceeds its bound (see
 * hashevict_params.memory_cap_bytes): nothing was allocated, and the message
 * names what the memory was for, the bytes, the bound and what is in use. */
#define HASHEVICT_ERR_MEMORY_CAP         12
/* Positions are negative, not strictly increasing, or not after the
 * positions already cached for that layer. */
#define HASHEVICT_ERR_POSITION           13
/* A slot-mode call on a token-mode engine or the reverse. */
#define HASHEVICT_ERR_WRONG_MODE         14
/* A saved state blob is truncated, corrupted or not a hashevict state. */
#define HASHEVICT_ERR_CORRUPT_STATE      15
/* A saved state blob comes from another format version, or from an engine
 * with other parameters (shape, policy, budget, protections, decay, seed). */
#define HASHEVICT_ERR_INCOMPATIBLE_STATE 16
/* A bug in the library (a recovered panic). The engine is poisoned: every
 * later call on it except hashevict_engine_free returns this status. */
#define HASHEVICT_ERR_INTERNAL           99

/* A static, never-freed English name for a status ("HASHEVICT_OK", ...).
 * Unknown values give "HASHEVICT_ERR_UNKNOWN_STATUS". Thread-safe. */
const char *hashevict_status_string(hashevict_status status);

/* The message of the most recent call on the calling thread that returned a
 * status other than HASHEVICT_OK ("" if none). The pointer is owned by the
 * library and stays valid until the next hashevict_* call on the same
 * thread. Thread-safe (the message is thread-local). */
const char *hashevict_last_error(void);

/* ------------------------------------------------------------------------ */
/* Versions                                                                 */
/* ------------------------------------------------------------------------ */

/* The library's version string, e.g. "0.1.0" (static storage). */
const char *hashevict_version(void);
/* The library's HASHEVICT_ABI_VERSION. Callers compare it with the macro
 * they were compiled against and refuse to run on a mismatch. */
int32_t hashevict_abi_version(void);

/* ------------------------------------------------------------------------ */
/* Enumerations (values pinned)                                             */
/* ------------------------------------------------------------------------ */

/* How the runtime stores its cache. */
typedef enum hashevict_mode {
    /* The runtime keeps `budget` slots per (sequence, layer, KV head);
     * hashevict_place tells where each new token goes. */
    HASHEVICT_MODE_SLOT = 0,
    /* The runtime drops whole positions across all layers and heads (stock
     * llama.cpp); hashevict_observe + hashevict_evictions. */
    HASHEVICT_MODE_TOKEN = 1
} hashevict_mode;

typedef enum hashevict_policy {
    /* HashEvict: evict the largest Hamming distance to the probe. */
    HASHEVICT_POLICY_HASH = 0,
    /* StreamingLLM: sinks + recent window; evicts the oldest position. */
    HASHEVICT_POLICY_SINK_RECENT = 1,
    /* Knorm (Devoto et al. 2024): evicts the largest key L2 norm
     * (summed over the group's KV heads in token mode). */
    HASHEVICT_POLICY_KNORM = 2,
    /* Uniformly random among the evictable, from params.seed. */
    HASHEVICT_POLICY_RANDOM = 3,
    /* Attention oracle (H2O-like): accumulated exact softmax attention of
     * the probes' queries over the cached keys; evicts the smallest. Keeps
     * every cached key in f32; CPU only; meant for evaluation. */
    HASHEVICT_POLICY_ORACLE = 4
} hashevict_policy;

typedef enum hashevict_probe {
    /* Hash the current queries (the paper). With GQA, distances are summed
     * over the query heads of the KV head's group. */
    HASHEVICT_PROBE_QUERY = 0,
    /* Hash the current key (the authors' public code). */
    HASHEVICT_PROBE_KEY = 1
} hashevict_probe;

typedef enum hashevict_score {
    /* Distance to this step's probe only (the paper). */
    HASHEVICT_SCORE_INSTANT = 0,
    /* Mean distance over every step since the token was cached. */
    HASHEVICT_SCORE_ACCUMULATED = 1,
    /* Exponential moving average: s = decay*s + (1-decay)*d. */
    HASHEVICT_SCORE_DECAYED = 2
} hashevict_score;

/* What the hash policy's step score estimates from a cached key's code
 * (params.estimate). Since 0.5.0. */
typedef enum hashevict_estimate {
    /* The Hamming distance to the probes, summed over them; the largest is
     * evicted (the paper). */
    HASHEVICT_ESTIMATE_DISTANCE = 0,
    /* The attention logit, sum over the probes p of
     * ||p|| * ||k|| * cos(pi * ham(p, k) / hash_bits) / sqrt(head_dim)
     * (averaged over a chunk's tokens as the distance is); the smallest is
     * evicted. A key with a large norm is kept at a wider angle. Keeps each
     * cached key's norm (4 more bytes per slot and head). */
    HASHEVICT_ESTIMATE_LOGIT = 1
} hashevict_estimate;

typedef enum hashevict_dtype {
    HASHEVICT_DTYPE_F32 = 0,
    HASHEVICT_DTYPE_F16 = 1,
    HASHEVICT_DTYPE_BF16 = 2
} hashevict_dtype;

typedef enum hashevict_device {
    HASHEVICT_DEVICE_HOST = 0,
    /* CUDA device memory (cuMemAlloc, cudaMalloc, a torch CUDA tensor). The
     * context is the one that owns the pointer (the calling thread's current
     * context does not matter); the work goes on the tensor's stream. Taken
     * by hashevict_place, hashevict_place_async and hashevict_hash only (see
     * "CUDA tensors" below hashevict_place); other calls refuse it
     * (UNSUPPORTED). */
    HASHEVICT_DEVICE_CUDA = 1
} hashevict_device;

/* ------------------------------------------------------------------------ */
/* Engine parameters                                                        */
/* ------------------------------------------------------------------------ */

typedef struct hashevict_params {
    /* sizeof(hashevict_params) as the caller compiled it. Must be first. */
    uint32_t size;
    int32_t mode;         /* hashevict_mode, default SLOT */
    int32_t policy;       /* hashevict_policy, default HASH */
    int32_t probe;        /* hashevict_probe, default QUERY */
    int32_t score;        /* hashevict_score, default INSTANT */
    int32_t n_layers;     /* >= 1, no default (0) */
    int32_t n_kv_heads;   /* >= 1, no default (0) */
    int32_t n_q_heads;    /* multiple of n_kv_heads, no default (0) */
    int32_t head_dim;     /* 1 .. 4096, no default (0) */
    int32_t hash_bits;    /* 8, 16, 32, 64, 128 or 256; default 16 */
    /* Slot mode: slots per (sequence, layer, KV head). Token mode: positions
     * kept per sequence after hashevict_evictions. Must exceed
     * n_sink + n_recent. No default (0). */
    int32_t budget;
    int32_t n_sink;       /* positions 0 .. n_sink-1 never evicted; default 4 */
    /* positions >= t - n_recent (t: newest position) never evicted;
     * default 10 */
    int32_t n_recent;
    int32_t max_seqs;     /* sequence ids are 0 .. max_seqs-1; default 64 */
    float decay;          /* SCORE_DECAYED factor in (0, 1); default 0.9 */
    uint64_t seed;        /* projections and the random policy; default 0 */
    /* A bound on the memory the engine holds: its projections and sequence
     * directory, every sequence's tables, the scratch of its steps (kept
     * for its largest chunk) and device memory. Every allocation is sized
     * and counted before it is made; one that would not fit returns
     * MEMORY_CAP and allocates nothing. 0 = no cap of the caller's
     * (default). Whatever the caps, the host memory of all the process's
     * engines together is also bounded by half the physical memory
     * available to the process (an engine's share leaves that total at
     * hashevict_engine_free), as read at each create: the least of
     * /proc/meminfo MemTotal, the memory limits of its cgroups (v2
     * memory.max, v1 memory.limit_in_bytes, up to the root) and RLIMIT_AS.
     * Half, because the Go heap may grow to twice its live data before it
     * is collected, and the host needs the rest. Where none of these can be
     * read (not Linux), the cap alone bounds. */
    uint64_t memory_cap_bytes;
    /* Fields below are new in 0.5.0: a caller compiled against an older
     * header passes that header's size (through memory_cap_bytes) and gets
     * their defaults; a size between the two is refused (INVALID_ARGUMENT).
     * An older library
     * ignores them (check hashevict_version() before relying on them); this
     * one refuses a size larger than its own struct unless the bytes it does
     * not know are all zero (INVALID_ARGUMENT). */
    /* hashevict_estimate, default DISTANCE (the paper). HASH policy only
     * (another policy with a non-default value: INVALID_PARAMS). Runs on the
     * host: CUDA tensors are refused (UNSUPPORTED), and so is slot-mode
     * hashevict_compress with LOGIT (it keeps no key norms). */
    int32_t estimate;
    /* Weight of the redundancy term, in [0, 64]; 0 = off (default, the
     * paper). Each step, per layer and KV head, the majority code of the
     * cached and new keys (bit j set when more than half of their codes set
     * it) is formed; a key whose code is close to it is repeated content
     * and is evicted sooner, a key unlike the rest is kept. The term added
     * to a key's step score at distance r from the majority is, with
     * DISTANCE, redundancy * G * (hash_bits - r) (G: probes per token, the
     * group size with the query probe, 1 with the key probe); with LOGIT,
     * redundancy * (sum of the probes' norms per token) * (mean key norm) *
     * cos(pi * r / hash_bits) / sqrt(head_dim). HASH policy only, host only,
     * as estimate. docs/eval/streaming-dev.md gives the weight chosen on
     * the development text for streaming. */
    float redundancy;
} hashevict_params;

/* Defaults as documented field by field above; the shape fields are 0 and
 * must be set by the caller; size is sizeof(hashevict_params). Thread-safe.
 *
 * Call it as hashevict_default_params(): the name is a macro for the symbol
 * of this header's layout. The struct is returned by value, into a buffer
 * of the size the caller was compiled with, so every growth of
 * hashevict_params adds a symbol: hashevict_default_params (the symbol)
 * still returns the 0.4 layout, with its size, to binaries built against
 * headers up to 0.4; hashevict_default_params_v2 returns the layout since
 * 0.5.0. */
hashevict_params hashevict_default_params_v2(void);
#define hashevict_default_params hashevict_default_params_v2

/* ------------------------------------------------------------------------ */
/* Tensor descriptors                                                       */
/* ------------------------------------------------------------------------ */

/* A read-only view of rows [token][head][head_dim]. Elements inside a row are
 * contiguous; strides are in bytes and must be positive multiples of the
 * element size (rows may overlap: they are only read). Example for a contiguous [n_tokens][n_heads][head_dim] f32
 * array: head_stride = head_dim*4, token_stride = n_heads*head_dim*4. */
typedef struct hashevict_tensor {
    const void *data;
    int32_t dtype;          /* hashevict_dtype */
    int32_t device;         /* hashevict_device */
    int64_t head_dim;       /* must equal params.head_dim */
    int64_t n_heads;        /* n_q_heads for queries, n_kv_heads for keys */
    int64_t n_tokens;       /* must equal the call's n_tokens */
    int64_t head_stride;    /* bytes between heads of one token */
    int64_t token_stride;   /* bytes between tokens */
    /* CUDA stream (CUstream) for DEVICE_CUDA: a stream of the context that
     * owns data, or NULL (the legacy default stream), CU_STREAM_LEGACY or
     * CU_STREAM_PER_THREAD; all tensors of one call must give the same one.
     * Must be NULL for DEVICE_HOST: the library reads host memory at once
     * and orders nothing after a stream, so a stream there is refused
     * (INVALID_ARGUMENT), not ignored. */
    void *stream;
} hashevict_tensor;

/* ------------------------------------------------------------------------ */
/* Engine                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct hashevict_engine hashevict_engine;

/* Creates an engine. `params` is copied. On success *out is a new handle
 * owned by the caller (free it with hashevict_engine_free); on failure *out
 * is set to NULL when out is not NULL. Statuses: INVALID_ARGUMENT (NULL
 * params or out, or params->size too small), INVALID_PARAMS, MEMORY_CAP
 * (the projections, the sequence directory and one sequence at full budget,
 * with the scratch of a one-token step, do not fit the bound of
 * memory_cap_bytes; nothing is allocated then). Thread-safe. */
hashevict_status hashevict_engine_create(const hashevict_params *params,
                                         hashevict_engine **out);

/* Frees the engine and every sequence in it. NULL is a no-op. Freeing an
 * already freed or foreign handle is also a no-op (it is not dereferenced).
 * Must not race with other calls on the same engine. */
void hashevict_engine_free(hashevict_engine *engine);

/* Copies the engine's parameters to *out.
 * out->size must be set by the caller; at most out->size bytes are written.
 * Thread-safe. */
hashevict_status hashevict_engine_params(const hashevict_engine *engine,
                                         hashevict_params *out);

/* The name of the CPU kernel set in use: "avx512", "avx2" or "generic"
 * (static storage; "unknown" only after an internal error in this call).
 * Thread-safe. */
const char *hashevict_kernels(void);

/* ------------------------------------------------------------------------ */
/* Sequences                                                                */
/* ------------------------------------------------------------------------ */

/* Adds an empty sequence. Statuses: OUT_OF_RANGE (seq outside
 * [0, max_seqs)), SEQUENCE_EXISTS, MEMORY_CAP (its tables, allocated at full
 * budget in slot mode, would exceed the bound of memory_cap_bytes; nothing
 * is allocated then). */
hashevict_status hashevict_seq_add(hashevict_engine *engine, int32_t seq);

/* Removes a sequence and frees its state. UNKNOWN_SEQUENCE if absent. */
hashevict_status hashevict_seq_remove(hashevict_engine *engine, int32_t seq);

/* Empties a sequence (as if removed and added again). Slot mode clears the
 * tables in place, so a reset never needs more memory. */
hashevict_status hashevict_seq_reset(hashevict_engine *engine, int32_t seq);

/* Copies sequence src into a new sequence dst (beam search,
 * llama_memory_seq_cp). dst must not exist. The copy is deep: later calls on
 * one never affect the other. MEMORY_CAP if the copy would exceed the bound
 * of memory_cap_bytes (nothing is allocated then). */
hashevict_status hashevict_seq_fork(hashevict_engine *engine, int32_t src,
                                    int32_t dst);

/* Saved state: a sequence travels with the runtime's own saved state
 * (llama_state_seq_get_data / _set_data). The blob is versioned and
 * checksummed and only loads into an engine with the same parameters. */

/* The size in bytes of sequence seq's saved state, as of now. */
hashevict_status hashevict_seq_state_size(hashevict_engine *engine,
                                          int32_t seq, size_t *out_size);

/* Writes sequence seq's state into buf (capacity bytes, owned by the
 * caller); *out_written (optional) receives its size. BUFFER_TOO_SMALL,
 * with the size needed in the message and in *out_written, when it does not
 * fit (nothing is written then). buf may be NULL only with capacity 0: that
 * asks for the size, answered as any buffer too small (BUFFER_TOO_SMALL, the
 * size in *out_written), so a caller that tests for OK never takes it for a
 * saved state. NULL with capacity > 0 is INVALID_ARGUMENT. */
hashevict_status hashevict_seq_state_save(hashevict_engine *engine,
                                          int32_t seq, void *buf,
                                          size_t capacity,
                                          size_t *out_written);

/* Restores a saved state into sequence seq, replacing it if it exists and
 * adding it otherwise. CORRUPT_STATE, INCOMPATIBLE_STATE or MEMORY_CAP leave
 * the engine unchanged. Until the swap, the loaded sequence and the one it
 * replaces are both held: MEMORY_CAP, before anything is decoded, if the
 * bound of memory_cap_bytes cannot hold both. buf is only read during the
 * call. */
hashevict_status hashevict_seq_state_load(hashevict_engine *engine,
                                          int32_t seq, const void *buf,
                                          size_t size);

/* ------------------------------------------------------------------------ */
/* Slot mode                                                                */
/* ------------------------------------------------------------------------ */

/* Places n_tokens new tokens of sequence `seq` into layer `layer`'s slots.
 * Call once per layer per step, after Q and K are rotated, before attention.
 *
 * q: queries, n_heads = n_q_heads; may be NULL unless the policy reads
 *    them (HASH with PROBE_QUERY, or ORACLE). A q the policy does not read
 *    may still be passed: its descriptor is checked (SHAPE, UNSUPPORTED,
 *    INVALID_ARGUMENT as for k) but its values are not read, so NaN or Inf
 *    in it is not refused. k: keys, n_heads = n_kv_heads; both with
 *    n_tokens rows. positions: n_tokens positions, >= 0, strictly increasing,
 *    and greater than every position already placed in this (seq, layer).
 *
 * out_slots (n_tokens * n_kv_heads, written [token][kv_head]) receives the
 * slot in [0, budget) where each token's key/value for each KV head must be
 * written. out_evicted (same size, may be NULL) receives the position that
 * was in that slot, or -1 for a free slot.
 *
 * Semantics of one call (a "step"), per KV head h:
 *  1. the probe set is the codes of the chunk's queries of h's group (or
 *     its keys, with PROBE_KEY); the step distance of a code c is
 *     float32(S) * (1 / float32(n_tokens)), S = sum over probes of
 *     popcount(c xor probe) (exact float32 formulas: docs/algorithm.md);
 *  2. every cached slot's score is updated with its step distance;
 *  3. slots holding a position < n_sink or >= t - n_recent (t: the chunk's
 *     last position) are protected;
 *  4. tokens take free slots in ascending order, then the evictable slots of
 *     largest score (ties: lowest slot), in token order;
 *  5. each new token's score starts at its own step distance.
 * The tokens of one chunk never evict each other. With n_tokens = 1 this is
 * exactly the paper's decode step. CHUNK_TOO_LARGE if the chunk does not fit
 * in free plus evictable slots (nothing is changed then).
 *
 * Statuses besides the general ones: INVALID_ARGUMENT (NULL k, positions,
 * out_slots or tensor data, n_tokens < 1, a stream on a host tensor),
 * WRONG_MODE, OUT_OF_RANGE (layer, seq), UNKNOWN_SEQUENCE, SHAPE,
 * UNSUPPORTED (dtype, device), NONFINITE (in a tensor the policy reads),
 * POSITION, CHUNK_TOO_LARGE, MEMORY_CAP (the step scratch of a chunk longer
 * than any before in this sequence, which grows with n_tokens x heads x
 * code words, would exceed the bound of memory_cap_bytes). */
hashevict_status hashevict_place(hashevict_engine *engine, int32_t seq,
                                 int32_t layer, const hashevict_tensor *q,
                                 const hashevict_tensor *k,
                                 const int32_t *positions, int32_t n_tokens,
                                 int32_t *out_slots, int32_t *out_evicted);

/* CUDA tensors (DEVICE_CUDA). Implemented and tested against a driver that
 * emulates the kernels on the host; not yet run on a GPU (docs/cuda.md).
 * libcuda.so.1 is loaded on the first CUDA tensor (HASHEVICT_LIBCUDA=path
 * overrides the search); the library needs no CUDA to build or load.
 *
 * A sequence is a host or a CUDA sequence, decided by its first step's
 * tensors, until it is reset or removed. A CUDA sequence keeps its tables on
 * the device of that step (one context); a step of it with host tensors, or
 * with tensors of another context, is refused, as is a CUDA step on a
 * sequence with host steps (INVALID_ARGUMENT or UNSUPPORTED, with a message;
 * nothing changes). Only POLICY_HASH has a device path, in both modes
 * (hashevict_place, _place_async, hashevict_observe with
 * hashevict_evictions); the other policies refuse CUDA tensors
 * (UNSUPPORTED). hashevict_seq_fork of a CUDA sequence copies its device
 * state (on the stream of its last step, and waits): the fork is a CUDA
 * sequence on the same context. hashevict_slot_positions of a CUDA
 * sequence reads the device's record (after the work on the stream of its
 * last step, which it waits for). hashevict_seq_state_size/_save of a
 * CUDA sequence copy its device tables to the host (after the work on the
 * stream of its last step, which they wait for) into the host's blob
 * format: the blob loads into any engine of the same parameters, as a host
 * sequence (a load never puts a sequence on a device). It is the host
 * engine's blob for the same steps, byte for byte, except that with
 * SCORE_INSTANT in slot mode the stored scores of cached slots, which that
 * score never reads, may differ. hashevict_compress* on a CUDA sequence
 * return UNSUPPORTED; hashevict_seq_reset,
 * hashevict_seq_remove, a hashevict_seq_state_load over it and
 * hashevict_engine_free free its device memory; hashevict_stats_get counts
 * its steps, tokens, evictions and cached slots (state_bytes counts host
 * memory only). Device memory (the tables, the step buffers, each layer's
 * projection) counts against memory_cap_bytes (MEMORY_CAP, nothing
 * allocated).
 *
 * hashevict_place with CUDA q and k (positions, out_slots and out_evicted in
 * host memory: device memory there is INVALID_ARGUMENT) queues the step on the tensors' stream after the work the
 * caller queued there, then waits for that stream and returns the results
 * in host memory. n_tokens = 1 is the decode step; a chunk of n_tokens > 1
 * works while it fits in the free slots (a prefill into an empty cache) and
 * while n_tokens x (group size, or 1 with PROBE_KEY) x words_per_code <= 1024;
 * a chunk that would evict, or a larger one, is UNSUPPORTED with nothing
 * changed (place it in smaller chunks or one token at a time). NaN or Inf in
 * a row the policy reads is NONFINITE, nothing changed. Decisions are those
 * of the host engine, bit for bit. Every step of a sequence must go on one
 * stream, or the caller orders them: when the stream changes, the library
 * first waits for the previous stream (which must still exist). A layer's
 * first step allocates and initialises its device state, and waits.
 *
 * hashevict_observe with CUDA q and k (token mode; positions in host
 * memory) hashes them on the tensors' stream and waits for the hashes, so
 * that NaN or Inf is NONFINITE with nothing changed, as on the host; the
 * score updates and stores are then queued without waiting. A chunk is one
 * step, as on the host, and must have n_tokens x (group size, or 1 with
 * PROBE_KEY) x words_per_code <= 1024 (else UNSUPPORTED, nothing changed).
 * The positions, their order and their slots are kept on the host as for a
 * host sequence (same checks and statuses; hashevict_token_positions
 * works); the tables grow with the positions held as on the host, each
 * growth copying them on the stream and waiting. hashevict_evictions of a
 * CUDA sequence sums the scores on the device (once per distinct set of
 * layers whose windows see a candidate), waits for the stream, and chooses
 * on the host: the positions the host engine would drop, bit for bit.
 *
 * Errors
 * of the driver (no libcuda, the toolkit's stub, no device, no kernel image
 * for this GPU: UNSUPPORTED; a host pointer marked DEVICE_CUDA, a pointer or
 * stream of another context, a misaligned pointer: INVALID_ARGUMENT; device
 * out of memory: MEMORY_CAP) leave the engine usable, host calls included. */

/* The asynchronous decode step of a CUDA sequence: as hashevict_place with
 * n_tokens = 1 (other counts: UNSUPPORTED), but out_slots and out_evicted
 * (n_kv_heads int32 each; out_evicted may be NULL) are DEVICE memory of the
 * tensors' context, written on the tensors' stream, and the call returns
 * without waiting for the device (except on a layer's first step, which
 * allocates and waits). This is what a GPU runtime feeds its own cache
 * write with (for llama.cpp: the row indices of ggml_set_rows), queued on
 * the same stream after this call.
 *
 * positions is host memory (one position; device memory: INVALID_ARGUMENT). q and k are read, and out_slots
 * and out_evicted written, in stream order; they must stay valid until the
 * stream has passed this call's work. Steps of one sequence may mix
 * hashevict_place and hashevict_place_async; each sees the state the
 * previous ones leave on the stream. Calls on one sequence are serialised
 * by the library in host order, which is the order their work enters the
 * stream. A NaN or Inf row cannot be refused before the device runs the
 * step: its code is all zeros and the token is placed with it (the status
 * is OK). Statuses: those of hashevict_place for CUDA tensors, plus
 * INVALID_ARGUMENT when k is not DEVICE_CUDA or an output is not device
 * memory of the tensors' context. Thread rules as for hashevict_place. */
hashevict_status hashevict_place_async(hashevict_engine *engine, int32_t seq,
                                       int32_t layer,
                                       const hashevict_tensor *q,
                                       const hashevict_tensor *k,
                                       const int32_t *positions,
                                       int32_t n_tokens, int32_t *out_slots,
                                       int32_t *out_evicted);

/* Copies the positions held by the slots of (seq, layer, kv_head) into
 * out_positions (budget entries; -1 for a free slot). */
hashevict_status hashevict_slot_positions(hashevict_engine *engine,
                                          int32_t seq, int32_t layer,
                                          int32_t kv_head,
                                          int32_t *out_positions,
                                          int32_t capacity);

/* ------------------------------------------------------------------------ */
/* Token mode                                                               */
/* ------------------------------------------------------------------------ */

/* Records layer `layer`'s queries and keys for n_tokens new positions of
 * `seq` and updates the scores of every position this layer holds (step
 * semantics as in hashevict_place, steps 1, 2 and 5). The sequence's tables
 * grow with the positions held between evictions; MEMORY_CAP if that, or the
 * step scratch of a chunk longer than any before, would exceed the bound of
 * params.memory_cap_bytes (nothing is changed then). Every layer must be
 * observed for every position, in increasing position order per layer; a
 * position is a candidate for eviction only once all layers observed it.
 * So every layer observes the same positions in the same order, though a
 * layer may run ahead of the others by any number of calls: a layer's
 * positions must begin with the positions the other layers observed and it
 * has not, in order (a call with fewer tokens takes the first of them), and
 * any further ones must be newer than every position observed. A call that
 * would skip such a position, or observe one another layer has already
 * passed, returns HASHEVICT_ERR_POSITION (the message names the layer and
 * the position) and changes nothing; such a position could never be
 * dropped. Arguments as in hashevict_place. */
hashevict_status hashevict_observe(hashevict_engine *engine, int32_t seq,
                                   int32_t layer, const hashevict_tensor *q,
                                   const hashevict_tensor *k,
                                   const int32_t *positions, int32_t n_tokens);

/* Decides which positions of `seq` to drop so that at most `budget` remain.
 * A position's score is the sum over layers and KV heads of its per-head
 * score (with layer windows: see hashevict_set_layer_window); positions
 * < n_sink or >= t - n_recent (t: newest observed position)
 * are protected; the largest scores go first (ties: lowest position). At
 * most `capacity` positions are chosen; they are forgotten by the engine and
 * written to out_positions in ascending order; *out_count receives how many.
 * Call again if *out_count == capacity, there may be more. capacity must be
 * at least 1: chosen positions are forgotten at once, so there is no "how
 * many" query; capacity < 1 is INVALID_ARGUMENT with nothing evicted (ask
 * hashevict_stats_get for `cached` and compare it with the budget instead).
 * The caller drops each from its cache (llama_memory_seq_rm(mem, seq, p,
 * p + 1)). */
hashevict_status hashevict_evictions(hashevict_engine *engine, int32_t seq,
                                     int32_t *out_positions, int32_t capacity,
                                     int32_t *out_count);

/* Copies the positions a token-mode sequence holds, ascending, into
 * out_positions; *out_count receives the number held (even when larger than
 * capacity, in which case BUFFER_TOO_SMALL is returned and nothing copied). */
hashevict_status hashevict_token_positions(hashevict_engine *engine,
                                           int32_t seq, int32_t *out_positions,
                                           int32_t capacity,
                                           int32_t *out_count);

/* Sets the attention window of `layer` in a token-mode engine: the layer
 * attends only to positions p > t - window from a query at position t, as a
 * sliding-window layer does (llama.cpp: llama_model_n_swa for the layers
 * llama_model_is_swa reports); 0, the default, means every position.
 * With a window set on any layer, hashevict_evictions scores a position by
 * the MEAN of its per-head scores over the layers that still see it from the
 * newest observed position t (p > t - window), instead of the sum over all
 * layers, so that a layer which can no longer attend to a position does not
 * vote on it; a position no layer sees any more is evicted first
 * (docs/algorithm.md, "Layer windows"). With no window set, or all set back
 * to 0, decisions are exactly those of an engine without windows.
 * WRONG_MODE on a slot-mode engine; OUT_OF_RANGE for a layer outside
 * [0, n_layers); INVALID_ARGUMENT for window < 0.
 * Threads: may be called at any time from any thread; it applies to every
 * sequence from the next hashevict_evictions on (set windows before the
 * first step so that every decision uses them). */
hashevict_status hashevict_set_layer_window(hashevict_engine *engine,
                                            int32_t layer, int32_t window);

/* ------------------------------------------------------------------------ */
/* Compress after prefill                                                   */
/* ------------------------------------------------------------------------ */

/* SnapKV's setting (docs/algorithm.md, "Compress after prefill"): the prompt
 * is read without eviction, then every prompt position is scored once from
 * the codes of the prompt's last n_window queries (the "window", which ends
 * with the question), the estimates are max-pooled along the positions, and
 * the budget is kept; decode steps then evict per step as usual.
 *
 * For a window probe p and a cached key k at Hamming distance d (b =
 * hash_bits), a position's estimate is the mean over the window's probes
 * (with PROBE_QUERY the queries of the KV head's group, with PROBE_KEY the
 * window's keys) of: */
typedef enum hashevict_compress_form {
    /* cos(pi * d / b): the expected cosine of p and k. */
    HASHEVICT_COMPRESS_COSINE = 0,
    /* -d: the decode step's own distance, applied to the window. */
    HASHEVICT_COMPRESS_DISTANCE = 1,
    /* Per probe, a softmax over the keys it scores of tau * cos(pi * d / b)
     * (tau = 8): the probe's estimated attention to each key, averaged over
     * the probes as SnapKV averages the window's exact attention. A key one
     * probe attends to sharply stays, however far it is from the others.
     * Since 0.4.0 (older libraries: INVALID_ARGUMENT). */
    HASHEVICT_COMPRESS_SOFTMAX = 2,
    /* Flags, OR'ed into one of the forms above. Since 0.6.0 (older
     * libraries: INVALID_ARGUMENT). */
    /* Before the pool, each estimate is replaced by its excess over the
     * mean estimate of the held positions within 64 of it on either side
     * in position order (itself included). Where post-RoPE keys near the
     * window resemble its queries more than older keys do, whatever they
     * say (SmolLM2; not Gemma 3, whose global layers rotate slowly), a
     * compression keeps mostly the newest part of the prompt; with it a
     * position counts by how much it stands out from its neighbourhood. */
    HASHEVICT_COMPRESS_LOCAL = 0x100,
    /* The pool reaches pool - 1 positions back and pool/2 forward, instead
     * of pool/2 either way: what follows the words the window repeats (a
     * fact's value after its subject) is kept with them. */
    HASHEVICT_COMPRESS_TRAILING = 0x200
} hashevict_compress_form;
/* Neither flag is a default: chosen on the development text, COSINE | LOCAL
 * | TRAILING did not beat the plain COSINE on the held-out text and tasks
 * (docs/eval/README.md). */
/* Each estimate is then replaced by the largest over the held positions
 * i - pool/2 .. i + pool/2 in position order (i - (pool - 1) .. i + pool/2
 * with TRAILING), i.e. a max pool of kernel pool (odd; an even pool acts
 * as pool + 1; 0 or 1: none; at most 1024), and stored on the distance
 * scale of the decode scores (b * acos(e) / pi for COSINE, e clamped to
 * [-1, 1]; -e for DISTANCE and SOFTMAX; larger is dropped first), count
 * 1. */

/* Slot mode: places a chunk of n_tokens tokens (a prompt, or the rest of
 * one) into layer `layer` of `seq` and keeps, per KV head, at most `budget`
 * of the positions already held there and the chunk's together. Kept are
 * every position < n_sink, >= t - n_recent (t: the chunk's last position) or
 * among the chunk's last n_window positions, then the smallest scores
 * (ties: the newest position stays). Call it once per layer, after the
 * runtime attended over the whole chunk, instead of hashevict_place.
 *
 * q_window: the queries of the chunk's last n_window tokens, n_heads =
 *   n_q_heads, n_tokens = n_window; read only with POLICY_HASH and
 *   PROBE_QUERY (may be NULL otherwise). k: the chunk's keys, n_tokens rows,
 *   n_heads = n_kv_heads. positions: as in hashevict_place.
 * 1 <= n_window <= n_tokens.
 * out_slots (n_tokens * n_kv_heads, [token][kv_head]) receives the slot
 *   where each kept token's key/value must be written, or -1 when the token
 *   is dropped. Slots of held positions that are dropped are always reused
 *   by kept tokens of the chunk (there are never more of them), so the
 *   cache has no holes: slots [0, min(budget, held + n_tokens)) are used.
 * Policies: HASH scores as above; KNORM keeps the smallest key norms;
 *   SINK_RECENT the newest positions; RANDOM random ones (pool and
 *   score_form are then checked but unused); ORACLE is UNSUPPORTED.
 *
 * Statuses: those of hashevict_place, plus INVALID_ARGUMENT (n_window out of
 * range, score_form unknown, pool outside [0, 1024], NULL q_window where it
 * is read), SHAPE (q_window's rows are not n_window x n_q_heads),
 * UNSUPPORTED (ORACLE), CHUNK_TOO_LARGE (a head's protected positions alone
 * exceed the budget), MEMORY_CAP (the chunk's scratch). Nothing changes on
 * failure. Thread rules and ownership as for hashevict_place. */
hashevict_status hashevict_compress(hashevict_engine *engine, int32_t seq,
                                    int32_t layer,
                                    const hashevict_tensor *q_window,
                                    int32_t n_window,
                                    const hashevict_tensor *k,
                                    const int32_t *positions, int32_t n_tokens,
                                    int32_t pool, int32_t score_form,
                                    int32_t *out_slots);

/* Token mode: scores every position layer `layer` of `seq` has observed
 * (hashevict_observe, without eviction in between) from the window, as
 * above, and stores the scores as that layer's per-head scores; the
 * window's own positions get score 0, so they are dropped last. Call it for
 * every layer after the prompt was observed, then hashevict_evictions,
 * which sums the scores over layers and heads and drops positions down to
 * the budget (sinks and recent positions protected as always). A later
 * hashevict_observe rescoring with its own probes replaces these scores, as
 * it replaces any.
 *
 * q_window: the queries of the window's positions, n_tokens = n_window,
 *   n_heads = n_q_heads (may be NULL with PROBE_KEY: the window's keys,
 *   already held, are the probes). window_positions: n_window positions,
 *   strictly increasing, each held and observed by this layer.
 * Only POLICY_HASH engines score (UNSUPPORTED otherwise: the other
 * policies' own scores are what hashevict_evictions reads; call it
 * directly). Statuses: the general ones, WRONG_MODE, OUT_OF_RANGE,
 * UNKNOWN_SEQUENCE, INVALID_ARGUMENT (n_window < 1, NULL q_window or
 * window_positions where needed, score_form, pool), SHAPE, NONFINITE,
 * POSITION (a window position not held, not observed by the layer, or out
 * of order), MEMORY_CAP. Nothing changes on failure. Thread rules and
 * ownership as for hashevict_observe. */
hashevict_status hashevict_compress_score(hashevict_engine *engine,
                                          int32_t seq, int32_t layer,
                                          const hashevict_tensor *q_window,
                                          const int32_t *window_positions,
                                          int32_t n_window, int32_t pool,
                                          int32_t score_form);

/* ------------------------------------------------------------------------ */
/* Inspection                                                               */
/* ------------------------------------------------------------------------ */

/* Writes the hash codes of vectors: x holds rows [n_tokens][n_heads]
 * [head_dim] as in hashevict_place, out receives n_tokens * n_heads codes of
 * words_per_code = ceil(hash_bits / 64) uint64 words each, row-major; bit j
 * of a code is bit (j % 64) of word (j / 64). capacity counts uint64 words.
 * Useful for references and tests. x may be DEVICE_CUDA: the codes are
 * computed on the device, on x's stream, and copied to out (host memory;
 * device memory there is INVALID_ARGUMENT), so the call waits for that
 * stream. */
hashevict_status hashevict_hash(hashevict_engine *engine, int32_t layer,
                                const hashevict_tensor *x, uint64_t *out,
                                int64_t capacity);

/* Copies layer `layer`'s projection matrix, stored transposed as
 * [hash_bits][head_dim] f32 (row j is the direction of bit j). capacity
 * counts floats. The generator is specified in docs/algorithm.md. */
hashevict_status hashevict_projection(hashevict_engine *engine, int32_t layer,
                                      float *out, int64_t capacity);

typedef struct hashevict_stats {
    uint32_t size;            /* sizeof(hashevict_stats); must be first */
    int32_t n_sequences;      /* sequences alive */
    /* Bytes of sequence state, as counted against memory_cap_bytes: the
     * tables, their headers and the scratch of a one-token step. The
     * engine's projections and the scratch of longer chunks count against
     * the bound too, but not here. */
    uint64_t state_bytes;
    uint64_t steps;           /* place/observe calls that succeeded */
    uint64_t tokens;          /* tokens placed or observed (per layer) */
    uint64_t evictions;       /* victims chosen (per slot or per position) */
    uint64_t cached;          /* tokens cached now (slots used, or positions) */
} hashevict_stats;

/* Counters of one sequence (seq >= 0) or of the whole engine (seq = -1).
 * out->size must be set by the caller. */
hashevict_status hashevict_stats_get(hashevict_engine *engine, int32_t seq,
                                     hashevict_stats *out);

#ifdef __cplusplus
}
#endif

#endif /* HASHEVICT_H */
