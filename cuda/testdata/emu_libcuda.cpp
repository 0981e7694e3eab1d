// A libcuda that runs the HashEvict kernels on the host, for the Go test
// that drives cuda/gpucheck (the program `make gpu-check` runs) without a
// GPU: device memory is host memory, streams run each operation at once,
// and each kernel is a loop over what its blocks and threads do, written
// with the helpers of hashevict_math.cuh that the device code uses. It
// checks everything around the kernels — the launchers' parameters, the
// tables' and probes' addressing, the check program's own bookkeeping —
// but not the device code's warp-level folds or its scheduling, which only
// a GPU run checks.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <map>
#include <mutex>

#include "../kernels/hashevict_math.cuh"
#include "kernel_params.h"

typedef int CUresult;
typedef uint64_t U64;

// The allocations the driver knows, as the real one does: a pointer
// inside one of cuMemAlloc's is device memory, inside one of
// cuMemAllocHost's page-locked host memory, anything else unknown
// (CUDA_ERROR_INVALID_VALUE), so that a host pointer passed as CUDA is
// refused here as on a GPU instead of being read.
static std::mutex allocs_mu;
static std::map<uintptr_t, std::pair<size_t, unsigned>> allocs;  // base -> (size, memory type)

static void remember(void *p, size_t n, unsigned type) {
    std::lock_guard<std::mutex> g(allocs_mu);
    allocs[(uintptr_t)p] = {n, type};
}

static void forget(void *p) {
    std::lock_guard<std::mutex> g(allocs_mu);
    allocs.erase((uintptr_t)p);
}

// memory_type returns 2 (device), 1 (host) or 0 (unknown) for p.
static unsigned memory_type(U64 p) {
    std::lock_guard<std::mutex> g(allocs_mu);
    auto it = allocs.upper_bound((uintptr_t)p);
    if (it == allocs.begin()) return 0;
    --it;
    return (uintptr_t)p < it->first + it->second.first ? it->second.second : 0;
}

extern "C" {

CUresult cuInit(unsigned) { return 0; }
CUresult cuDriverGetVersion(int *v) { *v = 13000; return 0; }
CUresult cuGetErrorName(CUresult, const char **s) { *s = "CUDA_ERROR_EMULATED"; return 0; }
CUresult cuGetErrorString(CUresult, const char **s) { *s = "emulated driver"; return 0; }
CUresult cuDeviceGetCount(int *n) { *n = 1; return 0; }
CUresult cuDeviceGet(int *d, int ordinal) { *d = ordinal; return ordinal == 0 ? 0 : 101; }
CUresult cuDeviceGetAttribute(int *v, int attr, int) {
    *v = attr == 75 ? 9 : attr == 76 ? 0 : attr == 16 ? 4 : 0;
    return 0;
}
CUresult cuDeviceGetName(char *name, int len, int) {
    strncpy(name, "Host emulation", (size_t)len);
    return 0;
}
CUresult cuDevicePrimaryCtxRetain(void **ctx, int) { *ctx = (void *)0x1000; return 0; }
CUresult cuDevicePrimaryCtxRelease_v2(int) { return 0; }
CUresult cuCtxGetCurrent(void **ctx) { *ctx = NULL; return 0; }
CUresult cuCtxGetDevice(int *d) { *d = 0; return 0; }
CUresult cuCtxPushCurrent_v2(void *) { return 0; }
CUresult cuCtxPopCurrent_v2(void **ctx) { *ctx = NULL; return 0; }
CUresult cuCtxSynchronize(void) { return 0; }
CUresult cuPointerGetAttribute(void *data, int attr, U64 p) {
    unsigned type = memory_type(p);
    if (type == 0) return 1;
    if (attr == 2) { *(unsigned *)data = type; return 0; }
    if (attr == 1) { *(void **)data = (void *)0x1000; return 0; }
    if (attr == 9) { *(int *)data = 0; return 0; }
    return 1;
}
CUresult cuStreamGetCtx(void *, void **ctx) { *ctx = (void *)0x1000; return 0; }
CUresult cuModuleLoadData(void **mod, const void *) { *mod = (void *)0x42; return 0; }
CUresult cuModuleUnload(void *) { return 0; }
static const char *kernels[] = {"hev_hash", "hev_farthest", "hev_score_step", "hev_keys_to_slots",
                                "hev_store", "hev_token_totals", "hev_read_bw", "hev_guard"};
CUresult cuModuleGetFunction(void **fn, void *, const char *name) {
    for (size_t i = 0; i < sizeof kernels / sizeof kernels[0]; i++)
        if (!strcmp(kernels[i], name)) return *fn = (void *)(uintptr_t)(i + 1), 0;
    return 500;
}
CUresult cuFuncGetAttribute(int *v, int, void *) { *v = 90; return 0; }

CUresult cuMemAlloc_v2(U64 *p, size_t n) {
    // Uninitialised, as device memory is; calloc keeps large, untouched
    // buffers (the check's 4 GiB delay buffer) virtual.
    void *m = calloc(1, n);
    if (!m) return 2;
    remember(m, n, 2);
    *p = (U64)(uintptr_t)m;
    return 0;
}
CUresult cuMemFree_v2(U64 p) {
    forget((void *)(uintptr_t)p);
    free((void *)(uintptr_t)p);
    return 0;
}
CUresult cuMemAllocHost_v2(void **p, size_t n) {
    *p = calloc(1, n);
    if (!*p) return 2;
    remember(*p, n, 1);
    return 0;
}
CUresult cuMemFreeHost(void *p) {
    forget(p);
    free(p);
    return 0;
}
CUresult cuMemcpyHtoDAsync_v2(U64 d, const void *s, size_t n, void *) { memcpy((void *)(uintptr_t)d, s, n); return 0; }
CUresult cuMemcpyDtoHAsync_v2(void *d, U64 s, size_t n, void *) { memcpy(d, (void *)(uintptr_t)s, n); return 0; }
CUresult cuMemcpyDtoDAsync_v2(U64 d, U64 s, size_t n, void *) {
    memmove((void *)(uintptr_t)d, (void *)(uintptr_t)s, n);
    return 0;
}
CUresult cuMemsetD32Async(U64 d, unsigned v, size_t n, void *) {
    unsigned *p = (unsigned *)(uintptr_t)d;
    for (size_t i = 0; i < n; i++) p[i] = v;
    return 0;
}
CUresult cuStreamSynchronize(void *) { return 0; }
// The emulated stream has always finished; report it busy so that the
// check of the asynchronous path (which expects a busy stream behind its
// long kernel) passes here as it must on a GPU.
CUresult cuStreamQuery(void *) { return 600; }
CUresult cuStreamCreate(void **s, unsigned) { *s = (void *)0x77; return 0; }
CUresult cuStreamDestroy_v2(void *) { return 0; }
CUresult cuMemGetInfo_v2(size_t *f, size_t *t) { *f = (size_t)1 << 34, *t = (size_t)1 << 34; return 0; }
CUresult cuEventCreate(void **e, unsigned) { *e = (void *)0x88; return 0; }
CUresult cuEventRecord(void *, void *) { return 0; }
CUresult cuEventSynchronize(void *) { return 0; }
CUresult cuEventElapsedTime(float *ms, void *, void *) { *ms = 1.0f; return 0; }
CUresult cuEventDestroy_v2(void *) { return 0; }

}  // extern "C"

// --- the kernels, as loops over their blocks and threads ---------------------

static void hash(const hash_p &a) {
    static float xs[4096];
    int words = hev_words(a.bits);
    for (int row = 0; row < a.rows; row++) {
        const char *src = (const char *)a.x + (long long)(row / a.heads) * a.token_stride +
                          (long long)(row % a.heads) * a.head_stride;
        int finite = 1;
        for (int i = 0; i < a.dim; i++) {
            xs[i] = hev_load(src, a.dtype, i);
            finite &= hev_finite(xs[i]);
        }
        U64 *code = (U64 *)a.codes + (long long)row * words;
        for (int w = 0; w < words; w++) code[w] = 0;
        if (!finite) {
            unsigned *bad = (unsigned *)a.bad;
            if ((unsigned)row < *bad) *bad = (unsigned)row;
            continue;
        }
        for (int j = 0; j < a.bits; j++) {
            float lane[HEV_LANES];
            for (int l = 0; l < HEV_LANES; l++) lane[l] = hev_lane_sum(xs, (const float *)a.rt + (long long)j * a.dim, a.dim, l);
            if (hev_fold16(lane) >= 0.0f) code[j >> 6] |= (U64)1 << (j & 63);
        }
    }
}

// gather is hev_scan_setup for head h.
static int gather(U64 *pr, const void *probes, long long probe_head, long long probe_token, int per_token, int tokens,
                  int bits, int h) {
    int words = hev_words(bits), np = per_token * tokens;
    for (int i = 0; i < np * words; i++) {
        int p = i / words, w = i % words;
        pr[i] = ((const U64 *)probes)[h * probe_head + (long long)(p / per_token) * probe_token +
                                      (long long)(p % per_token) * words + w];
    }
    return np;
}

// Each scan runs as its `threads` (grid x blocks of 256) grid-stride walks,
// each with its own skip cursor, as on the device.
static void farthest(const farthest_p &a, int heads, int threads) {
    static U64 pr[1024];
    for (int h = 0; h < heads; h++) {
        int np = gather(pr, a.probes, a.probe_head, a.probe_token, a.per_token, a.tokens, a.bits, h);
        const U64 *tab = (const U64 *)a.table + h * a.table_stride;
        int ns = a.skip_count ? ((const int *)a.skip_count)[h] : 0;
        const int32_t *sk = (const int32_t *)a.skip + (long long)h * a.skip_stride;
        int k = hev_narrow(a.bits) ? 64 / a.bits : 1;
        int items = hev_narrow(a.bits) ? (int)(((long long)a.slots * a.bits + 63) / 64) : a.slots;
        U64 best = 0;
        for (int first = 0; first < threads; first++) {
            int cur = hev_skip_start(sk, ns, first * k);
            for (int it = first; it < items; it += threads) {
                if (hev_narrow(a.bits)) {
                    for (int c = 0; c < k; c++) {
                        int slot = it * k + c;
                        if (slot >= a.slots) break;
                        uint32_t d = hev_narrow_dist(hev_narrow_code(tab[it], c, a.bits), pr, np, a.bits);
                        if (!hev_skip_next(sk, ns, &cur, slot)) best = hev_key_max(best, hev_key(d, slot));
                    }
                } else {
                    uint32_t d = hev_wide_dist(tab + (long long)it * (a.bits / 64), a.bits / 64, pr, np);
                    if (!hev_skip_next(sk, ns, &cur, it)) best = hev_key_max(best, hev_key(d, it));
                }
            }
        }
        U64 *keys = (U64 *)a.keys;
        keys[h] = hev_key_max(keys[h], best);
    }
}

static void score_step(const score_p &a, int heads, int threads) {
    static U64 pr[1024];
    for (int h = 0; h < heads; h++) {
        int np = gather(pr, a.probes, a.probe_head, a.probe_token, a.per_token, a.tokens, a.bits, h);
        const U64 *tab = (const U64 *)a.table + h * a.table_stride;
        int ns = a.skip_count ? ((const int *)a.skip_count)[h] : 0;
        const int32_t *sk = (const int32_t *)a.skip + (long long)h * a.skip_stride;
        float *sc = (float *)a.score + h * a.score_stride;
        uint32_t *cn = (uint32_t *)a.count + h * a.score_stride;
        U64 best = 0;
        for (int first = 0; first < threads; first++) {
            int cur = a.argmax ? hev_skip_start(sk, ns, first) : 0;
            for (int slot = first; slot < a.slots; slot += threads) {
                uint32_t d;
                if (hev_narrow(a.bits)) {
                    int k = 64 / a.bits;
                    d = hev_narrow_dist(hev_narrow_code(tab[slot / k], slot % k, a.bits), pr, np, a.bits);
                } else {
                    d = hev_wide_dist(tab + (long long)slot * (a.bits / 64), a.bits / 64, pr, np);
                }
                uint32_t c = a.mode == HEV_ACCUMULATED ? cn[slot] : 0;
                float v = hev_update(a.mode, sc[slot], &c, d, a.inv, a.decay, a.keep);
                sc[slot] = v;
                if (a.mode == HEV_ACCUMULATED) cn[slot] = c;
                if (a.argmax && !hev_skip_next(sk, ns, &cur, slot)) best = hev_key_max(best, hev_key(hev_score_order(v), slot));
            }
        }
        if (a.argmax) {
            U64 *keys = (U64 *)a.keys;
            keys[h] = hev_key_max(keys[h], best);
        }
    }
}

static void keys_to_slots(const keys_p &a) {
    for (int h = 0; h < a.heads; h++) ((int *)a.out)[h * a.out_stride] = hev_key_slot(((const U64 *)a.keys)[h]);
}

static void store(const store_p &a, int heads) {
    int words = hev_words(a.bits);
    for (int h = 0; h < heads; h++) {
        int slot = a.fixed_slot >= 0 ? a.fixed_slot : ((const int *)a.slots)[h * a.slots_stride];
        if (a.out_slots) ((int *)a.out_slots)[h] = slot;
        if (slot < 0) {
            if (a.out_evicted) ((int *)a.out_evicted)[h] = -1;
            continue;
        }
        if (a.positions) {
            int *pp = (int *)a.positions + h * a.pos_stride + slot;
            if (a.out_evicted) ((int *)a.out_evicted)[h] = *pp;
            *pp = a.position;
        }
        if (a.guard)
            hev_guard_stored((int32_t *)a.guard + h * hev_guard_words(a.n_sink, a.n_recent), a.n_sink, a.n_recent, slot,
                             a.position);
        const U64 *nc = (const U64 *)a.new_codes + h * a.new_head + (long long)a.token * a.new_token;
        U64 *tab = (U64 *)a.table + h * a.table_stride;
        if (hev_narrow(a.bits)) {
            int k = 64 / a.bits, sh = (slot % k) * a.bits;
            U64 m = hev_mask(a.bits) << sh;
            tab[slot / k] = (tab[slot / k] & ~m) | ((nc[0] << sh) & m);
        } else {
            for (int w = 0; w < words; w++) tab[(long long)slot * words + w] = nc[w];
        }
        uint32_t d = 0;
        for (int p = 0; p < a.per_token * a.tokens; p++) {
            const U64 *pp = (const U64 *)a.probes + h * a.probe_head + (long long)(p / a.per_token) * a.probe_token +
                            (long long)(p % a.per_token) * words;
            d += hev_wide_dist(nc, words, pp, 1);
        }
        ((float *)a.score)[h * a.score_stride + slot] = hev_step_distance(d, a.inv);
        ((uint32_t *)a.count)[h * a.score_stride + slot] = 1;
    }
}

static void guard(const guard_p &a) {
    for (int h = 0; h < a.heads; h++)
        ((int *)a.skip_count)[h] = hev_guard_skip((const int32_t *)a.guard + h * hev_guard_words(a.n_sink, a.n_recent),
                                                  a.n_sink, a.n_recent, (const int32_t *)a.positions + h * a.pos_stride,
                                                  a.hi, (int32_t *)a.skip + h * (a.n_sink + a.n_recent));
}

static void totals(const totals_p &a) {
    const float *const *scores = (const float *const *)a.scores;
    for (int i = 0; i < a.slots; i++) {
        double t = 0.0;
        for (int k = 0; k < a.tables; k++) t = hev_dadd(t, (double)scores[k][i]);
        ((double *)a.totals)[i] = t;
    }
}

extern "C" CUresult cuLaunchKernel(void *fn, unsigned gx, unsigned gy, unsigned, unsigned bx, unsigned, unsigned, unsigned,
                                   void *, void **params, void **extra) {
    if (params != NULL || extra == NULL || extra[0] != (void *)1 || extra[2] != (void *)2 || extra[4] != NULL) return 1;
    const void *buf = extra[1];
    switch ((int)(uintptr_t)fn - 1) {
    case 0: hash(*(const hash_p *)buf); break;
    case 1: farthest(*(const farthest_p *)buf, (int)gy, (int)(gx * bx)); break;
    case 2: score_step(*(const score_p *)buf, (int)gy, (int)(gx * bx)); break;
    case 3: keys_to_slots(*(const keys_p *)buf); break;
    case 4: store(*(const store_p *)buf, (int)gx); break;  // one block per head
    case 5: totals(*(const totals_p *)buf); break;
    case 6: break;  // hev_read_bw reads and writes nothing observable
    case 7: guard(*(const guard_p *)buf); break;
    default: return 400;
    }
    return 0;
}
