/*
 * test_cuda.c — hashevict_place / _place_async / _hash / _observe (with
 * _evictions) on DEVICE_CUDA tensors, through the C ABI, without a GPU.
 *
 * Run twice by ctest:
 *  - HASHEVICT_TEST_CUDA=none, HASHEVICT_LIBCUDA pointing at a missing
 *    file: every CUDA call is UNSUPPORTED with a message naming the
 *    library, and host calls on the same engine keep working.
 *  - HASHEVICT_TEST_CUDA=emu, HASHEVICT_LIBCUDA = the emulated driver
 *    (cuda/testdata/emu_libcuda.cpp, which runs the kernels on the host):
 *    the same steps through a CUDA engine and a host engine agree bit for
 *    bit (slots, evicted positions, codes, token-mode evictions, held
 *    positions, counters), and the refusals
 *    (a host pointer marked CUDA, mixing host and CUDA in one sequence,
 *    calls with no device path, NaN, memory cap) are clear statuses after
 *    which the engine still works.
 * Nothing here has run on a GPU. The "emu" run is written so that it can
 * also be pointed at a real driver (HASHEVICT_LIBCUDA=.../libcuda.so.1): it
 * makes device 0's primary context current and synchronises its copies;
 * that has never been tried.
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "testutil.h"

enum { LAYERS = 2, KV = 2, QH = 4, DIM = 40, BITS = 16, BUDGET = 24, PREFILL = 10, STEPS = 60 };

/* The emulated driver's entry points the test needs, from the same library
 * the engine loads (dlopen of the same path gives the same instance, so
 * both see one set of allocations). */
static int (*cu_init)(unsigned);
static int (*cu_device_get)(int *, int);
static int (*cu_primary_retain)(void **, int);
static int (*cu_ctx_push)(void *);
static int (*cu_ctx_sync)(void);
static int (*cu_alloc)(uint64_t *, size_t);
static int (*cu_free)(uint64_t);
static int (*cu_htod)(uint64_t, const void *, size_t, void *);
static int (*cu_dtoh)(void *, uint64_t, size_t, void *);

static int load_emu(void) {
    const char *path = getenv("HASHEVICT_LIBCUDA");
    void *lib = path ? dlopen(path, RTLD_NOW) : NULL;
    if (!lib) return 0;
    *(void **)&cu_init = dlsym(lib, "cuInit");
    *(void **)&cu_device_get = dlsym(lib, "cuDeviceGet");
    *(void **)&cu_primary_retain = dlsym(lib, "cuDevicePrimaryCtxRetain");
    *(void **)&cu_ctx_push = dlsym(lib, "cuCtxPushCurrent_v2");
    *(void **)&cu_ctx_sync = dlsym(lib, "cuCtxSynchronize");
    *(void **)&cu_alloc = dlsym(lib, "cuMemAlloc_v2");
    *(void **)&cu_free = dlsym(lib, "cuMemFree_v2");
    *(void **)&cu_htod = dlsym(lib, "cuMemcpyHtoDAsync_v2");
    *(void **)&cu_dtoh = dlsym(lib, "cuMemcpyDtoHAsync_v2");
    if (!(cu_init && cu_device_get && cu_primary_retain && cu_ctx_push && cu_ctx_sync && cu_alloc && cu_free && cu_htod && cu_dtoh))
        return 0;
    /* What a real driver needs before cuMemAlloc (the emulation ignores
     * it): device 0's primary context current on this thread. The library
     * takes the context from the pointers, not from this. */
    int dev = 0;
    void *ctx = NULL;
    return cu_init(0) == 0 && cu_device_get(&dev, 0) == 0 && cu_primary_retain(&ctx, dev) == 0 && cu_ctx_push(ctx) == 0;
}

static void *dev_alloc(size_t n) {
    uint64_t p = 0;
    if (cu_alloc(&p, n) != 0) return NULL;
    return (void *)(uintptr_t)p;
}

static void upload(void *dev, const void *host, size_t n) {
    cu_htod((uint64_t)(uintptr_t)dev, host, n, NULL);
    cu_ctx_sync();
}
static void download(void *host, const void *dev, size_t n) {
    cu_dtoh(host, (uint64_t)(uintptr_t)dev, n, NULL);
    cu_ctx_sync();
}

static hashevict_tensor cuda_tensor(const void *data, int dtype, int64_t tokens, int64_t heads) {
    hashevict_tensor t = tu_tensor(data, dtype, tokens, heads, DIM);
    t.device = HASHEVICT_DEVICE_CUDA;
    return t;
}

static void fill(tu_rng *r, float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = tu_gauss(r);
}

static hashevict_engine *make(int mode, int score, uint64_t cap) {
    hashevict_params p = tu_params(mode, LAYERS, KV, QH, DIM, BITS, BUDGET, 4, 6);
    p.score = score;
    p.memory_cap_bytes = cap;
    hashevict_engine *e = NULL;
    if (!CHECK_ST(hashevict_engine_create(&p, &e), HASHEVICT_OK)) return NULL;
    CHECK_ST(hashevict_seq_add(e, 0), HASHEVICT_OK);
    return e;
}

/* No usable libcuda: CUDA calls are UNSUPPORTED and name the library; the
 * engine is not poisoned. */
static void without_driver(void) {
    hashevict_engine *e = make(HASHEVICT_MODE_SLOT, HASHEVICT_SCORE_INSTANT, 0);
    REQUIRE_V(e, "create");
    float q[QH * DIM], k[KV * DIM];
    tu_rng r = tu_rng_make(1, 2, 3);
    fill(&r, q, QH * DIM);
    fill(&r, k, KV * DIM);
    hashevict_tensor qt = cuda_tensor(q, HASHEVICT_DTYPE_F32, 1, QH), kt = cuda_tensor(k, HASHEVICT_DTYPE_F32, 1, KV);
    int32_t pos = 0, slots[KV], evicted[KV];
    uint64_t codes[KV];
    CHECK_ST(hashevict_place(e, 0, 0, &qt, &kt, &pos, 1, slots, evicted), HASHEVICT_ERR_UNSUPPORTED);
    CHECK(strstr(hashevict_last_error(), "libcuda") != NULL, "message: %s", hashevict_last_error());
    CHECK_ST(hashevict_place_async(e, 0, 0, &qt, &kt, &pos, 1, slots, evicted), HASHEVICT_ERR_UNSUPPORTED);
    CHECK_ST(hashevict_hash(e, 0, &kt, codes, KV), HASHEVICT_ERR_UNSUPPORTED);
    hashevict_engine *t = make(HASHEVICT_MODE_TOKEN, HASHEVICT_SCORE_INSTANT, 0);
    REQUIRE_V(t, "create");
    CHECK_ST(hashevict_observe(t, 0, 0, &qt, &kt, &pos, 1), HASHEVICT_ERR_UNSUPPORTED);
    CHECK(strstr(hashevict_last_error(), "libcuda") != NULL, "message: %s", hashevict_last_error());
    hashevict_engine_free(t);
    /* The same engine and sequence on the host. */
    qt.device = kt.device = HASHEVICT_DEVICE_HOST;
    CHECK_ST(hashevict_place(e, 0, 0, &qt, &kt, &pos, 1, slots, evicted), HASHEVICT_OK);
    CHECK(slots[0] == 0 && evicted[0] == -1, "host place after the refusals: slot %d, evicted %d", slots[0], evicted[0]);
    CHECK_ST(hashevict_hash(e, 0, &kt, codes, KV), HASHEVICT_OK);
    hashevict_engine_free(e);
}

/* One engine on the device, one on the host, the same steps: a prefill
 * chunk into free slots, then decode steps alternating hashevict_place and
 * hashevict_place_async, in bf16. */
static void agreement(int score) {
    hashevict_engine *de = make(HASHEVICT_MODE_SLOT, score, 0), *he = make(HASHEVICT_MODE_SLOT, score, 0);
    REQUIRE_V(de && he, "create");
    tu_rng r = tu_rng_make(7, (uint64_t)score, 9);
    enum { MAXT = PREFILL };
    static float qf[MAXT * QH * DIM], kf[MAXT * KV * DIM];
    static uint16_t qb[MAXT * QH * DIM], kb[MAXT * KV * DIM];
    void *dq = dev_alloc(sizeof qb), *dk = dev_alloc(sizeof kb), *dout = dev_alloc(2 * KV * sizeof(int32_t));
    REQUIRE_V(dq && dk && dout, "device alloc");
    int32_t next = 0, mismatches = 0;
    for (int step = 0; step <= STEPS; step++) {
        int n = step == 0 ? PREFILL : 1;
        int32_t pos[MAXT];
        for (int i = 0; i < n; i++) pos[i] = next, next += 1 + (int)tu_below(&r, 2);
        fill(&r, qf, (size_t)n * QH * DIM);
        fill(&r, kf, (size_t)n * KV * DIM);
        hashevict_tensor qt = tu_tensor(qb, HASHEVICT_DTYPE_BF16, n, QH, DIM), kt = tu_tensor(kb, HASHEVICT_DTYPE_BF16, n, KV, DIM);
        tu_store((unsigned char *)qb, &qt, qf);
        tu_store((unsigned char *)kb, &kt, kf);
        upload(dq, qb, (size_t)n * QH * DIM * 2);
        upload(dk, kb, (size_t)n * KV * DIM * 2);
        hashevict_tensor dqt = cuda_tensor(dq, HASHEVICT_DTYPE_BF16, n, QH), dkt = cuda_tensor(dk, HASHEVICT_DTYPE_BF16, n, KV);
        for (int l = 0; l < LAYERS; l++) {
            int32_t want[2 * MAXT * KV], got[2 * MAXT * KV];
            CHECK_ST(hashevict_place(he, 0, l, &qt, &kt, pos, n, want, want + n * KV), HASHEVICT_OK);
            if (n == 1 && step % 2) {
                CHECK_ST(hashevict_place_async(de, 0, l, &dqt, &dkt, pos, 1, dout, (int32_t *)dout + KV), HASHEVICT_OK);
                download(got, dout, 2 * KV * sizeof(int32_t));
            } else {
                CHECK_ST(hashevict_place(de, 0, l, &dqt, &dkt, pos, n, got, got + n * KV), HASHEVICT_OK);
            }
            if (memcmp(got, want, 2 * (size_t)n * KV * sizeof(int32_t)) != 0 && mismatches++ < 3)
                CHECK(0, "score %d, step %d, layer %d: device slot %d (evicted %d), host %d (%d)", score, step, l,
                      got[0], got[n * KV], want[0], want[n * KV]);
        }
    }
    CHECK(mismatches == 0, "score %d: %d steps disagree", score, mismatches);
    /* Codes of the last k, device against host. */
    uint64_t dc[KV], hc[KV];
    hashevict_tensor kt = tu_tensor(kb, HASHEVICT_DTYPE_BF16, 1, KV, DIM), dkt = cuda_tensor(dk, HASHEVICT_DTYPE_BF16, 1, KV);
    CHECK_ST(hashevict_hash(he, 1, &kt, hc, KV), HASHEVICT_OK);
    CHECK_ST(hashevict_hash(de, 1, &dkt, dc, KV), HASHEVICT_OK);
    CHECK(memcmp(dc, hc, sizeof dc) == 0, "codes: device %llx, host %llx", (unsigned long long)dc[0], (unsigned long long)hc[0]);
    hashevict_stats ds = {sizeof ds, 0, 0, 0, 0, 0, 0}, hs = {sizeof hs, 0, 0, 0, 0, 0, 0};
    CHECK_ST(hashevict_stats_get(de, 0, &ds), HASHEVICT_OK);
    CHECK_ST(hashevict_stats_get(he, 0, &hs), HASHEVICT_OK);
    CHECK(ds.steps == hs.steps && ds.tokens == hs.tokens && ds.evictions == hs.evictions && ds.cached == hs.cached,
          "stats: device %llu steps %llu evictions %llu cached, host %llu %llu %llu", (unsigned long long)ds.steps,
          (unsigned long long)ds.evictions, (unsigned long long)ds.cached, (unsigned long long)hs.steps,
          (unsigned long long)hs.evictions, (unsigned long long)hs.cached);
    cu_free((uint64_t)(uintptr_t)dq);
    cu_free((uint64_t)(uintptr_t)dk);
    cu_free((uint64_t)(uintptr_t)dout);
    hashevict_engine_free(de);
    hashevict_engine_free(he);
}

/* Token mode: one engine observes CUDA tensors, one host tensors, the same
 * steps (a prefill chunk larger than the budget, then decode steps and
 * chunks of 3, in f16), hashevict_evictions after most steps with a small
 * capacity, so that the sequence sometimes stays above its budget; with
 * key probes and a sliding-window layer on some runs. Every eviction, the
 * held positions and the counters agree. */
static void token_agreement(int score, int probe, int window) {
    hashevict_params p = tu_params(HASHEVICT_MODE_TOKEN, LAYERS, KV, QH, DIM, BITS, BUDGET, 4, 6);
    p.score = score;
    p.probe = probe;
    hashevict_engine *de = NULL, *he = NULL;
    REQUIRE_V(CHECK_ST(hashevict_engine_create(&p, &de), HASHEVICT_OK) && CHECK_ST(hashevict_engine_create(&p, &he), HASHEVICT_OK), "create");
    CHECK_ST(hashevict_seq_add(de, 0), HASHEVICT_OK);
    CHECK_ST(hashevict_seq_add(he, 0), HASHEVICT_OK);
    if (window) {
        CHECK_ST(hashevict_set_layer_window(de, 0, window), HASHEVICT_OK);
        CHECK_ST(hashevict_set_layer_window(he, 0, window), HASHEVICT_OK);
    }
    tu_rng r = tu_rng_make(11, (uint64_t)(score * 4 + probe), (uint64_t)window);
    enum { MAXT = BUDGET + 6 };
    static float qf[MAXT * QH * DIM], kf[MAXT * KV * DIM];
    static uint16_t qh[MAXT * QH * DIM], kh[MAXT * KV * DIM];
    void *dq = dev_alloc(sizeof qh), *dk = dev_alloc(sizeof kh);
    REQUIRE_V(dq && dk, "device alloc");
    int32_t next = 0, mismatches = 0, evicted = 0;
    for (int step = 0; step <= STEPS; step++) {
        int n = step == 0 ? MAXT : step % 7 == 3 ? 3 : 1;
        int32_t pos[MAXT];
        for (int i = 0; i < n; i++) pos[i] = next, next += 1 + (int)tu_below(&r, 2);
        fill(&r, qf, (size_t)n * QH * DIM);
        fill(&r, kf, (size_t)n * KV * DIM);
        hashevict_tensor qt = tu_tensor(qh, HASHEVICT_DTYPE_F16, n, QH, DIM), kt = tu_tensor(kh, HASHEVICT_DTYPE_F16, n, KV, DIM);
        tu_store((unsigned char *)qh, &qt, qf);
        tu_store((unsigned char *)kh, &kt, kf);
        upload(dq, qh, (size_t)n * QH * DIM * 2);
        upload(dk, kh, (size_t)n * KV * DIM * 2);
        hashevict_tensor dqt = cuda_tensor(dq, HASHEVICT_DTYPE_F16, n, QH), dkt = cuda_tensor(dk, HASHEVICT_DTYPE_F16, n, KV);
        for (int l = 0; l < LAYERS; l++) {
            CHECK_ST(hashevict_observe(he, 0, l, &qt, &kt, pos, n), HASHEVICT_OK);
            CHECK_ST(hashevict_observe(de, 0, l, &dqt, &dkt, pos, n), HASHEVICT_OK);
        }
        if (step % 5 == 4) continue; /* no eviction: the next step holds more */
        int32_t cap = 1 + (int32_t)tu_below(&r, 3), want[4], got[4], nw = -1, ng = -1;
        CHECK_ST(hashevict_evictions(he, 0, want, cap, &nw), HASHEVICT_OK);
        CHECK_ST(hashevict_evictions(de, 0, got, cap, &ng), HASHEVICT_OK);
        evicted += nw;
        if ((ng != nw || memcmp(got, want, (size_t)(nw > 0 ? nw : 0) * sizeof(int32_t)) != 0) && mismatches++ < 3)
            CHECK(0, "score %d probe %d window %d, step %d: device evicts %d (first %d), host %d (first %d)", score, probe,
                  window, step, ng, ng > 0 ? got[0] : -1, nw, nw > 0 ? want[0] : -1);
    }
    CHECK(mismatches == 0, "score %d probe %d window %d: %d steps disagree", score, probe, window, mismatches);
    CHECK(evicted > STEPS / 2, "only %d evictions: the test does not exercise the choice", evicted);
    static int32_t dh[MAXT + STEPS * 3], hh[MAXT + STEPS * 3];
    int32_t dn = -1, hn = -2;
    CHECK_ST(hashevict_token_positions(de, 0, dh, MAXT + STEPS * 3, &dn), HASHEVICT_OK);
    CHECK_ST(hashevict_token_positions(he, 0, hh, MAXT + STEPS * 3, &hn), HASHEVICT_OK);
    CHECK(dn == hn && dn > 0 && memcmp(dh, hh, (size_t)dn * sizeof(int32_t)) == 0, "held positions: device %d, host %d", dn, hn);
    hashevict_stats ds = {sizeof ds, 0, 0, 0, 0, 0, 0}, hs = {sizeof hs, 0, 0, 0, 0, 0, 0};
    CHECK_ST(hashevict_stats_get(de, 0, &ds), HASHEVICT_OK);
    CHECK_ST(hashevict_stats_get(he, 0, &hs), HASHEVICT_OK);
    CHECK(ds.steps == hs.steps && ds.tokens == hs.tokens && ds.evictions == hs.evictions && ds.cached == hs.cached,
          "token stats: device %llu steps %llu evictions %llu cached, host %llu %llu %llu", (unsigned long long)ds.steps,
          (unsigned long long)ds.evictions, (unsigned long long)ds.cached, (unsigned long long)hs.steps,
          (unsigned long long)hs.evictions, (unsigned long long)hs.cached);
    /* The device sequence refuses host tensors. Its state blob is the host
     * engine's, byte for byte, and loads as a host sequence. */
    hashevict_tensor qt = tu_tensor(qh, HASHEVICT_DTYPE_F16, 1, QH, DIM), kt = tu_tensor(kh, HASHEVICT_DTYPE_F16, 1, KV, DIM);
    CHECK_ST(hashevict_observe(de, 0, 0, &qt, &kt, &next, 1), HASHEVICT_ERR_UNSUPPORTED);
    size_t dsize = 0, hsize = 0, written = 0;
    CHECK_ST(hashevict_seq_state_size(de, 0, &dsize), HASHEVICT_OK);
    CHECK_ST(hashevict_seq_state_size(he, 0, &hsize), HASHEVICT_OK);
    unsigned char *db = malloc(dsize + 1), *hb = malloc(hsize + 1);
    REQUIRE_V(db && hb, "malloc");
    CHECK_ST(hashevict_seq_state_save(de, 0, db, dsize, &written), HASHEVICT_OK);
    CHECK_ST(hashevict_seq_state_save(he, 0, hb, hsize, &written), HASHEVICT_OK);
    CHECK(dsize == hsize && memcmp(db, hb, dsize) == 0, "state blobs: device %zu bytes, host %zu, or they differ", dsize, hsize);
    CHECK_ST(hashevict_seq_state_load(he, 1, db, dsize), HASHEVICT_OK);
    CHECK_ST(hashevict_token_positions(he, 1, hh, MAXT + STEPS * 3, &hn), HASHEVICT_OK);
    CHECK(hn == dn && memcmp(dh, hh, (size_t)dn * sizeof(int32_t)) == 0, "positions of the loaded blob: %d, want %d", hn, dn);
    free(db);
    free(hb);
    cu_free((uint64_t)(uintptr_t)dq);
    cu_free((uint64_t)(uintptr_t)dk);
    hashevict_engine_free(de);
    hashevict_engine_free(he);
}

/* The refusals, each followed by a call that works. */
static void refusals(void) {
    hashevict_engine *e = make(HASHEVICT_MODE_SLOT, HASHEVICT_SCORE_INSTANT, 0);
    REQUIRE_V(e, "create");
    CHECK_ST(hashevict_seq_add(e, 1), HASHEVICT_OK);
    tu_rng r = tu_rng_make(4, 5, 6);
    float q[QH * DIM], k[KV * DIM];
    fill(&r, q, QH * DIM);
    fill(&r, k, KV * DIM);
    float *dq = dev_alloc(sizeof q), *dk = dev_alloc(sizeof k);
    REQUIRE_V(dq && dk, "device alloc");
    upload(dq, q, sizeof q);
    upload(dk, k, sizeof k);
    hashevict_tensor hq = tu_tensor(q, HASHEVICT_DTYPE_F32, 1, QH, DIM), hk = tu_tensor(k, HASHEVICT_DTYPE_F32, 1, KV, DIM);
    hashevict_tensor cq = cuda_tensor(dq, HASHEVICT_DTYPE_F32, 1, QH), ck = cuda_tensor(dk, HASHEVICT_DTYPE_F32, 1, KV);
    int32_t pos = 0, slots[KV];

    /* Host memory marked CUDA: refused before anything reads it. */
    hashevict_tensor bad = cuda_tensor(k, HASHEVICT_DTYPE_F32, 1, KV);
    CHECK_ST(hashevict_place(e, 0, 0, &cq, &bad, &pos, 1, slots, NULL), HASHEVICT_ERR_INVALID_ARGUMENT);
    CHECK(strstr(hashevict_last_error(), "does not know it") != NULL, "message: %s", hashevict_last_error());
    /* Device memory where the library works on the host: refused, never
     * dereferenced (on a GPU that would fault). */
    CHECK_ST(hashevict_place(e, 0, 0, &cq, &ck, (const int32_t *)dk, 1, slots, NULL), HASHEVICT_ERR_INVALID_ARGUMENT);
    CHECK(strstr(hashevict_last_error(), "positions") != NULL, "message: %s", hashevict_last_error());
    CHECK_ST(hashevict_place(e, 0, 0, &cq, &ck, &pos, 1, (int32_t *)dk, NULL), HASHEVICT_ERR_INVALID_ARGUMENT);
    CHECK_ST(hashevict_place(e, 0, 0, &cq, &ck, &pos, 1, slots, (int32_t *)dk), HASHEVICT_ERR_INVALID_ARGUMENT);
    CHECK_ST(hashevict_place_async(e, 0, 0, &cq, &ck, (const int32_t *)dk, 1, (int32_t *)dk, NULL), HASHEVICT_ERR_INVALID_ARGUMENT);
    uint64_t hcodes[KV];
    CHECK_ST(hashevict_hash(e, 0, &ck, (uint64_t *)dk, KV), HASHEVICT_ERR_INVALID_ARGUMENT);
    CHECK_ST(hashevict_hash(e, 0, &ck, hcodes, KV), HASHEVICT_OK);
    /* One host and one CUDA tensor in a call. */
    CHECK_ST(hashevict_place(e, 0, 0, &hq, &ck, &pos, 1, slots, NULL), HASHEVICT_ERR_INVALID_ARGUMENT);
    /* A stream on one tensor but not the other. */
    hashevict_tensor cq2 = cq;
    cq2.stream = (void *)2; /* CU_STREAM_PER_THREAD */
    CHECK_ST(hashevict_place(e, 0, 0, &cq2, &ck, &pos, 1, slots, NULL), HASHEVICT_ERR_INVALID_ARGUMENT);
    /* Sequence 0 becomes a CUDA sequence, 1 a host one. */
    CHECK_ST(hashevict_place(e, 0, 0, &cq, &ck, &pos, 1, slots, NULL), HASHEVICT_OK);
    CHECK_ST(hashevict_place(e, 1, 0, &hq, &hk, &pos, 1, slots, NULL), HASHEVICT_OK);
    pos = 1;
    CHECK_ST(hashevict_place(e, 0, 0, &hq, &hk, &pos, 1, slots, NULL), HASHEVICT_ERR_UNSUPPORTED);
    CHECK_ST(hashevict_place(e, 1, 0, &cq, &ck, &pos, 1, slots, NULL), HASHEVICT_ERR_INVALID_ARGUMENT);
    /* A fork is a CUDA sequence too, at the same point. */
    CHECK_ST(hashevict_seq_fork(e, 0, 2), HASHEVICT_OK);
    CHECK_ST(hashevict_place(e, 2, 0, &cq, &ck, &pos, 1, slots, NULL), HASHEVICT_OK);
    CHECK(slots[0] == 1, "the fork's next slot: %d, want 1", slots[0]);
    CHECK_ST(hashevict_place(e, 2, 0, &hq, &hk, &pos, 1, slots, NULL), HASHEVICT_ERR_UNSUPPORTED);
    CHECK_ST(hashevict_seq_remove(e, 2), HASHEVICT_OK);
    size_t size = 0, written = 0;
    CHECK_ST(hashevict_seq_state_size(e, 0, &size), HASHEVICT_OK); /* the device tables, in the host format */
    unsigned char *blob = malloc(size);
    REQUIRE_V(blob, "malloc");
    CHECK_ST(hashevict_seq_state_save(e, 0, blob, size, &written), HASHEVICT_OK);
    CHECK_ST(hashevict_seq_state_load(e, 3, blob, written), HASHEVICT_OK); /* a host sequence */
    free(blob);
    int32_t held[BUDGET];
    CHECK_ST(hashevict_slot_positions(e, 0, 0, 1, held, BUDGET), HASHEVICT_OK);
    CHECK(held[0] == 0 && held[1] == -1, "slot positions of the CUDA sequence: %d %d", held[0], held[1]);
    CHECK_ST(hashevict_slot_positions(e, 0, 1, 1, held, BUDGET), HASHEVICT_OK); /* a layer not stepped yet */
    CHECK(held[0] == -1, "slot positions of a layer not stepped: %d", held[0]);
    CHECK_ST(hashevict_slot_positions(e, 3, 0, 1, held, BUDGET), HASHEVICT_OK);
    CHECK(held[0] == 0 && held[1] == -1, "slot positions of the loaded copy: %d %d", held[0], held[1]);
    CHECK_ST(hashevict_place(e, 3, 0, &cq, &ck, &pos, 1, slots, NULL), HASHEVICT_ERR_INVALID_ARGUMENT); /* host state */
    CHECK_ST(hashevict_place(e, 3, 0, &hq, &hk, &pos, 1, slots, NULL), HASHEVICT_OK);
    CHECK(slots[0] == 1, "the loaded copy's next slot: %d, want 1", slots[0]);
    /* A chunk that would evict has no device path; async takes one token. */
    CHECK_ST(hashevict_place_async(e, 0, 0, &cq, &ck, &pos, 1, slots, NULL), HASHEVICT_ERR_INVALID_ARGUMENT); /* host out */
    /* NaN in k: refused, nothing placed; the next step works. */
    float nan_k[KV * DIM];
    memcpy(nan_k, k, sizeof k);
    nan_k[DIM + 5] = tu_bits_f32(0x7fc00000u);
    upload(dk, nan_k, sizeof nan_k);
    CHECK_ST(hashevict_place(e, 0, 0, &cq, &ck, &pos, 1, slots, NULL), HASHEVICT_ERR_NONFINITE);
    upload(dk, k, sizeof k);
    CHECK_ST(hashevict_place(e, 0, 0, &cq, &ck, &pos, 1, slots, NULL), HASHEVICT_OK);
    CHECK(slots[0] == 1, "after the NaN step: slot %d, want 1", slots[0]);
    hashevict_stats st = {sizeof st, 0, 0, 0, 0, 0, 0};
    CHECK_ST(hashevict_stats_get(e, 0, &st), HASHEVICT_OK);
    CHECK(st.steps == 2 && st.cached == 2 * KV, "stats of the CUDA sequence: %llu steps, %llu cached",
          (unsigned long long)st.steps, (unsigned long long)st.cached);
    /* Reset: the sequence starts over, on the host this time. */
    CHECK_ST(hashevict_seq_reset(e, 0), HASHEVICT_OK);
    pos = 0;
    CHECK_ST(hashevict_place(e, 0, 0, &hq, &hk, &pos, 1, slots, NULL), HASHEVICT_OK);
    CHECK_ST(hashevict_seq_state_size(e, 0, &size), HASHEVICT_OK);
    hashevict_engine_free(e);

    /* Token mode: a CUDA sequence and a host one in one engine; place is
     * slot mode's, on CUDA tensors too. */
    hashevict_engine *t = make(HASHEVICT_MODE_TOKEN, HASHEVICT_SCORE_INSTANT, 0);
    REQUIRE_V(t, "create");
    CHECK_ST(hashevict_seq_add(t, 1), HASHEVICT_OK);
    pos = 0;
    CHECK_ST(hashevict_observe(t, 0, 0, &cq, &ck, &pos, 1), HASHEVICT_OK);
    CHECK_ST(hashevict_observe(t, 1, 0, &hq, &hk, &pos, 1), HASHEVICT_OK);
    CHECK_ST(hashevict_observe(t, 0, 1, &hq, &hk, &pos, 1), HASHEVICT_ERR_UNSUPPORTED);
    CHECK_ST(hashevict_observe(t, 1, 1, &cq, &ck, &pos, 1), HASHEVICT_ERR_INVALID_ARGUMENT);
    CHECK_ST(hashevict_place(t, 0, 1, &cq, &ck, &pos, 1, slots, NULL), HASHEVICT_ERR_WRONG_MODE);
    CHECK_ST(hashevict_observe(t, 0, 1, &cq, &ck, &pos, 1), HASHEVICT_OK);
    int32_t tp[4], tn = -1;
    CHECK_ST(hashevict_token_positions(t, 0, tp, 4, &tn), HASHEVICT_OK);
    CHECK(tn == 1 && tp[0] == 0, "positions of the CUDA token sequence: %d (%d)", tn, tp[0]);
    CHECK_ST(hashevict_evictions(t, 0, tp, 4, &tn), HASHEVICT_OK);
    CHECK(tn == 0, "evictions under the budget: %d", tn);
    hashevict_engine_free(t);

    /* A memory cap that holds the host state but not the device tables. */
    hashevict_params p = tu_params(HASHEVICT_MODE_SLOT, LAYERS, KV, QH, DIM, BITS, BUDGET, 4, 6);
    hashevict_engine *c = NULL;
    for (uint64_t cap = 1024; cap < (1u << 24) && !c; cap += cap / 8) {
        p.memory_cap_bytes = cap;
        if (hashevict_engine_create(&p, &c) != HASHEVICT_OK) c = NULL;
    }
    REQUIRE_V(c, "no cap admits the engine");
    CHECK_ST(hashevict_seq_add(c, 0), HASHEVICT_OK);
    CHECK_ST(hashevict_place(c, 0, 0, &cq, &ck, &pos, 1, slots, NULL), HASHEVICT_ERR_MEMORY_CAP);
    CHECK_ST(hashevict_place(c, 0, 0, &hq, &hk, &pos, 1, slots, NULL), HASHEVICT_OK);
    hashevict_engine_free(c);
    cu_free((uint64_t)(uintptr_t)dq);
    cu_free((uint64_t)(uintptr_t)dk);
}

int main(void) {
    const char *mode = getenv("HASHEVICT_TEST_CUDA");
    if (mode && strcmp(mode, "none") == 0) {
        without_driver();
    } else if (mode && strcmp(mode, "emu") == 0) {
        if (!load_emu()) {
            printf("test_cuda: FAILED: HASHEVICT_LIBCUDA=%s is not the emulated driver\n", getenv("HASHEVICT_LIBCUDA"));
            return 1;
        }
        agreement(HASHEVICT_SCORE_INSTANT);
        agreement(HASHEVICT_SCORE_ACCUMULATED);
        agreement(HASHEVICT_SCORE_DECAYED);
        token_agreement(HASHEVICT_SCORE_INSTANT, HASHEVICT_PROBE_QUERY, 0);
        token_agreement(HASHEVICT_SCORE_ACCUMULATED, HASHEVICT_PROBE_KEY, 0);
        token_agreement(HASHEVICT_SCORE_DECAYED, HASHEVICT_PROBE_QUERY, 12);
        token_agreement(HASHEVICT_SCORE_INSTANT, HASHEVICT_PROBE_KEY, 9);
        refusals();
    } else {
        printf("test_cuda: set HASHEVICT_TEST_CUDA=none or emu (ctest does)\n");
        return 1;
    }
    return check_report(mode);
}
