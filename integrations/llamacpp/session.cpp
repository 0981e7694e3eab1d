#include "session.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "ggml-backend.h"

#ifndef HEV_LLAMA_LIB_DIR
#define HEV_LLAMA_LIB_DIR ""
#endif

namespace hev {

namespace {

void quiet_log(ggml_log_level level, const char *text, void *) {
    if (level >= GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

// The CPU backend is a loaded module, so its threadpool functions come by
// name. Without a threadpool, ggml starts and joins worker threads for every
// graph split, and the eviction callback splits the graph at every observed
// node (2 per layer): that made single-token decode ~5x slower.
template <typename F> F cpu_proc(const char *name) {
    ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (!dev) return nullptr;
    return (F) ggml_backend_reg_get_proc_address(ggml_backend_dev_backend_reg(dev), name);
}

}  // namespace

void init_llama() {
    llama_log_set(quiet_log, nullptr);
    const char *dir = std::getenv("LLAMA_LIB_DIR");
    ggml_backend_load_all_from_path(dir && *dir ? dir : HEV_LLAMA_LIB_DIR);
    llama_backend_init();
}

llama_model *load_model(const std::string &path) {
    llama_model *m = llama_model_load_from_file(path.c_str(), llama_model_default_params());
    if (!m) throw std::runtime_error("cannot load model " + path);
    return m;
}

std::string read_file(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error("cannot read " + path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

std::vector<llama_token> tokenize(const llama_vocab *vocab, const std::string &text, bool add_bos) {
    int n = -llama_tokenize(vocab, text.data(), (int32_t) text.size(), nullptr, 0, add_bos, false);
    std::vector<llama_token> toks(std::max(n, 0));
    if (n > 0 && llama_tokenize(vocab, text.data(), (int32_t) text.size(), toks.data(), n, add_bos, false) < 0)
        throw std::runtime_error("tokenization failed");
    return toks;
}

std::string detokenize(const llama_vocab *vocab, const std::vector<llama_token> &toks) {
    std::string out;
    char buf[256];
    for (llama_token t : toks) {
        int n = llama_token_to_piece(vocab, t, buf, sizeof buf, 0, false);
        if (n > 0) out.append(buf, n);
    }
    return out;
}

double log_softmax_at(const float *logits, int n_vocab, llama_token target) {
    float mx = *std::max_element(logits, logits + n_vocab);
    double z = 0;
    for (int i = 0; i < n_vocab; i++) z += std::exp((double) logits[i] - mx);
    return (double) logits[target] - mx - std::log(z);
}

llama_token argmax(const float *logits, int n_vocab) {
    return (llama_token) (std::max_element(logits, logits + n_vocab) - logits);
}

session::session(llama_model *model, const session_options &opts) : opts_(opts) {
#ifdef LLAMA_KV_PLACER
    if (opts.kv_placer && opts.evict) throw std::runtime_error("session: kv_placer and token-mode eviction are exclusive");
#endif
    llama_context_params cp = llama_context_default_params();
    cp.n_threads = cp.n_threads_batch = opts.threads;
    cp.n_batch = cp.n_ubatch = (uint32_t) opts.chunk;
    cp.n_seq_max = 1;
    cp.no_perf = true;
    // Set before hev_llama_attach, which chains it.
    cp.cb_eval = opts.extra_cb;
    cp.cb_eval_user_data = opts.extra_cb_data;
    if (opts.evict) {
        char err[512];
        hl_ = hev_llama_new(model, opts.evict, err, sizeof err);
        if (!hl_) throw std::runtime_error(err);
        hev_llama_attach(hl_, &cp);
        // The cache holds the budget (or the prompt read whole before a
        // compression) plus one step's tokens before eviction.
        cp.n_ctx = (uint32_t) (std::max(opts.evict->budget, opts.prefill) + opts.chunk);
    } else {
        cp.n_ctx = (uint32_t) opts.n_ctx;
    }
#ifdef LLAMA_KV_PLACER
    cp.kv_placer = opts.kv_placer;
#endif
    ctx_ = llama_init_from_model(model, cp);
    if (!ctx_) {
        hev_llama_free(hl_);
        throw std::runtime_error("llama_init_from_model failed");
    }
    if (opts.threadpool) {
        auto tp_new = cpu_proc<ggml_threadpool *(*)(ggml_threadpool_params *)>("ggml_threadpool_new");
        if (tp_new) {
            ggml_threadpool_params tpp = ggml_threadpool_params_default(opts.threads);
            tp_ = tp_new(&tpp);
            if (tp_) llama_attach_threadpool(ctx_, tp_, tp_);
        }
    }
    batch_ = llama_batch_init(opts.chunk, 0, 1);
}

session::~session() {
    llama_batch_free(batch_);
    llama_free(ctx_);
    if (tp_) {
        auto tp_free = cpu_proc<void (*)(ggml_threadpool *)>("ggml_threadpool_free");
        if (tp_free) tp_free(tp_);
    }
    hev_llama_free(hl_);
}

void session::step(const llama_token *tk, int start, int n, bool all_logits) {
    if (n < 1 || n > opts_.chunk) throw std::runtime_error("step larger than the chunk size");
    batch_.n_tokens = n;
    std::vector<llama_pos> pos(n);
    for (int i = 0; i < n; i++) {
        batch_.token[i] = tk[i];
        batch_.pos[i] = pos[i] = start + i;
        batch_.n_seq_id[i] = 1;
        batch_.seq_id[i][0] = 0;
        batch_.logits[i] = all_logits || i == n - 1;
    }
    if (hl_ && hev_llama_begin(hl_, 0, pos.data(), n) != 0) throw std::runtime_error(hev_llama_error(hl_));
    if (llama_decode(ctx_, batch_) != 0)
        throw std::runtime_error("llama_decode failed (KV cache full: is n_ctx >= budget + chunk?)");
    if (hl_ && opts_.prefill > 0 && !compressed_) {
        if (start + n > opts_.prefill) throw std::runtime_error("stepped past the prefill without compress()");
        if (hev_llama_observe(hl_, 0, opts_.window) != 0) throw std::runtime_error(hev_llama_error(hl_));
    } else if (hl_ && hev_llama_evict(hl_, ctx_, 0, nullptr) != 0) {
        throw std::runtime_error(hev_llama_error(hl_));
    }
    fed_ = start + n;
}

int session::compress() {
    if (!hl_ || opts_.prefill <= 0 || compressed_) throw std::runtime_error("compress(): not a compress-after-prefill session, or compressed already");
    compressed_ = true;
    int32_t dropped = 0;
    if (hev_llama_compress(hl_, ctx_, 0, opts_.window, opts_.pool, opts_.form, &dropped) != 0)
        throw std::runtime_error(hev_llama_error(hl_));
    return dropped;
}

int session::held() const {
#ifdef LLAMA_KV_PLACER
    // The placer fills its cells before it evicts: every head holds this many.
    if (opts_.kv_placer) return std::min(fed_, (int) opts_.kv_placer->n_slots);
#endif
    if (!hl_) return fed_;
    int32_t n = 0;
    hashevict_token_positions(hev_llama_engine(hl_), 0, nullptr, 0, &n);
    return n;
}

hev_llama_stats session::stats() const {
    return hl_ ? hev_llama_get_stats(hl_) : hev_llama_stats{};
}

namespace {
const char *const FORM_BASES[] = {"cosine", "distance", "softmax"};  // hashevict_compress_form
const struct {
    const char *name;
    int flag;
} FORM_FLAGS[] = {{"local", HASHEVICT_COMPRESS_LOCAL}, {"trailing", HASHEVICT_COMPRESS_TRAILING}};
}  // namespace

int parse_compress_form(const std::string &name) {
    const std::string why = "unknown compress form '" + name +
                            "' (cosine, distance or softmax, optionally +local and +trailing)";
    size_t plus = name.find('+');
    const std::string base = name.substr(0, plus);
    int form = -1;
    for (int i = 0; i < 3; i++)
        if (base == FORM_BASES[i]) form = i;
    if (form < 0) throw std::runtime_error(why);
    while (plus != std::string::npos) {
        size_t next = name.find('+', plus + 1);
        const std::string flag = name.substr(plus + 1, next == std::string::npos ? std::string::npos : next - plus - 1);
        bool known = false;
        for (const auto &f : FORM_FLAGS)
            if (flag == f.name) form |= f.flag, known = true;
        if (!known) throw std::runtime_error(why);
        plus = next;
    }
    return form;
}

std::string compress_form_name(int form) {
    const int base = form & 0xff;
    std::string name = base >= 0 && base < 3 ? FORM_BASES[base] : "form" + std::to_string(base);
    for (const auto &f : FORM_FLAGS)
        if (form & f.flag) name += std::string("+") + f.name;
    return name;
}

}  // namespace hev
