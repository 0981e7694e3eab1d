#!/usr/bin/env python3
"""HashEvict side by side with NVIDIA kvpress's presses, in transformers.

    python3 bench/kvpress/run.py                 # the grid -> docs/eval/kvpress.{md,png}
    python3 bench/kvpress/run.py --trials 2      # a small sample
    python3 bench/kvpress/run.py --report        # tables and plot from what has run

Every result is appended to <out>/kvpress.jsonl; a rerun skips what is there
(resumable). Methods, each at compression ratio 0.25 / 0.5 / 0.75 (the share
of the context's KV entries dropped):

  full                 no compression
  kvpress presses      SnapKV, TOVA, Knorm, StreamingLLM, ExpectedAttention,
                       KeyDiff, Random (all that run offline on this model)
  hashevict press      hashevict.kvpress.HashEvictPress (compress after the
                       context's prefill, like every press here)
  hashevict cache      hashevict.transformers.HashEvictCache, budget
                       int(n_context * (1 - ratio)) slots per layer and KV
                       head, kept through question and answer (the presses'
                       caches grow again after compression)

Tasks (SmolLM2-135M-Instruct from its GGUF, chat template as kvpress's
pipeline applies it: the context is compressed before the question):

  passkey  a 5-digit key at a spread depth of repeated filler, ~1k tokens
  facts    4 made-up facts at spread depths of a Moby Dick passage, one
           asked, ~1k tokens (this driver's own small generator: the
           evaluation's C++ generator, hashevict-eval facts, needs llama.cpp)
  ppl      perplexity of the 256 tokens that follow a compressed 768-token
           window of Moby Dick (teacher-forced in one forward)
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
           "hashevict_press", "hashevict_cache"]
TASKS = ["passkey", "facts", "ppl"]


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
    unit = len(tok(FILLER).input_ids)
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
    q = "\n\nAnswer the question from the facts hidden in the passage above.\nQuestion: " + FACTS[asked][1] + "\nAnswer:"
    return context, q, values[asked], depth


def chat_split(tok, context, question):
    """(context ids, question ids) of the chat-templated prompt, split where
    the question starts, as kvpress's pipeline does."""
    marker = "\x00QUESTION\x00"
    text = tok.apply_chat_template([{"role": "user", "content": context + marker}], tokenize=False,
                                   add_generation_prompt=True)
    pre, post = text.split(marker)
    ids_c = tok(pre, add_special_tokens=False, return_tensors="pt").input_ids
    ids_q = tok(question + post, add_special_tokens=False, return_tensors="pt").input_ids
    return ids_c, ids_q


# --- methods -------------------------------------------------------------------
def make_press(name, ratio):
    import kvpress

    from hashevict.kvpress import HashEvictPress

    return {
        "snapkv": lambda: kvpress.SnapKVPress(compression_ratio=ratio),
        "tova": lambda: kvpress.TOVAPress(compression_ratio=ratio),
        "knorm": lambda: kvpress.KnormPress(compression_ratio=ratio),
        "streaming_llm": lambda: kvpress.StreamingLLMPress(compression_ratio=ratio),
        "expected_attention": lambda: kvpress.ExpectedAttentionPress(compression_ratio=ratio),
        "keydiff": lambda: kvpress.KeyDiffPress(compression_ratio=ratio),
        "random": lambda: kvpress.RandomPress(compression_ratio=ratio, seed=0),
        "hashevict_press": lambda: HashEvictPress(compression_ratio=ratio),
    }[name]()


def run_context(model, method, ratio, ids_c):
    """Prefill the context under `method`; returns (cache, real next position)."""
    import torch
    from transformers import DynamicCache

    from hashevict.transformers import HashEvictCache

    n = ids_c.shape[1]
    with torch.no_grad():
        if method == "full":
            cache = DynamicCache()
            out = model(input_ids=ids_c, past_key_values=cache)
        elif method == "hashevict_cache":
            cache = HashEvictCache(model, budget=max(int(n * (1 - ratio)), 16))
            out = model(input_ids=ids_c, past_key_values=cache)
        else:
            cache = DynamicCache()
            with make_press(method, ratio)(model):
                out = model(input_ids=ids_c, past_key_values=cache)
    return cache, out.logits[:, -1], n


def step(model, cache, ids, pos):
    """A forward of `ids` at real positions pos.. over `cache`."""
    import torch

    from hashevict.transformers import HashEvictCache

    n = ids.shape[1]
    kv = pos if isinstance(cache, HashEvictCache) else cache.get_seq_length()
    with torch.no_grad():
        return model(input_ids=ids, past_key_values=cache, position_ids=torch.arange(pos, pos + n)[None],
                     cache_position=torch.arange(kv, kv + n)).logits


def answer(model, tok, cache, pos, ids_q, max_new=12):
    import torch

    logits = step(model, cache, ids_q, pos)[:, -1]
    pos += ids_q.shape[1]
    out = []
    for _ in range(max_new):
        t = int(logits.argmax(-1))
        if t == tok.eos_token_id:
            break
        out.append(t)
        logits = step(model, cache, torch.tensor([[t]]), pos)[:, -1]
        pos += 1
    return tok.decode(out)


def run_one(model, tok, task, method, ratio, trial, env, length):
    import torch

    if task == "ppl":
        text = Path(env["TEXT2_FILE"]).read_text(errors="replace")
        ids = tok(text[20000 + trial * 40000:20000 + trial * 40000 + 12 * length], return_tensors="pt").input_ids
        ids = ids[:, :length]
        ctx, cont = ids[:, : length * 3 // 4], ids[:, length * 3 // 4:]
        cache, last, pos = run_context(model, method, ratio, ctx)
        logits = step(model, cache, cont, pos)
        lp = torch.log_softmax(torch.cat([last[:, None], logits[:, :-1]], 1).float(), -1)
        nll = -lp.gather(-1, cont[..., None]).mean().item()
        return {"value": math.exp(nll), "tokens": int(cont.shape[1]), "context": int(ctx.shape[1])}
    if task == "passkey":
        context, q, want, depth = passkey_prompt(tok, trial, length)
    else:
        context, q, want, depth = facts_prompt(tok, trial, length, Path(env["TEXT2_FILE"]).read_text(errors="replace"))
    ids_c, ids_q = chat_split(tok, context, q)
    cache, _, pos = run_context(model, method, ratio, ids_c)
    got = answer(model, tok, cache, pos, ids_q)
    return {"value": float(want.lower() in got.lower()), "answer": got, "want": want, "depth": round(depth, 3),
            "context": int(ids_c.shape[1])}


# --- report ----------------------------------------------------------------------
def read(path):
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                rows.append(json.loads(line))
    return rows


def report(rows, out_md, out_png, command):
    from collections import defaultdict

    cells = defaultdict(list)
    for r in rows:
        cells[(r["task"], r["method"], r["ratio"])].append(r["value"])
    methods = ["full"] + PRESSES
    per_cell = max((len(v) for v in cells.values()), default=0)
    lengths = sorted({r.get("length", 1024) for r in rows})
    secs = [r.get("seconds", 0) for r in rows]
    seconds = sum(secs)
    lines = ["# HashEvict side by side with kvpress", "",
             f"Made by `{command}` (bench/kvpress/run.py; raw rows in `kvpress.jsonl` beside this file): "
             f"{len(rows)} runs, at most {per_cell} per cell, prompts of {', '.join(map(str, lengths))} tokens, "
             f"{seconds / 60:.0f} minutes of runs.", ""]
    if per_cell < 8:
        lines += ["**A small sample, not a result.** Cells hold fewer trials than the grid's 8 (or are empty, "
                  "shown as –): the machine was shared when this ran. The full run, `make eval-kvpress`, is "
                  "pending; nothing below supports a ranking.", ""]
    lines += [
        "Protocol. SmolLM2-135M-Instruct (its GGUF through transformers, float32, CPU), greedy. As kvpress's "
        "pipeline does, the chat-templated context is compressed once after its prefill and the question is fed "
        "after it (question-agnostic). A press keeps int(n x (1 - ratio)) entries per layer and KV head, and the "
        "cache grows again with question and answer. hashevict_cache keeps int(n x (1 - ratio)) slots per layer "
        "and KV head for the whole run (question and answer evict too), the stricter setting. hashevict_press: "
        "hash score (16 bits, window 64, pooling 5, 4 sinks).",
        "",
        "Differences from kvpress's leaderboard: RULER at 4k tokens on 8B-class models (Llama-3.1-8B, Qwen3-8B) "
        "with ratios up to 0.875, against a 135M model here on ~1k-token prompts of our own tasks (passkey in "
        "repeated filler, 4 made-up facts in Moby Dick, perplexity on Moby Dick); the leaderboard's "
        "ExpectedAttention runs inside AdaKV (a budget shared across heads), here it runs alone. "
        "DuoAttention (downloaded head patterns) and KVzip-style presses are not run.",
        "",
        "Time. The grid is 28 cells (full, and 9 methods x 3 ratios) x (8 passkey + 8 facts + 4 ppl trials) = "
        "560 prompt runs of ~1k tokens. At the 2.5-3 s per ~1.2k-token prompt measured on an unshared 2-core "
        "machine (shared/notes/compression.md) that is about 30 minutes plus the model load; not yet measured "
        f"end to end. The runs below took {min(secs, default=0):.0f}-{max(secs, default=0):.0f} s each"
        + (" (a machine shared by several sessions)." if max(secs, default=0) > 10 else "."),
        "",
    ]
    for task in TASKS:
        unit = "perplexity (lower is better)" if task == "ppl" else "accuracy, share of trials answered (higher is better)"
        lines += [f"## {task}: {unit}", "", "| method | " + " | ".join(f"ratio {x}" for x in RATIOS) + " | trials |",
                  "|---|" + "---|" * (len(RATIOS) + 1)]
        for m in methods:
            vals, ns = [], []
            for x in RATIOS:
                v = cells.get((task, m, 0.0 if m == "full" else x), [])
                ns.append(len(v))
                vals.append("–" if not v else (f"{sum(v) / len(v):.2f}" if task == "ppl" else f"{int(sum(v))}/{len(v)}"))
            if any(ns):
                m = "full (no compression, every column)" if m == "full" else m
                lines.append(f"| {m} | " + " | ".join(vals) + f" | {max(ns)} |")
        lines.append("")
    out_md.write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, len(TASKS), figsize=(5 * len(TASKS), 4))
    for ax, task in zip(axes, TASKS):
        for m in methods:
            xs, ys = [], []
            for x in RATIOS:
                v = cells.get((task, m, 0.0 if m == "full" else x), [])
                if v:
                    xs.append(x)
                    ys.append(sum(v) / len(v))
            if xs:
                style = "-o" if m.startswith("hashevict") else ("--" if m == "full" else "-.x")
                ax.plot(xs, ys, style, label=m, linewidth=2.5 if m.startswith("hashevict") else 1)
        ax.set_title(task)
        ax.set_xlabel("compression ratio")
        ax.set_ylabel("perplexity" if task == "ppl" else "accuracy")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "docs" / "eval"))
    ap.add_argument("--trials", type=int, default=8, help="prompts per (task, method, ratio); ppl uses min(trials, 4)")
    ap.add_argument("--methods", default=",".join(PRESSES))
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--ratios", default=",".join(map(str, RATIOS)))
    ap.add_argument("--length", type=int, default=1024, help="tokens per prompt (ppl: context 3/4, scored 1/4)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
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
        done = {(r["task"], r["method"], r["ratio"], r["trial"], r.get("length")) for r in read(results)}
        ratios = [float(x) for x in args.ratios.split(",")]
        t0 = time.time()
        model, tok = load_gguf(env["SMOLLM_GGUF"])
        print(f"model loaded in {time.time() - t0:.0f} s", flush=True)
        methods = ["full"] + [m for m in args.methods.split(",") if m]
        for task in args.tasks.split(","):
            n_trials = min(args.trials, 4) if task == "ppl" else args.trials
            for trial in range(n_trials):
                for m in methods:
                    for ratio in ([0.0] if m == "full" else ratios):
                        if (task, m, ratio, trial, args.length) in done:
                            continue
                        t = time.time()
                        r = run_one(model, tok, task, m, ratio, trial, env, args.length)
                        r.update(task=task, method=m, ratio=ratio, trial=trial, length=args.length,
                                 model="SmolLM2-135M-Instruct",
                                 seconds=round(time.time() - t, 2))
                        with results.open("a") as f:
                            f.write(json.dumps(r) + "\n")
                        print(json.dumps(r), flush=True)
    report(read(results), out / "kvpress.md", out / "kvpress.png", command)


if __name__ == "__main__":
    main()
