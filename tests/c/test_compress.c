/*
 * test_compress.c — compress after prefill through the C ABI: hashevict_compress
 * (slot mode) keeps per KV head what a reference recomputed here from the
 * library's own codes keeps, leaves no hole in the cache, and decode steps
 * continue; hashevict_compress_score (token mode) followed by
 * hashevict_evictions drops down to the budget and keeps the window; bad
 * arguments get their status and change nothing; the panic path poisons.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "testutil.h"

enum { L = 2, KV = 2, QH = 6, DIM = 32, BITS = 32, BUDGET = 40, N = 120, NW = 8, POOL = 5 };
enum { G = QH / KV, W = (BITS + 63) / 64 };

static float q[N * QH * DIM], k[N * KV * DIM];
static int32_t pos[N];

static void fill(uint64_t seed) {
    tu_rng r = tu_rng_make(seed, 1, 2);
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) q[i] = tu_gauss(&r);
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) k[i] = tu_gauss(&r);
    for (int i = 0; i < N; i++) pos[i] = i;
}

static int ham(const uint64_t *a, const uint64_t *b) {
    int d = 0;
    for (int w = 0; w < W; w++) d += tu_popcount64(a[w] ^ b[w]);
    return d;
}

/* Which positions (kept[tok] = 1) KV head h of `layer` keeps after
 * compressing the whole prompt in one call, with the DISTANCE form: the
 * reference of the header's text, in double. */
static int reference_keep(hashevict_engine *e, int layer, int h, int form, int kept[N]) {
    static uint64_t kc[N * KV * W], qc[NW * QH * W];
    hashevict_tensor tk = tu_tensor(k, HASHEVICT_DTYPE_F32, N, KV, DIM);
    hashevict_tensor tq = tu_tensor(q + (N - NW) * QH * DIM, HASHEVICT_DTYPE_F32, NW, QH, DIM);
    if (hashevict_hash(e, layer, &tk, kc, N * KV * W) || hashevict_hash(e, layer, &tq, qc, NW * QH * W)) return 0;
    double est[N], pooled[N];
    for (int t = 0; t < N; t++) {
        double s = 0;
        for (int w = 0; w < NW; w++)
            for (int j = 0; j < G; j++) {
                int d = ham(kc + (t * KV + h) * W, qc + (w * QH + h * G + j) * W);
                s += (form & 0xff) == HASHEVICT_COMPRESS_COSINE ? cos(3.14159265358979323846 * d / BITS) : -(double)d;
            }
        est[t] = s / (NW * G);
    }
    if (form & HASHEVICT_COMPRESS_LOCAL) { /* minus the mean within 64 either side */
        double local[N];
        for (int t = 0; t < N; t++) {
            int lo = t - 64 < 0 ? 0 : t - 64, hi = t + 64 > N - 1 ? N - 1 : t + 64;
            double s = 0;
            for (int j = lo; j <= hi; j++) s += est[j];
            local[t] = est[t] - s / (hi - lo + 1);
        }
        memcpy(est, local, sizeof est);
    }
    const int back = form & HASHEVICT_COMPRESS_TRAILING ? POOL - 1 : POOL / 2;
    for (int t = 0; t < N; t++) {
        double m = -INFINITY;
        for (int j = t - back; j <= t + POOL / 2; j++)
            if (j >= 0 && j < N && est[j] > m) m = est[j];
        pooled[t] = m;
    }
    int n_kept = 0;
    hashevict_params p;
    memset(&p, 0, sizeof p);
    p.size = sizeof p;
    hashevict_engine_params(e, &p);
    for (int t = 0; t < N; t++) {
        kept[t] = t < p.n_sink || t >= N - 1 - p.n_recent || t >= N - NW;
        n_kept += kept[t];
    }
    /* Keep the best unprotected one at a time: largest pooled estimate,
     * ties to the newest. */
    while (n_kept < BUDGET) {
        int best = -1;
        for (int t = 0; t < N; t++)
            if (!kept[t] && (best < 0 || pooled[t] >= pooled[best])) best = t;
        kept[best] = 1;
        n_kept++;
    }
    return 1;
}

static void slot_mode(int form) {
    fill(7 + form);
    hashevict_params p = tu_params(HASHEVICT_MODE_SLOT, L, KV, QH, DIM, BITS, BUDGET, 4, 10);
    hashevict_engine *e = NULL;
    CHECK_ST(hashevict_engine_create(&p, &e), HASHEVICT_OK);
    if (!e) return;
    CHECK_ST(hashevict_seq_add(e, 0), HASHEVICT_OK);
    hashevict_tensor tk = tu_tensor(k, HASHEVICT_DTYPE_F32, N, KV, DIM);
    hashevict_tensor tq = tu_tensor(q + (N - NW) * QH * DIM, HASHEVICT_DTYPE_F32, NW, QH, DIM);
    static int32_t out[N * KV];
    for (int l = 0; l < L; l++) {
        CHECK_ST(hashevict_compress(e, 0, l, &tq, NW, &tk, pos, N, POOL, form, out), HASHEVICT_OK);
        for (int h = 0; h < KV; h++) {
            int kept[N];
            REQUIRE_V(reference_keep(e, l, h, form, kept), "hashevict_hash failed: %s", hashevict_last_error());
            int32_t held[BUDGET];
            CHECK_ST(hashevict_slot_positions(e, 0, l, h, held, BUDGET), HASHEVICT_OK);
            int agree = 1, n_used = 0;
            for (int t = 0; t < N; t++) {
                int32_t s = out[t * KV + h];
                if ((s >= 0) != kept[t]) agree = 0;
                if (s >= 0) {
                    n_used++;
                    CHECK(s < BUDGET && held[s] == t, "form %d layer %d head %d: token %d in slot %d, which holds %d",
                          form, l, h, t, s, s < BUDGET ? held[s] : -2);
                }
            }
            CHECK(agree, "form %d layer %d head %d: the kept positions differ from the reference", form, l, h);
            CHECK(n_used == BUDGET, "form %d layer %d head %d: %d tokens kept, want the budget %d", form, l, h, n_used,
                  BUDGET);
        }
    }
    /* Decode continues with per-step eviction. */
    for (int step = 0; step < 5; step++) {
        int32_t pp = N + step, slots[KV], ev[KV];
        hashevict_tensor q1 = tu_tensor(q + step * QH * DIM, HASHEVICT_DTYPE_F32, 1, QH, DIM);
        hashevict_tensor k1 = tu_tensor(k + step * KV * DIM, HASHEVICT_DTYPE_F32, 1, KV, DIM);
        for (int l = 0; l < L; l++) {
            CHECK_ST(hashevict_place(e, 0, l, &q1, &k1, &pp, 1, slots, ev), HASHEVICT_OK);
            for (int h = 0; h < KV; h++) CHECK(ev[h] >= 0, "decode after compress: slot %d was free", slots[h]);
        }
    }
    hashevict_engine_free(e);
}

static void token_mode(void) {
    fill(11);
    hashevict_params p = tu_params(HASHEVICT_MODE_TOKEN, L, KV, QH, DIM, BITS, BUDGET, 4, 10);
    hashevict_engine *e = NULL;
    CHECK_ST(hashevict_engine_create(&p, &e), HASHEVICT_OK);
    if (!e) return;
    CHECK_ST(hashevict_seq_add(e, 0), HASHEVICT_OK);
    hashevict_tensor tk = tu_tensor(k, HASHEVICT_DTYPE_F32, N, KV, DIM);
    hashevict_tensor tqa = tu_tensor(q, HASHEVICT_DTYPE_F32, N, QH, DIM);
    hashevict_tensor tq = tu_tensor(q + (N - NW) * QH * DIM, HASHEVICT_DTYPE_F32, NW, QH, DIM);
    for (int l = 0; l < L; l++) CHECK_ST(hashevict_observe(e, 0, l, &tqa, &tk, pos, N), HASHEVICT_OK);
    for (int l = 0; l < L; l++)
        CHECK_ST(hashevict_compress_score(e, 0, l, &tq, pos + N - NW, NW, POOL, HASHEVICT_COMPRESS_COSINE),
                 HASHEVICT_OK);
    int32_t out[N], got = 0;
    CHECK_ST(hashevict_evictions(e, 0, out, N, &got), HASHEVICT_OK);
    CHECK(got == N - BUDGET, "token mode: %d positions dropped, want %d", got, N - BUDGET);
    for (int i = 0; i < got; i++)
        CHECK(out[i] >= 4 && out[i] < N - NW, "token mode: dropped position %d is a sink or in the window", out[i]);
    int32_t held[N], n_held = 0;
    CHECK_ST(hashevict_token_positions(e, 0, held, N, &n_held), HASHEVICT_OK);
    CHECK(n_held == BUDGET, "token mode: %d positions held, want %d", n_held, BUDGET);
    /* Decode continues. */
    int32_t pp = N;
    hashevict_tensor q1 = tu_tensor(q, HASHEVICT_DTYPE_F32, 1, QH, DIM);
    hashevict_tensor k1 = tu_tensor(k, HASHEVICT_DTYPE_F32, 1, KV, DIM);
    for (int l = 0; l < L; l++) CHECK_ST(hashevict_observe(e, 0, l, &q1, &k1, &pp, 1), HASHEVICT_OK);
    CHECK_ST(hashevict_evictions(e, 0, out, N, &got), HASHEVICT_OK);
    CHECK(got == 1, "token mode: the decode step dropped %d, want 1", got);
    hashevict_engine_free(e);
}

static uint64_t cached(hashevict_engine *e) {
    hashevict_stats s;
    memset(&s, 0, sizeof s);
    s.size = sizeof s;
    hashevict_stats_get(e, 0, &s);
    return s.cached + (s.steps << 32);
}

static void bad_input(void) {
    fill(3);
    hashevict_params p = tu_params(HASHEVICT_MODE_SLOT, L, KV, QH, DIM, BITS, BUDGET, 4, 10);
    hashevict_engine *e = NULL, *et = NULL;
    CHECK_ST(hashevict_engine_create(&p, &e), HASHEVICT_OK);
    p.mode = HASHEVICT_MODE_TOKEN;
    CHECK_ST(hashevict_engine_create(&p, &et), HASHEVICT_OK);
    if (!e || !et) return;
    CHECK_ST(hashevict_seq_add(e, 0), HASHEVICT_OK);
    CHECK_ST(hashevict_seq_add(et, 0), HASHEVICT_OK);
    hashevict_tensor tk = tu_tensor(k, HASHEVICT_DTYPE_F32, N, KV, DIM);
    hashevict_tensor tq = tu_tensor(q, HASHEVICT_DTYPE_F32, NW, QH, DIM);
    hashevict_tensor tq_short = tu_tensor(q, HASHEVICT_DTYPE_F32, NW - 1, QH, DIM);
    hashevict_tensor tq_kv = tu_tensor(q, HASHEVICT_DTYPE_F32, NW, KV, DIM);
    static int32_t out[N * KV];
    uint64_t before = cached(e);
    CHECK_ST(hashevict_compress(NULL, 0, 0, &tq, NW, &tk, pos, N, POOL, 0, out), HASHEVICT_ERR_INVALID_HANDLE);
    CHECK_ST(hashevict_compress(e, 0, 0, &tq, NW, NULL, pos, N, POOL, 0, out), HASHEVICT_ERR_INVALID_ARGUMENT);
    CHECK_ST(hashevict_compress(e, 0, 0, &tq, NW, &tk, NULL, N, POOL, 0, out), HASHEVICT_ERR_INVALID_ARGUMENT);
    CHECK_ST(hashevict_compress(e, 0, 0, &tq, NW, &tk, pos, N, POOL, 0, NULL), HASHEVICT_ERR_INVALID_ARGUMENT);
    CHECK_ST(hashevict_compress(e, 0, 0, NULL, NW, &tk, pos, N, POOL, 0, out), HASHEVICT_ERR_INVALID_ARGUMENT);
    CHECK_ST(hashevict_compress(e, 0, 0, &tq, 0, &tk, pos, N, POOL, 0, out), HASHEVICT_ERR_INVALID_ARGUMENT);
    CHECK_ST(hashevict_compress(e, 0, 0, &tq, N + 1, &tk, pos, N, POOL, 0, out), HASHEVICT_ERR_INVALID_ARGUMENT);
    CHECK_ST(hashevict_compress(e, 0, 0, &tq, NW, &tk, pos, N, -3, 0, out), HASHEVICT_ERR_INVALID_ARGUMENT);
    CHECK_ST(hashevict_compress(e, 0, 0, &tq, NW, &tk, pos, N, POOL, 9, out), HASHEVICT_ERR_INVALID_ARGUMENT);
    /* A flag this library does not know, and a known flag on an unknown form. */
    CHECK_ST(hashevict_compress(e, 0, 0, &tq, NW, &tk, pos, N, POOL, 0x400, out), HASHEVICT_ERR_INVALID_ARGUMENT);
    CHECK_ST(hashevict_compress(e, 0, 0, &tq, NW, &tk, pos, N, POOL, 3 | HASHEVICT_COMPRESS_LOCAL, out),
             HASHEVICT_ERR_INVALID_ARGUMENT);
    CHECK_ST(hashevict_compress(e, 0, 0, &tq_short, NW, &tk, pos, N, POOL, 0, out), HASHEVICT_ERR_SHAPE);
    CHECK_ST(hashevict_compress(e, 0, 0, &tq_kv, NW, &tk, pos, N, POOL, 0, out), HASHEVICT_ERR_SHAPE);
    CHECK_ST(hashevict_compress(e, 0, 0, &tq, NW, &tk, pos, N - 1, POOL, 0, out), HASHEVICT_ERR_SHAPE);
    CHECK_ST(hashevict_compress(e, 0, L, &tq, NW, &tk, pos, N, POOL, 0, out), HASHEVICT_ERR_OUT_OF_RANGE);
    CHECK_ST(hashevict_compress(e, 1, 0, &tq, NW, &tk, pos, N, POOL, 0, out), HASHEVICT_ERR_UNKNOWN_SEQUENCE);
    CHECK_ST(hashevict_compress(et, 0, 0, &tq, NW, &tk, pos, N, POOL, 0, out), HASHEVICT_ERR_WRONG_MODE);
    /* The window alone is larger than the budget. */
    hashevict_tensor tq_all = tu_tensor(q, HASHEVICT_DTYPE_F32, N, QH, DIM);
    CHECK_ST(hashevict_compress(e, 0, 0, &tq_all, N, &tk, pos, N, POOL, 0, out), HASHEVICT_ERR_CHUNK_TOO_LARGE);
    float saved = k[5];
    k[5] = NAN;
    CHECK_ST(hashevict_compress(e, 0, 0, &tq, NW, &tk, pos, N, POOL, 0, out), HASHEVICT_ERR_NONFINITE);
    k[5] = saved;
    CHECK(cached(e) == before, "a refused hashevict_compress changed the sequence's counters");
    /* Token mode. */
    CHECK_ST(hashevict_compress_score(e, 0, 0, &tq, pos, NW, POOL, 0), HASHEVICT_ERR_WRONG_MODE);
    CHECK_ST(hashevict_compress_score(et, 0, 0, &tq, NULL, NW, POOL, 0), HASHEVICT_ERR_INVALID_ARGUMENT);
    CHECK_ST(hashevict_compress_score(et, 0, 0, &tq, pos, 0, POOL, 0), HASHEVICT_ERR_INVALID_ARGUMENT);
    CHECK_ST(hashevict_compress_score(et, 0, 0, NULL, pos, NW, POOL, 0), HASHEVICT_ERR_INVALID_ARGUMENT);
    CHECK_ST(hashevict_compress_score(et, 0, 0, &tq_short, pos, NW, POOL, 0), HASHEVICT_ERR_SHAPE);
    CHECK_ST(hashevict_compress_score(et, 0, 0, &tq, pos, NW, POOL, 0), HASHEVICT_ERR_POSITION);
    /* The engine still works after every refusal. */
    hashevict_tensor tq_ok = tu_tensor(q + (N - NW) * QH * DIM, HASHEVICT_DTYPE_F32, NW, QH, DIM);
    CHECK_ST(hashevict_compress(e, 0, 0, &tq_ok, NW, &tk, pos, N, POOL, 0, out), HASHEVICT_OK);
    hashevict_engine_free(e);
    hashevict_engine_free(et);
}

static void panic_path(void) {
    fill(5);
    setenv("HASHEVICT_TEST_PANIC", "hashevict_compress", 1);
    hashevict_params p = tu_params(HASHEVICT_MODE_SLOT, L, KV, QH, DIM, BITS, BUDGET, 4, 10);
    hashevict_engine *e = NULL;
    CHECK_ST(hashevict_engine_create(&p, &e), HASHEVICT_OK);
    unsetenv("HASHEVICT_TEST_PANIC");
    if (!e) return;
    CHECK_ST(hashevict_seq_add(e, 0), HASHEVICT_OK);
    hashevict_tensor tk = tu_tensor(k, HASHEVICT_DTYPE_F32, N, KV, DIM);
    hashevict_tensor tq = tu_tensor(q, HASHEVICT_DTYPE_F32, NW, QH, DIM);
    static int32_t out[N * KV];
    CHECK_ST(hashevict_compress(e, 0, 0, &tq, NW, &tk, pos, N, POOL, 0, out), HASHEVICT_ERR_INTERNAL);
    CHECK_ST(hashevict_seq_add(e, 1), HASHEVICT_ERR_INTERNAL);
    hashevict_engine_free(e);
}

int main(void) {
    slot_mode(HASHEVICT_COMPRESS_DISTANCE);
    slot_mode(HASHEVICT_COMPRESS_COSINE);
    slot_mode(HASHEVICT_COMPRESS_COSINE | HASHEVICT_COMPRESS_LOCAL | HASHEVICT_COMPRESS_TRAILING);
    slot_mode(HASHEVICT_COMPRESS_DISTANCE | HASHEVICT_COMPRESS_TRAILING);
    token_mode();
    bad_input();
    panic_path();
    return check_report("test_compress");
}
