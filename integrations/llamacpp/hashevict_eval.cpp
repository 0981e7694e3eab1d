// hashevict-eval: quality measurements of eviction policies on a real model
// through llama.cpp. Each task prints one JSON object per line (per config,
// or per trial and config for passkey and facts); bench/eval/run_eval.py
// drives the grid and writes the tables and plot.
//
//   hashevict-eval ppl     --model M --text T [--window 8192] [--score-last 2048] --config SPEC...
//   hashevict-eval passkey --model M [--lengths 1024,2048,4096] [--trials 30] [--trial-from N]
//                          [--scenario stream|prefill|both] --config SPEC...
//   hashevict-eval facts   --model M --text HAYSTACK [--facts 4] (then as passkey) [--show-prompts 1]
//   hashevict-eval recall  --model M --text T [--window 2048] [--samples 64] --config SPEC...
//
// Scenarios of the retrieval tasks: "stream" caps the cache while the prompt
// is read (every config prefills on its own); "prefill" reads the prompt
// once with the full cache, saves the sequence state and, for every config,
// restores it, compresses to the budget and answers (see shared_prefill).
//
// SPEC is "full" or comma-separated key=value pairs: policy=hash|sink-recent|
// knorm|random|oracle, probe=query|key, score=instant|accumulated|decayed,
// keep=R (budget = R * context), bits=B, sinks=N, recent=N; for the prefill
// scenario also window=W (the last W prompt queries score the prompt; 32),
// pool=K (max pool of the scores; 11, as hashevict-run) and form=cosine|distance|softmax,
// optionally +local and +trailing (hashevict_compress_score). estimate=distance|logit and redundancy=W: the
// hash policy's streaming options (hashevict_params.estimate / .redundancy;
// defaults distance and 0, the paper). runtime=fork (hashevict-eval-fork only, stream
// scenario and ppl): the policy runs per layer and KV head inside the patched
// llama.cpp (integrations/llamacpp-fork) instead of in token mode.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "ggml-backend.h"
#include "ggml.h"
#include "session.h"
#ifdef HEV_FORK
#include "perhead_placer.h"
#endif

namespace {

struct config {
    std::string spec;
    bool full = true;
    double keep = 1;
    hashevict_params hp = hashevict_default_params();
    int window = 32, pool = 11, form = HASHEVICT_COMPRESS_COSINE;  // compress after prefill
    bool perhead = false;  // runtime=fork: the fork's per-head placer, not token mode
};

const char *const POLICIES[] = {"hash", "sink-recent", "knorm", "random", "oracle"};
const char *const PROBES[] = {"query", "key"};
const char *const SCORES[] = {"instant", "accumulated", "decayed"};
const char *const ESTIMATES[] = {"distance", "logit"};

int index_of(const std::string &v, const char *const *names, int n, const std::string &what) {
    for (int i = 0; i < n; i++)
        if (v == names[i]) return i;
    throw std::runtime_error("unknown " + what + " '" + v + "'");
}

// runtime=stock|fork. The fork needs this file built against the patched
// llama.cpp (hashevict-eval-fork), which defines HEV_FORK.
bool parse_runtime(const std::string &v) {
    if (v == "stock") return false;
    if (v != "fork") throw std::runtime_error("unknown runtime '" + v + "' (stock, fork)");
#ifndef HEV_FORK
    throw std::runtime_error("runtime=fork needs hashevict-eval-fork, built against the patched llama.cpp "
                             "(make llamacpp-fork-tools)");
#endif
    return true;
}

config parse_config(const std::string &spec) {
    config c;
    c.spec = spec;
    if (spec == "full") return c;
    c.full = false;
    c.keep = 0.5;
    std::stringstream ss(spec);
    std::string kv;
    while (std::getline(ss, kv, ',')) {
        size_t eq = kv.find('=');
        if (eq == std::string::npos) throw std::runtime_error("config item '" + kv + "' is not key=value");
        std::string k = kv.substr(0, eq), v = kv.substr(eq + 1);
        if (k == "policy") c.hp.policy = index_of(v, POLICIES, 5, k);
        else if (k == "probe") c.hp.probe = index_of(v, PROBES, 2, k);
        else if (k == "score") c.hp.score = index_of(v, SCORES, 3, k);
        else if (k == "keep") c.keep = std::stod(v);
        else if (k == "bits") c.hp.hash_bits = std::stoi(v);
        else if (k == "sinks") c.hp.n_sink = std::stoi(v);
        else if (k == "recent") c.hp.n_recent = std::stoi(v);
        else if (k == "window") c.window = std::stoi(v);
        else if (k == "pool") c.pool = std::stoi(v);
        else if (k == "form") c.form = hev::parse_compress_form(v);
        else if (k == "estimate") c.hp.estimate = index_of(v, ESTIMATES, 2, k);
        else if (k == "redundancy") c.hp.redundancy = std::stof(v);
        else if (k == "runtime") c.perhead = parse_runtime(v);
        else throw std::runtime_error("unknown config key '" + k + "'");
    }
    if (!(c.keep > 0 && c.keep <= 1)) throw std::runtime_error("keep must be in (0, 1]");
    if (c.window < 1) throw std::runtime_error("window must be at least 1");
    return c;
}

std::string config_json(const config &c) {
    char buf[256];
    if (c.full) return "\"config\": \"full\", \"policy\": \"full\", \"keep\": 1.0";
    std::snprintf(buf, sizeof buf,
                  "\"config\": \"%s\", \"policy\": \"%s\", \"probe\": \"%s\", \"score\": \"%s\", \"bits\": %d, \"keep\": %.3f",
                  c.spec.c_str(), POLICIES[c.hp.policy], PROBES[c.hp.probe], SCORES[c.hp.score], c.hp.hash_bits, c.keep);
    std::string out = buf;
    // Only when set, so that the paper's rows keep their fields.
    if (c.hp.estimate != HASHEVICT_ESTIMATE_DISTANCE) out += std::string(", \"estimate\": \"") + ESTIMATES[c.hp.estimate] + "\"";
    if (c.hp.redundancy != 0) {
        std::snprintf(buf, sizeof buf, ", \"redundancy\": %g", c.hp.redundancy);
        out += buf;
    }
    return out + (c.perhead ? ", \"runtime\": \"fork\"" : "");
}

struct args {
    std::string task, model, text, scenario = "stream";
    std::vector<config> configs;
    int window = 0, score_last = 2048, samples = 64, trials = 30, trial_from = 0, chunk = 64, threads = 2;
    int n_facts = 4, show_prompts = 0;
    unsigned seed = 1;
    std::vector<int> lengths{1024, 2048, 4096};
};

args parse(int argc, char **argv) {
    if (argc < 2) throw std::runtime_error("usage: hashevict-eval ppl|passkey|facts|recall --model M [--text T] --config SPEC ...");
    args a;
    a.task = argv[1];
    for (int i = 2; i < argc; i++) {
        std::string k = argv[i];
        if (i + 1 >= argc) throw std::runtime_error(k + " needs a value");
        std::string v = argv[++i];
        if (k == "--model") a.model = v;
        else if (k == "--text") a.text = v;
        else if (k == "--config") a.configs.push_back(parse_config(v));
        else if (k == "--window") a.window = std::stoi(v);
        else if (k == "--score-last") a.score_last = std::stoi(v);
        else if (k == "--samples") a.samples = std::stoi(v);
        else if (k == "--trials") a.trials = std::stoi(v);
        else if (k == "--trial-from") a.trial_from = std::stoi(v);
        else if (k == "--chunk") a.chunk = std::stoi(v);
        else if (k == "--threads") a.threads = std::stoi(v);
        else if (k == "--seed") a.seed = (unsigned) std::stoul(v);
        else if (k == "--scenario") a.scenario = v;
        else if (k == "--facts") a.n_facts = std::stoi(v);
        else if (k == "--show-prompts") a.show_prompts = std::stoi(v);
        else if (k == "--lengths") {
            a.lengths.clear();
            std::stringstream ss(v);
            std::string x;
            while (std::getline(ss, x, ',')) a.lengths.push_back(std::stoi(x));
        } else throw std::runtime_error("unknown option " + k);
    }
    if (a.model.empty() || a.configs.empty()) throw std::runtime_error("--model and at least one --config are needed");
    if (a.scenario != "stream" && a.scenario != "prefill" && a.scenario != "both")
        throw std::runtime_error("--scenario must be stream, prefill or both");
    if (a.chunk < 1 || a.trials < 0 || a.trial_from < 0 || a.lengths.empty() ||
        *std::min_element(a.lengths.begin(), a.lengths.end()) < 1)
        throw std::runtime_error("--chunk and --lengths must be positive");
    for (const config &c : a.configs)
        if (c.perhead && (a.task == "recall" || a.scenario != "stream"))
            throw std::runtime_error("runtime=fork runs ppl, passkey and facts in the stream scenario only");
    return a;
}

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// CPU time of the whole process (every thread). On a machine shared with
// other work the wall time mostly measures the neighbours; CPU time much less
// so (not at all immune: shared caches, and ggml's workers spin while they
// wait for a descheduled sibling).
double cpu_s() {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

// Positions kept for a context of `context` tokens; the same in both
// scenarios, so that they compare at equal memory.
int budget_of(const config &c, int context) {
    return std::max(c.hp.n_sink + c.hp.n_recent + 1, (int) std::lround(c.keep * context));
}

// What a streaming session refers to, so it must outlive it: the token-mode
// parameters, or with runtime=fork the fork's per-head placer.
struct stream_state {
    hashevict_params hp;
#ifdef HEV_FORK
    std::unique_ptr<hev_fork::placer> placer;
#endif
    // A failed placement puts the token where llama.cpp chose, every head
    // alike: such a run is not the per-head policy its row would name.
    void check() const {
#ifdef HEV_FORK
        if (placer && placer->failures() != 0)
            throw std::runtime_error(std::to_string(placer->failures()) + " per-head placements failed");
#endif
    }
};

hev::session_options session_for(const args &a, llama_model *model, const config &c, int context, stream_state *st) {
    (void) model;
    hev::session_options so;
    so.chunk = a.chunk;
    so.threads = a.threads;
    so.n_ctx = context;
    if (!c.full) {
#ifdef HEV_FORK
        // The same budget as token mode: the fork holds exactly this many
        // cells per layer and KV head (token mode holds up to one more step).
        if (c.perhead) {
            st->placer.reset(new hev_fork::placer(model, c.hp, budget_of(c, context), context));
            so.kv_placer = st->placer->get();
            return so;
        }
#endif
        st->hp = c.hp;
        st->hp.budget = budget_of(c, context);
        so.evict = &st->hp;
    }
    return so;
}

// --- perplexity --------------------------------------------------------------

void task_ppl(const args &a, llama_model *model, const char *mname) {
    const llama_vocab *vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    std::vector<llama_token> toks = hev::tokenize(vocab, hev::read_file(a.text), true);
    const int W = a.window ? a.window : 8192;
    if ((int) toks.size() < W) throw std::runtime_error("text shorter than the window");
    const int from = W - a.score_last;  // tokens predicted at positions >= from are scored
    for (const config &c : a.configs) {
        stream_state st;
        hev::session s(model, session_for(a, model, c, W, &st));
        double t0 = now_s(), c0 = cpu_s(), nll = 0;
        int n = 0, max_held = 0;
        std::vector<float> last(n_vocab);
        for (int p = 0; p < W; p += a.chunk) {
            int m = std::min(a.chunk, W - p);
            if (p >= from && p > 0) {
                nll -= hev::log_softmax_at(last.data(), n_vocab, toks[p]);
                n++;
            }
            s.step(&toks[p], p, m, p + m > from);
            for (int i = 0; i + 1 < m; i++) {
                if (p + i + 1 >= from) {
                    nll -= hev::log_softmax_at(s.logits(i), n_vocab, toks[p + i + 1]);
                    n++;
                }
            }
            std::copy(s.logits(m - 1), s.logits(m - 1) + n_vocab, last.begin());
            max_held = std::max(max_held, s.held());
        }
        st.check();
        std::printf("{\"task\": \"ppl\", \"model\": \"%s\", %s, \"window\": %d, \"scored\": %d, \"ppl\": %.5f, "
                    "\"max_held\": %d, \"seconds\": %.2f, \"cpu_seconds\": %.2f}\n",
                    mname, config_json(c).c_str(), W, n, std::exp(nll / n), max_held, now_s() - t0, cpu_s() - c0);
        std::fflush(stdout);
    }
}

// The sliding window of layer il, or 0 for a global layer: Gemma 3 slides
// on every layer but each sixth (the rule hashevict_llama.cpp's
// set_layer_windows applies in the streaming scenario).
int sliding_window_of(const llama_model *model, int il) {
    char arch[64] = {0};
    llama_model_meta_val_str(model, "general.architecture", arch, sizeof arch);
    const int swa = llama_model_n_swa(model);
    return (std::string(arch) == "gemma3" && il % 6 < 5 && swa > 0) ? swa : 0;
}

// --- attention-mass recall -------------------------------------------------------

// Captures every layer's post-RoPE Q and K of a full-cache pass.
struct capture {
    int n_layer = 0;
    std::vector<std::vector<float>> q, k;  // per layer: [pos][head][dim]
    int64_t dim = 0, n_q = 0, n_kv = 0;
};

bool capture_cb(ggml_tensor *t, bool ask, void *ud) {
    auto *cap = (capture *) ud;
    const char *name = t->name;
    if ((name[0] != 'Q' && name[0] != 'K') || std::strncmp(name + 1, "cur-", 4) != 0 || t->op != GGML_OP_ROPE) {
        return ask ? false : true;
    }
    char *end = nullptr;
    long il = std::strtol(name + 5, &end, 10);
    if (*end != '\0' || il < 0 || il >= cap->n_layer) return ask ? false : true;
    if (ask) return true;
    if (t->type != GGML_TYPE_F32) return true;
    auto &dst = name[0] == 'Q' ? cap->q[il] : cap->k[il];
    (name[0] == 'Q' ? cap->n_q : cap->n_kv) = t->ne[1];
    cap->dim = t->ne[0];
    for (int64_t tok = 0; tok < t->ne[2]; tok++)
        for (int64_t h = 0; h < t->ne[1]; h++) {
            const float *row = (const float *) ((const char *) t->data + tok * t->nb[2] + h * t->nb[1]);
            dst.insert(dst.end(), row, row + t->ne[0]);
        }
    return true;
}

void task_recall(const args &a, llama_model *model, const char *mname) {
    const llama_vocab *vocab = llama_model_get_vocab(model);
    std::vector<llama_token> toks = hev::tokenize(vocab, hev::read_file(a.text), true);
    const int W = a.window ? a.window : 2048;
    if ((int) toks.size() < W) throw std::runtime_error("text shorter than the window");
    capture cap;
    cap.n_layer = llama_model_n_layer(model);
    cap.q.resize(cap.n_layer);
    cap.k.resize(cap.n_layer);
    {
        hev::session_options so;
        so.chunk = a.chunk;
        so.threads = a.threads;
        so.n_ctx = W;
        so.extra_cb = capture_cb;
        so.extra_cb_data = &cap;
        hev::session s(model, so);
        for (int p = 0; p < W; p += a.chunk) s.step(&toks[p], p, std::min(a.chunk, W - p), false);
    }
    const int L = cap.n_layer, D = (int) cap.dim, HQ = (int) cap.n_q, HK = (int) cap.n_kv, G = HQ / HK;
    auto window_of = [&](int il) { return sliding_window_of(model, il); };

    // Sample query positions in the second half: every ratio is evicting there.
    std::vector<int> samples;
    for (int i = 0; i < a.samples; i++) samples.push_back(W / 2 + (int) ((int64_t) i * (W / 2) / a.samples));
    // Exact softmax attention of each sampled query over its causal past,
    // per layer and query head: att[layer][sample][head][j], j <= t.
    std::vector<std::vector<std::vector<float>>> att(L, std::vector<std::vector<float>>(samples.size()));
    const float scale = 1.0f / std::sqrt((float) D);
    for (int il = 0; il < L; il++) {
        int win = window_of(il);
        for (size_t si = 0; si < samples.size(); si++) {
            int t = samples[si];
            auto &out = att[il][si];
            out.assign((size_t) HQ * (t + 1), 0.0f);
            for (int h = 0; h < HQ; h++) {
                const float *qv = &cap.q[il][((size_t) t * HQ + h) * D];
                int kh = h / G;
                float *row = &out[(size_t) h * (t + 1)];
                float mx = -INFINITY;
                int j0 = win ? std::max(0, t - win + 1) : 0;
                for (int j = j0; j <= t; j++) {
                    const float *kv = &cap.k[il][((size_t) j * HK + kh) * D];
                    float d = 0;
                    for (int e = 0; e < D; e++) d += qv[e] * kv[e];
                    row[j] = d * scale;
                    mx = std::max(mx, row[j]);
                }
                double z = 0;
                for (int j = j0; j <= t; j++) z += (row[j] = std::exp(row[j] - mx));
                for (int j = j0; j <= t; j++) row[j] = (float) (row[j] / z);
            }
        }
    }
    for (const config &c : a.configs) {
        double t0 = now_s(), c0 = cpu_s();
        std::vector<double> recall(L, 0.0);
        if (c.full) {
            std::fill(recall.begin(), recall.end(), 1.0);
        } else {
            hashevict_params hp = c.hp;
            hp.mode = HASHEVICT_MODE_TOKEN;
            hp.n_layers = L;
            hp.n_q_heads = HQ;
            hp.n_kv_heads = HK;
            hp.head_dim = D;
            hp.budget = std::max(hp.n_sink + hp.n_recent + 1, (int) std::lround(c.keep * W));
            hashevict_engine *e = nullptr;
            if (hashevict_engine_create(&hp, &e) != HASHEVICT_OK) throw std::runtime_error(hashevict_last_error());
            hashevict_seq_add(e, 0);
            std::vector<char> held(W, 0);
            std::vector<int32_t> out(W);
            size_t next_sample = 0;
            for (int p = 0; p < W; p += a.chunk) {
                int m = std::min(a.chunk, W - p);
                for (int i = 0; i < m; i++) held[p + i] = 1;
                // Attention at this step covers what was kept plus the chunk.
                while (next_sample < samples.size() && samples[next_sample] < p + m) {
                    int t = samples[next_sample];
                    for (int il = 0; il < L; il++) {
                        const auto &w = att[il][next_sample];
                        double got = 0;
                        for (int h = 0; h < HQ; h++)
                            for (int j = 0; j <= t; j++)
                                if (held[j]) got += w[(size_t) h * (t + 1) + j];
                        recall[il] += got / HQ;
                    }
                    next_sample++;
                }
                std::vector<int32_t> pos(m);
                for (int i = 0; i < m; i++) pos[i] = p + i;
                for (int il = 0; il < L; il++) {
                    hashevict_tensor qt{&cap.q[il][(size_t) p * HQ * D], HASHEVICT_DTYPE_F32, HASHEVICT_DEVICE_HOST,
                                        D, HQ, m, D * 4, (int64_t) HQ * D * 4, nullptr};
                    hashevict_tensor kt{&cap.k[il][(size_t) p * HK * D], HASHEVICT_DTYPE_F32, HASHEVICT_DEVICE_HOST,
                                        D, HK, m, D * 4, (int64_t) HK * D * 4, nullptr};
                    if (hashevict_observe(e, 0, il, &qt, &kt, pos.data(), m) != HASHEVICT_OK)
                        throw std::runtime_error(hashevict_last_error());
                }
                int32_t got = 0;
                if (hashevict_evictions(e, 0, out.data(), W, &got) != HASHEVICT_OK)
                    throw std::runtime_error(hashevict_last_error());
                for (int i = 0; i < got; i++) held[out[i]] = 0;
            }
            hashevict_engine_free(e);
            for (double &r : recall) r /= (double) samples.size();
        }
        std::string per;
        double mean = 0;
        for (int il = 0; il < L; il++) {
            char b[32];
            std::snprintf(b, sizeof b, "%s%.5f", il ? ", " : "", recall[il]);
            per += b;
            mean += recall[il] / L;
        }
        std::printf("{\"task\": \"recall\", \"model\": \"%s\", %s, \"window\": %d, \"samples\": %zu, "
                    "\"recall_mean\": %.5f, \"recall_per_layer\": [%s], \"seconds\": %.2f, \"cpu_seconds\": %.2f}\n",
                    mname, config_json(c).c_str(), W, samples.size(), mean, per.c_str(), now_s() - t0, cpu_s() - c0);
        std::fflush(stdout);
    }
}

// --- retrieval: passkey and facts ---------------------------------------------------

// One retrieval trial: the prompt, the string the greedy answer must
// contain, and the task's own JSON fields (length, depth, ...).
struct trial_prompt {
    std::vector<llama_token> toks;
    std::string expect;
    std::string fields;
};

std::string json_escape(const std::string &s) {
    std::string esc;
    for (char ch : s) {
        if (ch == '"' || ch == '\\') esc += '\\';
        if ((unsigned char) ch >= 0x20) esc += ch;
    }
    return esc;
}

bool contains_ci(std::string hay, std::string needle) {
    for (char &c : hay) c = (char) std::tolower((unsigned char) c);
    for (char &c : needle) c = (char) std::tolower((unsigned char) c);
    return hay.find(needle) != std::string::npos;
}

const int ANSWER_TOKENS = 8;

void print_trial(const char *task, const char *mname, const config &c, const char *scenario, int trial,
                 const trial_prompt &tp, const std::string &answer, double seconds, double cpu,
                 const std::string &more) {
    bool ok = contains_ci(answer, tp.expect);
    std::printf("{\"task\": \"%s\", \"model\": \"%s\", %s, \"scenario\": \"%s\", \"trial\": %d, %s, "
                "\"correct\": %s, \"expect\": \"%s\", \"answer\": \"%s\", \"seconds\": %.2f, "
                "\"cpu_seconds\": %.2f%s}\n",
                task, mname, config_json(c).c_str(), scenario, trial, tp.fields.c_str(), ok ? "true" : "false",
                json_escape(tp.expect).c_str(), json_escape(answer).c_str(), seconds, cpu, more.c_str());
    std::fflush(stdout);
}

// Streaming: the cache is capped while the prompt is read, each config with
// its own prefill (the eviction changes the cache as it reads).
void run_streaming(const args &a, llama_model *model, const char *mname, const char *task, int trial,
                   const trial_prompt &tp) {
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    const int L = (int) tp.toks.size();
    for (const config &c : a.configs) {
        stream_state st;
        hev::session s(model, session_for(a, model, c, L + 2 * ANSWER_TOKENS, &st));
        double t0 = now_s(), c0 = cpu_s();
        for (int p = 0; p < L; p += a.chunk) s.step(&tp.toks[p], p, std::min(a.chunk, L - p), false);
        std::vector<llama_token> out;
        llama_token next = hev::argmax(s.logits(-1), n_vocab);
        for (int g = 0; g < ANSWER_TOKENS; g++) {
            out.push_back(next);
            s.step(&next, L + g, 1, false);
            next = hev::argmax(s.logits(-1), n_vocab);
        }
        st.check();
        print_trial(task, mname, c, "stream", trial, tp, hev::detokenize(llama_model_get_vocab(model), out),
                    now_s() - t0, cpu_s() - c0, "");
    }
}

template <typename F> F cpu_proc(const char *name) {
    ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (!dev) return nullptr;
    return (F) ggml_backend_reg_get_proc_address(ggml_backend_dev_backend_reg(dev), name);
}

// Compress after prefill: the prompt is read once with the full cache while
// its post-RoPE Q/K are captured; the sequence's KV state is saved, and every
// config starts from a restored copy of it, compresses, then answers. One
// prefill serves every config of a trial, so this scenario costs little more
// than the full-cache run.
class shared_prefill {
  public:
    shared_prefill(const args &a, llama_model *model, int max_len) : a_(a), model_(model) {
        llama_context_params cp = llama_context_default_params();
        cp.n_threads = cp.n_threads_batch = a.threads;
        cp.n_batch = cp.n_ubatch = (uint32_t) a.chunk;
        cp.n_seq_max = 1;
        cp.no_perf = true;
        cp.n_ctx = (uint32_t) (max_len + 2 * ANSWER_TOKENS);
        cap_.n_layer = llama_model_n_layer(model);
        cp.cb_eval = capture_gate;
        cp.cb_eval_user_data = this;
        ctx_ = llama_init_from_model(model, cp);
        if (!ctx_) throw std::runtime_error("llama_init_from_model failed");
        // The capture callback splits the graph at 2 nodes per layer; without
        // a threadpool ggml would start and join its workers at every split.
        auto tp_new = cpu_proc<ggml_threadpool *(*)(ggml_threadpool_params *)>("ggml_threadpool_new");
        if (tp_new) {
            ggml_threadpool_params tpp = ggml_threadpool_params_default(a.threads);
            tp_ = tp_new(&tpp);
            if (tp_) llama_attach_threadpool(ctx_, tp_, tp_);
        }
        batch_ = llama_batch_init(a.chunk, 0, 1);
    }
    ~shared_prefill() {
        llama_batch_free(batch_);
        llama_free(ctx_);
        if (tp_) {
            auto tp_free = cpu_proc<void (*)(ggml_threadpool *)>("ggml_threadpool_free");
            if (tp_free) tp_free(tp_);
        }
    }
    shared_prefill(const shared_prefill &) = delete;
    shared_prefill &operator=(const shared_prefill &) = delete;

    void run(const char *mname, const char *task, int trial, const trial_prompt &tp) {
        const llama_vocab *vocab = llama_model_get_vocab(model_);
        const int n_vocab = llama_vocab_n_tokens(vocab);
        // The prompt's last token is held back and decoded after the
        // compression, so that every answer token comes from the compressed
        // cache (the question's other tokens are in the scoring window).
        const int L = (int) tp.toks.size(), P = L - 1;
        llama_memory_t mem = llama_get_memory(ctx_);
        llama_memory_clear(mem, true);
        cap_.q.assign(cap_.n_layer, {});
        cap_.k.assign(cap_.n_layer, {});
        capturing_ = true;
        double t0 = now_s(), c0 = cpu_s();
        for (int p = 0; p < P; p += a_.chunk) decode(&tp.toks[p], p, std::min(a_.chunk, P - p));
        capturing_ = false;
        std::vector<uint8_t> state(llama_state_seq_get_size(ctx_, 0));
        if (llama_state_seq_get_data(ctx_, state.data(), state.size(), 0) != state.size())
            throw std::runtime_error("llama_state_seq_get_data failed");
        const double prefill_s = now_s() - t0, prefill_cpu = cpu_s() - c0;
        for (const config &c : a_.configs) {
            double t1 = now_s(), c1 = cpu_s();
            llama_memory_clear(mem, true);
            if (llama_state_seq_set_data(ctx_, state.data(), state.size(), 0) == 0)
                throw std::runtime_error("llama_state_seq_set_data failed");
            double c2 = cpu_s();
            int held = P;
            if (!c.full) held = compress(c, P, L + 2 * ANSWER_TOKENS, mem);
            double compress_cpu = cpu_s() - c2;
            llama_token next = tp.toks[P];
            std::vector<llama_token> out;
            for (int g = 0; g <= ANSWER_TOKENS; g++) {
                decode(&next, P + g, 1);
                next = hev::argmax(llama_get_logits_ith(ctx_, -1), n_vocab);
                if (g < ANSWER_TOKENS) out.push_back(next);
            }
            // The compression is single-threaded and short: its CPU time is
            // compared with the prefill's, not its wall time.
            char more[300];
            std::snprintf(more, sizeof more,
                          ", \"prefill_seconds\": %.3f, \"prefill_cpu_seconds\": %.3f, \"compress_cpu_seconds\": %.4f, "
                          "\"held\": %d, \"window\": %d, \"pool\": %d, \"form\": \"%s\"",
                          prefill_s, prefill_cpu, compress_cpu, held, c.window, c.pool, hev::compress_form_name(c.form).c_str());
            print_trial(task, mname, c, "prefill", trial, tp, hev::detokenize(vocab, out), now_s() - t1, cpu_s() - c1,
                        more);
        }
    }

  private:
    static bool capture_gate(ggml_tensor *t, bool ask, void *self) {
        auto *sp = (shared_prefill *) self;
        if (!sp->capturing_) return ask ? false : true;
        return capture_cb(t, ask, &sp->cap_);
    }

    void decode(const llama_token *tk, int start, int n) {
        batch_.n_tokens = n;
        for (int i = 0; i < n; i++) {
            batch_.token[i] = tk[i];
            batch_.pos[i] = start + i;
            batch_.n_seq_id[i] = 1;
            batch_.seq_id[i][0] = 0;
            batch_.logits[i] = i == n - 1;
        }
        if (llama_decode(ctx_, batch_) != 0) throw std::runtime_error("llama_decode failed");
    }

    // Drops positions of the restored prompt [0, P) down to the config's
    // budget with the engine's compress-after-prefill scoring, and returns
    // how many are held. The engine observes the captured Q/K of the whole
    // prompt (no eviction in between), hash policies then score every
    // position from the queries of the prompt's last `window` positions
    // (hashevict_compress_score, per layer), the others keep their own
    // scores; one hashevict_evictions call keeps the budget.
    int compress(const config &c, int P, int context, llama_memory_t mem) {
        const int L = cap_.n_layer, D = (int) cap_.dim, HQ = (int) cap_.n_q, HK = (int) cap_.n_kv;
        for (int il = 0; il < L; il++)
            if (cap_.q[il].size() != (size_t) P * HQ * D || cap_.k[il].size() != (size_t) P * HK * D)
                throw std::runtime_error("the prefill did not capture every layer's Q/K for every prompt position");
        hashevict_params hp = c.hp;
        hp.mode = HASHEVICT_MODE_TOKEN;
        hp.n_layers = L;
        hp.n_q_heads = HQ;
        hp.n_kv_heads = HK;
        hp.head_dim = D;
        hp.budget = budget_of(c, context);
        hashevict_engine *e = nullptr;
        if (hashevict_engine_create(&hp, &e) != HASHEVICT_OK) throw std::runtime_error(hashevict_last_error());
        struct guard {
            hashevict_engine *e;
            ~guard() { hashevict_engine_free(e); }
        } g{e};
        auto check = [](hashevict_status st) {
            if (st != HASHEVICT_OK) throw std::runtime_error(hashevict_last_error());
        };
        // Sliding layers do not vote on positions they no longer see, as in
        // the streaming scenario.
        for (int il = 0; il < L; il++)
            if (int w = sliding_window_of(model_, il)) check(hashevict_set_layer_window(e, il, w));
        check(hashevict_seq_add(e, 0));
        std::vector<int32_t> pos(P);
        for (int i = 0; i < P; i++) pos[i] = i;
        auto rows = [&](std::vector<float> &x, int heads, int p0, int m) {
            return hashevict_tensor{&x[(size_t) p0 * heads * D], HASHEVICT_DTYPE_F32, HASHEVICT_DEVICE_HOST, D, heads, m,
                                    D * 4, (int64_t) heads * D * 4, nullptr};
        };
        for (int p0 = 0; p0 < P; p0 += a_.chunk) {
            const int m = std::min(a_.chunk, P - p0);
            for (int il = 0; il < L; il++) {
                hashevict_tensor qt = rows(cap_.q[il], HQ, p0, m), kt = rows(cap_.k[il], HK, p0, m);
                check(hashevict_observe(e, 0, il, &qt, &kt, &pos[p0], m));
            }
        }
        if (c.hp.policy == HASHEVICT_POLICY_HASH) {
            const int w = std::min(c.window, P), w0 = P - w;
            for (int il = 0; il < L; il++) {
                hashevict_tensor qw = rows(cap_.q[il], HQ, w0, w);
                check(hashevict_compress_score(e, 0, il, &qw, &pos[w0], w, c.pool, c.form));
            }
        }
        std::vector<int32_t> out(P);
        int32_t got = 0;
        check(hashevict_evictions(e, 0, out.data(), P, &got));
        for (int i = 0; i < got; i++)
            if (!llama_memory_seq_rm(mem, 0, out[i], out[i] + 1))
                throw std::runtime_error("llama_memory_seq_rm refused a position");
        return P - got;
    }

    const args &a_;
    llama_model *model_;
    llama_context *ctx_ = nullptr;
    ggml_threadpool *tp_ = nullptr;
    llama_batch batch_{};
    capture cap_;
    bool capturing_ = false;
};

// Runs one trial in the scenarios asked for, every config on the same prompt.
struct retrieval_runner {
    const args &a;
    llama_model *model;
    const char *mname, *task;
    std::unique_ptr<shared_prefill> sp;

    retrieval_runner(const args &a_, llama_model *m, const char *mn, const char *t, int max_len)
        : a(a_), model(m), mname(mn), task(t) {
        if (a.scenario != "stream") sp.reset(new shared_prefill(a, m, max_len));
    }
    void run(int trial, const trial_prompt &tp) {
        if (a.scenario != "prefill") run_streaming(a, model, mname, task, trial, tp);
        if (sp) sp->run(mname, task, trial, tp);
    }
};

void task_passkey(const args &a, llama_model *model, const char *mname) {
    const llama_vocab *vocab = llama_model_get_vocab(model);
    const std::string intro =
        "There is an important piece of information hidden inside a lot of irrelevant text. "
        "Find it and memorize it. I will quiz you about it.\n";
    const std::string filler = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ";
    const int filler_toks = (int) hev::tokenize(vocab, filler, false).size();
    const int fixed_toks = (int) hev::tokenize(vocab, intro + "The pass key is 12345. Remember it. 12345 is the pass key. "
                                                   "\nWhat is the pass key? The pass key is", true).size();
    retrieval_runner rr(a, model, mname, "passkey", *std::max_element(a.lengths.begin(), a.lengths.end()) + 64);
    for (int trial = a.trial_from; trial < a.trials; trial++) {
        // The same (length, depth, key) for every config of a trial.
        std::mt19937 rng(a.seed * 1000003u + (unsigned) trial);
        int length = a.lengths[trial % a.lengths.size()];
        // Depths follow the golden-ratio sequence (0.50, 0.16, 0.71, 0.37,
        // ...): any number of trials, and any prefix of a run, spreads them
        // over the context and over the lengths, and trial i is the same
        // prompt whatever --trials says.
        double depth = 0.05 + 0.9 * std::fmod(0.5 + 0.6180339887498949 * trial, 1.0);
        int key = 10000 + (int) (rng() % 90000);
        int reps = std::max(1, (length - fixed_toks) / filler_toks);
        int before = (int) std::lround(depth * reps);
        std::string text = intro;
        for (int i = 0; i < before; i++) text += filler;
        text += "The pass key is " + std::to_string(key) + ". Remember it. " + std::to_string(key) + " is the pass key. ";
        for (int i = before; i < reps; i++) text += filler;
        text += "\nWhat is the pass key? The pass key is";
        trial_prompt tp;
        tp.toks = hev::tokenize(vocab, text, true);
        tp.expect = std::to_string(key);
        char f[96];
        std::snprintf(f, sizeof f, "\"length\": %d, \"depth\": %.3f", (int) tp.toks.size(), depth);
        tp.fields = f;
        rr.run(trial, tp);
    }
}

// Multi-fact retrieval: n facts, each from its own template, planted at
// spread depths (fact i in the i-th of n equal bands of the haystack) of a
// real-text haystack; the question asks for one of them. The haystack is a
// passage of --text from a random paragraph onward, past the part the ppl2
// window reads. Subjects and values are made up, so that the model cannot
// know them and no wording decides the result alone.
struct fact_template {
    const char *statement, *question, *prefix;  // "{S}": subject, "{V}": value
    int subject, value;                         // pool indices below
};

enum { S_PERSON, S_PLACE, S_OBJECT, S_TOWN, S_DISH };
enum { V_WORD, V_NUM4, V_NUM3, V_NUM2, V_TOWN, V_SPICE, V_ARTIST };

const fact_template FACT_TEMPLATES[] = {
    {"The code name of the {S} is {V}.", "What is the code name of the {S}?", "The code name of the {S} is", S_PLACE, V_WORD},
    {"{S}'s locker number is {V}.", "What is {S}'s locker number?", "{S}'s locker number is", S_PERSON, V_NUM4},
    {"The {S} is kept in room {V}.", "In which room is the {S} kept?", "The {S} is kept in room", S_OBJECT, V_NUM3},
    {"The password of the {S} is {V}.", "What is the password of the {S}?", "The password of the {S} is", S_PLACE, V_WORD},
    {"{S} was born in the town of {V}.", "In which town was {S} born?", "{S} was born in the town of", S_PERSON, V_TOWN},
    {"The night train to {S} leaves from platform {V}.", "From which platform does the night train to {S} leave?",
     "The night train to {S} leaves from platform", S_TOWN, V_NUM2},
    {"The safe in the {S} opens with the combination {V}.", "What combination opens the safe in the {S}?",
     "The safe in the {S} opens with the combination", S_PLACE, V_NUM4},
    {"{S}'s dog is called {V}.", "What is {S}'s dog called?", "{S}'s dog is called", S_PERSON, V_WORD},
    {"The {S} costs {V} silver coins.", "How many silver coins does the {S} cost?", "The {S} costs", S_OBJECT, V_NUM3},
    {"The secret ingredient of the {S} is {V}.", "What is the secret ingredient of the {S}?",
     "The secret ingredient of the {S} is", S_DISH, V_SPICE},
    {"The {S} was painted by an artist named {V}.", "What was the name of the artist who painted the {S}?",
     "The {S} was painted by an artist named", S_OBJECT, V_ARTIST},
    {"{S} parked the car in bay {V}.", "In which bay did {S} park the car?", "{S} parked the car in bay", S_PERSON, V_NUM3},
    {"The mayor of {S} keeps a parrot named {V}.", "What is the name of the parrot of the mayor of {S}?",
     "The mayor of {S} keeps a parrot named", S_TOWN, V_WORD},
    {"{S}'s telephone extension is {V}.", "What is {S}'s telephone extension?", "{S}'s telephone extension is",
     S_PERSON, V_NUM4},
};

const char *const TITLES[] = {"Dr.", "Mrs.", "Mr.", "Professor", "Captain", "Miss", "Judge", "Sister"};
const char *const SURNAMES[] = {"Ellery", "Thornbury", "Vasquez", "Okafor", "Lindqvist", "Harrowgate", "Moravec",
                                "Quennell", "Abernathy", "Castellan", "Draxler", "Fairweather", "Galloway", "Ishikawa",
                                "Kowalczyk", "Nightingale", "Oyelaran", "Penhallow", "Rasmussen", "Szabo", "Trevelyan",
                                "Underhill", "Winterbourne", "Yardley"};
const char *const COLOURS[] = {"blue", "green", "red", "yellow", "grey", "white", "black", "orange", "purple", "brown"};
const char *const BUILDINGS[] = {"warehouse", "boathouse", "library", "tower", "chapel", "barn", "garage",
                                 "observatory", "bakery", "greenhouse", "mill", "lodge"};
const char *const MATERIALS[] = {"brass", "silver", "wooden", "glass", "copper", "ivory", "iron", "velvet", "marble"};
const char *const OBJECTS[] = {"telescope", "clock", "compass", "lantern", "music box", "chess set", "globe",
                               "typewriter", "violin", "map case", "birdcage", "hourglass"};
const char *const TOWNS[] = {"Quillbrook", "Ashenford", "Dunhallow", "Fenwick Vale", "Greyhaven", "Larkspur", "Oakmere",
                             "Ravensholt", "Thornwick", "Wexley", "Brackenridge", "Elmstead", "Hollowmere", "Kingsmoor",
                             "Pellingham", "Saltmarsh", "Underwood", "Vintry"};
const char *const DISHES[] = {"lemon cake", "fish stew", "onion soup", "plum pie", "barley bread", "pepper sauce",
                              "apple tart", "bean broth"};
const char *const WORDS[] = {"Marrow", "Juniper", "Cobalt", "Falcon", "Thistle", "Quartz", "Saffron", "Ember", "Willow",
                             "Garnet", "Osprey", "Cinder", "Meridian", "Basalt", "Heron", "Kestrel", "Tundra", "Nimbus",
                             "Obsidian", "Sorrel", "Vesper", "Zephyr", "Anvil", "Bramble", "Citadel", "Fennel",
                             "Halcyon", "Indigo", "Jasper", "Larch", "Mistral", "Nettle", "Orchid", "Pewter", "Quill",
                             "Rook", "Sable", "Tamarind", "Umber", "Vellum", "Wicker", "Yarrow", "Zinnia", "Biscuit",
                             "Pumpernickel", "Dandelion", "Gingersnap", "Moonbeam"};
const char *const SPICES[] = {"cardamom", "star anise", "smoked paprika", "fenugreek", "sumac", "tarragon", "lovage",
                              "nutmeg", "caraway", "mace", "sorrel leaves", "black lime"};
const char *const ARTISTS[] = {"Anselm Vey", "Orla Brandt", "Tomas Quell", "Ines Marchetti", "Hugo Falk", "Saskia Dorn",
                               "Piet Lorimer", "Edda Stroud", "Lucan Ferrante", "Mira Holtz"};

template <size_t N> const char *pick(std::mt19937 &rng, const char *const (&pool)[N]) { return pool[rng() % N]; }

std::string subject_of(int kind, std::mt19937 &rng) {
    switch (kind) {
    case S_PERSON: return std::string(pick(rng, TITLES)) + " " + pick(rng, SURNAMES);
    case S_PLACE: return std::string(pick(rng, COLOURS)) + " " + pick(rng, BUILDINGS);
    case S_OBJECT: return std::string(pick(rng, MATERIALS)) + " " + pick(rng, OBJECTS);
    case S_TOWN: return pick(rng, TOWNS);
    default: return pick(rng, DISHES);
    }
}

std::string value_of(int kind, std::mt19937 &rng) {
    switch (kind) {
    case V_WORD: return pick(rng, WORDS);
    case V_NUM4: return std::to_string(1000 + rng() % 9000);
    case V_NUM3: return std::to_string(100 + rng() % 900);
    case V_NUM2: return std::to_string(10 + rng() % 90);
    case V_TOWN: return pick(rng, TOWNS);
    case V_SPICE: return pick(rng, SPICES);
    default: return pick(rng, ARTISTS);
    }
}

std::string fill(const char *tmpl, const std::string &s, const std::string &v) {
    std::string out = tmpl;
    size_t at;
    while ((at = out.find("{S}")) != std::string::npos) out.replace(at, 3, s);
    while ((at = out.find("{V}")) != std::string::npos) out.replace(at, 3, v);
    return out;
}

struct fact {
    std::string statement, question, prefix, value;
    int tmpl;
};

// n facts from distinct templates, with no subject or value twice: a
// question must have one answer, and no value may name another fact.
std::vector<fact> draw_facts(std::mt19937 &rng, int n) {
    const int NT = (int) (sizeof FACT_TEMPLATES / sizeof FACT_TEMPLATES[0]);
    std::vector<int> order(NT);
    for (int i = 0; i < NT; i++) order[i] = i;
    for (int i = NT - 1; i > 0; i--) std::swap(order[i], order[rng() % (i + 1)]);
    std::vector<fact> out;
    std::vector<std::string> used;
    auto fresh = [&](const std::string &x) {
        for (const std::string &u : used)
            if (contains_ci(u, x) || contains_ci(x, u)) return false;
        return true;
    };
    for (int i = 0; i < n; i++) {
        const fact_template &t = FACT_TEMPLATES[order[i]];
        std::string s, v;
        do s = subject_of(t.subject, rng); while (!fresh(s));
        used.push_back(s);
        do v = value_of(t.value, rng); while (!fresh(v));
        used.push_back(v);
        out.push_back({fill(t.statement, s, v), fill(t.question, s, v), fill(t.prefix, s, v), v, order[i]});
    }
    return out;
}

void task_facts(const args &a, llama_model *model, const char *mname) {
    const llama_vocab *vocab = llama_model_get_vocab(model);
    if (a.text.empty()) throw std::runtime_error("facts needs --text (the haystack)");
    const std::string book = hev::read_file(a.text);
    const int NT = (int) (sizeof FACT_TEMPLATES / sizeof FACT_TEMPLATES[0]);
    if (a.n_facts < 1 || a.n_facts > NT) throw std::runtime_error("--facts must be in 1.." + std::to_string(NT));
    // ppl2 reads the first 8,192 tokens (about 40k characters) of the text:
    // haystacks start past them.
    const size_t skip = std::min(book.size() / 4, (size_t) 60000);
    const std::string intro =
        "Below is a long passage from a book. A few facts that do not belong to the book are hidden in it. "
        "Read it and remember them; I will ask about one of them.\n\n";
    retrieval_runner rr(a, model, mname, "facts", *std::max_element(a.lengths.begin(), a.lengths.end()) + 64);
    for (int trial = a.trial_from; trial < a.trials; trial++) {
        // The same prompt for every config of a trial; a salt keeps the
        // draws apart from the passkey task's.
        std::mt19937 rng(a.seed * 1000003u + (unsigned) trial + 0x5eed0000u);
        const int length = a.lengths[trial % a.lengths.size()];
        std::vector<fact> facts = draw_facts(rng, a.n_facts);
        // Trials cycle the asked fact through the bands, so any prefix of a
        // run covers shallow, middle and deep alike (and every length with
        // every band when the counts of lengths and facts are coprime).
        const int asked = trial % a.n_facts;
        const fact &q = facts[asked];
        const std::string tail = "\n\nAnswer the question from the facts hidden in the passage above.\nQuestion: " +
                                 q.question + "\nAnswer: " + q.prefix;
        std::string planted;
        for (const fact &f : facts) planted += f.statement + " ";
        const int fixed = (int) hev::tokenize(vocab, intro + planted + tail, true).size();
        const int want = length - fixed;
        if (want < 64) throw std::runtime_error("--lengths too short for the facts task");
        if (book.size() < skip + (size_t) want * 12 + 1) throw std::runtime_error("--text too short for --lengths");
        // A haystack of about `want` tokens, from a paragraph start on to a
        // sentence end: the character count is corrected from a measurement.
        size_t start = skip + (size_t) rng() % (book.size() - skip - (size_t) want * 12);
        size_t para = book.find("\n\n", start);
        start = para == std::string::npos ? start : para + 2;
        size_t chars = (size_t) want * 4;
        std::string hay;
        for (int it = 0; it < 3; it++) {
            hay = book.substr(start, chars);
            int got = (int) hev::tokenize(vocab, hay, false).size();
            chars = std::max<size_t>(256, (size_t) ((double) chars * want / std::max(got, 1)));
        }
        hay = book.substr(start, chars);
        size_t end = hay.rfind(". ");
        if (end != std::string::npos && end > hay.size() / 2) hay.resize(end + 1);
        // Fact i at a random point of the i-th band of [0.05, 0.95], moved
        // to the next paragraph break (a paragraph of its own, never inside
        // someone's speech), or to the next sentence end in a long paragraph.
        std::vector<size_t> at(a.n_facts);
        std::vector<bool> own_para(a.n_facts);
        for (int i = 0; i < a.n_facts; i++) {
            double u = 0.15 + 0.7 * (double) (rng() % 1000) / 1000.0;
            double d = 0.05 + 0.9 * (i + u) / a.n_facts;
            size_t p = (size_t) (d * (double) hay.size());
            size_t br = hay.find("\n\n", p);
            own_para[i] = br != std::string::npos && br - p < hay.size() / (4 * (size_t) a.n_facts);
            size_t s = own_para[i] ? br : hay.find_first_of(".!?", p);
            at[i] = s == std::string::npos ? hay.size() : own_para[i] ? s : s + 1;
        }
        std::string text = intro, text_before_asked;
        size_t from = 0;
        for (int i = 0; i < a.n_facts; i++) {
            size_t p = std::max(at[i], from);
            text += hay.substr(from, p - from);
            if (i == asked) text_before_asked = text;
            text += (own_para[i] ? "\n\n" : " ") + facts[i].statement;
            from = p;
        }
        text += hay.substr(from) + tail;
        trial_prompt tp;
        tp.toks = hev::tokenize(vocab, text, true);
        tp.expect = q.value;
        const int L = (int) tp.toks.size();
        const double depth = (double) hev::tokenize(vocab, text_before_asked, true).size() / L;
        char f[256];
        std::snprintf(f, sizeof f,
                      "\"length\": %d, \"depth\": %.3f, \"facts\": %d, \"asked\": %d, \"template\": %d, "
                      "\"haystack_offset\": %zu",
                      L, depth, a.n_facts, asked, q.tmpl, start);
        tp.fields = f;
        if (a.show_prompts) std::fprintf(stderr, "--- facts trial %d ---\n%s\n", trial, text.c_str());
        rr.run(trial, tp);
    }
}

}  // namespace

int main(int argc, char **argv) {
    try {
        args a = parse(argc, argv);
        hev::init_llama();
        llama_model *model = hev::load_model(a.model);
        char desc[128];
        llama_model_desc(model, desc, sizeof desc);
#ifdef HEV_FORK
        // Exit status 3 says "this runtime refuses this model" (run_eval.py
        // skips the model's fork rows), not that the run broke.
        if (std::any_of(a.configs.begin(), a.configs.end(), [](const config &c) { return c.perhead; }) &&
            !hev_fork::accepts(model)) {
            std::fprintf(stderr, "hashevict-eval: the fork refuses %s with a per-head placer (llama.cpp says why above)\n",
                         a.model.c_str());
            return 3;
        }
#endif
        if (a.task == "ppl") task_ppl(a, model, desc);
        else if (a.task == "passkey") task_passkey(a, model, desc);
        else if (a.task == "recall") task_recall(a, model, desc);
        else if (a.task == "facts") task_facts(a, model, desc);
        else throw std::runtime_error("unknown task " + a.task + " (ppl, passkey, facts, recall)");
        llama_model_free(model);
        llama_backend_free();
    } catch (const std::exception &e) {
        std::fprintf(stderr, "hashevict-eval: %s\n", e.what());
        return 1;
    }
    return 0;
}
