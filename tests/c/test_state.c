/* Saved state through the C ABI: a sequence saved from one engine and loaded
 * into another decides exactly as the original from then on; truncated,
 * corrupted, foreign or mismatched blobs are refused with the documented
 * status and leave the target unchanged. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "testutil.h"

enum { L = 2, KV = 2, QH = 4, D = 16 };

/* One decode step on every layer; appends the chosen slots or evictions to
 * trace (token mode) and returns 1 on success. */
static int step(hashevict_engine *e, int mode, int32_t seq, int32_t pos, tu_rng *r, int32_t *trace, int *n) {
    float q[QH * D], k[KV * D];
    for (int layer = 0; layer < L; layer++) {
        for (int i = 0; i < QH * D; i++) q[i] = tu_gauss(r);
        for (int i = 0; i < KV * D; i++) k[i] = tu_gauss(r);
        hashevict_tensor tq = tu_tensor(q, HASHEVICT_DTYPE_F32, 1, QH, D);
        hashevict_tensor tk = tu_tensor(k, HASHEVICT_DTYPE_F32, 1, KV, D);
        hashevict_status st;
        if (mode == HASHEVICT_MODE_SLOT) {
            st = hashevict_place(e, seq, layer, &tq, &tk, &pos, 1, trace + *n, NULL);
            *n += KV;
        } else {
            st = hashevict_observe(e, seq, layer, &tq, &tk, &pos, 1);
        }
        if (!CHECK_ST(st, HASHEVICT_OK)) return 0;
    }
    if (mode == HASHEVICT_MODE_TOKEN) {
        int32_t got = 0;
        if (!CHECK_ST(hashevict_evictions(e, seq, trace + *n, 8, &got), HASHEVICT_OK)) return 0;
        *n += got;
    }
    return 1;
}

static unsigned char *save(hashevict_engine *e, int32_t seq, size_t *size) {
    if (!CHECK_ST(hashevict_seq_state_size(e, seq, size), HASHEVICT_OK)) return NULL;
    unsigned char *buf = malloc(*size);
    size_t written = 0;
    if (!CHECK_ST(hashevict_seq_state_save(e, seq, buf, *size, &written), HASHEVICT_OK)) {
        free(buf);
        return NULL;
    }
    CHECK(written == *size, "wrote %zu bytes, size said %zu", written, *size);
    return buf;
}

static void round_trip(int mode) {
    hashevict_params p = tu_params(mode, L, KV, QH, D, 32, 40, 4, 10);
    p.score = HASHEVICT_SCORE_DECAYED;
    hashevict_engine *a = NULL, *b = NULL;
    if (!CHECK_ST(hashevict_engine_create(&p, &a), HASHEVICT_OK) ||
        !CHECK_ST(hashevict_engine_create(&p, &b), HASHEVICT_OK))
        return;
    CHECK_ST(hashevict_seq_add(a, 0), HASHEVICT_OK);
    tu_rng r = tu_rng_make(1, 2, 3);
    static int32_t ta[4096], tb[4096];
    int na = 0, nb = 0;
    for (int32_t pos = 0; pos < 120; pos++) step(a, mode, 0, pos, &r, ta, &na);
    size_t size = 0;
    unsigned char *blob = save(a, 0, &size);
    if (!blob) return;
    CHECK_ST(hashevict_seq_state_load(b, 7, blob, size), HASHEVICT_OK);
    /* Same inputs from here: same decisions. */
    tu_rng ra = tu_rng_make(9, 9, 9), rb = tu_rng_make(9, 9, 9);
    na = nb = 0;
    for (int32_t pos = 120; pos < 300; pos++) {
        step(a, mode, 0, pos, &ra, ta, &na);
        step(b, mode, 7, pos, &rb, tb, &nb);
    }
    CHECK(na == nb && memcmp(ta, tb, sizeof(int32_t) * (size_t)na) == 0,
          "mode %d: restored sequence decided differently (%d vs %d decisions)", mode, na, nb);

    /* Buffer too small: the size needed is reported, nothing written. */
    size_t written = 0;
    unsigned char small[8] = {0};
    CHECK_ST(hashevict_seq_state_save(a, 0, small, sizeof small, &written), HASHEVICT_ERR_BUFFER_TOO_SMALL);
    CHECK(written > sizeof small, "needed size %zu", written);
    CHECK(strstr(hashevict_last_error(), "bytes") != NULL, "message: %s", hashevict_last_error());

    /* Refusals leave the target as it was. */
    size_t before_size = 0;
    unsigned char *before = save(b, 7, &before_size);
    unsigned char *bad = malloc(size);
    memcpy(bad, blob, size);
    bad[size / 2] ^= 0x40;
    CHECK_ST(hashevict_seq_state_load(b, 7, bad, size), HASHEVICT_ERR_CORRUPT_STATE);
    CHECK_ST(hashevict_seq_state_load(b, 7, blob, size - 3), HASHEVICT_ERR_CORRUPT_STATE);
    CHECK_ST(hashevict_seq_state_load(b, 7, "not a state blob at all, just text", 34), HASHEVICT_ERR_CORRUPT_STATE);
    CHECK_ST(hashevict_seq_state_load(b, 7, blob, 0), HASHEVICT_ERR_CORRUPT_STATE);
    memcpy(bad, blob, size);
    bad[4] = 99; /* format version */
    CHECK_ST(hashevict_seq_state_load(b, 7, bad, size), HASHEVICT_ERR_INCOMPATIBLE_STATE);
    size_t after_size = 0;
    unsigned char *after = save(b, 7, &after_size);
    CHECK(before && after && before_size == after_size && memcmp(before, after, before_size) == 0,
          "a refused load changed the sequence");

    /* Another engine shape or seed: incompatible. */
    hashevict_params q = p;
    q.seed = 5;
    hashevict_engine *c = NULL;
    if (CHECK_ST(hashevict_engine_create(&q, &c), HASHEVICT_OK)) {
        CHECK_ST(hashevict_seq_state_load(c, 0, blob, size), HASHEVICT_ERR_INCOMPATIBLE_STATE);
        CHECK(strstr(hashevict_last_error(), "parameters") != NULL, "message: %s", hashevict_last_error());
    }
    hashevict_engine_free(c);

    /* Bad arguments. */
    CHECK_ST(hashevict_seq_state_size(a, 0, NULL), HASHEVICT_ERR_INVALID_ARGUMENT);
    CHECK_ST(hashevict_seq_state_save(a, 0, NULL, 100, NULL), HASHEVICT_ERR_INVALID_ARGUMENT);
    CHECK_ST(hashevict_seq_state_load(a, 0, NULL, 100), HASHEVICT_ERR_INVALID_ARGUMENT);
    CHECK_ST(hashevict_seq_state_size(a, 3, &size), HASHEVICT_ERR_UNKNOWN_SEQUENCE);
    CHECK_ST(hashevict_seq_state_load(a, -1, blob, size), HASHEVICT_ERR_OUT_OF_RANGE);
    CHECK_ST(hashevict_seq_state_size(NULL, 0, &size), HASHEVICT_ERR_INVALID_HANDLE);
    CHECK(strcmp(hashevict_status_string(HASHEVICT_ERR_CORRUPT_STATE), "HASHEVICT_ERR_CORRUPT_STATE") == 0 &&
              strcmp(hashevict_status_string(HASHEVICT_ERR_INCOMPATIBLE_STATE), "HASHEVICT_ERR_INCOMPATIBLE_STATE") == 0,
          "status strings");
    free(blob);
    free(bad);
    free(before);
    free(after);
    hashevict_engine_free(a);
    hashevict_engine_free(b);
}

int main(void) {
    round_trip(HASHEVICT_MODE_SLOT);
    round_trip(HASHEVICT_MODE_TOKEN);
    return check_report("test_state");
}
