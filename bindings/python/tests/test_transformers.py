"""hashevict.transformers.HashEvictCache: a transformers Cache in slot mode.

Skipped (loudly, with -rs) without torch and transformers. The tiny random
Llama tests need nothing else; the SmolLM2 test needs the GGUF model that
`make deps` fetches (SMOLLM_GGUF, from .cache/deps.env or the environment).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import hashevict

torch = pytest.importorskip("torch", reason="torch is not installed: the transformers cache tests are SKIPPED")
transformers = pytest.importorskip(
    "transformers", reason="transformers is not installed: the transformers cache tests are SKIPPED"
)
from hashevict.transformers import HashEvictCache  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]


def deps_env(name):
    if os.environ.get(name):
        return os.environ[name]
    env = Path(os.environ.get("HASHEVICT_CACHE", ROOT / ".cache")) / "deps.env"
    if env.is_file():
        for line in env.read_text().splitlines():
            if line.startswith(name + "="):
                return line.split("=", 1)[1].strip().strip('"')
    return None


@pytest.fixture(scope="module")
def tiny():
    """A random 3-layer Llama with GQA (4 query heads, 2 KV heads)."""
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    m = transformers.LlamaForCausalLM(cfg).eval()
    return m


def prompt(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 97, (1, n), generator=g)


def greedy(model, ids, cache, steps):
    with torch.no_grad():
        return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), past_key_values=cache,
                              max_new_tokens=steps, do_sample=False, min_new_tokens=steps, pad_token_id=0)


def replay(records, params, chunk):
    """The same Q/K through a fresh C engine, chunked as the cache documents
    (decode: one place; prefill: `chunk` tokens per call, halved on
    ChunkTooLarge). Returns the engine (its sequence 0 holds the slots)."""
    p = params
    eng = hashevict.Engine(mode="slot", policy=p.policy, probe=p.probe, score=p.score, n_layers=p.n_layers,
                           n_kv_heads=p.n_kv_heads, n_q_heads=p.n_q_heads, head_dim=p.head_dim, budget=p.budget,
                           hash_bits=p.hash_bits, n_sink=p.n_sink, n_recent=p.n_recent, seed=p.seed, decay=p.decay)
    seq = eng.sequence(0)
    for layer, q, k, p0 in records:
        n = k.shape[2]
        qn = q[0].transpose(0, 1).float().numpy() if q is not None else None  # [n, q_heads, dim]
        kn = k[0].transpose(0, 1).float().numpy()
        start, step = 0, (1 if n == 1 else chunk)
        while start < n:
            c = min(step, n - start)
            try:
                seq.place(layer, None if qn is None else qn[start:start + c], kn[start:start + c],
                          np.arange(p0 + start, p0 + start + c))
            except hashevict.ChunkTooLarge:
                step = max(1, c // 2)
                continue
            start += c
    return eng, seq


def check_against_engine(cache, chunk):
    """Slot-by-slot: the cache's engine and a replay engine hold the same
    positions, and the K stored in each slot is the recorded key of the
    position the replay says is there."""
    eng, seq = replay(cache.records, cache.engine.params, chunk)
    keys_at = {}  # (layer, position) -> [kv_heads, dim]
    for layer, _, k, p0 in cache.records:
        for i in range(k.shape[2]):
            keys_at[(layer, p0 + i)] = k[0, :, i]
    compared = 0
    for layer, lay in enumerate(cache.layers):
        for h in range(cache.n_kv_heads):
            want = seq.slot_positions(layer, h)
            got = cache.seqs[0].slot_positions(layer, h)
            assert np.array_equal(got, want), (layer, h)
            for s, pos in enumerate(want):
                if pos >= 0:
                    assert torch.equal(lay.keys[0, h, s].float(), keys_at[(layer, int(pos))][h].float()), (layer, h, s)
                    compared += 1
    eng.close()
    return compared


def test_without_eviction_matches_dynamic_cache(tiny):
    """A budget larger than the whole run evicts nothing: the tokens and the
    logits are those of transformers' DynamicCache (masks, offsets and
    positions are right)."""
    ids = prompt(40)
    want = greedy(tiny, ids, transformers.DynamicCache(), 20)
    cache = HashEvictCache(tiny, budget=128, n_sink=4, n_recent=10)
    got = greedy(tiny, ids, cache, 20)
    assert torch.equal(got, want)
    assert cache.engine.stats().evictions == 0
    with torch.no_grad():  # a second prefill chunk after the first: the causal offset must hold
        c1, d1 = HashEvictCache(tiny, budget=128), transformers.DynamicCache()
        for part in (ids[:, :25], ids[:, 25:]):
            a = tiny(input_ids=part, past_key_values=c1).logits
            b = tiny(input_ids=part, past_key_values=d1).logits
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [1, 9])
def test_forward_after_eviction_attends_to_the_kept_slots(tiny, n):
    """After evictions, a forward of n tokens computes what a plain cache
    holding only the kept K/V computes, with the real positions for RoPE:
    the mask offsets are right. A prefill chunk (n > 1) attends over the 20
    slots kept before it; a decode step (n = 1) over the 19 slots left after
    its eviction (the paper: evict, then attend)."""
    ids = prompt(60, seed=4)
    cache = HashEvictCache(tiny, budget=20, n_sink=2, n_recent=3)
    with torch.no_grad():
        tiny(input_ids=ids[:, :50], past_key_values=cache)
        before = [(lay.keys.clone(), lay.values.clone()) for lay in cache.layers]
        got = tiny(input_ids=ids[:, 50:50 + n], past_key_values=cache).logits
        ref = transformers.DynamicCache()
        for i, (k, v) in enumerate(before):
            if n == 1:  # keep, per head, the slots the new token did not take
                keep = torch.stack([torch.from_numpy(np.nonzero(cache.seqs[0].slot_positions(i, h) != 50)[0])
                                    for h in range(k.shape[1])])
                assert keep.shape == (2, 19)
                k = torch.stack([k[0, h, keep[h]] for h in range(2)])[None]
                v = torch.stack([v[0, h, keep[h]] for h in range(2)])[None]
            ref.update(k, v, i)
        kept = ref.get_seq_length()
        want = tiny(input_ids=ids[:, 50:50 + n], past_key_values=ref, position_ids=torch.arange(50, 50 + n)[None],
                    cache_position=torch.arange(kept, kept + n)).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk", [1, 5, 16])
def test_decisions_equal_the_engine(tiny, chunk):
    ids = prompt(70, seed=2)
    cache = HashEvictCache(tiny, budget=24, n_sink=2, n_recent=4, hash_bits=32, prefill_chunk=chunk, record=True)
    greedy(tiny, ids, cache, 30)
    lay = cache.layers[0]
    assert lay.keys.shape == (1, 2, 24, 16) and lay.values.shape == (1, 2, 24, 16)  # memory is the budget
    assert cache.get_seq_length() == 70 + 30 - 1  # the last generated token is never fed back
    st = cache.engine.stats()
    assert st.evictions == 3 * 2 * (70 + 29 - 24)  # every layer and head, once per token past the budget
    assert check_against_engine(cache, chunk) == 3 * 2 * 24


def test_decode_evicts_before_attention(tiny):
    """A decode step attends over the budget slots with the new key in the
    slot the engine chose: the returned keys hold it, the victim is gone."""
    cache = HashEvictCache(tiny, budget=12, n_sink=1, n_recent=2, record=True)
    with torch.no_grad():
        tiny(input_ids=prompt(30), past_key_values=cache)
        before = cache.seqs[0].slot_positions(1, 0).copy()
        out = {}
        # The slots as attention saw them (a hook returning None changes nothing).
        hook = tiny.model.layers[1].self_attn.register_forward_hook(
            lambda m, a, o: out.update(k=cache.layers[1].keys.clone()))
        try:
            tiny(input_ids=prompt(1, seed=9), past_key_values=cache)
        finally:
            hook.remove()
    after = cache.seqs[0].slot_positions(1, 0)
    changed = np.nonzero(after != before)[0]
    assert changed.size == 1 and after[changed[0]] == 30 and before[changed[0]] not in after
    layer, _, k, p0 = cache.records[-2]  # layer 1 of the decode step (layer 2 is the last record)
    assert layer == 1 and p0 == 30
    assert torch.equal(out["k"][0, 0, changed[0]], k[0, 0, 0])


def test_captured_query_is_the_attended_query(tiny):
    """The query the cache hashes is the post-RoPE query the attention
    function receives."""
    seen = []

    def recording_sdpa(module, query, key, value, attention_mask, **kw):
        seen.append((module.layer_idx, query.detach().clone()))
        return transformers.integrations.sdpa_attention.sdpa_attention_forward(module, query, key, value,
                                                                                  attention_mask, **kw)

    transformers.AttentionInterface.register("hashevict_test_recording", recording_sdpa)
    transformers.AttentionMaskInterface.register("hashevict_test_recording",
                                                 transformers.masking_utils.sdpa_mask)
    tiny.set_attn_implementation("hashevict_test_recording")
    try:
        cache = HashEvictCache(tiny, budget=16, n_sink=1, n_recent=2, record=True)
        greedy(tiny, prompt(20), cache, 5)
    finally:
        tiny.set_attn_implementation("sdpa")
    assert len(seen) == len(cache.records) == 3 * 5
    for (layer, q), (rlayer, rq, _, _) in zip(seen, cache.records):
        assert layer == rlayer and torch.equal(q, rq)


def test_key_probe_needs_no_query(tiny):
    cache = HashEvictCache(tiny, budget=16, probe="key", n_sink=1, n_recent=2, record=True)
    greedy(tiny, prompt(30), cache, 4)
    assert all(q is None for _, q, _, _ in cache.records)
    assert check_against_engine(cache, 16) == 3 * 2 * 16


def test_refusals(tiny):
    cache = HashEvictCache(tiny, budget=16, n_sink=1, n_recent=2)
    k = torch.randn(1, 2, 3, 16)
    with pytest.raises(hashevict.Unsupported, match="post-RoPE query was not captured"):
        cache.update(k, k, 0)  # no attention forward ran: no query
    with pytest.raises(hashevict.InvalidArgument, match="prefill_chunk"):
        HashEvictCache(tiny, budget=16, prefill_chunk=0)
    with pytest.raises(hashevict.InvalidParams):
        HashEvictCache(tiny, budget=4)  # not above n_sink + n_recent
    cache = HashEvictCache(tiny, budget=16, n_sink=1, n_recent=2)
    greedy(tiny, prompt(20), cache, 2)
    with pytest.raises(hashevict.Unsupported, match="beam search"):
        cache.reorder_cache(torch.tensor([0]))


def test_smollm2_gguf_decisions_equal_the_engine():
    """A real model (SmolLM2-135M-Instruct from its GGUF, offline): Q/K
    captured during generate, replayed through the C engine, slot by slot."""
    path = deps_env("SMOLLM_GGUF")
    text = deps_env("TEXT_FILE")
    if not path or not Path(path).is_file() or not text or not Path(text).is_file():
        pytest.skip("SMOLLM_GGUF / TEXT_FILE not fetched (make deps): the real-model cache test is SKIPPED")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from hashevict.models import load_gguf

    model, tok = load_gguf(path)
    words = Path(text).read_text(errors="replace").split()[2000:2200]
    ids = tok(" ".join(words), return_tensors="pt").input_ids[:, :160]
    cache = HashEvictCache(model, budget=64, record=True, prefill_chunk=8)
    out = greedy(model, ids, cache, 8)
    assert out.shape[1] == 168
    assert cache.layers[0].keys.shape == (1, model.config.num_key_value_heads, 64, model.config.head_dim)
    n = model.config.num_hidden_layers * model.config.num_key_value_heads * 64
    assert check_against_engine(cache, 8) == n


def test_gemma3_tokenizer_rebuilt_from_the_gguf():
    """transformers 5.2's GGUF conversion of Gemma 3's tokenizer is wrong
    (near character-level pieces, no <bos>); hashevict.models rebuilds it.
    Slow (minutes: the GGUF's 262k-piece vocabulary is parsed in Python), so
    it runs only with HASHEVICT_TEST_GEMMA=1."""
    if os.environ.get("HASHEVICT_TEST_GEMMA") != "1":
        pytest.skip("set HASHEVICT_TEST_GEMMA=1 to run the Gemma 3 tokenizer test (minutes): SKIPPED")
    path = deps_env("GEMMA_GGUF")
    if not path or not Path(path).is_file():
        pytest.skip("GEMMA_GGUF not fetched (make deps): SKIPPED")
    from hashevict.models import gemma_tokenizer

    tok = gemma_tokenizer(path)
    assert tok("The capital of France is").input_ids == [2, 818, 5279, 529, 7001, 563]
    s = "Hello world, naïve café 123!\n\nNew paragraph  two spaces."
    assert tok.decode(tok(s).input_ids, skip_special_tokens=True) == s
