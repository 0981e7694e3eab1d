"""The per-head fork in the evaluation and the main job: hashevict-eval-fork and
hashevict-run-fork (the integration's programs built against the patched llama.cpp),
config runtime=fork / --runtime fork, and run_eval.py's fork group.

Needs `make deps llamacpp llamacpp-fork-tools`; skips with that message otherwise."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("HASHEVICT_BUILD", ROOT / "build")) / "llamacpp"
EVAL = Path(os.environ.get("HASHEVICT_EVAL_BIN", BIN / "hashevict-eval"))
EVAL_FORK = Path(os.environ.get("HASHEVICT_EVAL_FORK_BIN", BIN / "hashevict-eval-fork"))
RUN_FORK = Path(os.environ.get("HASHEVICT_RUN_FORK_BIN", BIN / "hashevict-run-fork"))
# OpenMP's active wait makes the fork crawl with 2 threads (docs/llamacpp-fork.md).
ENV = {**os.environ, "OMP_WAIT_POLICY": "passive"}


def deps():
    env = {}
    path = ROOT / ".cache" / "deps.env"
    if not path.exists():
        pytest.skip("run `make deps` first")
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k] = v.strip('"')
    return env


def need(*paths):
    for p in paths:
        if not p.exists():
            pytest.skip(f"{p} missing: run `make llamacpp llamacpp-fork-tools`")


def run(args, timeout=900):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=ENV)


def rows_of(proc):
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_fork_rows_evict_per_head_with_the_same_policies():
    need(EVAL_FORK)
    d = deps()
    proc = run([EVAL_FORK, "ppl", "--model", d["SMOLLM_GGUF"], "--text", d["TEXT_FILE"], "--window", 512,
                "--score-last", 128, "--chunk", 64, "--config", "full",
                "--config", "policy=sink-recent,keep=0.5", "--config", "policy=sink-recent,keep=0.5,runtime=fork",
                "--config", "policy=hash,keep=0.5,runtime=fork"])
    full, sr_token, sr_fork, hash_fork = rows_of(proc)
    assert "runtime" not in full and "runtime" not in sr_token
    assert sr_fork["runtime"] == "fork" and hash_fork["runtime"] == "fork"
    for r in (sr_fork, hash_fork):
        assert r["policy"] in ("sink-recent", "hash") and r["max_held"] == 256  # the budget, every head
    # The fork really evicts: sink+recent loses what it loses in token mode (about 6 % of
    # perplexity here), and keeps the same positions but for the timing (token mode drops after
    # each 64-token step, the fork before every token), so the two agree closely.
    assert sr_token["ppl"] > 1.02 * full["ppl"]
    assert abs(sr_fork["ppl"] / sr_token["ppl"] - 1) < 0.01, (sr_fork, sr_token)
    assert hash_fork["ppl"] != full["ppl"] and 1 < hash_fork["ppl"] < 1000


def test_gemma3_runs_on_the_fork():
    """Gemma 3 (sliding-window layers) evicts per head in its global layers. The refusal
    path (exit 3 with llama.cpp's reason) is tested on a model the fork cannot serve in
    test_llamacpp_fork.py (test_a_model_without_a_plain_kv_cache_is_refused_with_the_reason)."""
    need(EVAL_FORK)
    d = deps()
    proc = run([EVAL_FORK, "ppl", "--model", d["GEMMA_GGUF"], "--text", d["TEXT_FILE"], "--window", 256,
                "--score-last", 64, "--config", "full", "--config", "policy=hash,keep=0.5,runtime=fork"])
    full, fork = rows_of(proc)
    assert fork["runtime"] == "fork" and "runtime" not in full
    assert 1 < fork["ppl"] < 1000 and fork["ppl"] != full["ppl"]


def test_runtime_fork_is_refused_where_it_cannot_run():
    need(EVAL, EVAL_FORK)
    d = deps()
    stock = run([EVAL, "ppl", "--model", d["SMOLLM_GGUF"], "--config", "policy=hash,runtime=fork"])
    assert stock.returncode == 1 and "needs hashevict-eval-fork" in stock.stderr
    prefill = run([EVAL_FORK, "passkey", "--model", d["SMOLLM_GGUF"], "--scenario", "prefill",
                   "--config", "policy=hash,runtime=fork"])
    assert prefill.returncode == 1 and "stream scenario only" in prefill.stderr
    bad = run([EVAL_FORK, "ppl", "--model", d["SMOLLM_GGUF"], "--config", "policy=hash,runtime=gpu"])
    assert bad.returncode == 1 and "unknown runtime" in bad.stderr


def test_run_eval_fork_group_lands_in_the_report(tmp_path):
    need(EVAL, EVAL_FORK)
    deps()
    env = {**ENV, "HASHEVICT_EVAL_BIN": str(EVAL), "HASHEVICT_EVAL_FORK_BIN": str(EVAL_FORK)}
    proc = subprocess.run([sys.executable, str(ROOT / "bench/eval/run_eval.py"), "--quick", "--fork-only",
                           "--tasks", "ppl", "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "per-head fork" in proc.stderr  # its own line in the estimate
    rows = [json.loads(l) for l in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [(r["label_policy"], r["runtime"], r["policy"], r["keep"]) for r in rows] == [
        ("hash-perhead q/instant", "fork", "hash", 0.5)]
    # The same grid key as the token-mode rows of that cell, so the same report table.
    assert rows[0]["grid"] == "--window 512 --score-last 128 --chunk 64"
    assert "| hash-perhead q/instant |" in (tmp_path / "results.md").read_text()


def test_demo_fork_reports_cells_saved_and_cost(tmp_path):
    need(RUN_FORK)
    d = deps()
    out = tmp_path / "run.json"
    proc = run([RUN_FORK, "--model", d["SMOLLM_GGUF"], "--text", d["TEXT_FILE"], "--prompt", 256, "--scored", 64,
                "--gen", 8, "--keep", 0.5, "--runtime", "fork", "--quiet", "--json", out])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(out.read_text())
    assert r["runtime"] == "fork" and r["placement_failures"] == 0
    assert r["n_ctx_evict"] == r["budget"] == 160 and r["n_ctx_full"] >= 320
    assert r["state_bytes_evict"] < r["state_bytes_full"]
    assert 1 < r["ppl_full"] < 1000 and 1 < r["ppl_evict"] < 1000 and r["ppl_evict"] != r["ppl_full"]
    assert "runtime=fork (per layer and KV head)" in proc.stdout
    assert "per-head placements that failed (their token went to llama.cpp's own cell): 0" in proc.stdout
