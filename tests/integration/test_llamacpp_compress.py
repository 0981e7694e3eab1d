"""Compress after prefill through the real llama.cpp: hashevict-run --mode
compress reads the prompt whole, cuts it to the budget once
(hev_llama_compress), then evicts per step. Checked through its JSON output.

Needs `make deps llamacpp` (the Makefile's test-llamacpp target does it)."""
import math

import pytest

from test_llamacpp import run

PROMPT, SCORED, GEN = 320, 64, 8


@pytest.mark.parametrize("policy,baseline", [("hash", True), ("knorm", False)])
def test_compress_after_prefill(tmp_path, policy, baseline):
    args = ["--prompt", str(PROMPT), "--scored", str(SCORED), "--gen", str(GEN), "--keep", "0.5",
            "--policy", policy, "--mode", "compress", "--window", "16"]
    if not baseline:
        args.append("--no-baseline")
    r, text = run(tmp_path, *args)
    budget = r["budget"]
    assert budget == 192 and r["mode"] == "compress" and r["window"] == 16
    # The prompt was held whole (no eviction while it was read), then every
    # step ends at the budget: all that exceeds it was dropped, the
    # compression's share included.
    assert r["max_held_evict"] == PROMPT
    assert r["positions_dropped"] == PROMPT + SCORED + GEN - budget
    assert r["state_bytes_evict"] > 0
    assert "compress after prefill (window 16, pool 11, cosine)" in text and r["form"] == "cosine"
    assert f"{PROMPT - budget} positions dropped" in text
    assert r["compress_cpu_seconds"] >= 0 and r["prefill_cpu_seconds"] > 0
    assert math.isfinite(r["ppl_evict"])
    if baseline:
        assert r["state_bytes_evict"] < 0.6 * r["state_bytes_full"]
        # A compression that dropped the sinks, the question or every
        # neighbour of what is attended would be far worse (measured ~10 %).
        assert r["ppl_evict"] < 1.5 * r["ppl_full"], text


def test_compress_window_is_checked(tmp_path):
    import subprocess

    from test_llamacpp import RUN, deps

    d = deps()
    proc = subprocess.run([str(RUN), "--model", d["SMOLLM_GGUF"], "--text", d["TEXT_FILE"], "--prompt", "64",
                           "--mode", "compress", "--window", "65"], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "--window" in proc.stderr
    proc = subprocess.run([str(RUN), "--model", d["SMOLLM_GGUF"], "--text", d["TEXT_FILE"], "--mode", "compress",
                           "--form", "cosine+wide"], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "--form: unknown compress form 'cosine+wide'" in proc.stderr
