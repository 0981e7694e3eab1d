#!/usr/bin/env python3
"""Decode cost of the patched llama.cpp with eviction against the unpatched build, at the same
cache size: alternating processes (stock, fork, fork, stock, ...), one thread each, thread CPU
time of the single-token steps (fork-probe logits prints it).

stock: a 512-cell cache, prompt 384, then 127 steps (positions 384..510, no eviction possible);
fork:  512 cells chosen by the placer, prompt 512 (full), then 127 evicting steps.
Both attend over 512 cells per step. Prints JSON: per-pair ratios stock_cpu / fork_cpu (>1:
the fork is faster), their median and quartiles.

usage: paired_bench.py [--pairs N]   (needs make llamacpp-fork llamacpp-stock, make deps)"""
import argparse
import json
import statistics
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "build" / "llamacpp-fork"


def deps():
    env = {}
    for line in (ROOT / ".cache" / "deps.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k] = v.strip('"')
    return env


def run(binary, args, tmp):
    d = deps()
    out = subprocess.run([str(binary), "logits", "--model", d["SMOLLM_GGUF"], "--text", d["TEXT_FILE"],
                          "--threads", "1", "--out", str(tmp / "logits.bin"), *map(str, args)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["decode_cpu_s"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--gen", type=int, default=127)
    a = ap.parse_args()
    stock_args = ["--ctx", 512, "--prompt", 512 - a.gen - 1, "--gen", a.gen]
    fork_args = ["--ctx", 1024, "--budget", 512, "--prompt", 512, "--gen", a.gen]
    ratios, stock_t, fork_t = [], [], []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        for i in range(a.pairs):
            order = [("stock", OUT / "stock" / "fork-probe", stock_args), ("fork", OUT / "fork" / "fork-probe", fork_args)]
            if i % 2:
                order.reverse()
            got = {name: run(b, args, tmp) for name, b, args in order}
            stock_t.append(got["stock"])
            fork_t.append(got["fork"])
            ratios.append(got["stock"] / got["fork"])
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    print(json.dumps({"pairs": a.pairs, "steps": a.gen, "stock_tok_per_cpu_s": [a.gen / x for x in stock_t],
                      "fork_evict_tok_per_cpu_s": [a.gen / x for x in fork_t], "ratio_fork_over_stock": ratios,
                      "median": statistics.median(ratios), "q1": q[0], "q3": q[2],
                      "min": min(ratios), "max": max(ratios)}))


if __name__ == "__main__":
    main()
