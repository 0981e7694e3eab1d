"""Integer arguments that do not fit the C int32_t they are passed as are
refused before the call. ctypes would convert them modulo 2**32 without a
word: ``sequence(2**32 + 2)`` acted on sequence 2."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import randn

import hashevict

WRAPS = [2**32, 2**32 + 1, -(2**32) + 1, 2**31, -(2**31) - 1, 2**63 + 1]


def make(**kw):
    base = dict(n_layers=2, n_kv_heads=2, n_q_heads=4, head_dim=8, budget=16, n_sink=2, n_recent=3, max_seqs=4)
    base.update(kw)
    return hashevict.Engine(**base)


def refused(excinfo, cls, what):
    e = excinfo.value
    assert type(e) is cls and not e.from_library, (type(e), e)
    assert what in str(e) and "int32" in str(e), str(e)


@pytest.mark.parametrize("bad", WRAPS)
def test_sequence_ids(bad):
    bad = bad + 1 if bad > 0 else bad  # wraps onto id 1 (or out of range)
    with make() as eng:
        with pytest.raises(hashevict.OutOfRange) as ei:
            eng.sequence(bad)
        refused(ei, hashevict.OutOfRange, "seq_id")
        with eng.sequence(0) as s:
            blob = s.save_state()
            with pytest.raises(hashevict.OutOfRange) as ei:
                s.fork(bad)
            refused(ei, hashevict.OutOfRange, "dst")
            with pytest.raises(hashevict.OutOfRange) as ei:
                eng.restore(bad, blob)
            refused(ei, hashevict.OutOfRange, "seq_id")
            with pytest.raises(hashevict.OutOfRange) as ei:
                eng.stats(bad)
            refused(ei, hashevict.OutOfRange, "seq")
        # nothing was created under the wrapped ids: 1 and 0 are free
        assert eng.stats().n_sequences == 0
        eng.sequence(1).close()
        eng.sequence(0).close()


@pytest.mark.parametrize("bad", WRAPS)
def test_layers_and_heads(rng, bad):
    q, k = randn(rng, (1, 4, 8)), randn(rng, (1, 2, 8))
    with make() as eng, eng.sequence(0) as s:
        for call, what in (
            (lambda: s.place(bad, q, k, 0), "layer"),
            (lambda: s.slot_positions(bad, 0), "layer"),
            (lambda: s.slot_positions(0, bad), "kv_head"),
            (lambda: eng.hash(bad, k), "layer"),
            (lambda: eng.projection(bad), "layer"),
        ):
            with pytest.raises(hashevict.OutOfRange) as ei:
                call()
            refused(ei, hashevict.OutOfRange, what)
        assert s.stats().steps == 0
    with make(mode="token") as eng, eng.sequence(0) as s:
        with pytest.raises(hashevict.OutOfRange) as ei:
            s.observe(bad, q, k, 0)
        refused(ei, hashevict.OutOfRange, "layer")
        assert s.stats().steps == 0


def test_evictions_max(rng):
    with make(mode="token") as eng, eng.sequence(0) as s:
        for t in range(20):
            for layer in range(2):
                s.observe(layer, randn(rng, (1, 4, 8)), randn(rng, (1, 2, 8)), t)
        for bad in (2**32 + 1, 2**31):
            with pytest.raises(hashevict.InvalidArgument) as ei:
                s.evictions(max=bad)
            refused(ei, hashevict.InvalidArgument, "max")
        assert s.stats().cached == 20  # the refused calls evicted nothing
        # the largest int32 is a valid max: no buffer of that size is made
        got = s.evictions(max=2**31 - 1)
        assert len(got) == 4 and s.stats().cached == 16


def test_non_integers_refused():
    with make() as eng:
        for bad in (1.0, "1", True, None):
            with pytest.raises(hashevict.InvalidArgument):
                eng.sequence(bad)
        with eng.sequence(np.int64(3)) as s:  # numpy integers are ints
            assert s.id == 3 and type(s.id) is int
            with pytest.raises(hashevict.InvalidArgument):
                s.slot_positions(0.0, 0)


def test_status_string_does_not_wrap():
    assert hashevict.status_string(13) == "HASHEVICT_ERR_POSITION"
    assert hashevict.status_string(2**32 + 13) == "HASHEVICT_ERR_UNKNOWN_STATUS"
