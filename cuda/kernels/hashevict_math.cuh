// The arithmetic of the HashEvict kernels, shared by the device code
// (hashevict.cu) and a host build (hostcheck.cpp) that the Go tests compare
// bit for bit with the generic Go kernels (package simd). Everything that
// decides a bit of a result lives here, so the host build tests the very
// code the GPU runs; only the parallel folds (warp shuffles) are written
// twice, and both follow the order stated next to them.
//
// Rules that make the results bit-identical to the CPU (docs/algorithm.md):
// float32 multiplies and adds are separate, rounded to nearest (the device
// uses the _rn intrinsics, which are never contracted into an FMA; the host
// build uses -ffp-contract=off), and the 16-lane summation order of the
// projection dot product is kept.
#ifndef HASHEVICT_MATH_CUH
#define HASHEVICT_MATH_CUH

#include <stdint.h>

#ifdef __CUDACC__
#define HEV_HD __host__ __device__ __forceinline__
#else
#include <string.h>
#define HEV_HD static inline
#endif

#define HEV_LANES 16

HEV_HD float hev_add(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}

HEV_HD float hev_sub(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fsub_rn(a, b);
#else
    return a - b;
#endif
}

HEV_HD float hev_mul(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

HEV_HD float hev_div(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fdiv_rn(a, b);
#else
    return a / b;
#endif
}

HEV_HD double hev_dadd(double a, double b) {
#ifdef __CUDA_ARCH__
    return __dadd_rn(a, b);
#else
    return a + b;
#endif
}

HEV_HD int hev_popc32(uint32_t x) {
#ifdef __CUDA_ARCH__
    return __popc(x);
#else
    return __builtin_popcount(x);
#endif
}

HEV_HD int hev_popc64(uint64_t x) {
#ifdef __CUDA_ARCH__
    return __popcll(x);
#else
    return __builtin_popcountll(x);
#endif
}

HEV_HD float hev_from_bits(uint32_t u) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, 4);
    return f;
#endif
}

HEV_HD uint32_t hev_to_bits(float f) {
#ifdef __CUDA_ARCH__
    return __float_as_uint(f);
#else
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
#endif
}

// Widening, exact, by hand (cuda_fp16.h would pull in the CCCL headers).
// Subnormal halves are normalised with a loop of at most 10 steps.
HEV_HD float hev_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    if (exp == 0x1f) return hev_from_bits(sign | 0x7f800000u | mant << 13);
    if (exp != 0) return hev_from_bits(sign | (exp + 112) << 23 | mant << 13);
    if (mant == 0) return hev_from_bits(sign);
    uint32_t e = 113;
    while ((mant & 0x400) == 0) {
        mant <<= 1;
        e--;
    }
    return hev_from_bits(sign | e << 23 | (mant & 0x3ff) << 13);
}

HEV_HD float hev_bf16_to_float(uint16_t h) { return hev_from_bits((uint32_t)h << 16); }

HEV_HD int hev_finite(float f) { return (hev_to_bits(f) & 0x7f800000u) != 0x7f800000u; }

// Element dtypes, in the numbering of the C enum.
#define HEV_F32 0
#define HEV_F16 1
#define HEV_BF16 2

// hev_load widens element i of a row of the given dtype.
HEV_HD float hev_load(const void *row, int dtype, int i) {
    if (dtype == HEV_F32) return ((const float *)row)[i];
    uint16_t h = ((const uint16_t *)row)[i];
    return dtype == HEV_F16 ? hev_half_to_float(h) : hev_bf16_to_float(h);
}

// hev_lane_sum is lane `lane` of the projection dot product: the elements
// i = lane, lane+16, lane+32, ... of x·r, accumulated in increasing i as
// acc = acc + x[i]*r[i] (a rounded product, then a rounded sum). One
// thread of a half-warp computes one lane; the host computes all 16.
HEV_HD float hev_lane_sum(const float *x, const float *r, int dim, int lane) {
    float acc = 0.0f;
    for (int i = lane; i < dim; i += HEV_LANES) acc = hev_add(acc, hev_mul(x[i], r[i]));
    return acc;
}

// The fold of the 16 lanes: lane[l] = lane[l] + lane[l+w] for w = 8, 4, 2,
// 1; the result is lane 0. The device does the same with
// __shfl_down_sync(…, w, 16) (lane l receives lane l+w's value).
HEV_HD float hev_fold16(float *lane) {
    for (int w = HEV_LANES / 2; w >= 1; w /= 2)
        for (int l = 0; l < w; l++) lane[l] = hev_add(lane[l], lane[l + w]);
    return lane[0];
}

// Words of one wide code (probes and the codes the hash writes): one for 8
// to 64 bits, bits/64 above.
HEV_HD int hev_words(int bits) { return bits <= 64 ? 1 : bits / 64; }

// Tables of codes below 64 bits are narrow: 64/bits codes per word, code i
// in bits [(i%k)*bits, (i%k+1)*bits) of word i/k (simd/narrow.go).
HEV_HD int hev_narrow(int bits) { return bits < 64; }

HEV_HD uint64_t hev_mask(int bits) { return bits >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << bits) - 1); }

// hev_narrow_code extracts code s of a narrow table word.
HEV_HD uint64_t hev_narrow_code(uint64_t word, int s, int bits) { return (word >> (s * bits)) & hev_mask(bits); }

// hev_narrow_dist sums the Hamming distances of a narrow code to np probes
// (one word each; only their low bits bits count). Narrow codes have at
// most 32 bits, so one 32-bit popcount per probe does (a 64-bit one is two
// instructions on the GPU, and popcounts bound the scan's speed).
HEV_HD uint32_t hev_narrow_dist(uint64_t code, const uint64_t *probes, int np, int bits) {
    uint32_t m = (uint32_t)hev_mask(bits), c = (uint32_t)code;
    uint32_t d = 0;
    for (int p = 0; p < np; p++) d += hev_popc32(c ^ ((uint32_t)probes[p] & m));
    return d;
}

// hev_wide_dist sums the Hamming distances of a code of w words to np
// probes of w words each.
HEV_HD uint32_t hev_wide_dist(const uint64_t *code, int w, const uint64_t *probes, int np) {
    uint32_t d = 0;
    for (int p = 0; p < np; p++)
        for (int k = 0; k < w; k++) d += hev_popc64(code[k] ^ probes[p * w + k]);
    return d;
}

// A skip list is ascending (repeats and entries outside the table are
// allowed). A thread visits its slots in increasing order, so it keeps a
// cursor into the list: hev_skip_start places it at the first entry >= its
// first slot (a binary search, once), and hev_skip_next advances it past
// entries below each slot (each entry is passed once per thread) and reports
// whether the slot is listed. Per slot that is one comparison, where a
// search per slot would be a handful of dependent loads.
HEV_HD int hev_skip_start(const int32_t *skip, int n, int32_t slot) {
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = (lo + hi) >> 1;
        if (skip[mid] < slot)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

HEV_HD int hev_skip_next(const int32_t *skip, int n, int *cur, int32_t slot) {
    int c = *cur;
    while (c < n && skip[c] < slot) c++;
    *cur = c;
    return c < n && skip[c] == slot;
}

// Candidates are compared as one 64-bit key, so that a maximum over any
// grouping (threads, warps, blocks, atomicMax) picks the same winner: the
// high word orders the value, the low word is ~slot, so that equal values
// go to the lowest slot. Key 0 means "no candidate" (a real key has a low
// word above 2^31, slots being below 2^31).
HEV_HD uint64_t hev_key(uint32_t order, int32_t slot) { return ((uint64_t)order << 32) | (uint32_t)(0xffffffffu - (uint32_t)slot); }

HEV_HD int32_t hev_key_slot(uint64_t key) { return key == 0 ? -1 : (int32_t)(0xffffffffu - (uint32_t)key); }

HEV_HD uint64_t hev_key_max(uint64_t a, uint64_t b) { return a > b ? a : b; }

// hev_score_order maps a float32 score onto an unsigned integer of the
// same order. -0 and +0 compare equal (as in the CPU's s > best test), and
// NaN orders below everything: it never wins. (The CPU keeps a NaN that
// comes first; no score of a finite input is NaN, so the two never meet.)
HEV_HD uint32_t hev_score_order(float s) {
    if (s != s) return 0;
    uint32_t u = hev_to_bits(s);
    if (u == 0x80000000u) u = 0;
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Score update modes, in the numbering of the C enum.
#define HEV_INSTANT 0
#define HEV_ACCUMULATED 1
#define HEV_DECAYED 2

// hev_step_distance is a distance sum scaled to one token: float32(d) times
// inv = 1/float32(n) (computed once, in float32, by the caller).
HEV_HD float hev_step_distance(uint32_t d, float inv) { return hev_mul((float)d, inv); }

// hev_update folds one step into a score (simd.updateGeneric): instant
// s = d; accumulated c = c + 1, s = s + (d - s) / c; decayed
// s = decay*s + keep*d with keep = 1 - decay computed once by the caller.
HEV_HD float hev_update(int mode, float s, uint32_t *count, uint32_t dsum, float inv, float decay, float keep) {
    float d = hev_step_distance(dsum, inv);
    if (mode == HEV_ACCUMULATED) {
        uint32_t c = *count + 1;
        *count = c;
        return hev_add(s, hev_div(hev_sub(d, s), (float)c));
    }
    if (mode == HEV_DECAYED) return hev_add(hev_mul(decay, s), hev_mul(keep, d));
    return d;
}

// The guard of one head (policy's guard, on the device): the slots of the
// positions below n_sink, and a ring of the slots of the last n_recent
// tokens stored. Positions strictly increase, so every cached position at
// or after t - n_recent is among those last n_recent. Layout, in int32:
// [0] sinks recorded, [1] the ring's next index, [2, 2+n_sink) the sink
// slots, then n_recent ring entries (-1: unset). hev_guard_init sets one.
HEV_HD int hev_guard_words(int n_sink, int n_recent) { return 2 + n_sink + n_recent; }

HEV_HD void hev_guard_init(int32_t *g, int n_sink, int n_recent) {
    g[0] = 0;
    g[1] = 0;
    for (int i = 0; i < n_sink + n_recent; i++) g[2 + i] = -1;
}

// hev_guard_stored records that slot now holds position pos.
HEV_HD void hev_guard_stored(int32_t *g, int n_sink, int n_recent, int32_t slot, int32_t pos) {
    if (pos < n_sink && g[0] < n_sink) g[2 + g[0]++] = slot;
    if (n_recent > 0) {
        g[2 + n_sink + g[1]] = slot;
        g[1] = (g[1] + 1) % n_recent;
    }
}

// hev_guard_skip writes the slots a step must not evict when the evictable
// positions are below hi — the sinks, and the ring's slots holding
// positions >= hi — ascending (repeats kept), into skip (room for n_sink +
// n_recent), and returns their number.
HEV_HD int hev_guard_skip(const int32_t *g, int n_sink, int n_recent, const int32_t *pos, int32_t hi, int32_t *skip) {
    int n = 0;
    for (int i = 0; i < g[0]; i++) skip[n++] = g[2 + i];
    for (int i = 0; i < n_recent; i++) {
        int32_t slot = g[2 + n_sink + i];
        if (slot >= 0 && pos[slot] >= hi) skip[n++] = slot;
    }
    for (int i = 1; i < n; i++) {  // insertion sort: at most n_sink + n_recent entries
        int32_t v = skip[i];
        int j = i - 1;
        while (j >= 0 && skip[j] > v) {
            skip[j + 1] = skip[j];
            j--;
        }
        skip[j + 1] = v;
    }
    return n;
}

#endif
