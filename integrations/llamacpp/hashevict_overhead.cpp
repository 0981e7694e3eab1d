// hashevict-overhead: what HashEvict's token mode costs a decode step of a
// stock llama.cpp context when it observes every layer but has nothing to
// evict, as paired per-step ratios.
//
// One context with the integration attached (budget above the stream, so
// nothing is ever evicted) reads a prompt (untimed), then decodes one token
// per step, every other step with HashEvict observing (hev_llama_begin before
// llama_decode, hev_llama_evict after) and the others without (the callback
// then answers "no" to every node: no graph split, no copy, no engine call),
// the two kinds in alternating order (on off, off on, ...). Each step is
// timed by the wall clock; a ratio on/off pairs two neighbouring steps of
// the same context, threadpool and cache length, so a machine shared with
// other jobs slows both alike. Medians and ranges of the ratios are printed
// with the load average before and after. Wall time, not thread CPU time:
// decode runs on the ggml worker threads too, and the cost being measured
// includes the workers idling at every graph split the callback makes.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <unistd.h>
#include <string>
#include <vector>

#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "session.h"

namespace {

void usage() {
    std::fprintf(stderr,
                 "usage: hashevict-overhead --model M.gguf --text FILE [options]\n"
                 "  --ctx N       context length reached by the prompt (2048)\n"
                 "  --steps N     timed decode steps, half with HashEvict observing (128)\n"
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

}  // namespace

int main(int argc, char **argv) {
    std::string model_path, text_path, probe = "query";
    int n_ctx = 2048, steps = 128, threads = 2, chunk = 256;
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
    if (model_path.empty() || text_path.empty() || n_ctx < 1 || steps < 2 || threads < 1 || chunk < 1 ||
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
            if (on && hev_llama_begin(hl, 0, pos.data(), n) != 0) throw std::runtime_error(hev_llama_error(hl));
            if (llama_decode(ctx, batch) != 0) throw std::runtime_error("llama_decode failed");
            int32_t dropped = 0;
            if (on && hev_llama_evict(hl, ctx, 0, &dropped) != 0) throw std::runtime_error(hev_llama_error(hl));
            if (dropped != 0) throw std::runtime_error("positions were evicted: raise the budget");
        };
        for (int p = 0; p < n_ctx; p += chunk) step(p, std::min(chunk, n_ctx - p), true);

        const std::string load_before = loadavg();
        const hev_llama_stats st0 = hev_llama_get_stats(hl);
        const int pairs = steps / 2;
        std::vector<double> t_off(pairs), t_on(pairs), ratio(pairs);
        auto timed = [&](int p, bool on) {
            double t0 = now_ms();
            step(p, 1, on);
            return now_ms() - t0;
        };
        for (int i = 0; i < pairs; i++) {
            int p = n_ctx + 2 * i;
            if (i % 2 == 0) {
                t_on[i] = timed(p, true);
                t_off[i] = timed(p + 1, false);
            } else {
                t_off[i] = timed(p, false);
                t_on[i] = timed(p + 1, true);
            }
            ratio[i] = t_on[i] / t_off[i];
        }
        const hev_llama_stats st1 = hev_llama_get_stats(hl);
        const std::string load_after = loadavg();

        std::printf("model %s, context %d, %d pairs of decode steps, %d thread(s), probe %s\n", model_path.c_str(),
                    n_ctx, pairs, threads, probe.c_str());
        std::printf("load average before %s, after %s (%ld cores online)\n", load_before.c_str(), load_after.c_str(),
                    sysconf(_SC_NPROCESSORS_ONLN));
        std::printf("step off    : median %.3f ms (p10 %.3f, p90 %.3f, min %.3f, max %.3f)\n", median(t_off),
                    quantile(t_off, 0.1), quantile(t_off, 0.9), quantile(t_off, 0), quantile(t_off, 1));
        std::printf("step on     : median %.3f ms (p10 %.3f, p90 %.3f, min %.3f, max %.3f)\n", median(t_on),
                    quantile(t_on, 0.1), quantile(t_on, 0.9), quantile(t_on, 0), quantile(t_on, 1));
        std::printf("ratio on/off: median %.4f (p10 %.4f, p90 %.4f, min %.4f, max %.4f) -> overhead %+.2f %%\n",
                    median(ratio), quantile(ratio, 0.1), quantile(ratio, 0.9), quantile(ratio, 0),
                    quantile(ratio, 1), 100 * (median(ratio) - 1));
        std::printf("engine time per step (hashevict_observe + copies): %.3f ms; evictions: %.3f ms\n",
                    (double) (st1.observe_ns - st0.observe_ns) / 1e6 / pairs,
                    (double) (st1.evict_ns - st0.evict_ns) / 1e6 / pairs);
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
