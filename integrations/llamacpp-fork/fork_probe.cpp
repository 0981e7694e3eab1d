// fork-probe: drives a llama.cpp build (stock or patched with llama.cpp.patch) for the tests
// and the speed figure of docs/llamacpp-fork.md. The same source builds against both: the
// patch defines LLAMA_KV_PLACER.
//
//   fork-probe logits  --model M --text F --prompt N --gen G [--ctx C] [--budget B] --out FILE
//       prompt in one llama_decode, then G greedy tokens one at a time; writes the float32
//       logits of the last prompt token and of every step (G+1 rows of n_vocab) to FILE.
//   fork-probe kvcheck --model M --text F --prompt N --gen G --budget B     (patched build)
//       eviction on; captures every layer's post-RoPE K (the ROPE node "Kcur-<il>") by
//       position, checks after every step that each (layer, KV head) placed the new position
//       in that step, and at the end that every cached K row of (layer, head, slot) is the
//       captured K of the position hashevict_slot_positions reports there. The layers checked
//       are those whose K store the graph indexes with the placement op (all of them, or a
//       sliding-window model's global layers). Prints JSON.
//   fork-probe bench   --model M --text F --budget B --rounds R --steps S  (patched build)
//       two contexts with a cache of B cells, eviction off and on, decoding S tokens per
//       round, rounds interleaved; one thread, so the thread's CPU time is the decode's cost.
//       Prints JSON with the per-round ratios on/off of tokens per CPU second.
#include "llama.h"
#include "ggml.h"

#ifdef LLAMA_KV_PLACER
#include "hashevict-kv.h"
#include "hashevict.h"
#endif

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct options {
    std::string cmd, model, text, out;
    int prompt = 200, gen = 100, ctx = 0, budget = 0, threads = 1, rounds = 10, steps = 64;
    int bits = 16;
    std::string probe = "query";
    std::string fa = "auto";  // flash attention: on (V cache in rows), off (V transposed), auto
};

[[noreturn]] void die(const std::string & msg) {
    std::fprintf(stderr, "fork-probe: %s\n", msg.c_str());
    std::exit(1);
}

options parse(int argc, char ** argv) {
    options o;
    if (argc < 2) {
        die("usage: fork-probe logits|kvcheck|bench --model M --text F [...] (see the source)");
    }
    o.cmd = argv[1];
    for (int i = 2; i < argc; i++) {
        const std::string a = argv[i];
        if (i + 1 >= argc) {
            die("missing value for " + a);
        }
        const std::string v = argv[++i];
        if      (a == "--model")   o.model = v;
        else if (a == "--text")    o.text = v;
        else if (a == "--out")     o.out = v;
        else if (a == "--prompt")  o.prompt = std::stoi(v);
        else if (a == "--gen")     o.gen = std::stoi(v);
        else if (a == "--ctx")     o.ctx = std::stoi(v);
        else if (a == "--budget")  o.budget = std::stoi(v);
        else if (a == "--threads") o.threads = std::stoi(v);
        else if (a == "--rounds")  o.rounds = std::stoi(v);
        else if (a == "--steps")   o.steps = std::stoi(v);
        else if (a == "--bits")    o.bits = std::stoi(v);
        else if (a == "--probe")   o.probe = v;
        else if (a == "--fa")      o.fa = v;
        else die("unknown option " + a);
    }
    if (o.model.empty() || o.text.empty()) {
        die("--model and --text are required");
    }
    return o;
}

void quiet_log(ggml_log_level level, const char * text, void *) {
    if (level >= GGML_LOG_LEVEL_ERROR) {
        std::fputs(text, stderr);
    }
}

std::vector<llama_token> tokenize(const llama_model * model, const std::string & path, size_t n_max) {
    std::ifstream f(path);
    if (!f) {
        die("cannot read " + path);
    }
    std::stringstream ss;
    ss << f.rdbuf();
    std::string text = ss.str().substr(0, n_max * 8); // ~4 chars per token; room to spare
    const llama_vocab * vocab = llama_model_get_vocab(model);
    int n = -llama_tokenize(vocab, text.data(), (int32_t) text.size(), nullptr, 0, true, false);
    std::vector<llama_token> toks(n);
    if (llama_tokenize(vocab, text.data(), (int32_t) text.size(), toks.data(), n, true, false) != n) {
        die("tokenize failed");
    }
    if (toks.size() < n_max) {
        die("text too short");
    }
    toks.resize(n_max);
    return toks;
}

double clock_seconds(clockid_t id) {
    timespec ts;
    clock_gettime(id, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

double thread_cpu_seconds() { return clock_seconds(CLOCK_THREAD_CPUTIME_ID); }
// every thread's: with several threads, the workers' (and the Go runtime's) time counts too
double process_cpu_seconds() { return clock_seconds(CLOCK_PROCESS_CPUTIME_ID); }
double wall_seconds() { return clock_seconds(CLOCK_MONOTONIC); }

// decodes tokens [0, n) at positions pos0.. of sequence 0 as one batch; logits of the last
void decode(llama_context * ctx, const llama_token * toks, int n, llama_pos pos0) {
    llama_batch b = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; i++) {
        b.token[i] = toks[i];
        b.pos[i] = pos0 + i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = 0;
        b.logits[i] = i == n - 1;
    }
    b.n_tokens = n;
    const int rc = llama_decode(ctx, b);
    llama_batch_free(b);
    if (rc != 0) {
        die("llama_decode returned " + std::to_string(rc));
    }
}

llama_token argmax(const float * x, int n) {
    return (llama_token) (std::max_element(x, x + n) - x);
}

llama_context_params ctx_params(const options & o, uint32_t n_ctx) {
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_batch = 2048;
    cp.n_ubatch = 512;
    cp.n_seq_max = 1;
    cp.n_threads = o.threads;
    cp.n_threads_batch = o.threads;
    cp.no_perf = true;
    cp.flash_attn_type = o.fa == "on" ? LLAMA_FLASH_ATTN_TYPE_ENABLED :
                         o.fa == "off" ? LLAMA_FLASH_ATTN_TYPE_DISABLED : LLAMA_FLASH_ATTN_TYPE_AUTO;
    return cp;
}

int cmd_logits(const options & o, llama_model * model) {
    const auto toks = tokenize(model, o.text, o.prompt + o.gen);
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    llama_context_params cp = ctx_params(o, o.ctx ? o.ctx : 512);
#ifdef LLAMA_KV_PLACER
    hashevict_kv * kv = nullptr;
    if (o.budget > 0) {
        hashevict_kv_config cfg;
        cfg.enabled = true;
        cfg.budget = o.budget;
        std::string err;
        kv = hashevict_kv_init(model, cfg, 1, cp.n_ctx, err);
        if (!kv) {
            die(err);
        }
        cp.kv_placer = hashevict_kv_placer(kv);
    }
#else
    if (o.budget > 0) {
        die("--budget needs the patched build");
    }
#endif
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        die("context");
    }
    std::vector<float> out;
    decode(ctx, toks.data(), o.prompt, 0);
    // the single-token steps: this thread's CPU time (the whole step with 1 thread), every
    // thread's, and wall time
    double decode_cpu = 0, decode_proc_cpu = 0, decode_wall = 0;
    for (int s = 0; s <= o.gen; s++) {
        const float * lg = llama_get_logits_ith(ctx, -1);
        out.insert(out.end(), lg, lg + n_vocab);
        if (s == o.gen) {
            break;
        }
        const llama_token t = argmax(lg, n_vocab);
        const double c0 = thread_cpu_seconds(), p0 = process_cpu_seconds(), w0 = wall_seconds();
        decode(ctx, &t, 1, o.prompt + s);
        decode_cpu += thread_cpu_seconds() - c0;
        decode_proc_cpu += process_cpu_seconds() - p0;
        decode_wall += wall_seconds() - w0;
    }
    llama_free(ctx);
#ifdef LLAMA_KV_PLACER
    if (kv && hashevict_kv_failures(kv) != 0) {
        die("placement failures: " + std::to_string(hashevict_kv_failures(kv)));
    }
    hashevict_kv_free(kv);
#endif
    std::FILE * f = std::fopen(o.out.c_str(), "wb");
    if (!f || std::fwrite(out.data(), sizeof(float), out.size(), f) != out.size() || std::fclose(f) != 0) {
        die("cannot write " + o.out);
    }
    std::printf("{\"rows\": %d, \"n_vocab\": %d, \"threads\": %d, \"decode_cpu_s\": %.6f, \"decode_proc_cpu_s\": %.6f, "
                "\"decode_wall_s\": %.6f}\n", o.gen + 1, n_vocab, o.threads, decode_cpu, decode_proc_cpu, decode_wall);
    return 0;
}

#ifdef LLAMA_KV_PLACER

// What the eval callback captures: post-RoPE K by (layer, position), and each layer's K cache.
struct capture {
    std::map<int, std::map<int, std::vector<float>>> k;  // il -> pos -> [n_head_kv][head_dim]
    std::map<int, std::map<int, std::vector<float>>> v;  // il -> pos -> [n_head_kv][head_dim_v]
    std::map<int, std::vector<int32_t>> pos;             // il -> positions of the ubatch in flight
    std::map<int, const ggml_tensor *> cache, cache_v;   // il -> the K, V cache tensors
    std::set<int> placed;                                // layers whose K rows come from kv_place-<il>
    int head_dim = 0, n_head_kv = 0;
    bool v_trans = false;
};

bool layer_of(const char * name, const char * prefix, int & il) {
    const size_t n = std::strlen(prefix);
    if (std::strncmp(name, prefix, n) != 0) {
        return false;
    }
    char * end = nullptr;
    il = (int) std::strtol(name + n, &end, 10);
    return end != name + n;
}

bool on_eval(ggml_tensor * t, bool ask, void * user) {
    auto & c = *(capture *) user;
    int il = 0;
    const bool is_k = t->op == GGML_OP_ROPE && layer_of(t->name, "Kcur-", il);
    const bool is_store = t->op == GGML_OP_SET_ROWS && t->view_src && layer_of(t->view_src->name, "cache_k_l", il);
    const bool is_store_v = t->op == GGML_OP_SET_ROWS && t->view_src && layer_of(t->view_src->name, "cache_v_l", il);
    if (ask) {
        return is_k || is_store || is_store_v;
    }
    if (is_store) {
        c.cache[il] = t->view_src;
        const ggml_tensor * rows = t->src[1];
        int il_place = -1;
        if (rows->view_src && layer_of(rows->view_src->name, "kv_place-", il_place) && il_place == il) {
            c.placed.insert(il);
        }
    }
    if (is_store_v) {
        // the V written this ubatch, token-major ([token][head][dim] in both layouts); its
        // positions are those of the layer's K, captured just before
        c.cache_v[il] = t->view_src;
        c.v_trans = t->ne[0] == 1;
        const ggml_tensor * src = t->src[0];
        if (src->type != GGML_TYPE_F32 || !ggml_is_contiguous(src)) {
            die("V is not contiguous f32");
        }
        const auto & pos = c.pos.at(il);
        const int64_t row = ggml_nelements(src) / (int64_t) pos.size();
        const float * x = (const float *) src->data;
        for (size_t i = 0; i < pos.size(); i++) {
            c.v[il][pos[i]].assign(x + i * row, x + (i + 1) * row);
        }
    }
    if (is_k) {
        if (t->type != GGML_TYPE_F32 || !ggml_is_contiguous(t)) {
            die("Kcur is not contiguous f32");
        }
        c.head_dim = (int) t->ne[0];
        c.n_head_kv = (int) t->ne[1];
        const int32_t * pos = (const int32_t *) t->src[1]->data;
        const float * x = (const float *) t->data;
        const int64_t row = t->ne[0] * t->ne[1];
        c.pos[il].assign(pos, pos + t->ne[2]);
        for (int64_t i = 0; i < t->ne[2]; i++) {
            c.k[il][pos[i]].assign(x + i * row, x + (i + 1) * row);
        }
    }
    return true;
}

bool old_full(const std::vector<int32_t> & v, int h, int B) {
    return std::none_of(v.begin() + h * B, v.begin() + (h + 1) * B, [](int32_t p) { return p < 0; });
}

int cmd_kvcheck(const options & o, llama_model * model) {
    const auto toks = tokenize(model, o.text, o.prompt + o.gen);
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    const int n_layer = llama_model_n_layer(model);
    const int n_ctx = o.ctx ? o.ctx : 4096;
    llama_context_params cp = ctx_params(o, n_ctx);
    hashevict_kv_config cfg;
    cfg.enabled = true;
    cfg.budget = o.budget;
    cfg.bits = o.bits;
    if (!hashevict_kv_parse_probe(o.probe, cfg.probe)) {
        die("--probe query|key");
    }
    std::string err;
    hashevict_kv * kv = hashevict_kv_init(model, cfg, 1, n_ctx, err);
    if (!kv) {
        die(err);
    }
    capture cap;
    cp.kv_placer = hashevict_kv_placer(kv);
    cp.cb_eval = on_eval;
    cp.cb_eval_user_data = &cap;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        die("context");
    }

    const int B = o.budget;
    std::vector<int32_t> slots(B);
    // previous step's slot positions per (layer, head), to count what each step evicted
    std::vector<std::vector<int32_t>> before(n_layer);

    long late = 0, evict_steps = 0, evict_wrong = 0, heads_disagree = 0, decode_steps = 0;
    decode(ctx, toks.data(), o.prompt, 0);
    llama_token next = argmax(llama_get_logits_ith(ctx, -1), n_vocab);
    hashevict_engine * eng = hashevict_kv_engine(kv);
    if (!eng) {
        die("no engine after the prompt");
    }
    const std::vector<int> layers(cap.placed.begin(), cap.placed.end());
    auto positions = [&](int il, int h) {
        if (hashevict_slot_positions(eng, 0, il, h, slots.data(), B) != HASHEVICT_OK) {
            die(std::string("hashevict_slot_positions: ") + hashevict_last_error());
        }
        return slots;
    };
    for (int il : layers) {
        for (int h = 0; h < cap.n_head_kv; h++) {
            auto p = positions(il, h);
            before[il].insert(before[il].end(), p.begin(), p.end());
        }
    }
    for (int s = 0; s < o.gen; s++) {
        const llama_pos t = o.prompt + s;
        decode(ctx, &next, 1, t);
        decode_steps++;
        next = argmax(llama_get_logits_ith(ctx, -1), n_vocab);
        for (int il : layers) {
            std::vector<int32_t> victim_slot(cap.n_head_kv, -1);
            for (int h = 0; h < cap.n_head_kv; h++) {
                auto p = positions(il, h);
                // the new position is in the cache right after the step that computed it
                const long n_t = std::count(p.begin(), p.end(), t);
                late += n_t != 1;
                // exactly one slot changes per step, to take t (a free one, or the victim)
                int changed = 0;
                for (int j = 0; j < B; j++) {
                    const int32_t old = before[il][h * B + j];
                    if (p[j] != old) {
                        changed++;
                        victim_slot[h] = j;
                        evict_wrong += p[j] != t;
                    }
                }
                evict_wrong += changed != 1;
                evict_steps += old_full(before[il], h, B);
                std::copy(p.begin(), p.end(), before[il].begin() + h * B);
            }
            for (int h = 1; h < cap.n_head_kv; h++) {
                heads_disagree += victim_slot[h] != victim_slot[0];
            }
        }
    }

    // every cached K and V row against the captured post-RoPE K (and the V) of the position
    // the engine reports in that slot
    long rows = 0, mismatched = 0, missing = 0, v_mismatched = 0;
    std::vector<ggml_fp16_t> want(cap.head_dim), got_v;
    for (int il : layers) {
        const ggml_tensor * kc = cap.cache.at(il);
        const ggml_tensor * vc = cap.cache_v.at(il);
        if (kc->type != GGML_TYPE_F16 || vc->type != GGML_TYPE_F16) {
            die("the check reads an f16 K/V cache");
        }
        const auto * data = (const ggml_fp16_t *) kc->data;
        const auto * vdata = (const ggml_fp16_t *) vc->data;
        const int64_t n_embd_v = vc->ne[0], hd_v = n_embd_v / cap.n_head_kv;
        std::vector<ggml_fp16_t> want_v(hd_v);
        got_v.resize(hd_v);
        for (int h = 0; h < cap.n_head_kv; h++) {
            auto p = positions(il, h);
            for (int j = 0; j < B; j++) {
                if (p[j] < 0) {
                    continue;
                }
                rows++;
                auto it = cap.k[il].find(p[j]);
                auto iv = cap.v[il].find(p[j]);
                if (it == cap.k[il].end() || iv == cap.v[il].end()) {
                    missing++;
                    continue;
                }
                ggml_fp32_to_fp16_row(it->second.data() + h * cap.head_dim, want.data(), cap.head_dim);
                const ggml_fp16_t * got = data + (int64_t) j * kc->ne[0] + (int64_t) h * cap.head_dim;
                mismatched += std::memcmp(got, want.data(), cap.head_dim * sizeof(ggml_fp16_t)) != 0;

                ggml_fp32_to_fp16_row(iv->second.data() + h * hd_v, want_v.data(), hd_v);
                for (int64_t d = 0; d < hd_v; d++) {
                    const int64_t e = h * hd_v + d; // element e of slot j: row-major, or e*kv_size + j
                    got_v[d] = cap.v_trans ? vdata[e * vc->ne[1] + j] : vdata[(int64_t) j * n_embd_v + e];
                }
                v_mismatched += std::memcmp(got_v.data(), want_v.data(), hd_v * sizeof(ggml_fp16_t)) != 0;
            }
        }
    }
    llama_free(ctx);
    const long failures = (long) hashevict_kv_failures(kv);
    hashevict_kv_free(kv);
    std::string placed_ids;
    for (int il : layers) {
        placed_ids += (placed_ids.empty() ? "" : ", ") + std::to_string(il);
    }
    std::printf("{\"layers\": %d, \"layers_placed\": [%s], \"kv_heads\": %d, \"budget\": %d, \"prompt\": %d, \"decode_steps\": %ld, "
                "\"rows_checked\": %ld, \"rows_mismatched\": %ld, \"v_rows_mismatched\": %ld, \"v_transposed\": %s, \"rows_missing\": %ld, "
                "\"new_position_not_placed_in_step\": %ld, \"evicting_head_steps\": %ld, \"bad_evictions\": %ld, "
                "\"victim_differs_from_head0\": %ld, \"placement_failures\": %ld}\n",
                n_layer, placed_ids.c_str(), cap.n_head_kv, B, o.prompt, decode_steps, rows, mismatched, v_mismatched,
                cap.v_trans ? "true" : "false", missing, late,
                evict_steps, evict_wrong, heads_disagree, failures);
    return 0;
}

// two contexts with B cells each; eviction off fills positions up to B, eviction on keeps
// evicting; each round decodes S tokens in both, in alternating order
int cmd_bench(const options & o, llama_model * model) {
    const int B = o.budget, S = o.steps;
    const int n_text = B + o.rounds * S + 1;
    const auto toks = tokenize(model, o.text, n_text);
    if (B % 256 != 0 || S > B / 2) {
        die("--budget must be a multiple of 256 and --steps at most budget/2 (same n_kv in both)");
    }
    hashevict_kv_config cfg;
    cfg.enabled = true;
    cfg.budget = B;
    cfg.bits = o.bits;
    if (!hashevict_kv_parse_probe(o.probe, cfg.probe)) {
        die("--probe query|key");
    }
    std::string err;
    const uint32_t n_ctx_on = (uint32_t) GGML_PAD(n_text, 256);
    hashevict_kv * kv = hashevict_kv_init(model, cfg, 1, n_ctx_on, err);
    if (!kv) {
        die(err);
    }
    llama_context_params cp_off = ctx_params(o, B);
    llama_context_params cp_on = ctx_params(o, n_ctx_on);
    cp_on.kv_placer = hashevict_kv_placer(kv);
    llama_context * off = llama_init_from_model(model, cp_off);
    llama_context * on = llama_init_from_model(model, cp_on);
    if (!off || !on) {
        die("context");
    }
    // eviction on: the cache is full from here on
    decode(on, toks.data(), B, 0);
    llama_pos pos_on = B;
    // eviction off: S steps end at position B - 1, n_kv = B throughout
    const int pre_off = B - S;

    std::vector<double> ratio, tps_off, tps_on, wall_ratio;
    for (int r = 0; r < o.rounds; r++) {
        double cpu[2] = {0, 0}, wall[2] = {0, 0};
        for (int k = 0; k < 2; k++) {
            const bool run_on = (k == 0) == (r % 2 == 0);
            llama_context * ctx = run_on ? on : off;
            if (!run_on) {
                llama_memory_clear(llama_get_memory(off), true);
                decode(off, toks.data(), pre_off, 0);
            }
            const llama_pos p0 = run_on ? pos_on : pre_off;
            const llama_token * src = run_on ? toks.data() + pos_on : toks.data() + pre_off;
            double c0 = thread_cpu_seconds(), w0 = wall_seconds();
            for (int s = 0; s < S; s++) {
                decode(ctx, src + s, 1, p0 + s);
            }
            cpu[run_on] = thread_cpu_seconds() - c0;
            wall[run_on] = wall_seconds() - w0;
            if (run_on) {
                pos_on += S;
            }
        }
        tps_off.push_back(S / cpu[0]);
        tps_on.push_back(S / cpu[1]);
        ratio.push_back(cpu[0] / cpu[1]);
        wall_ratio.push_back(wall[0] / wall[1]);
    }
    llama_free(on);
    llama_free(off);
    const long failures = (long) hashevict_kv_failures(kv);
    hashevict_kv_free(kv);

    auto fmt = [](const std::vector<double> & v) {
        std::string s = "[";
        for (size_t i = 0; i < v.size(); i++) {
            s += (i ? ", " : "") + std::to_string(v[i]);
        }
        return s + "]";
    };
    std::printf("{\"budget\": %d, \"steps_per_round\": %d, \"rounds\": %d, \"threads\": %d, \"placement_failures\": %ld, "
                "\"tps_off\": %s, \"tps_on\": %s, \"ratio_on_off\": %s, \"wall_ratio_on_off\": %s}\n",
                B, S, o.rounds, o.threads, failures, fmt(tps_off).c_str(), fmt(tps_on).c_str(), fmt(ratio).c_str(),
                fmt(wall_ratio).c_str());
    return 0;
}

#endif // LLAMA_KV_PLACER

} // namespace

int main(int argc, char ** argv) {
    const options o = parse(argc, argv);
    llama_log_set(quiet_log, nullptr);
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    mp.progress_callback = [](float, void *) { return true; }; // no dots on stdout
    llama_model * model = llama_model_load_from_file(o.model.c_str(), mp);
    if (!model) {
        die("cannot load " + o.model);
    }
    int rc = 2;
    if (o.cmd == "logits") {
        rc = cmd_logits(o, model);
#ifdef LLAMA_KV_PLACER
    } else if (o.cmd == "kvcheck") {
        rc = cmd_kvcheck(o, model);
    } else if (o.cmd == "bench") {
        rc = cmd_bench(o, model);
#endif
    } else {
        die("unknown or unavailable command " + o.cmd);
    }
    llama_model_free(model);
    return rc;
}
