"""The side-by-side driver's shared prefill against kvpress's own hooks.

    HASHEVICT_LIBRARY=build/libhashevict.so python3 -m pytest -q bench/kvpress/test_run.py

needs torch, transformers and kvpress (`make test-python` runs it in its venv).
run.py imports hashevict from bindings/python/src, which normally holds no library:
HASHEVICT_LIBRARY names the one to load.

run.py prefills each prompt once and calls every press's ``compress`` on
the recorded layers; these tests check that this leaves the cache kvpress's
hooks leave (same entries, same order), and that the explicit masks for
Gemma 3's mixed cache (compressed full-attention layers, whole sliding
layers) give the model's own logits.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed: SKIPPED")
transformers = pytest.importorskip("transformers", reason="transformers is not installed: SKIPPED")
pytest.importorskip("kvpress", reason="kvpress is not installed: SKIPPED")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402

SHARED = [m for m in run.PRESSES if m != "hashevict_cache"]


@pytest.fixture(scope="module")
def llama():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)
    return transformers.LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def gemma():
    torch.manual_seed(1)
    cfg = transformers.Gemma3TextConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                                        num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=8,
                                        layer_types=["sliding_attention", "full_attention"] * 2,
                                        max_position_embeddings=1024)
    return transformers.Gemma3ForCausalLM(cfg).eval()


def hooked(model, press, ids):
    cache = transformers.DynamicCache()
    with torch.no_grad(), press(model):
        model(input_ids=ids, past_key_values=cache)
    return cache


@pytest.mark.parametrize("method", SHARED)
@pytest.mark.parametrize("ratio", [0.25, 0.75])
def test_shared_prefill_equals_kvpress_hooks(llama, method, ratio):
    """The press sees the first n rows of a longer prefill (the question
    follows): same keys and values kept, in the same order, as when kvpress's
    hook compresses a prefill of those n tokens."""
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 97, (1, 120), generator=g)
    n = 100
    want = hooked(llama, run.make_press(method, ratio), ids[:, :n])
    rec = run.shared_prefill(llama, ids)
    got = run.compressed_cache(llama, rec, run.make_press(method, ratio), n)
    for layer in range(3):
        a, b = got.layers[layer], want.layers[layer]
        assert a.keys.shape == b.keys.shape == (1, 2, int(n * (1 - ratio)), 16)
        # The prefixes' keys agree to rounding (a longer forward); so must the choice.
        torch.testing.assert_close(a.keys, b.keys, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(a.values, b.values, rtol=1e-5, atol=1e-5)


def test_hybrid_masks_give_the_models_logits(gemma):
    """Teacher-forced continuation over a cache rebuilt from the shared
    prefill (whole: no press) equals one forward of the whole sequence, for
    a continuation longer than the sliding window."""
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(3, 97, (1, 40), generator=g)
    n = 25
    with torch.no_grad():
        want = gemma(input_ids=ids).logits[:, n:]
    rec = run.shared_prefill(gemma, ids[:, :n])
    cache = run.compressed_cache(gemma, rec, None, n)
    got = run.step(gemma, cache, ids[:, n:], n)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    # one more token, decode style, after the chunk
    with torch.no_grad():
        want1 = gemma(input_ids=torch.cat([ids, ids[:, :1]], 1)).logits[:, -1]
    torch.testing.assert_close(run.step(gemma, cache, ids[:, :1], 40)[:, -1], want1, rtol=1e-4, atol=1e-4)


def test_compressed_full_layers_stay_causal(gemma):
    """With the full-attention layers compressed, a token of the fed chunk
    must not see the chunk's later tokens: its logits are those of feeding
    the chunk one token at a time."""
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(3, 97, (1, 60), generator=g)
    n = 45
    rec = run.shared_prefill(gemma, ids[:, :n])
    press = run.make_press("knorm", 0.5)
    chunk = run.step(gemma, run.compressed_cache(gemma, rec, press, n), ids[:, n:], n)
    cache = run.compressed_cache(gemma, rec, press, n)
    assert cache.layers[1].keys.shape[2] == int(n * 0.5)  # full layer compressed
    assert cache.layers[0].keys.shape[2] == 7  # sliding layer: its window, whole
    single = torch.cat([run.step(gemma, cache, ids[:, n + i:n + i + 1], n + i) for i in range(ids.shape[1] - n)], 1)
    torch.testing.assert_close(chunk, single, rtol=1e-4, atol=1e-4)
