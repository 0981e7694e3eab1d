"""hashevict.kvpress.HashEvictPress against kvpress (skipped, loudly with
-rs, without torch, transformers and kvpress)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed: the kvpress tests are SKIPPED")
transformers = pytest.importorskip("transformers", reason="transformers is not installed: the kvpress tests are SKIPPED")
kvpress = pytest.importorskip("kvpress", reason="kvpress is not installed: the kvpress tests are SKIPPED")

from hashevict import reference as ref  # noqa: E402
from hashevict.kvpress import HashEvictPress, hamming_scores  # noqa: E402


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
