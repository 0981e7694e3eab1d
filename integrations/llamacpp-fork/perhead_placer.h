// perhead_placer.h — the fork's per-KV-head placer (glue/hashevict-kv) for the integration's
// programs when they are built against the patched llama.cpp (hashevict-eval-fork and
// hashevict-run-fork, integrations/llamacpp/CMakeLists.txt). It is set up from the same
// hashevict_params that the token-mode session takes, so that a config means the same policy,
// probe, score, bits and protections on both runtimes; only where the decision is made differs.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "hashevict-kv.h"
#include "hashevict.h"
#include "llama.h"

namespace hev_fork {

// Owns one hashevict_kv; it must outlive every context that uses get().
class placer {
  public:
    // budget: KV cells per sequence (every layer and KV head holds this many); n_ctx: the
    // positions of one sequence. Bad settings throw with the library's message.
    placer(const llama_model *model, const hashevict_params &hp, int budget, int n_ctx) {
        hashevict_kv_config cfg;
        cfg.enabled = true;
        cfg.policy = hp.policy;
        cfg.budget = budget;
        cfg.bits = hp.hash_bits;
        cfg.probe = hp.probe;
        cfg.score = hp.score;
        cfg.sink = hp.n_sink;
        cfg.recent = hp.n_recent;
        cfg.seed = hp.seed;
        std::string err;
        kv_ = hashevict_kv_init(model, cfg, 1, (uint32_t) n_ctx, err);
        if (!kv_) throw std::runtime_error("per-head placer: " + err);
    }
    ~placer() { hashevict_kv_free(kv_); }
    placer(const placer &) = delete;
    placer &operator=(const placer &) = delete;

    const llama_kv_placer *get() const { return hashevict_kv_placer(kv_); }
    int cells() const { return (int) get()->n_slots; }
    // Placements that failed: their tokens went to llama.cpp's own cells, every head alike,
    // so a run with failures is not a per-head run and its figures must not be reported.
    int64_t failures() const { return hashevict_kv_failures(kv_); }

  private:
    hashevict_kv *kv_ = nullptr;
};

// Whether the fork accepts the model with a placer (it refuses sliding-window, recurrent and
// hybrid memory at context creation, with its reason in llama.cpp's log): a tiny context is
// created and freed.
inline bool accepts(llama_model *model) {
    hashevict_params hp = hashevict_default_params();
    placer p(model, hp, 32, 64);
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 64;
    cp.n_batch = cp.n_ubatch = 32;
    cp.n_seq_max = 1;
    cp.no_perf = true;
    cp.kv_placer = p.get();
    llama_context *ctx = llama_init_from_model(model, cp);
    llama_free(ctx);
    return ctx != nullptr;
}

}  // namespace hev_fork
