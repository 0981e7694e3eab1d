"""A short real-runtime run: SmolLM2-135M through the prebuilt llama.cpp with
HashEvict deciding evictions, checked through hashevict-run's JSON output.

Needs `make deps llamacpp` (the Makefile's test-llamacpp target does it)."""
import json
import math
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("HASHEVICT_CACHE", ROOT / ".cache"))
# The Makefile's BUILD (build/ unless given), passed on by `make test-llamacpp`.
BIN = Path(os.environ.get("HASHEVICT_BUILD", ROOT / "build")) / "llamacpp"
RUN = BIN / "hashevict-run"


def deps():
    env = {}
    path = CACHE / "deps.env"
    if not path.exists():
        pytest.fail(f"{path} missing: run `make deps` (scripts/fetch-deps.sh) first")
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k] = v.strip('"')
    return env


def run(tmp_path, *args):
    d = deps()
    out = tmp_path / "run.json"
    cmd = [str(RUN), "--model", d["SMOLLM_GGUF"], "--text", d["TEXT_FILE"], "--quiet",
           "--json", str(out), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text()), proc.stdout


@pytest.mark.parametrize("policy,probe", [("hash", "query"), ("hash", "key"), ("sink-recent", "query")])
def test_eviction_caps_the_cache(tmp_path, policy, probe):
    r, text = run(tmp_path, "--prompt", "320", "--scored", "64", "--gen", "8", "--keep", "0.5",
                  "--policy", policy, "--probe", probe)
    budget = r["budget"]
    assert budget == 192
    # The cache never holds more than the budget after a step, and the
    # evicted run really allocated and kept less than the full one.
    assert r["max_held_evict"] <= budget
    assert r["max_held_full"] == 320 + 64 + 8
    assert r["n_ctx_evict"] < r["n_ctx_full"]
    assert r["state_bytes_evict"] < 0.6 * r["state_bytes_full"]
    assert r["positions_dropped"] == 320 + 64 + 8 - budget
    # Quality: finite perplexities, eviction within 50 % of the full cache
    # on this short text (measured ~1-10 %; a broken policy, e.g. one that
    # drops the sinks or recent tokens, is far worse).
    assert math.isfinite(r["ppl_full"]) and math.isfinite(r["ppl_evict"])
    assert r["ppl_evict"] < 1.5 * r["ppl_full"], text
    assert f"probe={probe}" in text


def test_streaming_options_run_through_the_main_job(tmp_path):
    """The streaming option of docs/eval (hashevict_params.estimate and
    .redundancy) reaches the engine from hashevict-run's flags: the cache is
    capped as with the paper's score, and the run reports what it used."""
    r, text = run(tmp_path, "--prompt", "320", "--scored", "64", "--gen", "8", "--keep", "0.5",
                  "--score", "decayed", "--estimate", "logit", "--redundancy", "1")
    assert (r["estimate"], r["redundancy"], r["score"]) == ("logit", 1, "decayed")
    assert "estimate=logit redundancy=1" in text
    assert r["max_held_evict"] <= r["budget"] == 192
    assert r["positions_dropped"] == 320 + 64 + 8 - 192
    assert math.isfinite(r["ppl_evict"]) and r["ppl_evict"] < 1.5 * r["ppl_full"], text


def test_bad_arguments_fail_cleanly(tmp_path):
    d = deps()
    proc = subprocess.run([str(RUN), "--model", d["SMOLLM_GGUF"], "--text", d["TEXT_FILE"], "--bits", "24"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "hash_bits" in proc.stderr
    # Out of the engine's range: refused before the full-cache run, naming the field.
    proc = subprocess.run([str(RUN), "--model", d["SMOLLM_GGUF"], "--text", d["TEXT_FILE"], "--redundancy", "65"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "redundancy" in proc.stderr
    proc = subprocess.run([str(RUN), "--model", d["SMOLLM_GGUF"], "--text", d["TEXT_FILE"], "--estimate", "cosine"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "--estimate" in proc.stderr
    proc = subprocess.run([str(RUN), "--model", "/nonexistent.gguf", "--text", d["TEXT_FILE"]],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "cannot load model" in proc.stderr


def test_attach_chains_the_callers_cb_eval():
    """hev_llama_attach keeps a cb_eval the program had set: the program's
    callback is still asked about every node and handed exactly the nodes it
    asked for, while HashEvict observes its own and caps the cache (the
    checks are in integrations/llamacpp/test_chain_cb.cpp)."""
    d = deps()
    proc = subprocess.run([str(BIN / "hev-llama-test-chain"), d["SMOLLM_GGUF"], d["TEXT_FILE"]],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "chain: OK" in proc.stdout, proc.stdout + proc.stderr
