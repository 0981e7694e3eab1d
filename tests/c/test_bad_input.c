/*
 * test_bad_input.c — one case per bad input: each asserts the exact status
 * that include/hashevict.h documents, a non-empty hashevict_last_error()
 * that names the problem, that the failed call changed nothing, and that
 * the engine still works afterwards. Ends with the panic path
 * (HASHEVICT_TEST_PANIC).
 */
#include <ctype.h>
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "hashevict.h"
#include "testutil.h"

enum { L = 2, KV = 2, QH = 4, D = 16, BUDGET = 16, SINK = 2, RECENT = 3, SEQS = 4 };

/* ---- expectations ------------------------------------------------------- */

static int contains_ci(const char *hay, const char *needle) {
    size_t n = strlen(needle);
    for (; *hay; hay++) {
        size_t i = 0;
        while (i < n && hay[i] && tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i])) i++;
        if (i == n) return 1;
    }
    return n == 0;
}

/* The call returned `want`, and the thread's message is non-empty and
 * mentions `word` (case-insensitive). */
#define EXPECT_ERR(call, want, word) expect_err_at(__FILE__, __LINE__, #call, (call), (want), (word))

/* With HASHEVICT_BAD_INPUT_TABLE=<file>, every expected error is also written
 * there as a markdown row: docs/reliability.md is made from it. */
static FILE *table;
static const char *current_case = "";

static void table_cell(const char *s) {
    fputc(' ', table);
    for (; *s; s++) {
        if (*s == '|') fputc('\\', table);
        fputc(*s == '\n' ? ' ' : *s, table);
    }
    fputs(" |", table);
}

static int expect_err_at(const char *file, int line, const char *text, hashevict_status got,
                         hashevict_status want, const char *word) {
    int ok = check_status_at(file, line, text, got, want);
    const char *msg = hashevict_last_error();
    if (table) {
        fputc('|', table);
        table_cell(current_case);
        fputs(" `", table);
        for (const char *c = text; *c; c++) fputc(*c == '|' ? '/' : *c, table);
        fputs("` |", table);
        table_cell(hashevict_status_string(got));
        table_cell(msg ? msg : "");
        fputc('\n', table);
    }
    check_count++;
    if (msg == NULL || msg[0] == '\0') {
        check_fail_at(file, line, "%s: empty hashevict_last_error()", text);
        return 0;
    }
    check_count++;
    if (!contains_ci(msg, word)) {
        check_fail_at(file, line, "%s: message \"%s\" does not mention \"%s\"", text, msg, word);
        return 0;
    }
    return ok;
}

/* ---- a small engine with some state -------------------------------------- */

typedef struct {
    hashevict_engine *e;
    hashevict_params p;
    int32_t next;
    float q[QH * D], k[KV * D];
    hashevict_tensor tq, tk;
    int32_t slots[8 * KV], ev[8 * KV];
    tu_rng r;
} fixture;

static void fx_fill(fixture *f) {
    for (int i = 0; i < QH * D; i++) f->q[i] = tu_gauss(&f->r);
    for (int i = 0; i < KV * D; i++) f->k[i] = tu_gauss(&f->r);
}

/* A slot-mode (or token-mode) engine, sequence 0 added, `warm` positions
 * placed in every layer. */
static int fx_init(fixture *f, int mode, int warm) {
    memset(f, 0, sizeof *f);
    f->r = tu_rng_make(11, (uint64_t)mode, (uint64_t)warm);
    f->p = tu_params(mode, L, KV, QH, D, 16, BUDGET, SINK, RECENT);
    f->p.max_seqs = SEQS;
    if (!CHECK_ST(hashevict_engine_create(&f->p, &f->e), HASHEVICT_OK)) return 0;
    if (!CHECK_ST(hashevict_seq_add(f->e, 0), HASHEVICT_OK)) return 0;
    f->tq = tu_tensor(f->q, HASHEVICT_DTYPE_F32, 1, QH, D);
    f->tk = tu_tensor(f->k, HASHEVICT_DTYPE_F32, 1, KV, D);
    for (int i = 0; i < warm; i++) {
        for (int l = 0; l < L; l++) {
            fx_fill(f);
            hashevict_status st =
                mode == HASHEVICT_MODE_SLOT
                    ? hashevict_place(f->e, 0, l, &f->tq, &f->tk, &f->next, 1, f->slots, f->ev)
                    : hashevict_observe(f->e, 0, l, &f->tq, &f->tk, &f->next, 1);
            if (!CHECK_ST(st, HASHEVICT_OK)) return 0;
        }
        f->next++;
    }
    return 1;
}

/* One valid step on every layer of sequence 0: the engine still works. */
static void fx_works_at(fixture *f, const char *file, int line) {
    for (int l = 0; l < L; l++) {
        fx_fill(f);
        hashevict_tensor tq = tu_tensor(f->q, HASHEVICT_DTYPE_F32, 1, QH, D);
        hashevict_tensor tk = tu_tensor(f->k, HASHEVICT_DTYPE_F32, 1, KV, D);
        hashevict_status st =
            f->p.mode == HASHEVICT_MODE_SLOT
                ? hashevict_place(f->e, 0, l, &tq, &tk, &f->next, 1, f->slots, f->ev)
                : hashevict_observe(f->e, 0, l, &tq, &tk, &f->next, 1);
        if (!check_status_at(file, line, "valid step after the error", st, HASHEVICT_OK)) return;
    }
    f->next++;
}
#define FX_WORKS(f) fx_works_at((f), __FILE__, __LINE__)

/* Everything observable about sequence `seq`. */
typedef struct {
    hashevict_stats seq_stats, engine_stats;
    int32_t slots[L][KV][BUDGET];
    int32_t tokens[256];
    int32_t n_tokens;
    hashevict_status seq_status;
} snapshot;

static void snap(fixture *f, int seq, snapshot *s) {
    memset(s, 0, sizeof *s);
    s->seq_stats.size = s->engine_stats.size = sizeof(hashevict_stats);
    s->seq_status = hashevict_stats_get(f->e, seq, &s->seq_stats);
    hashevict_stats_get(f->e, -1, &s->engine_stats);
    if (s->seq_status != HASHEVICT_OK) return;
    if (f->p.mode == HASHEVICT_MODE_SLOT) {
        for (int l = 0; l < L; l++)
            for (int h = 0; h < KV; h++) hashevict_slot_positions(f->e, seq, l, h, s->slots[l][h], BUDGET);
    } else {
        hashevict_token_positions(f->e, seq, s->tokens, 256, &s->n_tokens);
    }
}

static void unchanged_at(fixture *f, int seq, const snapshot *before, const char *file, int line) {
    snapshot now;
    snap(f, seq, &now);
    check_count++;
    if (memcmp(&now, before, sizeof now) != 0)
        check_fail_at(file, line, "a failed call changed the state of sequence %d (stats or slot positions)", seq);
}
#define UNCHANGED(f, s) unchanged_at((f), 0, (s), __FILE__, __LINE__)

static void fx_free(fixture *f) { hashevict_engine_free(f->e); }

/* A place call on sequence 0 layer 0 with the fixture's tensors. */
#define PLACE(f, tq, tk, pos, n) hashevict_place((f)->e, 0, 0, (tq), (tk), (pos), (n), (f)->slots, (f)->ev)

/* Declares a case: sets up a warm slot fixture and a snapshot. */
#define CASE(name) static void name(void)
#define SETUP(mode, warm)                                                     \
    fixture fx;                                                               \
    snapshot before;                                                          \
    if (!fx_init(&fx, (mode), (warm))) {                                      \
        fx_free(&fx);                                                         \
        return;                                                               \
    }                                                                         \
    snap(&fx, 0, &before)
#define TEARDOWN()                                                            \
    do {                                                                      \
        UNCHANGED(&fx, &before);                                              \
        FX_WORKS(&fx);                                                        \
        fx_free(&fx);                                                         \
    } while (0)

static hashevict_params good_params(void) {
    hashevict_params p = tu_params(HASHEVICT_MODE_SLOT, L, KV, QH, D, 16, BUDGET, SINK, RECENT);
    return p;
}

/* create must fail with `want` and set *out to NULL */
static void expect_create_fails_at(const char *file, int line, const hashevict_params *p, hashevict_status want,
                                   const char *word, const char *what) {
    hashevict_engine *e = (hashevict_engine *)(uintptr_t)0x1;
    hashevict_status st = hashevict_engine_create(p, &e);
    char text[160];
    snprintf(text, sizeof text, "hashevict_engine_create(%s)", what);
    expect_err_at(file, line, text, st, want, word);
    check_count++;
    if (e != NULL) {
        check_fail_at(file, line, "%s: failed create left *out = %p, want NULL", text, (void *)e);
        if (st == HASHEVICT_OK) hashevict_engine_free(e);
    }
}
#define CREATE_FAILS(p, want, word, what) expect_create_fails_at(__FILE__, __LINE__, (p), (want), (word), (what))

/* ======================================================================== */
/* engine creation                                                          */
/* ======================================================================== */

CASE(create_null_params) {
    hashevict_engine *e = (hashevict_engine *)(uintptr_t)0x1;
    EXPECT_ERR(hashevict_engine_create(NULL, &e), HASHEVICT_ERR_INVALID_ARGUMENT, "params");
    CHECK(e == NULL, "create(NULL params) left *out = %p", (void *)e);
}

CASE(create_null_out) {
    hashevict_params p = good_params();
    EXPECT_ERR(hashevict_engine_create(&p, NULL), HASHEVICT_ERR_INVALID_ARGUMENT, "out");
}

CASE(create_size_too_small) {
    hashevict_params p = good_params();
    p.size = 8;
    CREATE_FAILS(&p, HASHEVICT_ERR_INVALID_ARGUMENT, "size", "size 8");
    p.size = 0;
    CREATE_FAILS(&p, HASHEVICT_ERR_INVALID_ARGUMENT, "size", "size 0");
    p.size = (uint32_t)sizeof p - 1;
    CREATE_FAILS(&p, HASHEVICT_ERR_INVALID_ARGUMENT, "size", "size sizeof-1");
}

CASE(params_head_dim) {
    static const int bad[] = {0, -1, -64, 4097, INT32_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hashevict_params p = good_params();
        p.head_dim = bad[i];
        CREATE_FAILS(&p, HASHEVICT_ERR_INVALID_PARAMS, "head_dim", "head_dim");
    }
    hashevict_params p = good_params();
    p.head_dim = 4096; /* the documented maximum is fine */
    hashevict_engine *e = NULL;
    CHECK_ST(hashevict_engine_create(&p, &e), HASHEVICT_OK);
    hashevict_engine_free(e);
}

CASE(params_n_layers) {
    static const int bad[] = {0, -1};
    for (size_t i = 0; i < 2; i++) {
        hashevict_params p = good_params();
        p.n_layers = bad[i];
        CREATE_FAILS(&p, HASHEVICT_ERR_INVALID_PARAMS, "n_layers", "n_layers");
    }
}

CASE(params_n_kv_heads) {
    static const int bad[] = {0, -2};
    for (size_t i = 0; i < 2; i++) {
        hashevict_params p = good_params();
        p.n_kv_heads = bad[i];
        CREATE_FAILS(&p, HASHEVICT_ERR_INVALID_PARAMS, "n_kv_heads", "n_kv_heads");
    }
}

CASE(params_q_not_multiple) {
    static const int bad[] = {3, 5, 1, 0, -4};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hashevict_params p = good_params(); /* n_kv_heads = 2 */
        p.n_q_heads = bad[i];
        CREATE_FAILS(&p, HASHEVICT_ERR_INVALID_PARAMS, "n_q_heads", "n_q_heads");
    }
}

CASE(params_budget_too_small) {
    static const int bad[] = {SINK + RECENT, SINK + RECENT - 1, 1, 0, -5};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hashevict_params p = good_params();
        p.budget = bad[i];
        CREATE_FAILS(&p, HASHEVICT_ERR_INVALID_PARAMS, "budget", "budget");
    }
    hashevict_params p = good_params();
    p.budget = SINK + RECENT + 1; /* the smallest valid budget */
    hashevict_engine *e = NULL;
    CHECK_ST(hashevict_engine_create(&p, &e), HASHEVICT_OK);
    hashevict_engine_free(e);
}

CASE(params_hash_bits) {
    static const int bad[] = {24, 0, 1, 7, 48, 100, 512, -16};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hashevict_params p = good_params();
        p.hash_bits = bad[i];
        CREATE_FAILS(&p, HASHEVICT_ERR_INVALID_PARAMS, "hash_bits", "hash_bits");
    }
}

CASE(params_negative_sink_recent) {
    hashevict_params p = good_params();
    p.n_sink = -1;
    CREATE_FAILS(&p, HASHEVICT_ERR_INVALID_PARAMS, "n_sink", "n_sink -1");
    p = good_params();
    p.n_recent = -1;
    CREATE_FAILS(&p, HASHEVICT_ERR_INVALID_PARAMS, "n_recent", "n_recent -1");
}

CASE(params_enums) {
    hashevict_params p = good_params();
    p.mode = 2;
    CREATE_FAILS(&p, HASHEVICT_ERR_INVALID_PARAMS, "mode", "mode 2");
    p = good_params();
    p.policy = 5;
    CREATE_FAILS(&p, HASHEVICT_ERR_INVALID_PARAMS, "policy", "policy 5");
    p.policy = -1;
    CREATE_FAILS(&p, HASHEVICT_ERR_INVALID_PARAMS, "policy", "policy -1");
    p = good_params();
    p.probe = 2;
    CREATE_FAILS(&p, HASHEVICT_ERR_INVALID_PARAMS, "probe", "probe 2");
    p = good_params();
    p.score = 3;
    CREATE_FAILS(&p, HASHEVICT_ERR_INVALID_PARAMS, "score", "score 3");
}

CASE(params_max_seqs) {
    hashevict_params p = good_params();
    p.max_seqs = 0;
    CREATE_FAILS(&p, HASHEVICT_ERR_INVALID_PARAMS, "max_seqs", "max_seqs 0");
    p.max_seqs = -3;
    CREATE_FAILS(&p, HASHEVICT_ERR_INVALID_PARAMS, "max_seqs", "max_seqs -3");
}

CASE(params_decay) {
    const float bad[] = {0.0f, 1.0f, -0.5f, 1.5f, NAN, INFINITY};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hashevict_params p = good_params();
        p.score = HASHEVICT_SCORE_DECAYED;
        p.decay = bad[i];
        CREATE_FAILS(&p, HASHEVICT_ERR_INVALID_PARAMS, "decay", "decay");
    }
}

CASE(memory_cap_at_create) {
    hashevict_params p = good_params();
    p.memory_cap_bytes = 16;
    CREATE_FAILS(&p, HASHEVICT_ERR_MEMORY_CAP, "memory_cap", "memory_cap_bytes 16");
}

CASE(memory_cap_at_seq_add) {
    /* cap at the least create accepts: the engine (projections, directory)
     * and one sequence at full budget */
    hashevict_params p = good_params();
    uint64_t lo = 1, hi = (uint64_t)1 << 32;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        p.memory_cap_bytes = mid;
        hashevict_engine *probe = NULL;
        hashevict_status st = hashevict_engine_create(&p, &probe);
        hashevict_engine_free(probe);
        if (st == HASHEVICT_OK) hi = mid; else lo = mid + 1;
    }
    p.memory_cap_bytes = lo;
    hashevict_engine *e = NULL;
    if (!CHECK_ST(hashevict_engine_create(&p, &e), HASHEVICT_OK)) return;
    CHECK_ST(hashevict_seq_add(e, 0), HASHEVICT_OK);
    EXPECT_ERR(hashevict_seq_add(e, 1), HASHEVICT_ERR_MEMORY_CAP, "memory_cap");
    EXPECT_ERR(hashevict_seq_fork(e, 0, 2), HASHEVICT_ERR_MEMORY_CAP, "memory_cap");
    /* the failed add did not create the sequence */
    EXPECT_ERR(hashevict_seq_remove(e, 1), HASHEVICT_ERR_UNKNOWN_SEQUENCE, "sequence");
    /* after removing the first, there is room again */
    CHECK_ST(hashevict_seq_remove(e, 0), HASHEVICT_OK);
    CHECK_ST(hashevict_seq_add(e, 1), HASHEVICT_OK);
    hashevict_engine_free(e);
}

/* ======================================================================== */
/* handles                                                                  */
/* ======================================================================== */

/* Every engine function on `e` returns INVALID_HANDLE mentioning `word`. */
static void all_calls_reject(hashevict_engine *e, const char *word) {
    float x[QH * D] = {0};
    hashevict_tensor tq = tu_tensor(x, HASHEVICT_DTYPE_F32, 1, QH, D);
    hashevict_tensor tk = tu_tensor(x, HASHEVICT_DTYPE_F32, 1, KV, D);
    int32_t pos = 0, slots[KV], ev[KV], buf[BUDGET], cnt;
    uint64_t codes[8];
    float proj[16 * D];
    hashevict_params p = hashevict_default_params();
    hashevict_stats st;
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    const hashevict_status H = HASHEVICT_ERR_INVALID_HANDLE;
    EXPECT_ERR(hashevict_engine_params(e, &p), H, word);
    EXPECT_ERR(hashevict_seq_add(e, 0), H, word);
    EXPECT_ERR(hashevict_seq_remove(e, 0), H, word);
    EXPECT_ERR(hashevict_seq_reset(e, 0), H, word);
    EXPECT_ERR(hashevict_seq_fork(e, 0, 1), H, word);
    EXPECT_ERR(hashevict_place(e, 0, 0, &tq, &tk, &pos, 1, slots, ev), H, word);
    EXPECT_ERR(hashevict_slot_positions(e, 0, 0, 0, buf, BUDGET), H, word);
    EXPECT_ERR(hashevict_observe(e, 0, 0, &tq, &tk, &pos, 1), H, word);
    EXPECT_ERR(hashevict_evictions(e, 0, buf, BUDGET, &cnt), H, word);
    EXPECT_ERR(hashevict_token_positions(e, 0, buf, BUDGET, &cnt), H, word);
    EXPECT_ERR(hashevict_hash(e, 0, &tk, codes, 8), H, word);
    EXPECT_ERR(hashevict_projection(e, 0, proj, 16 * D), H, word);
    EXPECT_ERR(hashevict_stats_get(e, -1, &st), H, word);
    size_t size = 0;
    unsigned char blob[64] = {0};
    EXPECT_ERR(hashevict_seq_state_size(e, 0, &size), H, word);
    EXPECT_ERR(hashevict_seq_state_save(e, 0, blob, sizeof blob, &size), H, word);
    EXPECT_ERR(hashevict_seq_state_load(e, 0, blob, sizeof blob), H, word);
}

CASE(null_engine) { all_calls_reject(NULL, "NULL"); }

CASE(freed_handle) {
    hashevict_params p = good_params();
    hashevict_engine *e = NULL;
    if (!CHECK_ST(hashevict_engine_create(&p, &e), HASHEVICT_OK)) return;
    CHECK_ST(hashevict_seq_add(e, 0), HASHEVICT_OK);
    hashevict_engine_free(e);
    all_calls_reject(e, "engine");
    hashevict_engine_free(e); /* no-op */
    /* a new engine is not confused with the freed one */
    hashevict_engine *e2 = NULL;
    if (CHECK_ST(hashevict_engine_create(&p, &e2), HASHEVICT_OK)) {
        if (e2 == e) {
            printf("note: the new engine reuses the freed handle value\n");
        } else {
            EXPECT_ERR(hashevict_seq_add(e, 0), HASHEVICT_ERR_INVALID_HANDLE, "engine");
        }
        CHECK_ST(hashevict_seq_add(e2, 0), HASHEVICT_OK);
    }
    hashevict_engine_free(e2);
}

CASE(foreign_handle) {
    int local = 42;
    hashevict_engine *foreign[] = {(hashevict_engine *)(uintptr_t)0x1234, (hashevict_engine *)(void *)&local,
                                   (hashevict_engine *)(uintptr_t)UINTPTR_MAX};
    /* with a live engine around, so that the handle table is not empty */
    hashevict_params p = good_params();
    hashevict_engine *live = NULL;
    CHECK_ST(hashevict_engine_create(&p, &live), HASHEVICT_OK);
    for (size_t i = 0; i < sizeof foreign / sizeof foreign[0]; i++) {
        all_calls_reject(foreign[i], "engine");
        hashevict_engine_free(foreign[i]); /* documented no-op */
    }
    CHECK(local == 42, "a foreign handle's memory was written");
    CHECK_ST(hashevict_seq_add(live, 0), HASHEVICT_OK);
    hashevict_engine_free(live);
}

/* ======================================================================== */
/* ranges and sequences                                                     */
/* ======================================================================== */

CASE(layer_out_of_range) {
    SETUP(HASHEVICT_MODE_SLOT, 5);
    int32_t pos = fx.next, buf[BUDGET];
    uint64_t codes[8];
    float proj[16 * D];
    const int bad[] = {-1, L, L + 7, INT32_MIN};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        EXPECT_ERR(hashevict_place(fx.e, 0, bad[i], &fx.tq, &fx.tk, &pos, 1, fx.slots, fx.ev),
                   HASHEVICT_ERR_OUT_OF_RANGE, "layer");
        EXPECT_ERR(hashevict_slot_positions(fx.e, 0, bad[i], 0, buf, BUDGET), HASHEVICT_ERR_OUT_OF_RANGE, "layer");
        EXPECT_ERR(hashevict_hash(fx.e, bad[i], &fx.tk, codes, 8), HASHEVICT_ERR_OUT_OF_RANGE, "layer");
        EXPECT_ERR(hashevict_projection(fx.e, bad[i], proj, 16 * D), HASHEVICT_ERR_OUT_OF_RANGE, "layer");
    }
    TEARDOWN();
}

CASE(layer_out_of_range_token_mode) {
    SETUP(HASHEVICT_MODE_TOKEN, 5);
    int32_t pos = fx.next;
    EXPECT_ERR(hashevict_observe(fx.e, 0, -1, &fx.tq, &fx.tk, &pos, 1), HASHEVICT_ERR_OUT_OF_RANGE, "layer");
    EXPECT_ERR(hashevict_observe(fx.e, 0, L, &fx.tq, &fx.tk, &pos, 1), HASHEVICT_ERR_OUT_OF_RANGE, "layer");
    TEARDOWN();
}

CASE(kv_head_out_of_range) {
    SETUP(HASHEVICT_MODE_SLOT, 5);
    int32_t buf[BUDGET];
    EXPECT_ERR(hashevict_slot_positions(fx.e, 0, 0, -1, buf, BUDGET), HASHEVICT_ERR_OUT_OF_RANGE, "head");
    EXPECT_ERR(hashevict_slot_positions(fx.e, 0, 0, KV, buf, BUDGET), HASHEVICT_ERR_OUT_OF_RANGE, "head");
    TEARDOWN();
}

CASE(sequence_out_of_range) {
    SETUP(HASHEVICT_MODE_SLOT, 5);
    int32_t pos = fx.next, buf[BUDGET];
    hashevict_stats st;
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    const int bad[] = {-1, SEQS, SEQS + 100, INT32_MIN};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int s = bad[i];
        EXPECT_ERR(hashevict_seq_add(fx.e, s), HASHEVICT_ERR_OUT_OF_RANGE, "sequence");
        EXPECT_ERR(hashevict_seq_remove(fx.e, s), HASHEVICT_ERR_OUT_OF_RANGE, "sequence");
        EXPECT_ERR(hashevict_seq_reset(fx.e, s), HASHEVICT_ERR_OUT_OF_RANGE, "sequence");
        EXPECT_ERR(hashevict_seq_fork(fx.e, s, 1), HASHEVICT_ERR_OUT_OF_RANGE, "sequence");
        EXPECT_ERR(hashevict_seq_fork(fx.e, 0, s), HASHEVICT_ERR_OUT_OF_RANGE, "sequence");
        EXPECT_ERR(hashevict_place(fx.e, s, 0, &fx.tq, &fx.tk, &pos, 1, fx.slots, fx.ev), HASHEVICT_ERR_OUT_OF_RANGE,
                   "sequence");
        EXPECT_ERR(hashevict_slot_positions(fx.e, s, 0, 0, buf, BUDGET), HASHEVICT_ERR_OUT_OF_RANGE, "sequence");
        if (s != -1) /* -1 means the whole engine */
            EXPECT_ERR(hashevict_stats_get(fx.e, s, &st), HASHEVICT_ERR_OUT_OF_RANGE, "sequence");
    }
    TEARDOWN();
}

CASE(sequence_out_of_range_token_mode) {
    SETUP(HASHEVICT_MODE_TOKEN, 5);
    int32_t pos = fx.next, buf[BUDGET], cnt;
    EXPECT_ERR(hashevict_observe(fx.e, SEQS, 0, &fx.tq, &fx.tk, &pos, 1), HASHEVICT_ERR_OUT_OF_RANGE, "sequence");
    EXPECT_ERR(hashevict_evictions(fx.e, -1, buf, BUDGET, &cnt), HASHEVICT_ERR_OUT_OF_RANGE, "sequence");
    EXPECT_ERR(hashevict_token_positions(fx.e, SEQS, buf, BUDGET, &cnt), HASHEVICT_ERR_OUT_OF_RANGE, "sequence");
    TEARDOWN();
}

static void unknown_sequence_calls(fixture *f, int s) {
    int32_t pos = 1000, buf[BUDGET];
    hashevict_stats st;
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    const hashevict_status U = HASHEVICT_ERR_UNKNOWN_SEQUENCE;
    EXPECT_ERR(hashevict_place(f->e, s, 0, &f->tq, &f->tk, &pos, 1, f->slots, f->ev), U, "sequence");
    EXPECT_ERR(hashevict_slot_positions(f->e, s, 0, 0, buf, BUDGET), U, "sequence");
    EXPECT_ERR(hashevict_seq_remove(f->e, s), U, "sequence");
    EXPECT_ERR(hashevict_seq_reset(f->e, s), U, "sequence");
    EXPECT_ERR(hashevict_seq_fork(f->e, s, 3), U, "sequence");
    EXPECT_ERR(hashevict_stats_get(f->e, s, &st), U, "sequence");
}

CASE(unknown_sequence) {
    SETUP(HASHEVICT_MODE_SLOT, 5);
    unknown_sequence_calls(&fx, 2); /* never added */
    TEARDOWN();
}

CASE(removed_sequence) {
    SETUP(HASHEVICT_MODE_SLOT, 5);
    CHECK_ST(hashevict_seq_add(fx.e, 1), HASHEVICT_OK);
    CHECK_ST(hashevict_seq_remove(fx.e, 1), HASHEVICT_OK);
    snap(&fx, 0, &before);
    unknown_sequence_calls(&fx, 1);
    TEARDOWN();
}

CASE(unknown_sequence_token_mode) {
    SETUP(HASHEVICT_MODE_TOKEN, 5);
    int32_t pos = 0, buf[BUDGET], cnt;
    EXPECT_ERR(hashevict_observe(fx.e, 1, 0, &fx.tq, &fx.tk, &pos, 1), HASHEVICT_ERR_UNKNOWN_SEQUENCE, "sequence");
    EXPECT_ERR(hashevict_evictions(fx.e, 1, buf, BUDGET, &cnt), HASHEVICT_ERR_UNKNOWN_SEQUENCE, "sequence");
    EXPECT_ERR(hashevict_token_positions(fx.e, 1, buf, BUDGET, &cnt), HASHEVICT_ERR_UNKNOWN_SEQUENCE, "sequence");
    TEARDOWN();
}

CASE(seq_add_existing) {
    SETUP(HASHEVICT_MODE_SLOT, 5);
    EXPECT_ERR(hashevict_seq_add(fx.e, 0), HASHEVICT_ERR_SEQUENCE_EXISTS, "exists");
    TEARDOWN();
}

CASE(fork_onto_existing) {
    SETUP(HASHEVICT_MODE_SLOT, 5);
    CHECK_ST(hashevict_seq_add(fx.e, 2), HASHEVICT_OK);
    snap(&fx, 0, &before);
    snapshot b2;
    snap(&fx, 2, &b2);
    EXPECT_ERR(hashevict_seq_fork(fx.e, 0, 2), HASHEVICT_ERR_SEQUENCE_EXISTS, "exists");
    unchanged_at(&fx, 2, &b2, __FILE__, __LINE__); /* the existing dst was not overwritten */
    EXPECT_ERR(hashevict_seq_fork(fx.e, 0, 0), HASHEVICT_ERR_SEQUENCE_EXISTS, "0");
    /* onto itself, but the id was never added: the sequence does not exist */
    hashevict_status st = hashevict_seq_fork(fx.e, 3, 3);
    CHECK(st == HASHEVICT_ERR_UNKNOWN_SEQUENCE,
                "hashevict_seq_fork(e, 3, 3) with sequence 3 never added returned %s (\"%s\"), want "
                "HASHEVICT_ERR_UNKNOWN_SEQUENCE",
                hashevict_status_string(st), st ? hashevict_last_error() : "");
    CHECK(st != HASHEVICT_OK, "fork of an absent sequence onto itself succeeded");
    TEARDOWN();
}

/* ======================================================================== */
/* place / observe arguments                                                 */
/* ======================================================================== */

CASE(n_tokens_zero_or_negative) {
    SETUP(HASHEVICT_MODE_SLOT, 5);
    int32_t pos = fx.next;
    EXPECT_ERR(PLACE(&fx, &fx.tq, &fx.tk, &pos, 0), HASHEVICT_ERR_INVALID_ARGUMENT, "n_tokens");
    EXPECT_ERR(PLACE(&fx, &fx.tq, &fx.tk, &pos, -1), HASHEVICT_ERR_INVALID_ARGUMENT, "n_tokens");
    EXPECT_ERR(PLACE(&fx, &fx.tq, &fx.tk, &pos, INT32_MIN), HASHEVICT_ERR_INVALID_ARGUMENT, "n_tokens");
    TEARDOWN();
}

CASE(n_tokens_zero_token_mode) {
    SETUP(HASHEVICT_MODE_TOKEN, 5);
    int32_t pos = fx.next;
    EXPECT_ERR(hashevict_observe(fx.e, 0, 0, &fx.tq, &fx.tk, &pos, 0), HASHEVICT_ERR_INVALID_ARGUMENT, "n_tokens");
    EXPECT_ERR(hashevict_observe(fx.e, 0, 0, &fx.tq, &fx.tk, &pos, -3), HASHEVICT_ERR_INVALID_ARGUMENT, "n_tokens");
    TEARDOWN();
}

CASE(null_positions) {
    SETUP(HASHEVICT_MODE_SLOT, 5);
    EXPECT_ERR(PLACE(&fx, &fx.tq, &fx.tk, NULL, 1), HASHEVICT_ERR_INVALID_ARGUMENT, "positions");
    TEARDOWN();
}

CASE(null_k) {
    SETUP(HASHEVICT_MODE_SLOT, 5);
    int32_t pos = fx.next;
    EXPECT_ERR(PLACE(&fx, &fx.tq, NULL, &pos, 1), HASHEVICT_ERR_INVALID_ARGUMENT, "k");
    TEARDOWN();
}

CASE(null_k_token_mode) {
    SETUP(HASHEVICT_MODE_TOKEN, 5);
    int32_t pos = fx.next;
    EXPECT_ERR(hashevict_observe(fx.e, 0, 0, &fx.tq, NULL, &pos, 1), HASHEVICT_ERR_INVALID_ARGUMENT, "k");
    TEARDOWN();
}

CASE(null_q_when_needed) {
    SETUP(HASHEVICT_MODE_SLOT, 5); /* HASH with PROBE_QUERY needs q */
    int32_t pos = fx.next;
    EXPECT_ERR(PLACE(&fx, NULL, &fx.tk, &pos, 1), HASHEVICT_ERR_INVALID_ARGUMENT, "q");
    TEARDOWN();
    /* ORACLE needs q even with PROBE_KEY */
    hashevict_params p = good_params();
    p.policy = HASHEVICT_POLICY_ORACLE;
    p.probe = HASHEVICT_PROBE_KEY;
    hashevict_engine *e = NULL;
    if (!CHECK_ST(hashevict_engine_create(&p, &e), HASHEVICT_OK)) return;
    CHECK_ST(hashevict_seq_add(e, 0), HASHEVICT_OK);
    float k[KV * D] = {1};
    hashevict_tensor tk = tu_tensor(k, HASHEVICT_DTYPE_F32, 1, KV, D);
    int32_t slots[KV];
    pos = 0;
    EXPECT_ERR(hashevict_place(e, 0, 0, NULL, &tk, &pos, 1, slots, NULL), HASHEVICT_ERR_INVALID_ARGUMENT, "q");
    hashevict_engine_free(e);
}

/* The baselines that never read queries (sink+recent, Knorm, random) accept
 * q = NULL even with PROBE_QUERY, as the header states. */
CASE(null_q_other_policies) {
    for (int pol = HASHEVICT_POLICY_SINK_RECENT; pol <= HASHEVICT_POLICY_RANDOM; pol++) {
        hashevict_params p = good_params();
        p.policy = pol;
        hashevict_engine *e = NULL;
        if (!CHECK_ST(hashevict_engine_create(&p, &e), HASHEVICT_OK)) return;
        CHECK_ST(hashevict_seq_add(e, 0), HASHEVICT_OK);
        float k[KV * D] = {1};
        hashevict_tensor tk = tu_tensor(k, HASHEVICT_DTYPE_F32, 1, KV, D);
        int32_t slots[KV], pos = 0;
        hashevict_status st = hashevict_place(e, 0, 0, NULL, &tk, &pos, 1, slots, NULL);
        CHECK(st == HASHEVICT_OK, "policy %d with PROBE_QUERY: place(q = NULL) returned %s, want OK", pol,
              hashevict_status_string(st));
        hashevict_engine_free(e);
    }
}

CASE(null_out_slots) {
    SETUP(HASHEVICT_MODE_SLOT, 5);
    int32_t pos = fx.next;
    EXPECT_ERR(hashevict_place(fx.e, 0, 0, &fx.tq, &fx.tk, &pos, 1, NULL, fx.ev), HASHEVICT_ERR_INVALID_ARGUMENT,
               "out_slots");
    /* out_evicted may be NULL: that call succeeds */
    CHECK_ST(hashevict_place(fx.e, 0, 0, &fx.tq, &fx.tk, &pos, 1, fx.slots, NULL), HASHEVICT_OK);
    CHECK_ST(hashevict_place(fx.e, 0, 1, &fx.tq, &fx.tk, &pos, 1, fx.slots, NULL), HASHEVICT_OK);
    fx.next++;
    snap(&fx, 0, &before);
    TEARDOWN();
}

CASE(null_tensor_data) {
    SETUP(HASHEVICT_MODE_SLOT, 5);
    int32_t pos = fx.next;
    hashevict_tensor q = fx.tq, k = fx.tk;
    q.data = NULL;
    EXPECT_ERR(PLACE(&fx, &q, &fx.tk, &pos, 1), HASHEVICT_ERR_INVALID_ARGUMENT, "data");
    k.data = NULL;
    EXPECT_ERR(PLACE(&fx, &fx.tq, &k, &pos, 1), HASHEVICT_ERR_INVALID_ARGUMENT, "data");
    uint64_t codes[8];
    EXPECT_ERR(hashevict_hash(fx.e, 0, &k, codes, 8), HASHEVICT_ERR_INVALID_ARGUMENT, "data");
    TEARDOWN();
}

CASE(null_outputs_of_queries) {
    SETUP(HASHEVICT_MODE_SLOT, 5);
    uint64_t codes[8];
    EXPECT_ERR(hashevict_slot_positions(fx.e, 0, 0, 0, NULL, BUDGET), HASHEVICT_ERR_INVALID_ARGUMENT, "out");
    EXPECT_ERR(hashevict_hash(fx.e, 0, NULL, codes, 8), HASHEVICT_ERR_INVALID_ARGUMENT, "x");
    EXPECT_ERR(hashevict_hash(fx.e, 0, &fx.tk, NULL, 8), HASHEVICT_ERR_INVALID_ARGUMENT, "out");
    EXPECT_ERR(hashevict_projection(fx.e, 0, NULL, 16 * D), HASHEVICT_ERR_INVALID_ARGUMENT, "out");
    EXPECT_ERR(hashevict_stats_get(fx.e, 0, NULL), HASHEVICT_ERR_INVALID_ARGUMENT, "out");
    EXPECT_ERR(hashevict_engine_params(fx.e, NULL), HASHEVICT_ERR_INVALID_ARGUMENT, "out");
    hashevict_stats st;
    memset(&st, 0, sizeof st); /* size not set */
    EXPECT_ERR(hashevict_stats_get(fx.e, 0, &st), HASHEVICT_ERR_INVALID_ARGUMENT, "size");
    hashevict_params p;
    memset(&p, 0, sizeof p);
    EXPECT_ERR(hashevict_engine_params(fx.e, &p), HASHEVICT_ERR_INVALID_ARGUMENT, "size");
    TEARDOWN();
}

CASE(null_outputs_token_mode) {
    SETUP(HASHEVICT_MODE_TOKEN, 5);
    int32_t buf[BUDGET], cnt;
    EXPECT_ERR(hashevict_evictions(fx.e, 0, NULL, BUDGET, &cnt), HASHEVICT_ERR_INVALID_ARGUMENT, "out_positions");
    EXPECT_ERR(hashevict_evictions(fx.e, 0, buf, BUDGET, NULL), HASHEVICT_ERR_INVALID_ARGUMENT, "out_count");
    EXPECT_ERR(hashevict_evictions(fx.e, 0, buf, 0, &cnt), HASHEVICT_ERR_INVALID_ARGUMENT, "capacity");
    EXPECT_ERR(hashevict_token_positions(fx.e, 0, buf, BUDGET, NULL), HASHEVICT_ERR_INVALID_ARGUMENT, "out_count");
    EXPECT_ERR(hashevict_token_positions(fx.e, 0, NULL, BUDGET, &cnt), HASHEVICT_ERR_INVALID_ARGUMENT,
               "out_positions");
    EXPECT_ERR(hashevict_token_positions(fx.e, 0, buf, -1, &cnt), HASHEVICT_ERR_INVALID_ARGUMENT, "capacity");
    TEARDOWN();
}

CASE(unsupported_dtype) {
    SETUP(HASHEVICT_MODE_SLOT, 5);
    int32_t pos = fx.next;
    const int bad[] = {7, 3, -1, 100};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hashevict_tensor k = fx.tk, q = fx.tq;
        k.dtype = bad[i];
        EXPECT_ERR(PLACE(&fx, &fx.tq, &k, &pos, 1), HASHEVICT_ERR_UNSUPPORTED, "dtype");
        q.dtype = bad[i];
        EXPECT_ERR(PLACE(&fx, &q, &fx.tk, &pos, 1), HASHEVICT_ERR_UNSUPPORTED, "dtype");
        uint64_t codes[8];
        EXPECT_ERR(hashevict_hash(fx.e, 0, &k, codes, 8), HASHEVICT_ERR_UNSUPPORTED, "dtype");
    }
    TEARDOWN();
}

/* Whether the library will find a usable CUDA driver, by the rules of
 * docs/cuda.md ("Loading"): the library at $HASHEVICT_LIBCUDA, else
 * libcuda.so.1 then libcuda.so, loads and has every entry point the
 * library looks up (cuda/driver.go), cuInit(0) succeeds and it counts a
 * device. Decided here, apart from the library, so that the expected
 * status is not the library's own answer. */
static int cuda_driver_usable(char *why, size_t n) {
    static const char *const symbols[] = {
        "cuInit", "cuDriverGetVersion", "cuGetErrorName", "cuGetErrorString", "cuDeviceGet", "cuDeviceGetCount",
        "cuDeviceGetAttribute", "cuDeviceGetName", "cuDevicePrimaryCtxRetain", "cuDevicePrimaryCtxRelease_v2",
        "cuCtxGetCurrent", "cuCtxGetDevice", "cuCtxPushCurrent_v2", "cuCtxPopCurrent_v2", "cuCtxSynchronize",
        "cuPointerGetAttribute", "cuStreamGetCtx", "cuModuleLoadData", "cuModuleUnload", "cuModuleGetFunction",
        "cuFuncGetAttribute", "cuLaunchKernel", "cuMemAlloc_v2", "cuMemFree_v2", "cuMemAllocHost_v2", "cuMemFreeHost",
        "cuMemcpyHtoDAsync_v2", "cuMemcpyDtoHAsync_v2", "cuMemcpyDtoDAsync_v2", "cuMemsetD32Async",
        "cuStreamSynchronize", "cuStreamQuery", "cuStreamCreate", "cuStreamDestroy_v2", "cuMemGetInfo_v2",
        "cuEventCreate", "cuEventRecord", "cuEventSynchronize", "cuEventElapsedTime", "cuEventDestroy_v2",
    };
    const char *env = getenv("HASHEVICT_LIBCUDA");
    const char *paths[2] = {"libcuda.so.1", "libcuda.so"};
    int npaths = 2;
    if (env && env[0]) paths[0] = env, npaths = 1;
    void *h = NULL;
    const char *path = NULL;
    for (int i = 0; i < npaths && !h; i++) h = dlopen(path = paths[i], RTLD_NOW | RTLD_LOCAL);
    if (!h) return snprintf(why, n, "no driver library loads (%s%s)", paths[0], npaths > 1 ? ", libcuda.so" : ""), 0;
    int ok = 1;
    for (size_t i = 0; i < sizeof symbols / sizeof symbols[0] && ok; i++)
        if (!dlsym(h, symbols[i])) ok = 0, snprintf(why, n, "%s has no %s", path, symbols[i]);
    int (*init)(unsigned) = (int (*)(unsigned))dlsym(h, "cuInit");
    int (*count)(int *) = (int (*)(int *))dlsym(h, "cuDeviceGetCount");
    int r = -1, devices = 0;
    if (ok && (r = init(0)) != 0) ok = 0, snprintf(why, n, "%s: cuInit returns %d", path, r);
    if (ok && (count(&devices) != 0 || devices < 1)) ok = 0, snprintf(why, n, "%s counts no device", path);
    if (ok) snprintf(why, n, "%s loads, %d device(s)", path, devices);
    /* Never closed: the library under test may hold the same handle. */
    return ok;
}

/* Host memory marked DEVICE_CUDA. Without a usable driver the CUDA path is
 * UNSUPPORTED before any pointer is looked at; with one, the driver does
 * not know the pointer (or calls it host memory): INVALID_ARGUMENT. Both
 * messages name CUDA; the second says the memory is the host's. */
CASE(cuda_device) {
    SETUP(HASHEVICT_MODE_SLOT, 5);
    int32_t pos = fx.next;
    hashevict_tensor k = fx.tk, q = fx.tq;
    char why[512] = "";
    int usable = cuda_driver_usable(why, sizeof why);
    printf("cuda_device: %s: expecting %s\n", why, usable ? "INVALID_ARGUMENT" : "UNSUPPORTED");
    hashevict_status want = usable ? HASHEVICT_ERR_INVALID_ARGUMENT : HASHEVICT_ERR_UNSUPPORTED;
    k.device = HASHEVICT_DEVICE_CUDA;
    EXPECT_ERR(PLACE(&fx, &fx.tq, &k, &pos, 1), want, "CUDA");
    CHECK(!usable || contains_ci(hashevict_last_error(), "host"), "message: %s", hashevict_last_error());
    q.device = HASHEVICT_DEVICE_CUDA;
    EXPECT_ERR(PLACE(&fx, &q, &fx.tk, &pos, 1), want, "CUDA");
    CHECK(!usable || contains_ci(hashevict_last_error(), "host"), "message: %s", hashevict_last_error());
    k.device = 9;
    EXPECT_ERR(PLACE(&fx, &fx.tq, &k, &pos, 1), HASHEVICT_ERR_UNSUPPORTED, "device");
    TEARDOWN();
}

/* A stream orders device work; with host memory the library could not honour
 * it (it reads right away), so it is refused rather than ignored. */
CASE(stream_on_host_tensor) {
    SETUP(HASHEVICT_MODE_SLOT, 5);
    int32_t pos = fx.next;
    int not_a_stream;
    hashevict_tensor k = fx.tk, q = fx.tq;
    k.stream = &not_a_stream;
    EXPECT_ERR(PLACE(&fx, &fx.tq, &k, &pos, 1), HASHEVICT_ERR_INVALID_ARGUMENT, "stream");
    q.stream = &not_a_stream;
    EXPECT_ERR(PLACE(&fx, &q, &fx.tk, &pos, 1), HASHEVICT_ERR_INVALID_ARGUMENT, "stream");
    uint64_t codes[8];
    EXPECT_ERR(hashevict_hash(fx.e, 0, &k, codes, 8), HASHEVICT_ERR_INVALID_ARGUMENT, "stream");
    TEARDOWN();
}

CASE(stream_on_host_tensor_token_mode) {
    SETUP(HASHEVICT_MODE_TOKEN, 5);
    int32_t pos = fx.next;
    int not_a_stream;
    hashevict_tensor k = fx.tk;
    k.stream = &not_a_stream;
    EXPECT_ERR(hashevict_observe(fx.e, 0, 0, &fx.tq, &k, &pos, 1), HASHEVICT_ERR_INVALID_ARGUMENT, "stream");
    TEARDOWN();
}

CASE(shape_head_dim_mismatch) {
    SETUP(HASHEVICT_MODE_SLOT, 5);
    int32_t pos = fx.next;
    hashevict_tensor k = fx.tk, q = fx.tq;
    k.head_dim = D - 1;
    EXPECT_ERR(PLACE(&fx, &fx.tq, &k, &pos, 1), HASHEVICT_ERR_SHAPE, "k");
    q.head_dim = D / 2;
    q.head_stride = D / 2 * 4;
    q.token_stride = QH * D / 2 * 4;
    EXPECT_ERR(PLACE(&fx, &q, &fx.tk, &pos, 1), HASHEVICT_ERR_SHAPE, "q");
    k = fx.tk;
    k.head_dim = 0;
    EXPECT_ERR(PLACE(&fx, &fx.tq, &k, &pos, 1), HASHEVICT_ERR_SHAPE, "k");
    uint64_t codes[8];
    k = fx.tk;
    k.head_dim = D - 1;
    EXPECT_ERR(hashevict_hash(fx.e, 0, &k, codes, 8), HASHEVICT_ERR_SHAPE, "x");
    TEARDOWN();
}

CASE(shape_n_heads_mismatch) {
    SETUP(HASHEVICT_MODE_SLOT, 5);
    int32_t pos = fx.next;
    hashevict_tensor k = fx.tk, q = fx.tq;
    k.n_heads = KV - 1;
    EXPECT_ERR(PLACE(&fx, &fx.tq, &k, &pos, 1), HASHEVICT_ERR_SHAPE, "k");
    q.n_heads = QH - 1;
    EXPECT_ERR(PLACE(&fx, &q, &fx.tk, &pos, 1), HASHEVICT_ERR_SHAPE, "q");
    /* q and k swapped */
    EXPECT_ERR(PLACE(&fx, &fx.tk, &fx.tq, &pos, 1), HASHEVICT_ERR_SHAPE, "heads");
    TEARDOWN();
}

CASE(shape_n_tokens_mismatch) {
    SETUP(HASHEVICT_MODE_SLOT, 5);
    int32_t pos[2] = {fx.next, fx.next + 1};
    hashevict_tensor k = fx.tk;
    k.n_tokens = 2; /* the call says 1 */
    static float big[2 * QH * D];
    k.data = big;
    EXPECT_ERR(PLACE(&fx, &fx.tq, &k, pos, 1), HASHEVICT_ERR_SHAPE, "k");
    /* the call says 2, q and k hold 1 */
    EXPECT_ERR(PLACE(&fx, &fx.tq, &fx.tk, pos, 2), HASHEVICT_ERR_SHAPE, "tokens");
    k.n_tokens = 0;
    EXPECT_ERR(PLACE(&fx, &fx.tq, &k, pos, 1), HASHEVICT_ERR_SHAPE, "k");
    TEARDOWN();
}

CASE(bad_strides) {
    SETUP(HASHEVICT_MODE_SLOT, 5);
    int32_t pos = fx.next;
    const struct {
        int64_t head, token;
    } bad[] = {{0, KV * D * 4}, {D * 4, 0}, {-D * 4, KV * D * 4}, {D * 4, -KV * D * 4},
               {D * 4 + 2, KV * D * 4 + 4}, {D * 4, KV * D * 4 + 1}, {D * 4 + 3, KV * D * 4}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hashevict_tensor k = fx.tk;
        k.head_stride = bad[i].head;
        k.token_stride = bad[i].token;
        EXPECT_ERR(PLACE(&fx, &fx.tq, &k, &pos, 1), HASHEVICT_ERR_SHAPE, "stride");
        hashevict_tensor q = fx.tq;
        q.head_stride = bad[i].head;
        q.token_stride = bad[i].token;
        EXPECT_ERR(PLACE(&fx, &q, &fx.tk, &pos, 1), HASHEVICT_ERR_SHAPE, "stride");
    }
    /* f16: odd strides are not multiples of 2 */
    static uint16_t h[KV * D];
    hashevict_tensor k16 = tu_tensor(h, HASHEVICT_DTYPE_F16, 1, KV, D);
    k16.head_stride = D * 2 + 1;
    EXPECT_ERR(PLACE(&fx, &fx.tq, &k16, &pos, 1), HASHEVICT_ERR_SHAPE, "stride");
    TEARDOWN();
}

/* NaN or Inf at one element of q or k, in each dtype. */
static void nonfinite_case(int dtype, int in_q, uint32_t bits, const char *what) {
    SETUP(HASHEVICT_MODE_SLOT, 5);
    int32_t pos = fx.next;
    int heads = in_q ? QH : KV;
    float *src = in_q ? fx.q : fx.k;
    fx_fill(&fx);
    for (int i = 0; i < heads * D; i++) src[i] = tu_small(&fx.r); /* representable in every dtype */
    static unsigned char buf[QH * D * 4];
    hashevict_tensor t = tu_tensor(buf, dtype, 1, heads, D);
    tu_store(buf, &t, src);
    int at = (heads - 1) * D + 5; /* last head, element 5 */
    if (dtype == HASHEVICT_DTYPE_F32)
        memcpy(buf + at * 4, &bits, 4);
    else {
        uint16_t b = (uint16_t)bits;
        memcpy(buf + at * 2, &b, 2);
    }
    hashevict_tensor q = fx.tq, k = fx.tk;
    if (in_q) q = t;
    else k = t;
    char text[96];
    snprintf(text, sizeof text, "place with %s in %s", what, in_q ? "q" : "k");
    hashevict_status st = PLACE(&fx, &q, &k, &pos, 1);
    expect_err_at(__FILE__, __LINE__, text, st, HASHEVICT_ERR_NONFINITE, "NaN");
    uint64_t codes[8];
    st = hashevict_hash(fx.e, 0, &t, codes, 8);
    snprintf(text, sizeof text, "hash with %s", what);
    expect_err_at(__FILE__, __LINE__, text, st, HASHEVICT_ERR_NONFINITE, "Inf");
    TEARDOWN();
}

CASE(nonfinite_f32) {
    const struct {
        uint32_t bits;
        const char *name;
    } v[] = {{0x7fc00000u, "f32 NaN"}, {0x7f800000u, "f32 +Inf"}, {0xff800000u, "f32 -Inf"},
             {0xffc00001u, "f32 -NaN"}, {0x7f800001u, "f32 signalling NaN"}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        nonfinite_case(HASHEVICT_DTYPE_F32, 1, v[i].bits, v[i].name);
        nonfinite_case(HASHEVICT_DTYPE_F32, 0, v[i].bits, v[i].name);
    }
}

CASE(nonfinite_f16) {
    const struct {
        uint32_t bits;
        const char *name;
    } v[] = {{0x7c00, "f16 +Inf"}, {0xfc00, "f16 -Inf"}, {0x7e00, "f16 NaN"}, {0x7c01, "f16 sNaN"}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        nonfinite_case(HASHEVICT_DTYPE_F16, 1, v[i].bits, v[i].name);
        nonfinite_case(HASHEVICT_DTYPE_F16, 0, v[i].bits, v[i].name);
    }
}

CASE(nonfinite_bf16) {
    const struct {
        uint32_t bits;
        const char *name;
    } v[] = {{0x7f80, "bf16 +Inf"}, {0xff80, "bf16 -Inf"}, {0x7fc0, "bf16 NaN"}, {0x7f81, "bf16 sNaN"}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        nonfinite_case(HASHEVICT_DTYPE_BF16, 1, v[i].bits, v[i].name);
        nonfinite_case(HASHEVICT_DTYPE_BF16, 0, v[i].bits, v[i].name);
    }
}

CASE(nonfinite_token_mode) {
    SETUP(HASHEVICT_MODE_TOKEN, 5);
    int32_t pos = fx.next;
    float k[KV * D];
    memcpy(k, fx.k, sizeof k);
    k[3] = NAN;
    hashevict_tensor tk = tu_tensor(k, HASHEVICT_DTYPE_F32, 1, KV, D);
    EXPECT_ERR(hashevict_observe(fx.e, 0, 0, &fx.tq, &tk, &pos, 1), HASHEVICT_ERR_NONFINITE, "NaN");
    TEARDOWN();
}

/* A q the policy never reads (HASH with PROBE_KEY, the baselines but ORACLE)
 * is not input either: its values, NaN included, are not looked at. Its
 * descriptor is still checked, since a wrong one is a caller's bug whether or
 * not the values are read. ORACLE reads q whatever the probe: NaN refused. */
CASE(nonfinite_q_not_read) {
    const struct {
        int policy, probe;
    } v[] = {{HASHEVICT_POLICY_HASH, HASHEVICT_PROBE_KEY},
             {HASHEVICT_POLICY_SINK_RECENT, HASHEVICT_PROBE_QUERY},
             {HASHEVICT_POLICY_KNORM, HASHEVICT_PROBE_QUERY},
             {HASHEVICT_POLICY_RANDOM, HASHEVICT_PROBE_KEY},
             {HASHEVICT_POLICY_ORACLE, HASHEVICT_PROBE_KEY}};
    static float q[QH * D], k[KV * D];
    tu_rng r = tu_rng_make(12, 0, 0);
    for (int i = 0; i < KV * D; i++) k[i] = tu_gauss(&r);
    for (int i = 0; i < QH * D; i++) q[i] = NAN;
    hashevict_tensor tq = tu_tensor(q, HASHEVICT_DTYPE_F32, 1, QH, D);
    hashevict_tensor tk = tu_tensor(k, HASHEVICT_DTYPE_F32, 1, KV, D);
    for (int mode = HASHEVICT_MODE_SLOT; mode <= HASHEVICT_MODE_TOKEN; mode++) {
        for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
            hashevict_params p = good_params();
            p.mode = mode;
            p.policy = v[i].policy;
            p.probe = v[i].probe;
            hashevict_engine *e = NULL;
            if (!CHECK_ST(hashevict_engine_create(&p, &e), HASHEVICT_OK)) return;
            CHECK_ST(hashevict_seq_add(e, 0), HASHEVICT_OK);
            int32_t pos = 0, slots[KV];
            hashevict_status st;
            if (v[i].policy != HASHEVICT_POLICY_ORACLE) {
                hashevict_tensor bad = tq;
                bad.n_heads = QH - 1;
                st = mode == HASHEVICT_MODE_SLOT ? hashevict_place(e, 0, 0, &bad, &tk, &pos, 1, slots, NULL)
                                                 : hashevict_observe(e, 0, 0, &bad, &tk, &pos, 1);
                EXPECT_ERR(st, HASHEVICT_ERR_SHAPE, "q");
            }
            st = mode == HASHEVICT_MODE_SLOT ? hashevict_place(e, 0, 0, &tq, &tk, &pos, 1, slots, NULL)
                                             : hashevict_observe(e, 0, 0, &tq, &tk, &pos, 1);
            if (v[i].policy == HASHEVICT_POLICY_ORACLE)
                EXPECT_ERR(st, HASHEVICT_ERR_NONFINITE, "q row");
            else
                CHECK(st == HASHEVICT_OK, "mode %d policy %d probe %d: a NaN in a q never read gave %s (%s), want OK",
                      mode, v[i].policy, v[i].probe, hashevict_status_string(st), hashevict_last_error());
            hashevict_engine_free(e);
        }
    }
}

/* NaN in the gaps between rows (padding) is not input: accepted. */
CASE(nonfinite_in_padding_is_fine) {
    SETUP(HASHEVICT_MODE_SLOT, 5);
    int32_t pos = fx.next;
    static float padded[KV * (D + 4)];
    for (size_t i = 0; i < sizeof padded / sizeof padded[0]; i++) padded[i] = NAN;
    for (int h = 0; h < KV; h++)
        for (int i = 0; i < D; i++) padded[h * (D + 4) + i] = fx.k[h * D + i];
    hashevict_tensor k = tu_tensor(padded, HASHEVICT_DTYPE_F32, 1, KV, D);
    k.head_stride = (D + 4) * 4;
    k.token_stride = KV * (D + 4) * 4;
    CHECK_ST(hashevict_place(fx.e, 0, 0, &fx.tq, &k, &pos, 1, fx.slots, fx.ev), HASHEVICT_OK);
    CHECK_ST(hashevict_place(fx.e, 0, 1, &fx.tq, &k, &pos, 1, fx.slots, fx.ev), HASHEVICT_OK);
    fx.next++;
    snap(&fx, 0, &before);
    TEARDOWN();
}

CASE(positions_not_increasing) {
    SETUP(HASHEVICT_MODE_SLOT, 5); /* positions 0..4 placed */
    static float q2[2 * QH * D], k2[2 * KV * D];
    hashevict_tensor q = tu_tensor(q2, HASHEVICT_DTYPE_F32, 2, QH, D);
    hashevict_tensor k = tu_tensor(k2, HASHEVICT_DTYPE_F32, 2, KV, D);
    int32_t same[2] = {10, 10}, down[2] = {12, 11};
    EXPECT_ERR(PLACE(&fx, &q, &k, same, 2), HASHEVICT_ERR_POSITION, "position");
    EXPECT_ERR(PLACE(&fx, &q, &k, down, 2), HASHEVICT_ERR_POSITION, "position");
    TEARDOWN();
}

CASE(positions_negative) {
    SETUP(HASHEVICT_MODE_SLOT, 0);
    int32_t neg = -1, minv = INT32_MIN;
    EXPECT_ERR(PLACE(&fx, &fx.tq, &fx.tk, &neg, 1), HASHEVICT_ERR_POSITION, "negative");
    EXPECT_ERR(PLACE(&fx, &fx.tq, &fx.tk, &minv, 1), HASHEVICT_ERR_POSITION, "negative");
    TEARDOWN();
}

CASE(positions_repeated_or_before_last) {
    SETUP(HASHEVICT_MODE_SLOT, 5); /* last placed: 4 */
    int32_t again = 4, earlier = 2, zero = 0;
    EXPECT_ERR(PLACE(&fx, &fx.tq, &fx.tk, &again, 1), HASHEVICT_ERR_POSITION, "position");
    EXPECT_ERR(PLACE(&fx, &fx.tq, &fx.tk, &earlier, 1), HASHEVICT_ERR_POSITION, "position");
    EXPECT_ERR(PLACE(&fx, &fx.tq, &fx.tk, &zero, 1), HASHEVICT_ERR_POSITION, "position");
    /* per layer: layer 1 is at 4 too; a position placed in layer 0 only is
     * still "after the last" for layer 1 */
    int32_t nxt = fx.next;
    CHECK_ST(PLACE(&fx, &fx.tq, &fx.tk, &nxt, 1), HASHEVICT_OK);
    EXPECT_ERR(PLACE(&fx, &fx.tq, &fx.tk, &nxt, 1), HASHEVICT_ERR_POSITION, "position");
    CHECK_ST(hashevict_place(fx.e, 0, 1, &fx.tq, &fx.tk, &nxt, 1, fx.slots, fx.ev), HASHEVICT_OK);
    fx.next++;
    snap(&fx, 0, &before);
    TEARDOWN();
}

CASE(positions_token_mode) {
    SETUP(HASHEVICT_MODE_TOKEN, 5);
    int32_t again = 4, neg = -2;
    EXPECT_ERR(hashevict_observe(fx.e, 0, 0, &fx.tq, &fx.tk, &again, 1), HASHEVICT_ERR_POSITION, "position");
    EXPECT_ERR(hashevict_observe(fx.e, 0, 1, &fx.tq, &fx.tk, &neg, 1), HASHEVICT_ERR_POSITION, "negative");
    TEARDOWN();
}

CASE(wrong_mode_slot_engine) {
    SETUP(HASHEVICT_MODE_SLOT, 5);
    int32_t pos = fx.next, buf[BUDGET], cnt;
    EXPECT_ERR(hashevict_observe(fx.e, 0, 0, &fx.tq, &fx.tk, &pos, 1), HASHEVICT_ERR_WRONG_MODE, "mode");
    EXPECT_ERR(hashevict_evictions(fx.e, 0, buf, BUDGET, &cnt), HASHEVICT_ERR_WRONG_MODE, "mode");
    EXPECT_ERR(hashevict_token_positions(fx.e, 0, buf, BUDGET, &cnt), HASHEVICT_ERR_WRONG_MODE, "mode");
    TEARDOWN();
}

CASE(wrong_mode_token_engine) {
    SETUP(HASHEVICT_MODE_TOKEN, 5);
    int32_t pos = fx.next, buf[BUDGET];
    EXPECT_ERR(PLACE(&fx, &fx.tq, &fx.tk, &pos, 1), HASHEVICT_ERR_WRONG_MODE, "mode");
    EXPECT_ERR(hashevict_slot_positions(fx.e, 0, 0, 0, buf, BUDGET), HASHEVICT_ERR_WRONG_MODE, "mode");
    TEARDOWN();
}

CASE(chunk_too_large) {
    SETUP(HASHEVICT_MODE_SLOT, BUDGET); /* full: positions 0..15 */
    /* n tokens from 16: t = 15+n, evictable [2, 12+n) ∩ [0, 15] */
    enum { N = BUDGET - SINK + 1 };
    static float q[N * QH * D], k[N * KV * D];
    int32_t pos[N];
    for (int i = 0; i < N; i++) pos[i] = fx.next + i;
    hashevict_tensor tq = tu_tensor(q, HASHEVICT_DTYPE_F32, N, QH, D);
    hashevict_tensor tk = tu_tensor(k, HASHEVICT_DTYPE_F32, N, KV, D);
    static int32_t slots[N * KV], ev[N * KV];
    for (int i = 0; i < N * KV; i++) slots[i] = ev[i] = -42;
    EXPECT_ERR(hashevict_place(fx.e, 0, 0, &tq, &tk, pos, N, slots, ev), HASHEVICT_ERR_CHUNK_TOO_LARGE, "chunk");
    int untouched = 1;
    for (int i = 0; i < N * KV; i++) untouched &= slots[i] == -42;
    CHECK(untouched,
                "a refused chunk wrote to out_slots (harmless, but \"nothing is changed\")");
    UNCHANGED(&fx, &before);
    /* one token fewer fits exactly */
    tq.n_tokens = tk.n_tokens = N - 1;
    CHECK_ST(hashevict_place(fx.e, 0, 0, &tq, &tk, pos, N - 1, slots, ev), HASHEVICT_OK);
    CHECK_ST(hashevict_seq_reset(fx.e, 0), HASHEVICT_OK);
    fx.next = 0;
    snap(&fx, 0, &before);
    TEARDOWN();
}

CASE(buffer_too_small_slot_positions) {
    SETUP(HASHEVICT_MODE_SLOT, 5);
    int32_t buf[BUDGET];
    EXPECT_ERR(hashevict_slot_positions(fx.e, 0, 0, 0, buf, BUDGET - 1), HASHEVICT_ERR_BUFFER_TOO_SMALL, "16");
    EXPECT_ERR(hashevict_slot_positions(fx.e, 0, 0, 0, buf, 0), HASHEVICT_ERR_BUFFER_TOO_SMALL, "16");
    TEARDOWN();
}

CASE(buffer_too_small_projection) {
    SETUP(HASHEVICT_MODE_SLOT, 5);
    static float proj[16 * D];
    char need[16];
    snprintf(need, sizeof need, "%d", 16 * D);
    EXPECT_ERR(hashevict_projection(fx.e, 0, proj, 16 * D - 1), HASHEVICT_ERR_BUFFER_TOO_SMALL, need);
    EXPECT_ERR(hashevict_projection(fx.e, 0, proj, 0), HASHEVICT_ERR_BUFFER_TOO_SMALL, need);
    TEARDOWN();
}

CASE(buffer_too_small_hash) {
    SETUP(HASHEVICT_MODE_SLOT, 5);
    uint64_t codes[8];
    /* KV rows of 16 bits: KV words needed */
    EXPECT_ERR(hashevict_hash(fx.e, 0, &fx.tk, codes, KV - 1), HASHEVICT_ERR_BUFFER_TOO_SMALL, "2");
    TEARDOWN();
}

CASE(buffer_too_small_token_positions) {
    SETUP(HASHEVICT_MODE_TOKEN, 5);
    int32_t buf[BUDGET], cnt = -1;
    buf[0] = -99;
    EXPECT_ERR(hashevict_token_positions(fx.e, 0, buf, 4, &cnt), HASHEVICT_ERR_BUFFER_TOO_SMALL, "5");
    CHECK(cnt == 5, "token_positions: out_count %d, want the 5 held", cnt);
    CHECK(buf[0] == -99, "token_positions copied into a buffer that is too small");
    TEARDOWN();
}

/* hashevict_seq_state_save(e, s, NULL, 0, &w) asks for the size: it is
 * BUFFER_TOO_SMALL like any buffer that cannot hold the state, with the size
 * in *w (equal to hashevict_seq_state_size). A NULL buffer with a capacity
 * is a caller's bug. */
CASE(state_save_size_query) {
    SETUP(HASHEVICT_MODE_SLOT, 5);
    size_t need = 0, w = 0;
    CHECK_ST(hashevict_seq_state_size(fx.e, 0, &need), HASHEVICT_OK);
    char want[32];
    snprintf(want, sizeof want, "%zu", need);
    EXPECT_ERR(hashevict_seq_state_save(fx.e, 0, NULL, 0, &w), HASHEVICT_ERR_BUFFER_TOO_SMALL, want);
    CHECK(w == need && need > 0, "state_save(NULL, 0): *out_written = %zu, want the state size %zu", w, need);
    EXPECT_ERR(hashevict_seq_state_save(fx.e, 0, NULL, 0, NULL), HASHEVICT_ERR_BUFFER_TOO_SMALL, want);
    w = 7;
    EXPECT_ERR(hashevict_seq_state_save(fx.e, 0, NULL, need, &w), HASHEVICT_ERR_INVALID_ARGUMENT, "buf is NULL");
    CHECK(w == 7, "state_save(NULL, %zu) wrote *out_written = %zu", need, w);
    TEARDOWN();
}

CASE(memory_cap_token_mode_growth) {
    /* token mode grows its tables as positions arrive; with a cap of one
     * sequence at full budget the growth beyond it must be refused cleanly
     * (MEMORY_CAP, state unchanged) or absorbed — never a crash. */
    hashevict_params p = tu_params(HASHEVICT_MODE_TOKEN, 1, 1, 1, 8, 16, 8, 1, 1);
    hashevict_engine *e = NULL;
    p.memory_cap_bytes = 8192;
    if (!CHECK_ST(hashevict_engine_create(&p, &e), HASHEVICT_OK)) return;
    CHECK_ST(hashevict_seq_add(e, 0), HASHEVICT_OK);
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    hashevict_tensor t = tu_tensor(x, HASHEVICT_DTYPE_F32, 1, 1, 8);
    int refused = 0;
    for (int32_t pos = 0; pos < 2000 && !refused; pos++) {
        hashevict_status st = hashevict_observe(e, 0, 0, &t, &t, &pos, 1);
        if (st == HASHEVICT_ERR_MEMORY_CAP) {
            refused = 1;
            CHECK(strlen(hashevict_last_error()) > 0, "MEMORY_CAP without a message");
        } else {
            CHECK_ST(st, HASHEVICT_OK);
        }
    }
    CHECK(refused, "2000 positions never evicted did not hit an 8192-byte cap");
    hashevict_engine_free(e);
}

/* create accepts a cap once one sequence at full budget fits, as token mode
 * accounts it (budget + 1 positions: a step adds before it evicts), so a
 * token-mode sequence evicting after every step must never be refused. */
static hashevict_status token_cap_run(hashevict_params p, int32_t steps, int32_t *at) {
    hashevict_engine *e = NULL;
    hashevict_status st = hashevict_engine_create(&p, &e);
    if (st != HASHEVICT_OK) return st;
    st = hashevict_seq_add(e, 0);
    float x[8] = {1, -2, 3, -4, 5, -6, 7, -8};
    hashevict_tensor t = tu_tensor(x, HASHEVICT_DTYPE_F32, 1, 1, 8);
    for (int32_t pos = 0; pos < steps && st == HASHEVICT_OK; pos++) {
        *at = pos;
        st = hashevict_observe(e, 0, 0, &t, &t, &pos, 1);
        int32_t out[4], cnt = 0;
        if (st == HASHEVICT_OK) st = hashevict_evictions(e, 0, out, 4, &cnt);
    }
    hashevict_engine_free(e);
    return st;
}

CASE(memory_cap_token_mode_within_budget) {
    enum { TB = 100 };
    hashevict_params p = tu_params(HASHEVICT_MODE_TOKEN, 1, 1, 1, 8, 16, TB, 1, 1);
    /* find the smallest cap create accepts */
    uint64_t lo = 1, hi = 1 << 20;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        p.memory_cap_bytes = mid;
        hashevict_engine *e = NULL;
        hashevict_status st = hashevict_engine_create(&p, &e);
        hashevict_engine_free(e);
        if (st == HASHEVICT_OK) hi = mid; else lo = mid + 1;
    }
    p.memory_cap_bytes = lo;
    int32_t at = -1;
    hashevict_status st = token_cap_run(p, 3 * TB, &at);
    CHECK(st == HASHEVICT_OK, "token mode, budget %d, memory_cap_bytes %llu (the least create accepts): position %d got %s: %s",
          TB, (unsigned long long)lo, at, hashevict_status_string(st), st ? hashevict_last_error() : "");
    /* without evicting, the same cap must stop growth with MEMORY_CAP */
    hashevict_engine *e = NULL;
    if (!CHECK_ST(hashevict_engine_create(&p, &e), HASHEVICT_OK)) return;
    CHECK_ST(hashevict_seq_add(e, 0), HASHEVICT_OK);
    float x[8] = {1, -2, 3, -4, 5, -6, 7, -8};
    hashevict_tensor t = tu_tensor(x, HASHEVICT_DTYPE_F32, 1, 1, 8);
    st = HASHEVICT_OK;
    int32_t pos = 0;
    for (; pos < 4 * TB && st == HASHEVICT_OK; pos++) st = hashevict_observe(e, 0, 0, &t, &t, &pos, 1);
    CHECK(st == HASHEVICT_ERR_MEMORY_CAP, "never evicting under a cap: got %s after %d positions", hashevict_status_string(st), pos);
    hashevict_engine_free(e);
}

CASE(last_error_persists_after_success) {
    SETUP(HASHEVICT_MODE_SLOT, 5);
    EXPECT_ERR(hashevict_seq_add(fx.e, 0), HASHEVICT_ERR_SEQUENCE_EXISTS, "exists");
    char saved[256];
    snprintf(saved, sizeof saved, "%s", hashevict_last_error());
    FX_WORKS(&fx);
    CHECK(strcmp(hashevict_last_error(), saved) == 0,
          "last_error after a successful call is \"%s\", want the last failure's \"%s\"", hashevict_last_error(),
          saved);
    snap(&fx, 0, &before);
    TEARDOWN();
}

/* ======================================================================== */
/* the panic path                                                            */
/* ======================================================================== */

/* The checks on an engine whose hashevict_place panics. Returns 0 when the
 * injected panic did not happen (place succeeded). */
static int poisoned_engine_checks(fixture *fx) {
    int32_t pos = 0, buf[BUDGET];
    fx_fill(fx);
    hashevict_status st = PLACE(fx, &fx->tq, &fx->tk, &pos, 1);
    if (st == HASHEVICT_OK) return 0;
    expect_err_at(__FILE__, __LINE__, "place with HASHEVICT_TEST_PANIC=hashevict_place", st, HASHEVICT_ERR_INTERNAL,
                  "internal");
    /* poisoned: every later call but free returns INTERNAL */
    EXPECT_ERR(PLACE(fx, &fx->tq, &fx->tk, &pos, 1), HASHEVICT_ERR_INTERNAL, "poison");
    EXPECT_ERR(hashevict_seq_add(fx->e, 1), HASHEVICT_ERR_INTERNAL, "poison");
    EXPECT_ERR(hashevict_slot_positions(fx->e, 0, 0, 0, buf, BUDGET), HASHEVICT_ERR_INTERNAL, "poison");
    hashevict_stats sts;
    memset(&sts, 0, sizeof sts);
    sts.size = sizeof sts;
    EXPECT_ERR(hashevict_stats_get(fx->e, -1, &sts), HASHEVICT_ERR_INTERNAL, "poison");
    hashevict_params p;
    memset(&p, 0, sizeof p);
    p.size = sizeof p;
    EXPECT_ERR(hashevict_engine_params(fx->e, &p), HASHEVICT_ERR_INTERNAL, "poison");
    hashevict_engine_free(fx->e);
    EXPECT_ERR(hashevict_seq_add(fx->e, 1), HASHEVICT_ERR_INVALID_HANDLE, "engine");
    fx->e = NULL;
    return 1;
}

/* After unsetenv, a new engine works normally. */
static void fresh_engine_works(void) {
    fixture fresh;
    if (fx_init(&fresh, HASHEVICT_MODE_SLOT, 0)) {
        int32_t pos = 0;
        fx_fill(&fresh);
        hashevict_status st = PLACE(&fresh, &fresh.tq, &fresh.tk, &pos, 1);
        CHECK_ST(st, HASHEVICT_OK);
        if (st == HASHEVICT_OK) {
            CHECK_ST(hashevict_place(fresh.e, 0, 1, &fresh.tq, &fresh.tk, &pos, 1, fresh.slots, fresh.ev),
                     HASHEVICT_OK);
            fresh.next = 1;
            FX_WORKS(&fresh);
        }
    }
    fx_free(&fresh);
}

CASE(panic_poisons_engine) {
    /* The library reads the variable through C's getenv at create, so a
     * setenv now takes effect. */
    setenv("HASHEVICT_TEST_PANIC", "hashevict_place", 1);
    fixture fx;
    int ok = fx_init(&fx, HASHEVICT_MODE_SLOT, 0);
    unsetenv("HASHEVICT_TEST_PANIC");
    if (!ok) {
        fx_free(&fx);
        return;
    }
    int fired = poisoned_engine_checks(&fx);
    fx_free(&fx);
    CHECK(fired, "setenv(\"HASHEVICT_TEST_PANIC\", \"hashevict_place\") before create: place did not panic");
    fresh_engine_works();
}

/* ======================================================================== */

typedef struct {
    const char *name;
    void (*fn)(void);
} test_case;

#define C(x) {#x, x}
static const test_case cases[] = {
    C(create_null_params),
    C(create_null_out),
    C(create_size_too_small),
    C(params_head_dim),
    C(params_n_layers),
    C(params_n_kv_heads),
    C(params_q_not_multiple),
    C(params_budget_too_small),
    C(params_hash_bits),
    C(params_negative_sink_recent),
    C(params_enums),
    C(params_max_seqs),
    C(params_decay),
    C(memory_cap_at_create),
    C(memory_cap_at_seq_add),
    C(null_engine),
    C(freed_handle),
    C(foreign_handle),
    C(layer_out_of_range),
    C(layer_out_of_range_token_mode),
    C(kv_head_out_of_range),
    C(sequence_out_of_range),
    C(sequence_out_of_range_token_mode),
    C(unknown_sequence),
    C(removed_sequence),
    C(unknown_sequence_token_mode),
    C(seq_add_existing),
    C(fork_onto_existing),
    C(n_tokens_zero_or_negative),
    C(n_tokens_zero_token_mode),
    C(null_positions),
    C(null_k),
    C(null_k_token_mode),
    C(null_q_when_needed),
    C(null_q_other_policies),
    C(null_out_slots),
    C(null_tensor_data),
    C(null_outputs_of_queries),
    C(null_outputs_token_mode),
    C(unsupported_dtype),
    C(cuda_device),
    C(stream_on_host_tensor),
    C(stream_on_host_tensor_token_mode),
    C(shape_head_dim_mismatch),
    C(shape_n_heads_mismatch),
    C(shape_n_tokens_mismatch),
    C(bad_strides),
    C(nonfinite_f32),
    C(nonfinite_f16),
    C(nonfinite_bf16),
    C(nonfinite_token_mode),
    C(nonfinite_q_not_read),
    C(nonfinite_in_padding_is_fine),
    C(positions_not_increasing),
    C(positions_negative),
    C(positions_repeated_or_before_last),
    C(positions_token_mode),
    C(wrong_mode_slot_engine),
    C(wrong_mode_token_engine),
    C(chunk_too_large),
    C(buffer_too_small_slot_positions),
    C(buffer_too_small_projection),
    C(buffer_too_small_hash),
    C(buffer_too_small_token_positions),
    C(state_save_size_query),
    C(memory_cap_token_mode_growth),
    C(memory_cap_token_mode_within_budget),
    C(last_error_persists_after_success),
    C(panic_poisons_engine),
};

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    unsetenv("HASHEVICT_TEST_PANIC");
    const char *table_path = getenv("HASHEVICT_BAD_INPUT_TABLE");
    if (table_path && *table_path) {
        table = fopen(table_path, "w");
        if (!table) {
            perror(table_path);
            return 1;
        }
        fputs("| case | call | status | message (hashevict_last_error) |\n|---|---|---|---|\n", table);
    }
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (argc > 1 && strcmp(argv[1], cases[i].name) != 0) continue;
        current_case = cases[i].name;
        int before = check_failures;
        cases[i].fn();
        printf("%-36s %s\n", cases[i].name, check_failures == before ? "ok" : "FAILED");
    }
    if (table) fclose(table);
    return check_report("test_bad_input");
}
