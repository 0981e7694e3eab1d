#!/usr/bin/env python3
"""Quality of KV-cache eviction policies on real models through llama.cpp.

Runs build/llamacpp/hashevict-eval over a grid of (model, task, scenario,
policy, keep ratio), appends every result to <out>/results.jsonl (resumable:
what is already there is skipped), then writes <out>/results.md (tables),
<out>/quality.png (quality vs keep ratio, one line per policy) and
<out>/recall_per_layer.png.

    python3 bench/eval/run_eval.py              # the full evaluation -> docs/eval/
    python3 bench/eval/run_eval.py --quick      # a few minutes, for CI -> build/eval-quick/
    python3 bench/eval/run_eval.py --estimate   # print the time each task should take, run nothing

Texts: Pride and Prejudice (TEXT_FILE) is the development text, the one
policies may be tuned on; Moby Dick (TEXT2_FILE) is held out.

Tasks:
  ppl      perplexity of the last 512 tokens of a 2,048-token window of
           Pride and Prejudice (teacher-forced, 128-token steps)
  ppl2     the same on Moby Dick (held out)
  passkey  a 5-digit key hidden at a depth in repeated filler; 1k/2k/4k
           tokens, greedy answer must contain the key
  facts    4 made-up facts at spread depths of a Moby Dick passage, one of
           them asked; 1k/2k/4k tokens, greedy answer must contain the value
  recall   attention-mass recall per layer: the share of the full-cache
           softmax attention of sampled queries that falls on the positions a
           policy kept (offline replay of the captured post-RoPE Q/K), on
           Pride and Prejudice
Scenarios of passkey and facts: "stream" (the cache is capped while the
prompt is read) and "prefill" (compress after a full-cache prefill that all
configs of a trial share). ppl, ppl2 and recall are streaming.
"""
import argparse
import json
import os
import statistics
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
# Compress after prefill only (the form of the window's score means nothing
# to a streaming step), all with the default 16-bit codes and the pool of 11
# ("hash q/instant" there is the plain mean-cosine form): "hash q/softmax" is
# the window's estimated attention, a softmax per probe over the keys
# (hashevict_compress_form SOFTMAX; the 0.4 candidate, kept as a negative
# result); "hash q/local+trailing" is the cosine form with the LOCAL and
# TRAILING flags (0.6.0), chosen on the development text for both models
# and no better than "hash q/instant" on the held-out cells (docs/eval/README.md,
# "Choosing the compression's form"): kept as a named option, not a default.
PREFILL_POLICIES = {
    "hash q/softmax": "policy=hash,probe=query,score=instant,form=softmax",
    "hash q/local+trailing": "policy=hash,probe=query,score=instant,form=cosine+local+trailing",
}
# Streaming only (issue 11 item 3: the cache capped while the prompt is read;
# compress after prefill replaces the decode scores, so they would repeat
# "hash q/instant" there): the hash policy's streaming options
# (hashevict_params.estimate / .redundancy, include/hashevict.h). "q/logit"
# evicts the smallest estimated attention logit ||q||·||k||·cos(pi·ham/b)/sqrt(d)
# instead of the largest distance; "+red" adds the redundancy term (repeated
# content first) and folds the step scores with the decayed score (EMA, decay
# 0.9), the weight and the fold chosen on the development text
# (docs/eval/streaming-dev.md).
STREAM_REDUNDANCY = 1
STREAM_POLICIES = {
    "hash q/logit": "policy=hash,probe=query,score=instant,estimate=logit",
    "hash q/logit+red": f"policy=hash,probe=query,score=decayed,estimate=logit,redundancy={STREAM_REDUNDANCY}",
}
STREAM_POLICY_TASKS = {"ppl", "ppl2", "passkey", "facts"}
# Policies left out of a (scenario, task) cell so that the whole grid fits
# the hour on this 2-core machine (docs/eval/README.md, "Cost of the run"):
# every cell keeps the paper's score ("hash q/instant"), the candidates and
# the baselines; the score variants that were no candidate in any cell of the
# previous runs (the accumulated and decayed folds alone, the key probe, the
# logit estimate without the redundancy term; their earlier figures are in
# docs/eval/README.md) are measured where they cost little, in the offline
# replay (recall). Compress after prefill: the compression replaces the decode
# scores and no step evicts after it, so the folds would only repeat "hash
# q/instant" there, and the key probe ignores the question.
STREAM_VARIANTS = {"hash q/accumulated", "hash q/decayed", "hash k/instant", "hash q/logit"}
SKIP = {
    ("stream", "ppl"): STREAM_VARIANTS,
    ("stream", "ppl2"): STREAM_VARIANTS,
    ("stream", "passkey"): STREAM_VARIANTS,
    ("stream", "facts"): STREAM_VARIANTS,
    ("prefill", "passkey"): {"hash q/accumulated", "hash q/decayed", "hash k/instant"},
    ("prefill", "facts"): {"hash q/accumulated", "hash q/decayed", "hash k/instant"},
}
# The oracle keeps every key in f32 and computes exact attention in the Go
# engine (no SIMD): affordable offline (recall), not inside 4k-token runs.
ORACLE_TASKS = {"recall"}
KEEPS = [0.3, 0.5, 0.7]
MODELS = {"SmolLM2-135M": "SMOLLM_GGUF", "Gemma3-270M": "GEMMA_GGUF"}
# task -> (hashevict-eval task, deps.env variable of its text or None)
TASKS = {
    "ppl": ("ppl", "TEXT_FILE"),
    "ppl2": ("ppl", "TEXT2_FILE"),
    "passkey": ("passkey", None),
    "facts": ("facts", "TEXT2_FILE"),
    "recall": ("recall", "TEXT_FILE"),
}
RETRIEVAL = {"passkey", "facts"}
# Tables and plot columns, in this order.
VIEWS = [("ppl", "stream"), ("ppl2", "stream"), ("passkey", "stream"), ("passkey", "prefill"),
         ("facts", "stream"), ("facts", "prefill"), ("recall", "stream")]
SCENARIO_TITLE = {"stream": "streaming", "prefill": "compress after prefill"}

# Trials per (model, task, scenario) cell of the full run, chosen so that the
# whole grid fits the hour on this 2-core machine (docs/eval/README.md, "Cost
# of the run"): a streaming trial costs a prefill per config, a prefill
# trial one prefill for all of them.
STREAM_TRIALS = 3
PREFILL_TRIALS = 12


def grid(quick):
    """task -> scenario -> hashevict-eval arguments (--trial-from aside)."""
    if quick:
        ppl = ["--window", "512", "--score-last", "128", "--chunk", "64"]
        ret = ["--lengths", "512", "--trials", "2", "--chunk", "64"]
        return {
            "ppl": {"stream": ppl},
            "ppl2": {"stream": ppl},
            "passkey": {"stream": ret, "prefill": ret},
            "facts": {"stream": ret + ["--facts", "3"], "prefill": ret + ["--facts", "3"]},
            "recall": {"stream": ["--window", "512", "--samples", "16", "--chunk", "64"]},
        }
    ppl = ["--window", "2048", "--score-last", "512", "--chunk", "128"]
    ret = ["--lengths", "1024,2048,4096", "--chunk", "128"]
    stream, prefill = ["--trials", str(STREAM_TRIALS)], ["--trials", str(PREFILL_TRIALS)]
    return {
        "ppl": {"stream": ppl},
        "ppl2": {"stream": ppl},
        "passkey": {"stream": ret + stream, "prefill": ret + prefill},
        "facts": {"stream": ret + stream + ["--facts", "4"], "prefill": ret + prefill + ["--facts", "4"]},
        "recall": {"stream": ["--window", "2048", "--samples", "64", "--chunk", "64"]},
    }


def grid_key(targs):
    """What identifies a cell's protocol in results.jsonl: rows measured with
    other arguments (an older grid) are neither resumed nor reported."""
    return " ".join(targs)


def load_deps():
    cache = Path(os.environ.get("HASHEVICT_CACHE", ROOT / ".cache"))
    env = {}
    for line in (cache / "deps.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k] = v.strip('"')
    return env


def plan(quick, only=None):
    """[(model, task, scenario, args, [(policy label, config spec)])], cheap
    tasks first and the long retrieval runs last."""
    models = ["SmolLM2-135M"] if quick else list(MODELS)
    if quick:
        policies = {k: POLICIES[k] for k in ("hash q/instant", "sink+recent", "oracle")}
        keeps = [0.5]
    else:
        policies, keeps = POLICIES, KEEPS
    g = grid(quick)
    order = [t for t in g if t not in RETRIEVAL] + [t for t in g if t in RETRIEVAL]
    jobs = []
    for task in order:
        if only and task not in only:
            continue
        for scenario, targs in g[task].items():
            for m in models:
                configs = [("full", "full")]
                extra = PREFILL_POLICIES if scenario == "prefill" else {}
                if scenario == "stream" and task in STREAM_POLICY_TASKS and not quick:
                    extra = STREAM_POLICIES
                for pname, spec in {**policies, **extra}.items():
                    if pname == "oracle" and task not in ORACLE_TASKS:
                        continue
                    if not quick and pname in SKIP.get((scenario, task), ()):
                        continue
                    configs += [(pname, f"{spec},keep={keep}") for keep in keeps]
                jobs.append((m, task, scenario, targs, configs))
    return jobs + fork_jobs(quick, only, models)


# --- the per-head fork (integrations/llamacpp-fork, issue 12) ------------------------
# The same driver built against the patched llama.cpp (hashevict-eval-fork, `make
# llamacpp-fork-tools`), where the policy runs per layer and KV head inside llama_decode,
# before attention, in the same step: the same prompts, scoring and grid arguments as the
# token-mode rows (so the same report cells), labels "hash-perhead ...", rows with
# "runtime": "fork". Streaming only: the fork has no compress-after-prefill. No full-cache
# rows of its own: without a placer the fork is bit-identical to unpatched llama.cpp, and the
# full-cache rows are the token-mode group's. The group runs only when the binary exists; a
# model the fork refuses (exit status 3: recurrent, hybrid or MLA memory) is skipped with a
# note, so its rows come by themselves once the fork accepts it (as Gemma 3's did).
EVAL_FORK = Path(os.environ.get("HASHEVICT_EVAL_FORK_BIN", ROOT / "build" / "llamacpp" / "hashevict-eval-fork"))
FORK_POLICIES = {"hash-perhead q/instant": "policy=hash,probe=query,score=instant,runtime=fork"}
FORK_TASKS = ("ppl", "ppl2", "passkey", "facts")
FORK_REFUSED = 3
# Once a sequence's cells are full the fork reads every further prompt token as its own
# decode step (it evicts per token): a 4k-token prompt costs about 10x its token-mode run.
# So the fork reads only the first FORK_STREAM_TRIALS trials of a streaming cell (trial i is
# the same prompt in both groups: 1k and 2k tokens), to keep the group near 10 minutes per
# model.
FORK_STREAM_TRIALS = 2
# With OpenMP's default active wait, ggml's workers spin while the fork's one-task op calls
# into Go, and decode crawls (docs/llamacpp-fork.md): the fork runs with passive waiting.
FORK_ENV = {"OMP_WAIT_POLICY": "passive"}


def is_fork(configs):
    return any("runtime=fork" in spec for _, spec in configs)


def fork_jobs(quick, only, models):
    if not EVAL_FORK.exists():
        return []
    g = grid(quick)
    jobs = []
    for task in FORK_TASKS:
        if (only and task not in only) or "stream" not in g.get(task, {}):
            continue
        for m in models:
            configs = [(p, f"{spec},keep={keep}") for p, spec in FORK_POLICIES.items()
                       for keep in ([0.5] if quick else KEEPS)]
            jobs.append((m, task, "stream", g[task]["stream"], configs))
    return jobs


def fork_trials(targs):
    return min(trials_of(targs), FORK_STREAM_TRIALS)


# Seconds of one fork decode step of one token over `cells` cells (2 threads, passive wait),
# a + b*cells per model: fitted to SmolLM2's wall times at load 8-10 on 2 cores; Gemma's
# (its global layers evict, the others keep their window) is a guess that its first ppl runs
# (at load 10-20) did not contradict.
FORK_STEP_COST = {"SmolLM2-135M": (0.015, 3.5e-5), "Gemma3-270M": (0.030, 7e-5)}


def fork_estimate_s(model, task, targs, configs, first_trial=0):
    """The first keep*n tokens of a prompt go in chunks like a full-cache prefill; every later one
    is a decode step over the full cells."""
    a, b = FORK_STEP_COST.get(model, FORK_STEP_COST["Gemma3-270M"])
    keeps = [float(spec.rsplit("keep=", 1)[1]) for _, spec in configs]
    if task in ("ppl", "ppl2"):
        ns = [int(arg_of(targs, "--window"))]
    else:
        lengths = [int(x) for x in arg_of(targs, "--lengths").split(",")]
        ns = [lengths[t % len(lengths)] for t in range(first_trial, fork_trials(targs))]
    total = 0.0
    for n in ns:
        for k in keeps:
            cells = int(k * n)
            total += prompt_s(model, cells) + (n - cells) * (a + b * cells)
    return total


# --- time estimate -------------------------------------------------------------
# Seconds of one streaming prompt of n tokens (prefill + 8 answer tokens), 2
# threads, as a + b*n + c*n^2 per model: least squares over the streaming
# retrieval rows of the 0.5 protocol (docs/eval/results.jsonl, 1k-4k tokens),
# their CPU time / 2 (two busy threads: the wall time of a quiet machine).
# The constants before (fitted to wall times of an older protocol's runs)
# were half the time a quiet run then took.
PROMPT_COST = {"SmolLM2-135M": (0.44, 2.56e-3, 7.0e-7), "Gemma3-270M": (0.0, 2.35e-3, 0.0)}
# Prefill scenario, per config on top of the shared prefill: restoring the
# state and the compression, in seconds per prompt token, then 9 single-token
# decode steps (CPU time / 2 of the same rows: a mean of 0.53 s per config on
# SmolLM2 and 0.20 s on Gemma at 1k-4k tokens).
PREFILL_CONFIG_COST = 1.0e-4
DECODE_STEP_S = 0.035
RECALL_CONFIG_COST = 3.0  # seconds per config: the offline replay (previous runs: 84 s for 25)


def prompt_s(model, n):
    a, b, c = PROMPT_COST.get(model, PROMPT_COST["Gemma3-270M"])
    return a + b * n + c * n * n


def arg_of(targs, name, default=None):
    return targs[targs.index(name) + 1] if name in targs else default


def estimate_s(model, task, scenario, targs, n_configs, first_trial=0):
    if task in ("ppl", "ppl2"):
        return n_configs * 1.1 * prompt_s(model, int(arg_of(targs, "--window")))
    if task == "recall":
        return prompt_s(model, int(arg_of(targs, "--window"))) + n_configs * RECALL_CONFIG_COST
    lengths = [int(x) for x in arg_of(targs, "--lengths").split(",")]
    trials = int(arg_of(targs, "--trials"))
    total = 0.0
    for t in range(first_trial, trials):
        n = lengths[t % len(lengths)]
        if scenario == "stream":
            total += n_configs * prompt_s(model, n)
        else:
            total += prompt_s(model, n) + n_configs * (PREFILL_CONFIG_COST * n + 9 * DECODE_STEP_S)
    return total


def fmt_min(s):
    return f"{s / 60:.1f} min"


# --- running -------------------------------------------------------------------


def read_rows(results):
    if not results.exists():
        return []
    return [json.loads(line) for line in results.read_text().splitlines() if line.strip()]


def current_rows(rows, quick):
    """The rows of the current grid: an older protocol's rows (other windows,
    trial counts or prompts) stay in the file but count for nothing."""
    g = grid(quick)
    keep = []
    for r in rows:
        sc = r.get("scenario", "stream")
        if r["task"] in g and sc in g[r["task"]] and r.get("grid") == grid_key(g[r["task"]][sc]):
            keep.append(r)
    return keep


def done_rows(rows):
    """(model, task, scenario, config) -> set of trial numbers (0 for non-trial tasks)."""
    done = {}
    for r in rows:
        done.setdefault((r["label_model"], r["task"], r.get("scenario", "stream"), r["config"]), set()).add(
            r.get("trial", 0))
    return done


def trials_of(targs):
    return int(arg_of(targs, "--trials", 1))


def todo_of(job, done):
    m, task, scenario, targs, configs = job
    want = fork_trials(targs) if is_fork(configs) and task in RETRIEVAL else trials_of(targs)
    todo = [(p, s) for p, s in configs if len(done.get((m, task, scenario, s), ())) < want]
    # Resume trial tasks after the last trial every remaining config has.
    first = min((len(done.get((m, task, scenario, s), ())) for _, s in todo), default=0)
    return todo, first


def print_estimate(jobs, done, log):
    total = 0.0
    per_task = {}
    for job in jobs:
        m, task, scenario, targs, _ = job
        todo, first = todo_of(job, done)
        if not todo:
            continue
        est = (fork_estimate_s(m, task, targs, todo, first) if is_fork(todo) else
               estimate_s(m, task, scenario, targs, len(todo), first if task in RETRIEVAL else 0))
        if is_fork(todo):
            scenario += ", per-head fork"
        per_task[(task, scenario)] = per_task.get((task, scenario), 0.0) + est
        total += est
        last = fork_trials(targs) if is_fork(todo) else trials_of(targs)
        print(f"[eval] estimate {m:<13} {task:<8} {scenario:<8} {len(todo):>2} configs"
              + (f", trials {first}-{last - 1}" if task in RETRIEVAL else "") + f": {fmt_min(est)}",
              file=log, flush=True)
    for (task, scenario), est in per_task.items():
        print(f"[eval] estimate {task} ({scenario}), all models: {fmt_min(est)}", file=log, flush=True)
    print(f"[eval] estimate, everything left to run: {fmt_min(total)} (a quiet 2-core machine)", file=log, flush=True)
    return total


def run_jobs(deps, jobs, results, quick, log):
    done = done_rows(current_rows(read_rows(results), quick))
    for job in jobs:
        mname, task, scenario, targs, configs = job
        todo, first = todo_of(job, done)
        if not todo:
            continue
        driver, text_var = TASKS[task]
        fork = is_fork(todo)
        cmd = [str(EVAL_FORK if fork else EVAL), driver, "--model", deps[MODELS[mname]], *targs]
        if text_var:
            cmd += ["--text", deps[text_var]]
        if task in RETRIEVAL:
            cmd += ["--scenario", scenario, "--trial-from", str(first)]
        for _, spec in todo:
            cmd += ["--config", spec]
        names = {s: p for p, s in todo}
        if fork and task in RETRIEVAL:
            cmd += ["--trials", str(fork_trials(targs))]  # the driver takes the last --trials
        est = (fork_estimate_s(mname, task, targs, todo, first) if fork else
               estimate_s(mname, task, scenario, targs, len(todo), first if task in RETRIEVAL else 0))
        t0 = time.time()
        print(f"[eval] {mname} {task} ({scenario}): {len(todo)} configs" + (f" from trial {first}" if first else "")
              + f", estimate {fmt_min(est)}", file=log, flush=True)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, **FORK_ENV} if fork else None)
        trials_done = 0
        for line in proc.stdout:
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            r["task"], r["scenario"] = task, r.get("scenario", scenario)
            key = (mname, task, r["scenario"], r["config"])
            if r.get("trial", 0) in done.get(key, ()):
                continue  # already recorded by an interrupted earlier run
            done.setdefault(key, set()).add(r.get("trial", 0))
            r["label_model"], r["label_policy"], r["grid"] = mname, names[r["config"]], grid_key(targs)
            with results.open("a") as f:
                f.write(json.dumps(r) + "\n")
            if task in RETRIEVAL:
                if r["config"] == todo[-1][1]:
                    trials_done += 1
                    left = (fork_trials(targs) if fork else trials_of(targs)) - first - trials_done
                    spent = time.time() - t0
                    print(f"[eval]   trial {r['trial']} done ({spent:.0f} s; about {spent / trials_done * left:.0f} s "
                          f"for the {left} left)", file=log, flush=True)
            else:
                print(f"[eval]   {r['label_policy']:<20} keep {r['keep']:.1f}: " +
                      (f"ppl {r['ppl']:.3f}" if "ppl" in r else f"recall {r['recall_mean']:.4f}") +
                      f" ({r['seconds']:.0f} s)", file=log, flush=True)
        err = proc.stderr.read()
        if proc.wait() == FORK_REFUSED and fork:
            # llama.cpp's reason, not the model loader's progress dots
            why = [l for l in err.splitlines() if l.strip(". ")] or ["?"]
            print(f"[eval] {mname} {task}: no fork rows, the fork refuses this model: {why[0]}", file=log, flush=True)
            continue
        if proc.returncode != 0:
            raise SystemExit(f"hashevict-eval {driver} failed:\n{err}")
        print(f"[eval] {mname} {task} ({scenario}) done in {time.time() - t0:.0f} s (estimate {est:.0f} s)",
              file=log, flush=True)


# --- tables and plots --------------------------------------------------------------


def value_of(r):
    if "ppl" in r:
        return r["ppl"]
    if "recall_mean" in r:
        return r["recall_mean"]
    return 1.0 if r["correct"] else 0.0


def unique(rows):
    seen, out = set(), []
    for r in rows:
        ident = (r["label_model"], r["task"], r.get("scenario", "stream"), r["config"], r.get("trial", 0))
        if ident not in seen:
            seen.add(ident)
            out.append(r)
    return out


def summarise(rows):
    """(model, task, scenario, policy, keep) -> (value, n)"""
    acc = {}
    for r in rows:
        key = (r["label_model"], r["task"], r.get("scenario", "stream"), r["label_policy"], round(r["keep"], 2))
        s, n = acc.get(key, (0.0, 0))
        acc[key] = (s + value_of(r), n + 1)
    return {k: (s / n, n) for k, (s, n) in acc.items()}


def describe(rows):
    """(task, scenario, model) -> a title built from what the runs recorded."""
    meta = {}
    for r in rows:
        m = meta.setdefault((r["task"], r.get("scenario", "stream"), r["label_model"]), {})
        for field in ("window", "scored", "length", "samples", "depth", "facts"):
            if field in r:
                m.setdefault(field, set()).add(r[field])
    join = lambda xs: "/".join(map(str, sorted(xs)))
    titles = {}
    for (task, scenario, model), m in meta.items():
        if task in ("ppl", "ppl2"):
            text = "Pride and Prejudice (development text)" if task == "ppl" else "Moby Dick (held out)"
            titles[(task, scenario, model)] = (f"Perplexity on {text}, last {join(m['scored'])} tokens of a window "
                                               f"of {join(m['window'])} tokens (lower is better)")
        elif task in RETRIEVAL:
            ls, ds = sorted(m["length"]), sorted(m["depth"])
            what = ("Passkey retrieval in repeated filler" if task == "passkey" else
                    f"Retrieval of one of {join(m['facts'])} facts in a Moby Dick passage")
            titles[(task, scenario, model)] = (f"{what}, {SCENARIO_TITLE[scenario]}: accuracy, prompts of "
                                               f"{ls[0]}-{ls[-1]} tokens, asked depths {ds[0]:.2f}-{ds[-1]:.2f} "
                                               "(higher is better; trials per cell in brackets)")
        else:
            titles[(task, scenario, model)] = (f"Attention-mass recall, mean over layers, {join(m['samples'])} "
                                               f"queries in the second half of a window of {join(m['window'])} tokens "
                                               "of Pride and Prejudice (higher is better)")
    return titles


def policies_of(summary):
    """POLICIES in order, then any other label the rows carry (policies added
    to the grid later)."""
    labels = {k[3] for k in summary} - {"full"}
    return [p for p in POLICIES if p in labels] + sorted(labels - set(POLICIES))


def write_markdown(summary, rows, out, command, results_name):
    models = sorted({k[0] for k in summary})
    keeps = sorted({k[4] for k in summary if k[3] != "full"})
    lines = ["# Eviction quality on real models", "",
             f"Generated by `{command}` from `{results_name}` (one JSON object per run or trial).", ""]
    titles = describe(rows)
    for task, scenario in VIEWS:
        for m in models:
            cells = {k: v for k, v in summary.items() if k[0] == m and k[1] == task and k[2] == scenario}
            if not cells:
                continue
            counted = task in RETRIEVAL
            lines += [f"## {m}: {titles[(task, scenario, m)]}", "",
                      "| policy | " + " | ".join(f"keep {k:.1f}" for k in keeps) + " |",
                      "|---|" + "---|" * len(keeps)]
            full = cells.get((m, task, scenario, "full", 1.0))
            if full:
                fmt = f"{full[0]:.3f}" + (f" ({full[1]})" if counted else "")
                lines.append("| full cache | " + " | ".join(fmt for _ in keeps) + " |")
            for p in policies_of(summary):
                row = []
                for k in keeps:
                    v = cells.get((m, task, scenario, p, k))
                    row.append("—" if v is None else f"{v[0]:.3f}" + (f" ({v[1]})" if counted else ""))
                if any(c != "—" for c in row):
                    lines.append(f"| {p} | " + " | ".join(row) + " |")
            lines.append("")
    lines += depth_tables(rows, summary)
    lines += cost_tables(rows)
    lines += layer_tables(rows)
    (out / "results.md").write_text("\n".join(lines))


def depth_band(d):
    return "shallow" if d < 1 / 3 else "middle" if d < 2 / 3 else "deep"


def depth_tables(rows, summary):
    """Retrieval by depth of the asked needle or fact (thirds of the prompt),
    at the middle keep ratio: where in the context a policy loses it."""
    keeps = sorted({k[4] for k in summary if k[3] != "full"})
    if not keeps:
        return []
    keep = keeps[len(keeps) // 2]
    lines = []
    bands = ("shallow", "middle", "deep")
    for task, scenario in VIEWS:
        if task not in RETRIEVAL:
            continue
        for m in sorted({r["label_model"] for r in rows}):
            sel = [r for r in rows if r["label_model"] == m and r["task"] == task
                   and r.get("scenario", "stream") == scenario and (r["label_policy"] == "full" or
                                                                   abs(r["keep"] - keep) < 1e-6)]
            if not sel:
                continue
            tally = {}
            for r in sel:
                t = tally.setdefault(r["label_policy"], {b: [0, 0] for b in bands})[depth_band(r["depth"])]
                t[0] += bool(r["correct"])
                t[1] += 1
            lines += [f"## {m}: {task}, {SCENARIO_TITLE[scenario]}, by depth of the asked item, keep {keep:.1f} "
                      "(right / trials)", "",
                      "| policy | " + " | ".join(f"{b} (depth {'< 1/3' if b == 'shallow' else '1/3-2/3' if b == 'middle' else '>= 2/3'})"
                                                 for b in bands) + " |",
                      "|---|" + "---|" * len(bands)]
            for p in ["full"] + policies_of(summary):
                if p in tally:
                    lines.append(f"| {'full cache' if p == 'full' else p} | " +
                                 " | ".join(f"{tally[p][b][0]}/{tally[p][b][1]}" for b in bands) + " |")
            lines.append("")
    return lines


def cost_tables(rows):
    """What the run cost, and in the prefill scenario the compression's CPU
    time against the shared prefill's (the issue's target: at most 2 %)."""
    spent, prefilled = {}, set()
    for r in rows:
        k = (r["label_model"], r["task"], r.get("scenario", "stream"))
        spent[k] = spent.get(k, 0.0) + r.get("seconds", 0.0)
        if "prefill_seconds" in r and (k, r["trial"]) not in prefilled:
            prefilled.add((k, r["trial"]))  # one shared prefill per trial
            spent[k] += r["prefill_seconds"]
    prefills = {}
    for r in rows:
        if r.get("scenario") == "prefill" and r["label_policy"] != "full" and r.get("prefill_cpu_seconds"):
            prefills.setdefault((r["label_model"], r["label_policy"]), []).append(
                r["compress_cpu_seconds"] / r["prefill_cpu_seconds"])
    if not spent:
        return []
    lines = ["## Cost of the recorded runs (wall time summed per cell, a trial's shared prefill counted once)", "",
             "| model | task | scenario | minutes |", "|---|---|---|---|"]
    for (m, task, sc), s in sorted(spent.items()):
        lines.append(f"| {m} | {task} | {SCENARIO_TITLE[sc]} | {s / 60:.1f} |")
    lines.append("")
    if prefills:
        lines += ["## Compress after prefill: CPU time of the compression / CPU time of the shared prefill "
                  "(median over trials and keep ratios, with the largest)", "",
                  "| model | policy | median | largest |", "|---|---|---|---|"]
        for (m, p), xs in sorted(prefills.items()):
            lines.append(f"| {m} | {p} | {100 * statistics.median(xs):.2f} % | {100 * max(xs):.2f} % |")
        lines.append("")
    return lines


def per_layer(rows):
    """(model, policy, keep) -> recall per layer"""
    out = {}
    for r in rows:
        if r["task"] == "recall" and r["label_policy"] != "full":
            out[(r["label_model"], r["label_policy"], round(r["keep"], 2))] = r["recall_per_layer"]
    return out


def layer_tables(rows):
    layers = per_layer(rows)
    lines = []
    for m in sorted({k[0] for k in layers}):
        keep = min(k[2] for k in layers if k[0] == m)
        pols = [p for p in POLICIES if (m, p, keep) in layers]
        pols += sorted({k[1] for k in layers if k[0] == m and k[2] == keep} - set(pols))
        n = len(layers[(m, pols[0], keep)])
        lines += [f"## {m}: attention-mass recall per layer at keep {keep:.1f}", "",
                  "| layer | " + " | ".join(pols) + " |", "|---|" + "---|" * len(pols)]
        for il in range(n):
            lines.append(f"| {il} | " + " | ".join(f"{layers[(m, p, keep)][il]:.3f}" for p in pols) + " |")
        lines.append("")
    return lines


def plot(summary, rows, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = sorted({k[0] for k in summary})
    views = [v for v in VIEWS if any(k[1] == v[0] and k[2] == v[1] for k in summary)]
    fig, axes = plt.subplots(len(models), len(views), figsize=(4.2 * len(views), 3.6 * len(models)),
                             squeeze=False)
    ylabel = {"ppl": "perplexity", "ppl2": "perplexity", "passkey": "accuracy", "facts": "accuracy",
              "recall": "attention-mass recall"}
    for i, m in enumerate(models):
        for j, (t, sc) in enumerate(views):
            ax = axes[i][j]
            full = summary.get((m, t, sc, "full", 1.0))
            for p in policies_of(summary):
                pts = sorted((k[4], v[0]) for k, v in summary.items()
                             if k[0] == m and k[1] == t and k[2] == sc and k[3] == p)
                if pts:
                    ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o",
                            linestyle="-" if p.startswith("hash") else "--", label=p)
            if full:
                ax.axhline(full[0], color="black", linewidth=1, label="full cache")
            ax.set_title(f"{m}: {t}" + (f" ({SCENARIO_TITLE[sc]})" if t in RETRIEVAL else ""), fontsize=9)
            ax.set_xlabel("keep ratio")
            ax.set_ylabel(ylabel[t])
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(out / "quality.png", dpi=100)
    plt.close(fig)

    layers = per_layer(rows)
    models = sorted({k[0] for k in layers})
    if not models:
        return
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 3.8), squeeze=False)
    for i, m in enumerate(models):
        keep = min(k[2] for k in layers if k[0] == m)
        ax = axes[0][i]
        for p in sorted({k[1] for k in layers if k[0] == m and k[2] == keep},
                        key=lambda p: (p not in POLICIES, list(POLICIES).index(p) if p in POLICIES else 0, p)):
            ax.plot(layers[(m, p, keep)], marker=".", linestyle="-" if p.startswith("hash") else "--", label=p)
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
    ap.add_argument("--quick", action="store_true", help="a few minutes: SmolLM2, short prompts, 3 policies")
    ap.add_argument("--out", type=Path, help="output folder (docs/eval, or build/eval-quick with --quick)")
    ap.add_argument("--tasks", help="comma-separated subset of " + ",".join(TASKS))
    ap.add_argument("--estimate", action="store_true", help="print the time estimate of what is left, run nothing")
    ap.add_argument("--report-only", action="store_true", help="rewrite results.md and the plots only")
    ap.add_argument("--fork-only", action="store_true", help="run the per-head fork's group (hashevict-eval-fork; make eval-fork), which the default run leaves out")
    ap.add_argument("--scenario", choices=sorted(SCENARIO_TITLE), help="run only this scenario's jobs")
    a = ap.parse_args()
    out = a.out or (ROOT / ("build/eval-quick" if a.quick else "docs/eval"))
    results = out / "results.jsonl"
    only = set(a.tasks.split(",")) if a.tasks else None
    if only and not only <= set(TASKS):
        raise SystemExit(f"unknown task(s) {sorted(only - set(TASKS))}; tasks: {', '.join(TASKS)}")
    command = "python3 bench/eval/run_eval.py" + (" --quick" if a.quick else "")
    # The fork's group is its own command (make eval-fork): it needs the
    # patched llama.cpp (~15 min to build) and ~35 min to run, which the
    # hour of `make eval` has no room for. Its rows join the same report.
    jobs = [j for j in plan(a.quick, only) if is_fork(j[4]) == a.fork_only]
    if a.scenario:
        jobs = [j for j in jobs if j[2] == a.scenario]
    if a.estimate:
        print_estimate(jobs, done_rows(current_rows(read_rows(results), a.quick)), sys.stdout)
        return
    out.mkdir(parents=True, exist_ok=True)
    if not a.report_only:
        if not EVAL.exists():
            raise SystemExit(f"{EVAL} missing: run `make llamacpp` first")
        deps = load_deps()
        missing = [v for v in ["TEXT2_FILE"] if v not in deps]
        if missing:
            raise SystemExit(f"deps.env lacks {missing}: run `make deps` (scripts/fetch-deps.sh) again")
        print_estimate(jobs, done_rows(current_rows(read_rows(results), a.quick)), sys.stderr)
        t0 = time.time()
        run_jobs(deps, jobs, results, a.quick, sys.stderr)
        print(f"[eval] all done in {time.time() - t0:.0f} s", file=sys.stderr)
    all_rows = read_rows(results)
    rows = unique(current_rows(all_rows, a.quick))
    if len(rows) < len(all_rows):
        print(f"[eval] report: {len(all_rows) - len(rows)} rows of {results.name} are duplicates or from another "
              "grid (older protocol) and are left out", file=sys.stderr)
    if not rows:
        raise SystemExit(f"no results of the current grid in {results}")
    summary = summarise(rows)
    write_markdown(summary, rows, out, command, results.name)
    plot(summary, rows, out)
    print(f"wrote {out / 'results.md'}, {out / 'quality.png'} and {out / 'recall_per_layer.png'}")


if __name__ == "__main__":
    main()
