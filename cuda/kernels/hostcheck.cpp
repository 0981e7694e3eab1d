// A host build of the device kernels' arithmetic (hashevict_math.cuh), for
// the Go tests (cuda/hostcheck_test.go), which build it with the system C++
// compiler (-ffp-contract=off) and compare every result bit for bit with
// the generic Go kernels of package simd. Each function walks its data in
// the order one GPU thread does and folds results the way the kernel's
// reductions do (the max of hev_key is the same under any grouping; the
// lane fold is hev_fold16, which the kernel's shuffles follow).
#include "hashevict_math.cuh"

extern "C" {

// hev_host_hash is hev_hash for contiguous rows [nrows][dim]: codes
// [nrows][words]; returns the first row holding NaN or Inf, or -1 (such
// rows get a zero code, as on the device).
long long hev_host_hash(const void *rows, int dtype, long long nrows, int dim, const float *rt, int bits,
                        uint64_t *codes) {
    static float xs[4096];
    int words = hev_words(bits);
    int esize = dtype == HEV_F32 ? 4 : 2;
    long long bad = -1;
    for (long long r = 0; r < nrows; r++) {
        const char *src = (const char *)rows + r * dim * esize;
        int finite = 1;
        for (int i = 0; i < dim; i++) {
            xs[i] = hev_load(src, dtype, i);
            finite &= hev_finite(xs[i]);
        }
        uint64_t *code = codes + r * words;
        for (int w = 0; w < words; w++) code[w] = 0;
        if (!finite) {
            if (bad < 0) bad = r;
            continue;
        }
        for (int j = 0; j < bits; j++) {
            float lane[HEV_LANES];
            for (int l = 0; l < HEV_LANES; l++) lane[l] = hev_lane_sum(xs, rt + (long long)j * dim, dim, l);
            if (hev_fold16(lane) >= 0.0f) code[j >> 6] |= (uint64_t)1 << (j & 63);
        }
    }
    return bad;
}

// hev_host_farthest is hev_farthest (then hev_keys_to_slots) for one head
// run by `threads` threads in all: narrow tables word by word, wide ones
// code by code.
int hev_host_farthest(const uint64_t *table, int bits, int slots, const uint64_t *probes, int np,
                      const int32_t *skip, int ns, int threads) {
    // As `threads` device threads would, each a grid-stride walk with its
    // own skip cursor, then the maximum of their keys.
    uint64_t best = 0;
    int k = hev_narrow(bits) ? 64 / bits : 1;
    int items = hev_narrow(bits) ? (int)(((long long)slots * bits + 63) / 64) : slots;
    for (int first = 0; first < threads; first++) {
        int cur = hev_skip_start(skip, ns, first * k);
        for (int it = first; it < items; it += threads) {
            if (hev_narrow(bits)) {
                for (int c = 0; c < k; c++) {
                    int slot = it * k + c;
                    if (slot >= slots) break;
                    uint32_t d = hev_narrow_dist(hev_narrow_code(table[it], c, bits), probes, np, bits);
                    if (!hev_skip_next(skip, ns, &cur, slot)) best = hev_key_max(best, hev_key(d, slot));
                }
            } else {
                int w = bits / 64;
                uint32_t d = hev_wide_dist(table + (long long)it * w, w, probes, np);
                if (!hev_skip_next(skip, ns, &cur, it)) best = hev_key_max(best, hev_key(d, it));
            }
        }
    }
    return hev_key_slot(best);
}

// hev_host_score_step is hev_score_step for one head run by `threads`
// threads (with the launcher's inv and keep); returns the victim, or -1
// (also when argmax is 0).
int hev_host_score_step(float *score, uint32_t *count, const uint64_t *table, int bits, int slots,
                        const uint64_t *probes, int np, int tokens, int mode, float decay, const int32_t *skip,
                        int ns, int argmax, int threads) {
    float inv = 1.0f / (float)tokens, keep = 1.0f - decay;
    uint64_t best = 0;
    for (int first = 0; first < threads; first++) {
    int cur = hev_skip_start(skip, ns, first);
    for (int slot = first; slot < slots; slot += threads) {
        uint32_t d;
        if (hev_narrow(bits)) {
            int k = 64 / bits;
            d = hev_narrow_dist(hev_narrow_code(table[slot / k], slot % k, bits), probes, np, bits);
        } else {
            int w = bits / 64;
            d = hev_wide_dist(table + (long long)slot * w, w, probes, np);
        }
        uint32_t c = mode == HEV_ACCUMULATED ? count[slot] : 0;
        float v = hev_update(mode, score[slot], &c, d, inv, decay, keep);
        score[slot] = v;
        if (mode == HEV_ACCUMULATED) count[slot] = c;
        if (argmax && !hev_skip_next(skip, ns, &cur, slot)) best = hev_key_max(best, hev_key(hev_score_order(v), slot));
    }
    }
    return hev_key_slot(best);
}

// hev_host_new_score is hev_store's score of a new code (wide form).
float hev_host_new_score(const uint64_t *code, int bits, const uint64_t *probes, int np, int tokens) {
    int words = hev_words(bits);
    uint32_t d = 0;
    for (int p = 0; p < np; p++) d += hev_wide_dist(code, words, probes + (long long)p * words, 1);
    return hev_step_distance(d, 1.0f / (float)tokens);
}

// hev_host_totals is hev_token_totals with the tables contiguous.
void hev_host_totals(const float *scores, int tables, int slots, double *totals) {
    for (int i = 0; i < slots; i++) {
        double t = 0.0;
        for (int k = 0; k < tables; k++) t = hev_dadd(t, (double)scores[(long long)k * slots + i]);
        totals[i] = t;
    }
}
}

extern "C" {

// The guard helpers as hev_store and hev_guard use them.
void hev_host_guard_init(int32_t *g, int n_sink, int n_recent) { hev_guard_init(g, n_sink, n_recent); }

void hev_host_guard_stored(int32_t *g, int n_sink, int n_recent, int32_t slot, int32_t pos) {
    hev_guard_stored(g, n_sink, n_recent, slot, pos);
}

int hev_host_guard_skip(const int32_t *g, int n_sink, int n_recent, const int32_t *pos, int32_t hi, int32_t *skip) {
    return hev_guard_skip(g, n_sink, n_recent, pos, hi, skip);
}
}
