"""CUDA memory through the Python bindings.

No GPU is needed for most of this: the library's CUDA path runs on the
emulated driver of cuda/testdata/emu_libcuda.cpp (built here with c++),
which runs the kernels on the host and whose "device memory" is host memory
it allocated. torch cannot make CUDA tensors without a GPU, so these tests
hand the library device memory through ``__cuda_array_interface__`` objects
(what CuPy and Numba arrays are), the ctypes path torch tensors take too.
The library reads HASHEVICT_LIBCUDA when it is loaded, so each driver runs
in a child pytest process (``child_*`` tests, skipped in the parent).
Tests with torch CUDA tensors need a real GPU and skip, saying so, without
one. Nothing here has run on a GPU.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hashevict

REPO = Path(__file__).resolve().parents[3]
EMU_SRC = REPO / "cuda" / "testdata" / "emu_libcuda.cpp"
CHILD = os.environ.get("HASHEVICT_TEST_CUDA_CHILD", "")

SHAPE = dict(n_layers=2, n_kv_heads=2, n_q_heads=4, head_dim=32, budget=20, hash_bits=16, n_sink=2, n_recent=4)


def _child(kind: str, libcuda) -> None:
    env = dict(os.environ, HASHEVICT_LIBCUDA=str(libcuda), HASHEVICT_TEST_CUDA_CHILD=kind)
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", f"child_{kind}"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert " passed" in out and "skipped" not in out and "deselected" in out, out


@pytest.fixture(scope="module")
def emulated_driver(tmp_path_factory):
    cxx = shutil.which("c++")
    if cxx is None or not EMU_SRC.exists():
        pytest.skip(f"SKIPPED: the emulated libcuda needs c++ and {EMU_SRC} (a repository checkout); "
                    "the CUDA path of the bindings is NOT tested here")
    out = tmp_path_factory.mktemp("emu") / "libcuda-emu.so"
    subprocess.run([cxx, "-shared", "-fPIC", "-O2", "-ffp-contract=off", "-o", str(out), str(EMU_SRC)], check=True)
    return out


def test_without_driver():
    _child("none", "/nonexistent/libcuda.so.1")


def test_on_emulated_driver(emulated_driver):
    _child("emu", emulated_driver)


# ---------------------------------------------------------------------------
# In the child processes.


class DeviceArray:
    """Memory of the emulated driver, exposed as a CUDA array."""

    def __init__(self, host: np.ndarray, stream=None):
        cu = _cu()
        host = np.ascontiguousarray(host)
        p = ctypes.c_uint64()
        assert cu.cuMemAlloc_v2(ctypes.byref(p), ctypes.c_size_t(max(host.nbytes, 4))) == 0
        self.ptr, self.nbytes, self.shape, self.dtype, self.stream = p.value, host.nbytes, host.shape, host.dtype, stream
        self.set(host)

    def set(self, host: np.ndarray) -> None:
        host = np.ascontiguousarray(host, self.dtype)
        assert host.nbytes == self.nbytes
        _cu().cuMemcpyHtoDAsync_v2(ctypes.c_uint64(self.ptr), host.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(self.nbytes), None)

    def get(self) -> np.ndarray:
        out = np.empty(self.shape, self.dtype)
        _cu().cuMemcpyDtoHAsync_v2(out.ctypes.data_as(ctypes.c_void_p), ctypes.c_uint64(self.ptr), ctypes.c_size_t(self.nbytes), None)
        return out

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, False), "strides": None,
                "version": 3, "stream": self.stream}


_CU = []


def _cu():
    # The same path the library opened: the same instance, one set of
    # allocations.
    if not _CU:
        _CU.append(ctypes.CDLL(os.environ["HASHEVICT_LIBCUDA"]))
    return _CU[0]


child_emu = pytest.mark.skipif(CHILD != "emu", reason="runs in the child process of test_on_emulated_driver")
child_none = pytest.mark.skipif(CHILD != "none", reason="runs in the child process of test_without_driver")


@child_none
def test_child_none_unsupported_then_host_works():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, 4, 32), np.float32)
    k = rng.standard_normal((1, 2, 32), np.float32)
    fake = type("Fake", (), {"__cuda_array_interface__": {"shape": (1, 2, 32), "typestr": "<f4", "data": (k.ctypes.data, False), "version": 3}})()
    with hashevict.Engine(**SHAPE) as e:
        s = e.sequence(0)
        with pytest.raises(hashevict.Unsupported, match="libcuda"):
            s.place(0, q, fake, [0])
        with pytest.raises(hashevict.Unsupported, match="libcuda"):
            e.hash(0, fake)
        assert s.place(0, q, k, [0]).slots.tolist() == [[0, 0]]


@child_emu
@pytest.mark.parametrize("score", ["instant", "accumulated", "decayed"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_child_emu_matches_host(score, dtype):
    rng = np.random.default_rng(1)
    with hashevict.Engine(score=score, **SHAPE) as he, hashevict.Engine(score=score, **SHAPE) as de:
        hs, ds = he.sequence(0), de.sequence(0)
        pos = 0
        for step in range(50):
            n = 8 if step == 0 else 1
            positions = list(range(pos, pos + n))
            pos += n
            q = rng.standard_normal((n, 4, 32)).astype(dtype)
            k = rng.standard_normal((n, 2, 32)).astype(dtype)
            dq, dk = DeviceArray(q), DeviceArray(k)
            for layer in range(2):
                want = hs.place(layer, q, k, positions)
                if n == 1 and step % 2:
                    outs, oute = DeviceArray(np.zeros(2, np.int32)), DeviceArray(np.zeros(2, np.int32))
                    got = ds.place_async(layer, dq, dk, positions[0], outs, oute)
                    assert got.slots is outs
                    got = hashevict.Placement(outs.get().reshape(1, 2), oute.get().reshape(1, 2))
                else:
                    got = ds.place(layer, dq, dk, positions)
                    assert isinstance(got.slots, np.ndarray)  # results in host memory
                assert np.array_equal(got.slots, want.slots) and np.array_equal(got.evicted, want.evicted), (step, layer)
        assert np.array_equal(de.hash(1, dk), he.hash(1, k))
        a, b = hs.stats(), ds.stats()
        assert (a.steps, a.tokens, a.evictions, a.cached) == (b.steps, b.tokens, b.evictions, b.cached)
        # The device tables, in the host format. With the instant score the
        # stored scores of cached slots are never read, and only they may
        # differ: the blob then loads and continues as the host's.
        blob, hblob = ds.save_state(), hs.save_state()
        assert blob == hblob or (score == "instant" and len(blob) == len(hblob))
        copy = he.restore(1, blob)
        for step in range(10):
            q = rng.standard_normal((1, 4, 32)).astype(dtype)
            k = rng.standard_normal((1, 2, 32)).astype(dtype)
            for layer in range(2):
                want, got = hs.place(layer, q, k, [pos]), copy.place(layer, q, k, [pos])
                assert np.array_equal(got.slots, want.slots) and np.array_equal(got.evicted, want.evicted)
            pos += 1


@child_emu
def test_child_emu_refusals():
    rng = np.random.default_rng(2)
    q = rng.standard_normal((1, 4, 32), np.float32)
    k = rng.standard_normal((1, 2, 32), np.float32)
    dq, dk = DeviceArray(q), DeviceArray(k)
    host_as_cuda = type("HostAsCuda", (), {"__cuda_array_interface__": {"shape": (1, 2, 32), "typestr": "<f4", "data": (k.ctypes.data, False), "version": 3}})()
    with hashevict.Engine(**SHAPE) as e:
        s, h = e.sequence(0), e.sequence(1)
        with pytest.raises(hashevict.InvalidArgument, match="does not know it"):
            s.place(0, dq, host_as_cuda, [0])
        with pytest.raises(hashevict.InvalidArgument, match="one CUDA device"):
            s.place(0, q, dk, [0])
        with pytest.raises(hashevict.Unsupported, match="bfloat16 has no typestr"):
            e.hash(0, type("B", (), {"__cuda_array_interface__": {"shape": (1, 2, 32), "typestr": "<V2", "data": (dk.ptr, False), "version": 3}})())
        s.place(0, dq, dk, [0])  # sequence 0 is now a CUDA sequence
        h.place(0, q, k, [0])  # sequence 1 a host one
        with pytest.raises(hashevict.Unsupported, match="CUDA device"):
            s.place(0, q, k, [1])
        with pytest.raises(hashevict.InvalidArgument, match="on the host"):
            h.place(0, dq, dk, [1])
        assert s.fork(2).place(0, dq, dk, [1]).slots.tolist() == [[1, 1]]  # a fork stays on the device
        with pytest.raises(hashevict.InvalidArgument, match="out_slots must be CUDA memory"):
            s.place_async(0, dq, dk, 1, np.zeros(2, np.int32), np.zeros(2, np.int32))
        with pytest.raises(hashevict.Unsupported, match="one decode token"):
            s.place_async(0, DeviceArray(np.repeat(q, 2, 0)), DeviceArray(np.repeat(k, 2, 0)), [1, 2], DeviceArray(np.zeros(4, np.int32)), DeviceArray(np.zeros(4, np.int32)))
        bad = k.copy()
        bad[0, 1, 3] = np.nan
        with pytest.raises(hashevict.NonFinite, match="k row of token 0, head 1"):
            s.place(0, dq, DeviceArray(bad), [1])
        assert s.place(0, dq, dk, [1]).slots.tolist() == [[1, 1]]
        s.reset()
        assert s.place(0, q, k, [0]).slots.tolist() == [[0, 0]]  # a host sequence after the reset
    with hashevict.Engine(mode="token", **SHAPE) as t:
        s, h = t.sequence(0), t.sequence(1)
        s.observe(0, dq, dk, [0])  # a CUDA token-mode sequence
        h.observe(0, q, k, [0])
        with pytest.raises(hashevict.Unsupported, match="CUDA device"):
            s.observe(1, q, k, [0])
        with pytest.raises(hashevict.InvalidArgument, match="on the host"):
            h.observe(1, dq, dk, [0])
        with pytest.raises(hashevict.WrongMode):
            s.place(1, dq, dk, [0])
        bad = k.copy()
        bad[0, 0, 1] = np.inf
        with pytest.raises(hashevict.NonFinite, match="k row of token 0, head 0"):
            s.observe(1, dq, DeviceArray(bad), [0])
        s.observe(1, dq, dk, [0])
        assert s.token_positions().tolist() == [0]
        copy = t.restore(2, s.save_state())  # the host format: a host sequence
        assert copy.token_positions().tolist() == [0]
        copy.observe(0, q, k, [1])


@child_emu
@pytest.mark.parametrize("score,probe,window", [("instant", "query", 0), ("accumulated", "key", 0), ("decayed", "query", 7)])
def test_child_emu_token_mode_matches_host(score, probe, window):
    """hashevict_observe on CUDA memory and hashevict_evictions against the
    host engine: a prefill larger than the budget, then decode steps and
    chunks of 3 with evictions of random size in between (the sequence
    sometimes stays above its budget); every eviction, the held positions
    and the counters agree."""
    rng = np.random.default_rng(5)
    shape = dict(SHAPE, n_layers=3)
    with hashevict.Engine(mode="token", score=score, probe=probe, **shape) as he, \
            hashevict.Engine(mode="token", score=score, probe=probe, **shape) as de:
        if window:
            he.set_layer_window(1, window)
            de.set_layer_window(1, window)
        hs, ds = he.sequence(0), de.sequence(0)
        pos, evicted = 0, 0
        for step in range(60):
            n = 26 if step == 0 else 3 if step % 7 == 3 else 1
            positions = list(range(pos, pos + 2 * n, 2))
            pos += 2 * n
            q = rng.standard_normal((n, 4, 32)).astype(np.float16)
            k = rng.standard_normal((n, 2, 32)).astype(np.float16)
            dq, dk = DeviceArray(q), DeviceArray(k)
            for layer in range(3):
                hs.observe(layer, q, k, positions)
                ds.observe(layer, dq, dk, positions)
            if step % 5 == 4:
                continue
            cap = int(rng.integers(1, 4))
            want, got = hs.evictions(cap), ds.evictions(cap)
            assert np.array_equal(got, want), (step, got, want)
            evicted += len(want)
        assert evicted > 30
        assert np.array_equal(ds.token_positions(), hs.token_positions())
        assert ds.save_state() == hs.save_state()  # the device tables, in the host format
        a, b = hs.stats(), ds.stats()
        assert (a.steps, a.tokens, a.evictions, a.cached) == (b.steps, b.tokens, b.evictions, b.cached)


# ---------------------------------------------------------------------------
# torch CUDA tensors: a real GPU only.


def _torch_cuda():
    try:
        import torch
    except Exception as exc:
        pytest.skip(f"SKIPPED: torch is not installed ({exc.__class__.__name__}); torch CUDA tensors NOT tested")
    if not torch.cuda.is_available():
        pytest.skip("SKIPPED: no CUDA GPU (torch.cuda.is_available() is False); torch CUDA tensors NOT tested "
                    "(the emulated-driver tests above cover the library's CUDA path)")
    return torch


@pytest.mark.skipif(CHILD != "", reason="parent process only")
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_torch_cuda_matches_cpu(dtype):
    torch = _torch_cuda()
    g = torch.Generator().manual_seed(3)
    with hashevict.Engine(**SHAPE) as ce, hashevict.Engine(**SHAPE) as ge:
        cs, gs = ce.sequence(0), ge.sequence(0)
        for step in range(40):
            q = torch.randn(1, 4, 32, generator=g).to(getattr(torch, dtype))
            k = torch.randn(1, 2, 32, generator=g).to(getattr(torch, dtype))
            for layer in range(2):
                want = cs.place(layer, q, k, [step])
                if step % 2:
                    got = gs.place_async(layer, q.cuda(), k.cuda(), step)
                    assert got.slots.device.type == "cuda"
                    torch.cuda.current_stream().synchronize()
                    got = hashevict.Placement(got.slots.view(1, 2), got.evicted.view(1, 2))
                else:
                    got = gs.place(layer, q.cuda(), k.cuda(), [step])
                    assert got.slots.device.type == "cuda"
                assert torch.equal(got.slots.cpu(), want.slots) and torch.equal(got.evicted.cpu(), want.evicted)
        x = torch.randn(3, 2, 32, generator=g).to(getattr(torch, dtype))
        assert torch.equal(ge.hash(0, x.cuda()).cpu(), ce.hash(0, x))
