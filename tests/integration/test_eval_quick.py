"""The evaluation's quick mode end to end: real model, every task, the
table and the plots. Needs `make llamacpp` and matplotlib."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_evaluation(tmp_path):
    out = tmp_path / "eval"
    proc = subprocess.run([sys.executable, str(ROOT / "bench/eval/run_eval.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    tasks = {r["task"] for r in rows}
    assert tasks == {"ppl", "passkey", "recall"}
    by = {(r["task"], r["label_policy"]): r for r in rows}
    # Full cache is the reference: recall 1 by definition, the key found.
    assert by[("recall", "full")]["recall_mean"] == 1.0
    # Every eviction policy keeps part of the attention mass, not all of it.
    for p in ("hash q/instant", "sink+recent", "oracle"):
        r = by[("recall", p)]
        assert 0.5 < r["recall_mean"] < 1.0, r
        assert len(r["recall_per_layer"]) == 30
    for r in rows:
        if r["task"] == "ppl":
            assert 1 < r["ppl"] < 1000
            if r["policy"] != "full":
                assert r["max_held"] <= round(r["keep"] * r["window"])
    md = (out / "results.md").read_text()
    assert "| hash q/instant |" in md and "Passkey" in md and "per layer" in md
    for png in ("quality.png", "recall_per_layer.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
