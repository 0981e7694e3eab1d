"""torch tensors (optional: every test here skips when torch is absent)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import torch_or_skip

import hashevict
from hashevict import reference as ref

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def torch():
    return torch_or_skip()


@pytest.fixture
def eng():
    with hashevict.Engine(n_layers=2, n_kv_heads=2, n_q_heads=4, head_dim=24, budget=16, hash_bits=64,
                          n_sink=2, n_recent=3) as e:
        yield e


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_hash_matches_reference(torch, eng, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 24, generator=g).to(getattr(torch, dtype))
    got = eng.hash(0, x)
    assert np.array_equal(got, ref.codes(x, eng.projection(0)))
    assert np.array_equal(got, eng.hash(0, x.float().numpy()))  # exact widening


def test_zero_copy_pointer_and_strides(torch, eng):
    base = torch.randn(4, 2, 3, 24)
    x = base[:, :, 1]  # [4, 2, 24], strided outer dims, storage offset
    v = hashevict._tensors.describe(x, "x")
    assert v.desc.data == x.data_ptr() and v.desc.token_stride == 2 * 3 * 24 * 4 and v.desc.head_stride == 3 * 24 * 4
    assert np.array_equal(eng.hash(1, x), eng.hash(1, x.contiguous()))


def test_noncontiguous_innermost_refused(torch, eng):
    x = torch.randn(1, 2, 48)[:, :, ::2]
    with pytest.raises(hashevict.ShapeError, match="non-contiguous in its last dimension"):
        eng.hash(0, x)


def test_wrong_dtype_refused(torch, eng):
    with pytest.raises(hashevict.Unsupported, match="torch.float64"):
        eng.hash(0, torch.randn(1, 1, 24, dtype=torch.float64))
    with pytest.raises(hashevict.Unsupported, match="torch.int32"):
        eng.hash(0, torch.zeros(1, 1, 24, dtype=torch.int32))


def test_requires_grad_and_nan(torch, eng):
    x = torch.randn(1, 2, 24, requires_grad=True)
    eng.hash(0, x)
    bad = torch.randn(1, 2, 24)
    bad[0, 1, 3] = float("nan")
    with pytest.raises(hashevict.NonFinite) as ei:
        eng.hash(0, bad)
    assert ei.value.from_library and "NaN or Inf" in str(ei.value)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("score", ["instant", "decayed"])
def test_place_matches_reference(torch, dtype, score):
    kw = dict(n_layers=2, n_kv_heads=2, n_q_heads=8, head_dim=16, budget=14, hash_bits=32, n_sink=2, n_recent=3,
              score=score)
    g = torch.Generator().manual_seed(1)
    dt = getattr(torch, dtype)
    decisions = 0
    with hashevict.Engine(**kw) as eng, eng.sequence(0) as s:
        model = ref.Reference(**kw)
        model.add(0)
        for t in range(120):
            for layer in range(2):
                q = torch.randn(1, 8, 16, generator=g).to(dt)
                k = torch.randn(2, 1, 16, generator=g).to(dt).transpose(0, 1)  # strided view
                got, want = s.place(layer, q, k, t), model.place(0, layer, q, k, t)
                assert np.array_equal(got.slots.numpy(), want[0]) and np.array_equal(got.evicted.numpy(), want[1])
                decisions += int((got.evicted >= 0).sum())
    assert decisions > 300


def test_place_returns_torch_for_torch(torch):
    """torch in, torch out: int32 tensors on k's device with the same values
    as the numpy path; numpy in still gives numpy."""
    kw = dict(n_layers=1, n_kv_heads=2, n_q_heads=4, head_dim=16, budget=8, n_sink=1, n_recent=2)
    g = torch.Generator().manual_seed(3)
    with hashevict.Engine(**kw) as a, hashevict.Engine(**kw) as b:
        sa, sb = a.sequence(0), b.sequence(0)
        for t in range(30):
            q, k = torch.randn(1, 4, 16, generator=g), torch.randn(1, 2, 16, generator=g)
            got = sa.place(0, q, k, t)
            want = sb.place(0, q.numpy(), k.numpy(), t)
            assert isinstance(want.slots, np.ndarray) and isinstance(want.evicted, np.ndarray)
            for tt, nn in ((got.slots, want.slots), (got.evicted, want.evicted)):
                assert isinstance(tt, torch.Tensor) and tt.dtype == torch.int32 and tt.device == k.device
                assert tt.shape == (1, 2) and np.array_equal(tt.numpy(), nn)
        assert (got.evicted >= 0).all()  # the budget was full: the last steps evicted


def test_placement_shares_the_library_buffer(torch):
    """On the CPU the result tensor is the buffer the library wrote, not a
    copy: its storage is a numpy allocation of exactly the result's size."""
    with hashevict.Engine(n_layers=1, n_kv_heads=2, head_dim=8, budget=16) as e:
        q = torch.randn(3, 2, 8)
        slots, evicted = e.sequence(0).place(0, q, q, [0, 1, 2])
        assert slots.is_contiguous() and slots.untyped_storage().nbytes() == 3 * 2 * 4
        assert slots.tolist() == [[0, 0], [1, 1], [2, 2]] and evicted.tolist() == [[-1, -1]] * 3


def test_hash_returns_torch_uint64(torch, eng):
    x = torch.randn(5, 3, 24, dtype=torch.float16)
    got = eng.hash(0, x)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.uint64 and got.shape == (5, 3, 1)
    assert np.array_equal(got.numpy(), eng.hash(0, x.float().numpy()))
    assert isinstance(eng.hash(0, x.numpy()), np.ndarray)


def test_meta_tensor_refused(torch, eng):
    with pytest.raises(hashevict.Unsupported, match="device meta"):
        eng.hash(0, torch.empty(1, 1, 24, device="meta"))


def test_cuda_tensor_is_unsupported(torch, eng):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    s = eng.sequence(0)
    q = torch.randn(1, 4, 24, device="cuda")
    k = torch.randn(1, 2, 24, device="cuda")
    with pytest.raises(hashevict.Unsupported, match="CUDA") as ei:
        s.place(0, q, k, 0)
    assert ei.value.from_library
