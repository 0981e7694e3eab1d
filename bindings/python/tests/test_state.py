"""Saved sequence state (hashevict_seq_state_*): round trips and refusals."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import randn

import hashevict

KW = dict(n_layers=2, n_kv_heads=2, n_q_heads=4, head_dim=8, budget=16, n_sink=2, n_recent=3, score="accumulated")


@pytest.fixture(autouse=True)
def need_state_functions(lib):
    if "hashevict_seq_state_save" in lib._hashevict_missing:
        pytest.skip(f"libhashevict {hashevict.version()} has no saved state")


def steps(rng, n):
    return [(randn(rng, (1, 4, 8)), randn(rng, (1, 2, 8))) for _ in range(n)]


@pytest.mark.parametrize("mode", ["slot", "token"])
def test_round_trip_continues_identically(rng, mode):
    before, after = steps(rng, 30), steps(rng, 30)

    def drive(seq, data, t0):
        out = []
        for i, (q, k) in enumerate(data):
            for layer in range(2):
                if mode == "slot":
                    out.append(seq.place(layer, q, k, t0 + i).slots.copy())
                else:
                    seq.observe(layer, q, k, t0 + i)
            if mode == "token":
                out.append(seq.evictions())
        return out

    with hashevict.Engine(mode=mode, **KW) as eng, hashevict.Engine(mode=mode, **KW) as other:
        a = eng.sequence(0)
        drive(a, before, 0)
        blob = a.save_state()
        assert isinstance(blob, bytes) and len(blob) > 0
        b = eng.restore(1, blob)  # same engine, new id
        c = other.restore(7, bytearray(blob))  # another engine, same parameters
        ra, rb, rc = drive(a, after, 30), drive(b, after, 30), drive(c, after, 30)
        for x, y, z in zip(ra, rb, rc):
            assert np.array_equal(x, y) and np.array_equal(x, z)
        a.load_state(np.frombuffer(blob, np.uint8))  # back in time, in place
        assert [np.array_equal(x, y) for x, y in zip(drive(a, after, 30), ra)] == [True] * len(ra)


def test_corrupt_state_refused(rng):
    with hashevict.Engine(**KW) as eng:
        a = eng.sequence(0)
        for i, (q, k) in enumerate(steps(rng, 20)):
            a.place(0, q, k, i)
        blob = bytearray(a.save_state())
        blob[len(blob) // 2] ^= 0x40
        with pytest.raises(hashevict.CorruptState) as ei:
            eng.restore(1, blob)
        assert ei.value.from_library and ei.value.function == "hashevict_seq_state_load"
        with pytest.raises(hashevict.CorruptState):
            a.load_state(bytes(blob[:10]))
        with pytest.raises(hashevict.HashevictError):
            a.load_state(b"")
        assert eng.stats().n_sequences == 1  # nothing added


def test_incompatible_state_refused(rng):
    with hashevict.Engine(**KW) as eng, hashevict.Engine(**dict(KW, budget=20)) as other:
        a = eng.sequence(0)
        a.place(0, *steps(rng, 1)[0], 0)
        with pytest.raises(hashevict.IncompatibleState) as ei:
            other.restore(0, a.save_state())
        assert ei.value.from_library and str(ei.value)
