#!/usr/bin/env python3
"""Quality of KV-cache eviction policies on real models through llama.cpp.

Runs build/llamacpp/hashevict-eval over a grid of (model, task, policy, keep
ratio), appends every result to <out>/results.jsonl (resumable: configs
already there are skipped), then writes <out>/results.md (tables) and
<out>/quality.png (quality vs keep ratio, one line per policy).

    python3 bench/eval/run_eval.py            # the full evaluation -> docs/eval/
    python3 bench/eval/run_eval.py --quick    # a few minutes, for CI -> build/eval-quick/

Tasks:
  ppl      perplexity of the last 2,048 tokens of an 8,192-token window of
           Pride and Prejudice (teacher-forced, 128-token steps)
  passkey  a 5-digit key hidden at a depth in filler text; 1k/2k/4k tokens,
           depths spread over the context, greedy answer must contain the key
  recall   attention-mass recall per layer: the share of the full-cache
           softmax attention of sampled queries that falls on the positions a
           policy kept (offline replay of the captured post-RoPE Q/K)
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EVAL = Path(os.environ.get("HASHEVICT_EVAL_BIN", ROOT / "build" / "llamacpp" / "hashevict-eval"))

POLICIES = {
    "hash q/instant": "policy=hash,probe=query,score=instant",
    "hash q/accumulated": "policy=hash,probe=query,score=accumulated",
    "hash q/decayed": "policy=hash,probe=query,score=decayed",
    "hash k/instant": "policy=hash,probe=key,score=instant",
    "sink+recent": "policy=sink-recent",
    "knorm": "policy=knorm",
    "random": "policy=random",
    "oracle": "policy=oracle",
}
# The oracle keeps every key in f32 and computes exact attention in the Go
# engine (no SIMD): affordable offline (recall), not inside 8k-token runs.
ORACLE_TASKS = {"recall"}
KEEPS = [0.3, 0.5, 0.7]


def load_deps():
    cache = Path(os.environ.get("HASHEVICT_CACHE", ROOT / ".cache"))
    env = {}
    for line in (cache / "deps.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k] = v.strip('"')
    return env


def plan(quick):
    deps = load_deps()
    models = {"SmolLM2-135M": deps["SMOLLM_GGUF"], "Gemma3-270M": deps["GEMMA_GGUF"]}
    if quick:
        models = {"SmolLM2-135M": deps["SMOLLM_GGUF"]}
        policies = {k: POLICIES[k] for k in ("hash q/instant", "sink+recent", "oracle")}
        keeps = [0.5]
        tasks = {
            "ppl": ["--window", "1024", "--score-last", "256", "--chunk", "64"],
            "passkey": ["--lengths", "512", "--trials", "2", "--chunk", "64"],
            "recall": ["--window", "512", "--samples", "16", "--chunk", "64"],
        }
    else:
        policies, keeps = POLICIES, KEEPS
        tasks = {
            "ppl": ["--window", "8192", "--score-last", "2048", "--chunk", "128"],
            "passkey": ["--lengths", "1024,2048,4096", "--trials", "30", "--chunk", "128"],
            "recall": ["--window", "2048", "--samples", "64", "--chunk", "64"],
        }
    jobs = []
    # Cheap tasks for every model first, the long passkey runs last.
    order = [(m, t) for t in tasks if t != "passkey" for m in models]
    order += [(m, "passkey") for m in models]
    for mname, task in order:
        configs = [("full", "full")]
        for pname, spec in policies.items():
            if pname == "oracle" and task not in ORACLE_TASKS:
                continue
            configs += [(pname, f"{spec},keep={keep}") for keep in keeps]
        jobs.append((mname, models[mname], task, tasks[task], configs))
    return deps, jobs


def done_rows(results):
    """(model, task, config) -> set of trial numbers (0 for non-trial tasks)."""
    done = {}
    if results.exists():
        for line in results.read_text().splitlines():
            r = json.loads(line)
            done.setdefault((r["label_model"], r["task"], r["config"]), set()).add(r.get("trial", 0))
    return done


def trials_of(targs):
    return int(targs[targs.index("--trials") + 1]) if "--trials" in targs else 1


def run_jobs(deps, jobs, results, log):
    done = done_rows(results)
    for mname, path, task, targs, configs in jobs:
        want = trials_of(targs)
        todo = [(p, s) for p, s in configs if len(done.get((mname, task, s), ())) < want]
        if not todo:
            continue
        # Resume trial tasks after the last trial every remaining config has.
        first = min(len(done.get((mname, task, s), ())) for _, s in todo)
        cmd = [str(EVAL), task, "--model", path, "--text", deps["TEXT_FILE"], *targs]
        if task == "passkey":
            cmd += ["--trial-from", str(first)]
        for _, spec in todo:
            cmd += ["--config", spec]
        names = {s: p for p, s in todo}
        t0 = time.time()
        print(f"[eval] {mname} {task}: {len(todo)} configs" + (f" from trial {first}" if first else ""),
              file=log, flush=True)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for line in proc.stdout:
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            if r.get("trial", 0) in done.get((mname, task, r["config"]), ()):
                continue  # already recorded by an interrupted earlier run
            r["label_model"], r["label_policy"] = mname, names[r["config"]]
            with results.open("a") as f:
                f.write(json.dumps(r) + "\n")
            if task == "passkey":
                if r["config"] == todo[-1][1]:
                    print(f"[eval]   trial {r['trial']} done ({time.time() - t0:.0f} s)", file=log, flush=True)
            else:
                print(f"[eval]   {r['label_policy']:<20} keep {r['keep']:.1f}: " +
                      (f"ppl {r['ppl']:.3f}" if task == "ppl" else f"recall {r['recall_mean']:.4f}") +
                      f" ({r['seconds']:.0f} s)", file=log, flush=True)
        err = proc.stderr.read()
        if proc.wait() != 0:
            raise SystemExit(f"hashevict-eval {task} failed:\n{err}")
        print(f"[eval] {mname} {task} done in {time.time() - t0:.0f} s", file=log, flush=True)


def describe(results):
    """(task, model) -> a title built from what that model's runs recorded."""
    meta = {}
    for line in results.read_text().splitlines():
        r = json.loads(line)
        m = meta.setdefault((r["task"], r["label_model"]), {k: set() for k in
                                                            ("windows", "scored", "lengths", "samples", "depths")})
        for k, field in (("windows", "window"), ("scored", "scored"), ("lengths", "length"),
                         ("samples", "samples"), ("depths", "depth")):
            m[k].add(r.get(field))
    join = lambda xs: "/".join(map(str, sorted(xs)))
    titles = {}
    for (task, model), m in meta.items():
        if task == "ppl":
            titles[(task, model)] = (f"Perplexity of the last {join(m['scored'])} tokens of a window of "
                                     f"{join(m['windows'])} tokens (lower is better)")
        elif task == "passkey":
            ls, ds = sorted(m["lengths"]), sorted(m["depths"])
            titles[(task, model)] = (f"Passkey retrieval accuracy, prompts of {ls[0]}-{ls[-1]} tokens, needle "
                                     f"depths {ds[0]:.2f}-{ds[-1]:.2f} of the context (higher is better; "
                                     "trials per cell in brackets)")
        else:
            titles[(task, model)] = (f"Attention-mass recall, mean over layers, {join(m['samples'])} queries in "
                                     f"the second half of a window of {join(m['windows'])} tokens "
                                     "(higher is better)")
    return titles


def summarise(results):
    """(model, task, policy, keep) -> (value, n)"""
    acc, seen = {}, set()
    for line in results.read_text().splitlines():
        r = json.loads(line)
        ident = (r["label_model"], r["task"], r["config"], r.get("trial", 0))
        if ident in seen:
            continue
        seen.add(ident)
        key = (r["label_model"], r["task"], r["label_policy"], round(r["keep"], 2))
        if r["task"] == "ppl":
            v = r["ppl"]
        elif r["task"] == "recall":
            v = r["recall_mean"]
        else:
            v = 1.0 if r["correct"] else 0.0
        s, n = acc.get(key, (0.0, 0))
        acc[key] = (s + v, n + 1)
    return {k: (s / n, n) for k, (s, n) in acc.items()}


def write_markdown(summary, results, out, command):
    models = sorted({k[0] for k in summary})
    keeps = sorted({k[3] for k in summary if k[2] != "full"})
    lines = ["# Eviction quality on real models", "",
             f"Generated by `{command}` from `{results.name}` (one JSON object per run or trial).", ""]
    titles = describe(results)
    for task in ("ppl", "passkey", "recall"):
        for m in models:
            cells = {k: v for k, v in summary.items() if k[0] == m and k[1] == task}
            if not cells:
                continue
            lines += [f"## {m}: {titles[(task, m)]}", "",
                      "| policy | " + " | ".join(f"keep {k:.1f}" for k in keeps) + " |",
                      "|---|" + "---|" * len(keeps)]
            full = cells.get((m, task, "full", 1.0))
            if full:
                fmt = f"{full[0]:.3f}" + (f" ({full[1]})" if task == "passkey" else "")
                lines.append("| full cache | " + " | ".join(fmt for _ in keeps) + " |")
            for p in POLICIES:
                row = []
                for k in keeps:
                    v = cells.get((m, task, p, k))
                    row.append("—" if v is None else f"{v[0]:.3f}" + (f" ({v[1]})" if task == "passkey" else ""))
                if any(c != "—" for c in row):
                    lines.append(f"| {p} | " + " | ".join(row) + " |")
            lines.append("")
    lines += layer_tables(results)
    (out / "results.md").write_text("\n".join(lines))


def per_layer(results):
    """(model, policy, keep) -> recall per layer"""
    rows = {}
    for line in results.read_text().splitlines():
        r = json.loads(line)
        if r["task"] == "recall" and r["label_policy"] != "full":
            rows[(r["label_model"], r["label_policy"], round(r["keep"], 2))] = r["recall_per_layer"]
    return rows


def layer_tables(results):
    rows = per_layer(results)
    lines = []
    for m in sorted({k[0] for k in rows}):
        keep = min(k[2] for k in rows if k[0] == m)
        pols = [p for p in POLICIES if (m, p, keep) in rows]
        n = len(rows[(m, pols[0], keep)])
        lines += [f"## {m}: attention-mass recall per layer at keep {keep:.1f}", "",
                  "| layer | " + " | ".join(pols) + " |", "|---|" + "---|" * len(pols)]
        for il in range(n):
            lines.append(f"| {il} | " + " | ".join(f"{rows[(m, p, keep)][il]:.3f}" for p in pols) + " |")
        lines.append("")
    return lines


def plot(summary, results, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = sorted({k[0] for k in summary})
    tasks = [t for t in ("ppl", "passkey", "recall") if any(k[1] == t for k in summary)]
    fig, axes = plt.subplots(len(models), len(tasks), figsize=(5 * len(tasks), 3.8 * len(models)), squeeze=False)
    ylabel = {"ppl": "perplexity", "passkey": "passkey accuracy", "recall": "attention-mass recall"}
    for i, m in enumerate(models):
        for j, t in enumerate(tasks):
            ax = axes[i][j]
            full = summary.get((m, t, "full", 1.0))
            for p in POLICIES:
                pts = sorted((k[3], v[0]) for k, v in summary.items() if k[0] == m and k[1] == t and k[2] == p)
                if pts:
                    ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o",
                            linestyle="-" if p.startswith("hash") else "--", label=p)
            if full:
                ax.axhline(full[0], color="black", linewidth=1, label="full cache")
            ax.set_title(f"{m}: {t}")
            ax.set_xlabel("keep ratio")
            ax.set_ylabel(ylabel[t])
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(out / "quality.png", dpi=110)
    plt.close(fig)

    rows = per_layer(results)
    models = sorted({k[0] for k in rows})
    if not models:
        return
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 3.8), squeeze=False)
    for i, m in enumerate(models):
        keep = min(k[2] for k in rows if k[0] == m)
        ax = axes[0][i]
        for p in POLICIES:
            if (m, p, keep) in rows:
                ax.plot(rows[(m, p, keep)], marker=".", linestyle="-" if p.startswith("hash") else "--", label=p)
        ax.set_title(f"{m}: recall per layer, keep {keep:.1f}")
        ax.set_xlabel("layer")
        ax.set_ylabel("attention-mass recall")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(out / "recall_per_layer.png", dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few minutes: SmolLM2, short windows, 3 policies")
    ap.add_argument("--out", type=Path, help="output folder (docs/eval, or build/eval-quick with --quick)")
    ap.add_argument("--report-only", action="store_true", help="rewrite results.md and quality.png only")
    a = ap.parse_args()
    out = a.out or (ROOT / ("build/eval-quick" if a.quick else "docs/eval"))
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    command = "python3 bench/eval/run_eval.py" + (" --quick" if a.quick else "")
    if not a.report_only:
        if not EVAL.exists():
            raise SystemExit(f"{EVAL} missing: run `make llamacpp` first")
        deps, jobs = plan(a.quick)
        t0 = time.time()
        run_jobs(deps, jobs, results, sys.stderr)
        print(f"[eval] all done in {time.time() - t0:.0f} s", file=sys.stderr)
    summary = summarise(results)
    write_markdown(summary, results, out, command)
    plot(summary, results, out)
    print(f"wrote {out / 'results.md'}, {out / 'quality.png'} and {out / 'recall_per_layer.png'}")


if __name__ == "__main__":
    main()
