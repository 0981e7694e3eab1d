"""The hash policy's streaming options (estimate=logit, redundancy, 0.5.0):
the library's token-mode decisions against a float64 numpy model written
from the header's definitions, and every bad value refused."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import hashevict
from hashevict import _ffi
from hashevict import reference as ref
from hashevict.engine import library

KV, QH, DIM, BITS = 2, 6, 32, 32
G = QH // KV


def make(**kw):
    args = dict(n_layers=2, n_kv_heads=KV, n_q_heads=QH, head_dim=DIM, budget=30, hash_bits=BITS, mode="token")
    args.update(kw)
    return hashevict.Engine(**args)


def hams(codes, probes):
    """[len(codes), len(probes)] Hamming distances of wide uint64 codes."""
    x = codes[:, None, :] ^ probes[None, :, :]
    return np.unpackbits(x.view(np.uint8), axis=-1).sum(axis=-1).astype(np.float64)


def step_scores(p, codes, knorms, probes, pnorms, n):
    """The step score of every candidate (cached, then new) from the header's
    definitions: the estimate averaged over the chunk, plus the redundancy
    term from the candidates' majority code."""
    b = float(p.hash_bits)
    d = hams(codes, probes)
    if p.estimate == hashevict.Estimate.LOGIT:
        s = -(knorms[:, None] * pnorms[None, :] * np.cos(np.pi * d / b)).sum(axis=1) / (n * np.sqrt(p.head_dim))
    else:
        s = d.sum(axis=1) / n
    if p.redundancy:
        bits = np.unpackbits(codes.view(np.uint8), axis=-1, bitorder="little")
        maj_bits = (2 * bits.sum(axis=0) > len(codes)).astype(np.uint8)
        maj = np.packbits(maj_bits, bitorder="little").view(np.uint64)
        r = hams(codes, maj[None, :])[:, 0]
        lam = np.float64(np.float32(p.redundancy))
        if p.estimate == hashevict.Estimate.LOGIT:
            s += lam * pnorms.sum() / n * knorms.mean() * np.cos(np.pi * r / b) / np.sqrt(p.head_dim)
        else:
            s += lam * (len(probes) // n) * (b - r)
    return s


@pytest.mark.parametrize("estimate,redundancy", [("logit", 0), ("logit", 0.5), ("distance", 0.5), ("distance", 2)])
@pytest.mark.parametrize("probe", ["query", "key"])
def test_token_mode_matches_model(estimate, redundancy, probe):
    """Instant score: every eviction is a largest model total among the
    evictable positions (up to float32 rounding), in chunks that evict and in
    decode steps."""
    rng = np.random.default_rng(abs(hash((estimate, redundancy, probe))) % 2**32)
    with make(estimate=estimate, redundancy=redundancy, probe=probe) as eng:
        p = eng.params
        assert p.estimate == hashevict.Estimate[estimate.upper()] and p.redundancy == pytest.approx(redundancy)
        seq = eng.sequence(0)
        rts = [np.asarray(eng.projection(l)) for l in range(p.n_layers)]
        held = {}  # position -> [layer][head] (code, norm)
        pos, evicted = 0, 0
        for step in range(30):
            n = 8 if step < 6 else 1
            positions = np.arange(pos, pos + n)
            pos += n
            cached = sorted(held)
            totals = np.zeros(len(cached) + n)
            fresh = [[[None] * KV for _ in range(p.n_layers)] for _ in range(n)]
            for l in range(p.n_layers):
                scale_q = rng.uniform(0.3, 3, (n, QH, 1))
                scale_k = rng.uniform(0.3, 3, (n, KV, 1))
                q = (rng.standard_normal((n, QH, DIM)) * scale_q).astype(np.float32)
                k = (rng.standard_normal((n, KV, DIM)) * scale_k).astype(np.float32)
                seq.observe(l, q, k, positions)
                kc, qc = ref.codes(k, rts[l]), ref.codes(q, rts[l])
                kn = np.linalg.norm(k.astype(np.float64), axis=-1)
                qn = np.linalg.norm(q.astype(np.float64), axis=-1)
                for h in range(KV):
                    for t in range(n):
                        fresh[t][l][h] = (kc[t, h], kn[t, h])
                    codes = np.array([held[c][l][h][0] for c in cached] + [kc[t, h] for t in range(n)]).reshape(-1, kc.shape[-1])
                    norms = np.array([held[c][l][h][1] for c in cached] + [kn[t, h] for t in range(n)])
                    if probe == "query":
                        probes = qc[:, h * G : (h + 1) * G].reshape(n * G, -1)
                        pn = qn[:, h * G : (h + 1) * G].reshape(-1)
                    else:
                        probes, pn = kc[:, h], kn[:, h]
                    totals += step_scores(p, codes, norms, probes, pn, n)
            for t in range(n):
                held[int(positions[t])] = fresh[t]
            allpos = np.array(cached + positions.tolist())
            newest = pos - 1
            cand = (allpos >= p.n_sink) & (allpos < newest - p.n_recent)
            dropped = seq.evictions()
            excess = len(allpos) - p.budget
            assert dropped.size == max(0, min(excess, cand.sum()))
            tot = dict(zip(allpos.tolist(), totals.tolist()))
            tol = 1e-4 * (1 + np.abs(totals).max())
            kept = [c for c in allpos[cand].tolist() if c not in set(dropped.tolist())]
            for d in dropped.tolist():
                assert cand[allpos.tolist().index(d)], f"evicted protected position {d}"
                worst = max((tot[c] for c in kept), default=-np.inf)
                assert tot[d] >= worst - tol, f"step {step}: evicted {d} ({tot[d]}) and kept one at {worst}"
                del held[d]
            evicted += dropped.size
        assert evicted >= 40


def test_defaults_are_the_papers_policy():
    p = hashevict.default_params()
    assert p.estimate == hashevict.Estimate.DISTANCE and p.redundancy == 0
    with make() as eng:
        assert eng.params.estimate == hashevict.Estimate.DISTANCE and eng.params.redundancy == 0


@pytest.mark.parametrize(
    "kw,exc",
    [
        (dict(estimate="cosine"), hashevict.InvalidParams),  # not a name: refused by the package
        (dict(estimate=7), hashevict.InvalidParams),  # not a value: refused by the library
        (dict(estimate=-1), hashevict.InvalidParams),
        (dict(redundancy=-1.0), hashevict.InvalidParams),
        (dict(redundancy=float("nan")), hashevict.InvalidParams),
        (dict(redundancy=float("inf")), hashevict.InvalidParams),
        (dict(redundancy=65), hashevict.InvalidParams),
        (dict(redundancy="0.5"), hashevict.InvalidParams),
        (dict(redundancy=True), hashevict.InvalidParams),
        (dict(policy="knorm", estimate="logit"), hashevict.InvalidParams),
        (dict(policy="sink_recent", redundancy=1), hashevict.InvalidParams),
    ],
)
def test_bad_values_refused(kw, exc):
    with pytest.raises(exc):
        make(**kw)


def test_slot_compress_refuses_logit():
    rng = np.random.default_rng(2)
    k = rng.standard_normal((50, KV, DIM)).astype(np.float32)
    qw = rng.standard_normal((4, QH, DIM)).astype(np.float32)
    with make(mode="slot", estimate="logit") as eng:
        seq = eng.sequence(0)
        with pytest.raises(hashevict.Unsupported):
            seq.compress(0, qw, k, np.arange(50))
        assert eng.stats(0).tokens == 0


def _create(p):
    lib = library()
    ptr = _ffi.hashevict_engine_p()
    st = lib.hashevict_engine_create(ctypes.byref(p), ctypes.byref(ptr))
    if st == _ffi.HASHEVICT_OK:
        lib.hashevict_engine_free(ptr)
    return st


def test_params_sizes():
    """A 0.4 struct's size (through memory_cap_bytes) creates with the new
    fields at their defaults; a size between two headers' is refused, and so
    is a larger size with a byte this library does not know set."""
    lib = library()
    v1 = _ffi.hashevict_params.memory_cap_bytes.offset + 8
    full = ctypes.sizeof(_ffi.hashevict_params)
    assert full > v1

    class Bigger(ctypes.Structure):
        _fields_ = [("p", _ffi.hashevict_params), ("future", ctypes.c_uint64)]

    def params():
        b = Bigger()
        b.p = lib.hashevict_default_params_v2()
        assert b.p.size == full
        b.p.n_layers, b.p.n_kv_heads, b.p.n_q_heads, b.p.head_dim, b.p.budget = 1, 1, 1, 8, 32
        return b

    b = params()
    b.p.estimate = 99  # past a 0.4 caller's size: not read
    b.p.size = v1
    assert _create(b.p) == _ffi.HASHEVICT_OK
    b.p.size = v1 + 4
    assert _create(b.p) == _ffi.HASHEVICT_ERR_INVALID_ARGUMENT
    b = params()
    b.p.size = ctypes.sizeof(Bigger)
    assert _create(b.p) == _ffi.HASHEVICT_OK
    b.future = 1
    assert _create(b.p) == _ffi.HASHEVICT_ERR_INVALID_ARGUMENT
    assert b"not zero" in lib.hashevict_last_error()
    b.p.size = 1 << 20
    assert _create(b.p) == _ffi.HASHEVICT_ERR_INVALID_ARGUMENT
