// hashevict-run: the main job. Runs a real model through llama.cpp twice on
// the same long text — once with the full KV cache, once with HashEvict
// capping the cache at a budget — and prints what was saved and what it
// cost: KV memory, tokens/s, perplexity of the continuation, and agreement
// of the greedy generations.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "hashevict_llama.h"
#include "llama.h"

#ifndef HEV_LLAMA_LIB_DIR
#define HEV_LLAMA_LIB_DIR ""
#endif

namespace {

struct options {
    std::string model, text, json;
    int prompt = 2048;      // tokens of context before the scored part
    int scored = 256;       // continuation tokens scored for perplexity
    int gen = 32;           // greedy tokens generated after the scored part
    double keep = 0.5;      // budget = keep * (prompt + scored), unless budget set
    int budget = 0;
    int chunk = 64;         // tokens per llama_decode call
    int threads = 2;
    bool baseline = true;
    bool quiet = false;
    bool threadpool = true;
    hashevict_params hp = hashevict_default_params();
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

[[noreturn]] void die(const char *fmt, const char *arg = "") {
    std::fprintf(stderr, "hashevict-run: ");
    std::fprintf(stderr, fmt, arg);
    std::fprintf(stderr, "\n");
    std::exit(1);
}

void usage() {
    std::printf(
        "usage: hashevict-run --model M.gguf --text FILE [options]\n"
        "  --prompt N        context tokens before the scored part (2048)\n"
        "  --scored N        continuation tokens scored for perplexity (256)\n"
        "  --gen N           greedy tokens generated afterwards (32)\n"
        "  --keep R          keep ratio: budget = R * (prompt + scored) (0.5)\n"
        "  --budget N        positions kept (overrides --keep)\n"
        "  --policy P        hash | sink-recent | knorm | random | oracle (hash)\n"
        "  --probe P         query | key (query)\n"
        "  --score S         instant | accumulated | decayed (instant)\n"
        "  --bits B          8 16 32 64 128 256 (16)\n"
        "  --sinks N         protected first positions (4)\n"
        "  --recent N        protected newest positions (10)\n"
        "  --chunk N         tokens per decode call (64)\n"
        "  --threads N       (2)\n"
        "  --no-baseline     skip the full-cache run\n"
        "  --no-threadpool   let ggml start threads per graph split (llama.cpp's default)\n"
        "  --json FILE       also write the figures as JSON\n"
        "  --quiet           no progress on stderr\n");
}

int pick(const std::string &v, std::initializer_list<const char *> names, const char *what) {
    int i = 0;
    for (const char *n : names) {
        if (v == n) return i;
        i++;
    }
    die("unknown %s value", what);
}

options parse(int argc, char **argv) {
    options o;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) die("%s needs a value", a.c_str());
            return argv[++i];
        };
        auto num = [&]() -> double {
            std::string v = next();
            char *end = nullptr;
            double d = std::strtod(v.c_str(), &end);
            if (end == v.c_str() || *end) die("not a number: %s", v.c_str());
            return d;
        };
        if (a == "--model") o.model = next();
        else if (a == "--text") o.text = next();
        else if (a == "--json") o.json = next();
        else if (a == "--prompt") o.prompt = (int) num();
        else if (a == "--scored") o.scored = (int) num();
        else if (a == "--gen") o.gen = (int) num();
        else if (a == "--keep") o.keep = num();
        else if (a == "--budget") o.budget = (int) num();
        else if (a == "--chunk") o.chunk = (int) num();
        else if (a == "--threads") o.threads = (int) num();
        else if (a == "--bits") o.hp.hash_bits = (int) num();
        else if (a == "--sinks") o.hp.n_sink = (int) num();
        else if (a == "--recent") o.hp.n_recent = (int) num();
        else if (a == "--policy") o.hp.policy = pick(next(), {"hash", "sink-recent", "knorm", "random", "oracle"}, "--policy");
        else if (a == "--probe") o.hp.probe = pick(next(), {"query", "key"}, "--probe");
        else if (a == "--score") o.hp.score = pick(next(), {"instant", "accumulated", "decayed"}, "--score");
        else if (a == "--no-baseline") o.baseline = false;
        else if (a == "--no-threadpool") o.threadpool = false;
        else if (a == "--quiet") o.quiet = true;
        else if (a == "-h" || a == "--help") { usage(); std::exit(0); }
        else die("unknown option %s (try --help)", a.c_str());
    }
    if (o.model.empty() || o.text.empty()) { usage(); die("--model and --text are required"); }
    if (o.prompt < 16 || o.scored < 1 || o.gen < 0 || o.chunk < 1 || o.threads < 1) die("sizes must be positive");
    if (o.budget <= 0) {
        if (!(o.keep > 0 && o.keep <= 1)) die("--keep must be in (0, 1]");
        o.budget = (int) std::lround(o.keep * (o.prompt + o.scored));
    }
    o.hp.budget = o.budget;
    return o;
}

const char *policy_name(int p) {
    static const char *n[] = {"hash", "sink-recent", "knorm", "random", "oracle"};
    return p >= 0 && p < 5 ? n[p] : "?";
}
const char *probe_name(int p) { return p == 0 ? "query" : "key"; }
const char *score_name(int s) {
    static const char *n[] = {"instant", "accumulated", "decayed"};
    return s >= 0 && s < 3 ? n[s] : "?";
}

struct run_result {
    bool evict = false;
    uint32_t n_ctx = 0;
    double prefill_s = 0, scored_s = 0, gen_s = 0;
    double nll = 0;
    int n_scored = 0;
    size_t state_bytes = 0;   // llama_state_seq_get_size at the end
    int max_held = 0;         // most positions held after any step
    std::vector<llama_token> generated;
    hev_llama_stats stats{};
    double ppl() const { return std::exp(nll / std::max(1, n_scored)); }
};

// A threadpool that lives as long as the context. Without one, ggml's CPU
// backend starts and joins its worker threads for every graph split, and the
// graph callback splits the graph at every observed node (2 per layer).
// The CPU backend is a loaded module, so the function comes by name.
ggml_threadpool *make_threadpool(int n_threads) {
    ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (!dev) return nullptr;
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
    auto tp_new = (ggml_threadpool *(*)(ggml_threadpool_params *)) ggml_backend_reg_get_proc_address(reg, "ggml_threadpool_new");
    if (!tp_new) return nullptr;
    ggml_threadpool_params tpp = ggml_threadpool_params_default(n_threads);
    return tp_new(&tpp);
}

void free_threadpool(ggml_threadpool *tp) {
    if (!tp) return;
    ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
    auto tp_free = (void (*)(ggml_threadpool *)) ggml_backend_reg_get_proc_address(reg, "ggml_threadpool_free");
    if (tp_free) tp_free(tp);
}

std::vector<llama_token> tokenize(const llama_vocab *vocab, const std::string &text) {
    int n = -llama_tokenize(vocab, text.data(), (int32_t) text.size(), nullptr, 0, true, false);
    std::vector<llama_token> toks(n);
    if (llama_tokenize(vocab, text.data(), (int32_t) text.size(), toks.data(), n, true, false) < 0)
        die("tokenization failed");
    return toks;
}

std::string detok(const llama_vocab *vocab, const std::vector<llama_token> &toks) {
    std::string out;
    char buf[256];
    for (llama_token t : toks) {
        int n = llama_token_to_piece(vocab, t, buf, sizeof buf, 0, false);
        if (n > 0) out.append(buf, n);
    }
    return out;
}

double log_softmax_at(const float *logits, int n_vocab, llama_token target) {
    float mx = logits[0];
    for (int i = 1; i < n_vocab; i++) mx = std::max(mx, logits[i]);
    double z = 0;
    for (int i = 0; i < n_vocab; i++) z += std::exp((double) logits[i] - mx);
    return (double) logits[target] - mx - std::log(z);
}

llama_token argmax(const float *logits, int n_vocab) {
    return (llama_token) (std::max_element(logits, logits + n_vocab) - logits);
}

// Positions the engine holds for seq 0 (what llama.cpp keeps after seq_rm).
int held_positions(hev_llama *hl) {
    int32_t n = 0;
    hashevict_token_positions(hev_llama_engine(hl), 0, nullptr, 0, &n);
    return n;
}

run_result run(const options &o, llama_model *model, const std::vector<llama_token> &toks, bool evict) {
    run_result r;
    r.evict = evict;
    const llama_vocab *vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    const int context = o.prompt + o.scored;
    const int total = context + o.gen;

    hev_llama *hl = nullptr;
    llama_context_params cp = llama_context_default_params();
    cp.n_threads = cp.n_threads_batch = o.threads;
    cp.n_batch = cp.n_ubatch = (uint32_t) o.chunk;
    cp.n_seq_max = 1;
    cp.no_perf = true;
    if (evict) {
        char err[512];
        hl = hev_llama_new(model, &o.hp, err, sizeof err);
        if (!hl) die("%s", err);
        hev_llama_attach(hl, &cp);
        cp.n_ctx = (uint32_t) (o.budget + o.chunk);
    } else {
        cp.n_ctx = (uint32_t) total;
    }
    llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) die("llama_init_from_model failed (n_ctx too large for memory?)");
    r.n_ctx = llama_n_ctx(ctx);
    ggml_threadpool *tp = o.threadpool ? make_threadpool(o.threads) : nullptr;
    if (tp) llama_attach_threadpool(ctx, tp, tp);
    llama_batch batch = llama_batch_init(o.chunk, 0, 1);

    // Decodes toks[start, start+n) as one step, evicting afterwards.
    auto step = [&](const llama_token *tk, int start, int n, bool all_logits) {
        batch.n_tokens = n;
        std::vector<llama_pos> pos(n);
        for (int i = 0; i < n; i++) {
            batch.token[i] = tk[i];
            batch.pos[i] = pos[i] = start + i;
            batch.n_seq_id[i] = 1;
            batch.seq_id[i][0] = 0;
            batch.logits[i] = all_logits || i == n - 1;
        }
        if (hl && hev_llama_begin(hl, 0, pos.data(), n) != 0) die("%s", hev_llama_error(hl));
        if (llama_decode(ctx, batch) != 0) die("llama_decode failed (KV cache full: is n_ctx >= budget + chunk?)");
        if (hl) {
            if (hev_llama_evict(hl, ctx, 0, nullptr) != 0) die("%s", hev_llama_error(hl));
            r.max_held = std::max(r.max_held, held_positions(hl));
        } else {
            r.max_held = start + n;
        }
    };
    auto progress = [&](const char *phase, int done) {
        if (o.quiet) return;
        std::fprintf(stderr, "\r  %-5s cache: %-8s %5d/%d tokens", evict ? "evict" : "full", phase, done, total);
        std::fflush(stderr);
    };

    // 1. Prompt, in chunks.
    auto t0 = std::chrono::steady_clock::now();
    for (int s = 0; s < o.prompt; s += o.chunk) {
        int n = std::min(o.chunk, o.prompt - s);
        step(&toks[s], s, n, false);
        progress("prompt", s + n);
    }
    r.prefill_s = seconds_since(t0);

    // 2. Scored continuation: teacher-forced, NLL of every next token.
    t0 = std::chrono::steady_clock::now();
    std::vector<float> last(llama_get_logits_ith(ctx, -1), llama_get_logits_ith(ctx, -1) + n_vocab);
    for (int s = o.prompt; s < context; s += o.chunk) {
        int n = std::min(o.chunk, context - s);
        // the logits before this chunk predict its first token
        r.nll -= log_softmax_at(last.data(), n_vocab, toks[s]);
        r.n_scored++;
        step(&toks[s], s, n, true);
        for (int i = 0; i + 1 < n; i++) {
            r.nll -= log_softmax_at(llama_get_logits_ith(ctx, i), n_vocab, toks[s + i + 1]);
            r.n_scored++;
        }
        const float *lg = llama_get_logits_ith(ctx, n - 1);
        std::copy(lg, lg + n_vocab, last.begin());
        progress("scored", s + n);
    }
    r.scored_s = seconds_since(t0);

    // 3. Greedy generation, one token per step.
    t0 = std::chrono::steady_clock::now();
    llama_token next = argmax(last.data(), n_vocab);
    for (int g = 0; g < o.gen; g++) {
        r.generated.push_back(next);
        step(&next, context + g, 1, false);
        next = argmax(llama_get_logits_ith(ctx, -1), n_vocab);
        progress("generate", context + g + 1);
    }
    r.gen_s = seconds_since(t0);
    if (!o.quiet) std::fprintf(stderr, "\n");

    r.state_bytes = llama_state_seq_get_size(ctx, 0);
    if (hl) r.stats = hev_llama_get_stats(hl);
    llama_batch_free(batch);
    llama_free(ctx);
    free_threadpool(tp);
    hev_llama_free(hl);
    return r;
}

std::string read_file(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) die("cannot read %s", path.c_str());
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

void quiet_log(ggml_log_level level, const char *text, void *) {
    if (level >= GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

}  // namespace

int main(int argc, char **argv) {
    options o = parse(argc, argv);
    llama_log_set(quiet_log, nullptr);
    const char *lib_dir = std::getenv("LLAMA_LIB_DIR");
    ggml_backend_load_all_from_path(lib_dir && *lib_dir ? lib_dir : HEV_LLAMA_LIB_DIR);
    llama_backend_init();

    llama_model_params mp = llama_model_default_params();
    llama_model *model = llama_model_load_from_file(o.model.c_str(), mp);
    if (!model) die("cannot load model %s", o.model.c_str());
    const llama_vocab *vocab = llama_model_get_vocab(model);
    std::vector<llama_token> toks = tokenize(vocab, read_file(o.text));
    const int need = o.prompt + o.scored;
    if ((int) toks.size() < need) {
        std::fprintf(stderr, "hashevict-run: the text has %zu tokens, need %d\n", toks.size(), need);
        return 1;
    }
    char desc[256];
    llama_model_desc(model, desc, sizeof desc);
    std::printf("model      %s (%s)\n", desc, o.model.c_str());
    std::printf("text       %s: %zu tokens; context %d + scored %d + generated %d\n", o.text.c_str(),
                toks.size(), o.prompt, o.scored, o.gen);
    std::printf("eviction   policy=%s probe=%s score=%s bits=%d budget=%d (keep %.2f of %d) sinks=%d recent=%d chunk=%d kernels=%s\n",
                policy_name(o.hp.policy), probe_name(o.hp.probe), score_name(o.hp.score), o.hp.hash_bits,
                o.budget, (double) o.budget / need, need, o.hp.n_sink, o.hp.n_recent, o.chunk, hashevict_kernels());

    run_result full, ev;
    if (o.baseline) full = run(o, model, toks, false);
    ev = run(o, model, toks, true);

    const int n_layer = llama_model_n_layer(model);
    auto tps = [](int n, double s) { return s > 0 ? n / s : 0.0; };
    std::printf("\n%-28s %14s %14s %10s\n", "", "full cache", "hashevict", "ratio");
    auto row = [&](const char *name, double a, double b, const char *fmt) {
        char sa[32], sb[32];
        std::snprintf(sa, sizeof sa, fmt, a);
        std::snprintf(sb, sizeof sb, fmt, b);
        if (o.baseline) std::printf("%-28s %14s %14s %10.3f\n", name, sa, sb, a != 0 ? b / a : 0.0);
        else std::printf("%-28s %14s %14s\n", name, "-", sb);
    };
    row("KV cells allocated (n_ctx)", full.n_ctx, ev.n_ctx, "%.0f");
    row("positions held (max)", full.max_held, ev.max_held, "%.0f");
    row("KV state at end (MiB)", full.state_bytes / 1048576.0, ev.state_bytes / 1048576.0, "%.2f");
    row("prompt tokens/s", tps(o.prompt, full.prefill_s), tps(o.prompt, ev.prefill_s), "%.1f");
    row("scored tokens/s", tps(o.scored, full.scored_s), tps(o.scored, ev.scored_s), "%.1f");
    row("generate tokens/s", tps(o.gen, full.gen_s), tps(o.gen, ev.gen_s), "%.2f");
    row("perplexity (scored part)", full.ppl(), ev.ppl(), "%.3f");
    int same = 0;
    if (o.baseline) {
        while (same < (int) ev.generated.size() && ev.generated[same] == full.generated[same]) same++;
        std::printf("greedy tokens identical to full cache before the first difference: %d of %d\n", same, o.gen);
    }
    const double steps = (double) ev.stats.decodes;
    std::printf("integration cost: %llu Q/K nodes observed (%d per layer-step), observe %.3f ms/step, evict+seq_rm %.3f ms/step, %llu positions dropped\n",
                (unsigned long long) ev.stats.nodes_observed, 2, steps ? ev.stats.observe_ns / 1e6 / steps : 0.0,
                steps ? ev.stats.evict_ns / 1e6 / steps : 0.0, (unsigned long long) ev.stats.positions_dropped);
    (void) n_layer;
    if (o.gen > 0) {
        if (o.baseline) std::printf("full cache : %s\n", detok(vocab, full.generated).c_str());
        std::printf("hashevict  : %s\n", detok(vocab, ev.generated).c_str());
    }
    if (!o.json.empty()) {
        FILE *f = std::fopen(o.json.c_str(), "w");
        if (!f) die("cannot write %s", o.json.c_str());
        std::fprintf(f,
                     "{\"model\": \"%s\", \"policy\": \"%s\", \"probe\": \"%s\", \"score\": \"%s\", \"bits\": %d, "
                     "\"budget\": %d, \"context\": %d, \"keep\": %.4f, \"ppl_full\": %.6f, \"ppl_evict\": %.6f, "
                     "\"n_ctx_full\": %u, \"n_ctx_evict\": %u, \"state_bytes_full\": %zu, \"state_bytes_evict\": %zu, "
                     "\"prompt_tps_full\": %.3f, \"prompt_tps_evict\": %.3f, \"gen_tps_full\": %.3f, \"gen_tps_evict\": %.3f, "
                     "\"greedy_prefix_match\": %d, \"observe_ms_per_step\": %.4f, \"evict_ms_per_step\": %.4f, "
                     "\"max_held_full\": %d, \"max_held_evict\": %d, \"positions_dropped\": %llu, \"baseline\": %s}\n",
                     desc, policy_name(o.hp.policy), probe_name(o.hp.probe), score_name(o.hp.score), o.hp.hash_bits,
                     o.budget, need, (double) o.budget / need, full.ppl(), ev.ppl(), full.n_ctx, ev.n_ctx,
                     full.state_bytes, ev.state_bytes, tps(o.prompt, full.prefill_s), tps(o.prompt, ev.prefill_s),
                     tps(o.gen, full.gen_s), tps(o.gen, ev.gen_s), same,
                     steps ? ev.stats.observe_ns / 1e6 / steps : 0.0, steps ? ev.stats.evict_ns / 1e6 / steps : 0.0,
                     full.max_held, ev.max_held, (unsigned long long) ev.stats.positions_dropped,
                     o.baseline ? "true" : "false");
        std::fclose(f);
    }
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
