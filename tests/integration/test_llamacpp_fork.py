"""Per-KV-head HashEvict inside llama.cpp (integrations/llamacpp-fork, docs/llamacpp-fork.md).

Needs `make llamacpp-fork llamacpp-stock` (the patched and the unpatched llama.cpp, each with
its fork-probe) and `make deps`; skips with that message otherwise."""
import concurrent.futures
import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(os.environ.get("HASHEVICT_FORK_OUT", ROOT / "build" / "llamacpp-fork"))
FORK_PROBE = OUT / "fork" / "fork-probe"
STOCK_PROBE = OUT / "stock" / "fork-probe"
SERVER = OUT / "fork" / "build" / "bin" / "llama-server"


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
            pytest.skip(f"{p} missing: run `make llamacpp-fork llamacpp-stock`")


def run(args, timeout=900):
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


# SmolLM2: one plain KV cache, every layer placed. Gemma 3: sliding-window layers (window
# 512) in llama.cpp's own SWA cache, eviction in the global layers 5, 11 and 17 only.
MODELS = {"smollm": "SMOLLM_GGUF", "gemma": "GEMMA_GGUF"}


def probe(binary, *args, model="smollm"):
    d = deps()
    out = run([binary, *args[:1], "--model", d[MODELS[model]], "--text", d["TEXT_FILE"], *args[1:]]).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("model,gen", [("smollm", 100), ("gemma", 40)])  # Gemma: 262k-entry rows
@pytest.mark.parametrize("fa", ["on", "off"])  # V cache in rows, or transposed
def test_budget_covering_every_token_gives_the_stock_logits_bit_for_bit(tmp_path, fa, model, gen):
    need(FORK_PROBE, STOCK_PROBE)
    # 200 prompt tokens and greedy steps; the stock cache and the placer's both hold 512
    # cells, so no eviction happens and attention sees the same cells (Gemma's SWA cache is
    # 512 cells in both).
    common = ["--prompt", "200", "--gen", gen, "--ctx", "512", "--fa", fa]
    r = probe(STOCK_PROBE, "logits", *common, "--out", tmp_path / "stock.bin", model=model)
    probe(FORK_PROBE, "logits", *common, "--out", tmp_path / "fork_off.bin", model=model)
    probe(FORK_PROBE, "logits", *common, "--budget", "512", "--out", tmp_path / "fork_on.bin", model=model)
    stock = (tmp_path / "stock.bin").read_bytes()
    assert len(stock) == (gen + 1) * r["n_vocab"] * 4
    # the patch changes nothing without a placer ...
    assert (tmp_path / "fork_off.bin").read_bytes() == stock
    # ... and with one, per-head rows at the same cells give the same numbers
    assert (tmp_path / "fork_on.bin").read_bytes() == stock


@pytest.mark.parametrize("model,prompt,budget,gen,probe_kind,fa", [
    ("smollm", 48, 64, 300, "query", "on"),  # prompt fits, then 284 evicting steps
    ("smollm", 150, 64, 200, "key", "off"),  # prompt larger than the budget: one token per
                                             # step once full; transposed V cache
    ("gemma", 100, 64, 150, "query", "off"), # global layers only; one KV head (GQA 4:1)
])
def test_every_cached_k_row_is_the_post_rope_k_of_the_position_reported(model, prompt, budget, gen, probe_kind, fa):
    need(FORK_PROBE)
    r = probe(FORK_PROBE, "kvcheck", "--prompt", prompt, "--budget", budget, "--gen", gen, "--probe", probe_kind,
              "--fa", fa, model=model)
    assert r["placement_failures"] == 0
    assert r["decode_steps"] == gen
    assert r["v_transposed"] == (fa == "off")
    # the layers whose K store the graph indexes with the placement op: all of SmolLM2's,
    # Gemma 3's global ones (every sixth); the SWA layers keep llama.cpp's own store
    placed = list(range(r["layers"])) if model == "smollm" else [5, 11, 17]
    assert r["layers_placed"] == placed
    # every (layer, KV head, slot) holds a position, and its K row is that position's
    # post-RoPE K, its V row that position's V
    assert r["rows_checked"] == len(placed) * r["kv_heads"] * budget
    assert r["rows_missing"] == 0
    assert r["rows_mismatched"] == 0
    assert r["v_rows_mismatched"] == 0
    # the decision for position t is made in t's own decode step, one slot per head
    assert r["new_position_not_placed_in_step"] == 0
    assert r["bad_evictions"] == 0
    assert r["evicting_head_steps"] >= len(placed) * r["kv_heads"] * (gen - max(0, budget - prompt))
    if r["kv_heads"] > 1:
        # the heads decide for themselves: their victims differ somewhere
        assert r["victim_differs_from_head0"] > 0


def test_bad_options_are_refused_with_a_message():
    need(SERVER)
    d = deps()
    for args, msg in [
        (["--kv-evict", "nonsense"], "unknown --kv-evict policy"),
        (["--kv-evict", "hash", "--kv-evict-budget", "8"], "must exceed sinks + recent"),
        (["--kv-evict", "hash", "--kv-evict-budget", "64", "--kv-evict-bits", "7"], "HASHEVICT_ERR_INVALID_PARAMS"),
    ]:
        proc = subprocess.run([str(SERVER), "-m", d["SMOLLM_GGUF"], "--port", str(free_port()), *args],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0
        assert msg in proc.stdout + proc.stderr, (args, proc.stderr[-2000:])


# The integration's evaluation program built against the fork (make llamacpp-fork-tools).
EVAL_FORK = Path(os.environ.get("HASHEVICT_EVAL_FORK_BIN", ROOT / "build" / "llamacpp" / "hashevict-eval-fork"))
REFUSAL = "kv_placer: supported for models with one plain KV cache"


def write_tiny_mamba(path):
    """A 2-layer Mamba (recurrent memory, no KV cache) with random weights and a byte vocabulary,
    written with the gguf-py of the llama.cpp source make deps fetched: no fetched model has
    memory the fork refuses since it serves Gemma 3, and a model this small is written in
    milliseconds instead of downloaded. Its outputs mean nothing; it loads and decodes."""
    gguf_py = ROOT / ".cache" / "llama.cpp" / "gguf-py"
    if not gguf_py.is_dir():
        pytest.skip(f"{gguf_py} missing: run `make deps`")
    np = pytest.importorskip("numpy")
    import sys
    sys.path.insert(0, str(gguf_py))
    try:
        import gguf
    finally:
        sys.path.remove(str(gguf_py))
    n_embd, d_inner, d_state, d_conv, dt_rank, n_layer = 64, 128, 16, 4, 4, 2  # llama.cpp: d_inner = 2 n_embd
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    w = gguf.GGUFWriter(str(path), "mamba")
    w.add_context_length(4096)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(0)
    w.add_head_count(0)
    w.add_block_count(n_layer)
    w.add_ssm_conv_kernel(d_conv)
    w.add_ssm_inner_size(d_inner)
    w.add_ssm_state_size(d_state)
    w.add_ssm_time_step_rank(dt_rank)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_ssm_dt_b_c_rms(False)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * len(tokens))
    w.add_token_types([gguf.TokenType.UNKNOWN] + [gguf.TokenType.CONTROL] * 2 + [gguf.TokenType.BYTE] * 256)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    rng = np.random.default_rng(0)

    def tensor(name, *ne, value=None):  # ne in ggml's order; numpy's shape is the reverse
        shape = ne[::-1]
        a = np.full(shape, value, np.float32) if value is not None else 0.02 * rng.standard_normal(shape)
        w.add_tensor(name, a.astype(np.float32))

    tensor("token_embd.weight", n_embd, len(tokens))
    tensor("output_norm.weight", n_embd, value=1.0)
    for i in range(n_layer):
        b = f"blk.{i}."
        tensor(b + "attn_norm.weight", n_embd, value=1.0)
        tensor(b + "ssm_in.weight", n_embd, 2 * d_inner)
        tensor(b + "ssm_conv1d.weight", d_conv, d_inner)
        tensor(b + "ssm_conv1d.bias", d_inner, value=0.0)
        tensor(b + "ssm_x.weight", d_inner, dt_rank + 2 * d_state)
        tensor(b + "ssm_dt.weight", dt_rank, d_inner)
        tensor(b + "ssm_dt.bias", d_inner, value=0.0)
        tensor(b + "ssm_a", d_state, d_inner, value=-1.0)
        tensor(b + "ssm_d", d_inner, value=1.0)
        tensor(b + "ssm_out.weight", d_inner, n_embd)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_a_model_without_a_plain_kv_cache_is_refused_with_the_reason(tmp_path):
    """The refusal at context creation, through each program that sets a placer: fork-probe,
    llama-server (--kv-evict) and hashevict-eval-fork (exit status 3, which run_eval.py reads as
    "this runtime refuses this model"). The same model runs without a placer, so the refusal is
    the placer's and not a broken file."""
    need(FORK_PROBE, SERVER)
    d = deps()
    model = tmp_path / "mamba.gguf"
    write_tiny_mamba(model)
    common = ["logits", "--model", model, "--text", d["TEXT_FILE"], "--prompt", 32, "--gen", 4,
              "--out", tmp_path / "logits.bin"]
    plain = run([FORK_PROBE, *common])
    assert json.loads(plain.stdout.strip().splitlines()[-1])["rows"] == 5
    placed = subprocess.run([str(a) for a in [FORK_PROBE, *common, "--ctx", 128, "--budget", 64]],
                            capture_output=True, text=True, timeout=300)
    assert placed.returncode == 1 and REFUSAL in placed.stderr, placed.stderr[-2000:]
    server = subprocess.run([str(SERVER), "-m", str(model), "-c", "256", "-t", "1", "--host", "127.0.0.1",
                             "--port", str(free_port()), "--kv-evict", "hash", "--kv-evict-budget", "64"],
                            capture_output=True, text=True, timeout=120)
    assert server.returncode != 0 and REFUSAL in server.stdout + server.stderr, server.stderr[-2000:]
    if EVAL_FORK.exists():  # make llamacpp-fork-tools; test_fork_eval.py needs it too
        # A short text: the byte vocabulary tokenizes the whole novel slowly (over a minute).
        text = tmp_path / "text.txt"
        text.write_text(Path(d["TEXT_FILE"]).read_text(encoding="utf-8", errors="replace")[:4000], encoding="utf-8")
        ev = [EVAL_FORK, "ppl", "--model", model, "--text", text, "--window", 64, "--score-last", 16]
        full = run([*ev, "--config", "full"])
        assert json.loads(full.stdout.strip().splitlines()[-1])["policy"] == "full"
        refused = subprocess.run([str(a) for a in [*ev, "--config", "policy=hash,keep=0.5,runtime=fork"]],
                                 capture_output=True, text=True, timeout=300)
        assert refused.returncode == 3, refused.stderr[-2000:]
        assert REFUSAL in refused.stderr and "the fork refuses" in refused.stderr


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port, path, body, timeout=300):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, json.loads(resp.read())


@contextlib.contextmanager
def serve(tmp_path, model):
    need(SERVER)
    d = deps()
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    # 2 slots of 512 positions each, 64 KV cells per slot: prompts below overflow the cells;
    # one thread: with two, llama.cpp's OpenMP barriers crawl on a machine with more runnable
    # threads than cores, patched or not (docs/llamacpp-fork.md, "Several threads");
    # one token per ubatch: a prompt read alone would otherwise fill its free cells in one
    # chunk and next to a decoding neighbour one token at a time (the neighbour's cells are
    # full), and a chunked matmul rounds differently from single steps
    proc = subprocess.Popen([str(SERVER), "-m", d[MODELS[model]], "--host", "127.0.0.1", "--port", str(port),
                             "-c", "1024", "--parallel", "2", "-t", "1", "-ub", "1", "--kv-evict", "hash",
                             "--kv-evict-budget", "64"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.time() < deadline, "server did not become healthy"
            time.sleep(0.5)
        yield port, tmp_path / "server.log"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def server(tmp_path):
    with serve(tmp_path, "smollm") as s:
        yield s


STORY = ("Elizabeth walked to Netherfield through the mud to see her sister Jane, who had fallen ill. "
         "Mr. Bingley was kind, his sisters were not, and Mr. Darcy said little but watched her closely. ")


def chat(port, question):
    status, body = post(port, "/v1/chat/completions", {
        "messages": [{"role": "system", "content": "You answer questions about a story."},
                     {"role": "user", "content": STORY * 2 + question}],
        "max_tokens": 24, "temperature": 0, "seed": 1})
    assert status == 200
    return body


def test_server_chat_completion_and_two_sequences_with_their_own_eviction_state(server):
    port, log = server
    qa = "Who was ill?"
    qb = "Describe Mr. Darcy in one sentence."
    a = chat(port, qa)
    msg = a["choices"][0]["message"]["content"]
    assert msg.strip(), a
    # the prompt alone is longer than the 64 cells: eviction ran during the request
    assert a["usage"]["prompt_tokens"] > 64
    b = chat(port, qb)
    # both at once, in two slots (two sequences): each answer is the one it gets alone,
    # so neither sequence's placements touched the other's cells or state
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        fa, fb = pool.submit(chat, port, qa), pool.submit(chat, port, qb)
        ca, cb = fa.result(), fb.result()
    assert ca["choices"][0]["message"]["content"] == msg
    assert cb["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"]
    text = log.read_text()
    assert "--kv-evict: 64 cells per sequence" in text
    assert "hashevict-kv:" not in text and "KV placer failed" not in text, text[-3000:]


def test_server_answers_with_a_sliding_window_model(tmp_path):
    # Gemma 3: the global layers evict within 64 cells, the SWA layers keep their window
    with serve(tmp_path, "gemma") as (port, log):
        a = chat(port, "Who was ill?")
        assert a["choices"][0]["message"]["content"].strip(), a
        assert a["usage"]["prompt_tokens"] > 64
        text = log.read_text()
    assert "--kv-evict: 64 cells per sequence" in text
    assert "hashevict-kv:" not in text and "KV placer failed" not in text, text[-3000:]
