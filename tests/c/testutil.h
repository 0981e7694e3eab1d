/*
 * testutil.h — helpers shared by the C tests: a deterministic generator,
 * exact f32 -> f16/bf16 conversion, tensor descriptors and parameters.
 * Header-only; every function is static.
 */
#ifndef HASHEVICT_TEST_UTIL_H
#define HASHEVICT_TEST_UTIL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hashevict.h"

/* ---- deterministic random numbers (splitmix64) ------------------------- */

typedef struct {
    uint64_t s;
} tu_rng;

static inline uint64_t tu_next(tu_rng *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline tu_rng tu_rng_make(uint64_t a, uint64_t b, uint64_t c) {
    tu_rng r = {a * 0x100000001B3ull ^ (b << 21) ^ (c << 42) ^ 0x5bd1e995u};
    tu_next(&r);
    return r;
}

/* Uniform in [0, n). */
static inline uint32_t tu_below(tu_rng *r, uint32_t n) {
    return (uint32_t)((tu_next(r) >> 32) % n);
}

/* A value exactly representable in f32, f16 and bf16: k/8, |k| <= 32. */
static inline float tu_small(tu_rng *r) {
    return (float)((int)tu_below(r, 64) - 32) / 8.0f;
}

/* Roughly standard normal (Irwin-Hall of 12 uniforms), no libm needed. */
static inline float tu_gauss(tu_rng *r) {
    double s = 0;
    for (int i = 0; i < 12; i++) s += (double)(tu_next(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(s - 6.0);
}

/* ---- half precision ------------------------------------------------------ */

static inline uint32_t tu_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float tu_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* IEEE binary16 of f, rounded to nearest even; *exact is cleared when f is
 * not representable. Used with representable values only. */
static inline uint16_t tu_f32_to_f16(float f, int *exact) {
    uint32_t u = tu_f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    int32_t e = (int32_t)((u >> 23) & 0xff);
    uint32_t m = u & 0x7fffffu;
    if (e == 0xff) return (uint16_t)(sign | 0x7c00u | (m ? 0x200u : 0));
    if (e == 0 && m == 0) return sign;
    int32_t he = e - 127 + 15;
    uint32_t full = m | 0x800000u; /* 24 significant bits */
    uint32_t shift;
    if (he >= 0x1f) {
        if (exact) *exact = 0;
        return (uint16_t)(sign | 0x7c00u);
    }
    if (he <= 0) {
        shift = (uint32_t)(14 - he); /* subnormal: value = mant * 2^-24 */
        if (shift > 31) {
            if (exact) *exact = 0;
            return sign;
        }
        he = 0;
    } else {
        shift = 13;
    }
    uint32_t mant = full >> shift;
    uint32_t rest = full & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rest != 0 && exact) *exact = 0;
    if (rest > half || (rest == half && (mant & 1))) mant++;
    if (he == 0) return (uint16_t)(sign | mant); /* may round up into the normals */
    /* mant holds the implicit bit at 0x400; carry into the exponent is fine. */
    return (uint16_t)(sign | (((uint32_t)he << 10) + (mant - 0x400u)));
}

static inline float tu_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ffu;
    if (e == 0x1f) return tu_bits_f32(sign | 0x7f800000u | (m << 13));
    if (e != 0) return tu_bits_f32(sign | ((e + 112) << 23) | (m << 13));
    float v = (float)m / 16777216.0f; /* m * 2^-24, exact */
    return sign ? -v : v;
}

static inline uint16_t tu_f32_to_bf16(float f, int *exact) {
    uint32_t u = tu_f32_bits(f);
    if ((u & 0xffffu) != 0 && exact) *exact = 0;
    if ((u & 0x7f800000u) == 0x7f800000u) return (uint16_t)(u >> 16);
    uint32_t r = u + 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(r >> 16);
}

/* ---- tensors ---------------------------------------------------------- */

static inline size_t tu_dtype_size(int dtype) { return dtype == HASHEVICT_DTYPE_F32 ? 4 : 2; }

/* A contiguous [n_tokens][n_heads][dim] descriptor over data. */
static inline hashevict_tensor tu_tensor(const void *data, int dtype, int64_t n_tokens,
                                  int64_t n_heads, int64_t dim) {
    hashevict_tensor t;
    memset(&t, 0, sizeof t);
    int64_t es = (int64_t)tu_dtype_size(dtype);
    t.data = data;
    t.dtype = dtype;
    t.device = HASHEVICT_DEVICE_HOST;
    t.head_dim = dim;
    t.n_heads = n_heads;
    t.n_tokens = n_tokens;
    t.head_stride = dim * es;
    t.token_stride = n_heads * dim * es;
    t.stream = NULL;
    return t;
}

/* Writes the element (token, head, i) of x (row-major floats
 * [n_tokens][n_heads][dim]) into a buffer laid out by the strides of t
 * (data relative to base), converted to t's dtype. Returns 0 when a value is
 * not exactly representable. */
static inline int tu_store(unsigned char *base, const hashevict_tensor *t, const float *x) {
    int exact = 1;
    size_t es = tu_dtype_size(t->dtype);
    for (int64_t tok = 0; tok < t->n_tokens; tok++)
        for (int64_t h = 0; h < t->n_heads; h++)
            for (int64_t i = 0; i < t->head_dim; i++) {
                float v = x[(tok * t->n_heads + h) * t->head_dim + i];
                unsigned char *dst = base + tok * t->token_stride + h * t->head_stride + i * (int64_t)es;
                if (t->dtype == HASHEVICT_DTYPE_F32) {
                    memcpy(dst, &v, 4);
                } else {
                    uint16_t b = t->dtype == HASHEVICT_DTYPE_F16 ? tu_f32_to_f16(v, &exact)
                                                                 : tu_f32_to_bf16(v, &exact);
                    memcpy(dst, &b, 2);
                }
            }
    return exact;
}

/* ---- parameters ------------------------------------------------------- */

static inline hashevict_params tu_params(int mode, int n_layers, int n_kv, int n_q, int dim,
                                  int bits, int budget, int n_sink, int n_recent) {
    hashevict_params p = hashevict_default_params();
    p.mode = mode;
    p.n_layers = n_layers;
    p.n_kv_heads = n_kv;
    p.n_q_heads = n_q;
    p.head_dim = dim;
    p.hash_bits = bits;
    p.budget = budget;
    p.n_sink = n_sink;
    p.n_recent = n_recent;
    return p;
}

static inline int tu_popcount64(uint64_t x) {
    int n = 0;
    while (x) {
        x &= x - 1;
        n++;
    }
    return n;
}

#endif /* HASHEVICT_TEST_UTIL_H */
