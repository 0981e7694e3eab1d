"""Turns numpy arrays and torch tensors into ``hashevict_tensor`` views.

Nothing is copied: the descriptor points at the caller's memory with the
array's real byte strides, and the caller keeps the array alive for the
duration of the C call. The bindings check only what the descriptor cannot
express (the number of dimensions, a non-unit innermost stride, the element
type, the device); the head count, head_dim, token count, strides and values
are checked by the library, whose message then reaches the exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _ffi
from .errors import InvalidArgument, ShapeError, Unsupported

_DTYPE_NAMES = {
    _ffi.HASHEVICT_DTYPE_F32: "float32",
    _ffi.HASHEVICT_DTYPE_F16: "float16",
    _ffi.HASHEVICT_DTYPE_BF16: "bfloat16",
}


class bf16:
    """Marks a numpy ``uint16`` array as holding raw bfloat16 bit patterns.

    numpy has no bfloat16 type; ``Engine.hash(0, hashevict.bf16(bits))`` and
    ``place(..., q=hashevict.bf16(q_bits), ...)`` pass such arrays without a
    copy. (Arrays of ``ml_dtypes.bfloat16`` and torch bfloat16 tensors are
    recognised directly.)
    """

    __slots__ = ("array",)

    def __init__(self, array):
        a = np.asarray(array)
        if a.dtype != np.dtype(np.uint16):
            raise Unsupported(f"hashevict.bf16() wants the raw bits as a uint16 array, got dtype {a.dtype}")
        self.array = a

    @property
    def shape(self):
        return self.array.shape


@dataclass
class View:
    """A descriptor and the object that owns its memory."""

    desc: _ffi.hashevict_tensor
    owner: Any
    shape: tuple  # (n_tokens, n_heads, head_dim)
    dtype: int
    device: int


def _is_torch(x) -> bool:
    # Duck-typed so that torch is never imported by the bindings themselves.
    t = type(x)
    return (
        t.__module__.split(".")[0] == "torch"
        and hasattr(x, "data_ptr")
        and hasattr(x, "element_size")
        and hasattr(x, "stride")
    )


def _fix_unit_strides(shape, strides, itemsize):
    """Strides of length-1 dimensions are meaningless (numpy and torch may
    report 0 or anything); give them the value of a packed layout so that the
    library, which wants positive multiples of the element size, accepts
    them."""
    n_tokens, n_heads, head_dim = shape
    token_stride, head_stride, inner = strides
    if 0 in shape:  # nothing to read; the library refuses the empty dimension
        return max(n_heads, 1) * max(head_dim, 1) * itemsize, max(head_dim, 1) * itemsize, itemsize
    if head_dim == 1:
        inner = itemsize
    if n_heads == 1:
        head_stride = head_dim * itemsize
    if n_tokens == 1:
        token_stride = max(n_heads, 1) * max(head_stride, head_dim * itemsize)
    return token_stride, head_stride, inner


def _expand(shape, strides, ndim, what):
    """Accepts fewer than three dimensions only where ``ndim`` allows it:
    (head_dim,) -> (1, 1, head_dim) and (rows, head_dim) -> (rows, 1, head_dim)."""
    if len(shape) == 3:
        return tuple(shape), tuple(strides)
    if ndim == 3 or len(shape) not in (1, 2):
        raise ShapeError(
            f"{what} must be a 3-d array [n_tokens, n_heads, head_dim]; got {len(shape)}-d shape {tuple(shape)}"
        )
    if len(shape) == 1:
        return (1, 1, shape[0]), (0, 0, strides[0])
    return (shape[0], 1, shape[1]), (strides[0], 0, strides[1])


def _numpy_dtype_code(dt: np.dtype, what: str) -> int:
    if dt == np.dtype(np.float32):
        return _ffi.HASHEVICT_DTYPE_F32
    if dt == np.dtype(np.float16):
        return _ffi.HASHEVICT_DTYPE_F16
    if dt.name == "bfloat16" and dt.itemsize == 2:  # ml_dtypes.bfloat16
        return _ffi.HASHEVICT_DTYPE_BF16
    hint = ""
    if dt.kind == "f" and dt.byteorder not in ("=", "|") and dt.newbyteorder("=") in (
        np.dtype(np.float32),
        np.dtype(np.float16),
    ):
        hint = " (non-native byte order; use x.astype(x.dtype.newbyteorder('=')))"
    elif dt.kind in "fiub":
        hint = " (convert with x.astype(np.float32))"
    raise Unsupported(
        f"{what} has dtype {dt}; hashevict takes float32, float16 or bfloat16 (torch, ml_dtypes "
        f"or hashevict.bf16){hint}"
    )


def describe(x, what: str, ndim: int = 3) -> View:
    """The ``hashevict_tensor`` of ``x`` (numpy array, torch tensor,
    :class:`bf16` or anything ``np.asarray`` accepts).

    ``ndim=3`` demands [n_tokens, n_heads, head_dim]; ``ndim=0`` also accepts
    1-d and 2-d inputs (see :func:`_expand`)."""
    stream = None
    device = _ffi.HASHEVICT_DEVICE_HOST
    if isinstance(x, bf16):
        arr = x.array
        code = _ffi.HASHEVICT_DTYPE_BF16
        itemsize = 2
        owner = arr
        shape, strides, ptr = arr.shape, arr.strides, arr.ctypes.data
    elif _is_torch(x):
        name = str(x.dtype)
        code = {
            "torch.float32": _ffi.HASHEVICT_DTYPE_F32,
            "torch.float16": _ffi.HASHEVICT_DTYPE_F16,
            "torch.bfloat16": _ffi.HASHEVICT_DTYPE_BF16,
        }.get(name)
        if code is None:
            raise Unsupported(
                f"{what} has dtype {name}; hashevict takes torch.float32, torch.float16 or torch.bfloat16"
            )
        if getattr(x, "is_neg", None) is not None and x.is_neg():
            raise Unsupported(f"{what} is a lazily negated view; call .resolve_neg() first")
        dev = x.device
        if dev.type == "cpu":
            device = _ffi.HASHEVICT_DEVICE_HOST
        elif dev.type == "cuda":
            device = _ffi.HASHEVICT_DEVICE_CUDA
            stream = _cuda_stream(x)
        else:
            raise Unsupported(f"{what} is on device {dev}; hashevict takes cpu or cuda tensors")
        itemsize = int(x.element_size())
        owner = x
        shape = tuple(int(s) for s in x.shape)
        strides = tuple(int(s) * itemsize for s in x.stride())
        ptr = int(x.data_ptr())
    elif _cuda_interface(x) is not None:
        cai = _cuda_interface(x)
        code = _CAI_DTYPES.get(cai["typestr"])
        if code is None:
            raise Unsupported(
                f"{what} has typestr {cai['typestr']!r} (__cuda_array_interface__); hashevict takes '<f4' or "
                f"'<f2' there (bfloat16 has no typestr: pass a torch bfloat16 tensor)"
            )
        itemsize = int(cai["typestr"][2:])
        owner = x
        shape = tuple(int(d) for d in cai["shape"])
        strides = cai.get("strides") or _packed_strides(shape, itemsize)
        strides = tuple(int(d) for d in strides)
        ptr = int(cai["data"][0])
        device = _ffi.HASHEVICT_DEVICE_CUDA
        # Version 3: the stream the producer's work is on (1 legacy, 2 per
        # thread), None when none needs ordering; the library queues its
        # reads on it.
        stream = cai.get("stream") or None
    else:
        arr = x if isinstance(x, np.ndarray) else np.asarray(x)
        code = _numpy_dtype_code(arr.dtype, what)
        itemsize = arr.dtype.itemsize
        owner = arr
        shape, strides, ptr = arr.shape, arr.strides, arr.ctypes.data

    shape, strides = _expand(shape, strides, ndim, what)
    token_stride, head_stride, inner = _fix_unit_strides(shape, strides, itemsize)
    if inner != itemsize:
        raise ShapeError(
            f"{what} is non-contiguous in its last dimension (stride {inner} bytes, element size "
            f"{itemsize}): head_dim elements must be adjacent; pass a contiguous copy "
            f"(np.ascontiguousarray / .contiguous())"
        )
    desc = _ffi.hashevict_tensor(
        data=ptr or None,
        dtype=code,
        device=device,
        head_dim=shape[2],
        n_heads=shape[1],
        n_tokens=shape[0],
        head_stride=head_stride,
        token_stride=token_stride,
        stream=stream,
    )
    return View(desc=desc, owner=owner, shape=shape, dtype=code, device=device)


# __cuda_array_interface__ type strings hashevict takes (little-endian
# float32 and float16; "=" is not allowed there by the protocol).
_CAI_DTYPES = {"<f4": _ffi.HASHEVICT_DTYPE_F32, "<f2": _ffi.HASHEVICT_DTYPE_F16}


def _cuda_interface(x):
    """The ``__cuda_array_interface__`` of x (CuPy, Numba, ...), or None.
    torch tensors have one too but take the torch path above (which also
    knows bfloat16 and the current stream)."""
    try:
        cai = getattr(x, "__cuda_array_interface__", None)
    except Exception:  # a torch dtype the protocol cannot express
        return None
    return cai if isinstance(cai, dict) else None


def _packed_strides(shape, itemsize):
    strides, step = [], itemsize
    for d in reversed(shape):
        strides.append(step)
        step *= max(int(d), 1)
    return tuple(reversed(strides))


def device_int32(x, n: int, what: str) -> int:
    """The device address of ``x``, contiguous CUDA int32 memory of at least
    ``n`` elements (a torch CUDA tensor or a ``__cuda_array_interface__``
    object), for the outputs of ``hashevict_place_async``. The library checks
    that the address is device memory of the step's context."""
    if _is_torch(x):
        if x.device.type != "cuda" or str(x.dtype) != "torch.int32" or not x.is_contiguous() or x.numel() < n:
            raise InvalidArgument(
                f"{what} must be a contiguous torch.int32 CUDA tensor of at least {n} elements; got "
                f"{x.dtype} on {x.device}, shape {tuple(x.shape)}"
            )
        return int(x.data_ptr())
    cai = _cuda_interface(x)
    if cai is None:
        raise InvalidArgument(f"{what} must be CUDA memory (a torch CUDA tensor or a __cuda_array_interface__ object)")
    shape = tuple(int(d) for d in cai["shape"])
    count = int(np.prod(shape)) if shape else 1
    strides = cai.get("strides")
    if cai["typestr"] not in ("<i4", "|i4") or count < n or (strides and tuple(strides) != _packed_strides(shape, 4)):
        raise InvalidArgument(
            f"{what} must be contiguous int32 ('<i4') of at least {n} elements; got {cai['typestr']!r}, shape {shape}"
        )
    return int(cai["data"][0])


def _cuda_stream(x):
    import sys

    torch = sys.modules.get("torch")
    try:
        return torch.cuda.current_stream(x.device).cuda_stream or None
    except Exception:  # no CUDA runtime, or a stand-in object
        return None


def torch_like(inputs, *arrays):
    """``arrays`` as torch tensors when any of ``inputs`` is a torch tensor,
    else unchanged.

    Results follow the caller's array library so that torch code never has
    to round-trip through numpy. On the CPU ``torch.from_numpy`` shares the
    buffer the library wrote (no copy); for a tensor on another device the
    result is copied there, because the library writes its results to host
    memory. The integer dtype is kept (int32 slots stay int32, uint64 codes
    stay uint64)."""
    src = next((x for x in inputs if _is_torch(x)), None)
    if src is None:
        return arrays if len(arrays) != 1 else arrays[0]
    import sys

    torch = sys.modules["torch"]  # imported already: the caller passed a tensor
    out = []
    for a in arrays:
        t = torch.from_numpy(a)
        if src.device.type != "cpu":
            t = t.to(src.device)
        out.append(t)
    return tuple(out) if len(out) != 1 else out[0]


def dtype_name(code: int) -> str:
    return _DTYPE_NAMES.get(code, f"dtype({code})")
