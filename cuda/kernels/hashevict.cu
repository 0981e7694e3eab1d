// The HashEvict device kernels. Built into a fatbin by cuda/build.sh
// (nvcc -fmad=false; SASS sm_80 and sm_90, PTX compute_90) and launched by
// the Go package through the driver API, so every name is extern "C" and
// every parameter a plain integer, float or pointer. Block shapes are
// compile-time constants; every loop is predicated on the sizes it is
// given, so any head_dim, slot count and probe count works.
//
// Results are bit-identical to the CPU (package simd): the arithmetic is in
// hashevict_math.cuh, shared with a host build that the Go tests compare
// with the Go kernels.
#include "hashevict_math.cuh"

// hev_hash: 16 half-warps per block, one code bit per half-warp at a time.
#define HEV_HASH_THREADS 256
// The scans: blocks of 256 threads, several blocks per KV head.
#define HEV_SCAN_THREADS 256
// Probe words a scan keeps in shared memory (8 KiB): a GQA group of up to
// 256 query heads at 256 bits, or a prefill chunk of many probes.
#define HEV_MAX_PROBE_WORDS 1024
// Skip-list entries a scan keeps in shared memory; longer lists are read
// from global memory (same result, slower).
#define HEV_MAX_SMEM_SKIP 1024

typedef uint64_t u64;
typedef unsigned long long ull; // what the atomics take (uint64_t is unsigned long)

// Maximum of a key over the block; the result is valid in thread 0. Keys
// are totally ordered (hev_key), so the grouping does not matter.
__device__ __forceinline__ u64 hev_block_max(u64 key) {
    __shared__ u64 warp_best[HEV_SCAN_THREADS / 32];
    for (int o = 16; o >= 1; o >>= 1) key = hev_key_max(key, __shfl_xor_sync(0xffffffffu, key, o));
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) warp_best[warp] = key;
    __syncthreads();
    if (warp == 0) {
        key = lane < HEV_SCAN_THREADS / 32 ? warp_best[lane] : 0;
        for (int o = 16; o >= 1; o >>= 1) key = hev_key_max(key, __shfl_xor_sync(0xffffffffu, key, o));
    }
    return key;
}

// hev_hash writes the wide codes of rows x[token][head][dim] (row r =
// token r / heads, head r % heads; strides in bytes) into codes[r][words]:
// bit j is set when x·rt[j] >= 0 in the 16-lane order. A row holding NaN or
// Inf gets a zero code, and the lowest such row index is folded into *bad
// (atomicMin; the caller sets it to 0xffffffff first).
//
// Grid: one block per row (blockIdx.x, with blockIdx.y * gridDim.x added
// for more rows than one grid dimension holds). Dynamic shared memory:
// dim floats (the widened row). bits must be even (every width is).
extern "C" __global__ void __launch_bounds__(HEV_HASH_THREADS)
hev_hash(const char *x, int dtype, int dim, int heads, int rows, long long head_stride, long long token_stride,
         const float *rt, int bits, u64 *codes, unsigned int *bad) {
    extern __shared__ float xs[];
    __shared__ u64 code[4];
    __shared__ int nonfinite;
    int row = blockIdx.x + blockIdx.y * gridDim.x;
    if (row >= rows) return;
    const char *src = x + (long long)(row / heads) * token_stride + (long long)(row % heads) * head_stride;
    if (threadIdx.x < 4) code[threadIdx.x] = 0;
    if (threadIdx.x == 0) nonfinite = 0;
    __syncthreads();
    int bad_here = 0;
    for (int i = threadIdx.x; i < dim; i += HEV_HASH_THREADS) {
        float v = hev_load(src, dtype, i);
        bad_here |= !hev_finite(v);
        xs[i] = v;
    }
    if (bad_here) nonfinite = 1;
    __syncthreads();
    int words = hev_words(bits);
    if (nonfinite) {
        if (threadIdx.x < words) codes[(long long)row * words + threadIdx.x] = 0;
        if (threadIdx.x == 0) atomicMin(bad, (unsigned int)row);
        return;
    }
    int lane = threadIdx.x & (HEV_LANES - 1);
    // Both halves of a warp run the same number of iterations (bits is
    // even), so the full-mask shuffles below always have every lane.
    for (int j = threadIdx.x / HEV_LANES; j < bits; j += HEV_HASH_THREADS / HEV_LANES) {
        float acc = hev_lane_sum(xs, rt + (long long)j * dim, dim, lane);
        // hev_fold16's order: lane l += lane l+w, w = 8, 4, 2, 1.
        for (int w = HEV_LANES / 2; w >= 1; w >>= 1) acc = hev_add(acc, __shfl_down_sync(0xffffffffu, acc, w, HEV_LANES));
        if (lane == 0 && acc >= 0.0f) atomicOr((ull *)&code[j >> 6], 1ull << (j & 63));
    }
    __syncthreads();
    if (threadIdx.x < words) codes[(long long)row * words + threadIdx.x] = code[threadIdx.x];
}

// The scan parameters shared by hev_farthest and hev_score_step, for KV
// head h = blockIdx.y (hev_store reads probes the same way, with h =
// blockIdx.x):
//   table + h*table_stride      the head's code table (narrow below 64 bits)
//   probes                      probe p = (t, j), t < tokens, j < per_token,
//                               at probes + h*probe_head + t*probe_token + j*words
//   skip + h*skip_stride        skip_count[h] slots not to evict, ascending
//                               (repeats and entries outside [0, slots) allowed)
// They are loaded into shared memory by hev_scan_setup.
struct hev_scan {
    const u64 *table;
    const u64 *probes;
    const int *skip;
    int np, ns;
};

__device__ __forceinline__ hev_scan hev_scan_setup(u64 *pr, int *sk, const u64 *table, long long table_stride, int bits,
                                                   const u64 *probes, long long probe_head, long long probe_token,
                                                   int per_token, int tokens, const int *skip, int skip_stride,
                                                   const int *skip_count) {
    int h = blockIdx.y, words = hev_words(bits);
    hev_scan s;
    s.table = table + h * table_stride;
    s.np = per_token * tokens;
    for (int i = threadIdx.x; i < s.np * words; i += blockDim.x) {
        int p = i / words, w = i % words;
        pr[i] = probes[h * probe_head + (long long)(p / per_token) * probe_token + (long long)(p % per_token) * words + w];
    }
    s.probes = pr;
    s.ns = skip_count ? skip_count[h] : 0;
    const int *gs = skip + (long long)h * skip_stride;
    if (s.ns <= HEV_MAX_SMEM_SKIP) {
        for (int i = threadIdx.x; i < s.ns; i += blockDim.x) sk[i] = gs[i];
        s.skip = sk;
    } else {
        s.skip = gs;
    }
    __syncthreads();
    return s;
}

// hev_farthest: per KV head, the slot of [0, slots) not skipped whose code
// has the largest summed Hamming distance to the head's probes, ties to the
// lowest slot (simd Farthest), folded into keys[h] with atomicMax (the
// caller zeroes keys first; hev_keys_to_slots turns them into slots).
// Grid: (blocks per head, heads); each thread takes table words (narrow) or
// codes (wide) in a grid-stride loop, so reads are coalesced.
extern "C" __global__ void __launch_bounds__(HEV_SCAN_THREADS)
hev_farthest(const u64 *table, long long table_stride, int bits, int slots, const u64 *probes, long long probe_head,
             long long probe_token, int per_token, int tokens, const int *skip, int skip_stride, const int *skip_count,
             u64 *keys) {
    __shared__ u64 pr[HEV_MAX_PROBE_WORDS];
    __shared__ int sk[HEV_MAX_SMEM_SKIP];
    hev_scan s = hev_scan_setup(pr, sk, table, table_stride, bits, probes, probe_head, probe_token, per_token, tokens,
                                skip, skip_stride, skip_count);
    u64 best = 0;
    int stride = gridDim.x * blockDim.x, first = blockIdx.x * blockDim.x + threadIdx.x;
    if (hev_narrow(bits)) {
        int k = 64 / bits, nwords = (int)(((long long)slots * bits + 63) / 64);
        int cur = hev_skip_start(s.skip, s.ns, first * k);
        for (int wi = first; wi < nwords; wi += stride) {
            u64 word = s.table[wi];
            for (int c = 0; c < k; c++) {
                int slot = wi * k + c;
                if (slot >= slots) break;
                uint32_t d = hev_narrow_dist(hev_narrow_code(word, c, bits), s.probes, s.np, bits);
                if (!hev_skip_next(s.skip, s.ns, &cur, slot)) best = hev_key_max(best, hev_key(d, slot));
            }
        }
    } else {
        int w = bits / 64;
        int cur = hev_skip_start(s.skip, s.ns, first);
        for (int slot = first; slot < slots; slot += stride) {
            uint32_t d = hev_wide_dist(s.table + (long long)slot * w, w, s.probes, s.np);
            if (!hev_skip_next(s.skip, s.ns, &cur, slot)) best = hev_key_max(best, hev_key(d, slot));
        }
    }
    best = hev_block_max(best);
    if (threadIdx.x == 0 && best != 0) atomicMax((ull *)&keys[blockIdx.y], (ull)best);
}

// hev_score_step: per KV head, the step of the accumulated and decayed
// scores (simd ScoreStep): every slot's distance sum is folded into
// score/count (hev_update), then, when argmax is set, the slot of largest
// updated score not skipped (ties: lowest) is folded into keys[h]. With
// argmax 0 it is token mode's update of every slot of the table.
// score and count of head h start at h*score_stride; count is only read
// and written in the accumulated mode.
extern "C" __global__ void __launch_bounds__(HEV_SCAN_THREADS)
hev_score_step(const u64 *table, long long table_stride, int bits, int slots, const u64 *probes, long long probe_head,
               long long probe_token, int per_token, int tokens, const int *skip, int skip_stride,
               const int *skip_count, float *score, unsigned int *count, long long score_stride, int mode, float inv,
               float decay, float keep, int argmax, u64 *keys) {
    __shared__ u64 pr[HEV_MAX_PROBE_WORDS];
    __shared__ int sk[HEV_MAX_SMEM_SKIP];
    hev_scan s = hev_scan_setup(pr, sk, table, table_stride, bits, probes, probe_head, probe_token, per_token, tokens,
                                skip, skip_stride, skip_count);
    float *sc = score + blockIdx.y * score_stride;
    unsigned int *cn = count + blockIdx.y * score_stride;
    u64 best = 0;
    int stride = gridDim.x * blockDim.x, first = blockIdx.x * blockDim.x + threadIdx.x;
    int cur = argmax ? hev_skip_start(s.skip, s.ns, first) : 0;
    // One thread per slot (narrow codes are extracted from their word), so
    // that the scores and counts are read and written coalesced.
    for (int slot = first; slot < slots; slot += stride) {
        uint32_t d;
        if (hev_narrow(bits)) {
            int k = 64 / bits;
            d = hev_narrow_dist(hev_narrow_code(s.table[slot / k], slot % k, bits), s.probes, s.np, bits);
        } else {
            int w = bits / 64;
            d = hev_wide_dist(s.table + (long long)slot * w, w, s.probes, s.np);
        }
        uint32_t c = mode == HEV_ACCUMULATED ? cn[slot] : 0;
        float v = hev_update(mode, sc[slot], &c, d, inv, decay, keep);
        sc[slot] = v;
        if (mode == HEV_ACCUMULATED) cn[slot] = c;
        if (argmax && !hev_skip_next(s.skip, s.ns, &cur, slot)) best = hev_key_max(best, hev_key(hev_score_order(v), slot));
    }
    if (!argmax) return;
    best = hev_block_max(best);
    if (threadIdx.x == 0 && best != 0) atomicMax((ull *)&keys[blockIdx.y], (ull)best);
}

// hev_keys_to_slots turns the keys of a scan into slots (-1: every slot was
// skipped), written to out[h*out_stride] for h < heads.
extern "C" __global__ void __launch_bounds__(HEV_SCAN_THREADS)
hev_keys_to_slots(const u64 *keys, int heads, int *out, int out_stride) {
    int h = blockIdx.x * blockDim.x + threadIdx.x;
    if (h < heads) out[h * out_stride] = hev_key_slot(keys[h]);
}

// hev_store writes token `token`'s new key code into its slot of each KV
// head's table (one block per head, one thread): the slot is fixed_slot
// when it is >= 0 (a free slot), else slots[h*slots_stride] (the victim a
// scan wrote; -1 leaves the head alone). The slot's score becomes the new
// code's own step distance to the probes, its count 1 (docs/algorithm.md,
// step 6), and the slot is reported in out_slots[h] when out_slots is set.
// new_codes + h*new_head + token*new_token is the wide code (hev_hash's
// output). When positions is set (the device's record of each slot's
// position, head h at h*pos_stride, -1 for a free slot), the slot's old
// position goes to out_evicted[h] (when set) and `position` takes its
// place: what an asynchronous caller needs without a host round trip.
// When guard is set, the head's guard (hashevict_math.cuh) records the
// slot, so that hev_guard can name the protected slots on the device.
extern "C" __global__ void __launch_bounds__(32)
hev_store(u64 *table, long long table_stride, int bits, const u64 *probes, long long probe_head, long long probe_token,
          int per_token, int tokens, float *score, unsigned int *count, long long score_stride, float inv,
          const u64 *new_codes, long long new_head, long long new_token, int token, int fixed_slot, const int *slots,
          int slots_stride, int *out_slots, int *positions, long long pos_stride, int position, int *out_evicted,
          int *guard, int n_sink, int n_recent) {
    if (threadIdx.x != 0) return;
    int h = blockIdx.x, words = hev_words(bits);
    int slot = fixed_slot >= 0 ? fixed_slot : slots[h * slots_stride];
    if (out_slots) out_slots[h] = slot;
    if (slot < 0) {
        if (out_evicted) out_evicted[h] = -1;
        return;
    }
    if (positions) {
        int *pp = positions + h * pos_stride + slot;
        if (out_evicted) out_evicted[h] = *pp;
        *pp = position;
    }
    if (guard) hev_guard_stored(guard + h * hev_guard_words(n_sink, n_recent), n_sink, n_recent, slot, position);
    const u64 *nc = new_codes + h * new_head + (long long)token * new_token;
    u64 *tab = table + h * table_stride;
    if (hev_narrow(bits)) {
        int k = 64 / bits, sh = (slot % k) * bits;
        u64 m = hev_mask(bits) << sh;
        tab[slot / k] = (tab[slot / k] & ~m) | ((nc[0] << sh) & m);
    } else {
        for (int w = 0; w < words; w++) tab[(long long)slot * words + w] = nc[w];
    }
    // Every probe of the step, as in hev_scan_setup, against the new code
    // in its wide form (hev_wide_dist on the one-word form of a narrow code
    // is the masked distance: the hash leaves the bits above it zero).
    uint32_t d = 0;
    for (int p = 0; p < per_token * tokens; p++) {
        const u64 *pp = probes + h * probe_head + (long long)(p / per_token) * probe_token + (long long)(p % per_token) * words;
        d += hev_wide_dist(nc, words, pp, 1);
    }
    score[h * score_stride + slot] = hev_step_distance(d, inv);
    count[h * score_stride + slot] = 1;
}

// hev_guard writes each head's skip list for a step whose evictable
// positions are below hi (hi = max(t - n_recent, n_sink), t the step's
// newest position): the sink slots, then the ring's slots whose position
// is >= hi, ascending, into skip + h*(n_sink + n_recent), and their number
// into skip_count[h] — the engine's table.skip, on the device, so that an
// asynchronous decode step needs nothing from the host but t. One thread
// per head.
extern "C" __global__ void __launch_bounds__(HEV_SCAN_THREADS)
hev_guard(const int *guard, int n_sink, int n_recent, const int *positions, long long pos_stride, int hi, int heads,
          int *skip, int *skip_count) {
    int h = blockIdx.x * blockDim.x + threadIdx.x;
    if (h >= heads) return;
    skip_count[h] = hev_guard_skip(guard + h * hev_guard_words(n_sink, n_recent), n_sink, n_recent,
                                   positions + h * pos_stride, hi, skip + h * (n_sink + n_recent));
}

// hev_token_totals sums, per slot, the scores of every (layer, KV head)
// table in float64, tables in order (layer-major), as token mode's
// evictions does: totals[i] = sum_t (double)scores[t][i].
extern "C" __global__ void __launch_bounds__(HEV_SCAN_THREADS)
hev_token_totals(const float *const *scores, int tables, int slots, double *totals) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < slots; i += gridDim.x * blockDim.x) {
        double t = 0.0;
        for (int k = 0; k < tables; k++) t = hev_dadd(t, (double)scores[k][i]);
        totals[i] = t;
    }
}

// hev_read_bw reads n 16-byte vectors and folds them with xor, for the
// device bandwidth that make gpu-check compares the scans with. The result
// is stored only when it equals a value the caller chooses (never in
// practice), so the reads cannot be optimised away and nothing is written.
extern "C" __global__ void __launch_bounds__(HEV_SCAN_THREADS)
hev_read_bw(const uint4 *p, long long n, u64 never, u64 *sink) {
    uint4 a = make_uint4(0, 0, 0, 0);
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        uint4 v = p[i];
        a.x ^= v.x;
        a.y ^= v.y;
        a.z ^= v.z;
        a.w ^= v.w;
    }
    u64 r = ((u64)(a.x ^ a.z) << 32) | (a.y ^ a.w);
    if (r == never) *sink = r;
}
