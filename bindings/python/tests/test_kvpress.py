"""hashevict.kvpress.HashEvictPress against kvpress (skipped, loudly with
-rs, without torch, transformers and kvpress)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed: the kvpress tests are SKIPPED")
transformers = pytest.importorskip("transformers", reason="transformers is not installed: the kvpress tests are SKIPPED")
kvpress = pytest.importorskip("kvpress", reason="kvpress is not installed: the kvpress tests are SKIPPED")

import hashevict  # noqa: E402
from hashevict import reference as ref  # noqa: E402
from hashevict.kvpress import HashEvictPress, HashEvictSnapPress, hamming_scores  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    return transformers.LlamaForCausalLM(cfg).eval()


def compressed(model, press, n=90, seed=5):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 97, (1, n), generator=g)
    cache = transformers.DynamicCache()
    with torch.no_grad(), press(model):
        model(input_ids=ids, past_key_values=cache)
    return cache


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_knorm_harness_equals_kvpress_knorm(tiny, ratio):
    """The press's plumbing, with the Knorm score, keeps exactly the keys
    kvpress's KnormPress keeps, per layer and head, in the same order."""
    ours = compressed(tiny, HashEvictPress(compression_ratio=ratio, scorer="knorm"))
    theirs = compressed(tiny, kvpress.KnormPress(compression_ratio=ratio))
    for i in range(3):
        a, b = ours.layers[i].keys, theirs.layers[i].keys
        assert a.shape == b.shape == (1, 2, int(90 * (1 - ratio)), 16)
        assert torch.equal(a, b) and torch.equal(ours.layers[i].values, theirs.layers[i].values)


def test_hash_scores_equal_the_reference(tiny):
    """Scores without pooling: the mean Hamming distance, in the reference
    model's codes (pure numpy, the library's projection), of each key to the
    window's post-RoPE queries of its group; sinks and window kept."""
    press = HashEvictPress(compression_ratio=0.5, window_size=8, kernel_size=1, n_sink=2, hash_bits=32)
    seen = {}
    orig = press.score

    def spy(module, hidden_states, keys, values, attentions, kwargs):
        s = orig(module, hidden_states, keys, values, attentions, kwargs)
        seen[module.layer_idx] = (keys.clone(), press.window_queries(module, hidden_states, kwargs["position_embeddings"]),
                                  s.clone())
        return s

    press.score = spy
    cache = compressed(tiny, press, n=40)
    eng = next(iter(press._engines.values()))
    for layer, (keys, q, s) in seen.items():
        rt = eng.projection(layer)
        kc = ref.codes(keys[0].transpose(0, 1).numpy(), rt)  # [40, 2, words]
        qc = ref.codes(q[0].transpose(0, 1).numpy(), rt)  # [8, 4, words]
        for h in range(2):
            for i in range(2, 32):
                want = np.mean([int(ref.hamming(kc[i, h], qc[t, g])) for t in range(8) for g in (2 * h, 2 * h + 1)])
                assert s[0, h, i].item() == pytest.approx(-want, abs=1e-5)
        assert (s[0, :, :2] == torch.finfo(torch.float32).max).all() and (s[0, :, 32:] == torch.finfo(torch.float32).max).all()
        kept = cache.layers[layer].keys[0]
        idx = s[0].topk(20, dim=-1).indices
        for h in range(2):
            assert torch.equal(kept[h], keys[0, h, idx[h]])


def test_hamming_scores_group_mapping():
    kc = np.array([[[0b1011], [0]]], np.uint64)  # one key, 2 kv heads
    qc = np.array([[[0b0001], [0b1111], [0], [0]]], np.uint64)  # one probe, 4 q heads, group 2
    assert hamming_scores(kc, qc, 2).tolist() == [[(2 + 1) / 2], [0.0]]


def test_press_in_kvpress_pipeline_shape(tiny):
    cache = compressed(tiny, HashEvictPress(compression_ratio=0.5), n=100)
    assert all(lay.keys.shape[2] == 50 for lay in cache.layers)


def test_bad_arguments():
    with pytest.raises(Exception, match="scorer"):
        HashEvictPress(scorer="nope")
    with pytest.raises(Exception, match="window_size"):
        HashEvictPress(window_size=0)
    with pytest.raises(AssertionError):
        HashEvictPress(compression_ratio=1.0)


# --- HashEvictSnapPress: the C engine's hashevict_compress as a press --------------
def record_rotated_queries(monkeypatch, modeling):
    """The post-RoPE queries the model's attention really computes, per call
    (layer order), taken from ``apply_rotary_pos_emb``: an independent
    source for the press's recomputed window queries."""
    seen = []
    orig = modeling.apply_rotary_pos_emb

    def rec(q, k, *a, **kw):
        out = orig(q, k, *a, **kw)
        seen.append(out[0].detach().clone())
        return out

    monkeypatch.setattr(modeling, "apply_rotary_pos_emb", rec)
    return seen


def spy_keep(press):
    """Wraps press.keep: per layer, the keys it was given, its slots, window."""
    seen = {}
    orig = press.keep

    def keep(module, hidden_states, keys, kwargs):
        slots, w = orig(module, hidden_states, keys, kwargs)
        seen[module.layer_idx] = (keys.detach().clone(), slots.copy(), w)
        return slots, w

    press.keep = keep
    return seen


@pytest.mark.parametrize("ratio,pool,form", [(0.25, 11, "cosine"), (0.5, 0, "distance"), (0.75, 5, "cosine"),
                                            (0.5, 11, "cosine+local+trailing")])
def test_snap_keep_sets_equal_the_c_engine(tiny, monkeypatch, ratio, pool, form):
    """Per layer and KV head, the press keeps exactly what a separate engine's
    Sequence.compress keeps for the same keys and the attention's own
    post-RoPE window queries, which is also what the numpy reference model
    keeps; the cache holds those entries in position order."""
    from transformers.models.llama import modeling_llama

    queries = record_rotated_queries(monkeypatch, modeling_llama)
    press = HashEvictSnapPress(compression_ratio=ratio, window_size=8, pool=pool, form=form, n_sink=3, hash_bits=32,
                               seed=11)
    seen = spy_keep(press)
    n = 90
    cache = compressed(tiny, press, n=n)
    budget = int(n * (1 - ratio))
    assert sorted(seen) == [0, 1, 2] and len(queries) == 3
    with hashevict.Engine(n_layers=3, n_q_heads=4, n_kv_heads=2, head_dim=16, budget=budget, mode="slot", policy="hash",
                          probe="query", n_sink=3, n_recent=0, hash_bits=32, seed=11) as eng:
        for layer, (keys, slots, w) in seen.items():
            assert w == 8
            k = keys[0].transpose(0, 1).contiguous()  # [n, kv, d]
            qw = queries[layer][0, :, -w:].transpose(0, 1).contiguous()  # [w, q_heads, d]
            with eng.sequence(0) as seq:
                direct = np.asarray(seq.compress(layer, qw, k, np.arange(n), n_window=w, pool=pool, form=form))
            assert np.array_equal(direct, slots[0]), f"layer {layer}: press and engine disagree"
            rt = np.asarray(eng.projection(layer))
            kc = ref.codes(k.numpy(), rt)
            for h in range(2):
                probes = ref.codes(qw[:, 2 * h:2 * h + 2].numpy(), rt).reshape(w * 2, -1)
                scores = ref.compress_scores(kc[:, h], probes, 32, pool, form)
                want = ref.compress_keep(np.arange(n), scores, budget, 3, 0, w)
                assert np.array_equal(slots[0][:, h] >= 0, want), f"layer {layer} head {h}: reference disagrees"
                kept = np.flatnonzero(want)
                assert torch.equal(cache.layers[layer].keys[0, h], keys[0, h, kept])


def test_snap_press_window_shrinks_to_fit_the_budget(tiny):
    """Budget 22 < 4 sinks + 64-token window: the window shrinks to 18."""
    press = HashEvictSnapPress(compression_ratio=0.75)
    seen = spy_keep(press)
    cache = compressed(tiny, press, n=90)
    assert all(w == 22 - 4 for _, _, w in seen.values())
    assert all(lay.keys.shape[2] == 22 for lay in cache.layers)


def test_snap_press_batch_rows_are_independent(tiny):
    g = torch.Generator().manual_seed(9)
    ids = torch.randint(3, 97, (2, 70), generator=g)
    both = transformers.DynamicCache()
    with torch.no_grad(), HashEvictSnapPress(compression_ratio=0.5, window_size=8)(tiny):
        tiny(input_ids=ids, past_key_values=both)
    for row in range(2):
        one = transformers.DynamicCache()
        with torch.no_grad(), HashEvictSnapPress(compression_ratio=0.5, window_size=8)(tiny):
            tiny(input_ids=ids[row:row + 1], past_key_values=one)
        for layer in range(3):
            torch.testing.assert_close(both.layers[layer].keys[row], one.layers[layer].keys[0], rtol=1e-5, atol=1e-5)


def test_presses_leave_sliding_layers_whole():
    """Gemma 3 as transformers' GGUF loader builds it (Gemma3ForCausalLM,
    which kvpress does not special-case): sliding-window layers keep their
    window, full-attention layers are compressed."""
    torch.manual_seed(2)
    cfg = transformers.Gemma3TextConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                                        num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=16,
                                        layer_types=["sliding_attention", "full_attention"] * 2)
    model = transformers.Gemma3ForCausalLM(cfg).eval()
    for press in (HashEvictSnapPress(compression_ratio=0.5, window_size=8), HashEvictPress(compression_ratio=0.5, window_size=8)):
        cache = compressed(model, press, n=80)
        assert [lay.keys.shape[2] for lay in cache.layers] == [80, 40, 80, 40]


def test_snap_press_bad_arguments():
    for kw, what in (({"compression_ratio": 1.0}, "compression_ratio"), ({"compression_ratio": -0.1}, "compression_ratio"),
                     ({"window_size": 0}, "window_size"), ({"pool": -1}, "pool"), ({"form": "dot"}, "form"),
                     ({"n_sink": 1.5}, "n_sink"), ({"hash_bits": True}, "hash_bits")):
        with pytest.raises(hashevict.InvalidArgument, match=what):
            HashEvictSnapPress(**kw)
    with pytest.raises(hashevict.InvalidParams):  # the library refuses 7 bits
        compressed(_tiny_llama(), HashEvictSnapPress(compression_ratio=0.5, hash_bits=7), n=30)


def _tiny_llama():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    return transformers.LlamaForCausalLM(cfg).eval()


def _deps_env(name):
    if os.environ.get(name):
        return os.environ[name]
    env = Path(os.environ.get("HASHEVICT_CACHE", Path(__file__).resolve().parents[3] / ".cache")) / "deps.env"
    if env.is_file():
        for line in env.read_text().splitlines():
            if line.startswith(name + "="):
                return line.split("=", 1)[1].strip().strip('"')
    return None


def test_snap_press_on_smollm2_gguf():
    """A real model (SmolLM2-135M-Instruct from its GGUF, offline), the
    question compressed with the context as kvpress's leaderboard does:
    every layer keeps kvpress's count, and at ratio 0.25 the model still
    reads the pass key from the compressed cache."""
    path = _deps_env("SMOLLM_GGUF")
    if not path or not Path(path).is_file():
        pytest.skip("SMOLLM_GGUF not fetched (make deps): the real-model press test is SKIPPED")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from hashevict.models import load_gguf

    model, tok = load_gguf(path)
    filler = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
    parts = [filler] * 20
    parts.insert(6, "The pass key is 73914. Remember it. 73914 is the pass key. ")
    user = ("There is a pass key hidden inside a lot of irrelevant text. Find it and memorize it.\n\n" + "".join(parts)
            + "\n\nWhat is the pass key?")
    text = tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids
    n = ids.shape[1]
    cache = transformers.DynamicCache()
    with torch.no_grad(), HashEvictSnapPress(compression_ratio=0.25)(model):
        logits = model(input_ids=ids, past_key_values=cache, logits_to_keep=1).logits[:, -1]
    assert all(lay.keys.shape[2] == int(n * 0.75) for lay in cache.layers)
    out = []
    with torch.no_grad():
        for i in range(10):
            out.append(int(logits.argmax(-1)))
            logits = model(input_ids=torch.tensor([[out[-1]]]), past_key_values=cache,
                           position_ids=torch.tensor([[n + i]])).logits[:, -1]
    assert "73914" in tok.decode(out)
