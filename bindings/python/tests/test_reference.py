"""hashevict.reference against the library: projections, codes, distances,
victims, step by step, on random and adversarial inputs."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from conftest import randn
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import hashevict
from hashevict import reference as ref

BITS = [8, 16, 32, 64, 128, 256]

_engines: dict = {}


def engine_for(dim, bits, seed=0, n_layers=1):
    """Cached engines for the hash-only tests (creating one is cheap, but
    hypothesis makes many examples)."""
    key = (dim, bits, seed, n_layers)
    if key not in _engines:
        _engines[key] = hashevict.Engine(n_layers=n_layers, n_kv_heads=1, head_dim=dim, budget=20, hash_bits=bits, seed=seed)
    return _engines[key]


def f32bits(x):
    return [struct.unpack("<I", struct.pack("<f", float(v)))[0] for v in x]


# -- projections ------------------------------------------------------------
def test_projection_pinned_values():
    # The three values policy/hash_test.go pins for Projection(seed 0, layer 0, dim 16, bits 8).
    assert f32bits(ref.projection(0, 0, 16, 8).ravel()[:3]) == [0x3FA3AA44, 0x3E5B7C19, 0x3E436765]


def test_splitmix_first_outputs():
    # splitmix64 seeded with 0: the published first outputs of the generator.
    assert [int(v) for v in ref.splitmix64(0, 3)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


@given(
    seed=st.integers(0, 2**64 - 1),
    layer=st.integers(0, 3),
    dim=st.sampled_from([1, 3, 16, 17, 64, 100]),
    bits=st.sampled_from(BITS),
)
def test_projection_matches_library(seed, layer, dim, bits):
    eng = engine_for(dim, bits, seed, n_layers=4)
    got = eng.projection(layer)
    want = ref.projection(seed, layer, dim, bits)
    assert got.dtype == want.dtype == np.float32 and got.shape == want.shape == (bits, dim)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


# -- the lane-ordered dot product ---------------------------------------------
@given(
    hnp.arrays(np.float32, st.integers(1, 70), elements=st.floats(-1e3, 1e3, width=32)),
    st.integers(0, 2**32 - 1),
)
def test_vectorised_lane_dot_is_the_scalar_one(x, seed):
    r = np.random.default_rng(seed).standard_normal(x.size).astype(np.float32)
    scalar = ref.lane_dot_scalar(x, r)
    vec = ref.lane_dots(x[None], r[None])[0, 0]
    assert np.array_equal(np.float32(scalar).view(np.uint32), np.float32(vec).view(np.uint32))


def test_lane_order_is_not_plain_order():
    # A case where sequential float32 summation and the 16-lane order differ
    # in sign: the reference must follow the lanes.
    x = np.zeros(17, np.float32)
    r = np.ones(17, np.float32)
    x[0], x[1], x[16] = 1e8, -1e8, 1.0  # lanes: (1e8 + 1) ... then -1e8
    seq = np.float32(0)
    for v in x * r:
        seq = np.float32(seq + v)
    lanes = ref.lane_dot_scalar(x, r)
    assert seq == 1.0 and lanes == 0.0  # 1e8 + 1 rounds to 1e8 in lane 0


# -- codes ----------------------------------------------------------------
finite32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
f16_bits = st.integers(0, 0xFFFF).filter(lambda h: h & 0x7C00 != 0x7C00)  # every finite half, subnormals included
bf16_bits = st.integers(0, 0xFFFF).filter(lambda h: h & 0x7F80 != 0x7F80)


@given(
    dim=st.integers(1, 48),
    bits=st.sampled_from(BITS),
    rows=st.integers(1, 4),
    data=st.data(),
)
def test_codes_f32_any_finite(dim, bits, rows, data):
    x = data.draw(hnp.arrays(np.float32, (rows, 1, dim), elements=finite32))
    eng = engine_for(dim, bits)
    assert np.array_equal(eng.hash(0, x), ref.codes(x, eng.projection(0)))


@given(dim=st.integers(1, 48), bits=st.sampled_from(BITS), data=st.data())
def test_codes_f16_any_finite(dim, bits, data):
    h = data.draw(hnp.arrays(np.uint16, (3, dim), elements=f16_bits))
    x = h.view(np.float16)
    eng = engine_for(dim, bits)
    assert np.array_equal(eng.hash(0, x), ref.codes(x, ref.projection(0, 0, dim, bits)))


@given(dim=st.integers(1, 48), bits=st.sampled_from(BITS), data=st.data())
def test_codes_bf16_any_finite(dim, bits, data):
    h = data.draw(hnp.arrays(np.uint16, (3, dim), elements=bf16_bits))
    eng = engine_for(dim, bits)
    assert np.array_equal(eng.hash(0, hashevict.bf16(h)), ref.codes(hashevict.bf16(h), eng.projection(0)))


def adversarial_rows(dim):
    tiny32 = np.float32(1e-45)  # the smallest f32 subnormal
    rows = {
        "zeros": np.zeros(dim),
        "neg_zeros": -np.zeros(dim),
        "ones": np.ones(dim),
        "alternating": np.resize([1.0, -1.0], dim),
        "huge": np.full(dim, 3e38),  # products overflow to inf, sums to NaN
        "huge_mixed": np.resize([3e38, -3e38, 1.0], dim),
        "max": np.resize([np.finfo(np.float32).max, np.finfo(np.float32).min], dim),
        "tiny_subnormal": np.full(dim, tiny32),
        "subnormals_mixed": np.resize([tiny32, -2 * tiny32, 1e-40], dim),
        "one_hot": np.eye(1, dim, dim // 2)[0],
        "cancel": np.resize([1e8, -1e8, 1.0], dim),
    }
    return {k: np.asarray(v, np.float32) for k, v in rows.items()}


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("dim", [1, 5, 16, 31, 64, 130])
def test_codes_adversarial(dim, bits):
    eng = engine_for(dim, bits)
    rt = eng.projection(0)
    rows = adversarial_rows(dim)
    x = np.stack(list(rows.values()))[:, None, :]
    with np.errstate(all="ignore"):
        assert np.array_equal(eng.hash(0, x), ref.codes(x, rt))
    # zeros: every dot product is ±0, and -0.0 >= 0: all bits set
    words = eng.hash(0, rows["zeros"])
    assert all(int(w) == (1 << min(64, bits - 64 * i)) - 1 for i, w in enumerate(words))


@pytest.mark.parametrize("bits", BITS)
def test_codes_f16_extremes(bits):
    dim = 24
    eng = engine_for(dim, bits)
    specials = np.array(
        [0x0001, 0x8001, 0x03FF, 0x0400, 0x7BFF, 0xFBFF, 0x3C00, 0x0000, 0x8000, 0x0200, 0x8200, 0x7000],
        np.uint16,
    )
    rng = np.random.default_rng(bits)
    x = rng.choice(specials, size=(40, 1, dim)).view(np.float16)
    assert np.array_equal(eng.hash(0, x), ref.codes(x, eng.projection(0)))
    sub = np.full((1, 1, dim), 0x0001, np.uint16).view(np.float16)  # 2^-24 everywhere
    assert np.array_equal(eng.hash(0, sub), ref.codes(np.full((1, 1, dim), 2.0**-24, np.float32), eng.projection(0)))


def test_hamming_and_popcount():
    a = np.array([[0xFFFFFFFFFFFFFFFF, 0]], np.uint64)
    b = np.array([[0, 0]], np.uint64)
    assert ref.hamming(a, b)[0] == 64
    assert ref.distance_sums(a, np.concatenate([a, b]))[0] == 64


# -- steps, one decision at a time ----------------------------------------
def codes_lib(eng, layer, x):
    return eng.hash(layer, x)


@pytest.mark.parametrize("score", ["instant", "accumulated", "decayed"])
@pytest.mark.parametrize("group", [1, 2, 4])
@pytest.mark.parametrize("probe", ["query", "key"])
def test_step_by_step_distances_and_victims(score, group, probe):
    """Each step: the distances the reference computes from its own codes
    equal those computed from the library's codes (hashevict_hash), and
    the library evicts exactly the reference's victims."""
    n_kv, dim, bits = 2, 20, 32
    kw = dict(n_layers=1, n_kv_heads=n_kv, n_q_heads=n_kv * group, head_dim=dim, budget=14, hash_bits=bits,
              n_sink=2, n_recent=3, score=score, probe=probe, seed=11)
    rng = np.random.default_rng(group * 7 + len(score))
    with hashevict.Engine(**kw) as eng, eng.sequence(0) as s:
        model = ref.Reference(**kw)
        model.add(0)
        cached = {h: {} for h in range(n_kv)}  # slot -> library code of the key there
        for t in range(60):
            n = 3 if t % 17 == 5 else 1
            pos = np.arange(t * 4, t * 4 + n)  # gaps between positions are allowed
            q, k = randn(rng, (n, n_kv * group, dim)), randn(rng, (n, n_kv, dim))
            got = s.place(0, q, k, pos)
            want = model.place(0, 0, q, k, pos)
            kc, qc = codes_lib(eng, 0, k), codes_lib(eng, 0, q)
            for h in range(n_kv):
                d = model.last_decisions[h]
                if cached[h]:
                    slots = sorted(cached[h])
                    table = np.stack([cached[h][sl] for sl in slots])
                    probes = kc[:, h] if probe == "key" else qc[:, h * group : (h + 1) * group].reshape(-1, kc.shape[-1])
                    assert np.array_equal(ref.distance_sums(table, probes), d.sums), (t, h)
                assert np.array_equal(got.slots[:, h], want[0][:, h])
                assert np.array_equal(got.evicted[:, h], want[1][:, h])
                for tok in range(n):
                    cached[h][int(got.slots[tok, h])] = kc[tok, h]
                if len(d.victims):
                    assert np.array_equal(got.slots[n - len(d.victims) :, h], d.victims)


def test_ties_go_to_the_lowest_slot():
    """All-equal vectors: every distance ties, so the victim is always the
    lowest evictable slot."""
    kw = dict(n_layers=1, n_kv_heads=1, n_q_heads=2, head_dim=8, budget=12, n_sink=2, n_recent=3)
    v = np.ones((1, 2, 8), np.float32)
    with hashevict.Engine(**kw) as eng, eng.sequence(0) as s:
        model = ref.Reference(**kw)
        model.add(0)
        for t in range(40):
            got = s.place(0, v, v[:, :1], t)
            want = model.place(0, 0, v, v[:, :1], t)
            assert (got.slots == want[0]).all() and (got.evicted == want[1]).all()
            if t >= 12:
                held = s.slot_positions(0, 0)
                lo_slot = min(i for i, p in enumerate(held) if 2 <= p < t - 3 or i == got.slots[0, 0])
                assert got.slots[0, 0] == lo_slot


@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_adversarial_steps(dtype):
    """Zeros, tiny, huge, subnormal and repeated vectors as queries and keys."""
    dim = 16
    kw = dict(n_layers=1, n_kv_heads=2, n_q_heads=4, head_dim=dim, budget=16, hash_bits=16, n_sink=1, n_recent=2,
              score="accumulated")
    rows = list(adversarial_rows(dim).values())
    rng = np.random.default_rng(5)
    npdt = np.float32 if dtype == "f32" else np.float16
    with hashevict.Engine(**kw) as eng, eng.sequence(0) as s, np.errstate(all="ignore"):
        model = ref.Reference(**kw)
        model.add(0)
        for t in range(150):
            pick = lambda n: np.stack([rows[i] for i in rng.integers(0, len(rows), n)])  # noqa: E731
            q = pick(4).reshape(1, 4, dim)
            k = pick(2).reshape(1, 2, dim)
            if npdt is np.float16:
                q, k = q.astype(np.float16), k.astype(np.float16)
                q[~np.isfinite(q)] = 0  # f16 overflow: keep inputs finite
                k[~np.isfinite(k)] = 0
            got = s.place(0, q, k, t)
            want = model.place(0, 0, q, k, t)
            assert (got.slots == want[0]).all() and (got.evicted == want[1]).all(), t


@pytest.mark.parametrize("policy", ["sink_recent", "knorm"])
def test_baselines_slot_mode(policy, rng):
    kw = dict(n_layers=2, n_kv_heads=2, n_q_heads=2, head_dim=8, budget=16, n_sink=2, n_recent=3, policy=policy)
    with hashevict.Engine(**kw) as eng, eng.sequence(0) as s:
        model = ref.Reference(**kw)
        model.add(0)
        for t in range(80):
            n = 4 if t % 9 == 0 else 1
            pos = np.arange(10 * t, 10 * t + n)
            q, k = randn(rng, (n, 2, 8)) * rng.uniform(0.1, 10), randn(rng, (n, 2, 8))
            for layer in range(2):
                got, want = s.place(layer, q, k, pos), model.place(0, layer, q, k, pos)
                assert (got.slots == want[0]).all() and (got.evicted == want[1]).all()


def test_chunk_too_large_agrees(rng):
    kw = dict(n_layers=1, n_kv_heads=1, n_q_heads=1, head_dim=8, budget=12, n_sink=2, n_recent=3)
    with hashevict.Engine(**kw) as eng, eng.sequence(0) as s:
        model = ref.Reference(**kw)
        model.add(0)
        q = randn(rng, (12, 1, 8))
        s.place(0, q, q, np.arange(12))
        model.place(0, 0, q, q, np.arange(12))
        # 10 evictable after a 7-token chunk ending at 18: positions 2..14 minus those >= 15
        big = randn(rng, (11, 1, 8))
        with pytest.raises(hashevict.ChunkTooLarge):
            s.place(0, big, big, np.arange(20, 31))
        with pytest.raises(hashevict.ChunkTooLarge):
            model.place(0, 0, big, big, np.arange(20, 31))
        ok = randn(rng, (10, 1, 8))
        got, want = s.place(0, ok, ok, np.arange(20, 30)), model.place(0, 0, ok, ok, np.arange(20, 30))
        assert (got.slots == want[0]).all() and (got.evicted == want[1]).all()


# -- token mode -------------------------------------------------------------
@pytest.mark.parametrize(
    "policy, score",
    [("hash", "instant"), ("hash", "accumulated"), ("hash", "decayed"), ("sink_recent", "instant"), ("knorm", "instant")],
)
def test_token_mode_matches(policy, score):
    """Token-mode evictions, with layers observing at different times and
    evictions asked with small capacities; totals are float64 sums over
    layers then heads."""
    L, n_kv, g, dim = 3, 2, 2, 12
    kw = dict(mode="token", policy=policy, n_layers=L, n_kv_heads=n_kv, n_q_heads=n_kv * g, head_dim=dim,
              budget=18, hash_bits=16, n_sink=2, n_recent=3, score=score, probe="query", seed=3)
    rng = np.random.default_rng(len(policy) + len(score))
    compared = 0
    with hashevict.Engine(**kw) as eng, eng.sequence(0) as s:
        model = ref.Reference(**kw)
        model.add(0)
        pending = {l: [] for l in range(L)}  # chunks each layer still has to observe
        t = 0
        for step in range(150):
            n = int(rng.integers(1, 6)) if rng.random() < 0.25 else 1
            chunk = (np.arange(t, t + n), randn(rng, (L, n, n_kv * g, dim)), randn(rng, (L, n, n_kv, dim)))
            t += n + int(rng.integers(0, 2))
            for l in range(L):
                pending[l].append(chunk)
            for l in range(L):
                # layer 0 is always up to date, the others lag by a random amount
                keep = 0 if l == 0 else int(rng.integers(0, 2))
                while len(pending[l]) > keep:
                    pos, q, k = pending[l].pop(0)
                    s.observe(l, q[l], k[l], pos)
                    model.observe(0, l, q[l], k[l], pos)
            cap = int(rng.integers(1, 4)) if rng.random() < 0.3 else None
            got, want = s.evictions(max=cap), model.evictions(0, cap)
            assert np.array_equal(got, want), (step, got, want)
            compared += len(want)
        assert np.array_equal(s.token_positions(), model.token_positions(0))
    assert compared > 50
