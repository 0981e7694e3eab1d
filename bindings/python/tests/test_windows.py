"""Layer windows (``hashevict_set_layer_window``): token-mode evictions agree
with the numpy reference, where a position's score is the mean of its
per-head scores over the layers whose window still reaches it (+inf when
none does), and bad arguments get their exception."""

import numpy as np
import pytest

import hashevict
import hashevict.reference as ref
from conftest import randn


@pytest.mark.parametrize("score", ["instant", "accumulated", "decayed"])
@pytest.mark.parametrize("windows", [(0, 5, 9), (7, 5, 9)])
def test_windows_match_reference(score, windows):
    L, n_kv, g, dim = 3, 2, 2, 12
    kw = dict(mode="token", n_layers=L, n_kv_heads=n_kv, n_q_heads=n_kv * g, head_dim=dim,
              budget=18, hash_bits=16, n_sink=2, n_recent=3, score=score, seed=5)
    rng = np.random.default_rng(len(score) + sum(windows))
    compared = 0
    with hashevict.Engine(**kw) as eng, eng.sequence(0) as s:
        model = ref.Reference(**kw)
        model.add(0)
        for l, w in enumerate(windows):
            eng.set_layer_window(l, w)
            model.set_layer_window(l, w)
        t = 0
        for step in range(150):
            if step == 80:
                # Changing the windows mid-sequence applies from the next decision.
                eng.set_layer_window(1, 12)
                model.set_layer_window(1, 12)
            n = int(rng.integers(2, 6)) if rng.random() < 0.2 else 1
            pos = np.arange(t, t + n)
            t += n
            for l in range(L):
                q, k = randn(rng, (n, n_kv * g, dim)), randn(rng, (n, n_kv, dim))
                s.observe(l, q, k, pos)
                model.observe(0, l, q, k, pos)
            cap = int(rng.integers(1, 4)) if rng.random() < 0.3 else None
            got, want = s.evictions(max=cap), model.evictions(0, cap)
            assert np.array_equal(got, want), (step, got, want)
            compared += len(want)
        assert np.array_equal(s.token_positions(), model.token_positions(0))
    assert compared > 50


def test_windows_cleared_decide_as_none():
    """Windows set and then set back to 0 decide exactly as no windows."""
    kw = dict(mode="token", n_layers=2, n_kv_heads=1, n_q_heads=2, head_dim=8, budget=10, n_sink=1, n_recent=2)
    rng = np.random.default_rng(2)
    with hashevict.Engine(**kw) as a, hashevict.Engine(**kw) as b, a.sequence(0) as sa, b.sequence(0) as sb:
        b.set_layer_window(0, 3)
        b.set_layer_window(0, 0)
        for t in range(60):
            for l in range(2):
                q, k = randn(rng, (1, 2, 8)), randn(rng, (1, 1, 8))
                sa.observe(l, q, k, [t])
                sb.observe(l, q, k, [t])
            assert np.array_equal(sa.evictions(), sb.evictions()), t


def test_window_errors():
    with hashevict.Engine(n_layers=2, n_kv_heads=1, head_dim=8, budget=32, mode="token") as eng:
        with pytest.raises(hashevict.OutOfRange):
            eng.set_layer_window(2, 4)
        with pytest.raises(hashevict.InvalidArgument):
            eng.set_layer_window(0, -1)
        with pytest.raises(hashevict.InvalidArgument):
            eng.set_layer_window(0, 2**31)
    with hashevict.Engine(n_layers=2, n_kv_heads=1, head_dim=8, budget=32) as eng:
        with pytest.raises(hashevict.WrongMode):
            eng.set_layer_window(0, 4)
