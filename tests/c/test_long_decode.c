/*
 * test_long_decode.c — a long slot-mode decode, the way a runtime drives
 * libhashevict: one hashevict_place per layer per generated token.
 *
 * 2 layers, 2 KV heads, 4 query heads, head_dim 64, budget 256, 10,000 steps
 * of synthetic f32 keys and queries (Gaussian noise plus a few recurring
 * "important" directions). At every step it checks that no slot index is out
 * of range or shared, that out_evicted names what the slot held, and that
 * the sinks and the recent window are held by every (layer, KV head).
 * Ends with a one-line summary.
 *
 * Uses only include/hashevict.h and check.h, so out-of-tree consumers can
 * build it (tests/consumer). Optional argument: the number of steps.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "hashevict.h"

enum { LAYERS = 2, KV = 2, QH = 4, DIM = 64, BUDGET = 256, SINK = 4, RECENT = 32, TOPICS = 6 };

static uint64_t rng_state = 0x243F6A8885A308D3ull;

static uint64_t rnd(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double unit(void) { return (double)(rnd() >> 11) * (1.0 / 9007199254740992.0); }

/* Irwin-Hall approximation of a standard normal. */
static float gauss(void) {
    double s = 0;
    for (int i = 0; i < 12; i++) s += unit();
    return (float)(s - 6.0);
}

int main(int argc, char **argv) {
    int steps = argc > 1 ? atoi(argv[1]) : 10000;
    if (steps < 1) steps = 10000;
    if (hashevict_abi_version() != HASHEVICT_ABI_VERSION) {
        fprintf(stderr, "ABI mismatch: library %d, header %d\n", hashevict_abi_version(), HASHEVICT_ABI_VERSION);
        return 1;
    }

    hashevict_params p = hashevict_default_params();
    p.n_layers = LAYERS;
    p.n_kv_heads = KV;
    p.n_q_heads = QH;
    p.head_dim = DIM;
    p.hash_bits = 32;
    p.budget = BUDGET;
    p.n_sink = SINK;
    p.n_recent = RECENT;
    p.seed = 2024;
    hashevict_engine *e = NULL;
    if (!CHECK_ST(hashevict_engine_create(&p, &e), HASHEVICT_OK)) return check_report("test_long_decode");
    if (!CHECK_ST(hashevict_seq_add(e, 0), HASHEVICT_OK)) return check_report("test_long_decode");

    /* recurring directions: some keys are strongly aligned with a topic, and
     * queries lean towards the current topic */
    static float topic[TOPICS][DIM];
    for (int t = 0; t < TOPICS; t++)
        for (int i = 0; i < DIM; i++) topic[t][i] = gauss();

    static float q[QH * DIM], k[KV * DIM];
    static int32_t held[LAYERS][KV][BUDGET]; /* the test's copy of every table */
    static int32_t buf[BUDGET];
    for (int l = 0; l < LAYERS; l++)
        for (int h = 0; h < KV; h++)
            for (int i = 0; i < BUDGET; i++) held[l][h][i] = -1;

    hashevict_tensor tq, tk;
    memset(&tq, 0, sizeof tq);
    tq.data = q;
    tq.dtype = HASHEVICT_DTYPE_F32;
    tq.device = HASHEVICT_DEVICE_HOST;
    tq.head_dim = DIM;
    tq.n_heads = QH;
    tq.n_tokens = 1;
    tq.head_stride = DIM * sizeof(float);
    tq.token_stride = QH * DIM * sizeof(float);
    tk = tq;
    tk.data = k;
    tk.n_heads = KV;
    tk.token_stride = KV * DIM * sizeof(float);

    uint64_t evictions = 0;
    int failed = 0;
    for (int32_t t = 0; t < steps && !failed; t++) {
        int cur = (t / 500) % TOPICS;
        for (int l = 0; l < LAYERS && !failed; l++) {
            for (int h = 0; h < QH; h++)
                for (int i = 0; i < DIM; i++) q[h * DIM + i] = 0.5f * gauss() + topic[cur][i];
            int important = rnd() % 8 == 0;
            int kt = (int)(rnd() % TOPICS);
            for (int h = 0; h < KV; h++)
                for (int i = 0; i < DIM; i++) k[h * DIM + i] = gauss() + (important ? 2.0f * topic[kt][i] : 0.0f);
            int32_t slots[KV], ev[KV];
            if (!CHECK_ST(hashevict_place(e, 0, l, &tq, &tk, &t, 1, slots, ev), HASHEVICT_OK)) {
                failed = 1;
                break;
            }
            for (int h = 0; h < KV; h++) {
                int32_t s = slots[h];
                if (s < 0 || s >= BUDGET) {
                    CHECK(0, "step %d layer %d head %d: slot %d outside [0, %d)", t, l, h, s, BUDGET);
                    failed = 1;
                    break;
                }
                if (ev[h] != held[l][h][s]) {
                    CHECK(0, "step %d layer %d head %d: out_evicted %d but slot %d held %d", t, l, h, ev[h], s,
                          held[l][h][s]);
                    failed = 1;
                }
                if (ev[h] >= 0) {
                    evictions++;
                    if (ev[h] < SINK || ev[h] >= t - RECENT) {
                        CHECK(0, "step %d layer %d head %d: evicted protected position %d", t, l, h, ev[h]);
                        failed = 1;
                    }
                }
                held[l][h][s] = t;
                if (!CHECK_ST(hashevict_slot_positions(e, 0, l, h, buf, BUDGET), HASHEVICT_OK)) {
                    failed = 1;
                    break;
                }
                if (memcmp(buf, held[l][h], sizeof buf) != 0) {
                    CHECK(0, "step %d layer %d head %d: slot_positions differs from the outputs so far", t, l, h);
                    failed = 1;
                    break;
                }
                /* protections: sinks and the window [t - RECENT, t] held */
                int protected_held = 0;
                for (int i = 0; i < BUDGET; i++) {
                    int32_t x = buf[i];
                    if (x >= 0 && (x < SINK || x >= t - RECENT)) protected_held++;
                }
                int32_t want = (t + 1 < SINK ? t + 1 : SINK);
                int32_t wlo = t - RECENT < SINK ? SINK : t - RECENT;
                if (t >= wlo) want += t - wlo + 1;
                if (protected_held != want) {
                    CHECK(0, "step %d layer %d head %d: %d protected positions held, want %d", t, l, h,
                          protected_held, want);
                    failed = 1;
                }
                /* positions distinct (each appears once since placed once);
                 * the count of held positions is min(t + 1, budget) */
                int used = 0;
                for (int i = 0; i < BUDGET; i++) used += buf[i] >= 0;
                if (used != (t + 1 < BUDGET ? t + 1 : BUDGET)) {
                    CHECK(0, "step %d layer %d head %d: %d slots used", t, l, h, used);
                    failed = 1;
                }
            }
        }
    }

    hashevict_stats st;
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    if (CHECK_ST(hashevict_stats_get(e, 0, &st), HASHEVICT_OK) && !failed) {
        CHECK(st.steps == (uint64_t)steps * LAYERS, "stats.steps %llu, want %llu", (unsigned long long)st.steps,
              (unsigned long long)steps * LAYERS);
        CHECK(st.evictions == evictions, "stats.evictions %llu, outputs say %llu", (unsigned long long)st.evictions,
              (unsigned long long)evictions);
        uint64_t want_cached = (uint64_t)LAYERS * KV * (uint64_t)(steps < BUDGET ? steps : BUDGET);
        CHECK(st.cached == want_cached, "stats.cached %llu, want %llu", (unsigned long long)st.cached,
              (unsigned long long)want_cached);
        CHECK(st.state_bytes > 0, "stats.state_bytes is 0");
    }
    printf("long decode: steps=%d layers=%d kv_heads=%d budget=%d evictions=%llu state_bytes=%llu kernels=%s\n",
           steps, LAYERS, KV, BUDGET, (unsigned long long)st.evictions, (unsigned long long)st.state_bytes,
           hashevict_kernels());
    hashevict_engine_free(e);
    return check_report("test_long_decode");
}
