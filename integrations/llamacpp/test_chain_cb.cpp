// test_chain_cb.cpp — hev_llama_attach must chain the cb_eval the caller had
// set, not replace it. Run by tests/integration/test_llamacpp.py:
//
//   hev-llama-test-chain <model.gguf> <text>
//
// The caller's callback here asks for nodes HashEvict does not want
// ("Vcur-<il>") and for one it also wants ("Kcur-0", post-RoPE), and checks
// the cb_eval contract from its side: it is asked about every node of the
// graph (as many asks as when it is alone), it is handed exactly the nodes it
// asked for, each right after asking, and never one it declined. HashEvict
// must still observe its 2 nodes per layer and cap the cache. Exit 0 and
// "chain: OK" on success; a message and exit 1 otherwise.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "ggml-backend.h"
#include "hashevict_llama.h"
#include "session.h"

namespace {

struct caller {
    long asks = 0, yes = 0, handed = 0, handed_unasked = 0;
    long k0_handed = 0, v_handed = 0;
    const ggml_tensor *last_yes = nullptr;
};

bool caller_wants(const ggml_tensor *t) {
    return std::strncmp(t->name, "Vcur-", 5) == 0 ||
           (std::strcmp(t->name, "Kcur-0") == 0 && t->op == GGML_OP_ROPE);
}

bool caller_cb(ggml_tensor *t, bool ask, void *ud) {
    auto *c = (caller *) ud;
    if (ask) {
        c->asks++;
        bool want = caller_wants(t);
        c->yes += want;
        c->last_yes = want ? t : nullptr;
        return want;
    }
    c->handed++;
    if (t != c->last_yes) {
        c->handed_unasked++;
        return true;
    }
    c->last_yes = nullptr;
    if (std::strcmp(t->name, "Kcur-0") == 0) c->k0_handed++;
    else c->v_handed++;
    return true;
}

int failures = 0;
void check(bool ok, const std::string &what) {
    std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
    if (!ok) failures++;
}

// Decodes toks in chunks on a fresh context; with hl, evicts after each step.
// Returns false when a llama or integration call fails.
bool decode_all(llama_model *model, const std::vector<llama_token> &toks, int chunk, uint32_t n_ctx,
                caller *c, hev_llama *hl, int32_t *dropped) {
    llama_context_params cp = llama_context_default_params();
    cp.n_threads = cp.n_threads_batch = 1;
    cp.n_batch = cp.n_ubatch = (uint32_t) chunk;
    cp.n_ctx = n_ctx;
    cp.n_seq_max = 1;
    cp.no_perf = true;
    cp.cb_eval = caller_cb;
    cp.cb_eval_user_data = c;
    if (hl) {
        hev_llama_attach(hl, &cp);
        hev_llama_attach(hl, &cp);  // a second attach must not chain hl to itself
    }
    llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        std::fprintf(stderr, "llama_init_from_model failed\n");
        return false;
    }
    llama_batch batch = llama_batch_init(chunk, 0, 1);
    bool ok = true;
    *dropped = 0;
    for (int p = 0; ok && p < (int) toks.size(); p += chunk) {
        int n = std::min(chunk, (int) toks.size() - p);
        std::vector<llama_pos> pos(n);
        batch.n_tokens = n;
        for (int i = 0; i < n; i++) {
            batch.token[i] = toks[p + i];
            batch.pos[i] = pos[i] = p + i;
            batch.n_seq_id[i] = 1;
            batch.seq_id[i][0] = 0;
            batch.logits[i] = i == n - 1;
        }
        if (hl && hev_llama_begin(hl, 0, pos.data(), n) != 0) ok = false;
        if (ok && llama_decode(ctx, batch) != 0) ok = false;
        int32_t d = 0;
        if (ok && hl && hev_llama_evict(hl, ctx, 0, &d) != 0) ok = false;
        *dropped += d;
        if (!ok) std::fprintf(stderr, "step at %d failed: %s\n", p, hl ? hev_llama_error(hl) : "llama_decode");
    }
    llama_batch_free(batch);
    llama_free(ctx);
    return ok;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s <model.gguf> <text>\n", argv[0]);
        return 2;
    }
    try {
        hev::init_llama();
        llama_model *model = hev::load_model(argv[1]);
        std::vector<llama_token> toks = hev::tokenize(llama_model_get_vocab(model), hev::read_file(argv[2]), true);
        const int n_tok = 96, chunk = 32, budget = 48;
        if ((int) toks.size() < n_tok) throw std::runtime_error("text too short");
        toks.resize(n_tok);
        const int n_layer = llama_model_n_layer(model);
        const uint32_t n_ctx = budget + chunk;

        caller alone;
        int32_t dropped = 0;
        check(decode_all(model, toks, chunk, n_ctx * 2, &alone, nullptr, &dropped), "decode without eviction");

        hashevict_params params = hashevict_default_params();
        params.budget = budget;
        char err[512] = {0};
        hev_llama *hl = hev_llama_new(model, &params, err, sizeof err);
        if (!hl) throw std::runtime_error(err);
        caller chained;
        check(decode_all(model, toks, chunk, n_ctx, &chained, hl, &dropped), "decode with eviction");
        hev_llama_stats st = hev_llama_get_stats(hl);
        int32_t held = 0;
        hashevict_token_positions(hev_llama_engine(hl), 0, nullptr, 0, &held);
        hev_llama_free(hl);

        const long steps = (n_tok + chunk - 1) / chunk;
        std::printf("alone: %ld asks, %ld handed; chained: %ld asks, %ld wanted, %ld handed "
                    "(Kcur-0 %ld, Vcur %ld); hashevict observed %llu nodes, dropped %d, holds %d\n",
                    alone.asks, alone.handed, chained.asks, chained.yes, chained.handed, chained.k0_handed,
                    chained.v_handed, (unsigned long long) st.nodes_observed, dropped, held);
        // llama.cpp names several nodes of a layer "Vcur-<il>" (projection,
        // reshape, ...): at least one per layer, plus Kcur-0, per step.
        check(alone.asks > 0 && alone.handed == alone.yes && alone.yes >= steps * (n_layer + 1),
              "alone, the caller gets every node it asked for");
        check(chained.asks == alone.asks, "chained, the caller is still asked about every node");
        check(chained.yes == alone.yes && chained.handed == chained.yes,
              "chained, the caller is handed every node it asked for");
        check(chained.handed_unasked == 0, "chained, the caller is never handed a node it declined");
        check(chained.k0_handed == steps, "a node both callbacks want reaches the caller too");
        // One node per layer and step: K is handed over, Q read with it.
        check(st.nodes_observed == (uint64_t) (n_layer * steps), "HashEvict still observes every layer");
        check(dropped == n_tok - budget && held == budget, "HashEvict still caps the cache at the budget");
        llama_model_free(model);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    if (failures) {
        std::printf("chain: %d FAILED\n", failures);
        return 1;
    }
    std::printf("chain: OK\n");
    return 0;
}
