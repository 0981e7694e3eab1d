// hashevict-overhead: what HashEvict's token mode costs a decode step of a
// stock llama.cpp context when it observes every layer but has nothing to
// evict, as paired per-step ratios.
//
// One context with the integration attached (budget above the stream, so
// nothing is ever evicted) reads a prompt (untimed), then decodes one token
// per step, in rounds of three steps of three kinds, in an order that
// rotates (and reverses every other round) from round to round:
//
//   off    the callback answers "no" to every node: no graph split, no
//          copy, no engine call;
//   split  a callback of this driver asks for the same nodes the
//          integration asks for (layer il's rotated K) and does nothing
//          with them: the graph splits alone;
//   on     HashEvict observes (hev_llama_begin before llama_decode,
//          hev_llama_evict after): the splits, the copies and the engine.
//
// A ratio pairs steps of the same round (neighbouring positions of the same
// context, threadpool and cache length), so a machine shared with other
// jobs slows both alike. Each step is timed three ways: the wall clock;
// the CPU time of this thread, which with --threads 1 is the whole decode
// (ggml computes on the calling thread) and does not count time spent
// waiting for a core; and the CPU time of the process, which with 2
// threads also counts the worker, spinning included. Medians, p10-p90 and
// ranges of the ratios are printed with the load average before and after,
// and the integration's own clock (hev_llama_get_stats: copies and
// hashevict_observe, evictions) per on-step, to say where the time goes.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <unistd.h>
#include <string>
#include <time.h>
#include <vector>

#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "session.h"

namespace {

void usage() {
    std::fprintf(stderr,
                 "usage: hashevict-overhead --model M.gguf --text FILE [options]\n"
                 "  --ctx N       context length reached by the prompt (2048)\n"
                 "  --steps N     timed decode steps, a third of each kind (off, split, on) (129)\n"
                 "  --threads N   ggml threads (2)\n"
                 "  --chunk N     prompt chunk size (256)\n"
                 "  --probe P     query | key (query)\n");
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double quantile(std::vector<double> v, double q) {
    std::sort(v.begin(), v.end());
    return v[(size_t) (q * (double) (v.size() - 1) + 0.5)];
}

std::string loadavg() {
    std::ifstream f("/proc/loadavg");
    std::string a, b, c;
    f >> a >> b >> c;
    return a + " " + b + " " + c;
}

double now_ms() {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double clock_ms(clockid_t id) {
    timespec ts{};
    clock_gettime(id, &ts);
    return (double) ts.tv_sec * 1e3 + (double) ts.tv_nsec / 1e6;
}

// The split steps' callback: asks for the nodes the integration asks for
// (hashevict_llama.cpp: "Kcur-<layer>" after RoPE) and does nothing with
// them. Chained behind the integration's, which asks it about every node.
bool g_split = false;

bool split_cb(ggml_tensor *t, bool ask, void *) {
    if (!ask) return true;
    return g_split && t->op == GGML_OP_ROPE && std::strncmp(t->name, "Kcur-", 5) == 0;
}

struct timing {
    double wall, thread, process;
};

timing now_all() {
    return {now_ms(), clock_ms(CLOCK_THREAD_CPUTIME_ID), clock_ms(CLOCK_PROCESS_CPUTIME_ID)};
}

void report(const char *what, const std::vector<double> &v, const char *unit) {
    std::printf("  %-22s median %.4f%s (p10 %.4f, p90 %.4f, min %.4f, max %.4f)\n", what, median(v), unit,
                quantile(v, 0.1), quantile(v, 0.9), quantile(v, 0), quantile(v, 1));
}

}  // namespace

int main(int argc, char **argv) {
    std::string model_path, text_path, probe = "query";
    int n_ctx = 2048, steps = 129, threads = 2, chunk = 256;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto next = [&]() -> const char * {
            if (i + 1 >= argc) {
                usage();
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "--model") model_path = next();
        else if (a == "--text") text_path = next();
        else if (a == "--ctx") n_ctx = std::atoi(next());
        else if (a == "--steps") steps = std::atoi(next());
        else if (a == "--threads") threads = std::atoi(next());
        else if (a == "--chunk") chunk = std::atoi(next());
        else if (a == "--probe") probe = next();
        else {
            usage();
            return 2;
        }
    }
    if (model_path.empty() || text_path.empty() || n_ctx < 1 || steps < 3 || threads < 1 || chunk < 1 ||
        (probe != "query" && probe != "key")) {
        usage();
        return 2;
    }
    try {
        hev::init_llama();
        llama_model *model = hev::load_model(model_path);
        const llama_vocab *vocab = llama_model_get_vocab(model);
        std::vector<llama_token> toks = hev::tokenize(vocab, hev::read_file(text_path), true);
        const int total = n_ctx + steps;
        if ((int) toks.size() < total) throw std::runtime_error("the text is shorter than --ctx + --steps tokens");

        hashevict_params hp = hashevict_default_params();
        hp.budget = total + chunk;  // above the stream: observed, never evicted
        hp.probe = probe == "key" ? HASHEVICT_PROBE_KEY : HASHEVICT_PROBE_QUERY;
        char err[512];
        hev_llama *hl = hev_llama_new(model, &hp, err, sizeof err);
        if (!hl) throw std::runtime_error(err);
        llama_context_params cp = llama_context_default_params();
        cp.n_threads = cp.n_threads_batch = threads;
        cp.n_batch = cp.n_ubatch = (uint32_t) chunk;
        cp.n_ctx = (uint32_t) (total + chunk);
        cp.n_seq_max = 1;
        cp.no_perf = true;
        cp.cb_eval = split_cb;  // chained behind the integration's
        cp.cb_eval_user_data = nullptr;
        hev_llama_attach(hl, &cp);
        llama_context *ctx = llama_init_from_model(model, cp);
        if (!ctx) throw std::runtime_error("llama_init_from_model failed");
        // One persistent threadpool, as session.cpp attaches (without it ggml
        // starts and joins its workers at every graph split).
        ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
        ggml_backend_reg_t reg = cpu ? ggml_backend_dev_backend_reg(cpu) : nullptr;
        auto tp_new = reg ? (ggml_threadpool * (*) (ggml_threadpool_params *))
                                ggml_backend_reg_get_proc_address(reg, "ggml_threadpool_new")
                          : nullptr;
        auto tp_free = reg ? (void (*)(ggml_threadpool *)) ggml_backend_reg_get_proc_address(reg, "ggml_threadpool_free")
                           : nullptr;
        ggml_threadpool *tp = nullptr;
        if (tp_new && tp_free) {
            ggml_threadpool_params tpp = ggml_threadpool_params_default(threads);
            tp = tp_new(&tpp);
            if (tp) llama_attach_threadpool(ctx, tp, tp);
        }
        llama_batch batch = llama_batch_init(chunk, 0, 1);
        // The thread CPU time of the last step's hev_llama_begin and
        // hev_llama_evict: every hashevict_observe of the step and the
        // evictions, outside the decode.
        double last_calls_cpu = 0;
        // One decode step of n tokens at positions p..; observed when `on`.
        auto step = [&](int p, int n, bool on) {
            std::vector<llama_pos> pos(n);
            batch.n_tokens = n;
            for (int i = 0; i < n; i++) {
                batch.token[i] = toks[p + i];
                batch.pos[i] = pos[i] = p + i;
                batch.n_seq_id[i] = 1;
                batch.seq_id[i][0] = 0;
                batch.logits[i] = i == n - 1;
            }
            double c0 = clock_ms(CLOCK_THREAD_CPUTIME_ID);
            if (on && hev_llama_begin(hl, 0, pos.data(), n) != 0) throw std::runtime_error(hev_llama_error(hl));
            double c1 = clock_ms(CLOCK_THREAD_CPUTIME_ID);
            if (llama_decode(ctx, batch) != 0) throw std::runtime_error("llama_decode failed");
            int32_t dropped = 0;
            double c2 = clock_ms(CLOCK_THREAD_CPUTIME_ID);
            if (on && hev_llama_evict(hl, ctx, 0, &dropped) != 0) throw std::runtime_error(hev_llama_error(hl));
            last_calls_cpu = (c1 - c0) + (clock_ms(CLOCK_THREAD_CPUTIME_ID) - c2);
            if (dropped != 0) throw std::runtime_error("positions were evicted: raise the budget");
        };
        for (int p = 0; p < n_ctx; p += chunk) step(p, std::min(chunk, n_ctx - p), true);

        const std::string load_before = loadavg();
        const int rounds = steps / 3;
        enum { OFF, SPLIT, ON, KINDS };
        const char *names[KINDS] = {"off", "split", "on"};
        std::vector<timing> t[KINDS];
        std::vector<double> engine(rounds), evict(rounds), calls(rounds);
        int p = n_ctx;
        for (int r = 0; r < rounds; r++) {
            int order[KINDS];
            for (int k = 0; k < KINDS; k++) order[k] = (k + r) % KINDS;
            if (r % 2) std::reverse(order, order + KINDS);
            for (int k : order) {
                const hev_llama_stats s0 = hev_llama_get_stats(hl);
                g_split = k == SPLIT;
                timing a = now_all();
                step(p++, 1, k == ON);
                timing b = now_all();
                g_split = false;
                t[k].push_back({b.wall - a.wall, b.thread - a.thread, b.process - a.process});
                if (k == ON) {
                    const hev_llama_stats s1 = hev_llama_get_stats(hl);
                    engine[r] = (double) (s1.observe_ns - s0.observe_ns) / 1e6;
                    evict[r] = (double) (s1.evict_ns - s0.evict_ns) / 1e6;
                    calls[r] = last_calls_cpu;
                }
            }
        }
        const std::string load_after = loadavg();

        std::printf("model %s, context %d, %d rounds of 3 decode steps (off, split, on), %d thread(s), probe %s\n",
                    model_path.c_str(), n_ctx, rounds, threads, probe.c_str());
        std::printf("load average before %s, after %s (%ld cores online)\n", load_before.c_str(), load_after.c_str(),
                    sysconf(_SC_NPROCESSORS_ONLN));
        auto field = [](const std::vector<timing> &v, double timing::*f) {
            std::vector<double> x;
            for (const timing &e : v) x.push_back(e.*f);
            return x;
        };
        auto ratios = [&](int a, int b, double timing::*f) {
            std::vector<double> x;
            for (int r = 0; r < rounds; r++) x.push_back((t[a][r].*f) / (t[b][r].*f));
            return x;
        };
        const struct {
            const char *name;
            double timing::*f;
        } clocks[] = {{"wall clock", &timing::wall},
                      {"thread CPU time", &timing::thread},
                      {"process CPU time", &timing::process}};
        for (const auto &c : clocks) {
            std::printf("%s:\n", c.name);
            for (int k = 0; k < KINDS; k++) report((std::string("step ") + names[k]).c_str(), field(t[k], c.f), " ms");
            std::vector<double> on = ratios(ON, OFF, c.f), split = ratios(SPLIT, OFF, c.f);
            report("on / off", on, "");
            report("split / off", split, "");
            std::printf("  -> overhead %+.2f %% (median of on/off), of which the splits alone %+.2f %%\n",
                        100 * (median(on) - 1), 100 * (median(split) - 1));
        }
        // Where an on-step's extra time goes, by the clocks around the
        // integration's calls: the integration's own (wall: copies in the
        // callback + hashevict_observe, evictions) and this thread's CPU
        // time in hev_llama_begin + hev_llama_evict (the engine's work,
        // not counting waits for a core), against the off step of the
        // same round by the same kind of clock.
        std::vector<double> wall_share, cpu_share;
        for (int r = 0; r < rounds; r++) {
            wall_share.push_back((engine[r] + evict[r]) / t[OFF][r].wall);
            cpu_share.push_back(calls[r] / t[OFF][r].thread);
        }
        std::printf("integration's clock per on-step (wall): copies + hashevict_observe %.3f ms, evictions %.3f ms "
                    "(medians); / off step's wall: median %.2f %% (p10 %.2f, p90 %.2f)\n",
                    median(engine), median(evict), 100 * median(wall_share), 100 * quantile(wall_share, 0.1),
                    100 * quantile(wall_share, 0.9));
        std::printf("thread CPU time in hev_llama_begin + hev_llama_evict per on-step: median %.3f ms (p10 %.3f, p90 "
                    "%.3f); / off step's thread CPU time: median %.2f %% (p10 %.2f, p90 %.2f)\n",
                    median(calls), quantile(calls, 0.1), quantile(calls, 0.9), 100 * median(cpu_share),
                    100 * quantile(cpu_share, 0.1), 100 * quantile(cpu_share, 0.9));
        llama_batch_free(batch);
        llama_free(ctx);
        if (tp) tp_free(tp);
        hev_llama_free(hl);
        llama_model_free(model);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "hashevict-overhead: %s\n", e.what());
        return 1;
    }
    return 0;
}
