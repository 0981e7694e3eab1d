// session.h — what hashevict-run and hashevict-eval share: loading llama.cpp
// and a model, and one llama_context that decodes a token stream in steps,
// optionally with HashEvict capping its cache.
#ifndef HASHEVICT_LLAMA_SESSION_H
#define HASHEVICT_LLAMA_SESSION_H

#include <stdexcept>
#include <string>
#include <vector>

#include "ggml-cpu.h"
#include "hashevict_llama.h"
#include "llama.h"

namespace hev {

// Loads the ggml backends (from $LLAMA_LIB_DIR or the directory compiled in)
// and silences llama.cpp's log below errors. Call once.
void init_llama();

llama_model *load_model(const std::string &path);
std::string read_file(const std::string &path);
std::vector<llama_token> tokenize(const llama_vocab *vocab, const std::string &text, bool add_bos);
std::string detokenize(const llama_vocab *vocab, const std::vector<llama_token> &toks);
double log_softmax_at(const float *logits, int n_vocab, llama_token target);
llama_token argmax(const float *logits, int n_vocab);

// hashevict_compress_form from its name: cosine | distance | softmax,
// optionally followed by +local and/or +trailing. Throws
// std::runtime_error naming the choices on anything else.
int parse_compress_form(const std::string &name);
// The name of a form parse_compress_form accepts ("cosine+local+trailing").
std::string compress_form_name(int form);

struct session_options {
    int chunk = 64;          // most tokens per step (n_batch = n_ubatch)
    int threads = 2;
    bool threadpool = true;  // one ggml threadpool for the context's life
    int n_ctx = 0;           // full cache: the stream length; evicting: ignored
    const hashevict_params *evict = nullptr;  // NULL: full cache
    // Compress after prefill (with evict): the first `prefill` tokens are
    // read without eviction, keeping the queries of the last `window`; then
    // compress() scores with them (pool, form: hashevict_compress_score) and
    // drops to the budget. 0: streaming, the cache capped from the start.
    int prefill = 0;
    int window = 32;
    int pool = 11;
    int form = HASHEVICT_COMPRESS_COSINE;
    // Optional graph callback of the caller, with the usual cb_eval
    // contract (asked about every node, handed the ones it asks for); with
    // eviction on, hev_llama_attach chains it.
    ggml_backend_sched_eval_callback extra_cb = nullptr;
    void *extra_cb_data = nullptr;
#ifdef LLAMA_KV_PLACER
    // Built against the per-head fork (integrations/llamacpp-fork): a placer
    // that picks each KV head's cell inside llama_decode, before attention.
    // The cache then holds kv_placer->n_slots cells and n_ctx stays the
    // positions limit; evict must be NULL (no token mode on top). The placer
    // must outlive the session.
    const llama_kv_placer *kv_placer = nullptr;
#endif
};

// One llama_context on sequence 0. Throws std::runtime_error on failure.
class session {
  public:
    session(llama_model *model, const session_options &opts);
    ~session();
    session(const session &) = delete;
    session &operator=(const session &) = delete;

    // Decodes tk[0..n) at positions start.. as one step (n <= chunk), then
    // evicts when eviction is on. Logits for every token when all_logits,
    // else for the last only.
    void step(const llama_token *tk, int start, int n, bool all_logits);
    const float *logits(int i) const { return llama_get_logits_ith(ctx_, i); }

    // Compress after prefill: call once, after the first opts.prefill
    // tokens were stepped; returns the positions dropped.
    int compress();

    int held() const;  // positions held after the last step
    uint32_t n_ctx() const { return llama_n_ctx(ctx_); }
    size_t state_bytes() const { return llama_state_seq_get_size(ctx_, 0); }
    hev_llama_stats stats() const;
    bool evicting() const { return hl_ != nullptr; }

  private:
    session_options opts_;
    hev_llama *hl_ = nullptr;
    llama_context *ctx_ = nullptr;
    ggml_threadpool *tp_ = nullptr;
    llama_batch batch_{};
    int fed_ = 0;
    bool compressed_ = false;
};

}  // namespace hev

#endif
