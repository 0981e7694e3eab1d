// hashevict-kv.cpp — see hashevict-kv.h.
#include "hashevict-kv.h"

#include "ggml.h"
#include "hashevict.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <mutex>
#include <vector>

struct hashevict_kv {
    llama_kv_placer placer = {};

    hashevict_params params = {};
    hashevict_engine * engine = nullptr;
    bool engine_failed = false;   // creation failed once: do not retry every layer

    std::mutex mu;                // guards engine creation and `added`
    std::vector<uint8_t> added;   // hashevict_seq_add done for this llama sequence

    std::atomic<int64_t> n_fail{0};

    ~hashevict_kv() { hashevict_engine_free(engine); }
};

static bool parse_name(const std::string & name, const char * const * names, int32_t n, int32_t & out) {
    for (int32_t i = 0; i < n; ++i) {
        if (name == names[i]) {
            out = i;
            return true;
        }
    }
    return false;
}

// index = the hashevict.h enum value
bool hashevict_kv_parse_policy(const std::string & name, int32_t & out) {
    static const char * const names[] = { "hash", "sink-recent", "knorm", "random", "oracle" };
    return parse_name(name, names, 5, out);
}

bool hashevict_kv_parse_probe(const std::string & name, int32_t & out) {
    static const char * const names[] = { "query", "key" };
    return parse_name(name, names, 2, out);
}

bool hashevict_kv_parse_score(const std::string & name, int32_t & out) {
    static const char * const names[] = { "instant", "accumulated", "decayed" };
    return parse_name(name, names, 3, out);
}

static void log_failure(hashevict_kv * kv, const char * what, hashevict_status st) {
    // the first few failures say why; a broken setup would otherwise flood stderr every layer
    if (kv->n_fail.fetch_add(1) < 8) {
        fprintf(stderr, "hashevict-kv: %s: %s: %s\n", what, hashevict_status_string(st), hashevict_last_error());
    }
}

static bool to_desc(const ggml_tensor * t, int32_t i0, int32_t n, hashevict_tensor & d) {
    switch (t->type) {
        case GGML_TYPE_F32:  d.dtype = HASHEVICT_DTYPE_F32;  break;
        case GGML_TYPE_F16:  d.dtype = HASHEVICT_DTYPE_F16;  break;
        case GGML_TYPE_BF16: d.dtype = HASHEVICT_DTYPE_BF16; break;
        default: return false;
    }
    d.data         = (const char *) t->data + (size_t) i0 * t->nb[2];
    d.device       = HASHEVICT_DEVICE_HOST;
    d.head_dim     = t->ne[0];
    d.n_heads      = t->ne[1];
    d.n_tokens     = n;
    d.head_stride  = (int64_t) t->nb[1];
    d.token_stride = (int64_t) t->nb[2];
    d.stream       = nullptr;
    return true;
}

static bool reads_queries(const hashevict_params & p) {
    return p.policy == HASHEVICT_POLICY_ORACLE || (p.policy == HASHEVICT_POLICY_HASH && p.probe == HASHEVICT_PROBE_QUERY);
}

static bool place_cb(void * user, llama_seq_id seq_id, int32_t il, const ggml_tensor * q, const ggml_tensor * k,
                     int32_t i0, int32_t n_tokens, const llama_pos * pos, int32_t * out_slots) {
    auto * kv = (hashevict_kv *) user;
    {
        std::lock_guard<std::mutex> lock(kv->mu);
        if (!kv->engine) {
            if (kv->engine_failed) {
                kv->n_fail.fetch_add(1);
                return false;
            }
            // the head geometry is only known here, from the tensors the graph holds
            kv->params.head_dim   = (int32_t) k->ne[0];
            kv->params.n_kv_heads = (int32_t) k->ne[1];
            kv->params.n_q_heads  = (int32_t) q->ne[1];
            const hashevict_status st = hashevict_engine_create(&kv->params, &kv->engine);
            if (st != HASHEVICT_OK) {
                kv->engine_failed = true;
                log_failure(kv, "engine_create", st);
                return false;
            }
        }
        if (seq_id < 0 || (size_t) seq_id >= kv->added.size()) {
            log_failure(kv, "sequence id out of range", HASHEVICT_ERR_OUT_OF_RANGE);
            return false;
        }
        if (!kv->added[seq_id]) {
            const hashevict_status st = hashevict_seq_add(kv->engine, seq_id);
            if (st != HASHEVICT_OK) {
                log_failure(kv, "seq_add", st);
                return false;
            }
            kv->added[seq_id] = 1;
        }
    }

    hashevict_tensor qd = {}, kd = {};
    if (!to_desc(q, i0, n_tokens, qd) || !to_desc(k, i0, n_tokens, kd)) {
        log_failure(kv, "q/k type", HASHEVICT_ERR_UNSUPPORTED);
        return false;
    }
    static_assert(sizeof(llama_pos) == sizeof(int32_t), "positions are passed as int32");
    const hashevict_status st = hashevict_place(kv->engine, seq_id, il, reads_queries(kv->params) ? &qd : nullptr, &kd,
                                                pos, n_tokens, out_slots, nullptr);
    if (st != HASHEVICT_OK) {
        log_failure(kv, "place", st);
        return false;
    }
    return true;
}

static void seq_clear_cb(void * user, llama_seq_id seq_id) {
    auto * kv = (hashevict_kv *) user;
    std::lock_guard<std::mutex> lock(kv->mu);
    if (kv->engine && seq_id >= 0 && (size_t) seq_id < kv->added.size() && kv->added[seq_id]) {
        hashevict_seq_remove(kv->engine, seq_id);
        kv->added[seq_id] = 0;
    }
}

hashevict_kv * hashevict_kv_init(const llama_model * model, const hashevict_kv_config & cfg,
                                 uint32_t n_seq_max, uint32_t n_ctx_seq, std::string & err) {
    if (hashevict_abi_version() != HASHEVICT_ABI_VERSION) {
        err = "libhashevict ABI " + std::to_string(hashevict_abi_version()) + ", built against " +
              std::to_string(HASHEVICT_ABI_VERSION);
        return nullptr;
    }
    int64_t budget = cfg.budget;
    if (budget <= 0) {
        if (!(cfg.keep > 0.0f && cfg.keep <= 1.0f)) {
            err = "--kv-evict-keep must be in (0, 1]";
            return nullptr;
        }
        budget = (int64_t) (cfg.keep * (double) n_ctx_seq);
    }
    if (budget <= cfg.sink + cfg.recent) {
        err = "the budget (" + std::to_string(budget) + " cells per sequence) must exceed sinks + recent (" +
              std::to_string(cfg.sink + cfg.recent) + ")";
        return nullptr;
    }

    auto * kv = new hashevict_kv();
    hashevict_params & p = kv->params;
    p = hashevict_default_params();
    p.mode      = HASHEVICT_MODE_SLOT;
    p.policy    = cfg.policy;
    p.probe     = cfg.probe;
    p.score     = cfg.score;
    p.n_layers  = llama_model_n_layer(model);
    p.hash_bits = cfg.bits;
    p.budget    = (int32_t) budget;
    p.n_sink    = cfg.sink;
    p.n_recent  = cfg.recent;
    p.max_seqs  = (int32_t) std::max<uint32_t>(n_seq_max, 1);
    p.seed      = cfg.seed;

    // validate everything but the head geometry now, with a stand-in shape, so that a bad flag
    // fails at start-up rather than at the first decode
    hashevict_params probe = p;
    probe.n_kv_heads = 1;
    probe.n_q_heads  = 1;
    probe.head_dim   = 64;
    hashevict_engine * e = nullptr;
    const hashevict_status st = hashevict_engine_create(&probe, &e);
    hashevict_engine_free(e);
    if (st != HASHEVICT_OK) {
        err = std::string(hashevict_status_string(st)) + ": " + hashevict_last_error();
        delete kv;
        return nullptr;
    }

    kv->added.assign(p.max_seqs, 0);
    kv->placer.user      = kv;
    kv->placer.n_slots   = (uint32_t) budget;
    kv->placer.place     = place_cb;
    kv->placer.seq_clear = seq_clear_cb;
    return kv;
}

void hashevict_kv_free(hashevict_kv * kv) {
    delete kv;
}

const llama_kv_placer * hashevict_kv_placer(const hashevict_kv * kv) {
    return kv ? &kv->placer : nullptr;
}

hashevict_engine * hashevict_kv_engine(hashevict_kv * kv) {
    if (!kv) {
        return nullptr;
    }
    std::lock_guard<std::mutex> lock(kv->mu);
    return kv->engine;
}

int64_t hashevict_kv_failures(const hashevict_kv * kv) {
    return kv ? kv->n_fail.load() : 0;
}
