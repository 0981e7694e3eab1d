"""The Pythonic API: engines, sequences, inputs passed without copies."""

from __future__ import annotations

import dataclasses
import gc
import inspect
import subprocess
import sys
import threading

import numpy as np
import pytest
from conftest import randn

import hashevict
from hashevict import reference as ref


def make(**kw):
    base = dict(n_layers=2, n_kv_heads=2, n_q_heads=4, head_dim=8, budget=16, n_sink=2, n_recent=3)
    base.update(kw)
    return hashevict.Engine(**base)


def test_versions(lib):
    assert hashevict.version() == hashevict.__version__ == hashevict._ffi.HASHEVICT_VERSION_STRING
    assert hashevict.abi_version() == hashevict._ffi.HASHEVICT_ABI_VERSION
    assert hashevict.kernels() in ("generic", "avx2", "avx512")
    assert hashevict.Engine.kernels() == hashevict.kernels()
    assert hashevict.Engine.version() == hashevict.version()
    assert hashevict.status_string(13) == "HASHEVICT_ERR_POSITION"
    assert hashevict.status_string(12345) == "HASHEVICT_ERR_UNKNOWN_STATUS"


def test_library_comes_from_package_or_override():
    import os

    path = hashevict.library_path()
    if os.environ.get("HASHEVICT_LIBRARY"):
        assert path == os.environ["HASHEVICT_LIBRARY"]
    else:
        assert path.startswith(os.path.dirname(hashevict.__file__)), path


OPTIONAL = ("mode", "policy", "probe", "score", "hash_bits", "n_sink", "n_recent", "seed", "max_seqs", "decay",
            "memory_cap_bytes")


def test_unset_parameters_take_the_librarys_defaults():
    """Engine restates no default: every optional parameter defaults to None,
    and a default Engine's params are hashevict_default_params() plus the
    shape."""
    sig = inspect.signature(hashevict.Engine)
    for name in OPTIONAL:
        assert sig.parameters[name].default is None, name
    d = hashevict.default_params()
    with hashevict.Engine(n_layers=1, n_kv_heads=2, head_dim=8, budget=32) as eng:
        p = eng.params
    shape = dict(n_layers=1, n_kv_heads=2, n_q_heads=2, head_dim=8, budget=32)
    for f in dataclasses.fields(p):
        want = shape.get(f.name, getattr(d, f.name))
        assert getattr(p, f.name) == want, (f.name, getattr(p, f.name), want)


def test_defaults_come_from_the_loaded_library(monkeypatch):
    """The defaults are read from the library at each construction, not
    copied into the bindings: a library with other defaults gives an Engine
    with those, and a caller's value still wins."""
    import hashevict.engine as engine_mod

    real = hashevict.library()

    class OtherDefaults:
        def __getattr__(self, name):
            return getattr(real, name)

        def hashevict_default_params_v2(self):
            p = real.hashevict_default_params_v2()
            p.n_sink, p.n_recent, p.hash_bits, p.score, p.decay = 7, 5, 32, 2, 0.5
            return p

    monkeypatch.setattr(engine_mod, "_lib", OtherDefaults())
    with hashevict.Engine(n_layers=1, n_kv_heads=1, head_dim=8, budget=32, n_recent=3) as eng:
        p = eng.params
    assert (p.n_sink, p.hash_bits, p.score, p.decay) == (7, 32, hashevict.Score.DECAYED, 0.5)
    assert p.n_recent == 3


def test_params_resolved():
    with make(policy="sink-recent", score=hashevict.Score.DECAYED, probe=1, hash_bits=64, seed=2**64 - 1) as eng:
        p = eng.params
        assert p.policy is hashevict.Policy.SINK_RECENT and p.score is hashevict.Score.DECAYED
        assert p.probe is hashevict.Probe.KEY and p.mode is hashevict.Mode.SLOT
        assert (p.n_layers, p.n_kv_heads, p.n_q_heads, p.head_dim, p.budget) == (2, 2, 4, 8, 16)
        assert p.hash_bits == 64 and p.words == 1 and p.group == 2 and p.seed == 2**64 - 1
        assert "open" in repr(eng)
    assert "closed" in repr(eng)
    with hashevict.Engine(n_layers=1, n_kv_heads=3, head_dim=4, budget=20) as eng:
        assert eng.n_q_heads == 3  # n_q_heads defaults to n_kv_heads


def test_place_decode_loop(rng):
    with make() as eng, eng.sequence(0) as seq:
        held = {}
        for t in range(40):
            for layer in range(2):
                q, k = randn(rng, (1, 4, 8)), randn(rng, (1, 2, 8))
                slots, evicted = seq.place(layer, q, k, t)
                assert slots.shape == evicted.shape == (1, 2) and slots.dtype == np.int32
                for h in range(2):
                    s = int(slots[0, h])
                    assert evicted[0, h] == held.get((layer, h, s), -1)
                    held[(layer, h, s)] = t
        for layer in range(2):
            for h in range(2):
                pos = seq.slot_positions(layer, h)
                assert sorted(pos) == sorted(v for (l, hh, _), v in held.items() if (l, hh) == (layer, h))
                assert {0, 1} <= set(pos) and {37, 38, 39} <= set(pos)  # sinks, recent window
        st = seq.stats()
        assert (st.steps, st.tokens, st.cached, st.evictions) == (80, 80, 64, 2 * 2 * (40 - 16))
        assert eng.stats().n_sequences == 1 and eng.stats(0) == st


def test_chunk_and_fork_and_reset(rng):
    with make(budget=24) as eng:
        a = eng.sequence(3)
        q, k = randn(rng, (10, 4, 8)), randn(rng, (10, 2, 8))
        for layer in range(2):
            r = a.place(layer, q, k, np.arange(10))
            assert (r.slots == np.arange(10)[:, None]).all() and (r.evicted == -1).all()
        b = a.fork(5)
        assert isinstance(b, hashevict.Sequence) and b.id == 5
        # Identical futures while the inputs are identical, independent after.
        for t in range(10, 40):
            q, k = randn(rng, (1, 4, 8)), randn(rng, (1, 2, 8))
            ra, rb = a.place(0, q, k, t), b.place(0, q, k, t)
            assert (ra.slots == rb.slots).all() and (ra.evicted == rb.evicted).all()
        b.place(1, randn(rng, (1, 4, 8)), randn(rng, (1, 2, 8)), 10)
        assert (a.slot_positions(1, 0)[:10] == np.arange(10)).all() and a.slot_positions(1, 0)[10] == -1
        a.reset()
        assert (a.slot_positions(0, 0) == -1).all() and a.stats().cached == 0
        a.place(0, randn(rng, (1, 4, 8)), randn(rng, (1, 2, 8)), 0)  # positions restart after reset
        b.close()
        a.close()
        assert eng.stats().n_sequences == 0


def test_token_mode_roundtrip(rng):
    with make(mode="token", budget=12) as eng, eng.sequence(0) as seq:
        dropped = []
        for t in range(30):
            for layer in range(2):
                seq.observe(layer, randn(rng, (1, 4, 8)), randn(rng, (1, 2, 8)), [t])
            ev = seq.evictions()
            assert ev.dtype == np.int32 and (np.diff(ev) > 0).all()
            dropped += ev.tolist()
        held = seq.token_positions()
        assert len(held) == 12 and sorted(set(held) | set(dropped)) == list(range(30))
        assert seq.evictions().size == 0


def test_token_mode_evictions_max(rng):
    with make(mode="token", budget=8) as eng, eng.sequence(0) as seq:
        q, k = randn(rng, (30, 4, 8)), randn(rng, (30, 2, 8))
        for layer in range(2):
            seq.observe(layer, q, k, np.arange(30))
        first = seq.evictions(max=5)
        assert first.size == 5
        rest = seq.evictions()
        assert rest.size == 30 - 8 - 5 and len(seq.token_positions()) == 8
        # token_positions grows its buffer past the first guess (64)
        seq.reset()
        q, k = randn(rng, (100, 4, 8)), randn(rng, (100, 2, 8))
        for layer in range(2):
            seq.observe(layer, q, k, np.arange(100))
        assert (seq.token_positions() == np.arange(100)).all()


def test_hash_and_projection_shapes(rng):
    with make(hash_bits=128) as eng:
        assert eng.projection(1).shape == (128, 8) and eng.projection(1).dtype == np.float32
        x = randn(rng, (5, 3, 8))
        c = eng.hash(0, x)
        assert c.shape == (5, 3, 2) and c.dtype == np.uint64
        assert (eng.hash(0, x[2, 1]) == c[2, 1]).all()  # 1-d input
        assert (eng.hash(0, x[:, 1]) == c[:, 1]).all()  # 2-d input [rows, dim]
        assert (c == ref.codes(x, eng.projection(0))).all()


def test_strided_inputs_are_zero_copy_and_equal(rng):
    """Outer dimensions may be strided (slices, transposes): same answers as
    contiguous copies, and no copy is made."""
    big = randn(rng, (6, 10, 8))
    x = big[::2, 1::3]  # strides in both outer dims
    assert not x.flags.c_contiguous
    with make() as eng:
        assert (eng.hash(0, x) == eng.hash(0, np.ascontiguousarray(x))).all()
        v = hashevict._tensors.describe(x, "x")
        assert v.desc.data == x.ctypes.data and v.desc.token_stride == 2 * 10 * 8 * 4
        assert v.desc.head_stride == 3 * 8 * 4
        # [heads, tokens, dim] transposed to [tokens, heads, dim]
        kt = randn(rng, (2, 5, 8)).transpose(1, 0, 2)
        qt = randn(rng, (4, 5, 8)).transpose(1, 0, 2)
        with eng.sequence(0) as s1, eng.sequence(1) as s2:
            r1 = s1.place(0, qt, kt, np.arange(5))
            r2 = s2.place(0, np.ascontiguousarray(qt), np.ascontiguousarray(kt), np.arange(5))
            assert (r1.slots == r2.slots).all()


def test_broadcast_unit_dims_and_unaligned(rng):
    with make(n_kv_heads=1, n_q_heads=1) as eng:
        row = randn(rng, 8)
        x = row[None, None, :]  # strides (0, 0, 4)
        assert (eng.hash(0, x) == eng.hash(0, row.copy())).all()
        # An f32 array at an odd address: the library reads it bytewise.
        buf = np.zeros(8 * 4 + 1, np.uint8)
        un = buf[1:].view(np.float32)
        un[:] = row
        assert un.ctypes.data % 4 != 0
        assert (eng.hash(0, un) == eng.hash(0, row)).all()


def test_float16_and_bf16(rng):
    with make() as eng:
        x32 = randn(rng, (4, 2, 8))
        x16 = x32.astype(np.float16)
        assert (eng.hash(0, x16) == eng.hash(0, x16.astype(np.float32))).all()
        bits = (x32.view(np.uint32) >> 16).astype(np.uint16)
        widened = (bits.astype(np.uint32) << 16).view(np.float32)
        assert (eng.hash(0, hashevict.bf16(bits)) == eng.hash(0, widened)).all()
        assert (ref.as_float32(hashevict.bf16(bits)) == widened).all()


def test_probe_key_without_queries(rng):
    with make(probe="key") as eng, eng.sequence(0) as seq:
        for t in range(30):
            seq.place(0, None, randn(rng, (1, 2, 8)), t)
        assert seq.stats().evictions == 2 * (30 - 16)


def test_context_managers_and_del(rng):
    eng = make()
    seq = eng.sequence(0)
    del seq
    gc.collect()
    assert eng.stats().n_sequences == 0  # __del__ removed it
    with eng.sequence(0) as s:
        s.place(0, randn(rng, (1, 4, 8)), randn(rng, (1, 2, 8)), 0)
    assert s.closed and eng.stats().n_sequences == 0
    s.close()  # idempotent
    eng.sequence(1)  # dropped at once: removed again
    keep = eng.sequence(2)
    eng.close()
    eng.close()
    assert eng.closed and keep.closed
    keep.close()  # no-op after the engine is gone
    del keep, eng
    gc.collect()


def test_engine_freed_when_collected():
    code = (
        "import gc, hashevict\n"
        "for i in range(200):\n"
        "    e = hashevict.Engine(n_layers=1, n_kv_heads=1, head_dim=4, budget=20)\n"
        "    s = e.sequence(0)\n"
        "    del e, s\n"
        "gc.collect()\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_parallel_sequences_and_thread_local_errors(rng):
    """Sequences run in parallel threads; each thread reads its own failure
    message."""
    with make(budget=32) as eng:
        seqs = [eng.sequence(i) for i in range(4)]
        errors = []
        data = [(randn(rng, (60, 4, 8)), randn(rng, (60, 2, 8))) for _ in seqs]

        def work(i):
            s = seqs[i]
            q, k = data[i]
            try:
                for t in range(60):
                    s.place(0, q[t : t + 1], k[t : t + 1], t)
                    bad = q[t : t + 1].copy()
                    bad[0, 0, 0] = np.nan if i % 2 else np.inf
                    try:
                        if i < 2:
                            s.place(1, bad, k[t : t + 1], t)
                        else:
                            s.place(1, q[t : t + 1], k[t : t + 1], -1 - t)
                    except hashevict.NonFinite as e:
                        assert i < 2 and "NaN or Inf" in str(e)
                    except hashevict.PositionError as e:
                        assert i >= 2 and "negative" in str(e)
            except Exception as e:  # pragma: no cover - reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert errors == []
        # Same decisions as one thread on fresh sequences.
        with eng.sequence(10) as s:
            for t in range(60):
                s.place(0, data[0][0][t : t + 1], data[0][1][t : t + 1], t)
            assert (s.slot_positions(0, 1) == seqs[0].slot_positions(0, 1)).all()


def test_close_waits_for_calls_in_flight(rng):
    """close() from another thread never frees the engine under a call."""
    eng = hashevict.Engine(n_layers=1, n_kv_heads=8, n_q_heads=32, head_dim=128, budget=4096, hash_bits=256,
                           n_sink=4, n_recent=10)
    seq = eng.sequence(0)
    q, k = randn(rng, (512, 32, 128)), randn(rng, (512, 8, 128))
    started = threading.Event()
    outcome = []

    def work():
        started.set()
        try:
            for i in range(4):
                seq.place(0, q, k, np.arange(512) + 512 * i)
            outcome.append("done")
        except hashevict.EngineClosed:
            outcome.append("closed")

    th = threading.Thread(target=work)
    th.start()
    started.wait()
    eng.close()
    th.join()
    assert outcome and outcome[0] in ("done", "closed")
    with pytest.raises(hashevict.EngineClosed):
        seq.place(0, q[:1], k[:1], 10**6)


def test_readme_example_runs():
    from pathlib import Path

    readme = Path(__file__).resolve().parents[1] / "README.md"
    if not readme.is_file():
        pytest.skip("README.md not next to the tests")
    blocks = [b.split("\n", 1)[1] for b in readme.read_text().split("```")[1::2] if b.startswith("python")]
    assert blocks, "no python example in README.md"
    out = subprocess.run([sys.executable, "-c", blocks[0]], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Stats(" in out.stdout
