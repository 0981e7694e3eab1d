#!/usr/bin/env python3
"""Decode cost of the patched llama.cpp with eviction against the unpatched build, at the same
cache size: alternating processes (stock, fork, fork, stock, ...), for each thread count in turn
inside every pair, so that load on the machine falls on both sides alike.

stock: a 512-cell cache, prompt 384, then 127 steps (positions 384..510, no eviction possible);
fork:  512 cells chosen by the placer, prompt 512 (full), then 127 evicting steps.
Both attend over 512 cells per step. fork-probe logits reports, for the single-token steps, the
main thread's CPU time, every thread's CPU time, and wall time; each gives a ratio per pair,
stock time / fork time, i.e. fork tokens/s over stock tokens/s (>1: the fork is faster).

With one thread, the main thread's CPU time is the decode's whole cost and is the figure of
record on a loaded machine. With several, it leaves out the workers; process CPU time counts
them, spin-waiting at barriers included (which load inflates on both sides), and wall time is
what a user sees but is only meaningful on an idle machine. All three are printed.

usage: paired_bench.py [--pairs N] [--threads 1 2] [--stock PROBE] [--fork PROBE]
(needs make llamacpp-fork llamacpp-stock, make deps). Prints one JSON object."""
import argparse
import json
import statistics
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "build" / "llamacpp-fork"
METRICS = {"thread_cpu": "decode_cpu_s", "process_cpu": "decode_proc_cpu_s", "wall": "decode_wall_s"}


def deps():
    env = {}
    for line in (ROOT / ".cache" / "deps.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k] = v.strip('"')
    return env


def run(binary, args, threads, tmp):
    d = deps()
    out = subprocess.run([str(binary), "logits", "--model", d["SMOLLM_GGUF"], "--text", d["TEXT_FILE"],
                          "--threads", str(threads), "--out", str(tmp / "logits.bin"), *map(str, args)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def summary(xs):
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return {"median": statistics.median(xs), "q1": q[0], "q3": q[2], "min": min(xs), "max": max(xs)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--gen", type=int, default=127)
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--stock", type=Path, default=OUT / "stock" / "fork-probe")
    ap.add_argument("--fork", type=Path, default=OUT / "fork" / "fork-probe")
    a = ap.parse_args()
    stock_args = ["--ctx", 512, "--prompt", 512 - a.gen - 1, "--gen", a.gen]
    fork_args = ["--ctx", 1024, "--budget", 512, "--prompt", 512, "--gen", a.gen]
    runs = {t: {"stock": [], "fork": []} for t in a.threads}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for i in range(a.pairs):
            for t in a.threads:
                order = [("stock", a.stock, stock_args), ("fork", a.fork, fork_args)]
                if i % 2:
                    order.reverse()
                for name, binary, args in order:
                    runs[t][name].append(run(binary, args, t, tmp))
    result = {"pairs": a.pairs, "steps": a.gen}
    for t, r in runs.items():
        res = {}
        for m, key in METRICS.items():
            st = [x[key] for x in r["stock"]]
            fk = [x[key] for x in r["fork"]]
            res[m] = {"stock_tok_per_s": [round(a.gen / x, 2) for x in st],
                      "fork_tok_per_s": [round(a.gen / x, 2) for x in fk],
                      "ratio_fork_over_stock": summary([s / f for s, f in zip(st, fk)])}
        result[f"threads_{t}"] = res
    print(json.dumps(result))


if __name__ == "__main__":
    main()
