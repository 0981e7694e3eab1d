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
#include <ctime>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "session.h"
#ifdef HEV_FORK
#include <memory>

#include "perhead_placer.h"
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
    // Compress after prefill: the prompt is read whole, then scored once
    // from its last `window` queries and cut to the budget.
    bool compress = false;
    int window = 32, pool = 11, form = HASHEVICT_COMPRESS_COSINE;
    hashevict_params hp = hashevict_default_params();
    // --runtime fork (hashevict-run-fork only): the policy runs per layer and KV head inside
    // the patched llama.cpp, before attention, instead of in token mode.
    bool perhead = false;
};

double cpu_seconds() {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

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
        "  --estimate E      hash: distance (the paper) | logit: evict the smallest estimated\n"
        "                    attention logit |q||k|cos(pi*ham/b)/sqrt(d) instead (distance)\n"
        "  --redundancy W    hash: weight of the redundancy term, 0..64 (0, the paper; 1 with\n"
        "                    --estimate logit --score decayed is the streaming option of docs/eval)\n"
        "  --mode M          stream: the cache is capped while the prompt is read;\n"
        "                    compress: the prompt is read whole, then cut to the budget\n"
        "                    from its last --window queries (compress after prefill) (stream)\n"
        "  --window N        compress: queries that score the prompt (32)\n"
        "  --pool N          compress: max-pool kernel along the positions (11)\n"
        "  --form F          compress: cosine | distance | softmax, optionally +local\n"
        "                    and +trailing (cosine)\n"
        "  --runtime R       stock: token mode through the stock integration; fork: per layer and\n"
        "                    KV head inside the patched llama.cpp (hashevict-run-fork only) (stock)\n"
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
        else if (a == "--estimate") o.hp.estimate = pick(next(), {"distance", "logit"}, "--estimate");
        else if (a == "--redundancy") o.hp.redundancy = (float) num();
        else if (a == "--mode") o.compress = pick(next(), {"stream", "compress"}, "--mode") == 1;
        else if (a == "--runtime") o.perhead = pick(next(), {"stock", "fork"}, "--runtime") == 1;
        else if (a == "--window") o.window = (int) num();
        else if (a == "--pool") o.pool = (int) num();
        else if (a == "--form") {
            try {
                o.form = hev::parse_compress_form(next());
            } catch (const std::exception &e) {
                die("--form: %s", e.what());
            }
        }
        else if (a == "--no-baseline") o.baseline = false;
        else if (a == "--no-threadpool") o.threadpool = false;
        else if (a == "--quiet") o.quiet = true;
        else if (a == "-h" || a == "--help") { usage(); std::exit(0); }
        else die("unknown option %s (try --help)", a.c_str());
    }
    if (o.model.empty() || o.text.empty()) { usage(); die("--model and --text are required"); }
    if (o.prompt < 16 || o.scored < 1 || o.gen < 0 || o.chunk < 1 || o.threads < 1) die("sizes must be positive");
    if (o.compress && (o.window < 1 || o.window > o.prompt)) die("--window must be in [1, --prompt]");
#ifndef HEV_FORK
    if (o.perhead) die("--runtime fork needs hashevict-run-fork, built against the patched llama.cpp (make demo-fork)");
#endif
    if (o.perhead && o.compress) die("--runtime fork reads the prompt streaming only (no --mode compress)");
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
const char *estimate_name(int e) { return e == HASHEVICT_ESTIMATE_LOGIT ? "logit" : "distance"; }
const char *score_name(int s) {
    static const char *n[] = {"instant", "accumulated", "decayed"};
    return s >= 0 && s < 3 ? n[s] : "?";
}

struct run_result {
    uint32_t n_ctx = 0;
    double prefill_s = 0, scored_s = 0, gen_s = 0;
    double prefill_cpu = 0, compress_s = 0, compress_cpu = 0;  // compress after prefill
    double gen_cpu = 0;  // process CPU time of the generation: on a shared machine, wall time measures the neighbours
    int compress_dropped = 0;
    double nll = 0;
    int n_scored = 0;
    size_t state_bytes = 0;   // llama_state_seq_get_size at the end
    int max_held = 0;         // most positions held after any step
    std::vector<llama_token> generated;
    hev_llama_stats stats{};
    int64_t placement_failures = 0;  // --runtime fork
    double ppl() const { return std::exp(nll / std::max(1, n_scored)); }
};

void report(const options &o, const char *desc, const llama_vocab *vocab, const run_result &full, const run_result &ev) {
    const int need = o.prompt + o.scored;
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
    row("prompt tokens per CPU second", tps(o.prompt, full.prefill_cpu), tps(o.prompt, ev.prefill_cpu), "%.1f");
    row("generate tokens per CPU second", tps(o.gen, full.gen_cpu), tps(o.gen, ev.gen_cpu), "%.2f");
    row("perplexity (scored part)", full.ppl(), ev.ppl(), "%.3f");
    int same = 0;
    if (o.baseline) {
        while (same < (int) ev.generated.size() && ev.generated[same] == full.generated[same]) same++;
        std::printf("greedy tokens identical to full cache before the first difference: %d of %d\n", same, o.gen);
    }
    const double steps = (double) ev.stats.decodes;
    if (o.perhead)
        std::printf("per-head placements that failed (their token went to llama.cpp's own cell): %lld\n",
                    (long long) ev.placement_failures);
    else std::printf("integration cost: %llu Q/K nodes handed over (graph splits), observe %.3f ms/step, evict+seq_rm %.3f ms/step, %llu positions dropped\n",
                (unsigned long long) ev.stats.nodes_observed, steps ? ev.stats.observe_ns / 1e6 / steps : 0.0,
                steps ? ev.stats.evict_ns / 1e6 / steps : 0.0, (unsigned long long) ev.stats.positions_dropped);
    if (o.compress) {
        std::printf("compress after prefill (window %d, pool %d, %s): %d positions dropped; compression %.2f ms wall, "
                    "%.2f ms CPU = %.2f %% of the prefill's CPU time (%.2f s wall, %.2f s CPU, observe included)\n",
                    o.window, o.pool, hev::compress_form_name(o.form).c_str(), ev.compress_dropped, ev.compress_s * 1e3,
                    ev.compress_cpu * 1e3, ev.prefill_cpu > 0 ? 100 * ev.compress_cpu / ev.prefill_cpu : 0.0,
                    ev.prefill_s, ev.prefill_cpu);
        if (o.baseline)
            std::printf("prefill CPU time with observe / without (full cache): %.3f\n",
                        full.prefill_cpu > 0 ? ev.prefill_cpu / full.prefill_cpu : 0.0);
    }
    if (o.gen > 0) {
        if (o.baseline) std::printf("full cache : %s\n", hev::detokenize(vocab, full.generated).c_str());
        std::printf("hashevict  : %s\n", hev::detokenize(vocab, ev.generated).c_str());
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
                     "\"max_held_full\": %d, \"max_held_evict\": %d, \"positions_dropped\": %llu, \"baseline\": %s, "
                     "\"mode\": \"%s\", \"window\": %d, \"pool\": %d, \"form\": \"%s\", \"prefill_cpu_seconds\": %.4f, "
                     "\"prefill_cpu_seconds_full\": %.4f, \"compress_cpu_seconds\": %.5f, \"compress_seconds\": %.5f, "
                     "\"runtime\": \"%s\", \"placement_failures\": %lld, \"gen_cpu_seconds_full\": %.4f, "
                     "\"gen_cpu_seconds_evict\": %.4f, \"estimate\": \"%s\", \"redundancy\": %g}\n",
                     desc, policy_name(o.hp.policy), probe_name(o.hp.probe), score_name(o.hp.score), o.hp.hash_bits,
                     o.budget, need, (double) o.budget / need, full.ppl(), ev.ppl(), full.n_ctx, ev.n_ctx,
                     full.state_bytes, ev.state_bytes, tps(o.prompt, full.prefill_s), tps(o.prompt, ev.prefill_s),
                     tps(o.gen, full.gen_s), tps(o.gen, ev.gen_s), same,
                     steps ? ev.stats.observe_ns / 1e6 / steps : 0.0, steps ? ev.stats.evict_ns / 1e6 / steps : 0.0,
                     full.max_held, ev.max_held, (unsigned long long) ev.stats.positions_dropped,
                     o.baseline ? "true" : "false", o.compress ? "compress" : "stream", o.window, o.pool,
                     hev::compress_form_name(o.form).c_str(), ev.prefill_cpu, full.prefill_cpu, ev.compress_cpu, ev.compress_s,
                     o.perhead ? "fork" : "stock", (long long) ev.placement_failures, full.gen_cpu, ev.gen_cpu,
                     estimate_name(o.hp.estimate), o.hp.redundancy);
        std::fclose(f);
    }
}

run_result run(const options &o, llama_model *model, const std::vector<llama_token> &toks, bool evict) {
    run_result r;
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    const int context = o.prompt + o.scored;
    const int total = context + o.gen;
    hev::session_options so;
    so.chunk = o.chunk;
    so.threads = o.threads;
    so.threadpool = o.threadpool;
    so.n_ctx = total;
    so.evict = evict ? &o.hp : nullptr;
    if (evict && o.compress) {
        so.prefill = o.prompt;
        so.window = o.window;
        so.pool = o.pool;
        so.form = o.form;
    }
#ifdef HEV_FORK
    // Declared before the session: the context uses it until it is freed.
    std::unique_ptr<hev_fork::placer> placer;
    if (evict && o.perhead) {
        placer.reset(new hev_fork::placer(model, o.hp, o.budget, total));
        so.evict = nullptr;
        so.kv_placer = placer->get();
    }
#endif
    hev::session s(model, so);
    r.n_ctx = s.n_ctx();
#ifdef HEV_FORK
    if (placer) r.n_ctx = (uint32_t) placer->cells();  // n_ctx stays the positions limit there
#endif

    auto step = [&](const llama_token *tk, int start, int n, bool all) {
        s.step(tk, start, n, all);
        r.max_held = std::max(r.max_held, s.held());
    };
    auto progress = [&](const char *phase, int done) {
        if (o.quiet) return;
        std::fprintf(stderr, "\r  %-5s cache: %-8s %5d/%d tokens", evict ? "evict" : "full", phase, done, total);
        std::fflush(stderr);
    };

    // 1. Prompt, in chunks.
    auto t0 = std::chrono::steady_clock::now();
    double c0 = cpu_seconds();
    for (int p = 0; p < o.prompt; p += o.chunk) {
        int n = std::min(o.chunk, o.prompt - p);
        step(&toks[p], p, n, false);
        progress("prompt", p + n);
    }
    r.prefill_s = seconds_since(t0);
    r.prefill_cpu = cpu_seconds() - c0;
    if (evict && o.compress) {
        // The compression runs on this thread alone while ggml's workers
        // idle: process CPU time compares it with the prefill fairly.
        t0 = std::chrono::steady_clock::now();
        c0 = cpu_seconds();
        r.compress_dropped = s.compress();
        r.compress_s = seconds_since(t0);
        r.compress_cpu = cpu_seconds() - c0;
    }

    // 2. Scored continuation: teacher-forced, NLL of every next token.
    t0 = std::chrono::steady_clock::now();
    std::vector<float> last(s.logits(-1), s.logits(-1) + n_vocab);
    for (int p = o.prompt; p < context; p += o.chunk) {
        int n = std::min(o.chunk, context - p);
        r.nll -= hev::log_softmax_at(last.data(), n_vocab, toks[p]);  // the logits before the chunk
        r.n_scored++;
        step(&toks[p], p, n, true);
        for (int i = 0; i + 1 < n; i++) {
            r.nll -= hev::log_softmax_at(s.logits(i), n_vocab, toks[p + i + 1]);
            r.n_scored++;
        }
        std::copy(s.logits(n - 1), s.logits(n - 1) + n_vocab, last.begin());
        progress("scored", p + n);
    }
    r.scored_s = seconds_since(t0);

    // 3. Greedy generation, one token per step.
    t0 = std::chrono::steady_clock::now();
    c0 = cpu_seconds();
    llama_token next = hev::argmax(last.data(), n_vocab);
    for (int g = 0; g < o.gen; g++) {
        r.generated.push_back(next);
        step(&next, context + g, 1, false);
        next = hev::argmax(s.logits(-1), n_vocab);
        progress("generate", context + g + 1);
    }
    r.gen_s = seconds_since(t0);
    r.gen_cpu = cpu_seconds() - c0;
    if (!o.quiet) std::fprintf(stderr, "\n");
    r.state_bytes = s.state_bytes();
    r.stats = s.stats();
#ifdef HEV_FORK
    if (placer) r.placement_failures = placer->failures();
#endif
    return r;
}

}  // namespace

int main(int argc, char **argv) {
    options o = parse(argc, argv);
    try {
        hev::init_llama();
        llama_model *model = hev::load_model(o.model);
        const llama_vocab *vocab = llama_model_get_vocab(model);
        std::vector<llama_token> toks = hev::tokenize(vocab, hev::read_file(o.text), true);
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
        std::printf("eviction   policy=%s probe=%s score=%s estimate=%s redundancy=%g bits=%d budget=%d (keep %.2f of %d) sinks=%d recent=%d chunk=%d kernels=%s mode=%s runtime=%s\n",
                    policy_name(o.hp.policy), probe_name(o.hp.probe), score_name(o.hp.score),
                    estimate_name(o.hp.estimate), o.hp.redundancy, o.hp.hash_bits,
                    o.budget, (double) o.budget / need, need, o.hp.n_sink, o.hp.n_recent, o.chunk, hashevict_kernels(),
                    o.compress ? "compress" : "stream", o.perhead ? "fork (per layer and KV head)" : "stock (token mode)");

        // Refuse bad eviction settings now, not after minutes of the
        // full-cache run.
        char err[512] = {0};
        hev_llama *settings = hev_llama_new(model, &o.hp, err, sizeof err);
        if (!settings) throw std::runtime_error(err);
        hev_llama_free(settings);
#ifdef HEV_FORK
        if (o.perhead) {
            hev_fork::placer check(model, o.hp, o.budget, need + o.gen);
            if (!hev_fork::accepts(model))
                throw std::runtime_error("the fork refuses this model with a per-head placer (llama.cpp says why above)");
        }
#endif

        run_result full, ev;
        if (o.baseline) full = run(o, model, toks, false);
        ev = run(o, model, toks, true);
        report(o, desc, vocab, full, ev);
        llama_model_free(model);
        llama_backend_free();
    } catch (const std::exception &e) {
        std::fprintf(stderr, "hashevict-run: %s\n", e.what());
        return 1;
    }
    return 0;
}
