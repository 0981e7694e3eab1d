// HashEvict for a stock llama.cpp context: see hashevict_llama.h.
#include "hashevict_llama.h"

#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ggml-backend.h"
#include "ggml.h"

namespace {

uint64_t now_ns() {
    return (uint64_t) std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

// A node copied out of the graph: rows [token][head][dim] in f32, contiguous.
struct rows {
    std::vector<float> data;
    int64_t dim = 0, heads = 0, tokens = 0;
};

}  // namespace

struct hev_llama {
    hashevict_engine *engine = nullptr;
    hashevict_params params{};
    int32_t n_layer = 0;
    std::string error;

    // The batch being decoded.
    bool active = false;
    llama_seq_id seq = -1;
    std::vector<llama_pos> positions;
    // Per layer, the Q and K rows of each ubatch of the current batch,
    // copied out of the graph; fed to the engine after llama_decode.
    std::vector<std::vector<rows>> pending_q, pending_k;
    // Every node asked for is a graph split (a compute and a barrier of
    // ggml's workers), so only K is asked for: layer il's Q node, met
    // earlier in the same pass, is remembered here and read when K is handed
    // over (its data lives until the layer's attention, which reads it).
    // q_late[il]: Q came after K in this model's graph, so Q is asked for too.
    std::vector<const ggml_tensor *> q_node;
    std::vector<bool> q_late;
    std::vector<bool> seq_added;

    hev_llama_stats stats{};
    std::vector<int32_t> evict_buf;

    // Compress after prefill: per layer, the queries [token][head][dim] of
    // the newest observed positions of win_seq (win_pos), kept by
    // hev_llama_observe for hev_llama_compress.
    llama_seq_id win_seq = -1;
    std::vector<std::vector<float>> win_q;
    std::vector<int32_t> win_pos;

    // The cb_eval the caller had installed before hev_llama_attach, chained.
    ggml_backend_sched_eval_callback prev_cb = nullptr;
    void *prev_cb_data = nullptr;
    // The scheduler hands a node over (ask == false) right after asking about
    // that same node; remembering the caller's answer lets us hand it only
    // the nodes it asked for, without asking it twice.
    const ggml_tensor *prev_wants = nullptr;
};

namespace {

void set_error(hev_llama *hl, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (hl->error.empty()) hl->error = buf;  // keep the first error of a batch
}

// Parses "Qcur-<il>" / "Kcur-<il>" exactly; returns the layer or -1.
int qk_layer(const char *name, char *which) {
    if ((name[0] != 'Q' && name[0] != 'K') || std::strncmp(name + 1, "cur-", 4) != 0) return -1;
    const char *p = name + 5;
    if (*p == '\0') return -1;
    int il = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9') return -1;
        il = il * 10 + (*p - '0');
    }
    *which = name[0];
    return il;
}

// Copies a [dim, heads, tokens] node (any strides, f32/f16/bf16 as stored)
// into contiguous f32 rows. Reads through the backend when not host memory.
bool copy_rows(const ggml_tensor *t, rows *out) {
    out->dim = t->ne[0];
    out->heads = t->ne[1];
    out->tokens = t->ne[2];
    if (t->ne[3] != 1) return false;
    out->data.resize((size_t) (out->dim * out->heads * out->tokens));
    std::vector<uint8_t> staging;
    const uint8_t *base;
    if (t->buffer == nullptr || ggml_backend_buffer_is_host(t->buffer)) {
        base = (const uint8_t *) t->data;
    } else {
        staging.resize(ggml_nbytes(t));
        ggml_backend_tensor_get(t, staging.data(), 0, staging.size());
        base = staging.data();
    }
    float *dst = out->data.data();
    for (int64_t tok = 0; tok < out->tokens; tok++) {
        for (int64_t h = 0; h < out->heads; h++) {
            const uint8_t *row = base + tok * t->nb[2] + h * t->nb[1];
            float *d = dst + (tok * out->heads + h) * out->dim;
            switch (t->type) {
            case GGML_TYPE_F32:
                std::memcpy(d, row, (size_t) out->dim * sizeof(float));
                break;
            case GGML_TYPE_F16:
                for (int64_t i = 0; i < out->dim; i++) d[i] = ggml_fp16_to_fp32(((const ggml_fp16_t *) row)[i]);
                break;
            case GGML_TYPE_BF16:
                for (int64_t i = 0; i < out->dim; i++) d[i] = ggml_bf16_to_fp32(((const ggml_bf16_t *) row)[i]);
                break;
            default:
                return false;
            }
        }
    }
    return true;
}

hashevict_tensor describe(const rows &r) {
    hashevict_tensor t{};
    t.data = r.data.data();
    t.dtype = HASHEVICT_DTYPE_F32;
    t.device = HASHEVICT_DEVICE_HOST;
    t.head_dim = r.dim;
    t.n_heads = r.heads;
    t.n_tokens = r.tokens;
    t.head_stride = r.dim * (int64_t) sizeof(float);
    t.token_stride = r.heads * r.dim * (int64_t) sizeof(float);
    return t;
}

// Feeds layer il's captured rows to the engine, ubatch by ubatch. This runs
// after llama_decode returned, never inside the graph callback: calling into
// the Go runtime while ggml's worker threads spin-wait between graph splits
// made single-token decode ~10x slower on 2 cores (docs/llamacpp.md).
bool observe_layer(hev_llama *hl, int il) {
    auto &qs = hl->pending_q[il];
    auto &ks = hl->pending_k[il];
    if (qs.size() != ks.size()) {
        set_error(hl, "layer %d: captured %zu Q and %zu K nodes", il, qs.size(), ks.size());
        return false;
    }
    size_t from = 0;
    for (size_t u = 0; u < ks.size(); u++) {
        const rows &q = qs[u], &k = ks[u];
        size_t n = (size_t) k.tokens;
        if (q.tokens != k.tokens || from + n > hl->positions.size()) {
            set_error(hl, "layer %d: the graph saw more tokens than hev_llama_begin declared (%zu); one sequence per batch",
                      il, hl->positions.size());
            return false;
        }
        hashevict_tensor qt = describe(q), kt = describe(k);
        hashevict_status st = hashevict_observe(hl->engine, hl->seq, il, &qt, &kt, hl->positions.data() + from,
                                                (int32_t) n);
        if (st != HASHEVICT_OK) {
            set_error(hl, "hashevict_observe(layer %d): %s: %s", il, hashevict_status_string(st),
                      hashevict_last_error());
            return false;
        }
        from += n;
    }
    if (from != hl->positions.size()) {
        set_error(hl, "layer %d observed %zu of %zu tokens: is the graph callback attached, and did llama_decode succeed?",
                  il, from, hl->positions.size());
        return false;
    }
    return true;
}

bool eval_cb(ggml_tensor *t, bool ask, void *user_data) {
    hev_llama *hl = (hev_llama *) user_data;
    char which = 0;
    int il = qk_layer(t->name, &which);
    bool ours = hl->active && il >= 0 && il < hl->n_layer && t->op == GGML_OP_ROPE;
    bool wanted = ours && (which == 'K' || hl->q_late[il]);
    if (ask) {
        if (ours && which == 'Q') hl->q_node[il] = t;
        bool theirs = hl->prev_cb && hl->prev_cb(t, true, hl->prev_cb_data);
        hl->prev_wants = theirs ? t : nullptr;
        return wanted || theirs;
    }
    if (wanted) {
        hl->stats.nodes_observed++;
        uint64_t t0 = now_ns();
        auto copy = [&](const ggml_tensor *x, std::vector<rows> &list) {
            list.emplace_back();
            if (!copy_rows(x, &list.back())) {
                set_error(hl, "%s: unsupported node type %s or shape", x->name, ggml_type_name(x->type));
            }
        };
        if (which == 'K' && !hl->q_late[il]) {
            if (hl->q_node[il]) {
                copy(hl->q_node[il], hl->pending_q[il]);
            } else {
                hl->q_late[il] = true;  // from now on Q is handed over itself
            }
        }
        hl->q_node[il] = nullptr;
        copy(t, which == 'Q' ? hl->pending_q[il] : hl->pending_k[il]);
        hl->stats.observe_ns += now_ns() - t0;
    }
    // Our own errors never abort the graph (they surface in hev_llama_evict);
    // the caller's callback keeps its right to.
    if (hl->prev_wants == t) {
        hl->prev_wants = nullptr;
        return hl->prev_cb(t, false, hl->prev_cb_data);
    }
    return true;
}

int32_t meta_int(const llama_model *model, const std::string &key) {
    char buf[64];
    if (llama_model_meta_val_str(model, key.c_str(), buf, sizeof buf) < 0) return -1;
    return (int32_t) std::strtol(buf, nullptr, 10);
}

// Tells the engine which layers slide, so that they do not vote on the
// positions they can no longer attend to (hashevict_set_layer_window).
// llama.h gives the window (llama_model_n_swa) but not which layers use it:
// that is the GGUF key <arch>.attention.sliding_window_pattern when the file
// has it as a number, else the architecture's default, which llama.cpp's
// loader hard-codes (src/models/gemma3.cpp: every 6th layer global, the rest
// sliding: layer il slides when il % 6 < 5). An architecture with a window
// but neither is left without windows rather than guessed. Returns the
// number of sliding layers set, or -1 with hl->error set.
int set_layer_windows(hev_llama *hl, const llama_model *model, const std::string &arch) {
    int32_t n_swa = llama_model_n_swa(model);
    if (n_swa <= 0) return 0;
    int32_t pattern = meta_int(model, arch + ".attention.sliding_window_pattern");
    if (pattern <= 0 && arch == "gemma3") pattern = 6;
    if (pattern <= 0) return 0;
    int n = 0;
    for (int il = 0; il < hl->n_layer; il++) {
        if (il % pattern >= pattern - 1) continue;
        hashevict_status st = hashevict_set_layer_window(hl->engine, il, n_swa);
        if (st != HASHEVICT_OK) {
            hl->error = std::string("hashevict_set_layer_window: ") + hashevict_last_error();
            return -1;
        }
        n++;
    }
    return n;
}

}  // namespace

extern "C" {

hev_llama *hev_llama_new(const llama_model *model, const hashevict_params *params, char *err, size_t err_len) {
    auto fail = [&](const char *msg) -> hev_llama * {
        if (err && err_len) std::snprintf(err, err_len, "%s", msg);
        return nullptr;
    };
    if (!model || !params) return fail("hev_llama_new: model or params is NULL");
    if (hashevict_abi_version() != HASHEVICT_ABI_VERSION) return fail("libhashevict ABI version differs from hashevict.h");
    hev_llama *hl = new hev_llama();
    hl->params = *params;
    hl->params.mode = HASHEVICT_MODE_TOKEN;
    hl->n_layer = llama_model_n_layer(model);
    hl->params.n_layers = hl->n_layer;
    hl->params.n_q_heads = llama_model_n_head(model);
    hl->params.n_kv_heads = llama_model_n_head_kv(model);
    char arch[64] = {0};
    llama_model_meta_val_str(model, "general.architecture", arch, sizeof arch);
    int32_t head_dim = meta_int(model, std::string(arch) + ".attention.key_length");
    if (head_dim <= 0) head_dim = llama_model_n_embd(model) / hl->params.n_q_heads;
    hl->params.head_dim = head_dim;
    hashevict_status st = hashevict_engine_create(&hl->params, &hl->engine);
    if (st != HASHEVICT_OK) {
        char msg[512];
        std::snprintf(msg, sizeof msg, "hashevict_engine_create: %s: %s", hashevict_status_string(st),
                      hashevict_last_error());
        delete hl;
        return fail(msg);
    }
    if (set_layer_windows(hl, model, arch) < 0) {
        std::string msg = hl->error;
        hashevict_engine_free(hl->engine);
        delete hl;
        return fail(msg.c_str());
    }
    hl->pending_q.resize(hl->n_layer);
    hl->q_node.assign(hl->n_layer, nullptr);
    hl->q_late.assign(hl->n_layer, false);
    hl->pending_k.resize(hl->n_layer);
    hl->seq_added.assign(hl->params.max_seqs, false);
    hl->evict_buf.resize(4096);
    return hl;
}

void hev_llama_free(hev_llama *hl) {
    if (!hl) return;
    hashevict_engine_free(hl->engine);
    delete hl;
}

void hev_llama_attach(hev_llama *hl, llama_context_params *cparams) {
    if (!hl || !cparams) return;
    // Attaching twice to the same parameters must not chain us to ourselves.
    if (cparams->cb_eval == eval_cb && cparams->cb_eval_user_data == hl) return;
    hl->prev_cb = cparams->cb_eval;
    hl->prev_cb_data = cparams->cb_eval_user_data;
    hl->prev_wants = nullptr;
    cparams->cb_eval = eval_cb;
    cparams->cb_eval_user_data = hl;
}

int hev_llama_begin(hev_llama *hl, llama_seq_id seq, const llama_pos *positions, int32_t n_tokens) {
    if (seq < 0 || seq >= (llama_seq_id) hl->seq_added.size()) {
        hl->error = "hev_llama_begin: sequence id outside [0, max_seqs)";
        return -1;
    }
    if (!hl->seq_added[seq]) {
        hashevict_status st = hashevict_seq_add(hl->engine, seq);
        if (st != HASHEVICT_OK) {
            hl->error = std::string("hashevict_seq_add: ") + hashevict_last_error();
            return -1;
        }
        hl->seq_added[seq] = true;
    }
    hl->seq = seq;
    hl->positions.assign(positions, positions + n_tokens);
    for (auto &l : hl->pending_q) l.clear();
    for (auto &l : hl->pending_k) l.clear();
    hl->error.clear();
    hl->active = true;
    return 0;
}

}  // extern "C"

namespace {

// The positions hashevict_evictions chooses, dropped from the context;
// false with hl->error set on failure.
bool drop_to_budget(hev_llama *hl, llama_context *ctx, llama_seq_id seq, int32_t *dropped) {
    llama_memory_t mem = llama_get_memory(ctx);
    int32_t total = 0;
    *dropped = 0;
    for (;;) {
        int32_t got = 0;
        hashevict_status st = hashevict_evictions(hl->engine, seq, hl->evict_buf.data(),
                                                  (int32_t) hl->evict_buf.size(), &got);
        if (st != HASHEVICT_OK) {
            set_error(hl, "hashevict_evictions: %s: %s", hashevict_status_string(st), hashevict_last_error());
            return false;
        }
        for (int32_t i = 0; i < got; i++) {
            llama_pos p = hl->evict_buf[i];
            if (!llama_memory_seq_rm(mem, seq, p, p + 1)) {
                set_error(hl, "llama_memory_seq_rm(seq %d, pos %d) refused", seq, p);
                return false;
            }
        }
        total += got;
        *dropped = total;
        if (got < (int32_t) hl->evict_buf.size()) break;
    }
    hl->stats.positions_dropped += (uint64_t) total;
    return true;
}

// Feeds the batch's captured rows to the engine, every layer.
bool observe_batch(hev_llama *hl) {
    hl->active = false;
    hl->stats.decodes++;
    if (!hl->error.empty()) return false;
    uint64_t t0 = now_ns();
    for (int il = 0; il < hl->n_layer; il++) {
        if (!observe_layer(hl, il)) return false;
    }
    hl->stats.observe_ns += now_ns() - t0;
    return true;
}

}  // namespace

extern "C" {

int hev_llama_observe(hev_llama *hl, llama_seq_id seq, int32_t keep_window) {
    if (seq != hl->seq) {
        hl->active = false;
        set_error(hl, "hev_llama_observe: seq %d, but the batch was begun for seq %d", seq, hl->seq);
        return -1;
    }
    if (!observe_batch(hl)) return -1;
    if (keep_window <= 0) return 0;
    uint64_t t0 = now_ns();
    if (hl->win_seq != seq) {
        hl->win_seq = seq;
        hl->win_q.assign(hl->n_layer, {});
        hl->win_pos.clear();
    }
    const size_t row = (size_t) hl->params.n_q_heads * hl->params.head_dim;
    hl->win_pos.insert(hl->win_pos.end(), hl->positions.begin(), hl->positions.end());
    const size_t excess = hl->win_pos.size() > (size_t) keep_window ? hl->win_pos.size() - keep_window : 0;
    hl->win_pos.erase(hl->win_pos.begin(), hl->win_pos.begin() + excess);
    for (int il = 0; il < hl->n_layer; il++) {
        auto &w = hl->win_q[il];
        for (const rows &q : hl->pending_q[il]) w.insert(w.end(), q.data.begin(), q.data.end());
        w.erase(w.begin(), w.begin() + excess * row);
        if (w.size() != hl->win_pos.size() * row) {
            set_error(hl, "layer %d: kept %zu query rows for %zu window positions", il, w.size() / row,
                      hl->win_pos.size());
            return -1;
        }
    }
    hl->stats.observe_ns += now_ns() - t0;
    return 0;
}

int hev_llama_compress(hev_llama *hl, llama_context *ctx, llama_seq_id seq, int32_t n_window, int32_t pool,
                       int32_t form, int32_t *n_dropped) {
    if (n_dropped) *n_dropped = 0;
    hl->error.clear();
    uint64_t t0 = now_ns();
    if (hl->params.policy == HASHEVICT_POLICY_HASH) {
        if (hl->win_seq != seq || hl->win_pos.empty() || n_window < 1) {
            set_error(hl, "hev_llama_compress: no queries kept for seq %d (read the prompt with hev_llama_observe and keep_window > 0; n_window = %d)",
                      seq, n_window);
            return -1;
        }
        const int32_t n = std::min<int32_t>(n_window, (int32_t) hl->win_pos.size());
        const size_t from = hl->win_pos.size() - n;
        const int64_t D = hl->params.head_dim, H = hl->params.n_q_heads;
        for (int il = 0; il < hl->n_layer; il++) {
            hashevict_tensor qt{};
            qt.data = hl->win_q[il].data() + from * H * D;
            qt.dtype = HASHEVICT_DTYPE_F32;
            qt.device = HASHEVICT_DEVICE_HOST;
            qt.head_dim = D;
            qt.n_heads = H;
            qt.n_tokens = n;
            qt.head_stride = D * (int64_t) sizeof(float);
            qt.token_stride = H * D * (int64_t) sizeof(float);
            hashevict_status st = hashevict_compress_score(hl->engine, seq, il, &qt, hl->win_pos.data() + from, n,
                                                           pool, form);
            if (st != HASHEVICT_OK) {
                set_error(hl, "hashevict_compress_score(layer %d): %s: %s", il, hashevict_status_string(st),
                          hashevict_last_error());
                return -1;
            }
        }
    }
    int32_t dropped = 0;
    bool ok = drop_to_budget(hl, ctx, seq, &dropped);
    hl->win_q.clear();
    hl->win_pos.clear();
    hl->win_seq = -1;
    hl->stats.compress_ns += now_ns() - t0;
    if (n_dropped) *n_dropped = dropped;
    return ok ? 0 : -1;
}

int hev_llama_evict(hev_llama *hl, llama_context *ctx, llama_seq_id seq, int32_t *n_dropped) {
    if (n_dropped) *n_dropped = 0;
    if (!observe_batch(hl)) return -1;
    uint64_t t0 = now_ns();
    int32_t total = 0;
    if (!drop_to_budget(hl, ctx, seq, &total)) return -1;
    hl->stats.evict_ns += now_ns() - t0;
    if (n_dropped) *n_dropped = total;
    return 0;
}

int hev_llama_reset(hev_llama *hl, llama_seq_id seq) {
    if (seq == hl->win_seq) {
        hl->win_q.clear();
        hl->win_pos.clear();
        hl->win_seq = -1;
    }
    if (seq < 0 || seq >= (llama_seq_id) hl->seq_added.size() || !hl->seq_added[seq]) return 0;
    hashevict_status st = hashevict_seq_reset(hl->engine, seq);
    if (st != HASHEVICT_OK) {
        hl->error = std::string("hashevict_seq_reset: ") + hashevict_last_error();
        return -1;
    }
    return 0;
}

const char *hev_llama_error(const hev_llama *hl) { return hl->error.c_str(); }

hev_llama_stats hev_llama_get_stats(const hev_llama *hl) { return hl->stats; }

hashevict_engine *hev_llama_engine(hev_llama *hl) { return hl->engine; }

}  // extern "C"
