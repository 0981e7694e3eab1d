// hashevict-eval: quality measurements of eviction policies on a real model
// through llama.cpp. Each task prints one JSON object per line (per config,
// or per trial for passkey); bench/eval/run_eval.py drives the grid and
// writes the tables and plot.
//
//   hashevict-eval ppl     --model M --text T [--window 8192] [--score-last 2048] --config SPEC...
//   hashevict-eval passkey --model M [--lengths 1024,2048,4096] [--trials 30] [--trial-from N] --config SPEC...
//   hashevict-eval recall  --model M --text T [--window 2048] [--samples 64] --config SPEC...
//
// SPEC is "full" or comma-separated key=value pairs: policy=hash|sink-recent|
// knorm|random|oracle, probe=query|key, score=instant|accumulated|decayed,
// keep=R (budget = R * context), bits=B, sinks=N, recent=N.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "ggml.h"
#include "session.h"

namespace {

struct config {
    std::string spec;
    bool full = true;
    double keep = 1;
    hashevict_params hp = hashevict_default_params();
};

const char *const POLICIES[] = {"hash", "sink-recent", "knorm", "random", "oracle"};
const char *const PROBES[] = {"query", "key"};
const char *const SCORES[] = {"instant", "accumulated", "decayed"};

int index_of(const std::string &v, const char *const *names, int n, const std::string &what) {
    for (int i = 0; i < n; i++)
        if (v == names[i]) return i;
    throw std::runtime_error("unknown " + what + " '" + v + "'");
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
        else throw std::runtime_error("unknown config key '" + k + "'");
    }
    if (!(c.keep > 0 && c.keep <= 1)) throw std::runtime_error("keep must be in (0, 1]");
    return c;
}

std::string config_json(const config &c) {
    char buf[256];
    if (c.full) return "\"config\": \"full\", \"policy\": \"full\", \"keep\": 1.0";
    std::snprintf(buf, sizeof buf,
                  "\"config\": \"%s\", \"policy\": \"%s\", \"probe\": \"%s\", \"score\": \"%s\", \"bits\": %d, \"keep\": %.3f",
                  c.spec.c_str(), POLICIES[c.hp.policy], PROBES[c.hp.probe], SCORES[c.hp.score], c.hp.hash_bits, c.keep);
    return buf;
}

struct args {
    std::string task, model, text;
    std::vector<config> configs;
    int window = 0, score_last = 2048, samples = 64, trials = 30, trial_from = 0, chunk = 64, threads = 2;
    unsigned seed = 1;
    std::vector<int> lengths{1024, 2048, 4096};
};

args parse(int argc, char **argv) {
    if (argc < 2) throw std::runtime_error("usage: hashevict-eval ppl|passkey|recall --model M [--text T] --config SPEC ...");
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
        else if (k == "--lengths") {
            a.lengths.clear();
            std::stringstream ss(v);
            std::string x;
            while (std::getline(ss, x, ',')) a.lengths.push_back(std::stoi(x));
        } else throw std::runtime_error("unknown option " + k);
    }
    if (a.model.empty() || a.configs.empty()) throw std::runtime_error("--model and at least one --config are needed");
    return a;
}

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

hev::session_options session_for(const args &a, const config &c, int context, hashevict_params *hp) {
    hev::session_options so;
    so.chunk = a.chunk;
    so.threads = a.threads;
    so.n_ctx = context;
    if (!c.full) {
        *hp = c.hp;
        hp->budget = std::max(hp->n_sink + hp->n_recent + 1, (int) std::lround(c.keep * context));
        so.evict = hp;
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
        hashevict_params hp;
        hev::session s(model, session_for(a, c, W, &hp));
        double t0 = now_s(), nll = 0;
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
        std::printf("{\"task\": \"ppl\", \"model\": \"%s\", %s, \"window\": %d, \"scored\": %d, \"ppl\": %.5f, "
                    "\"max_held\": %d, \"seconds\": %.2f}\n",
                    mname, config_json(c).c_str(), W, n, std::exp(nll / n), max_held, now_s() - t0);
        std::fflush(stdout);
    }
}

// --- passkey -------------------------------------------------------------------

void task_passkey(const args &a, llama_model *model, const char *mname) {
    const llama_vocab *vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    const std::string intro =
        "There is an important piece of information hidden inside a lot of irrelevant text. "
        "Find it and memorize it. I will quiz you about it.\n";
    const std::string filler = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ";
    const int filler_toks = (int) hev::tokenize(vocab, filler, false).size();
    const int fixed_toks = (int) hev::tokenize(vocab, intro + "The pass key is 12345. Remember it. 12345 is the pass key. "
                                                   "\nWhat is the pass key? The pass key is", true).size();
    for (int trial = a.trial_from; trial < a.trials; trial++) {
        // The same (length, depth, key) for every config of a trial.
        std::mt19937 rng(a.seed * 1000003u + (unsigned) trial);
        int length = a.lengths[trial % a.lengths.size()];
        double depth = (trial / (int) a.lengths.size() + 0.5) / std::ceil((double) a.trials / a.lengths.size());
        int key = 10000 + (int) (rng() % 90000);
        int reps = std::max(1, (length - fixed_toks) / filler_toks);
        int before = (int) std::lround(depth * reps);
        std::string text = intro;
        for (int i = 0; i < before; i++) text += filler;
        text += "The pass key is " + std::to_string(key) + ". Remember it. " + std::to_string(key) + " is the pass key. ";
        for (int i = before; i < reps; i++) text += filler;
        text += "\nWhat is the pass key? The pass key is";
        std::vector<llama_token> toks = hev::tokenize(vocab, text, true);
        const int L = (int) toks.size();
        for (const config &c : a.configs) {
            hashevict_params hp;
            hev::session s(model, session_for(a, c, L + 16, &hp));
            double t0 = now_s();
            for (int p = 0; p < L; p += a.chunk) s.step(&toks[p], p, std::min(a.chunk, L - p), false);
            std::vector<llama_token> out;
            llama_token next = hev::argmax(s.logits(-1), n_vocab);
            for (int g = 0; g < 8; g++) {
                out.push_back(next);
                s.step(&next, L + g, 1, false);
                next = hev::argmax(s.logits(-1), n_vocab);
            }
            std::string answer = hev::detokenize(vocab, out);
            bool ok = answer.find(std::to_string(key)) != std::string::npos;
            std::string esc;
            for (char ch : answer) {
                if (ch == '"' || ch == '\\') esc += '\\';
                if ((unsigned char) ch >= 0x20) esc += ch;
            }
            std::printf("{\"task\": \"passkey\", \"model\": \"%s\", %s, \"trial\": %d, \"length\": %d, \"depth\": %.3f, "
                        "\"correct\": %s, \"answer\": \"%s\", \"seconds\": %.2f}\n",
                        mname, config_json(c).c_str(), trial, L, depth, ok ? "true" : "false", esc.c_str(),
                        now_s() - t0);
            std::fflush(stdout);
        }
    }
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
    // Gemma 3: every layer is a 512-token sliding window except each sixth.
    char arch[64] = {0};
    llama_model_meta_val_str(model, "general.architecture", arch, sizeof arch);
    const int swa = llama_model_n_swa(model);
    auto window_of = [&](int il) { return (std::string(arch) == "gemma3" && (il + 1) % 6 != 0 && swa > 0) ? swa : 0; };

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
        double t0 = now_s();
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
                    "\"recall_mean\": %.5f, \"recall_per_layer\": [%s], \"seconds\": %.2f}\n",
                    mname, config_json(c).c_str(), W, samples.size(), mean, per.c_str(), now_s() - t0);
        std::fflush(stdout);
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
        if (a.task == "ppl") task_ppl(a, model, desc);
        else if (a.task == "passkey") task_passkey(a, model, desc);
        else if (a.task == "recall") task_recall(a, model, desc);
        else throw std::runtime_error("unknown task " + a.task + " (ppl, passkey, recall)");
        llama_model_free(model);
        llama_backend_free();
    } catch (const std::exception &e) {
        std::fprintf(stderr, "hashevict-eval: %s\n", e.what());
        return 1;
    }
    return 0;
}
