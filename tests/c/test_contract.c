/*
 * test_contract.c — checks libhashevict against the semantics written in
 * include/hashevict.h (and docs/algorithm.md): versions, defaults, status
 * names, slot-mode placement against an independent model kept in this
 * file, every dtype and layout, chunks, token mode, sequences and counters.
 *
 * The model: for every (layer, KV head) the test mirrors which position each
 * slot holds, the code of its key (from hashevict_hash, itself checked
 * against a recomputation from hashevict_projection in the documented lane
 * order) and its score; before each call it predicts the slot of every new
 * token and after the call it compares out_slots, out_evicted and
 * hashevict_slot_positions with the prediction.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "hashevict.h"
#include "testutil.h"

#define MAXH 16 /* most KV heads or query heads any test uses */

enum { LAYOUT_CONTIG = 0, LAYOUT_HEAD_MAJOR = 1, LAYOUT_UNALIGNED = 2 };
static const char *layout_name[] = {"contiguous", "head-major padded", "unaligned padded"};
static const char *dtype_name[] = {"f32", "f16", "bf16"};
static const char *policy_name[] = {"hash", "sink_recent", "knorm", "random", "oracle"};
static const char *score_name[] = {"instant", "accumulated", "decayed"};

/* ======================================================================== */
/* Inputs in any dtype and layout                                           */
/* ======================================================================== */

typedef struct {
    unsigned char *buf;
    hashevict_tensor t;
} tensor_buf;

/* Builds a descriptor over a fresh buffer holding x ([n][heads][dim] floats)
 * in the given dtype and layout. */
static tensor_buf make_input(const float *x, int n, int heads, int dim, int dtype, int layout) {
    tensor_buf tb;
    int64_t es = (int64_t)tu_dtype_size(dtype);
    int64_t offset = 0;
    tb.t = tu_tensor(NULL, dtype, n, heads, dim);
    if (layout == LAYOUT_HEAD_MAJOR) {
        /* [heads][n][dim + 3]: tokens are the inner dimension. */
        tb.t.token_stride = (dim + 3) * es;
        tb.t.head_stride = (int64_t)n * (dim + 3) * es;
    } else if (layout == LAYOUT_UNALIGNED) {
        /* Padded rows and tokens, and a base address that is not aligned to
         * the element size. */
        tb.t.head_stride = (dim + 1) * es;
        tb.t.token_stride = ((int64_t)heads * (dim + 1) + 5) * es;
        offset = 1;
    }
    int64_t extent = (int64_t)(n - 1) * tb.t.token_stride + (int64_t)(heads - 1) * tb.t.head_stride +
                     dim * es + offset;
    tb.buf = calloc((size_t)extent + 16, 1);
    tb.t.data = tb.buf + offset;
    int exact = tu_store(tb.buf + offset, &tb.t, x);
    if (!exact) {
        fprintf(stderr, "test bug: value not representable in %s\n", dtype_name[dtype]);
        abort();
    }
    return tb;
}

static void free_input(tensor_buf *tb) {
    free(tb->buf);
    tb->buf = NULL;
}

/* Codes of x (contiguous f32 rows) for `layer`, via hashevict_hash. */
static int hash_rows(hashevict_engine *e, int layer, const float *x, int n, int heads, int dim,
                     int words, uint64_t *out) {
    hashevict_tensor t = tu_tensor(x, HASHEVICT_DTYPE_F32, n, heads, dim);
    return CHECK_ST(hashevict_hash(e, layer, &t, out, (int64_t)n * heads * words), HASHEVICT_OK);
}

static int ham(const uint64_t *a, const uint64_t *b, int words) {
    int d = 0;
    for (int w = 0; w < words; w++) d += tu_popcount64(a[w] ^ b[w]);
    return d;
}

/* ======================================================================== */
/* The slot-mode model                                                      */
/* ======================================================================== */

typedef struct {
    int32_t *v;
    size_t len, cap;
} ivec;

static void ivec_push(ivec *a, int32_t x) {
    if (a->len == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 256;
        a->v = realloc(a->v, a->cap * sizeof *a->v);
    }
    a->v[a->len++] = x;
}

static ivec ivec_copy(const ivec *a) {
    ivec c = {NULL, a->len, a->len};
    if (a->len) {
        c.v = malloc(a->len * sizeof *c.v);
        memcpy(c.v, a->v, a->len * sizeof *c.v);
    }
    return c;
}

typedef struct {
    hashevict_engine *e;
    int seq;
    hashevict_params p;
    int L, H, Hq, D, B, W, g;
    int dtype, layout, values;
    int pass_q;         /* 0: q = NULL (allowed with PROBE_KEY, not ORACLE) */
    int32_t next_pos;   /* smallest position the next call may use */
    /* mirror, indexed [(l*H + h)*B + slot] */
    int32_t *pos;
    uint64_t *code;     /* [.. slot][W] */
    double *ref;        /* the model's score (exact arithmetic) */
    double *refsum;     /* accumulated: sum of step distances */
    uint32_t *cnt;
    float *norm;
    float *keys;        /* oracle: the cached keys, [.. slot][D] */
    ivec placed;        /* every position placed, ascending */
    ivec trace;         /* out_slots and out_evicted of every call */
    uint64_t calls, tokens, evictions, filled;
    int failed;         /* set once the model and the library disagree */
    const char *name;
} slot_sim;

static void sim_init(slot_sim *s, hashevict_engine *e, int seq, const hashevict_params *p,
                     int dtype, int layout, const char *name) {
    memset(s, 0, sizeof *s);
    s->e = e;
    s->seq = seq;
    s->p = *p;
    s->L = p->n_layers;
    s->H = p->n_kv_heads;
    s->Hq = p->n_q_heads;
    s->D = p->head_dim;
    s->B = p->budget;
    s->W = (p->hash_bits + 63) / 64;
    s->g = p->n_q_heads / p->n_kv_heads;
    s->dtype = dtype;
    s->layout = layout;
    s->pass_q = 1;
    s->name = name;
    size_t cells = (size_t)s->L * s->H * s->B;
    s->pos = malloc(cells * sizeof *s->pos);
    for (size_t i = 0; i < cells; i++) s->pos[i] = -1;
    s->code = calloc(cells * s->W, sizeof *s->code);
    s->ref = calloc(cells, sizeof *s->ref);
    s->refsum = calloc(cells, sizeof *s->refsum);
    s->cnt = calloc(cells, sizeof *s->cnt);
    s->norm = calloc(cells, sizeof *s->norm);
    s->keys = calloc(cells * s->D, sizeof *s->keys);
}

static void sim_clone(slot_sim *dst, const slot_sim *src, int seq) {
    size_t cells = (size_t)src->L * src->H * src->B;
    *dst = *src;
    dst->seq = seq;
    dst->pos = malloc(cells * sizeof *dst->pos);
    memcpy(dst->pos, src->pos, cells * sizeof *dst->pos);
    dst->code = malloc(cells * src->W * sizeof *dst->code);
    memcpy(dst->code, src->code, cells * src->W * sizeof *dst->code);
    dst->ref = malloc(cells * sizeof *dst->ref);
    memcpy(dst->ref, src->ref, cells * sizeof *dst->ref);
    dst->refsum = malloc(cells * sizeof *dst->refsum);
    memcpy(dst->refsum, src->refsum, cells * sizeof *dst->refsum);
    dst->cnt = malloc(cells * sizeof *dst->cnt);
    memcpy(dst->cnt, src->cnt, cells * sizeof *dst->cnt);
    dst->norm = malloc(cells * sizeof *dst->norm);
    memcpy(dst->norm, src->norm, cells * sizeof *dst->norm);
    dst->keys = malloc(cells * src->D * sizeof *dst->keys);
    memcpy(dst->keys, src->keys, cells * src->D * sizeof *dst->keys);
    dst->placed = ivec_copy(&src->placed);
    dst->trace.v = NULL;
    dst->trace.len = dst->trace.cap = 0;
    dst->calls = dst->tokens = dst->evictions = 0;
}

static void sim_free(slot_sim *s) {
    free(s->pos);
    free(s->code);
    free(s->ref);
    free(s->refsum);
    free(s->cnt);
    free(s->norm);
    free(s->keys);
    free(s->placed.v);
    free(s->trace.v);
}

/* Whether the model predicts exact victims for this configuration. */
static int sim_exact(const slot_sim *s) {
    if (s->p.policy == HASHEVICT_POLICY_HASH) return s->p.score == HASHEVICT_SCORE_INSTANT;
    return s->p.policy == HASHEVICT_POLICY_SINK_RECENT || s->p.policy == HASHEVICT_POLICY_KNORM;
}

static void gen_values(tu_rng *r, float *x, size_t n, int values) {
    for (size_t i = 0; i < n; i++) x[i] = values ? tu_gauss(r) : tu_small(r);
}

/* Compares the slot positions reported by the library with the model and
 * checks the protections. */
static void sim_verify_positions(slot_sim *s) {
    int32_t *buf = malloc((size_t)s->B * sizeof *buf);
    int32_t t = s->placed.len ? s->placed.v[s->placed.len - 1] : -1;
    for (int l = 0; l < s->L; l++)
        for (int h = 0; h < s->H; h++) {
            int32_t *mp = s->pos + ((size_t)l * s->H + h) * s->B;
            if (!CHECK_ST(hashevict_slot_positions(s->e, s->seq, l, h, buf, s->B), HASHEVICT_OK)) {
                s->failed = 1;
                continue;
            }
            for (int i = 0; i < s->B; i++) {
                if (buf[i] != mp[i]) {
                    CHECK(0, "%s: seq %d layer %d head %d slot %d holds position %d, model says %d",
                          s->name, s->seq, l, h, i, buf[i], mp[i]);
                    s->failed = 1;
                    break;
                }
            }
            /* every protected position placed so far is still held */
            for (size_t k = 0; k < s->placed.len; k++) {
                int32_t q = s->placed.v[k];
                if (q >= s->p.n_sink && q < t - s->p.n_recent) continue;
                int found = 0;
                for (int i = 0; i < s->B; i++) found |= buf[i] == q;
                if (!found) {
                    CHECK(0, "%s: protected position %d (t = %d, n_sink %d, n_recent %d) is missing "
                             "from layer %d head %d",
                          s->name, q, t, s->p.n_sink, s->p.n_recent, l, h);
                    s->failed = 1;
                }
            }
            /* distinct positions */
            for (int i = 0; i < s->B; i++)
                for (int j = i + 1; j < s->B && buf[i] >= 0; j++)
                    if (buf[i] == buf[j]) {
                        CHECK(0, "%s: position %d held by slots %d and %d", s->name, buf[i], i, j);
                        s->failed = 1;
                    }
        }
    free(buf);
}

typedef struct {
    int slot;
    int64_t ikey; /* integer key (larger evicted first) */
    double dkey;
} cand;

static int cand_cmp_int(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->ikey != y->ikey) return x->ikey > y->ikey ? -1 : 1;
    return x->slot - y->slot;
}

static int cand_cmp_dbl(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->dkey != y->dkey) return x->dkey > y->dkey ? -1 : 1;
    return x->slot - y->slot;
}

static double dot_d(const float *a, const float *b, int n) {
    double acc = 0;
    for (int i = 0; i < n; i++) acc += (double)a[i] * (double)b[i];
    return acc;
}

/* The oracle's scores for head h: minus the accumulated softmax attention
 * (scale 1/sqrt(d), causal inside the chunk, summed over the group's query
 * heads) of this chunk's queries over the cached keys and the chunk's own
 * keys. newref[slot] gets the updated score of each cached slot, init[u]
 * the starting score of chunk token u. */
static void oracle_model(const slot_sim *s, size_t base, int h, const float *q, const float *k, int n,
                         double *newref, double *init) {
    int B = s->B, D = s->D, g = s->g, Hq = s->Hq, H = s->H;
    const int32_t *mp = s->pos + base;
    double scale = 1.0 / sqrt((double)D);
    double *gained = calloc((size_t)B + n, sizeof *gained);
    double *logit = malloc(((size_t)B + n) * sizeof *logit);
    for (int tok = 0; tok < n; tok++)
        for (int j = 0; j < g; j++) {
            const float *qv = q + ((size_t)tok * Hq + (size_t)h * g + j) * D;
            double mx = -INFINITY, z = 0;
            for (int i = 0; i < B; i++)
                if (mp[i] >= 0) {
                    logit[i] = dot_d(qv, s->keys + (base + i) * D, D) * scale;
                    if (logit[i] > mx) mx = logit[i];
                }
            for (int u = 0; u <= tok; u++) {
                logit[B + u] = dot_d(qv, k + ((size_t)u * H + h) * D, D) * scale;
                if (logit[B + u] > mx) mx = logit[B + u];
            }
            for (int i = 0; i < B + tok + 1; i++) {
                if (i < B && mp[i] < 0) continue;
                logit[i] = exp(logit[i] - mx);
                z += logit[i];
            }
            for (int i = 0; i < B + tok + 1; i++) {
                if (i < B && mp[i] < 0) continue;
                gained[i] += logit[i] / z;
            }
        }
    for (int i = 0; i < B; i++)
        if (mp[i] >= 0) newref[i] = s->ref[base + i] - gained[i];
    for (int u = 0; u < n; u++) init[u] = -gained[B + u];
    free(gained);
    free(logit);
}

/* One call per layer with n new tokens. Returns the status of the calls
 * (HASHEVICT_OK, or HASHEVICT_ERR_CHUNK_TOO_LARGE when the model predicted
 * it and the library agreed; the state is then unchanged). */
static hashevict_status sim_step(slot_sim *s, tu_rng *data, int n, int gap_max) {
    const hashevict_params *p = &s->p;
    int H = s->H, Hq = s->Hq, D = s->D, B = s->B, W = s->W, g = s->g;
    int32_t *positions = malloc((size_t)n * sizeof *positions);
    int32_t q0 = s->next_pos;
    for (int i = 0; i < n; i++) {
        positions[i] = q0;
        q0 += 1 + (gap_max > 1 ? (int32_t)tu_below(data, (uint32_t)gap_max) : 0);
    }
    int32_t t = positions[n - 1];
    int32_t lo = p->n_sink, hi = t - p->n_recent;
    if (hi < lo) hi = lo;
    float *q = malloc((size_t)n * Hq * D * sizeof *q);
    float *k = malloc((size_t)n * H * D * sizeof *k);
    uint64_t *qc = calloc((size_t)n * Hq * W, sizeof *qc);
    uint64_t *kc = calloc((size_t)n * H * W, sizeof *kc);
    int32_t *slots = malloc((size_t)n * H * sizeof *slots);
    int32_t *evicted = malloc((size_t)n * H * sizeof *evicted);
    double *newref = malloc((size_t)B * sizeof *newref);
    double *newsum = malloc((size_t)B * sizeof *newsum);
    double *initref = malloc((size_t)n * sizeof *initref);
    int64_t *dist = malloc((size_t)B * sizeof *dist);
    cand *cands = malloc((size_t)B * sizeof *cands);
    int32_t *expect = malloc((size_t)n * H * sizeof *expect);
    /* model scores after this call, committed only if the call succeeds */
    double *stage_ref = malloc((size_t)H * B * sizeof *stage_ref);
    double *stage_sum = malloc((size_t)H * B * sizeof *stage_sum);
    double *stage_init = malloc((size_t)H * n * sizeof *stage_init);
    int *ncand = malloc((size_t)H * sizeof *ncand);
    cand *allc = malloc((size_t)H * B * sizeof *allc);
    hashevict_status result = HASHEVICT_OK;
    int exact = sim_exact(s);

    for (int l = 0; l < s->L && !s->failed; l++) {
        gen_values(data, q, (size_t)n * Hq * D, s->values);
        gen_values(data, k, (size_t)n * H * D, s->values);
        if (p->policy == HASHEVICT_POLICY_HASH) {
            if (!hash_rows(s->e, l, q, n, Hq, D, W, qc) || !hash_rows(s->e, l, k, n, H, D, W, kc)) {
                s->failed = 1;
                break;
            }
        }
        /* ---- the model's prediction, per KV head ---- */
        int fits = 1;
        for (int h = 0; h < H; h++) {
            size_t base = ((size_t)l * H + h) * B;
            int32_t *mp = s->pos + base;
            const uint64_t *probes;
            int np;
            uint64_t probe_buf[MAXH * 8 * 4];
            if ((size_t)n * g * W > sizeof probe_buf / sizeof probe_buf[0]) {
                fprintf(stderr, "test bug: probe buffer too small\n");
                abort();
            }
            if (p->probe == HASHEVICT_PROBE_KEY) {
                for (int i = 0; i < n; i++) memcpy(probe_buf + (size_t)i * W, kc + ((size_t)i * H + h) * W, W * 8);
                np = n;
            } else {
                for (int i = 0; i < n; i++)
                    memcpy(probe_buf + (size_t)i * g * W, qc + ((size_t)i * Hq + h * g) * W, (size_t)g * W * 8);
                np = n * g;
            }
            probes = probe_buf;
            int used = 0;
            for (int i = 0; i < B; i++) {
                double d = 0;
                dist[i] = 0;
                if (mp[i] < 0) continue;
                used++;
                if (p->policy == HASHEVICT_POLICY_HASH) {
                    for (int j = 0; j < np; j++) dist[i] += ham(s->code + (base + i) * W, probes + (size_t)j * W, W);
                    d = (double)dist[i] / n;
                }
                switch (p->score) {
                case HASHEVICT_SCORE_INSTANT: newref[i] = d; newsum[i] = d; break;
                case HASHEVICT_SCORE_ACCUMULATED:
                    newsum[i] = s->refsum[base + i] + d;
                    newref[i] = newsum[i] / (s->cnt[base + i] + 1);
                    break;
                default:
                    newref[i] = (double)p->decay * s->ref[base + i] + (1.0 - (double)p->decay) * d;
                    newsum[i] = 0;
                }
            }
            if (p->policy == HASHEVICT_POLICY_ORACLE)
                oracle_model(s, base, h, q, k, n, newref, stage_init + (size_t)h * n);
            for (int i = 0; i < n && p->policy != HASHEVICT_POLICY_ORACLE; i++) {
                int64_t di = 0;
                if (p->policy == HASHEVICT_POLICY_HASH)
                    for (int j = 0; j < np; j++) di += ham(kc + ((size_t)i * H + h) * W, probes + (size_t)j * W, W);
                stage_init[h * n + i] = (double)di / n;
            }
            memcpy(stage_ref + (size_t)h * B, newref, (size_t)B * sizeof *newref);
            memcpy(stage_sum + (size_t)h * B, newsum, (size_t)B * sizeof *newsum);
            /* evictable candidates */
            int nc = 0;
            for (int i = 0; i < B; i++) {
                if (mp[i] < lo || mp[i] >= hi) continue;
                cands[nc].slot = i;
                cands[nc].dkey = newref[i];
                if (p->policy == HASHEVICT_POLICY_HASH)
                    cands[nc].ikey = dist[i];
                else if (p->policy == HASHEVICT_POLICY_SINK_RECENT)
                    cands[nc].ikey = -(int64_t)mp[i];
                else
                    cands[nc].ikey = 0;
                if (p->policy == HASHEVICT_POLICY_KNORM) cands[nc].dkey = s->norm[base + i];
                nc++;
            }
            if (p->policy == HASHEVICT_POLICY_KNORM)
                qsort(cands, nc, sizeof *cands, cand_cmp_dbl);
            else if (p->policy == HASHEVICT_POLICY_HASH && p->score != HASHEVICT_SCORE_INSTANT)
                qsort(cands, nc, sizeof *cands, cand_cmp_dbl);
            else
                qsort(cands, nc, sizeof *cands, cand_cmp_int);
            memcpy(allc + (size_t)h * B, cands, (size_t)nc * sizeof *cands);
            ncand[h] = nc;
            int free_slots = B - used;
            if (n > free_slots + nc) fits = 0;
            /* expected slot of each token */
            int f = 0;
            for (int i = 0; i < n; i++) {
                if (i < free_slots) {
                    while (f < B && mp[f] >= 0) f++;
                    expect[i * H + h] = f++;
                } else if (i - free_slots < nc) {
                    expect[i * H + h] = cands[i - free_slots].slot;
                } else {
                    expect[i * H + h] = -1;
                }
            }
        }

        /* ---- the call ---- */
        tensor_buf tq = make_input(q, n, Hq, D, s->dtype, s->layout);
        tensor_buf tk = make_input(k, n, H, D, s->dtype, s->layout);
        for (int i = 0; i < n * H; i++) slots[i] = evicted[i] = -7;
        hashevict_status st = hashevict_place(s->e, s->seq, l, s->pass_q ? &tq.t : NULL, &tk.t,
                                              positions, n, slots, evicted);
        free_input(&tq);
        free_input(&tk);
        if (!fits) {
            if (!CHECK_ST(st, HASHEVICT_ERR_CHUNK_TOO_LARGE)) s->failed = 1;
            CHECK(strlen(hashevict_last_error()) > 0, "CHUNK_TOO_LARGE without a message");
            if (l != 0) {
                CHECK(0, "%s: a chunk fit layer 0 but not layer %d (model bug?)", s->name, l);
                s->failed = 1;
            }
            result = HASHEVICT_ERR_CHUNK_TOO_LARGE;
            break;
        }
        if (!CHECK_ST(st, HASHEVICT_OK)) {
            fprintf(stderr, "  in %s, layer %d, positions %d..%d (%d tokens)\n", s->name, l,
                    positions[0], t, n);
            s->failed = 1;
            break;
        }
        s->calls++;
        s->tokens += (uint64_t)n;
        for (int i = 0; i < n * H; i++) {
            ivec_push(&s->trace, slots[i]);
            ivec_push(&s->trace, evicted[i]);
        }

        /* ---- compare with the model, then commit ---- */
        for (int h = 0; h < H && !s->failed; h++) {
            size_t base = ((size_t)l * H + h) * B;
            int32_t *mp = s->pos + base;
            for (int i = 0; i < n; i++) {
                int32_t sl = slots[i * H + h], ev = evicted[i * H + h];
                if (sl < 0 || sl >= B) {
                    CHECK(0, "%s: layer %d head %d token %d got slot %d outside [0, %d)", s->name, l, h, i, sl, B);
                    s->failed = 1;
                    break;
                }
                for (int j = 0; j < i; j++)
                    if (slots[j * H + h] == sl) {
                        CHECK(0, "%s: tokens %d and %d of one chunk share slot %d (head %d)", s->name, j, i, sl, h);
                        s->failed = 1;
                    }
                int32_t before = mp[sl];
                /* a slot taken by an earlier token of this chunk would show
                 * a chunk position here; the check above catches it */
                if (ev != before) {
                    CHECK(0, "%s: layer %d head %d token %d: out_evicted = %d but slot %d held %d", s->name, l, h,
                          i, ev, sl, before);
                    s->failed = 1;
                }
                if (before >= 0 && (before < lo || before >= hi)) {
                    CHECK(0, "%s: layer %d head %d evicted protected position %d (t = %d, n_sink %d, n_recent %d)",
                          s->name, l, h, before, t, p->n_sink, p->n_recent);
                    s->failed = 1;
                }
                int want = expect[i * H + h];
                int is_free_pick = before < 0;
                if (is_free_pick && sl != want) {
                    CHECK(0, "%s: layer %d head %d token %d took free slot %d, want the lowest free slot %d",
                          s->name, l, h, i, sl, want);
                    s->failed = 1;
                }
                if (!is_free_pick) {
                    if (exact && sl != want) {
                        CHECK(0, "%s: step t=%d layer %d head %d token %d: victim slot %d (position %d), the model "
                                 "says slot %d (position %d)",
                              s->name, t, l, h, i, sl, before, want, want >= 0 ? mp[want] : -1);
                        s->failed = 1;
                    }
                    if (!exact && (p->policy == HASHEVICT_POLICY_HASH || p->policy == HASHEVICT_POLICY_ORACLE)) {
                        /* a victim's score is (up to float rounding) at least
                         * that of every evictable slot left in place */
                        double vs = stage_ref[(size_t)h * B + sl];
                        for (int c = 0; c < ncand[h]; c++) {
                            int u = allc[(size_t)h * B + c].slot, chosen = 0;
                            for (int j = 0; j < n; j++) chosen |= slots[j * H + h] == u;
                            double us = stage_ref[(size_t)h * B + u];
                            if (!chosen && vs < us - 1e-3 * (1 + fabs(us))) {
                                CHECK(0, "%s: t=%d layer %d head %d: victim slot %d has score %.6f but slot %d "
                                         "(kept) has %.6f",
                                      s->name, t, l, h, sl, vs, u, us);
                                s->failed = 1;
                                break;
                            }
                        }
                    }
                    s->evictions++;
                }
            }
            if (s->failed) break;
            /* commit: old scores, then the new tokens */
            for (int i = 0; i < B; i++) {
                if (mp[i] < 0) continue;
                s->ref[base + i] = stage_ref[(size_t)h * B + i];
                s->refsum[base + i] = stage_sum[(size_t)h * B + i];
                s->cnt[base + i]++;
            }
            for (int i = 0; i < n; i++) {
                int32_t sl = slots[i * H + h];
                if (mp[sl] < 0) s->filled++;
                mp[sl] = positions[i];
                memcpy(s->code + (base + sl) * W, kc + ((size_t)i * H + h) * W, (size_t)W * 8);
                s->ref[base + sl] = s->refsum[base + sl] = stage_init[h * n + i];
                s->cnt[base + sl] = 1;
                double ss = 0;
                const float *kr = k + ((size_t)i * H + h) * D;
                for (int d = 0; d < D; d++) ss += (double)kr[d] * (double)kr[d];
                s->norm[base + sl] = (float)sqrt(ss);
                memcpy(s->keys + (base + sl) * D, kr, (size_t)D * sizeof *kr);
            }
        }
    }
    if (result == HASHEVICT_OK && !s->failed) {
        for (int i = 0; i < n; i++) ivec_push(&s->placed, positions[i]);
        s->next_pos = q0;
    }
    if (!s->failed) sim_verify_positions(s);
    free(positions);
    free(q);
    free(k);
    free(qc);
    free(kc);
    free(slots);
    free(evicted);
    free(newref);
    free(newsum);
    free(initref);
    free(dist);
    free(cands);
    free(expect);
    free(stage_ref);
    free(stage_sum);
    free(stage_init);
    free(ncand);
    free(allc);
    return result;
}

/* Runs `steps` calls with chunks of 1..chunk_max tokens; a chunk the model
 * predicts too large must be refused, and is then retried as one token. */
static void sim_run(slot_sim *s, tu_rng *data, int steps, int chunk_max, int gap_max) {
    for (int i = 0; i < steps && !s->failed; i++) {
        int n = chunk_max > 1 ? 1 + (int)tu_below(data, (uint32_t)chunk_max) : 1;
        tu_rng keep = *data;
        if (sim_step(s, data, n, gap_max) == HASHEVICT_ERR_CHUNK_TOO_LARGE) {
            *data = keep;
            tu_next(data);
            sim_step(s, data, 1, gap_max);
        }
    }
}

static void sim_check_stats(slot_sim *s) {
    hashevict_stats st;
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    if (!CHECK_ST(hashevict_stats_get(s->e, s->seq, &st), HASHEVICT_OK)) return;
    CHECK(st.size == sizeof st, "stats size field changed to %u", st.size);
    CHECK(st.steps == s->calls, "%s: stats.steps = %llu, want %llu", s->name, (unsigned long long)st.steps,
          (unsigned long long)s->calls);
    CHECK(st.tokens == s->tokens, "%s: stats.tokens = %llu, want %llu", s->name, (unsigned long long)st.tokens,
          (unsigned long long)s->tokens);
    CHECK(st.evictions == s->evictions, "%s: stats.evictions = %llu, want %llu", s->name,
          (unsigned long long)st.evictions, (unsigned long long)s->evictions);
    uint64_t cached = 0;
    for (size_t i = 0; i < (size_t)s->L * s->H * s->B; i++) cached += s->pos[i] >= 0;
    CHECK(st.cached == cached, "%s: stats.cached = %llu, want %llu (used slots)", s->name,
          (unsigned long long)st.cached, (unsigned long long)cached);
    CHECK(st.state_bytes > 0, "%s: stats.state_bytes is 0", s->name);
    CHECK(st.n_sequences == 1, "%s: per-sequence stats.n_sequences = %d", s->name, st.n_sequences);
}

static int traces_equal(const ivec *a, const ivec *b) {
    return a->len == b->len && (a->len == 0 || memcmp(a->v, b->v, a->len * sizeof *a->v) == 0);
}

/* A fresh engine + sequence and a model on it. */
static hashevict_engine *new_engine(const hashevict_params *p) {
    hashevict_engine *e = NULL;
    if (!CHECK_ST(hashevict_engine_create(p, &e), HASHEVICT_OK)) return NULL;
    CHECK(e != NULL, "engine_create returned OK and a NULL engine");
    return e;
}

/* Runs one configuration end to end; returns the trace (caller frees). */
static ivec run_config(const hashevict_params *p, int steps, int chunk_max, int gap_max, int dtype, int layout,
                       int values, int pass_q, uint64_t data_seed, const char *name, int *ok) {
    ivec none = {NULL, 0, 0};
    slot_sim s;
    *ok = 0;
    hashevict_engine *e = new_engine(p);
    if (!e) return none;
    if (!CHECK_ST(hashevict_seq_add(e, 1), HASHEVICT_OK)) {
        hashevict_engine_free(e);
        return none;
    }
    sim_init(&s, e, 1, p, dtype, layout, name);
    s.values = values;
    s.pass_q = pass_q;
    tu_rng data = tu_rng_make(data_seed, 17, 3);
    sim_run(&s, &data, steps, chunk_max, gap_max);
    if (!s.failed) sim_check_stats(&s);
    *ok = !s.failed;
    ivec tr = s.trace;
    s.trace.v = NULL;
    sim_free(&s);
    hashevict_engine_free(e);
    return tr;
}

/* ======================================================================== */
/* Simple contract checks                                                   */
/* ======================================================================== */

static void test_versions(void) {
    char want[64];
    snprintf(want, sizeof want, "%d.%d.%d", HASHEVICT_VERSION_MAJOR, HASHEVICT_VERSION_MINOR,
             HASHEVICT_VERSION_PATCH);
    CHECK(strcmp(HASHEVICT_VERSION_STRING, want) == 0, "HASHEVICT_VERSION_STRING \"%s\" != \"%s\"",
          HASHEVICT_VERSION_STRING, want);
    const char *v = hashevict_version();
    REQUIRE_V(v != NULL, "hashevict_version() is NULL");
    CHECK(strcmp(v, HASHEVICT_VERSION_STRING) == 0, "hashevict_version() = \"%s\", header says \"%s\"", v,
          HASHEVICT_VERSION_STRING);
    CHECK(hashevict_version() == v, "hashevict_version() is not static storage");
    CHECK(hashevict_abi_version() == HASHEVICT_ABI_VERSION, "hashevict_abi_version() = %d, header says %d",
          hashevict_abi_version(), HASHEVICT_ABI_VERSION);
    const char *kn = hashevict_kernels();
    REQUIRE_V(kn != NULL, "hashevict_kernels() is NULL");
    CHECK(!strcmp(kn, "avx512") || !strcmp(kn, "avx2") || !strcmp(kn, "generic"),
          "hashevict_kernels() = \"%s\", not one of avx512/avx2/generic", kn);
    printf("version %s, ABI %d, kernels %s\n", v, hashevict_abi_version(), kn);
}

static int params_equal(const hashevict_params *a, const hashevict_params *b) {
    return a->size == b->size && a->mode == b->mode && a->policy == b->policy && a->probe == b->probe &&
           a->score == b->score && a->n_layers == b->n_layers && a->n_kv_heads == b->n_kv_heads &&
           a->n_q_heads == b->n_q_heads && a->head_dim == b->head_dim && a->hash_bits == b->hash_bits &&
           a->budget == b->budget && a->n_sink == b->n_sink && a->n_recent == b->n_recent &&
           a->max_seqs == b->max_seqs && a->decay == b->decay && a->seed == b->seed &&
           a->memory_cap_bytes == b->memory_cap_bytes;
}

static void test_defaults(void) {
    hashevict_params p = hashevict_default_params();
    CHECK(p.size == sizeof(hashevict_params), "default size = %u, want sizeof = %zu", p.size,
          sizeof(hashevict_params));
    CHECK(p.mode == HASHEVICT_MODE_SLOT, "default mode = %d", p.mode);
    CHECK(p.policy == HASHEVICT_POLICY_HASH, "default policy = %d", p.policy);
    CHECK(p.probe == HASHEVICT_PROBE_QUERY, "default probe = %d", p.probe);
    CHECK(p.score == HASHEVICT_SCORE_INSTANT, "default score = %d", p.score);
    CHECK(p.n_layers == 0 && p.n_kv_heads == 0 && p.n_q_heads == 0 && p.head_dim == 0,
          "default shape fields must be 0: %d %d %d %d", p.n_layers, p.n_kv_heads, p.n_q_heads, p.head_dim);
    CHECK(p.hash_bits == 16, "default hash_bits = %d, want 16", p.hash_bits);
    CHECK(p.budget == 0, "default budget = %d, want 0", p.budget);
    CHECK(p.n_sink == 4, "default n_sink = %d, want 4", p.n_sink);
    CHECK(p.n_recent == 10, "default n_recent = %d, want 10", p.n_recent);
    CHECK(p.max_seqs == 64, "default max_seqs = %d, want 64", p.max_seqs);
    CHECK(p.decay == 0.9f, "default decay = %g, want 0.9", (double)p.decay);
    CHECK(p.seed == 0, "default seed = %llu", (unsigned long long)p.seed);
    CHECK(p.memory_cap_bytes == 0, "default memory_cap_bytes = %llu", (unsigned long long)p.memory_cap_bytes);

    /* The defaults plus a shape make a valid engine whose parameters read
     * back identically. */
    p.n_layers = 3;
    p.n_kv_heads = 2;
    p.n_q_heads = 8;
    p.head_dim = 32;
    p.budget = 64;
    p.seed = 42;
    hashevict_engine *e = new_engine(&p);
    REQUIRE_V(e != NULL, "cannot create an engine from the defaults");
    hashevict_params back;
    memset(&back, 0xab, sizeof back);
    back.size = sizeof back;
    if (CHECK_ST(hashevict_engine_params(e, &back), HASHEVICT_OK))
        CHECK(params_equal(&back, &p), "hashevict_engine_params differs from the parameters given");
    /* A caller compiled against a shorter struct gets only its prefix. */
    unsigned char raw[sizeof(hashevict_params) + 8];
    memset(raw, 0xcd, sizeof raw);
    uint32_t small = (uint32_t)offsetof(hashevict_params, n_layers);
    memcpy(raw, &small, sizeof small);
    if (CHECK_ST(hashevict_engine_params(e, (hashevict_params *)(void *)raw), HASHEVICT_OK)) {
        uint32_t sz;
        memcpy(&sz, raw, 4);
        CHECK(sz == small, "engine_params changed out->size from %u to %u", small, sz);
        int32_t pol;
        memcpy(&pol, raw + offsetof(hashevict_params, policy), 4);
        CHECK(pol == p.policy, "engine_params prefix: policy = %d", pol);
        int untouched = 1;
        for (size_t i = small; i < sizeof raw; i++) untouched &= raw[i] == 0xcd;
        CHECK(untouched, "engine_params wrote past out->size = %u bytes", small);
    }
    hashevict_engine_free(e);
}

static void test_status_strings(void) {
    static const struct {
        hashevict_status code;
        const char *name;
    } names[] = {
        {HASHEVICT_OK, "HASHEVICT_OK"},
        {HASHEVICT_ERR_INVALID_ARGUMENT, "HASHEVICT_ERR_INVALID_ARGUMENT"},
        {HASHEVICT_ERR_INVALID_HANDLE, "HASHEVICT_ERR_INVALID_HANDLE"},
        {HASHEVICT_ERR_OUT_OF_RANGE, "HASHEVICT_ERR_OUT_OF_RANGE"},
        {HASHEVICT_ERR_INVALID_PARAMS, "HASHEVICT_ERR_INVALID_PARAMS"},
        {HASHEVICT_ERR_UNSUPPORTED, "HASHEVICT_ERR_UNSUPPORTED"},
        {HASHEVICT_ERR_SHAPE, "HASHEVICT_ERR_SHAPE"},
        {HASHEVICT_ERR_NONFINITE, "HASHEVICT_ERR_NONFINITE"},
        {HASHEVICT_ERR_UNKNOWN_SEQUENCE, "HASHEVICT_ERR_UNKNOWN_SEQUENCE"},
        {HASHEVICT_ERR_SEQUENCE_EXISTS, "HASHEVICT_ERR_SEQUENCE_EXISTS"},
        {HASHEVICT_ERR_CHUNK_TOO_LARGE, "HASHEVICT_ERR_CHUNK_TOO_LARGE"},
        {HASHEVICT_ERR_BUFFER_TOO_SMALL, "HASHEVICT_ERR_BUFFER_TOO_SMALL"},
        {HASHEVICT_ERR_MEMORY_CAP, "HASHEVICT_ERR_MEMORY_CAP"},
        {HASHEVICT_ERR_POSITION, "HASHEVICT_ERR_POSITION"},
        {HASHEVICT_ERR_WRONG_MODE, "HASHEVICT_ERR_WRONG_MODE"},
        {HASHEVICT_ERR_CORRUPT_STATE, "HASHEVICT_ERR_CORRUPT_STATE"},
        {HASHEVICT_ERR_INCOMPATIBLE_STATE, "HASHEVICT_ERR_INCOMPATIBLE_STATE"},
        {HASHEVICT_ERR_INTERNAL, "HASHEVICT_ERR_INTERNAL"},
    };
    /* pinned values */
    CHECK(HASHEVICT_OK == 0 && HASHEVICT_ERR_INVALID_ARGUMENT == 1 && HASHEVICT_ERR_WRONG_MODE == 14 &&
              HASHEVICT_ERR_CORRUPT_STATE == 15 && HASHEVICT_ERR_INCOMPATIBLE_STATE == 16 &&
              HASHEVICT_ERR_INTERNAL == 99,
          "status values are not the pinned ones");
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *s = hashevict_status_string(names[i].code);
        CHECK(s != NULL && strcmp(s, names[i].name) == 0, "status_string(%d) = \"%s\", want \"%s\"",
              (int)names[i].code, s ? s : "(null)", names[i].name);
        CHECK(hashevict_status_string(names[i].code) == s, "status_string(%d) is not static", (int)names[i].code);
    }
    const int unknown[] = {-1, 17, 50, 98, 100, 1000, INT32_MIN, INT32_MAX};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        const char *s = hashevict_status_string(unknown[i]);
        CHECK(s != NULL && strcmp(s, "HASHEVICT_ERR_UNKNOWN_STATUS") == 0, "status_string(%d) = \"%s\"",
              unknown[i], s ? s : "(null)");
    }
}

static void test_free_and_last_error(void) {
    hashevict_engine_free(NULL); /* no-op */
    hashevict_params p = tu_params(HASHEVICT_MODE_SLOT, 1, 1, 1, 8, 16, 32, 4, 10);
    hashevict_engine *e = new_engine(&p);
    REQUIRE_V(e != NULL, "create failed");
    CHECK_ST(hashevict_seq_add(e, 0), HASHEVICT_OK);
    /* a failing call sets a message; the message is per thread */
    CHECK_ST(hashevict_seq_add(e, 0), HASHEVICT_ERR_SEQUENCE_EXISTS);
    CHECK(strlen(hashevict_last_error()) > 0, "no message after SEQUENCE_EXISTS");
    hashevict_engine_free(e);
    hashevict_engine_free(e); /* already freed: documented no-op */
    CHECK_ST(hashevict_seq_add(e, 1), HASHEVICT_ERR_INVALID_HANDLE);
}

/* ======================================================================== */
/* Projections and codes against the written specification                   */
/* ======================================================================== */

static double spec_uniform(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return ((double)(z >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static void spec_projection(uint64_t seed, int layer, int dim, int bits, float *out) {
    const double two_pi = 2.0 * 3.14159265358979323846;
    uint64_t st = seed + 0x9E3779B97F4A7C15ull * (uint64_t)(layer + 1);
    int total = dim * bits;
    for (int i = 0; i < total; i += 2) {
        double u1 = spec_uniform(&st), u2 = spec_uniform(&st);
        double r = sqrt(-2.0 * log(u1));
        out[i] = (float)(r * cos(two_pi * u2));
        if (i + 1 < total) out[i + 1] = (float)(r * sin(two_pi * u2));
    }
}

/* The documented dot product: 16 float32 lanes, multiply then add, folded
 * 8, 4, 2, 1. */
static float spec_dot(const float *x, const float *r, int n) {
    float acc[16] = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) {
            float m = x[i + l] * r[i + l];
            acc[l] = acc[l] + m;
        }
    for (int l = 0; i + l < n; l++) {
        float m = x[i + l] * r[i + l];
        acc[l] = acc[l] + m;
    }
    for (int w = 8; w >= 1; w /= 2)
        for (int l = 0; l < w; l++) acc[l] = acc[l] + acc[l + w];
    return acc[0];
}

static void test_projection_and_codes(void) {
    static const int dims[] = {1, 7, 16, 33, 64, 128};
    static const int bitsv[] = {8, 16, 32, 64, 128, 256};
    static const uint64_t seeds[] = {0, 1, 0xdeadbeefcafef00dull};
    int ulp_off = 0, checked = 0;
    for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++)
        for (size_t bi = 0; bi < sizeof bitsv / sizeof bitsv[0]; bi++) {
            int D = dims[di], bits = bitsv[bi], W = (bits + 63) / 64;
            uint64_t seed = seeds[(di + bi) % 3];
            hashevict_params p = tu_params(HASHEVICT_MODE_SLOT, 2, 1, 1, D, bits, 32, 4, 10);
            p.seed = seed;
            hashevict_engine *e = new_engine(&p);
            if (!e) return;
            float *proj = malloc((size_t)D * bits * sizeof *proj);
            float *mine = malloc((size_t)D * bits * sizeof *mine);
            for (int l = 0; l < 2; l++) {
                /* capacity exactly hash_bits*head_dim is enough */
                if (!CHECK_ST(hashevict_projection(e, l, proj, (int64_t)D * bits), HASHEVICT_OK)) continue;
                spec_projection(seed, l, D, bits, mine);
                for (int i = 0; i < D * bits; i++) {
                    checked++;
                    if (proj[i] == mine[i]) continue;
                    uint32_t a = tu_f32_bits(proj[i]), b = tu_f32_bits(mine[i]);
                    if ((a > b ? a - b : b - a) == 1) {
                        ulp_off++; /* libm's last bit; the spec allows it */
                        continue;
                    }
                    CHECK(0, "projection seed %llu layer %d dim %d bits %d: entry %d = %.9g, the spec gives %.9g",
                          (unsigned long long)seed, l, D, bits, i, (double)proj[i], (double)mine[i]);
                    break;
                }
                /* codes of random vectors recomputed from the exported
                 * matrix in the documented order */
                tu_rng r = tu_rng_make(seed, (uint64_t)D, (uint64_t)bits);
                enum { NV = 24 };
                float *x = malloc((size_t)NV * D * sizeof *x);
                uint64_t *codes = malloc((size_t)NV * W * sizeof *codes);
                for (int i = 0; i < NV * D; i++) x[i] = (i / D) % 3 == 0 ? tu_small(&r) : tu_gauss(&r);
                /* a zero vector: every dot product is +0 -> all bits set */
                for (int i = 0; i < D; i++) x[i] = 0.0f;
                hashevict_tensor t = tu_tensor(x, HASHEVICT_DTYPE_F32, NV, 1, D);
                if (CHECK_ST(hashevict_hash(e, l, &t, codes, (int64_t)NV * W), HASHEVICT_OK)) {
                    for (int v = 0; v < NV; v++) {
                        uint64_t want[4] = {0, 0, 0, 0};
                        for (int j = 0; j < bits; j++)
                            if (spec_dot(x + (size_t)v * D, proj + (size_t)j * D, D) >= 0.0f)
                                want[j / 64] |= 1ull << (j % 64);
                        if (memcmp(want, codes + (size_t)v * W, (size_t)W * 8) != 0) {
                            CHECK(0, "hash code of vector %d (dim %d, bits %d, layer %d) differs from the "
                                     "lane-order recomputation: word0 %016llx vs %016llx",
                                  v, D, bits, l, (unsigned long long)codes[(size_t)v * W],
                                  (unsigned long long)want[0]);
                            break;
                        }
                    }
                }
                free(x);
                free(codes);
            }
            /* layers have distinct projections */
            float *other = malloc((size_t)D * bits * sizeof *other);
            if (CHECK_ST(hashevict_projection(e, 0, proj, (int64_t)D * bits), HASHEVICT_OK) &&
                CHECK_ST(hashevict_projection(e, 1, other, (int64_t)D * bits), HASHEVICT_OK))
                CHECK(memcmp(proj, other, (size_t)D * bits * sizeof *proj) != 0, "layers 0 and 1 share a projection");
            free(other);
            free(proj);
            free(mine);
            hashevict_engine_free(e);
        }
    if (ulp_off) printf("projection: %d of %d entries differ from this libm by one float32 ulp\n", ulp_off, checked);
    CHECK(ulp_off * 1000 < checked, "too many projection entries differ by one ulp: %d of %d", ulp_off, checked);
}

/* Same seed -> same projections; different seeds -> different ones. */
static void test_seeds(void) {
    hashevict_params p = tu_params(HASHEVICT_MODE_SLOT, 2, 2, 4, 64, 64, 32, 4, 10);
    p.seed = 7;
    hashevict_engine *a = new_engine(&p), *b = new_engine(&p);
    p.seed = 8;
    hashevict_engine *c = new_engine(&p);
    if (a && b && c) {
        size_t n = 64 * 64;
        float *pa = malloc(n * 4), *pb = malloc(n * 4), *pc = malloc(n * 4);
        for (int l = 0; l < 2; l++) {
            CHECK_ST(hashevict_projection(a, l, pa, (int64_t)n), HASHEVICT_OK);
            CHECK_ST(hashevict_projection(b, l, pb, (int64_t)n), HASHEVICT_OK);
            CHECK_ST(hashevict_projection(c, l, pc, (int64_t)n), HASHEVICT_OK);
            CHECK(memcmp(pa, pb, n * 4) == 0, "same seed, layer %d: projections differ", l);
            CHECK(memcmp(pa, pc, n * 4) != 0, "seeds 7 and 8, layer %d: identical projections", l);
        }
        free(pa);
        free(pb);
        free(pc);
    }
    hashevict_engine_free(a);
    hashevict_engine_free(b);
    hashevict_engine_free(c);

    /* identical engines, identical inputs -> identical slot sequences */
    hashevict_params q = tu_params(HASHEVICT_MODE_SLOT, 2, 2, 4, 32, 16, 24, 2, 5);
    q.seed = 99;
    int ok1, ok2, ok3;
    ivec t1 = run_config(&q, 120, 1, 1, HASHEVICT_DTYPE_F32, LAYOUT_CONTIG, 1, 1, 5, "seed run A", &ok1);
    ivec t2 = run_config(&q, 120, 1, 1, HASHEVICT_DTYPE_F32, LAYOUT_CONTIG, 1, 1, 5, "seed run B", &ok2);
    q.seed = 100;
    ivec t3 = run_config(&q, 120, 1, 1, HASHEVICT_DTYPE_F32, LAYOUT_CONTIG, 1, 1, 5, "seed run C", &ok3);
    if (ok1 && ok2) CHECK(traces_equal(&t1, &t2), "two engines with the same seed and inputs chose different slots");
    if (ok1 && ok3 && traces_equal(&t1, &t3))
        printf("note: seeds 99 and 100 happened to give the same slot sequence\n");
    free(t1.v);
    free(t2.v);
    free(t3.v);
    /* a different seed must also be visible in the codes */
    hashevict_params r1 = tu_params(HASHEVICT_MODE_SLOT, 1, 1, 1, 64, 256, 32, 4, 10);
    r1.seed = 1;
    hashevict_params r2 = r1;
    r2.seed = 2;
    hashevict_engine *e1 = new_engine(&r1), *e2 = new_engine(&r2);
    if (e1 && e2) {
        float x[64];
        tu_rng rr = tu_rng_make(3, 3, 3);
        for (int i = 0; i < 64; i++) x[i] = tu_gauss(&rr);
        uint64_t c1[4], c2[4];
        hashevict_tensor t = tu_tensor(x, HASHEVICT_DTYPE_F32, 1, 1, 64);
        CHECK_ST(hashevict_hash(e1, 0, &t, c1, 4), HASHEVICT_OK);
        CHECK_ST(hashevict_hash(e2, 0, &t, c2, 4), HASHEVICT_OK);
        CHECK(memcmp(c1, c2, sizeof c1) != 0, "256-bit codes identical under seeds 1 and 2");
    }
    hashevict_engine_free(e1);
    hashevict_engine_free(e2);
}

/* ======================================================================== */
/* Slot mode: the configuration matrix                                      */
/* ======================================================================== */

static void test_slot_matrix(void) {
    static const int bitsv[] = {8, 16, 32, 64, 128, 256};
    static const int groups[] = {1, 2, 4};
    int configs = 0, failed = 0;
    char name[160];
    /* HashEvict: every width, group size, probe and score */
    for (size_t bi = 0; bi < 6; bi++)
        for (size_t gi = 0; gi < 3; gi++)
            for (int probe = 0; probe < 2; probe++)
                for (int score = 0; score < 3; score++) {
                    int g = groups[gi];
                    hashevict_params p = tu_params(HASHEVICT_MODE_SLOT, 2, 2, 2 * g, 24, bitsv[bi], 20, 3, 5);
                    p.probe = probe;
                    p.score = score;
                    p.seed = 1000 + bi * 31 + gi * 7 + (size_t)probe * 3 + (size_t)score;
                    snprintf(name, sizeof name, "hash bits=%d group=%d probe=%s score=%s", bitsv[bi], g,
                             probe ? "key" : "query", score_name[score]);
                    int ok;
                    /* Gaussian values for wide codes, k/8 values for narrow
                     * ones (which makes ties common: the tie rule matters) */
                    ivec tr = run_config(&p, 70, 1, 1, HASHEVICT_DTYPE_F32, LAYOUT_CONTIG, bitsv[bi] >= 64, 1,
                                         p.seed, name, &ok);
                    free(tr.v);
                    configs++;
                    failed += !ok;
                }
    /* The baselines */
    for (int pol = 1; pol <= 4; pol++)
        for (size_t gi = 0; gi < 3; gi++)
            for (int probe = 0; probe < 2; probe++) {
                int g = groups[gi];
                hashevict_params p = tu_params(HASHEVICT_MODE_SLOT, 2, 2, 2 * g, 16, 16, 20, 2, 4);
                p.policy = pol;
                p.probe = probe;
                p.score = (int)gi % 3;
                p.seed = 77 + (uint64_t)pol;
                snprintf(name, sizeof name, "%s group=%d probe=%s", policy_name[pol], g, probe ? "key" : "query");
                int ok;
                ivec tr = run_config(&p, 70, 1, 1, HASHEVICT_DTYPE_F32, LAYOUT_CONTIG, 1, 1, 5 + (uint64_t)pol,
                                     name, &ok);
                free(tr.v);
                configs++;
                failed += !ok;
            }
    printf("slot matrix: %d configurations, %d failed\n", configs, failed);
}

/* q may be NULL with PROBE_KEY (not ORACLE): same result as passing it. */
static void test_probe_key_without_q(void) {
    hashevict_params p = tu_params(HASHEVICT_MODE_SLOT, 2, 2, 4, 16, 32, 20, 2, 4);
    p.probe = HASHEVICT_PROBE_KEY;
    int ok1, ok2;
    ivec a = run_config(&p, 60, 3, 2, HASHEVICT_DTYPE_F32, LAYOUT_CONTIG, 1, 1, 11, "probe key with q", &ok1);
    ivec b = run_config(&p, 60, 3, 2, HASHEVICT_DTYPE_F32, LAYOUT_CONTIG, 1, 0, 11, "probe key, q NULL", &ok2);
    if (ok1 && ok2) CHECK(traces_equal(&a, &b), "PROBE_KEY: q = NULL changes the slots chosen");
    free(a.v);
    free(b.v);
}

/* The same values as f32, f16 and bf16, in every layout, give the same
 * slots. */
static void test_dtypes_and_layouts(void) {
    static const struct {
        int policy, probe, score, bits, g, chunk;
    } cfgs[] = {
        {HASHEVICT_POLICY_HASH, HASHEVICT_PROBE_QUERY, HASHEVICT_SCORE_INSTANT, 16, 2, 1},
        {HASHEVICT_POLICY_HASH, HASHEVICT_PROBE_KEY, HASHEVICT_SCORE_ACCUMULATED, 64, 1, 1},
        {HASHEVICT_POLICY_HASH, HASHEVICT_PROBE_QUERY, HASHEVICT_SCORE_DECAYED, 256, 4, 3},
        {HASHEVICT_POLICY_KNORM, HASHEVICT_PROBE_QUERY, HASHEVICT_SCORE_INSTANT, 16, 2, 2},
        {HASHEVICT_POLICY_ORACLE, HASHEVICT_PROBE_QUERY, HASHEVICT_SCORE_INSTANT, 16, 2, 2},
    };
    char name[160];
    for (size_t c = 0; c < sizeof cfgs / sizeof cfgs[0]; c++) {
        hashevict_params p = tu_params(HASHEVICT_MODE_SLOT, 2, 2, 2 * cfgs[c].g, 40, cfgs[c].bits, 24, 3, 6);
        p.policy = cfgs[c].policy;
        p.probe = cfgs[c].probe;
        p.score = cfgs[c].score;
        p.seed = 4242 + c;
        ivec ref = {NULL, 0, 0};
        int have_ref = 0;
        for (int dt = 0; dt < 3; dt++)
            for (int lay = 0; lay < 3; lay++) {
                int ok;
                snprintf(name, sizeof name, "%s/%s/%s bits=%d", policy_name[p.policy], dtype_name[dt],
                         layout_name[lay], p.hash_bits);
                ivec tr = run_config(&p, 80, cfgs[c].chunk, 2, dt, lay, 0, 1, 900 + c, name, &ok);
                if (!ok) {
                    free(tr.v);
                    continue;
                }
                if (!have_ref) {
                    ref = tr;
                    have_ref = 1;
                    continue;
                }
                CHECK(traces_equal(&ref, &tr), "%s: slots differ from f32 contiguous", name);
                free(tr.v);
            }
        free(ref.v);
    }
}

/* hashevict_hash gives the same codes for every dtype and layout. */
static void test_hash_inputs(void) {
    enum { N = 5, H = 3, D = 37 };
    hashevict_params p = tu_params(HASHEVICT_MODE_SLOT, 1, 1, 1, D, 128, 32, 4, 10);
    hashevict_engine *e = new_engine(&p);
    REQUIRE_V(e != NULL, "create");
    float x[N * H * D];
    tu_rng r = tu_rng_make(5, 6, 7);
    for (int i = 0; i < N * H * D; i++) x[i] = tu_small(&r);
    uint64_t want[N * H * 2], got[N * H * 2];
    hashevict_tensor t = tu_tensor(x, HASHEVICT_DTYPE_F32, N, H, D);
    REQUIRE_V(CHECK_ST(hashevict_hash(e, 0, &t, want, N * H * 2), HASHEVICT_OK), "hash");
    for (int dt = 0; dt < 3; dt++)
        for (int lay = 0; lay < 3; lay++) {
            tensor_buf tb = make_input(x, N, H, D, dt, lay);
            memset(got, 0, sizeof got);
            if (CHECK_ST(hashevict_hash(e, 0, &tb.t, got, N * H * 2), HASHEVICT_OK))
                CHECK(memcmp(want, got, sizeof got) == 0, "hash codes differ for %s %s", dtype_name[dt],
                      layout_name[lay]);
            free_input(&tb);
        }
    hashevict_engine_free(e);
}

/* ======================================================================== */
/* Chunks                                                                   */
/* ======================================================================== */

static void test_chunks(void) {
    char name[160];
    /* chunked runs against the model, with gaps in the positions */
    for (int g = 1; g <= 4; g *= 2)
        for (int probe = 0; probe < 2; probe++) {
            hashevict_params p = tu_params(HASHEVICT_MODE_SLOT, 2, 2, 2 * g, 16, 32, 24, 3, 4);
            p.probe = probe;
            p.seed = 31 + (uint64_t)g;
            snprintf(name, sizeof name, "chunks group=%d probe=%s", g, probe ? "key" : "query");
            int ok;
            ivec tr = run_config(&p, 60, 7, 3, HASHEVICT_DTYPE_F32, LAYOUT_CONTIG, 0, 1, 123 + (uint64_t)g, name, &ok);
            free(tr.v);
            p.policy = HASHEVICT_POLICY_SINK_RECENT;
            snprintf(name, sizeof name, "chunks sink_recent group=%d", g);
            tr = run_config(&p, 60, 7, 3, HASHEVICT_DTYPE_F32, LAYOUT_CONTIG, 0, 1, 321, name, &ok);
            free(tr.v);
        }

    /* explicit cases: budget 24, n_sink 4, n_recent 10 */
    hashevict_params p = tu_params(HASHEVICT_MODE_SLOT, 1, 1, 2, 16, 16, 24, 4, 10);
    hashevict_engine *e = new_engine(&p);
    REQUIRE_V(e != NULL, "create");
    CHECK_ST(hashevict_seq_add(e, 0), HASHEVICT_OK);
    slot_sim s;
    sim_init(&s, e, 0, &p, HASHEVICT_DTYPE_F32, LAYOUT_CONTIG, "explicit chunks");
    tu_rng data = tu_rng_make(1, 2, 3);
    /* a chunk larger than the budget can never fit */
    CHECK(sim_step(&s, &data, 25, 1) == HASHEVICT_ERR_CHUNK_TOO_LARGE, "25 tokens into 24 slots was accepted");
    /* prefill 24: slots 0..23 in token order, nothing evicted */
    CHECK(sim_step(&s, &data, 24, 1) == HASHEVICT_OK, "prefill of exactly the budget refused");
    CHECK(s.evictions == 0, "prefill evicted");
    /* positions 0..23 cached, t_last = 23+n: positions in [4, 13+n) are
     * evictable, so 21 tokens need 21 but only 20 are evictable */
    hashevict_stats before, after;
    memset(&before, 0, sizeof before);
    before.size = sizeof before;
    after = before;
    CHECK_ST(hashevict_stats_get(e, 0, &before), HASHEVICT_OK);
    int32_t pos_before[24], pos_after[24];
    CHECK_ST(hashevict_slot_positions(e, 0, 0, 0, pos_before, 24), HASHEVICT_OK);
    CHECK(sim_step(&s, &data, 21, 1) == HASHEVICT_ERR_CHUNK_TOO_LARGE, "21-token chunk with 20 evictable accepted");
    CHECK_ST(hashevict_slot_positions(e, 0, 0, 0, pos_after, 24), HASHEVICT_OK);
    CHECK(memcmp(pos_before, pos_after, sizeof pos_after) == 0, "a refused chunk changed the slots");
    CHECK_ST(hashevict_stats_get(e, 0, &after), HASHEVICT_OK);
    CHECK(memcmp(&before, &after, sizeof after) == 0, "a refused chunk changed the counters");
    /* 20 fit exactly: every evictable slot is taken, sinks and the window stay */
    CHECK(sim_step(&s, &data, 20, 1) == HASHEVICT_OK, "a 20-token chunk with 20 evictable refused");
    CHECK(s.evictions == 20, "20-token chunk: %llu evictions", (unsigned long long)s.evictions);
    /* decode steps after a chunk */
    for (int i = 0; i < 30 && !s.failed; i++) sim_step(&s, &data, 1, 1);
    sim_check_stats(&s);
    sim_free(&s);
    hashevict_engine_free(e);
}

/* ======================================================================== */
/* Token mode                                                               */
/* ======================================================================== */

typedef struct {
    int32_t pos;
    int64_t score;
} tcand;

static int tcand_cmp(const void *a, const void *b) {
    const tcand *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->pos < y->pos ? -1 : (x->pos > y->pos);
}

static int i32_cmp(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Decode in token mode; when `exact`, the evictions are predicted from the
 * codes (HASH, INSTANT, one token per step). */
static void token_run(const hashevict_params *p, int steps, int chunk_max, int exact, uint64_t data_seed,
                      const char *name) {
    int L = p->n_layers, H = p->n_kv_heads, Hq = p->n_q_heads, D = p->head_dim, W = (p->hash_bits + 63) / 64;
    int g = Hq / H;
    hashevict_engine *e = new_engine(p);
    if (!e) return;
    int seq = 3;
    if (!CHECK_ST(hashevict_seq_add(e, seq), HASHEVICT_OK)) {
        hashevict_engine_free(e);
        return;
    }
    int maxpos = steps * chunk_max + 8;
    /* per position: live flag, and per (layer, head) code */
    unsigned char *live = calloc((size_t)maxpos, 1);
    uint64_t *codes = calloc((size_t)maxpos * L * H * W, sizeof *codes);
    uint64_t *probe = calloc((size_t)L * H * g * W, sizeof *probe); /* latest probe per (l, h) */
    float *q = malloc((size_t)chunk_max * Hq * D * sizeof *q), *k = malloc((size_t)chunk_max * H * D * sizeof *k);
    uint64_t *qc = malloc((size_t)chunk_max * Hq * W * 8), *kc = malloc((size_t)chunk_max * H * W * 8);
    int32_t *positions = malloc((size_t)chunk_max * sizeof *positions);
    int32_t *outp = malloc((size_t)(p->budget + maxpos) * sizeof *outp);
    tcand *cands = malloc((size_t)maxpos * sizeof *cands);
    tu_rng data = tu_rng_make(data_seed, 1, 2);
    int32_t next = 0, t = -1;
    int nlive = 0, failed = 0;
    uint64_t total_evicted = 0, tokens = 0, steps_done = 0;
    int pending = 0; /* steps until the next evictions call */
    for (int step = 0; step < steps && !failed; step++) {
        int n = chunk_max > 1 ? 1 + (int)tu_below(&data, (uint32_t)chunk_max) : 1;
        for (int i = 0; i < n; i++) positions[i] = next++;
        t = positions[n - 1];
        for (int l = 0; l < L && !failed; l++) {
            gen_values(&data, q, (size_t)n * Hq * D, 1);
            gen_values(&data, k, (size_t)n * H * D, 1);
            if (exact && (!hash_rows(e, l, q, n, Hq, D, W, qc) || !hash_rows(e, l, k, n, H, D, W, kc))) {
                failed = 1;
                break;
            }
            hashevict_tensor tq = tu_tensor(q, HASHEVICT_DTYPE_F32, n, Hq, D);
            hashevict_tensor tk = tu_tensor(k, HASHEVICT_DTYPE_F32, n, H, D);
            if (!CHECK_ST(hashevict_observe(e, seq, l, &tq, &tk, positions, n), HASHEVICT_OK)) {
                failed = 1;
                break;
            }
            steps_done++;
            tokens += (uint64_t)n;
            if (exact) {
                for (int i = 0; i < n; i++)
                    for (int h = 0; h < H; h++)
                        memcpy(codes + (((size_t)positions[i] * L + l) * H + h) * W, kc + ((size_t)i * H + h) * W,
                               (size_t)W * 8);
                for (int h = 0; h < H; h++) {
                    if (p->probe == HASHEVICT_PROBE_KEY)
                        memcpy(probe + ((size_t)l * H + h) * g * W, kc + (size_t)h * W, (size_t)W * 8);
                    else
                        memcpy(probe + ((size_t)l * H + h) * g * W, qc + (size_t)h * g * W, (size_t)g * W * 8);
                }
            }
        }
        if (failed) break;
        for (int i = 0; i < n; i++) live[positions[i]] = 1;
        nlive += n;
        if (pending-- > 0) continue;
        pending = (int)tu_below(&data, 6);

        /* prediction */
        int32_t lo = p->n_sink, hi = t - p->n_recent;
        int nc = 0;
        for (int32_t x = lo; x < hi; x++) {
            if (!live[x]) continue;
            cands[nc].pos = x;
            cands[nc].score = 0;
            if (exact) {
                int np = p->probe == HASHEVICT_PROBE_KEY ? 1 : g;
                for (int l = 0; l < L; l++)
                    for (int h = 0; h < H; h++)
                        for (int j = 0; j < np; j++)
                            cands[nc].score += ham(codes + (((size_t)x * L + l) * H + h) * W,
                                                   probe + (((size_t)l * H + h) * g + j) * W, W);
            }
            nc++;
        }
        if (exact) qsort(cands, nc, sizeof *cands, tcand_cmp);
        int excess = nlive - p->budget;
        int want_n = excess > 0 ? (excess < nc ? excess : nc) : 0;
        /* the library, in calls of 1..4 */
        int got = 0;
        for (;;) {
            int cap = 1 + (int)tu_below(&data, 4);
            int32_t cnt = -1;
            if (!CHECK_ST(hashevict_evictions(e, seq, outp + got, cap, &cnt), HASHEVICT_OK)) {
                failed = 1;
                break;
            }
            if (cnt < 0 || cnt > cap) {
                CHECK(0, "%s: evictions count %d with capacity %d", name, cnt, cap);
                failed = 1;
                break;
            }
            for (int i = 1; i < cnt; i++)
                CHECK(outp[got + i - 1] < outp[got + i], "%s: evictions not ascending", name);
            got += cnt;
            if (cnt < cap) break;
        }
        if (failed) break;
        if (got != want_n) {
            CHECK(0, "%s: t=%d: %d positions evicted, want %d (live %d, budget %d, candidates %d)", name, t, got,
                  want_n, nlive, p->budget, nc);
            failed = 1;
        }
        for (int i = 0; i < got; i++) {
            int32_t x = outp[i];
            if (x < 0 || x >= maxpos || !live[x]) {
                CHECK(0, "%s: evicted position %d is not held", name, x);
                failed = 1;
                continue;
            }
            if (x < lo || x >= hi) {
                CHECK(0, "%s: evicted protected position %d (t = %d)", name, x, t);
                failed = 1;
            }
            live[x] = 0;
            nlive--;
        }
        total_evicted += (uint64_t)got;
        if (exact && !failed) {
            int32_t *w = malloc((size_t)(want_n + 1) * sizeof *w);
            for (int i = 0; i < want_n; i++) w[i] = cands[i].pos;
            qsort(w, want_n, sizeof *w, i32_cmp);
            qsort(outp, got, sizeof *outp, i32_cmp);
            for (int i = 0; i < want_n && i < got; i++)
                if (w[i] != outp[i]) {
                    CHECK(0, "%s: t=%d: evicted set differs from the model at %d: %d vs %d", name, t, i, outp[i],
                          w[i]);
                    failed = 1;
                    break;
                }
            free(w);
        }
        if (excess > 0 && nc >= excess) CHECK(nlive <= p->budget, "%s: %d positions kept > budget", name, nlive);
        /* token_positions agrees with the model */
        int32_t cnt = -1;
        if (!CHECK_ST(hashevict_token_positions(e, seq, outp, (int32_t)(p->budget + maxpos), &cnt), HASHEVICT_OK)) {
            failed = 1;
            break;
        }
        if (cnt != nlive) {
            CHECK(0, "%s: token_positions count %d, model %d", name, cnt, nlive);
            failed = 1;
        }
        int idx = 0;
        for (int32_t x = 0; x <= t && idx <= cnt; x++) {
            if (!live[x]) continue;
            if (idx >= cnt || outp[idx] != x) {
                CHECK(0, "%s: token_positions[%d] = %d, model %d", name, idx, idx < cnt ? outp[idx] : -1, x);
                failed = 1;
                break;
            }
            idx++;
        }
    }
    if (!failed) {
        hashevict_stats st;
        memset(&st, 0, sizeof st);
        st.size = sizeof st;
        if (CHECK_ST(hashevict_stats_get(e, seq, &st), HASHEVICT_OK)) {
            CHECK(st.evictions == total_evicted, "%s: stats.evictions %llu, want %llu", name,
                  (unsigned long long)st.evictions, (unsigned long long)total_evicted);
            CHECK(st.cached == (uint64_t)nlive, "%s: stats.cached %llu, want %d", name, (unsigned long long)st.cached,
                  nlive);
            CHECK(st.steps == steps_done, "%s: stats.steps %llu, want %llu", name, (unsigned long long)st.steps,
                  (unsigned long long)steps_done);
            CHECK(st.tokens == tokens, "%s: stats.tokens %llu, want %llu", name, (unsigned long long)st.tokens,
                  (unsigned long long)tokens);
            CHECK(st.state_bytes > 0, "%s: state_bytes 0", name);
        }
    }
    free(live);
    free(codes);
    free(probe);
    free(q);
    free(k);
    free(qc);
    free(kc);
    free(positions);
    free(outp);
    free(cands);
    hashevict_engine_free(e);
}

static void test_token_mode(void) {
    char name[128];
    static const int bitsv[] = {8, 32, 128, 256};
    for (int bi = 0; bi < 4; bi++)
        for (int g = 1; g <= 4; g *= 2)
            for (int probe = 0; probe < 2; probe++) {
                hashevict_params p = tu_params(HASHEVICT_MODE_TOKEN, 3, 2, 2 * g, 24, bitsv[bi], 20, 3, 4);
                p.probe = probe;
                p.seed = 5 + (uint64_t)bi;
                snprintf(name, sizeof name, "token hash bits=%d group=%d probe=%s", bitsv[bi], g,
                         probe ? "key" : "query");
                token_run(&p, 90, 1, 1, 77 + (uint64_t)bi * 3 + (uint64_t)g, name);
            }
    for (int pol = 0; pol <= 4; pol++)
        for (int score = 0; score < 3; score++) {
            hashevict_params p = tu_params(HASHEVICT_MODE_TOKEN, 2, 2, 4, 16, 16, 24, 4, 6);
            p.policy = pol;
            p.score = score;
            snprintf(name, sizeof name, "token %s score=%s chunks", policy_name[pol], score_name[score]);
            token_run(&p, 60, 4, 0, 8 + (uint64_t)pol, name);
        }
}

/* A position observed by only some layers is not a candidate. */
static void test_token_partial(void) {
    enum { L = 2, H = 1, D = 8 };
    hashevict_params p = tu_params(HASHEVICT_MODE_TOKEN, L, H, H, D, 16, 8, 1, 1);
    hashevict_engine *e = new_engine(&p);
    REQUIRE_V(e != NULL, "create");
    CHECK_ST(hashevict_seq_add(e, 0), HASHEVICT_OK);
    float x[D];
    tu_rng r = tu_rng_make(9, 9, 9);
    int32_t pos;
    /* positions 0..9 observed by both layers, 10..29 by layer 0 only */
    for (pos = 0; pos < 30; pos++)
        for (int l = 0; l < (pos < 10 ? L : 1); l++) {
            for (int i = 0; i < D; i++) x[i] = tu_gauss(&r);
            hashevict_tensor t = tu_tensor(x, HASHEVICT_DTYPE_F32, 1, H, D);
            CHECK_ST(hashevict_observe(e, 0, l, &t, &t, &pos, 1), HASHEVICT_OK);
        }
    int32_t out[64], cnt = -1;
    /* t = 29, protected: 0 and >= 28; candidates need both layers: 1..9 */
    CHECK_ST(hashevict_evictions(e, 0, out, 64, &cnt), HASHEVICT_OK);
    CHECK(cnt == 9, "partially observed: %d evictions, want 9 (positions 1..9)", cnt);
    for (int i = 0; i < cnt; i++)
        CHECK(out[i] >= 1 && out[i] <= 9, "evicted position %d, not observed by every layer or protected", out[i]);
    /* with capacity 0 only the count is asked for */
    CHECK_ST(hashevict_token_positions(e, 0, NULL, 0, &cnt), HASHEVICT_ERR_BUFFER_TOO_SMALL);
    CHECK(cnt == 21, "token_positions count %d, want 21", cnt);
    hashevict_engine_free(e);
}

/* ======================================================================== */
/* Sequences                                                                */
/* ======================================================================== */

static void test_seq_ops(void) {
    hashevict_params p = tu_params(HASHEVICT_MODE_SLOT, 2, 2, 4, 16, 32, 20, 2, 4);
    p.max_seqs = 8;
    p.seed = 5;
    hashevict_engine *e = new_engine(&p), *r1 = new_engine(&p), *r2 = new_engine(&p);
    if (!e || !r1 || !r2) goto out;
    CHECK_ST(hashevict_seq_add(e, 0), HASHEVICT_OK);
    CHECK_ST(hashevict_seq_add(r1, 0), HASHEVICT_OK);
    CHECK_ST(hashevict_seq_add(r2, 0), HASHEVICT_OK);
    slot_sim s, f, a, b;
    sim_init(&s, e, 0, &p, HASHEVICT_DTYPE_F32, LAYOUT_CONTIG, "fork src");
    sim_init(&a, r1, 0, &p, HASHEVICT_DTYPE_F32, LAYOUT_CONTIG, "reference A");
    sim_init(&b, r2, 0, &p, HASHEVICT_DTYPE_F32, LAYOUT_CONTIG, "reference B");
    tu_rng d0 = tu_rng_make(1, 1, 1);
    tu_rng da = d0, db = d0;
    sim_run(&s, &d0, 40, 2, 1);
    sim_run(&a, &da, 40, 2, 1);
    sim_run(&b, &db, 40, 2, 1);
    CHECK(traces_equal(&s.trace, &a.trace), "identical engines diverged before the fork");
    CHECK_ST(hashevict_seq_fork(e, 0, 5), HASHEVICT_OK);
    sim_clone(&f, &s, 5);
    f.name = "fork dst";
    sim_verify_positions(&f); /* the copy holds what the source held */
    /* the source continues with stream A, the copy with stream B */
    tu_rng ra = tu_rng_make(2, 2, 2), rb = tu_rng_make(3, 3, 3);
    tu_rng ra2 = ra, rb2 = rb;
    size_t s0 = s.trace.len, a0 = a.trace.len, b0 = b.trace.len;
    for (int i = 0; i < 30; i++) {
        sim_run(&s, &ra, 1, 1, 1);
        sim_run(&f, &rb, 1, 1, 1);
        sim_run(&a, &ra2, 1, 1, 1);
        sim_run(&b, &rb2, 1, 1, 1);
    }
    CHECK(s.trace.len - s0 == a.trace.len - a0 && !memcmp(s.trace.v + s0, a.trace.v + a0, (s.trace.len - s0) * 4),
          "after fork, the source's slots differ from an engine that never forked");
    CHECK(f.trace.len == b.trace.len - b0 && !memcmp(f.trace.v, b.trace.v + b0, f.trace.len * 4),
          "the forked copy's slots differ from an engine that ran its inputs");
    CHECK(!s.failed && !f.failed, "models disagree after fork");

    /* counters: engine-wide cached is the sum over sequences */
    hashevict_stats es;
    memset(&es, 0, sizeof es);
    es.size = sizeof es;
    if (CHECK_ST(hashevict_stats_get(e, -1, &es), HASHEVICT_OK)) {
        CHECK(es.n_sequences == 2, "engine stats: %d sequences, want 2", es.n_sequences);
        CHECK(es.cached == 2ull * 2 * 2 * 20, "engine stats: cached %llu, want %d (two full sequences)",
              (unsigned long long)es.cached, 2 * 2 * 2 * 20);
        CHECK(es.state_bytes > 0, "engine state_bytes 0");
        CHECK(es.steps >= s.calls + f.calls, "engine steps %llu < %llu", (unsigned long long)es.steps,
              (unsigned long long)(s.calls + f.calls));
    }

    /* reset: empty, positions may start again from 0 */
    CHECK_ST(hashevict_seq_reset(e, 5), HASHEVICT_OK);
    {
        int32_t buf[20];
        for (int l = 0; l < 2; l++)
            for (int h = 0; h < 2; h++)
                if (CHECK_ST(hashevict_slot_positions(e, 5, l, h, buf, 20), HASHEVICT_OK))
                    for (int i = 0; i < 20; i++) CHECK(buf[i] == -1, "after reset slot %d holds %d", i, buf[i]);
        hashevict_stats st;
        memset(&st, 0, sizeof st);
        st.size = sizeof st;
        if (CHECK_ST(hashevict_stats_get(e, 5, &st), HASHEVICT_OK)) {
            CHECK(st.cached == 0, "after reset cached = %llu", (unsigned long long)st.cached);
            /* "as if removed and added again": a re-added sequence starts
             * with zero counters */
            CHECK(st.steps == 0 && st.tokens == 0 && st.evictions == 0,
                        "after hashevict_seq_reset the sequence's stats keep steps=%llu tokens=%llu evictions=%llu; "
                        "a removed and re-added sequence would report 0",
                        (unsigned long long)st.steps, (unsigned long long)st.tokens,
                        (unsigned long long)st.evictions);
        }
        slot_sim z;
        sim_init(&z, e, 5, &p, HASHEVICT_DTYPE_F32, LAYOUT_CONTIG, "after reset");
        tu_rng dz = tu_rng_make(4, 4, 4);
        sim_run(&z, &dz, 30, 1, 1); /* positions restart at 0 */
        CHECK(!z.failed, "reset sequence misbehaves");
        sim_free(&z);
    }
    /* the source was not affected by the copy's reset */
    sim_verify_positions(&s);

    /* remove: gone, calls on it fail, the id can be added again (empty) */
    CHECK_ST(hashevict_seq_remove(e, 5), HASHEVICT_OK);
    {
        int32_t buf[20];
        CHECK_ST(hashevict_slot_positions(e, 5, 0, 0, buf, 20), HASHEVICT_ERR_UNKNOWN_SEQUENCE);
        CHECK_ST(hashevict_seq_remove(e, 5), HASHEVICT_ERR_UNKNOWN_SEQUENCE);
        CHECK_ST(hashevict_seq_reset(e, 5), HASHEVICT_ERR_UNKNOWN_SEQUENCE);
        CHECK_ST(hashevict_seq_fork(e, 5, 6), HASHEVICT_ERR_UNKNOWN_SEQUENCE);
        CHECK_ST(hashevict_seq_add(e, 5), HASHEVICT_OK);
        if (CHECK_ST(hashevict_slot_positions(e, 5, 1, 1, buf, 20), HASHEVICT_OK))
            for (int i = 0; i < 20; i++) CHECK(buf[i] == -1, "re-added sequence slot %d holds %d", i, buf[i]);
        memset(&es, 0, sizeof es);
        es.size = sizeof es;
        if (CHECK_ST(hashevict_stats_get(e, -1, &es), HASHEVICT_OK)) {
            CHECK(es.n_sequences == 2, "after remove+add: %d sequences", es.n_sequences);
            CHECK(es.cached == 2ull * 2 * 20, "after remove+add: cached %llu, want %d", (unsigned long long)es.cached,
                  2 * 2 * 20);
        }
    }
    /* fork of a token-mode sequence is deep too */
    sim_free(&s);
    sim_free(&f);
    sim_free(&a);
    sim_free(&b);
out:
    hashevict_engine_free(e);
    hashevict_engine_free(r1);
    hashevict_engine_free(r2);
}

static void test_token_fork(void) {
    enum { L = 2, H = 1, D = 8 };
    hashevict_params p = tu_params(HASHEVICT_MODE_TOKEN, L, H, H, D, 16, 12, 1, 2);
    hashevict_engine *e = new_engine(&p);
    REQUIRE_V(e != NULL, "create");
    CHECK_ST(hashevict_seq_add(e, 0), HASHEVICT_OK);
    float x[D];
    tu_rng r = tu_rng_make(4, 5, 6);
    for (int32_t pos = 0; pos < 20; pos++)
        for (int l = 0; l < L; l++) {
            for (int i = 0; i < D; i++) x[i] = tu_gauss(&r);
            hashevict_tensor t = tu_tensor(x, HASHEVICT_DTYPE_F32, 1, H, D);
            CHECK_ST(hashevict_observe(e, 0, l, &t, &t, &pos, 1), HASHEVICT_OK);
        }
    CHECK_ST(hashevict_seq_fork(e, 0, 1), HASHEVICT_OK);
    int32_t a[64], b[64], na = -1, nb = -1;
    CHECK_ST(hashevict_token_positions(e, 0, a, 64, &na), HASHEVICT_OK);
    CHECK_ST(hashevict_token_positions(e, 1, b, 64, &nb), HASHEVICT_OK);
    CHECK(na == 20 && nb == 20 && !memcmp(a, b, 20 * 4), "token fork: copy differs (%d vs %d)", na, nb);
    int32_t ev[64], ne = -1;
    CHECK_ST(hashevict_evictions(e, 1, ev, 64, &ne), HASHEVICT_OK);
    CHECK(ne == 8, "token fork: copy evicted %d, want 8", ne);
    CHECK_ST(hashevict_token_positions(e, 0, a, 64, &na), HASHEVICT_OK);
    CHECK(na == 20, "token fork: evicting in the copy changed the source (%d held)", na);
    CHECK_ST(hashevict_token_positions(e, 1, b, 64, &nb), HASHEVICT_OK);
    CHECK(nb == 12, "token fork: copy holds %d after evictions, want 12", nb);
    /* a second call has nothing left to evict */
    CHECK_ST(hashevict_evictions(e, 1, ev, 64, &ne), HASHEVICT_OK);
    CHECK(ne == 0, "second evictions call returned %d", ne);
    hashevict_engine_free(e);
}

/* Several sequences of one engine are independent. */
static void test_independent_sequences(void) {
    hashevict_params p = tu_params(HASHEVICT_MODE_SLOT, 1, 2, 2, 16, 16, 16, 2, 3);
    p.max_seqs = 4;
    hashevict_engine *e = new_engine(&p), *r = new_engine(&p);
    if (!e || !r) goto out;
    slot_sim s[4], ref;
    tu_rng d[4];
    for (int i = 0; i < 4; i++) {
        CHECK_ST(hashevict_seq_add(e, i), HASHEVICT_OK);
        sim_init(&s[i], e, i, &p, HASHEVICT_DTYPE_F32, LAYOUT_CONTIG, "multi-seq");
        d[i] = tu_rng_make(50, (uint64_t)i, 0);
    }
    for (int step = 0; step < 50; step++)
        for (int i = 0; i < 4; i++) sim_run(&s[i], &d[i], 1, 1, 1);
    CHECK_ST(hashevict_seq_add(r, 2), HASHEVICT_OK);
    sim_init(&ref, r, 2, &p, HASHEVICT_DTYPE_F32, LAYOUT_CONTIG, "multi-seq ref");
    tu_rng dr = tu_rng_make(50, 2, 0);
    sim_run(&ref, &dr, 50, 1, 1);
    CHECK(traces_equal(&ref.trace, &s[2].trace), "sequence 2 depends on its neighbours");
    for (int i = 0; i < 4; i++) sim_free(&s[i]);
    sim_free(&ref);
out:
    hashevict_engine_free(e);
    hashevict_engine_free(r);
}

/* stats with a short size field get only the prefix */
static void test_stats_prefix(void) {
    hashevict_params p = tu_params(HASHEVICT_MODE_SLOT, 1, 1, 1, 8, 16, 16, 2, 3);
    hashevict_engine *e = new_engine(&p);
    REQUIRE_V(e != NULL, "create");
    CHECK_ST(hashevict_seq_add(e, 0), HASHEVICT_OK);
    unsigned char raw[sizeof(hashevict_stats) + 8];
    memset(raw, 0xee, sizeof raw);
    uint32_t sz = (uint32_t)offsetof(hashevict_stats, state_bytes);
    memcpy(raw, &sz, 4);
    if (CHECK_ST(hashevict_stats_get(e, 0, (hashevict_stats *)(void *)raw), HASHEVICT_OK)) {
        int32_t nseq;
        memcpy(&nseq, raw + offsetof(hashevict_stats, n_sequences), 4);
        CHECK(nseq == 1, "stats prefix: n_sequences %d", nseq);
        int untouched = 1;
        for (size_t i = sz; i < sizeof raw; i++) untouched &= raw[i] == 0xee;
        CHECK(untouched, "stats_get wrote past out->size = %u", sz);
    }
    hashevict_stats st;
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    if (CHECK_ST(hashevict_stats_get(e, -1, &st), HASHEVICT_OK)) {
        CHECK(st.n_sequences == 1 && st.steps == 0 && st.tokens == 0 && st.evictions == 0 && st.cached == 0,
              "fresh engine stats not zero: seqs %d steps %llu", st.n_sequences, (unsigned long long)st.steps);
        CHECK(st.state_bytes > 0, "a sequence with budget 16 has state_bytes 0");
    }
    hashevict_engine_free(e);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_versions();
    test_defaults();
    test_status_strings();
    test_free_and_last_error();
    test_projection_and_codes();
    test_seeds();
    test_hash_inputs();
    test_slot_matrix();
    test_probe_key_without_q();
    test_dtypes_and_layouts();
    test_chunks();
    test_token_mode();
    test_token_partial();
    test_token_fork();
    test_seq_ops();
    test_independent_sequences();
    test_stats_prefix();
    return check_report("test_contract");
}
