/* Long run, in both modes: decode steps over many sequences while sequences
 * are added, forked, reset, saved/restored and removed at random. At every
 * step the budget and the protections hold (slot mode: per slot; token
 * mode: per position, against a model of the positions held); memory stays
 * flat: the library's own state_bytes matches the live sequences, and the
 * process RSS after the warm-up does not grow.
 *
 *   test_soak [steps [slot|token]]   (ctest runs 20,000 steps of each mode;
 *                                     `make soak` runs 1,000,000 of each)
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

/* The library's accounting equals the sum over live sequences; returns the
 * engine's state_bytes and sets *live_out and *largest (one sequence). */
static uint64_t check_accounting(hashevict_engine *e, const int *live, int *live_out, uint64_t *largest) {
    hashevict_stats all = {.size = sizeof all};
    CHECK_ST(hashevict_stats_get(e, -1, &all), HASHEVICT_OK);
    uint64_t sum = 0;
    int n = 0;
    *largest = 0;
    for (int s = 0; s < MAXSEQ; s++) {
        if (!live[s]) continue;
        hashevict_stats st = {.size = sizeof st};
        CHECK_ST(hashevict_stats_get(e, s, &st), HASHEVICT_OK);
        sum += st.state_bytes;
        if (st.state_bytes > *largest) *largest = st.state_bytes;
        n++;
    }
    CHECK(all.n_sequences == n, "engine counts %d sequences, the model %d", all.n_sequences, n);
    CHECK(all.state_bytes == sum, "engine state_bytes %llu != sum over sequences %llu",
          (unsigned long long)all.state_bytes, (unsigned long long)sum);
    *live_out = n;
    return all.state_bytes;
}

static int run_slot(long steps) {
    hashevict_params p = tu_params(HASHEVICT_MODE_SLOT, L, KV, QH, D, 16, BUDGET, SINKS, RECENT);
    p.max_seqs = MAXSEQ;
    p.score = HASHEVICT_SCORE_DECAYED;
    hashevict_engine *e = NULL;
    if (!CHECK_ST(hashevict_engine_create(&p, &e), HASHEVICT_OK)) return 1;
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
    int live = 0, is_live[MAXSEQ];
    for (int s = 0; s < MAXSEQ; s++) is_live[s] = model[s].live;
    uint64_t state = check_accounting(e, is_live, &live, &per_seq_bytes);
    /* Slot-mode tables are allocated at full budget: every sequence has the
     * same size, whatever it went through. */
    CHECK(state == (uint64_t)live * per_seq_bytes, "sequences differ in size: %llu bytes over %d sequences",
          (unsigned long long)state, live);
    /* RSS after warm-up: the working set is bounded by MAXSEQ sequences, so
     * it must not keep growing; 16 MiB covers the Go heap's slack. */
    CHECK(rss_warm > 0, "could not read /proc/self/statm");
    if (rss_warm > 0)
        CHECK(rss_max <= rss_warm + 16 * 1024, "RSS grew from %ld KiB after warm-up to %ld KiB", rss_warm, rss_max);
    printf("soak (slot mode): %ld steps; %ld adds, %ld removes, %ld forks, %ld resets, %ld save/load; "
           "RSS %ld KiB after warm-up, max %ld KiB; state %llu bytes in %d sequences\n",
           steps, ops[0], ops[1], ops[2], ops[3], ops[4], rss_warm, rss_max, (unsigned long long)state, live);
    free(blob);
    hashevict_engine_free(e);
    return 0;
}

/* ---- token mode ------------------------------------------------------------
 * The runtime observes every layer for each new position (a decode step, or
 * now and then a chunk of up to MAXCHUNK positions), then asks which
 * positions to drop. The model is the set of positions held. */

enum { MAXCHUNK = 8, HELDMAX = BUDGET + MAXCHUNK };

typedef struct {
    int live;
    int32_t next;
    int n;                 /* positions held */
    int32_t held[HELDMAX]; /* ascending */
} tokmodel;

static tokmodel tmodel[MAXSEQ];

static void tadd(hashevict_engine *e, int s) {
    if (!CHECK_ST(hashevict_seq_add(e, s), HASHEVICT_OK)) return;
    memset(&tmodel[s], 0, sizeof tmodel[s]);
    tmodel[s].live = 1;
}

/* The engine holds exactly the model's positions. */
static void check_held(hashevict_engine *e, int s, long step) {
    int32_t got[HELDMAX];
    int32_t cnt = -1;
    if (!CHECK_ST(hashevict_token_positions(e, s, got, HELDMAX, &cnt), HASHEVICT_OK)) return;
    int same = cnt == tmodel[s].n;
    for (int i = 0; same && i < cnt; i++) same = got[i] == tmodel[s].held[i];
    CHECK(same, "step %ld: sequence %d holds %d positions, the model %d", step, s, cnt, tmodel[s].n);
}

static int run_token(long steps) {
    hashevict_params p = tu_params(HASHEVICT_MODE_TOKEN, L, KV, QH, D, 16, BUDGET, SINKS, RECENT);
    p.max_seqs = MAXSEQ;
    p.score = HASHEVICT_SCORE_ACCUMULATED;
    hashevict_engine *e = NULL;
    if (!CHECK_ST(hashevict_engine_create(&p, &e), HASHEVICT_OK)) return 1;
    tu_rng r = tu_rng_make(8, 8, 8);
    for (int s = 0; s < 4; s++) tadd(e, s);
    static float q[MAXCHUNK * QH * D], k[MAXCHUNK * KV * D];
    size_t blob_cap = 1 << 20;
    unsigned char *blob = malloc(blob_cap);
    long rss_warm = 0, rss_max = 0, ops[8] = {0}, evicted = 0;
    for (long i = 0; i < steps && check_failures == 0; i++) {
        if (i == steps / 10) rss_warm = rss_kib();
        if (i > steps / 10 && i % 64 == 0) {
            long now = rss_kib();
            if (now > rss_max) rss_max = now;
        }
        int s = (int)tu_below(&r, MAXSEQ);
        uint32_t op = tu_below(&r, 1000);
        tokmodel *m = &tmodel[s];
        if (!m->live) {
            /* Half the time a fork of a live sequence, often one that was
             * never observed (just added or reset). */
            int src = (int)tu_below(&r, MAXSEQ);
            if (op < 500 && tmodel[src].live) {
                CHECK_ST(hashevict_seq_fork(e, src, s), HASHEVICT_OK);
                *m = tmodel[src];
                ops[2]++;
            } else {
                tadd(e, s);
                ops[0]++;
            }
            continue;
        }
        if (op < 4) { /* remove */
            CHECK_ST(hashevict_seq_remove(e, s), HASHEVICT_OK);
            m->live = 0;
            ops[1]++;
            continue;
        }
        if (op < 6) { /* fork onto an id in use: refused, nothing changes */
            int d = (int)tu_below(&r, MAXSEQ);
            if (tmodel[d].live) CHECK_ST(hashevict_seq_fork(e, s, d), HASHEVICT_ERR_SEQUENCE_EXISTS);
            continue;
        }
        if (op < 10) { /* reset */
            CHECK_ST(hashevict_seq_reset(e, s), HASHEVICT_OK);
            memset(m, 0, sizeof *m);
            m->live = 1;
            ops[3]++;
            continue;
        }
        if (op < 13) { /* save, then restore in place or into a free id */
            size_t n = 0;
            int d = (int)tu_below(&r, MAXSEQ);
            if (tmodel[d].live) d = s;
            if (CHECK_ST(hashevict_seq_state_save(e, s, blob, blob_cap, &n), HASHEVICT_OK) &&
                CHECK_ST(hashevict_seq_state_load(e, d, blob, n), HASHEVICT_OK)) {
                tmodel[d] = *m;
                check_held(e, d, i);
            }
            ops[4]++;
            continue;
        }
        int n = tu_below(&r, 32) == 0 ? 2 + (int)tu_below(&r, MAXCHUNK - 1) : 1;
        int32_t pos[MAXCHUNK];
        for (int j = 0; j < n; j++) pos[j] = m->next + j;
        hashevict_tensor tq = tu_tensor(q, HASHEVICT_DTYPE_F32, n, QH, D);
        hashevict_tensor tk = tu_tensor(k, HASHEVICT_DTYPE_F32, n, KV, D);
        if (op < 40) {
            /* Misuse: layer 0 observes the positions, layer 1 skips the
             * first. Refused with a position error and nothing changes;
             * then layer 1 observes them as it should. */
            int ns = n > 1 ? n - 1 : 1;
            int32_t skip[MAXCHUNK];
            for (int j = 0; j < ns; j++) skip[j] = pos[0] + 1 + j;
            for (int j = 0; j < n * QH * D; j++) q[j] = tu_gauss(&r);
            for (int j = 0; j < n * KV * D; j++) k[j] = tu_gauss(&r);
            if (!CHECK_ST(hashevict_observe(e, s, 0, &tq, &tk, pos, n), HASHEVICT_OK)) break;
            hashevict_tensor sq = tu_tensor(q, HASHEVICT_DTYPE_F32, ns, QH, D);
            hashevict_tensor sk = tu_tensor(k, HASHEVICT_DTYPE_F32, ns, KV, D);
            CHECK_ST(hashevict_observe(e, s, 1, &sq, &sk, skip, ns), HASHEVICT_ERR_POSITION);
            if (!CHECK_ST(hashevict_observe(e, s, 1, &tq, &tk, pos, n), HASHEVICT_OK)) break;
            ops[5]++;
        } else {
            int ok = 1;
            for (int layer = 0; layer < L && ok; layer++) {
                for (int j = 0; j < n * QH * D; j++) q[j] = tu_gauss(&r);
                for (int j = 0; j < n * KV * D; j++) k[j] = tu_gauss(&r);
                ok = CHECK_ST(hashevict_observe(e, s, layer, &tq, &tk, pos, n), HASHEVICT_OK);
            }
            if (!ok) break;
        }
        for (int j = 0; j < n; j++) m->held[m->n++] = pos[j];
        m->next += n;
        int32_t newest = m->next - 1;
        /* Evictions, drained with a small capacity now and then. */
        int32_t cap = tu_below(&r, 8) == 0 ? 1 + (int32_t)tu_below(&r, 3) : HELDMAX;
        int want = m->n > BUDGET ? m->n - BUDGET : 0, got_total = 0;
        for (;;) {
            int32_t out[HELDMAX], cnt = -1;
            if (!CHECK_ST(hashevict_evictions(e, s, out, cap, &cnt), HASHEVICT_OK)) break;
            for (int j = 0; j < cnt; j++) {
                CHECK(out[j] >= SINKS && out[j] < newest - RECENT, "step %ld evicted protected position %d (newest %d)",
                      i, out[j], newest);
                CHECK(j == 0 || out[j] > out[j - 1], "evictions not ascending");
                int at = -1;
                for (int h = 0; h < m->n; h++)
                    if (m->held[h] == out[j]) at = h;
                CHECK(at >= 0, "step %ld evicted %d, which the model does not hold", i, out[j]);
                if (at >= 0) {
                    memmove(&m->held[at], &m->held[at + 1], (size_t)(m->n - at - 1) * sizeof m->held[0]);
                    m->n--;
                }
            }
            got_total += cnt;
            if (cnt < cap) break;
        }
        CHECK(got_total == want, "step %ld: %d evictions, want %d (held %d, budget %d)", i, got_total, want,
              m->n + got_total, BUDGET);
        evicted += got_total;
        ops[6]++;
        if (i % 16 == 0) check_held(e, s, i);
    }
    int live = 0, is_live[MAXSEQ];
    uint64_t largest = 0;
    for (int s = 0; s < MAXSEQ; s++) {
        is_live[s] = tmodel[s].live;
        if (tmodel[s].live) check_held(e, s, steps);
    }
    uint64_t state = check_accounting(e, is_live, &live, &largest);
    CHECK(rss_warm > 0, "could not read /proc/self/statm");
    if (rss_warm > 0)
        CHECK(rss_max <= rss_warm + 16 * 1024, "RSS grew from %ld KiB after warm-up to %ld KiB", rss_warm, rss_max);
    printf("soak (token mode): %ld steps; %ld decode steps (%ld evictions), %ld refused skips; %ld adds, "
           "%ld removes, %ld forks, %ld resets, %ld save/load; RSS %ld KiB after warm-up, max %ld KiB; "
           "state %llu bytes in %d sequences (largest %llu)\n",
           steps, ops[6], evicted, ops[5], ops[0], ops[1], ops[2], ops[3], ops[4], rss_warm, rss_max,
           (unsigned long long)state, live, (unsigned long long)largest);
    free(blob);
    hashevict_engine_free(e);
    return 0;
}

int main(int argc, char **argv) {
    long steps = argc > 1 ? atol(argv[1]) : 20000;
    const char *mode = argc > 2 ? argv[2] : "both";
    int slot = strcmp(mode, "token") != 0, token = strcmp(mode, "slot") != 0;
    if (!slot && !token) {
        fprintf(stderr, "usage: test_soak [steps [slot|token]]\n");
        return 2;
    }
    if (slot) run_slot(steps);
    if (token && check_failures == 0) run_token(steps);
    return check_report("test_soak");
}
