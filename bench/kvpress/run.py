#!/usr/bin/env python3
"""HashEvict side by side with NVIDIA kvpress's presses, in transformers.

    python3 bench/kvpress/run.py                 # the grid -> docs/eval/kvpress.{md,png}
    python3 bench/kvpress/run.py --trials 2      # a small sample
    python3 bench/kvpress/run.py --report        # tables and plot from what has run

Every result is appended to <out>/kvpress.jsonl; a rerun skips the (model,
task, method, ratio, trial, length) rows that are there (resumable). Methods,
each at compression ratio 0.25 / 0.5 / 0.75 (the share of the context's KV
entries dropped):

  full                 no compression
  kvpress presses      SnapKV, TOVA, Knorm, StreamingLLM, ExpectedAttention,
                       KeyDiff, Random (all that run offline here),
                       question-agnostic: the context is compressed before
                       the question is fed, as kvpress's pipeline does
  snapkv_qa            SnapKV question-aware, as kvpress's leaderboard runs it
                       (evaluate.py --compress_questions: the question is
                       appended to the context and compressed with it)
  hashevict_press      hashevict.kvpress.HashEvictPress (hash-scored
                       ScorerPress, question-agnostic)
  hashevict_snap       hashevict.kvpress.HashEvictSnapPress, question-aware
                       like snapkv_qa: the C engine's hashevict_compress
  hashevict_cache      hashevict.transformers.HashEvictCache, budget
                       int(n_context * (1 - ratio)) slots per layer and KV
                       head, kept through question and answer (the presses'
                       caches grow again after compression)

Models: SmolLM2-135M-Instruct and Gemma 3 270M (base), from the GGUF files
the llama.cpp path uses. Gemma 3's sliding-window layers (512 tokens) are
left uncompressed by every press, as kvpress does for Gemma 3.

Tasks (the chat template where the model has one, else plain text):

  passkey  a 5-digit key at a spread depth of repeated filler
  facts    4 made-up facts at spread depths of a Moby Dick passage, one
           asked (this driver's own small generator: the evaluation's C++
           generator, hashevict-eval facts, needs llama.cpp)
  ppl      perplexity of the length/4 tokens that follow a compressed
           3*length/4-token window of Moby Dick (teacher-forced, one forward)

One shared prefill per prompt. A kvpress press compresses each layer in a
hook after that layer's attention, so the prefill's hidden states, keys and
values never depend on the press (a layer's compressed cache is read only by
later forwards). The driver therefore runs the prefill once, over context +
question, records each attention layer's input, keys, values and rotary
embeddings, and calls every press's ``compress`` on them (the context's
rows for question-agnostic presses, context + question for question-aware
ones), exactly as kvpress's hook would, then answers from the compressed
cache. bench/kvpress/test_run.py checks that this gives the caches kvpress's
own hooks give. hashevict_cache decides while it reads the prompt and runs
its own prefill.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bindings" / "python" / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

RATIOS = [0.25, 0.5, 0.75]
PRESSES = ["snapkv", "tova", "knorm", "streaming_llm", "expected_attention", "keydiff", "random",
           "snapkv_qa", "hashevict_press", "hashevict_snap", "hashevict_cache"]
QUESTION_AWARE = {"snapkv_qa", "hashevict_snap"}
TASKS = ["passkey", "facts", "ppl"]
MODELS = {"smollm2": ("SMOLLM_GGUF", "SmolLM2-135M-Instruct"), "gemma3": ("GEMMA_GGUF", "Gemma-3-270M")}


def deps():
    env = {}
    f = Path(os.environ.get("HASHEVICT_DEPS_ENV", ROOT / ".cache" / "deps.env"))
    for line in f.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k] = v.strip().strip('"')
    return env


# --- prompts -------------------------------------------------------------------
FILLER = ("The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ")
FACTS = [
    ("The secret ingredient of the lighthouse keeper's soup is {v}.", "What is the secret ingredient of the lighthouse keeper's soup?",
     ["saffron", "juniper", "fennel", "nutmeg", "tarragon", "cardamom"]),
    ("The captain's parrot is named {v}.", "What is the captain's parrot named?",
     ["Bartholomew", "Clementine", "Archibald", "Penelope", "Montgomery", "Gwendolyn"]),
    ("The harbour master keeps his spare key under a {v}.", "Under what does the harbour master keep his spare key?",
     ["flowerpot", "horseshoe", "doormat", "lantern", "anchor", "barrel"]),
    ("The ship's cook was born in the town of {v}.", "In which town was the ship's cook born?",
     ["Lisbon", "Valparaiso", "Bergen", "Nantucket", "Marseille", "Halifax"]),
]


def passkey_prompt(tok, trial, n_tokens):
    rng = random.Random(1000 + trial)
    key = str(rng.randint(10000, 99999))
    depth = (trial * 0.37 + 0.1) % 0.9 + 0.05
    unit = len(tok(FILLER, add_special_tokens=False).input_ids)
    reps = max(1, n_tokens // unit)
    at = int(reps * depth)
    parts = [FILLER] * reps
    parts.insert(at, f"The pass key is {key}. Remember it. {key} is the pass key. ")
    context = "There is a pass key hidden inside a lot of irrelevant text. Find it and memorize it.\n\n" + "".join(parts)
    return context, "\n\nWhat is the pass key?", key, depth


def facts_prompt(tok, trial, n_tokens, text):
    rng = random.Random(2000 + trial)
    words = text.split()
    start = rng.randrange(0, max(1, len(words) - 4 * n_tokens))
    hay, got = [], 0
    i = start
    while got < n_tokens * 0.9 and i < len(words):  # ~1.3 tokens per word
        chunk = words[i:i + 50]
        hay.append(" ".join(chunk))
        got += int(len(chunk) * 1.3)
        i += 50
    values = [rng.choice(vals) for _, _, vals in FACTS]
    asked = trial % len(FACTS)
    for j, (stmt, _, _) in enumerate(FACTS):  # fact j in the j-th quarter
        at = int(len(hay) * (j + rng.random()) / len(FACTS))
        hay.insert(min(at + j, len(hay)), stmt.format(v=values[j]))
    depth = (asked + 0.5) / len(FACTS)
    context = ("Below is a long passage from a book. A few facts that do not belong to the book are hidden in it.\n\n"
               + " ".join(hay))
    q = "\n\nAnswer the question from the facts hidden in the passage above.\nQuestion: " + FACTS[asked][1]
    return context, q, values[asked], depth


def chat_split(tok, context, question):
    """(context, question, suffix) token ids of the prompt. With a chat
    template (SmolLM2), the context and question are the user turn and the
    suffix is the template's tail up to the assistant's answer, as kvpress's
    pipeline builds it; without one (Gemma 3 270M is a base model) the
    context starts with <bos> and the suffix is "\nAnswer:". Question-
    agnostic presses compress the context, question-aware ones context +
    question; the suffix always follows the compression."""
    if getattr(tok, "chat_template", None):
        marker = "\x00QUESTION\x00"
        text = tok.apply_chat_template([{"role": "user", "content": context + marker}], tokenize=False,
                                       add_generation_prompt=True)
        pre, post = text.split(marker)
        ids_c = tok(pre, add_special_tokens=False, return_tensors="pt").input_ids
    else:
        post = "\nAnswer:"
        ids_c = tok(context, return_tensors="pt").input_ids
    ids_q = tok(question, add_special_tokens=False, return_tensors="pt").input_ids
    ids_s = tok(post, add_special_tokens=False, return_tensors="pt").input_ids
    return ids_c, ids_q, ids_s


# --- methods -------------------------------------------------------------------
def make_press(name, ratio):
    import kvpress

    from hashevict.kvpress import HashEvictPress, HashEvictSnapPress

    return {
        "snapkv": lambda: kvpress.SnapKVPress(compression_ratio=ratio),
        "snapkv_qa": lambda: kvpress.SnapKVPress(compression_ratio=ratio),
        "tova": lambda: kvpress.TOVAPress(compression_ratio=ratio),
        "knorm": lambda: kvpress.KnormPress(compression_ratio=ratio),
        "streaming_llm": lambda: kvpress.StreamingLLMPress(compression_ratio=ratio),
        "expected_attention": lambda: kvpress.ExpectedAttentionPress(compression_ratio=ratio),
        "keydiff": lambda: kvpress.KeyDiffPress(compression_ratio=ratio),
        "random": lambda: kvpress.RandomPress(compression_ratio=ratio, seed=0),
        "hashevict_press": lambda: HashEvictPress(compression_ratio=ratio),
        "hashevict_snap": lambda: HashEvictSnapPress(compression_ratio=ratio),
    }[name]()


def attention_modules(model):
    lm = model.model.language_model if hasattr(model.model, "language_model") else model.model
    mods = [layer.self_attn for layer in lm.layers]
    for m in mods:  # what kvpress's press context sets (ExpectedAttention reads it)
        m.rotary_emb = lm.rotary_emb
    return mods


def shared_prefill(model, ids):
    """One forward of ids over an empty cache that keeps every layer whole
    (no sliding window); per layer index: (attention module, its input
    hidden states, keys, values, (cos, sin)), what kvpress's hook would
    hand a press."""
    import torch
    from kvpress.utils import extract_keys_and_values
    from transformers import DynamicCache

    rec = {}

    def hook(module, args, kwargs, output):
        keys, values = extract_keys_and_values(kwargs["past_key_values"], module.layer_idx)
        rec[module.layer_idx] = (module, kwargs["hidden_states"], keys, values, kwargs["position_embeddings"])

    hooks = [m.register_forward_hook(hook, with_kwargs=True) for m in attention_modules(model)]
    try:
        with torch.no_grad():
            model(input_ids=ids, past_key_values=DynamicCache(), logits_to_keep=1)
    finally:
        for h in hooks:
            h.remove()
    return rec


def compressed_cache(model, rec, press, n):
    """The cache after a press compressed the first n prompt tokens: each
    layer's press.compress on the recorded rows, as kvpress's hook calls it
    (sliding-window layers are left whole, as kvpress does for Gemma 3), in
    a cache shaped like the model's own (sliding layers keep their window)."""
    import torch
    from transformers import DynamicCache

    if press is not None:
        press.post_init_from_model(model)
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        for layer in sorted(rec):
            module, hs, k, v, (cos, sin) = rec[layer]
            k, v = k[:, :, :n], v[:, :, :n]
            if press is not None and not getattr(module, "is_sliding", False):
                k, v = press.compress(module, hs[:, :n], k, v, None, {"position_embeddings": (cos[:, :n], sin[:, :n])})
            cache.update(k, v, layer)
    return cache


def hybrid_masks(model, cache, pos, m):
    """Attention masks for m new tokens at real positions pos.. over a cache
    whose full-attention layers were compressed and whose sliding layers were
    not (Gemma 3). transformers derives one cache position from layer 0 for
    every layer; with layers of different lengths that makes the compressed
    layers' mask non-causal among the new tokens, so both masks are given
    explicitly. None for models without sliding layers."""
    import torch

    types = getattr(model.config, "layer_types", None)
    if not types or "sliding_attention" not in types or "full_attention" not in types:
        return None
    w = model.config.sliding_window
    q = torch.arange(pos, pos + m)
    n_full = cache.layers[types.index("full_attention")].get_seq_length()
    full = torch.ones(m, n_full + m, dtype=torch.bool)
    full[:, n_full:] = torch.tril(torch.ones(m, m, dtype=torch.bool))
    kept = cache.layers[types.index("sliding_attention")].keys.shape[2]  # the last `kept` positions before pos
    kv = torch.cat([torch.arange(pos - kept, pos), q])
    sliding = (kv[None, :] <= q[:, None]) & (kv[None, :] > q[:, None] - w)
    return {"full_attention": full[None, None], "sliding_attention": sliding[None, None]}


def step(model, cache, ids, pos):
    """A forward of `ids` at real positions pos.. over `cache`; logits."""
    import torch

    from hashevict.transformers import HashEvictCache

    n = ids.shape[1]
    if isinstance(cache, HashEvictCache):
        kv, mask = pos, None
    else:
        kv, mask = cache.get_seq_length(), hybrid_masks(model, cache, pos, n)
    with torch.no_grad():
        return model(input_ids=ids, past_key_values=cache, position_ids=torch.arange(pos, pos + n)[None],
                     cache_position=torch.arange(kv, kv + n), attention_mask=mask).logits


def answer(model, tok, cache, pos, ids_q, want, max_new=12):
    """Greedy answer of at most max_new tokens. It stops early once `want`
    is in it: the verdict (want in answer) cannot change after that."""
    import torch

    logits = step(model, cache, ids_q, pos)[:, -1]
    pos += ids_q.shape[1]
    out = []
    for _ in range(max_new):
        t = int(logits.argmax(-1))
        if t == tok.eos_token_id:
            break
        out.append(t)
        if want.lower() in tok.decode(out, skip_special_tokens=True).lower():
            break
        logits = step(model, cache, torch.tensor([[t]]), pos)[:, -1]
        pos += 1
    return tok.decode(out, skip_special_tokens=True)


def timed(fn):
    """(fn(), wall seconds, CPU seconds of this process: all its threads,
    so with one torch thread the model's own time)."""
    w, c = time.perf_counter(), time.process_time()
    r = fn()
    return r, round(time.perf_counter() - w, 2), round(time.process_time() - c, 2)


def prompt_ids(tok, task, trial, env, length):
    """(prefix to prefill, n compressed question-agnostic, n compressed
    question-aware, tokens fed after, extra row fields)."""
    import torch

    if task == "ppl":
        text = Path(env["TEXT2_FILE"]).read_text(errors="replace")
        ids = tok(text[20000 + trial * 40000:20000 + trial * 40000 + 12 * length], return_tensors="pt").input_ids
        ids = ids[:, :length]
        n = length * 3 // 4
        return ids[:, :n], n, n, ids[:, n:], {"tokens": int(ids.shape[1] - n), "context": n}
    if task == "passkey":
        context, q, want, depth = passkey_prompt(tok, trial, length)
    else:
        context, q, want, depth = facts_prompt(tok, trial, length, Path(env["TEXT2_FILE"]).read_text(errors="replace"))
    ids_c, ids_q, ids_s = chat_split(tok, context, q)
    pre = torch.cat([ids_c, ids_q], 1)
    return pre, ids_c.shape[1], pre.shape[1], (ids_q, ids_s), {"want": want, "depth": round(depth, 3),
                                                               "context": int(ids_c.shape[1])}


def finish(model, tok, task, cache, n, pre, rest, last, want=None):
    """Answer (or score) from a cache holding the first n tokens of pre."""
    import torch

    if task == "ppl":
        logits = step(model, cache, rest, n)
        lp = torch.log_softmax(torch.cat([last[:, None], logits[:, :-1]], 1).float(), -1)
        return {"value": math.exp(-lp.gather(-1, rest[..., None]).mean().item())}
    ids_q, ids_s = rest
    feed = torch.cat([pre[:, n:], ids_s], 1)  # the question (if not compressed with the context), then the suffix
    return {"answer": answer(model, tok, cache, n, feed, want)}


def run_prompt(model, tok, task, trial, env, length, todo, emit):
    """Every (method, ratio) of `todo` on one prompt: one shared prefill for
    the presses, then each compresses and answers; hashevict_cache reads the
    prompt itself. emit(method, ratio, fields) records a row."""
    import torch
    from transformers import DynamicCache

    from hashevict.transformers import HashEvictCache

    pre, n_agn, n_qa, rest, extra = prompt_ids(tok, task, trial, env, length)

    def score(r):
        if task != "ppl":
            r["value"] = float(extra["want"].lower() in r["answer"].lower())
        return r

    last = None
    if task == "ppl":  # the prefill's last logits score the continuation's first token
        with torch.no_grad():
            last = model(input_ids=pre, past_key_values=DynamicCache(), logits_to_keep=1).logits[:, -1]
    shared = [(m, x) for m, x in todo if m != "hashevict_cache"]
    if shared:
        rec, w, c = timed(lambda: shared_prefill(model, pre))
        for m, ratio in shared:
            n = n_qa if m in QUESTION_AWARE else n_agn
            try:
                r, w2, c2 = timed(lambda: finish(model, tok, task, compressed_cache(
                    model, rec, None if m == "full" else make_press(m, ratio), n), n, pre, rest, last, extra.get("want")))
                emit(m, ratio, {**extra, **score(r), "seconds": w2, "cpu": c2, "prefill_seconds": w, "prefill_cpu": c})
            except Exception as exc:  # a press that cannot run on this model: recorded, not retried
                emit(m, ratio, {**extra, "value": None, "error": f"{type(exc).__name__}: {exc}"[:300]})
        del rec
    for m, ratio in todo:
        if m != "hashevict_cache":
            continue
        n = n_agn

        def run():
            cache = HashEvictCache(model, budget=max(int(n * (1 - ratio)), 16))
            with torch.no_grad():
                lg = model(input_ids=pre[:, :n], past_key_values=cache, logits_to_keep=1).logits[:, -1]
            return finish(model, tok, task, cache, n, pre, rest, lg, extra.get("want"))

        r, w, c = timed(run)
        emit(m, ratio, {**extra, **score(r), "seconds": w, "cpu": c})


# --- report ----------------------------------------------------------------------
def read(path):
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                rows.append(json.loads(line))
    return rows


KEEP = "<!-- written by hand below this line; run.py --report keeps it -->"


def cost(rows):
    """(wall s, CPU s) the rows took: each method's own compress and answer,
    plus each shared prefill once."""
    wall = sum(r.get("seconds", 0) for r in rows)
    cpu = sum(r.get("cpu", 0) for r in rows)
    prefills = {(r["model"], r["task"], r["trial"], r.get("length"), r["prefill_seconds"], r.get("prefill_cpu", 0))
                for r in rows if "prefill_seconds" in r}
    return wall + sum(p[4] for p in prefills), cpu + sum(p[5] for p in prefills)


def report(rows, out_md, out_png, command):
    from collections import defaultdict

    cells, errors = defaultdict(list), {}
    for r in rows:
        key = (r["model"], r["task"], r["method"], r["ratio"])
        if r.get("error"):
            errors[key] = r["error"]
        else:
            cells[key].append(r["value"])
    models = [m for _, m in MODELS.values() if any(r["model"] == m for r in rows)]
    methods = ["full"] + PRESSES
    counts = [len(v) for k, v in cells.items()]
    lengths = sorted({r.get("length", 1024) for r in rows})
    wall, cpu = cost(rows)
    old = out_md.read_text() if out_md.is_file() else ""
    kept = old[old.index(KEEP):] if KEEP in old else KEEP + "\n"
    lines = ["# HashEvict side by side with kvpress", "",
             f"Made by `{command}` (bench/kvpress/run.py; raw rows in `kvpress.jsonl` beside this file): "
             f"{len(rows)} runs, {min(counts, default=0)}-{max(counts, default=0)} trials per cell, prompts of "
             f"{', '.join(map(str, lengths))} tokens; the runs took {wall / 60:.1f} minutes of wall time and "
             f"{cpu / 60:.1f} minutes of CPU time (one torch thread; model loading not counted).", ""]
    for task in TASKS:
        unit = "perplexity (lower is better)" if task == "ppl" else "accuracy, trials answered (higher is better)"
        if not any(k[1] == task for k in list(cells) + list(errors)):
            lines += [f"## {task}: not run yet", ""]
            continue
        cols = [(m, x) for m in models for x in RATIOS]
        lines += [f"## {task}: {unit}", "",
                  "| method | " + " | ".join(f"{m.split('-')[0]} {x}" for m, x in cols) + " | trials |",
                  "|---|" + "---|" * (len(cols) + 1)]
        for meth in methods:
            vals, ns = [], []
            for m, x in cols:
                key = (m, task, meth, 0.0 if meth == "full" else x)
                v = cells.get(key, [])
                ns.append(len(v))
                if key in errors:
                    vals.append("fails¹")
                elif not v:
                    vals.append("–")
                else:
                    vals.append(f"{sum(v) / len(v):.2f}" if task == "ppl" else f"{int(sum(v))}/{len(v)}")
            if any(ns) or any(v == "fails¹" for v in vals):
                name = "full (no compression)" if meth == "full" else meth
                lines.append(f"| {name} | " + " | ".join(vals) + f" | {min(n for n in ns if n) if any(ns) else 0}"
                             f"{'' if len(set(n for n in ns if n)) <= 1 else '-' + str(max(ns))} |")
        lines.append("")
    if errors:
        lines += ["¹ " + "; ".join(sorted({f"{k[2]} on {k[0]}: {e}" for k, e in errors.items()})), ""]
    out_md.write_text("\n".join(lines) + "\n" + kept)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(len(models), len(TASKS), figsize=(5 * len(TASKS), 4 * len(models)), squeeze=False)
    for row, m in enumerate(models):
        for ax, task in zip(axes[row], TASKS):
            for meth in methods:
                xs, ys = [], []
                for x in RATIOS:
                    v = cells.get((m, task, meth, 0.0 if meth == "full" else x), [])
                    if v:
                        xs.append(x)
                        ys.append(sum(v) / len(v))
                if xs:
                    he = meth.startswith("hashevict")
                    style = "-o" if he else ("--" if meth == "full" else "-.x")
                    color = plt.get_cmap("tab20")(methods.index(meth) % 20)  # 12 methods: the default cycle repeats
                    ax.plot(xs, ys, style, label=meth, color=color, linewidth=2.5 if he else 1)
            ax.set_title(f"{m}: {task}")
            ax.set_xlabel("compression ratio")
            ax.set_ylabel("perplexity" if task == "ppl" else "accuracy")
    handles = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(6, len(handles)), fontsize=8)
        fig.subplots_adjust(bottom=0.18)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(out_png, dpi=80)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "docs" / "eval"))
    ap.add_argument("--trials", type=int, default=8, help="prompts per (model, task, method, ratio)")
    ap.add_argument("--ppl-trials", type=int, default=4, help="ppl windows per cell (at most --trials)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--methods", default=",".join(PRESSES))
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--ratios", default=",".join(map(str, RATIOS)))
    ap.add_argument("--length", type=int, default=1024, help="tokens per prompt (ppl: context 3/4, scored 1/4)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: all cores)")
    ap.add_argument("--report", action="store_true", help="only write the tables and the plot")
    ap.add_argument("--made-by", help="the command to credit in the report (default: this one)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "kvpress.jsonl"
    command = args.made_by or ("make eval-kvpress" if os.environ.get("MAKELEVEL") else
                               "python3 bench/kvpress/run.py " + " ".join(sys.argv[1:]))
    if not args.report:
        import torch

        from hashevict.models import load_gguf

        torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))
        env = deps()
        done = {(r["model"], r["task"], r["method"], r["ratio"], r["trial"], r.get("length")) for r in read(results)}
        ratios = [float(x) for x in args.ratios.split(",")]
        methods = ["full"] + [m for m in args.methods.split(",") if m]
        models = {}
        for key in args.models.split(","):
            t0, c0 = time.perf_counter(), time.process_time()
            models[key] = load_gguf(env[MODELS[key][0]])
            print(f"{key} loaded in {time.perf_counter() - t0:.0f} s ({time.process_time() - c0:.0f} s CPU)", flush=True)
        # Trials outermost, so that a run cut short leaves every cell with
        # about the same number of trials.
        for trial in range(args.trials):
            for key, (model, tok) in models.items():
                name = MODELS[key][1]
                for task in args.tasks.split(","):
                    if task == "ppl" and trial >= min(args.ppl_trials, args.trials):
                        continue
                    todo = [(m, x) for m in methods for x in ([0.0] if m == "full" else ratios)
                            if not (task == "ppl" and m == "snapkv_qa")  # no question: it is snapkv
                            and (name, task, m, x, trial, args.length) not in done]
                    if not todo:
                        continue

                    def emit(m, ratio, fields):
                        row = {"model": name, "task": task, "method": m, "ratio": ratio, "trial": trial,
                               "length": args.length, "threads": torch.get_num_threads(), **fields}
                        with results.open("a") as f:
                            f.write(json.dumps(row) + "\n")
                        print(json.dumps(row), flush=True)

                    run_prompt(model, tok, task, trial, env, args.length, todo, emit)
    report(read(results), out / "kvpress.md", out / "kvpress.png", command)


if __name__ == "__main__":
    main()
