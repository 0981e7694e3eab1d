// probe.cpp — groundwork probe for the hashevict <-> llama.cpp integration.
//
// Loads a gguf with the llama.cpp C API (prebuilt CPU libs from
// @node-llama-cpp/linux-x64), tokenizes a long text, decodes it in batches with
// a cb_eval callback and prints
//   * every "Qcur-<il>" / "Kcur-<il>" graph node of the first ubatch (op, type,
//     ne[], nb[], host-readability) and which one is post-RoPE (op == ROPE),
//   * the layer-0 node sequence (names + ops) around attention,
//   * prefill / single-token decode speed,
//   * llama_memory_seq_rm behaviour (middle range, tail) and that decoding
//     continues afterwards (cells really freed: a full cache accepts new tokens).
//
// build:  make -f tools/explore/llamacpp-probe/probe.mk            (after scripts/fetch-deps.sh)
//   i.e.  g++ -O2 -std=c++17 $LLAMA_CFLAGS tools/explore/llamacpp-probe/probe.cpp  (cont.)
//             -o .cache/bin/probe $LLAMA_LDFLAGS -DPROBE_LIB_DIR="\"$LLAMA_LIB_DIR\""
// run:    .cache/bin/probe <model.gguf> <text.txt> [n_ctx=1024] [n_batch=256] [threads=2] [fa=auto|on|off] [swa_full=0|1]
//         env: PROBE_NO_CB=1 (no cb_eval, speed baseline), PROBE_NO_MMAP=1 (no mmap of the gguf),
//              PROBE_VERBOSE=1 (full llama.cpp log)
//
// The CPU backend is a dynamically loaded module (libggml-cpu-<arch>.so) in the
// lib dir: ggml_backend_load_all_from_path(<lib dir>) must be called before
// loading a model (LLAMA_LIB_DIR env var overrides the compiled-in path).

#include "ggml-backend.h"
#include "ggml.h"
#include "llama.h"

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

#ifndef PROBE_LIB_DIR
#define PROBE_LIB_DIR ""
#endif

namespace {

struct probe_state {
    bool observe = false;        // print Q/K nodes of the current graph
    bool capture = false;        // copy every post-RoPE Q/K tensor to host scratch (no printing)
    size_t captured_bytes = 0;
    std::vector<char> scratch;
    bool census = false;         // record the layer-0 node sequence of the current graph
    int  census_phase = 0;       // 0 = before layer 0, 1 = inside layer 0, 2 = done
    int  n_layer = 0;
    int  n_rope_q = 0, n_rope_k = 0;   // post-RoPE Q/K nodes seen while observing
    bool all_host = true;
    bool data_matches = true;
    std::vector<std::string> census_lines;
};

bool starts_with(const char * s, const char * p) { return std::strncmp(s, p, std::strlen(p)) == 0; }

// exactly "Qcur-<il>" / "Kcur-<il>" (ggml also creates "Qcur-0 (view)", "Qcur-0 (view) (permuted)" nodes)
bool is_qk_name(const char * name) {
    if (!(starts_with(name, "Qcur-") || starts_with(name, "Kcur-"))) return false;
    const char * p = name + 5;
    if (!*p) return false;
    for (; *p; p++) if (*p < '0' || *p > '9') return false;
    return true;
}

std::string shape_str(const ggml_tensor * t) {
    char buf[256];
    std::snprintf(buf, sizeof buf, "ne=[%lld,%lld,%lld,%lld] nb=[%zu,%zu,%zu,%zu]",
                  (long long) t->ne[0], (long long) t->ne[1], (long long) t->ne[2], (long long) t->ne[3],
                  t->nb[0], t->nb[1], t->nb[2], t->nb[3]);
    return buf;
}

// layer index from a "<name>-<il>" node name, -1 if none
int layer_of(const char * name) {
    const char * dash = std::strrchr(name, '-');
    if (!dash || !dash[1]) return -1;
    char * end = nullptr;
    long v = std::strtol(dash + 1, &end, 10);
    return (end && *end == '\0') ? (int) v : -1;
}

bool eval_cb(ggml_tensor * t, bool ask, void * user_data) {
    auto * st = static_cast<probe_state *>(user_data);
    if (ask) {
        if (st->census && st->census_phase == 0 && layer_of(t->name) == 0) st->census_phase = 1;
        if (st->census && st->census_phase == 1) {
            char line[512];
            std::snprintf(line, sizeof line, "    %-28s op=%-10s type=%-4s %s", t->name, ggml_op_desc(t),
                          ggml_type_name(t->type), shape_str(t).c_str());
            st->census_lines.push_back(line);
            if (starts_with(t->name, "l_out-0")) st->census_phase = 2;
        }
        // only ask for the nodes we want: every "true" splits the graph compute there
        if (st->capture) return t->op == GGML_OP_ROPE && is_qk_name(t->name);
        return st->observe && is_qk_name(t->name);
    }

    if (st->capture) {  // what an eviction policy would do: take the post-RoPE K (and Q) of this ubatch
        const size_t nb = ggml_nbytes(t);
        if (st->scratch.size() < nb) st->scratch.resize(nb);
        ggml_backend_tensor_get(t, st->scratch.data(), 0, nb);
        st->captured_bytes += nb;
        return true;
    }

    // ask == false: the node (and everything before it) has been computed
    const bool is_rope = t->op == GGML_OP_ROPE;
    const bool verbose_layer = layer_of(t->name) == 0;
    const bool host = t->buffer && ggml_backend_buffer_is_host(t->buffer);
    st->all_host = st->all_host && host;

    // read the data both ways: t->data (host) and ggml_backend_tensor_get (any backend)
    std::string extra;
    if (t->type == GGML_TYPE_F32 && ggml_is_contiguous(t)) {
        const int64_t n0 = t->ne[0];
        std::vector<float> first(n0);
        ggml_backend_tensor_get(t, first.data(), 0, n0 * sizeof(float));
        if (host && std::memcmp(first.data(), t->data, n0 * sizeof(float)) != 0) st->data_matches = false;
        double ss = 0;
        for (float v : first) ss += (double) v * v;
        char buf[128];
        std::snprintf(buf, sizeof buf, " |tok0,head0|=%.3f", std::sqrt(ss));
        extra += buf;
    }
    if (is_rope) {
        // src[1] holds the token positions (I32, one per token) for this ubatch
        const ggml_tensor * pos = t->src[1];
        float freq_base;
        std::memcpy(&freq_base, (const int32_t *) t->op_params + 5, sizeof(float));
        const int n_dims = ((const int32_t *) t->op_params)[1];
        const int mode   = ((const int32_t *) t->op_params)[2];
        char buf[256];
        if (pos && pos->type == GGML_TYPE_I32 && pos->buffer && ggml_backend_buffer_is_host(pos->buffer)) {
            const int32_t * p = (const int32_t *) pos->data;
            std::snprintf(buf, sizeof buf, " rope(n_dims=%d mode=%d freq_base=%.0f) pos[0]=%d pos[last]=%d", n_dims,
                          mode, freq_base, p[0], p[pos->ne[0] - 1]);
        } else {
            std::snprintf(buf, sizeof buf, " rope(n_dims=%d mode=%d freq_base=%.0f)", n_dims, mode, freq_base);
        }
        extra += buf;
        if (t->name[0] == 'Q') st->n_rope_q++; else st->n_rope_k++;
    }
    if (!is_rope && !verbose_layer) return true;  // pre-RoPE stages: shown for layer 0 only
    std::printf("  %-8s op=%-8s %s type=%s %s contig=%d host=%d src0=%s(%s)%s\n", t->name, ggml_op_desc(t),
                is_rope ? "POST-ROPE" : "pre-rope ", ggml_type_name(t->type), shape_str(t).c_str(),
                (int) ggml_is_contiguous(t), (int) host, t->src[0] ? t->src[0]->name : "-",
                t->src[0] ? ggml_op_desc(t->src[0]) : "-", extra.c_str());
    return true;  // false would abort the graph compute
}

bool g_verbose = false;

void log_cb(ggml_log_level level, const char * text, void *) {
    if (g_verbose || level >= GGML_LOG_LEVEL_WARN) {
        std::fputs(text, stderr);
        return;
    }
    // keep the lines that matter for the integration
    if (std::strstr(text, "dev = CPU") || std::strstr(text, "is_swa =") || std::strstr(text, "create_tensor") ||
        std::strstr(text, ": filtered")) return;  // per-layer noise
    static const char * keys[] = {"flash_attn", "n_ctx", "n_swa", "swa_", "kv_unified", "llama_kv_cache", "causal_attn",
                                  "n_ubatch", "n_batch", "KV buffer", "attn_rot", "n_head", "n_embd_head", "n_rot",
                                  "rope", "file type", "model params", "n_layer"};
    for (const char * k : keys) {
        if (std::strstr(text, k)) {
            std::fputs(text, stderr);
            return;
        }
    }
}

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// decode tokens[from, to) at positions start_pos.. in chunks of n_batch; logits only for the last token
int decode_range(llama_context * ctx, const std::vector<llama_token> & toks, size_t from, size_t to,
                 llama_pos start_pos, int n_batch) {
    llama_batch batch = llama_batch_init(n_batch, 0, 1);
    int ret = 0;
    for (size_t i = from; i < to && ret == 0; i += n_batch) {
        const int n = (int) std::min<size_t>(n_batch, to - i);
        batch.n_tokens = n;
        for (int j = 0; j < n; j++) {
            batch.token[j] = toks[i + j];
            batch.pos[j] = start_pos + (llama_pos) (i - from) + j;
            batch.n_seq_id[j] = 1;
            batch.seq_id[j][0] = 0;
            batch.logits[j] = (i + j == to - 1);
        }
        ret = llama_decode(ctx, batch);
    }
    llama_batch_free(batch);
    return ret;
}

std::string piece(const llama_vocab * vocab, llama_token tok) {
    char buf[128];
    int n = llama_token_to_piece(vocab, tok, buf, sizeof buf, 0, true);
    std::string s = n > 0 ? std::string(buf, n) : std::string();
    for (char & c : s) if (c == '\n') c = ' ';
    return s;
}

llama_token argmax_last(llama_context * ctx, const llama_vocab * vocab) {
    const float * logits = llama_get_logits_ith(ctx, -1);
    const int nv = llama_vocab_n_tokens(vocab);
    return (llama_token) (std::max_element(logits, logits + nv) - logits);
}

void print_mem(llama_context * ctx, const char * what) {
    llama_memory_t mem = llama_get_memory(ctx);
    std::printf("  [%s] seq 0: pos_min=%d pos_max=%d\n", what, llama_memory_seq_pos_min(mem, 0),
                llama_memory_seq_pos_max(mem, 0));
}

std::string meta(const llama_model * model, const std::string & key) {
    char buf[256];
    int n = llama_model_meta_val_str(model, key.c_str(), buf, sizeof buf);
    return n >= 0 ? std::string(buf) : std::string("(absent)");
}

}  // namespace

int main(int argc, char ** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s <model.gguf> <text.txt> [n_ctx=1024] [n_batch=256] [threads=2] [fa=auto|on|off] [swa_full=0|1]\n",
                     argv[0]);
        return 2;
    }
    const char * model_path = argv[1];
    const char * text_path = argv[2];
    const int n_ctx_req = argc > 3 ? std::atoi(argv[3]) : 1024;
    const int n_batch = argc > 4 ? std::atoi(argv[4]) : 256;
    const int n_threads = argc > 5 ? std::atoi(argv[5]) : 2;
    const std::string fa = argc > 6 ? argv[6] : "auto";
    const int swa_full = argc > 7 ? std::atoi(argv[7]) : -1;  // -1 = library default
    // PROBE_NO_CB=1: no cb_eval at all (speed baseline; the Q/K observation section is then empty)
    const bool no_cb = std::getenv("PROBE_NO_CB") != nullptr;
    g_verbose = std::getenv("PROBE_VERBOSE") != nullptr;

    llama_log_set(log_cb, nullptr);

    const char * lib_dir = std::getenv("LLAMA_LIB_DIR");
    if (!lib_dir || !*lib_dir) lib_dir = PROBE_LIB_DIR;
    ggml_backend_load_all_from_path(lib_dir);
    llama_backend_init();
    std::printf("== backends (from %s):", lib_dir);
    for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
        std::printf(" %s", ggml_backend_dev_name(ggml_backend_dev_get(i)));
    }
    std::printf("\n== ggml %s (commit %s)\n== system: %s\n", ggml_version(), ggml_commit(), llama_print_system_info());

    llama_model_params mparams = llama_model_default_params();
    mparams.n_gpu_layers = 0;
    if (std::getenv("PROBE_NO_MMAP")) mparams.load_mode = LLAMA_LOAD_MODE_NONE;  // read weights into memory
    llama_model * model = llama_model_load_from_file(model_path, mparams);
    if (!model) {
        std::fprintf(stderr, "failed to load %s\n", model_path);
        return 1;
    }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    char desc[256];
    llama_model_desc(model, desc, sizeof desc);
    const std::string arch = meta(model, "general.architecture");
    const int n_layer = llama_model_n_layer(model);
    const int n_head = llama_model_n_head(model);
    const int n_head_kv = llama_model_n_head_kv(model);
    const int n_embd = llama_model_n_embd(model);
    std::printf("== model %s\n   desc=%s arch=%s n_layer=%d n_head=%d n_head_kv=%d n_embd=%d n_swa=%d n_ctx_train=%d "
                "n_vocab=%d rope_type=%d\n   key_length=%s value_length=%s sliding_window=%s rope.freq_base=%s\n",
                model_path, desc, arch.c_str(), n_layer, n_head, n_head_kv, n_embd, llama_model_n_swa(model),
                llama_model_n_ctx_train(model), llama_vocab_n_tokens(vocab), (int) llama_model_rope_type(model),
                meta(model, arch + ".attention.key_length").c_str(),
                meta(model, arch + ".attention.value_length").c_str(),
                meta(model, arch + ".attention.sliding_window").c_str(), meta(model, arch + ".rope.freq_base").c_str());

    // ---- tokenize the whole text
    std::ifstream in(text_path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    int n_tok = -llama_tokenize(vocab, text.data(), (int32_t) text.size(), nullptr, 0, true, false);
    std::vector<llama_token> toks(n_tok);
    if (llama_tokenize(vocab, text.data(), (int32_t) text.size(), toks.data(), n_tok, true, false) != n_tok) {
        std::fprintf(stderr, "tokenize failed\n");
        return 1;
    }
    std::printf("== text %s: %zu bytes -> %d tokens (incl. BOS=%d), %.2f chars/token\n", text_path, text.size(), n_tok,
                (int) llama_vocab_get_add_bos(vocab), (double) text.size() / n_tok);

    // ---- context with the eval callback
    probe_state st;
    st.n_layer = n_layer;
    llama_context_params cparams = llama_context_default_params();
    cparams.n_ctx = n_ctx_req;
    cparams.n_batch = n_batch;
    cparams.n_ubatch = n_batch;
    cparams.n_seq_max = 1;
    cparams.n_threads = n_threads;
    cparams.n_threads_batch = n_threads;
    cparams.flash_attn_type = fa == "on" ? LLAMA_FLASH_ATTN_TYPE_ENABLED
                              : fa == "off" ? LLAMA_FLASH_ATTN_TYPE_DISABLED
                                            : LLAMA_FLASH_ATTN_TYPE_AUTO;
    if (swa_full >= 0) cparams.swa_full = swa_full != 0;
    cparams.cb_eval = no_cb ? nullptr : eval_cb;
    cparams.cb_eval_user_data = no_cb ? nullptr : &st;
    cparams.no_perf = false;
    std::printf("== context params: n_ctx=%u n_batch=%u n_ubatch=%u type_k=%s type_v=%s flash_attn=%s swa_full=%d "
                "kv_unified=%d cb_eval=%s\n",
                cparams.n_ctx, cparams.n_batch, cparams.n_ubatch, ggml_type_name(cparams.type_k),
                ggml_type_name(cparams.type_v), llama_flash_attn_type_name(cparams.flash_attn_type),
                (int) cparams.swa_full, (int) cparams.kv_unified, no_cb ? "none" : "set");
    std::fflush(stdout);
    llama_context * ctx = llama_init_from_model(model, cparams);
    if (!ctx) {
        std::fprintf(stderr, "failed to create context\n");
        return 1;
    }
    const int n_ctx = (int) llama_n_ctx(ctx);
    std::printf("== llama_n_ctx=%d can_shift=%d\n", n_ctx, (int) llama_memory_can_shift(llama_get_memory(ctx)));
    if ((int) toks.size() < n_ctx + 512) {
        std::fprintf(stderr, "text too short for the probe (%zu tokens < n_ctx+512)\n", toks.size());
        return 1;
    }

    // ---- 1) first ubatch with observation: Q/K nodes and layer-0 census
    std::printf("\n== Q/K graph nodes of the first ubatch (tokens 0..%d)\n", n_batch - 1);
    st.observe = true;
    st.census = true;
    if (decode_range(ctx, toks, 0, n_batch, 0, n_batch) != 0) {
        std::fprintf(stderr, "decode failed\n");
        return 1;
    }
    st.observe = false;
    st.census = false;
    std::printf("\n== layer-0 graph nodes in execution order (first ubatch)\n");
    for (const auto & l : st.census_lines) std::printf("%s\n", l.c_str());
    std::printf("\n== post-RoPE nodes: Q=%d K=%d (n_layer=%d), all observed tensors in host memory=%d, "
                "t->data == ggml_backend_tensor_get: %d\n",
                st.n_rope_q, st.n_rope_k, n_layer, (int) st.all_host, (int) st.data_matches);
    print_mem(ctx, "after first ubatch");

    // ---- 2) timed prefill up to a full cache (callback installed, not observing)
    double t0 = now_s();
    if (decode_range(ctx, toks, n_batch, n_ctx, n_batch, n_batch) != 0) {
        std::fprintf(stderr, "prefill failed\n");
        return 1;
    }
    double t1 = now_s();
    std::printf("\n== prefill tokens %d..%d: %.1f tok/s (n_batch=%d, threads=%d)\n", n_batch, n_ctx - 1,
                (n_ctx - n_batch) / (t1 - t0), n_batch, n_threads);
    print_mem(ctx, "cache full");

    // ---- 3) the cache is full: one more token must fail (no free cell)
    int ret = decode_range(ctx, toks, n_ctx, n_ctx + 1, n_ctx, 1);
    std::printf("  decode 1 token at pos %d into a full cache -> ret=%d (1 = no KV slot, expected)\n", n_ctx, ret);

    // ---- 4) remove a middle range and keep decoding: the freed cells must be reused
    llama_memory_t mem = llama_get_memory(ctx);
    const llama_pos r0 = 100, r1 = 100 + 256;
    bool ok = llama_memory_seq_rm(mem, 0, r0, r1);
    std::printf("\n== llama_memory_seq_rm(mem, 0, %d, %d) [middle] -> %s\n", r0, r1, ok ? "true" : "false");
    print_mem(ctx, "after middle seq_rm");
    t0 = now_s();
    ret = decode_range(ctx, toks, n_ctx, n_ctx + (r1 - r0), n_ctx, n_batch);
    t1 = now_s();
    std::printf("  decode %d tokens at pos %d..%d into the freed cells -> ret=%d\n", r1 - r0, n_ctx,
                n_ctx + (r1 - r0) - 1, ret);
    if (ret == 0) {
        llama_token next = argmax_last(ctx, vocab);
        std::printf("  greedy next token after continued decode: %d '%s' (text has %d '%s')\n", next,
                    piece(vocab, next).c_str(), toks[n_ctx + (r1 - r0)], piece(vocab, toks[n_ctx + (r1 - r0)]).c_str());
    }
    print_mem(ctx, "after refill");
    const llama_pos p_next = n_ctx + (r1 - r0);
    ret = decode_range(ctx, toks, p_next, p_next + 1, p_next, 1);
    std::printf("  decode 1 more token (cache full again) -> ret=%d (1 expected)\n", ret);

    // ---- 5) tail removal (rollback) and re-decode of the same positions
    const llama_pos tail = p_next - 64;
    ok = llama_memory_seq_rm(mem, 0, tail, -1);
    std::printf("\n== llama_memory_seq_rm(mem, 0, %d, -1) [tail] -> %s\n", tail, ok ? "true" : "false");
    print_mem(ctx, "after tail seq_rm");
    // single-token decode speed (generation-like)
    t0 = now_s();
    ret = decode_range(ctx, toks, tail, tail + 64, tail, 1);
    t1 = now_s();
    std::printf("  re-decoded 64 tokens one by one at pos %d..%d -> ret=%d, %.1f tok/s (single-token decode, ~%d "
                "cells in cache)\n",
                tail, tail + 63, ret, 64 / (t1 - t0), n_ctx);
    print_mem(ctx, "after re-decode");

    // ---- 6) removing a range whose positions are no longer in the SWA window / already removed
    ok = llama_memory_seq_rm(mem, 0, r0, r1);
    std::printf("\n== seq_rm of an already-removed range [%d,%d) -> %s\n", r0, r1, ok ? "true" : "false");
    ok = llama_memory_seq_rm(mem, 0, 0, 1);
    std::printf("== seq_rm of position 0 (BOS) -> %s\n", ok ? "true" : "false");
    print_mem(ctx, "after BOS seq_rm");
    ret = decode_range(ctx, toks, p_next, p_next + 1, p_next, 1);
    std::printf("  decode 1 token at pos %d -> ret=%d\n", p_next, ret);

    // ---- 7) cost of capturing post-RoPE Q/K in cb_eval: same 512 tokens, without and with capture
    if (!no_cb) {
        double rate[2];
        for (int cap = 0; cap < 2; cap++) {
            llama_memory_clear(mem, true);
            st.capture = cap == 1;
            st.captured_bytes = 0;
            t0 = now_s();
            ret = decode_range(ctx, toks, 0, 512, 0, n_batch);
            t1 = now_s();
            rate[cap] = 512 / (t1 - t0);
            if (cap) std::printf("\n== capture cost: prefill 512 tokens %.1f tok/s without, %.1f tok/s with post-RoPE Q+K "
                                 "capture (%.1f MiB copied, ret=%d)\n",
                                 rate[0], rate[1], st.captured_bytes / 1048576.0, ret);
        }
        // single-token decode at the same positions, without and with capture
        for (int cap = 0; cap < 2; cap++) {
            llama_memory_seq_rm(mem, 0, 512, -1);
            st.capture = cap == 1;
            t0 = now_s();
            ret = decode_range(ctx, toks, 512, 576, 512, 1);
            t1 = now_s();
            rate[cap] = 64 / (t1 - t0);
        }
        st.capture = false;
        std::printf("   single-token decode at pos 512..575: %.1f tok/s without, %.1f tok/s with capture (ret=%d)\n",
                    rate[0], rate[1], ret);
    }

    std::printf("\n");
    llama_perf_context_print(ctx);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
