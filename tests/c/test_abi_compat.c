/*
 * test_abi_compat.c — a binary built against a 0.4 header keeps working
 * with this library (ABI 1): it calls the symbol hashevict_default_params,
 * receives the 0.4 layout of hashevict_params by value, and creates engines
 * from it that decide exactly as engines created from this header's struct.
 *
 * The 0.4 header's view is declared here by hand, as an old binary has it
 * compiled in: the struct up to memory_cap_bytes and the symbol returning it.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "testutil.h"

typedef struct params_v04 {
    uint32_t size;
    int32_t mode, policy, probe, score, n_layers, n_kv_heads, n_q_heads, head_dim,
        hash_bits, budget, n_sink, n_recent, max_seqs;
    float decay;
    uint64_t seed;
    uint64_t memory_cap_bytes;
} params_v04;

#undef hashevict_default_params
params_v04 hashevict_default_params(void);

enum { LAYERS = 2, KV = 2, QH = 4, DIM = 16, BUDGET = 24, STEPS = 80 };

/* Runs STEPS single-token slot-mode steps on a fresh engine from params and
 * records every slot chosen and every position evicted. */
static int run(const hashevict_params *params, int32_t *slots, int32_t *evicted) {
    hashevict_engine *e = NULL;
    if (!CHECK_ST(hashevict_engine_create(params, &e), HASHEVICT_OK)) return 0;
    int ok = CHECK_ST(hashevict_seq_add(e, 0), HASHEVICT_OK);
    tu_rng r = tu_rng_make(7, 4, 0);
    float q[QH * DIM], k[KV * DIM];
    for (int32_t t = 0; t < STEPS && ok; t++) {
        for (int i = 0; i < QH * DIM; i++) q[i] = tu_gauss(&r);
        for (int i = 0; i < KV * DIM; i++) k[i] = tu_gauss(&r);
        hashevict_tensor tq = tu_tensor(q, HASHEVICT_DTYPE_F32, 1, QH, DIM);
        hashevict_tensor tk = tu_tensor(k, HASHEVICT_DTYPE_F32, 1, KV, DIM);
        for (int32_t l = 0; l < LAYERS && ok; l++) {
            int32_t *s = slots + ((size_t)t * LAYERS + l) * KV;
            int32_t *ev = evicted + ((size_t)t * LAYERS + l) * KV;
            ok = CHECK_ST(hashevict_place(e, 0, l, &tq, &tk, &t, 1, s, ev), HASHEVICT_OK);
        }
    }
    hashevict_engine_free(e);
    return ok;
}

int main(void) {
    params_v04 old = hashevict_default_params();
    CHECK(old.size == sizeof(params_v04),
          "the symbol hashevict_default_params returned size %u, want the 0.4 layout's %zu",
          old.size, sizeof(params_v04));

    hashevict_params cur = hashevict_default_params_v2();
    CHECK(cur.size == sizeof(hashevict_params), "hashevict_default_params_v2 returned size %u, want %zu",
          cur.size, sizeof(hashevict_params));
    CHECK(sizeof(params_v04) < sizeof(hashevict_params), "the 0.4 layout must be a strict prefix");
    /* Every default the old layout carries is this header's default. */
    CHECK(memcmp((const char *)&old + sizeof old.size, (const char *)&cur + sizeof cur.size,
                 sizeof(params_v04) - sizeof old.size) == 0,
          "the 0.4 layout's defaults differ from this header's");
    CHECK(cur.estimate == HASHEVICT_ESTIMATE_DISTANCE && cur.redundancy == 0.0f,
          "the fields new in 0.5.0 must default to the paper's policy");

    old.n_layers = cur.n_layers = LAYERS;
    old.n_kv_heads = cur.n_kv_heads = KV;
    old.n_q_heads = cur.n_q_heads = QH;
    old.head_dim = cur.head_dim = DIM;
    old.budget = cur.budget = BUDGET;
    old.seed = cur.seed = 11;

    /* The old struct lives in a buffer whose bytes past it are not zero, as
     * stack garbage after an old binary's struct would be: the library must
     * read only old.size bytes. */
    union {
        params_v04 p;
        unsigned char bytes[sizeof(hashevict_params) + 16];
    } buf;
    memset(buf.bytes, 0xA5, sizeof buf.bytes);
    buf.p = old;

    enum { N = STEPS * LAYERS * KV };
    static int32_t slots_old[N], ev_old[N], slots_cur[N], ev_cur[N];
    int ok = run((const hashevict_params *)(const void *)&buf.p, slots_old, ev_old);
    ok = run(&cur, slots_cur, ev_cur) && ok;
    if (ok) {
        CHECK(memcmp(slots_old, slots_cur, sizeof slots_old) == 0 &&
                  memcmp(ev_old, ev_cur, sizeof ev_old) == 0,
              "an engine from the 0.4 layout decided differently from one from this header's");
        int evictions = 0;
        for (int i = 0; i < N; i++) evictions += ev_cur[i] >= 0;
        CHECK(evictions > 0, "the run must evict (budget %d, %d steps) for the comparison to mean anything",
              BUDGET, STEPS);
    }
    return check_report("test_abi_compat");
}
