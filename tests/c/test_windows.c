/*
 * test_windows.c — hashevict_set_layer_window through the C ABI: every
 * eviction of a token-mode engine with sliding-window layers is the one a
 * reference recomputed here from the library's own codes chooses (a
 * position's score is the mean of its summed Hamming distances over the
 * (layer, KV head) pairs whose window still reaches it; +Inf when none
 * does; largest first, ties to the lowest position), including after the
 * windows change; bad arguments get their status.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "testutil.h"

enum { L = 3, KV = 2, QH = 4, DIM = 32, BITS = 16, BUDGET = 30, N = 160, SINK = 4, RECENT = 10 };
enum { G = QH / KV, W = (BITS + 63) / 64 };

static float q[N][L][QH * DIM], k[N][L][KV * DIM];
static uint64_t kc[N][L][KV][W], qc[N][L][QH][W];
static int live[N];

static int ham(const uint64_t *a, const uint64_t *b) {
    int d = 0;
    for (int w = 0; w < W; w++) d += tu_popcount64(a[w] ^ b[w]);
    return d;
}

/* The reference's victim after the step at position t, or -1. */
static int reference_victim(int t, const int window[L]) {
    int n_live = 0;
    for (int p = 0; p <= t; p++) n_live += live[p];
    if (n_live <= BUDGET) return -1;
    int best = -1;
    double best_score = 0;
    for (int p = SINK; p < t - RECENT; p++) {
        if (!live[p]) continue;
        double total = 0;
        int pairs = 0;
        for (int l = 0; l < L; l++) {
            if (window[l] > 0 && p <= t - window[l]) continue;
            for (int h = 0; h < KV; h++) {
                int d = 0;
                for (int j = 0; j < G; j++) d += ham(kc[p][l][h], qc[t][l][h * G + j]);
                total += d;
                pairs++;
            }
        }
        double s = pairs ? total / pairs : INFINITY;
        if (best < 0 || s > best_score) best = p, best_score = s;
    }
    return best;
}

static void windows_decide(void) {
    hashevict_params p = tu_params(HASHEVICT_MODE_TOKEN, L, KV, QH, DIM, BITS, BUDGET, SINK, RECENT);
    hashevict_engine *e = NULL;
    CHECK_ST(hashevict_engine_create(&p, &e), HASHEVICT_OK);
    if (!e) return;
    CHECK_ST(hashevict_seq_add(e, 0), HASHEVICT_OK);
    tu_rng r = tu_rng_make(21, 1, 2);
    int window[L] = {0, 6, 12};
    for (int l = 0; l < L; l++) CHECK_ST(hashevict_set_layer_window(e, l, window[l]), HASHEVICT_OK);
    int evicted = 0;
    for (int t = 0; t < N; t++) {
        if (t == 100) {
            /* Every layer sliding: the oldest positions are seen by none. */
            window[0] = 25;
            CHECK_ST(hashevict_set_layer_window(e, 0, window[0]), HASHEVICT_OK);
        }
        int32_t pos = t;
        for (int l = 0; l < L; l++) {
            for (size_t i = 0; i < QH * DIM; i++) q[t][l][i] = tu_gauss(&r);
            for (size_t i = 0; i < KV * DIM; i++) k[t][l][i] = tu_gauss(&r);
            hashevict_tensor tq = tu_tensor(q[t][l], HASHEVICT_DTYPE_F32, 1, QH, DIM);
            hashevict_tensor tk = tu_tensor(k[t][l], HASHEVICT_DTYPE_F32, 1, KV, DIM);
            CHECK_ST(hashevict_hash(e, l, &tq, &qc[t][l][0][0], QH * W), HASHEVICT_OK);
            CHECK_ST(hashevict_hash(e, l, &tk, &kc[t][l][0][0], KV * W), HASHEVICT_OK);
            CHECK_ST(hashevict_observe(e, 0, l, &tq, &tk, &pos, 1), HASHEVICT_OK);
        }
        live[t] = 1;
        int want = reference_victim(t, window);
        int32_t out[4], got = -1;
        CHECK_ST(hashevict_evictions(e, 0, out, 4, &got), HASHEVICT_OK);
        if (want < 0) {
            CHECK(got == 0, "step %d: evicted %d positions, the reference none", t, got);
        } else {
            CHECK(got == 1 && out[0] == want, "step %d: evicted %d (count %d), the reference %d", t,
                  got > 0 ? out[0] : -1, got, want);
            live[want] = 0;
            evicted++;
        }
    }
    CHECK(evicted == N - BUDGET, "%d evictions, want %d", evicted, N - BUDGET);
    hashevict_engine_free(e);
}

static void bad_arguments(void) {
    hashevict_params p = tu_params(HASHEVICT_MODE_SLOT, L, KV, QH, DIM, BITS, BUDGET, SINK, RECENT);
    hashevict_engine *slot = NULL, *tok = NULL;
    CHECK_ST(hashevict_engine_create(&p, &slot), HASHEVICT_OK);
    p.mode = HASHEVICT_MODE_TOKEN;
    CHECK_ST(hashevict_engine_create(&p, &tok), HASHEVICT_OK);
    if (!slot || !tok) return;
    CHECK_ST(hashevict_set_layer_window(slot, 0, 8), HASHEVICT_ERR_WRONG_MODE);
    CHECK_ST(hashevict_set_layer_window(tok, -1, 8), HASHEVICT_ERR_OUT_OF_RANGE);
    CHECK_ST(hashevict_set_layer_window(tok, L, 8), HASHEVICT_ERR_OUT_OF_RANGE);
    CHECK_ST(hashevict_set_layer_window(tok, 0, -1), HASHEVICT_ERR_INVALID_ARGUMENT);
    CHECK_ST(hashevict_set_layer_window(NULL, 0, 8), HASHEVICT_ERR_INVALID_HANDLE);
    CHECK(strstr(hashevict_last_error(), "hashevict_set_layer_window") != NULL, "message %s",
          hashevict_last_error());
    CHECK_ST(hashevict_set_layer_window(tok, L - 1, INT32_MAX), HASHEVICT_OK);
    CHECK_ST(hashevict_set_layer_window(tok, L - 1, 0), HASHEVICT_OK);
    hashevict_engine_free(slot);
    hashevict_engine_free(tok);
}

int main(void) {
    windows_decide();
    bad_arguments();
    return check_report("test_windows");
}
