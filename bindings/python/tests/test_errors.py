"""Every failure maps to its exception class, carries the library's message
when the library refused the call, and leaves the interpreter running."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import randn

import hashevict
from hashevict import _ffi
from hashevict import reference as ref


def last_error() -> str:
    return hashevict.library().hashevict_last_error().decode()


def assert_library_error(excinfo, cls, function, *fragments):
    e = excinfo.value
    assert type(e) is cls, f"{type(e).__name__} raised, {cls.__name__} wanted"
    assert e.status == cls.status and e.status_name == hashevict.status_string(cls.status)
    assert e.function == function and e.from_library
    # The message is the library's, read on this thread right after the call.
    assert str(e) == e.message == last_error() != ""
    for f in fragments:
        assert f in str(e), (f, str(e))


def assert_binding_error(excinfo, cls, *fragments):
    e = excinfo.value
    assert type(e) is cls and not e.from_library
    for f in fragments:
        assert f in str(e), (f, str(e))


@pytest.fixture
def eng():
    with hashevict.Engine(n_layers=2, n_kv_heads=2, n_q_heads=4, head_dim=8, budget=16, n_sink=2, n_recent=3) as e:
        yield e


@pytest.fixture
def seq(eng):
    with eng.sequence(0) as s:
        yield s


@pytest.fixture
def qk(rng):
    return randn(rng, (1, 4, 8)), randn(rng, (1, 2, 8))


# -- dtypes -----------------------------------------------------------------
def test_float64_refused(seq, qk):
    q, k = qk
    with pytest.raises(hashevict.Unsupported) as ei:
        seq.place(0, q.astype(np.float64), k, 0)
    assert_binding_error(ei, hashevict.Unsupported, "q has dtype float64", "astype(np.float32)")
    assert isinstance(ei.value, TypeError)


def test_int32_refused(seq, qk):
    q, k = qk
    with pytest.raises(hashevict.Unsupported) as ei:
        seq.place(0, q, k.astype(np.int32), 0)
    assert_binding_error(ei, hashevict.Unsupported, "k has dtype int32")


def test_byteswapped_refused(eng, rng):
    with pytest.raises(hashevict.Unsupported) as ei:
        eng.hash(0, randn(rng, (1, 1, 8)).astype(">f4"))
    assert_binding_error(ei, hashevict.Unsupported, "non-native byte order")


def test_list_input_is_float64(eng):
    with pytest.raises(hashevict.Unsupported):
        eng.hash(0, [[0.5] * 8])


# -- layouts and shapes -----------------------------------------------------
def test_noncontiguous_innermost_dim(seq, rng):
    q = randn(rng, (1, 4, 16))[:, :, ::2]
    k = randn(rng, (1, 2, 8))
    with pytest.raises(hashevict.ShapeError) as ei:
        seq.place(0, q, k, 0)
    assert_binding_error(ei, hashevict.ShapeError, "q is non-contiguous in its last dimension", "stride 8 bytes")


def test_wrong_ndim(seq, qk):
    q, k = qk
    with pytest.raises(hashevict.ShapeError) as ei:
        seq.place(0, q[0], k, 0)
    assert_binding_error(ei, hashevict.ShapeError, "q must be a 3-d array", "(4, 8)")
    with pytest.raises(hashevict.ShapeError):
        seq.place(0, q, k[None], 0)


def test_wrong_head_dim(seq, rng):
    with pytest.raises(hashevict.ShapeError) as ei:
        seq.place(0, randn(rng, (1, 4, 8)), randn(rng, (1, 2, 7)), 0)
    assert_library_error(ei, hashevict.ShapeError, "hashevict_place", "k has shape [1 tokens][2 heads][7]", "want [1][2][8]")


def test_wrong_n_heads(seq, rng):
    with pytest.raises(hashevict.ShapeError) as ei:
        seq.place(0, randn(rng, (1, 2, 8)), randn(rng, (1, 2, 8)), 0)
    assert_library_error(ei, hashevict.ShapeError, "hashevict_place", "q has shape [1 tokens][2 heads][8]", "want [1][4][8]")


def test_n_tokens_vs_positions(seq, rng):
    with pytest.raises(hashevict.ShapeError) as ei:
        seq.place(0, randn(rng, (2, 4, 8)), randn(rng, (2, 2, 8)), [5])
    assert_library_error(ei, hashevict.ShapeError, "hashevict_place", "2 tokens", "n_tokens = 1")


def test_zero_stride_heads_refused(seq, rng):
    q = np.broadcast_to(randn(rng, (1, 1, 8)), (1, 4, 8))
    with pytest.raises(hashevict.ShapeError) as ei:
        seq.place(0, q, randn(rng, (1, 2, 8)), 0)
    assert_library_error(ei, hashevict.ShapeError, "hashevict_place", "positive multiples")


def test_negative_strides_refused(seq, rng):
    k = randn(rng, (1, 2, 8))[:, ::-1]
    with pytest.raises(hashevict.ShapeError) as ei:
        seq.place(0, randn(rng, (1, 4, 8)), k, 0)
    assert_library_error(ei, hashevict.ShapeError, "hashevict_place", "positive multiples")


def test_empty_chunk(seq):
    with pytest.raises(hashevict.InvalidArgument) as ei:
        seq.place(0, np.zeros((0, 4, 8), np.float32), np.zeros((0, 2, 8), np.float32), [])
    assert_library_error(ei, hashevict.InvalidArgument, "hashevict_place", "n_tokens = 0")


# -- values ---------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_input(seq, qk, bad):
    q, k = qk
    q = q.copy()
    q[0, 3, 5] = bad
    with pytest.raises(hashevict.NonFinite) as ei:
        seq.place(1, q, k, 0)
    assert_library_error(ei, hashevict.NonFinite, "hashevict_place", "q row of token 0, head 3 holds NaN or Inf")
    assert seq.stats().steps == 0  # nothing changed


def test_nonfinite_f16(eng):
    x = np.zeros((1, 1, 8), np.float16)
    x[0, 0, 2] = np.float16(np.nan)
    with pytest.raises(hashevict.NonFinite) as ei:
        eng.hash(0, x)
    assert_library_error(ei, hashevict.NonFinite, "hashevict_hash", "NaN or Inf")


def test_positions_not_increasing(seq, rng):
    seq.place(0, randn(rng, (1, 4, 8)), randn(rng, (1, 2, 8)), 7)
    with pytest.raises(hashevict.PositionError) as ei:
        seq.place(0, randn(rng, (1, 4, 8)), randn(rng, (1, 2, 8)), 7)
    assert_library_error(ei, hashevict.PositionError, "hashevict_place", "positions[0] = 7")
    with pytest.raises(hashevict.PositionError) as ei:
        seq.place(1, randn(rng, (2, 4, 8)), randn(rng, (2, 2, 8)), [3, 3])
    assert_library_error(ei, hashevict.PositionError, "hashevict_place", "strictly increase")


def test_positions_type_checked(seq, qk):
    q, k = qk
    with pytest.raises(hashevict.PositionError) as ei:
        seq.place(0, q, k, [0.5])
    assert_binding_error(ei, hashevict.PositionError, "integers")
    with pytest.raises(hashevict.PositionError) as ei:
        seq.place(0, q, k, [2**31])
    assert_binding_error(ei, hashevict.PositionError, "int32")


# -- sequences, handles, modes ----------------------------------------------
def test_unknown_sequence(eng, qk):
    with pytest.raises(hashevict.UnknownSequence) as ei:
        eng.stats(5)
    assert_library_error(ei, hashevict.UnknownSequence, "hashevict_stats_get", "sequence 5 does not exist")
    ghost = hashevict.Sequence(eng, 9)  # an object for an id never added
    with pytest.raises(hashevict.UnknownSequence) as ei:
        ghost.place(0, *qk, 0)
    assert_library_error(ei, hashevict.UnknownSequence, "hashevict_place", "sequence 9")
    ghost._open = False


def test_sequence_id_out_of_range(eng):
    with pytest.raises(hashevict.OutOfRange) as ei:
        eng.sequence(64)
    assert_library_error(ei, hashevict.OutOfRange, "hashevict_seq_add", "outside [0, max_seqs = 64)")


def test_layer_out_of_range(seq, qk):
    with pytest.raises(hashevict.OutOfRange) as ei:
        seq.place(2, *qk, 0)
    assert_library_error(ei, hashevict.OutOfRange, "hashevict_place", "layer 2")


def test_sequence_exists(eng, seq):
    with pytest.raises(hashevict.SequenceExists) as ei:
        eng.sequence(0)
    assert_library_error(ei, hashevict.SequenceExists, "hashevict_seq_add", "already exists")
    with pytest.raises(hashevict.SequenceExists):
        seq.fork(0)


def test_use_after_close_engine(eng, qk):
    s = eng.sequence(1)
    eng.close()
    for call in (lambda: eng.sequence(2), lambda: eng.hash(0, qk[1]), lambda: eng.stats(), lambda: s.place(0, *qk, 0)):
        with pytest.raises(hashevict.EngineClosed) as ei:
            call()
        assert isinstance(ei.value, hashevict.InvalidHandle)
        assert_binding_error(ei, hashevict.EngineClosed, "closed")


def test_use_after_close_sequence(eng, qk):
    s = eng.sequence(1)
    s.close()
    for call in (lambda: s.place(0, *qk, 0), lambda: s.reset(), lambda: s.stats(), lambda: s.fork(3)):
        with pytest.raises(hashevict.SequenceClosed) as ei:
            call()
        assert isinstance(ei.value, hashevict.UnknownSequence)
        assert_binding_error(ei, hashevict.SequenceClosed, "sequence 1 is closed")
    # the id is free again, and the old object does not reach the new sequence
    s2 = eng.sequence(1)
    with pytest.raises(hashevict.SequenceClosed):
        s.place(0, *qk, 0)
    s2.close()


def test_dead_handle_rejected_by_library(lib):
    """The bindings never pass a freed handle, but the library also refuses one."""
    p = lib.hashevict_default_params_v2()
    p.n_layers, p.n_kv_heads, p.n_q_heads, p.head_dim, p.budget = 1, 1, 1, 4, 20
    h = _ffi.hashevict_engine_p()
    assert lib.hashevict_engine_create(ctypes.byref(p), ctypes.byref(h)) == 0
    lib.hashevict_engine_free(h)
    lib.hashevict_engine_free(h)  # documented no-op
    with pytest.raises(hashevict.InvalidHandle) as ei:
        hashevict.engine._call("hashevict_seq_add", h, 0)
    assert_library_error(ei, hashevict.InvalidHandle, "hashevict_seq_add", "not a live engine")


def test_wrong_mode(eng, seq, qk):
    with pytest.raises(hashevict.WrongMode) as ei:
        seq.observe(0, *qk, 0)
    assert_library_error(ei, hashevict.WrongMode, "hashevict_observe", "token-mode engine", "slot mode")
    with pytest.raises(hashevict.WrongMode) as ei:
        seq.evictions()
    with pytest.raises(hashevict.WrongMode):
        seq.token_positions()
    with hashevict.Engine(mode="token", n_layers=1, n_kv_heads=2, n_q_heads=4, head_dim=8, budget=20) as te:
        with te.sequence(0) as ts:
            with pytest.raises(hashevict.WrongMode) as ei:
                ts.place(0, *qk, 0)
            assert_library_error(ei, hashevict.WrongMode, "hashevict_place", "slot-mode engine")
            with pytest.raises(hashevict.WrongMode):
                ts.slot_positions(0, 0)


# -- parameters and the remaining statuses -----------------------------------
def test_invalid_params():
    with pytest.raises(hashevict.InvalidParams) as ei:
        hashevict.Engine(n_layers=1, n_kv_heads=1, head_dim=8, budget=14)
    assert_library_error(ei, hashevict.InvalidParams, "hashevict_engine_create", "budget = 14 must exceed n_sink + n_recent")
    with pytest.raises(hashevict.InvalidParams) as ei:
        hashevict.Engine(n_layers=1, n_kv_heads=1, head_dim=8, budget=20, hash_bits=12)
    assert_library_error(ei, hashevict.InvalidParams, "hashevict_engine_create", "hash_bits = 12")
    with pytest.raises(hashevict.InvalidParams) as ei:
        hashevict.Engine(n_layers=1, n_kv_heads=1, head_dim=8, budget=20, policy=7)
    assert_library_error(ei, hashevict.InvalidParams, "hashevict_engine_create", "policy 7")
    with pytest.raises(hashevict.InvalidParams) as ei:
        hashevict.Engine(n_layers=1, n_kv_heads=1, head_dim=8, budget=20, score="mean")
    assert_binding_error(ei, hashevict.InvalidParams, "'instant'")


def test_memory_cap():
    with pytest.raises(hashevict.MemoryCap) as ei:
        hashevict.Engine(n_layers=4, n_kv_heads=4, head_dim=8, budget=1000, memory_cap_bytes=1000)
    assert_library_error(ei, hashevict.MemoryCap, "hashevict_engine_create", "memory_cap_bytes = 1000")


def test_chunk_too_large(seq, rng):
    with pytest.raises(hashevict.ChunkTooLarge) as ei:
        seq.place(0, randn(rng, (17, 4, 8)), randn(rng, (17, 2, 8)), np.arange(17))
    assert_library_error(ei, hashevict.ChunkTooLarge, "hashevict_place", "chunk of 17 tokens")
    assert seq.stats().steps == 0


def test_buffer_too_small(eng, lib):
    out = np.zeros(3, np.float32)
    with eng._h as h, pytest.raises(hashevict.BufferTooSmall) as ei:
        hashevict.engine._call("hashevict_projection", h, 0, out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), 3)
    assert_library_error(ei, hashevict.BufferTooSmall, "hashevict_projection", "need hash_bits*head_dim = 128")


def test_invalid_argument_missing_queries(seq, qk):
    with pytest.raises(hashevict.InvalidArgument) as ei:
        seq.place(0, None, qk[1], 0)
    assert_library_error(ei, hashevict.InvalidArgument, "hashevict_place", "q is NULL")


class _FakeCudaTensor:
    """Stands in for a torch CUDA tensor (duck-typed like one)."""

    __module__ = "torch.fake"

    class dtype:  # noqa: N801 - mimics torch.float32's str()
        def __str__(self):
            return "torch.float32"

    def __init__(self, shape):
        self.shape = shape
        self.dtype = self.dtype()
        self.device = type("device", (), {"type": "cuda", "index": 0})()

    def data_ptr(self):
        return 0x7F0000000000  # never dereferenced: the library refuses CUDA first

    def element_size(self):
        return 4

    def stride(self):
        n, h, d = self.shape
        return (h * d, d, 1)


def test_cuda_tensor_unsupported(seq, qk):
    with pytest.raises(hashevict.Unsupported) as ei:
        seq.place(0, qk[0], _FakeCudaTensor((1, 2, 8)), 0)
    assert_library_error(ei, hashevict.Unsupported, "hashevict_place", "CUDA device")
    v = hashevict._tensors.describe(_FakeCudaTensor((1, 2, 8)), "k")
    assert v.desc.device == _ffi.HASHEVICT_DEVICE_CUDA


def test_internal_error_poisons_engine(qk):
    """A recovered panic (HASHEVICT_TEST_PANIC, read at create) is
    InternalError; the engine stays poisoned, the process lives."""
    os.environ["HASHEVICT_TEST_PANIC"] = "hashevict_place"
    try:
        e = hashevict.Engine(n_layers=1, n_kv_heads=2, n_q_heads=4, head_dim=8, budget=20)
    finally:
        del os.environ["HASHEVICT_TEST_PANIC"]
    with e:
        s = e.sequence(0)
        with pytest.raises(hashevict.InternalError) as ei:
            s.place(0, *qk, 0)
        assert_library_error(ei, hashevict.InternalError, "hashevict_place", "poisoned")
        with pytest.raises(hashevict.InternalError) as ei:
            s.stats()
        assert_library_error(ei, hashevict.InternalError, "hashevict_stats_get", "poisoned")


def test_bad_inputs_never_kill_the_interpreter():
    """The same refusals in a child process, which must exit normally."""
    code = r"""
import numpy as np, hashevict
e = hashevict.Engine(n_layers=1, n_kv_heads=2, n_q_heads=4, head_dim=8, budget=16)
s = e.sequence(0)
q = np.zeros((1, 4, 8), np.float32); k = np.zeros((1, 2, 8), np.float32)
bad = [
    lambda: s.place(0, q.astype(np.float64), k, 0),
    lambda: s.place(0, np.zeros((1, 4, 16), np.float32)[..., ::2], k, 0),
    lambda: s.place(0, q, np.zeros((3, 2, 8), np.float32), 0),
    lambda: s.place(0, q * np.nan, k, 0),
    lambda: s.place(5, q, k, 0),
    lambda: s.observe(0, q, k, 0),
    lambda: hashevict.Sequence(e, 3).place(0, q, k, 0),
]
n = 0
for f in bad:
    try:
        f()
    except hashevict.HashevictError:
        n += 1
e.close()
try:
    s.place(0, q, k, 1)
except hashevict.EngineClosed:
    n += 1
print(n)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "8"


# -- inputs the policy does not read ------------------------------------------
@pytest.mark.parametrize("policy,probe", [("hash", "key"), ("sink_recent", "query"), ("knorm", "query"), ("random", "key")])
def test_nan_in_a_q_never_read_is_accepted(rng, policy, probe):
    """A q the policy never reads has no effect: the same steps with q full of
    NaN and with q = None place identically, and the reference (which does not
    model "random") agrees."""
    kw = dict(n_layers=1, n_kv_heads=2, n_q_heads=4, head_dim=8, budget=8, n_sink=1, n_recent=2, policy=policy, probe=probe)
    nan_q = np.full((1, 4, 8), np.nan, np.float32)
    with hashevict.Engine(**kw) as a, hashevict.Engine(**kw) as b, a.sequence(0) as sa, b.sequence(0) as sb:
        r = ref.Reference(**kw) if policy != "random" else None
        if r is not None:
            r.add(0)
        for t in range(20):
            k = randn(rng, (1, 2, 8))
            got = sa.place(0, nan_q, k, t)
            want = sb.place(0, None, k, t)
            assert (got.slots == want.slots).all() and (got.evicted == want.evicted).all()
            if r is not None:
                rs, _ = r.place(0, 0, nan_q, k, [t])
                assert (np.asarray(rs) == got.slots).all()


def test_state_save_null_buffer_reports_the_size(seq, qk):
    q, k = qk
    seq.place(0, q, k, 0)
    lib, e = hashevict.library(), seq.engine._h._ptr
    need, written = ctypes.c_size_t(0), ctypes.c_size_t(0)
    assert lib.hashevict_seq_state_size(e, 0, ctypes.byref(need)) == _ffi.HASHEVICT_OK
    st = lib.hashevict_seq_state_save(e, 0, None, 0, ctypes.byref(written))
    assert st == _ffi.HASHEVICT_ERR_BUFFER_TOO_SMALL and written.value == need.value > 0
    assert str(need.value) in last_error()
    assert len(seq.save_state()) == need.value
