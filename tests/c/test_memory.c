/*
 * test_memory.c — parameters and inputs in range but larger than the machine
 * get HASHEVICT_ERR_MEMORY_CAP, never an abort of the process ("fatal error:
 * out of memory" from the Go runtime, or the kernel's OOM killer).
 *
 * The address space of this process is limited first (RLIMIT_AS), so that a
 * library that does try a huge allocation fails fast with the abort this test
 * exists to catch, instead of pushing a shared machine into swap. Nothing here
 * allocates more than a few tens of MiB when the library behaves.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "check.h"
#include "testutil.h"

#define MiB ((uint64_t)1 << 20)

static int has(const char *msg, const char *word) { return strstr(msg, word) != NULL; }

/* create must refuse p with MEMORY_CAP and a message holding every word. */
static void create_refused(const char *what, hashevict_params p, const char *w1, const char *w2) {
    hashevict_engine *e = (hashevict_engine *)(uintptr_t)1;
    hashevict_status st = hashevict_engine_create(&p, &e);
    const char *msg = hashevict_last_error();
    CHECK(st == HASHEVICT_ERR_MEMORY_CAP, "%s: create returned %s (%s), want MEMORY_CAP", what,
          hashevict_status_string(st), st ? msg : "");
    CHECK(e == NULL, "%s: a refused create left *out = %p", what, (void *)e);
    if (st == HASHEVICT_ERR_MEMORY_CAP) {
        CHECK(has(msg, w1) && has(msg, w2) && has(msg, "bytes"), "%s: message \"%s\" should name %s, %s and the bytes",
              what, msg, w1, w2);
        printf("  %s: %s\n", what, msg);
    }
    if (st == HASHEVICT_OK) {
        /* The old library accepted these; adding a sequence is where it
         * aborted. Whatever happens must be a status. */
        hashevict_status add = hashevict_seq_add(e, 0);
        CHECK(add == HASHEVICT_ERR_MEMORY_CAP, "%s: seq_add returned %s", what, hashevict_status_string(add));
        hashevict_engine_free(e);
    }
}

/* Every dimension at or near its documented maximum: the tables of one
 * sequence at full budget would be ~2^47 bytes (slot) or more (oracle). */
static void huge_shapes(void) {
    int modes[2] = {HASHEVICT_MODE_SLOT, HASHEVICT_MODE_TOKEN};
    for (int m = 0; m < 2; m++) {
        hashevict_params p = tu_params(modes[m], 1024, 1024, 1024, 64, 16, 1 << 24, 4, 10);
        create_refused(m ? "token mode, 1024 x 1024 heads, budget 2^24" : "slot mode, 1024 x 1024 heads, budget 2^24", p,
                       "physical memory", "full budget");
        p.policy = HASHEVICT_POLICY_ORACLE;
        p.head_dim = 4096;
        p.hash_bits = 256;
        p.max_seqs = 65536;
        create_refused(m ? "token mode, largest oracle" : "slot mode, largest oracle", p, "physical memory",
                       "full budget");
    }
}

/* 64 layers of 256 x 4096 projections are 256 MiB: a cap that holds the
 * (tiny) sequence but not them is refused before they are drawn. */
static void projections_count(void) {
    hashevict_params p = tu_params(HASHEVICT_MODE_SLOT, 64, 1, 1, 4096, 256, 16, 1, 1);
    p.memory_cap_bytes = 4 * MiB;
    create_refused("projections above memory_cap_bytes", p, "projections", "memory_cap_bytes = 4194304");
}

/* At the least cap create accepts, one sequence runs and a second one (or a
 * fork) is refused; reset and remove work. */
static void least_cap(void) {
    hashevict_params p = tu_params(HASHEVICT_MODE_SLOT, 2, 2, 4, 16, 16, 64, 2, 4);
    uint64_t lo = 1, hi = (uint64_t)1 << 32;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        p.memory_cap_bytes = mid;
        hashevict_engine *probe = NULL;
        hashevict_status st = hashevict_engine_create(&p, &probe);
        hashevict_engine_free(probe);
        if (st == HASHEVICT_OK) hi = mid; else lo = mid + 1;
    }
    /* the projections (2 x 16 x 16 f32) are part of it */
    CHECK(lo > 2 * 16 * 16 * 4, "least cap %llu does not hold the projections", (unsigned long long)lo);
    p.memory_cap_bytes = lo;
    hashevict_engine *e = NULL;
    REQUIRE_V(CHECK_ST(hashevict_engine_create(&p, &e), HASHEVICT_OK), "create at the least cap");
    CHECK_ST(hashevict_seq_add(e, 0), HASHEVICT_OK);
    float q[4 * 16], k[2 * 16];
    tu_rng r = tu_rng_make(1, 2, 3);
    int32_t slots[2];
    for (int32_t pos = 0; pos < 300; pos++) {
        for (int i = 0; i < 64; i++) q[i] = tu_gauss(&r);
        for (int i = 0; i < 32; i++) k[i] = tu_gauss(&r);
        hashevict_tensor tq = tu_tensor(q, HASHEVICT_DTYPE_F32, 1, 4, 16), tk = tu_tensor(k, HASHEVICT_DTYPE_F32, 1, 2, 16);
        for (int32_t l = 0; l < 2; l++) {
            hashevict_status st = hashevict_place(e, 0, l, &tq, &tk, &pos, 1, slots, NULL);
            if (st != HASHEVICT_OK) {
                CHECK_ST(st, HASHEVICT_OK);
                pos = 300;
                break;
            }
        }
    }
    hashevict_status st = hashevict_seq_add(e, 1);
    CHECK(st == HASHEVICT_ERR_MEMORY_CAP && has(hashevict_last_error(), "sequence 1"),
          "second sequence at the least cap: %s (%s)", hashevict_status_string(st), hashevict_last_error());
    st = hashevict_seq_fork(e, 0, 2);
    CHECK(st == HASHEVICT_ERR_MEMORY_CAP && has(hashevict_last_error(), "fork"),
          "fork at the least cap: %s (%s)", hashevict_status_string(st), hashevict_last_error());
    CHECK_ST(hashevict_seq_reset(e, 0), HASHEVICT_OK);
    CHECK_ST(hashevict_seq_remove(e, 0), HASHEVICT_OK);
    CHECK_ST(hashevict_seq_add(e, 1), HASHEVICT_OK);
    hashevict_engine_free(e);
    p.memory_cap_bytes = lo - 1;
    create_refused("one byte below the least cap", p, "memory_cap_bytes", "full budget");
}

/* A chunk's step scratch grows with n_tokens x heads x code words: 4M tokens
 * of 1024 heads at 256 bits ask for ~2^38 bytes of codes, from 32 MiB of
 * input (rows overlap: they are only read). Slot mode takes 1M (its output
 * array, n_tokens x n_kv_heads, must stay within int32). */
static void huge_chunk(void) {
    enum { HEADS = 1024 };
    const int32_t n = 1 << 22;
    int modes[2] = {HASHEVICT_MODE_TOKEN, HASHEVICT_MODE_SLOT};
    float *x = malloc(sizeof(float) * ((size_t)n + HEADS));
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)n);
    /* Refused chunks write nothing; a one-token step writes HEADS slots. */
    static int32_t slots[HEADS];
    REQUIRE_V(x && pos, "malloc");
    for (int32_t i = 0; i < n + HEADS; i++) x[i] = (float)((i % 7) - 3);
    for (int32_t i = 0; i < n; i++) pos[i] = i;
    hashevict_tensor t = tu_tensor(x, HASHEVICT_DTYPE_F32, n, HEADS, 1);
    t.head_stride = 4;
    t.token_stride = 4;
    for (int m = 0; m < 2; m++) {
        int32_t nm = m == 0 ? n : n / 4;
        t.n_tokens = nm;
        hashevict_params p = tu_params(modes[m], 1, HEADS, HEADS, 1, 256, 64, 4, 10);
        hashevict_engine *e = NULL;
        REQUIRE_V(CHECK_ST(hashevict_engine_create(&p, &e), HASHEVICT_OK), "create");
        CHECK_ST(hashevict_seq_add(e, 0), HASHEVICT_OK);
        hashevict_status st = m == 0 ? hashevict_observe(e, 0, 0, &t, &t, pos, nm)
                                     : hashevict_place(e, 0, 0, &t, &t, pos, nm, slots, NULL);
        CHECK(st == HASHEVICT_ERR_MEMORY_CAP && has(hashevict_last_error(), "scratch"),
              "%s mode, a chunk of %d tokens x %d heads: %s (%s)", m ? "slot" : "token", nm, HEADS,
              hashevict_status_string(st), st ? hashevict_last_error() : "");
        if (st == HASHEVICT_ERR_MEMORY_CAP) printf("  %s mode chunk: %s\n", m ? "slot" : "token", hashevict_last_error());
        /* the sequence is unchanged and still works */
        hashevict_stats s;
        memset(&s, 0, sizeof s);
        s.size = sizeof s;
        CHECK_ST(hashevict_stats_get(e, 0, &s), HASHEVICT_OK);
        CHECK(s.steps == 0 && s.cached == 0, "the refused chunk changed the sequence: steps %llu cached %llu",
              (unsigned long long)s.steps, (unsigned long long)s.cached);
        hashevict_tensor one = t;
        one.n_tokens = 1;
        st = m == 0 ? hashevict_observe(e, 0, 0, &one, &one, pos, 1) : hashevict_place(e, 0, 0, &one, &one, pos, 1, slots, NULL);
        CHECK_ST(st, HASHEVICT_OK);
        hashevict_engine_free(e);
    }
    free(pos);
    free(x);
}

/* Token mode never evicting under a small cap: the growth is refused with a
 * message naming it, and the sequence keeps what it had. */
static void token_growth(void) {
    hashevict_params p = tu_params(HASHEVICT_MODE_TOKEN, 4, 2, 2, 8, 16, 100, 4, 10);
    p.memory_cap_bytes = 256 * 1024;
    hashevict_engine *e = NULL;
    REQUIRE_V(CHECK_ST(hashevict_engine_create(&p, &e), HASHEVICT_OK), "create");
    CHECK_ST(hashevict_seq_add(e, 0), HASHEVICT_OK);
    float x[2 * 8] = {1, -2, 3, -4, 5, -6, 7, -8, 8, 7, -6, 5, -4, 3, -2, 1};
    hashevict_tensor t = tu_tensor(x, HASHEVICT_DTYPE_F32, 1, 2, 8);
    hashevict_status st = HASHEVICT_OK;
    int32_t pos = 0, layer = 0;
    for (; pos < 100000 && st == HASHEVICT_OK; pos++)
        for (layer = 0; layer < 4 && st == HASHEVICT_OK; layer++) st = hashevict_observe(e, 0, layer, &t, &t, &pos, 1);
    pos--, layer--;
    CHECK(st == HASHEVICT_ERR_MEMORY_CAP && has(hashevict_last_error(), "token-mode tables") &&
              has(hashevict_last_error(), "memory_cap_bytes = 262144"),
          "token growth: %s at position %d (%s)", hashevict_status_string(st), pos, hashevict_last_error());
    printf("  token growth: refused at position %d, layer %d: %s\n", pos, layer, hashevict_last_error());
    int32_t cnt = -1, buf[1];
    hashevict_token_positions(e, 0, buf, 0, &cnt);
    CHECK(cnt == pos, "after the refusal the sequence holds %d positions, want %d", cnt, pos);
    /* evicting makes room again */
    int32_t out[64], got = 0;
    CHECK_ST(hashevict_evictions(e, 0, out, 64, &got), HASHEVICT_OK);
    CHECK(got > 0, "nothing to evict");
    CHECK_ST(hashevict_observe(e, 0, layer, &t, &t, &pos, 1), HASHEVICT_OK);
    hashevict_engine_free(e);
}

int main(void) {
    struct rlimit lim = {(rlim_t)64 << 30, (rlim_t)64 << 30};
    struct rlimit cur;
    if (getrlimit(RLIMIT_AS, &cur) == 0 && (cur.rlim_cur == RLIM_INFINITY || cur.rlim_cur > lim.rlim_cur)) {
        if (cur.rlim_max != RLIM_INFINITY && cur.rlim_max < lim.rlim_max) lim.rlim_cur = lim.rlim_max = cur.rlim_max;
        setrlimit(RLIMIT_AS, &lim);
    }
    huge_shapes();
    projections_count();
    least_cap();
    huge_chunk();
    token_growth();
    return check_report("test_memory");
}
