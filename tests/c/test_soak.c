/* Long run: decode steps over many sequences while sequences are added,
 * forked, reset, saved/restored and removed at random. At every step the
 * budget and the protections hold; memory stays flat: the library's own
 * state_bytes matches the live sequences, and the process RSS after the
 * warm-up does not grow.
 *
 *   test_soak [steps]     (ctest runs 20,000; `make soak` runs 1,000,000)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "testutil.h"

enum { L = 2, KV = 2, QH = 4, D = 32, BUDGET = 64, SINKS = 4, RECENT = 10, MAXSEQ = 16 };

static long rss_kib(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    if (!f) return 0;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    fclose(f);
    return resident * 4;
}

typedef struct {
    int live;
    int32_t next;                         /* next position */
    int32_t held[L][KV][BUDGET];          /* the model of each slot's position */
} seqmodel;

static seqmodel model[MAXSEQ];

static void add(hashevict_engine *e, int s) {
    if (!CHECK_ST(hashevict_seq_add(e, s), HASHEVICT_OK)) return;
    model[s].live = 1;
    model[s].next = 0;
    memset(model[s].held, 0xff, sizeof model[s].held);
}

int main(int argc, char **argv) {
    long steps = argc > 1 ? atol(argv[1]) : 20000;
    hashevict_params p = tu_params(HASHEVICT_MODE_SLOT, L, KV, QH, D, 16, BUDGET, SINKS, RECENT);
    p.max_seqs = MAXSEQ;
    p.score = HASHEVICT_SCORE_DECAYED;
    hashevict_engine *e = NULL;
    if (!CHECK_ST(hashevict_engine_create(&p, &e), HASHEVICT_OK)) return check_report("test_soak");
    tu_rng r = tu_rng_make(7, 7, 7);
    for (int s = 0; s < 4; s++) add(e, s);
    float q[QH * D], k[KV * D];
    hashevict_tensor tq = tu_tensor(q, HASHEVICT_DTYPE_F32, 1, QH, D);
    hashevict_tensor tk = tu_tensor(k, HASHEVICT_DTYPE_F32, 1, KV, D);
    size_t blob_cap = 1 << 20;
    unsigned char *blob = malloc(blob_cap);
    long rss_warm = 0, rss_max = 0, ops[5] = {0};
    uint64_t per_seq_bytes = 0;
    for (long i = 0; i < steps && check_failures == 0; i++) {
        if (i == steps / 10) rss_warm = rss_kib();
        if (i > steps / 10 && i % 64 == 0) {
            long now = rss_kib();
            if (now > rss_max) rss_max = now;
        }
        int s = (int)tu_below(&r, MAXSEQ);
        uint32_t op = tu_below(&r, 1000);
        if (!model[s].live) {
            int src = (int)tu_below(&r, MAXSEQ);
            if (op < 500 && model[src].live) { /* a free id: fork a live sequence onto it */
                CHECK_ST(hashevict_seq_fork(e, src, s), HASHEVICT_OK);
                model[s] = model[src];
                ops[2]++;
            } else {
                add(e, s);
                ops[0]++;
            }
            continue;
        }
        if (op < 4) { /* remove */
            CHECK_ST(hashevict_seq_remove(e, s), HASHEVICT_OK);
            model[s].live = 0;
            ops[1]++;
            continue;
        }
        if (op < 6) { /* fork onto an id in use: refused, nothing changes */
            int d = (int)tu_below(&r, MAXSEQ);
            if (model[d].live) CHECK_ST(hashevict_seq_fork(e, s, d), HASHEVICT_ERR_SEQUENCE_EXISTS);
            continue;
        }
        if (op < 10) { /* reset */
            CHECK_ST(hashevict_seq_reset(e, s), HASHEVICT_OK);
            model[s].next = 0;
            memset(model[s].held, 0xff, sizeof model[s].held);
            ops[3]++;
            continue;
        }
        if (op < 12) { /* save and restore in place */
            size_t n = 0;
            CHECK_ST(hashevict_seq_state_save(e, s, blob, blob_cap, &n), HASHEVICT_OK);
            CHECK_ST(hashevict_seq_state_load(e, s, blob, n), HASHEVICT_OK);
            ops[4]++;
            continue;
        }
        int32_t pos = model[s].next++;
        for (int layer = 0; layer < L; layer++) {
            for (int j = 0; j < QH * D; j++) q[j] = tu_gauss(&r);
            for (int j = 0; j < KV * D; j++) k[j] = tu_gauss(&r);
            int32_t slots[KV], ev[KV];
            if (!CHECK_ST(hashevict_place(e, s, layer, &tq, &tk, &pos, 1, slots, ev), HASHEVICT_OK)) break;
            for (int h = 0; h < KV; h++) {
                int32_t *held = model[s].held[layer][h];
                CHECK(slots[h] >= 0 && slots[h] < BUDGET, "slot %d outside the budget", slots[h]);
                CHECK(ev[h] == held[slots[h]], "evicted %d, the slot held %d", ev[h], held[slots[h]]);
                CHECK(ev[h] < 0 || (ev[h] >= SINKS && ev[h] < pos - RECENT),
                      "step %ld evicted protected position %d at %d", i, ev[h], pos);
                held[slots[h]] = pos;
            }
        }
    }
    /* The library's accounting equals the sum over live sequences. */
    hashevict_stats all = {.size = sizeof all};
    CHECK_ST(hashevict_stats_get(e, -1, &all), HASHEVICT_OK);
    uint64_t sum = 0;
    int live = 0;
    for (int s = 0; s < MAXSEQ; s++) {
        if (!model[s].live) continue;
        hashevict_stats st = {.size = sizeof st};
        CHECK_ST(hashevict_stats_get(e, s, &st), HASHEVICT_OK);
        sum += st.state_bytes;
        if (st.state_bytes > per_seq_bytes) per_seq_bytes = st.state_bytes;
        live++;
    }
    CHECK(all.n_sequences == live, "engine counts %d sequences, the model %d", all.n_sequences, live);
    CHECK(all.state_bytes == sum, "engine state_bytes %llu != sum over sequences %llu",
          (unsigned long long)all.state_bytes, (unsigned long long)sum);
    /* Slot-mode tables are allocated at full budget: every sequence has the
     * same size, whatever it went through. */
    CHECK(sum == (uint64_t)live * per_seq_bytes, "sequences differ in size: %llu bytes over %d sequences",
          (unsigned long long)sum, live);
    /* RSS after warm-up: the working set is bounded by MAXSEQ sequences, so
     * it must not keep growing; 16 MiB covers the Go heap's slack. */
    CHECK(rss_warm > 0, "could not read /proc/self/statm");
    if (rss_warm > 0)
        CHECK(rss_max <= rss_warm + 16 * 1024, "RSS grew from %ld KiB after warm-up to %ld KiB", rss_warm, rss_max);
    printf("soak: %ld steps; %ld adds, %ld removes, %ld forks, %ld resets, %ld save/load; "
           "RSS %ld KiB after warm-up, max %ld KiB; state %llu bytes in %d sequences\n",
           steps, ops[0], ops[1], ops[2], ops[3], ops[4], rss_warm, rss_max, (unsigned long long)all.state_bytes,
           live);
    free(blob);
    hashevict_engine_free(e);
    return check_report("test_soak");
}
