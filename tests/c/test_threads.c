/*
 * test_threads.c — concurrency rules of include/hashevict.h:
 *  - 8 threads, each decoding 2,000 steps on its own sequence of one engine,
 *    get exactly the slots a single-threaded run gets;
 *  - a churn thread forks, inspects and removes other sequences meanwhile;
 *  - 4 threads hammer one shared sequence (calls are serialised: no crash,
 *    budget and protections hold, counters add up);
 *  - hashevict_last_error() is per thread.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "hashevict.h"
#include "testutil.h"

enum {
    L = 2, KV = 2, QH = 4, D = 32, BUDGET = 64, SINK = 4, RECENT = 8, SEQS = 16,
    WORKERS = 8, STEPS = 2000, HAMMERS = 4, HAMMER_TRIES = 2000, HAMMER_SEQ = 15
};

static hashevict_engine *engine;
static pthread_mutex_t report_mu = PTHREAD_MUTEX_INITIALIZER;

/* CHECK from threads: the counters are not atomic, so failures are
 * reported under a mutex. */
#define TCHECK(cond, ...)                                                    \
    do {                                                                     \
        if (!(cond)) {                                                       \
            pthread_mutex_lock(&report_mu);                                  \
            check_fail_at(__FILE__, __LINE__, __VA_ARGS__);                  \
            pthread_mutex_unlock(&report_mu);                                \
        }                                                                    \
    } while (0)

static hashevict_params engine_params(void) {
    hashevict_params p = tu_params(HASHEVICT_MODE_SLOT, L, KV, QH, D, 32, BUDGET, SINK, RECENT);
    p.max_seqs = SEQS;
    p.seed = 77;
    return p;
}

static uint64_t fnv(uint64_t h, int32_t v) {
    for (int i = 0; i < 4; i++) {
        h ^= (uint64_t)((uint32_t)v >> (8 * i) & 0xff);
        h *= 0x100000001B3ull;
    }
    return h;
}

/* ---- one decoding sequence ---------------------------------------------- */

typedef struct {
    hashevict_engine *e;
    int seq;
    uint64_t trace;     /* hash of every out_slots / out_evicted */
    uint64_t evictions;
    int failed;
} decode_job;

static void *decode(void *arg) {
    decode_job *j = arg;
    tu_rng r = tu_rng_make(1234, (uint64_t)j->seq, 0);
    float q[QH * D], k[KV * D];
    hashevict_tensor tq = tu_tensor(q, HASHEVICT_DTYPE_F32, 1, QH, D);
    hashevict_tensor tk = tu_tensor(k, HASHEVICT_DTYPE_F32, 1, KV, D);
    int32_t held[L][KV][BUDGET], buf[BUDGET];
    for (int l = 0; l < L; l++)
        for (int h = 0; h < KV; h++)
            for (int i = 0; i < BUDGET; i++) held[l][h][i] = -1;
    j->trace = 0xcbf29ce484222325ull;
    hashevict_status st = hashevict_seq_add(j->e, j->seq);
    TCHECK(st == HASHEVICT_OK, "seq_add(%d) from its thread: %s", j->seq, hashevict_status_string(st));
    for (int32_t t = 0; t < STEPS && !j->failed; t++) {
        for (int l = 0; l < L; l++) {
            for (int i = 0; i < QH * D; i++) q[i] = tu_gauss(&r);
            for (int i = 0; i < KV * D; i++) k[i] = tu_gauss(&r);
            int32_t slots[KV], ev[KV];
            st = hashevict_place(j->e, j->seq, l, &tq, &tk, &t, 1, slots, ev);
            if (st != HASHEVICT_OK) {
                TCHECK(0, "seq %d step %d layer %d: place returned %s (%s)", j->seq, t, l,
                       hashevict_status_string(st), hashevict_last_error());
                j->failed = 1;
                break;
            }
            for (int h = 0; h < KV; h++) {
                int32_t s = slots[h];
                if (s < 0 || s >= BUDGET || ev[h] != held[l][h][s]) {
                    TCHECK(0, "seq %d step %d layer %d head %d: slot %d, evicted %d", j->seq, t, l, h, s, ev[h]);
                    j->failed = 1;
                    break;
                }
                if (ev[h] >= 0) {
                    j->evictions++;
                    TCHECK(ev[h] >= SINK && ev[h] < t - RECENT, "seq %d step %d: evicted protected %d", j->seq, t,
                           ev[h]);
                }
                held[l][h][s] = t;
                j->trace = fnv(fnv(j->trace, s), ev[h]);
            }
        }
        if (t % 97 == 0) {
            for (int l = 0; l < L; l++)
                for (int h = 0; h < KV; h++) {
                    st = hashevict_slot_positions(j->e, j->seq, l, h, buf, BUDGET);
                    TCHECK(st == HASHEVICT_OK && memcmp(buf, held[l][h], sizeof buf) == 0,
                           "seq %d step %d: slot_positions differs from the outputs", j->seq, t);
                }
            /* the thread's own last error survives other threads' errors */
            int bad_head = 100 + j->seq;
            st = hashevict_slot_positions(j->e, j->seq, 0, bad_head, buf, BUDGET);
            char want[32];
            snprintf(want, sizeof want, "%d", bad_head);
            TCHECK(st == HASHEVICT_ERR_OUT_OF_RANGE, "seq %d: bad head gave %s", j->seq, hashevict_status_string(st));
            for (int spin = 0; spin < 50; spin++) (void)hashevict_kernels();
            TCHECK(strstr(hashevict_last_error(), want) != NULL,
                   "thread of seq %d: last error \"%s\" is not its own (should name head %d)", j->seq,
                   hashevict_last_error(), bad_head);
        }
    }
    return NULL;
}

/* ---- churn: fork, inspect, remove other sequences ------------------------- */

static atomic_int workers_done;
static atomic_int churn_rounds;

static void *churn(void *arg) {
    (void)arg;
    int32_t buf[BUDGET];
    int round = 0;
    while (atomic_load(&workers_done) < WORKERS) {
        int src = round % WORKERS, dst = WORKERS + 1 + round % 5; /* 9..13 */
        hashevict_status st = hashevict_seq_fork(engine, src, dst);
        /* the source may not be added yet at the very start */
        if (st == HASHEVICT_OK) {
            st = hashevict_slot_positions(engine, dst, round % L, round % KV, buf, BUDGET);
            TCHECK(st == HASHEVICT_OK, "churn: slot_positions of fork %d: %s", dst, hashevict_status_string(st));
            for (int i = 0; i < BUDGET; i++)
                for (int m = i + 1; m < BUDGET && buf[i] >= 0; m++)
                    TCHECK(buf[i] != buf[m], "churn: fork %d holds position %d twice", dst, buf[i]);
            if (round % 3 == 0) {
                st = hashevict_seq_reset(engine, dst);
                TCHECK(st == HASHEVICT_OK, "churn: reset %d: %s", dst, hashevict_status_string(st));
            }
            st = hashevict_seq_remove(engine, dst);
            TCHECK(st == HASHEVICT_OK, "churn: remove %d: %s", dst, hashevict_status_string(st));
        } else {
            TCHECK(st == HASHEVICT_ERR_UNKNOWN_SEQUENCE, "churn: fork %d -> %d: %s (%s)", src, dst,
                   hashevict_status_string(st), hashevict_last_error());
        }
        hashevict_stats es;
        memset(&es, 0, sizeof es);
        es.size = sizeof es;
        st = hashevict_stats_get(engine, -1, &es);
        TCHECK(st == HASHEVICT_OK && es.n_sequences >= 0 && es.n_sequences <= SEQS, "churn: engine stats %s, %d seqs",
               hashevict_status_string(st), es.n_sequences);
        round++;
    }
    atomic_store(&churn_rounds, round);
    return NULL;
}

/* ---- hammer: four threads on one sequence ------------------------------ */

static atomic_int next_pos;
static atomic_int succeeded[L];
static atomic_uchar placed[L][HAMMERS * HAMMER_TRIES + 1];
static atomic_int hammer_evictions;

static void *hammer(void *arg) {
    int id = (int)(intptr_t)arg;
    tu_rng r = tu_rng_make(99, (uint64_t)id, 1);
    float q[QH * D], k[KV * D];
    hashevict_tensor tq = tu_tensor(q, HASHEVICT_DTYPE_F32, 1, QH, D);
    hashevict_tensor tk = tu_tensor(k, HASHEVICT_DTYPE_F32, 1, KV, D);
    int32_t buf[BUDGET];
    for (int i = 0; i < HAMMER_TRIES; i++) {
        int32_t pos = atomic_fetch_add(&next_pos, 1);
        for (int l = 0; l < L; l++) {
            for (int x = 0; x < QH * D; x++) q[x] = tu_gauss(&r);
            for (int x = 0; x < KV * D; x++) k[x] = tu_gauss(&r);
            int32_t slots[KV], ev[KV];
            hashevict_status st = hashevict_place(engine, HAMMER_SEQ, l, &tq, &tk, &pos, 1, slots, ev);
            if (st == HASHEVICT_OK) {
                atomic_fetch_add(&succeeded[l], 1);
                atomic_store(&placed[l][pos], 1);
                for (int h = 0; h < KV; h++) {
                    TCHECK(slots[h] >= 0 && slots[h] < BUDGET, "hammer: slot %d", slots[h]);
                    if (ev[h] >= 0) {
                        atomic_fetch_add(&hammer_evictions, 1);
                        TCHECK(ev[h] >= SINK, "hammer: evicted sink %d", ev[h]);
                        TCHECK(ev[h] < pos - RECENT, "hammer: evicted %d inside the window of %d", ev[h], pos);
                    }
                }
            } else {
                /* another thread placed a later position first */
                TCHECK(st == HASHEVICT_ERR_POSITION, "hammer: place returned %s (%s)", hashevict_status_string(st),
                       hashevict_last_error());
            }
        }
        if (i % 16 == id) {
            hashevict_status st = hashevict_slot_positions(engine, HAMMER_SEQ, i % L, id % KV, buf, BUDGET);
            TCHECK(st == HASHEVICT_OK, "hammer: slot_positions %s", hashevict_status_string(st));
            for (int a = 0; a < BUDGET; a++)
                for (int b = a + 1; b < BUDGET && buf[a] >= 0; b++)
                    TCHECK(buf[a] != buf[b], "hammer: position %d held twice", buf[a]);
            hashevict_stats ss;
            memset(&ss, 0, sizeof ss);
            ss.size = sizeof ss;
            st = hashevict_stats_get(engine, HAMMER_SEQ, &ss);
            TCHECK(st == HASHEVICT_OK && ss.cached <= (uint64_t)L * KV * BUDGET, "hammer: stats %s cached %llu",
                   hashevict_status_string(st), (unsigned long long)ss.cached);
        }
    }
    return NULL;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    hashevict_params p = engine_params();
    if (!CHECK_ST(hashevict_engine_create(&p, &engine), HASHEVICT_OK)) return check_report("test_threads");

    /* ---- part 1: workers on their own sequences, plus churn ---- */
    pthread_t th[WORKERS], ch;
    decode_job jobs[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        memset(&jobs[i], 0, sizeof jobs[i]);
        jobs[i].e = engine;
        jobs[i].seq = i;
    }
    REQUIRE(pthread_create(&ch, NULL, churn, NULL) == 0, 1, "pthread_create");
    for (int i = 0; i < WORKERS; i++) REQUIRE(pthread_create(&th[i], NULL, decode, &jobs[i]) == 0, 1, "pthread_create");
    for (int i = 0; i < WORKERS; i++) {
        pthread_join(th[i], NULL);
        atomic_fetch_add(&workers_done, 1);
    }
    pthread_join(ch, NULL);

    /* the same sequences, one at a time on a fresh engine: same slots */
    hashevict_engine *ref = NULL;
    uint64_t total_evictions = 0;
    if (CHECK_ST(hashevict_engine_create(&p, &ref), HASHEVICT_OK)) {
        for (int i = 0; i < WORKERS; i++) {
            decode_job rj;
            memset(&rj, 0, sizeof rj);
            rj.e = ref;
            rj.seq = i;
            decode(&rj);
            CHECK(rj.trace == jobs[i].trace, "sequence %d: threaded run chose other slots than a sequential run", i);
            CHECK(rj.evictions == jobs[i].evictions, "sequence %d: evictions %llu vs %llu", i,
                  (unsigned long long)jobs[i].evictions, (unsigned long long)rj.evictions);
            total_evictions += jobs[i].evictions;
        }
    }
    hashevict_engine_free(ref);

    hashevict_stats es;
    memset(&es, 0, sizeof es);
    es.size = sizeof es;
    if (CHECK_ST(hashevict_stats_get(engine, -1, &es), HASHEVICT_OK)) {
        CHECK(es.n_sequences == WORKERS, "after part 1: %d sequences, want %d (forks removed)", es.n_sequences, WORKERS);
        CHECK(es.steps == (uint64_t)WORKERS * STEPS * L, "engine steps %llu, want %llu", (unsigned long long)es.steps,
              (unsigned long long)WORKERS * STEPS * L);
        CHECK(es.tokens == (uint64_t)WORKERS * STEPS * L, "engine tokens %llu", (unsigned long long)es.tokens);
        CHECK(es.evictions == total_evictions, "engine evictions %llu, sum of outputs %llu",
              (unsigned long long)es.evictions, (unsigned long long)total_evictions);
        CHECK(es.cached == (uint64_t)WORKERS * L * KV * BUDGET, "engine cached %llu, want %llu",
              (unsigned long long)es.cached, (unsigned long long)WORKERS * L * KV * BUDGET);
        CHECK(es.state_bytes > 0, "engine state_bytes 0");
    }
    printf("part 1: %d threads x %d steps, %d churn rounds, %llu evictions\n", WORKERS, STEPS,
           atomic_load(&churn_rounds), (unsigned long long)total_evictions);

    /* ---- part 2: four threads on one sequence ---- */
    CHECK_ST(hashevict_seq_add(engine, HAMMER_SEQ), HASHEVICT_OK);
    pthread_t hm[HAMMERS];
    for (int i = 0; i < HAMMERS; i++)
        REQUIRE(pthread_create(&hm[i], NULL, hammer, (void *)(intptr_t)i) == 0, 1, "pthread_create");
    for (int i = 0; i < HAMMERS; i++) pthread_join(hm[i], NULL);

    int32_t last = atomic_load(&next_pos) - 1;
    uint64_t succ = 0;
    for (int l = 0; l < L; l++) {
        succ += (uint64_t)atomic_load(&succeeded[l]);
        int32_t newest = -1;
        for (int32_t x = 0; x <= last; x++)
            if (atomic_load(&placed[l][x])) newest = x;
        int32_t buf[BUDGET];
        for (int h = 0; h < KV; h++) {
            if (!CHECK_ST(hashevict_slot_positions(engine, HAMMER_SEQ, l, h, buf, BUDGET), HASHEVICT_OK)) continue;
            int used = 0;
            for (int i = 0; i < BUDGET; i++) {
                if (buf[i] < 0) continue;
                used++;
                CHECK(buf[i] <= last && atomic_load(&placed[l][buf[i]]),
                      "hammer: layer %d head %d holds %d, never placed successfully", l, h, buf[i]);
            }
            int s = atomic_load(&succeeded[l]);
            CHECK(used == (s < BUDGET ? s : BUDGET), "hammer: layer %d head %d uses %d slots after %d tokens", l, h,
                  used, s);
            /* protections relative to the newest placed position */
            for (int32_t x = 0; x <= newest; x++) {
                if (!atomic_load(&placed[l][x]) || (x >= SINK && x < newest - RECENT)) continue;
                int found = 0;
                for (int i = 0; i < BUDGET; i++) found |= buf[i] == x;
                CHECK(found, "hammer: layer %d head %d lost protected position %d (newest %d)", l, h, x, newest);
            }
        }
    }
    hashevict_stats hs;
    memset(&hs, 0, sizeof hs);
    hs.size = sizeof hs;
    if (CHECK_ST(hashevict_stats_get(engine, HAMMER_SEQ, &hs), HASHEVICT_OK)) {
        CHECK(hs.steps == succ, "hammer: stats.steps %llu, successful calls %llu", (unsigned long long)hs.steps,
              (unsigned long long)succ);
        CHECK(hs.tokens == succ, "hammer: stats.tokens %llu", (unsigned long long)hs.tokens);
        CHECK(hs.evictions == (uint64_t)atomic_load(&hammer_evictions), "hammer: stats.evictions %llu, outputs %d",
              (unsigned long long)hs.evictions, atomic_load(&hammer_evictions));
    }
    printf("part 2: %d threads on one sequence, %llu of %d calls succeeded\n", HAMMERS, (unsigned long long)succ,
           HAMMERS * HAMMER_TRIES * L);
    CHECK(succ > 0, "no hammer call succeeded");

    hashevict_engine_free(engine);
    CHECK_ST(hashevict_seq_add(engine, 0), HASHEVICT_ERR_INVALID_HANDLE);
    return check_report("test_threads");
}
