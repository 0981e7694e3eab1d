"""The Pythonic API over libhashevict: :class:`Engine` and :class:`Sequence`."""

from __future__ import annotations

import builtins
import ctypes
import enum
import threading
from ctypes import POINTER, byref, c_float, c_int32, c_size_t, c_uint64, c_void_p
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from . import _ffi
from ._tensors import _is_torch, describe, device_int32, torch_like
from .errors import (
    BufferTooSmall,
    EngineClosed,
    InvalidArgument,
    InvalidParams,
    OutOfRange,
    PositionError,
    SequenceClosed,
    ShapeError,
    Unsupported,
    error_for,
)

# ---------------------------------------------------------------------------
# The library
# ---------------------------------------------------------------------------
_lib = None
_lib_lock = threading.Lock()


def library() -> ctypes.CDLL:
    """The loaded libhashevict (loaded on first use; see ``_ffi.load``)."""
    global _lib
    if _lib is None:
        with _lib_lock:
            if _lib is None:
                _lib = _ffi.load()
    return _lib


def library_path() -> str:
    """Where the loaded library came from."""
    return library()._hashevict_path


def _call(name: str, *args) -> None:
    lib = library()
    status = getattr(lib, name)(*args)
    if status != _ffi.HASHEVICT_OK:
        # Same thread, no hashevict call in between: the thread-local message
        # is the one of this failure.
        raw = lib.hashevict_last_error()
        raise error_for(status, (raw or b"").decode("utf-8", "replace"), name)


def _need(name: str) -> None:
    """Raises Unsupported when the loaded library predates function ``name``."""
    lib = library()
    if name in lib._hashevict_missing:
        raise Unsupported(
            f"{name} is not in {lib._hashevict_path} (libhashevict {version()}); it was added in "
            f"libhashevict {_ffi.ADDED_IN[name]}"
        )


def _blob(data) -> np.ndarray:
    """A read-only uint8 view of a bytes-like state blob (no copy)."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8 or data.ndim != 1 or not data.flags.c_contiguous:
            raise ShapeError("a state blob array must be 1-d contiguous uint8")
        return data
    return np.frombuffer(memoryview(data).cast("B"), np.uint8)


def version() -> str:
    """The library's version string (``hashevict_version``)."""
    return library().hashevict_version().decode()


def _version_tuple() -> tuple:
    """(major, minor) of the loaded library; (0, 0) when unreadable."""
    try:
        major, minor = version().split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return (0, 0)


def abi_version() -> int:
    """The library's ABI version (``hashevict_abi_version``)."""
    return int(library().hashevict_abi_version())


def kernels() -> str:
    """The CPU kernel set in use: "avx512", "avx2" or "generic"."""
    return library().hashevict_kernels().decode()


def status_string(status: int) -> str:
    """``hashevict_status_string``: the C name of a status."""
    if isinstance(status, bool) or not isinstance(status, (int, np.integer)):
        raise InvalidArgument(f"status = {status!r}; want an int")
    if not _INT32_MIN <= int(status) <= _INT32_MAX:
        # not a hashevict_status at all; ctypes would wrap it onto one
        return "HASHEVICT_ERR_UNKNOWN_STATUS"
    return library().hashevict_status_string(int(status)).decode()


# ---------------------------------------------------------------------------
# Enumerations
# ---------------------------------------------------------------------------
class Mode(enum.IntEnum):
    SLOT = _ffi.HASHEVICT_MODE_SLOT
    TOKEN = _ffi.HASHEVICT_MODE_TOKEN


class Policy(enum.IntEnum):
    HASH = _ffi.HASHEVICT_POLICY_HASH
    SINK_RECENT = _ffi.HASHEVICT_POLICY_SINK_RECENT
    KNORM = _ffi.HASHEVICT_POLICY_KNORM
    RANDOM = _ffi.HASHEVICT_POLICY_RANDOM
    ORACLE = _ffi.HASHEVICT_POLICY_ORACLE


class Probe(enum.IntEnum):
    QUERY = _ffi.HASHEVICT_PROBE_QUERY
    KEY = _ffi.HASHEVICT_PROBE_KEY


class Score(enum.IntEnum):
    INSTANT = _ffi.HASHEVICT_SCORE_INSTANT
    ACCUMULATED = _ffi.HASHEVICT_SCORE_ACCUMULATED
    DECAYED = _ffi.HASHEVICT_SCORE_DECAYED


class Estimate(enum.IntEnum):
    """What the hash policy's score estimates (``hashevict_estimate``, 0.5.0)."""

    DISTANCE = _ffi.HASHEVICT_ESTIMATE_DISTANCE
    LOGIT = _ffi.HASHEVICT_ESTIMATE_LOGIT


class DType(enum.IntEnum):
    F32 = _ffi.HASHEVICT_DTYPE_F32
    F16 = _ffi.HASHEVICT_DTYPE_F16
    BF16 = _ffi.HASHEVICT_DTYPE_BF16


class Device(enum.IntEnum):
    HOST = _ffi.HASHEVICT_DEVICE_HOST
    CUDA = _ffi.HASHEVICT_DEVICE_CUDA


def _enum(cls, value, field):
    """Accepts a member, its name in any case ("sink_recent", "sink-recent")
    or an int (passed through: the library validates it)."""
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        key = value.strip().upper().replace("-", "_")
        if key in cls.__members__:
            return cls[key]
        names = ", ".join(repr(m.lower()) for m in cls.__members__)
        raise InvalidParams(f"{field} = {value!r}; want one of {names}")
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        try:
            return cls(int(value))
        except ValueError:
            return int(value)  # let the library refuse it with its message
    raise InvalidParams(f"{field} = {value!r}; want a {cls.__name__} name or value")


def _member(cls, value):
    try:
        return cls(value)
    except ValueError:
        return value


# ---------------------------------------------------------------------------
# Plain results
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Params:
    """An engine's parameters with the library's defaults resolved."""

    mode: Mode
    policy: Policy
    probe: Probe
    score: Score
    n_layers: int
    n_kv_heads: int
    n_q_heads: int
    head_dim: int
    hash_bits: int
    budget: int
    n_sink: int
    n_recent: int
    max_seqs: int
    decay: float
    seed: int
    memory_cap_bytes: int
    estimate: Estimate = Estimate.DISTANCE
    redundancy: float = 0.0

    @property
    def words(self) -> int:
        """uint64 words per code."""
        return (self.hash_bits + 63) // 64

    @property
    def group(self) -> int:
        """Query heads per KV head."""
        return self.n_q_heads // self.n_kv_heads

    @classmethod
    def _from_c(cls, p: _ffi.hashevict_params) -> "Params":
        return cls(
            mode=_member(Mode, p.mode),
            policy=_member(Policy, p.policy),
            probe=_member(Probe, p.probe),
            score=_member(Score, p.score),
            n_layers=p.n_layers,
            n_kv_heads=p.n_kv_heads,
            n_q_heads=p.n_q_heads,
            head_dim=p.head_dim,
            hash_bits=p.hash_bits,
            budget=p.budget,
            n_sink=p.n_sink,
            n_recent=p.n_recent,
            max_seqs=p.max_seqs,
            decay=float(p.decay),
            seed=int(p.seed),
            memory_cap_bytes=int(p.memory_cap_bytes),
            estimate=_member(Estimate, p.estimate),
            redundancy=float(p.redundancy),
        )


def default_params() -> Params:
    """``hashevict_default_params()`` (shape fields are 0)."""
    return Params._from_c(library().hashevict_default_params_v2())


@dataclass(frozen=True)
class Stats:
    """``hashevict_stats`` of a sequence or of a whole engine."""

    n_sequences: int
    state_bytes: int
    steps: int
    tokens: int
    evictions: int
    cached: int


class Placement(NamedTuple):
    """What ``Sequence.place`` returns, both [n_tokens, n_kv_heads] int32:
    the slot each new token's K/V goes to, and the position that slot held
    (-1 for a free slot). numpy arrays, or torch tensors on the device of
    ``k`` when ``k`` is a torch tensor."""

    slots: Any
    evicted: Any


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
_I32 = POINTER(c_int32)
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def _i32p(a: np.ndarray):
    return a.ctypes.data_as(_I32)


def _int32(value, what: str, too_big=OutOfRange) -> int:
    """``value`` as an int that fits the C ``int32_t`` it is passed as.

    ctypes converts a Python int to ``c_int32`` modulo 2**32 without a word,
    so ``sequence(2**32 + 2)`` would act on sequence 2: every int argument is
    checked here first. Ids, layers and heads outside int32 are outside any
    range the library accepts (``OutOfRange``, as the library would answer);
    counts pass ``too_big``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgument(f"{what} = {value!r}; want an int")
    v = int(value)
    if not _INT32_MIN <= v <= _INT32_MAX:
        raise too_big(f"{what} = {v} does not fit in int32 (the C argument is int32_t)")
    return v


def _positions(positions) -> np.ndarray:
    a = np.asarray(positions)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1:
        raise ShapeError(f"positions must be a 1-d sequence of ints; got shape {a.shape}")
    if a.size == 0:
        return np.zeros(0, np.int32)
    if a.dtype.kind not in "iu":
        raise PositionError(f"positions must be integers; got dtype {a.dtype}")
    lo, hi = int(a.min()), int(a.max())
    if lo < _INT32_MIN or hi > _INT32_MAX:
        raise PositionError(f"positions must fit in int32; got values in [{lo}, {hi}]")
    return np.ascontiguousarray(a, dtype=np.int32)


_COMPRESS_FORMS = {
    "cosine": _ffi.HASHEVICT_COMPRESS_COSINE,
    "distance": _ffi.HASHEVICT_COMPRESS_DISTANCE,
    "softmax": _ffi.HASHEVICT_COMPRESS_SOFTMAX,
}


_COMPRESS_FLAGS = {"local": _ffi.HASHEVICT_COMPRESS_LOCAL, "trailing": _ffi.HASHEVICT_COMPRESS_TRAILING}


def _compress_form(form) -> int:
    """A form name, optionally with flags ("cosine+local+trailing"), or the
    header's number."""
    if isinstance(form, str):
        base, *flags = form.lower().split("+")
        if base not in _COMPRESS_FORMS or any(f not in _COMPRESS_FLAGS for f in flags):
            raise InvalidArgument(
                f"form = {form!r}; want one of {sorted(_COMPRESS_FORMS)}, optionally followed by "
                f"+{' / +'.join(_COMPRESS_FLAGS)}"
            )
        value = _COMPRESS_FORMS[base]
        for f in flags:
            value |= _COMPRESS_FLAGS[f]
        return value
    return _int32(form, "form", too_big=InvalidArgument)


class _Handle:
    """The engine pointer plus a count of calls in flight, so that close()
    never frees the engine under a call on another thread (the header forbids
    that race)."""

    def __init__(self, ptr):
        self._ptr = ptr
        self._cond = threading.Condition(threading.Lock())
        self._inflight = 0

    @property
    def closed(self) -> bool:
        return self._ptr is None

    def __enter__(self):
        with self._cond:
            if self._ptr is None:
                raise EngineClosed("the hashevict Engine is closed")
            self._inflight += 1
            return self._ptr

    def __exit__(self, *exc):
        with self._cond:
            self._inflight -= 1
            if self._inflight == 0:
                self._cond.notify_all()
        return False

    def take(self):
        """Marks the handle closed once no call is in flight; returns the
        pointer to free (None if already closed)."""
        with self._cond:
            ptr, self._ptr = self._ptr, None
            while self._inflight:
                self._cond.wait()
            return ptr


# ---------------------------------------------------------------------------
# Engine
# ---------------------------------------------------------------------------
class Engine:
    """A hashevict engine: model shape, policy and the sequences' state.

    Keyword parameters mirror ``hashevict_params``. A parameter left unset
    (None) keeps the library's default (``hashevict_default_params``), read
    from the loaded library rather than restated here; ``n_q_heads`` defaults
    to ``n_kv_heads`` (no GQA), the library having no default for it.
    Enumerations take names ("slot", "token"; "hash", "sink_recent", "knorm",
    "random", "oracle"; "query", "key"; "instant", "accumulated", "decayed";
    "distance", "logit"), enum members or ints.

    ``estimate`` and ``redundancy`` are the hash policy's streaming options
    (libhashevict 0.5.0; the header documents them): ``estimate="logit"``
    evicts the smallest estimated attention logit instead of the largest
    distance, ``redundancy`` > 0 weighs a term that evicts repeated content
    first. Their defaults are the paper's policy. An older library would
    ignore them, so setting either to a non-default value there raises
    :class:`Unsupported`.

    Use it as a context manager or call :meth:`close`; it is also freed when
    garbage-collected.
    """

    def __init__(
        self,
        *,
        n_layers: int,
        n_kv_heads: int,
        head_dim: int,
        budget: int,
        n_q_heads: int | None = None,
        mode=None,
        policy=None,
        probe=None,
        score=None,
        hash_bits: int | None = None,
        n_sink: int | None = None,
        n_recent: int | None = None,
        seed: int | None = None,
        max_seqs: int | None = None,
        decay: float | None = None,
        memory_cap_bytes: int | None = None,
        estimate=None,
        redundancy: float | None = None,
    ):
        lib = library()
        p = lib.hashevict_default_params_v2()
        p.size = ctypes.sizeof(_ffi.hashevict_params)
        for name, cls, v in (("mode", Mode, mode), ("policy", Policy, policy), ("probe", Probe, probe), ("score", Score, score)):
            if v is not None:
                setattr(p, name, _enum(cls, v, name))
        ints = dict(
            n_layers=n_layers,
            n_kv_heads=n_kv_heads,
            n_q_heads=n_kv_heads if n_q_heads is None else n_q_heads,
            head_dim=head_dim,
            budget=budget,
            hash_bits=hash_bits,
            n_sink=n_sink,
            n_recent=n_recent,
            max_seqs=max_seqs,
        )
        for name, v in ints.items():
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise InvalidParams(f"{name} = {v!r}; want an int")
            if not _INT32_MIN <= int(v) <= _INT32_MAX:
                raise InvalidParams(f"{name} = {v} does not fit in int32")
            setattr(p, name, int(v))
        for name, v in (("seed", seed), ("memory_cap_bytes", memory_cap_bytes)):
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise InvalidParams(f"{name} = {v!r}; want an int")
            if not 0 <= int(v) < 2**64:
                raise InvalidParams(f"{name} = {v}; want 0 <= {name} < 2**64")
            setattr(p, name, int(v))
        if decay is not None:
            p.decay = float(decay)
        if estimate is not None:
            p.estimate = _enum(Estimate, estimate, "estimate")
        if redundancy is not None:
            if isinstance(redundancy, bool) or not isinstance(redundancy, (int, float, np.integer, np.floating)):
                raise InvalidParams(f"redundancy = {redundancy!r}; want a number")
            p.redundancy = float(redundancy)
        if (p.estimate != Estimate.DISTANCE or p.redundancy != 0) and _version_tuple() < (0, 5):
            raise Unsupported(
                f"estimate and redundancy need libhashevict 0.5.0 or later; {lib._hashevict_path} is {version()}, "
                "which would ignore them"
            )
        ptr = _ffi.hashevict_engine_p()
        _call("hashevict_engine_create", byref(p), byref(ptr))
        self._h = _Handle(ptr)
        out = _ffi.hashevict_params()
        out.size = ctypes.sizeof(out)
        with self._h as e:
            _call("hashevict_engine_params", e, byref(out))
        self.params: Params = Params._from_c(out)

    # -- lifetime --------------------------------------------------------
    def close(self) -> None:
        """Frees the engine and every sequence in it. Idempotent; later calls
        on the engine or its sequences raise :class:`EngineClosed`."""
        h = getattr(self, "_h", None)
        if h is None:
            return
        ptr = h.take()
        if ptr is not None:
            library().hashevict_engine_free(ptr)

    @property
    def closed(self) -> bool:
        h = getattr(self, "_h", None)
        return h is None or h.closed

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing sensible to do
            pass

    def __repr__(self) -> str:
        p = self.params if hasattr(self, "params") else None
        if p is None:
            return "<hashevict.Engine (not created)>"
        state = "closed" if self.closed else "open"
        return (
            f"<hashevict.Engine {state} mode={p.mode.name.lower()} policy={p.policy.name.lower()} "
            f"layers={p.n_layers} kv_heads={p.n_kv_heads} q_heads={p.n_q_heads} head_dim={p.head_dim} "
            f"budget={p.budget} bits={p.hash_bits}>"
        )

    # -- shape shortcuts -------------------------------------------------
    n_layers = property(lambda self: self.params.n_layers)
    n_kv_heads = property(lambda self: self.params.n_kv_heads)
    n_q_heads = property(lambda self: self.params.n_q_heads)
    head_dim = property(lambda self: self.params.head_dim)
    budget = property(lambda self: self.params.budget)
    hash_bits = property(lambda self: self.params.hash_bits)
    mode = property(lambda self: self.params.mode)

    # -- sequences ---------------------------------------------------------
    def sequence(self, seq_id: int) -> "Sequence":
        """Adds sequence ``seq_id`` (``hashevict_seq_add``) and returns the
        object owning it; SequenceExists if the id is live already."""
        seq_id = _int32(seq_id, "seq_id")
        with self._h as e:
            _call("hashevict_seq_add", e, seq_id)
        return Sequence(self, seq_id)

    def restore(self, seq_id: int, state) -> "Sequence":
        """Adds sequence ``seq_id`` from a blob of :meth:`Sequence.save_state`
        (``hashevict_seq_state_load``) and returns the object owning it. If
        the id is live already its state is replaced (the library's rule);
        prefer :meth:`Sequence.load_state` on the object that owns it."""
        _need("hashevict_seq_state_load")
        seq_id = _int32(seq_id, "seq_id")
        data = _blob(state)
        with self._h as e:
            _call("hashevict_seq_state_load", e, seq_id, c_void_p(data.ctypes.data), data.size)
        return Sequence(self, seq_id)

    # -- inspection --------------------------------------------------------
    def hash(self, layer: int, x) -> np.ndarray:
        """The codes of the vectors in ``x`` ([n_tokens, n_heads, head_dim],
        [rows, head_dim] or [head_dim]; float32, float16 or bfloat16), as
        uint64 words: shape ``x.shape[:-1] + (words,)``; bit j of a code is
        bit j % 64 of word j // 64. A torch ``x`` gets a torch uint64 tensor
        on its device (on the CPU sharing the buffer the library wrote)."""
        layer = _int32(layer, "layer")
        v = describe(x, "x", ndim=0)
        lead = tuple(int(s) for s in x.shape[:-1]) if hasattr(x, "shape") else v.shape[:2]
        n_tokens, n_heads, _ = v.shape
        words = self.params.words
        out = np.zeros((max(n_tokens, 0), max(n_heads, 0), words), np.uint64)
        with self._h as e:
            _call(
                "hashevict_hash",
                e,
                layer,
                byref(v.desc),
                out.ctypes.data_as(POINTER(c_uint64)),
                out.size,
            )
        return torch_like((x,), out.reshape(lead + (words,)))

    def set_layer_window(self, layer: int, window: int) -> None:
        """Token mode: layer ``layer`` attends only to positions p > t - window
        from a query at t (a sliding-window layer); 0 means every position.
        With any window set, :meth:`Sequence.evictions` ranks a position by the
        mean of its scores over the layers that still see it
        (``hashevict_set_layer_window``)."""
        layer = _int32(layer, "layer")
        window = _int32(window, "window", too_big=InvalidArgument)
        with self._h as e:
            _call("hashevict_set_layer_window", e, layer, window)

    def projection(self, layer: int) -> np.ndarray:
        """Layer ``layer``'s projection Rᵀ, float32 [hash_bits, head_dim]."""
        layer = _int32(layer, "layer")
        out = np.zeros((self.params.hash_bits, self.params.head_dim), np.float32)
        with self._h as e:
            _call("hashevict_projection", e, layer, out.ctypes.data_as(POINTER(c_float)), out.size)
        return out

    def stats(self, seq: int | None = None) -> Stats:
        """Counters of the whole engine (removed sequences included in the
        cumulative ones), or of sequence id ``seq``."""
        return self._stats(-1 if seq is None else _int32(seq, "seq"))

    def _stats(self, seq: int) -> Stats:
        st = _ffi.hashevict_stats()
        st.size = ctypes.sizeof(st)
        with self._h as e:
            _call("hashevict_stats_get", e, int(seq), byref(st))
        return Stats(st.n_sequences, st.state_bytes, st.steps, st.tokens, st.evictions, st.cached)

    @staticmethod
    def kernels() -> str:
        return kernels()

    @staticmethod
    def version() -> str:
        return version()


# ---------------------------------------------------------------------------
# Sequence
# ---------------------------------------------------------------------------
class Sequence:
    """One sequence of an engine. Created by :meth:`Engine.sequence` or
    :meth:`fork`; owns the library's sequence: :meth:`close` (or the end of a
    ``with`` block, or garbage collection) removes it."""

    def __init__(self, engine: Engine, seq_id: int):
        self.engine = engine
        self.id = seq_id
        self._open = True

    def _enter(self):
        if not self._open:
            raise SequenceClosed(f"sequence {self.id} is closed")
        return self.engine._h

    @property
    def closed(self) -> bool:
        return not self._open or self.engine.closed

    def close(self) -> None:
        """Removes the sequence (``hashevict_seq_remove``). Idempotent; a no-op
        once the engine is closed."""
        if not self._open:
            return
        self._open = False
        if self.engine.closed:
            return
        try:
            with self.engine._h as e:
                _call("hashevict_seq_remove", e, self.id)
        except EngineClosed:
            pass

    remove = close

    def __enter__(self) -> "Sequence":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"<hashevict.Sequence {self.id} {'closed' if self.closed else 'open'}>"

    # -- lifecycle ---------------------------------------------------------
    def reset(self) -> None:
        """Empties the sequence (as if removed and added again)."""
        with self._enter() as e:
            _call("hashevict_seq_reset", e, self.id)

    def fork(self, dst: int) -> "Sequence":
        """Deep-copies this sequence into new id ``dst`` and returns it."""
        dst = _int32(dst, "dst")
        with self._enter() as e:
            _call("hashevict_seq_fork", e, self.id, dst)
        return Sequence(self.engine, dst)

    def stats(self) -> Stats:
        self._enter()
        return self.engine._stats(self.id)

    # -- saved state -------------------------------------------------------
    def save_state(self) -> bytes:
        """The sequence's state as a versioned, checksummed blob
        (``hashevict_seq_state_size`` + ``_save``); it loads only into an
        engine with the same parameters."""
        _need("hashevict_seq_state_save")
        size, written = c_size_t(0), c_size_t(0)
        with self._enter() as e:
            _call("hashevict_seq_state_size", e, self.id, byref(size))
            cap = size.value
            while True:
                buf = ctypes.create_string_buffer(max(cap, 1))
                try:
                    _call("hashevict_seq_state_save", e, self.id, buf, cap, byref(written))
                except BufferTooSmall:
                    if written.value <= cap:  # pragma: no cover - library gave no size
                        raise
                    cap = written.value  # the sequence grew since state_size
                    continue
                return buf.raw[: written.value]

    def load_state(self, state) -> None:
        """Replaces this sequence's state with a blob of :meth:`save_state`
        (``hashevict_seq_state_load``); CorruptState / IncompatibleState
        leave it unchanged."""
        _need("hashevict_seq_state_load")
        data = _blob(state)
        with self._enter() as e:
            _call("hashevict_seq_state_load", e, self.id, c_void_p(data.ctypes.data), data.size)

    # -- slot mode ---------------------------------------------------------
    def place(self, layer: int, q, k, positions) -> Placement:
        """One slot-mode step of layer ``layer`` (``hashevict_place``).

        ``q``: [n_tokens, n_q_heads, head_dim] (None allowed with probe="key"
        outside the oracle policy); ``k``: [n_tokens, n_kv_heads, head_dim];
        numpy float32/float16 (or bf16) arrays or torch tensors, passed
        without a copy. ``positions``: n_tokens increasing ints. Returns
        :class:`Placement` (slots, evicted), each [n_tokens, n_kv_heads]
        int32: torch tensors on ``k``'s device when ``k`` is a torch tensor
        (zero-copy on the CPU), else numpy arrays.

        CUDA memory (torch CUDA tensors on ``torch.cuda.current_stream()``,
        or ``__cuda_array_interface__`` objects on their ``stream``) runs the
        step on the device and waits for it; the sequence then keeps its
        state there (hash policy only; see ``docs/cuda.md`` and
        :meth:`place_async`). Tested against an emulated driver, not yet on
        a GPU."""
        layer = _int32(layer, "layer")
        pos = _positions(positions)
        n = pos.size
        kv = describe(k, "k")
        qv = describe(q, "q") if q is not None else None
        nkv = self.engine.params.n_kv_heads
        slots = np.empty((n, nkv), np.int32)
        evicted = np.empty((n, nkv), np.int32)
        with self._enter() as e:
            _call(
                "hashevict_place",
                e,
                self.id,
                layer,
                byref(qv.desc) if qv is not None else None,
                byref(kv.desc),
                _i32p(pos),
                n,
                _i32p(slots),
                _i32p(evicted),
            )
        return Placement(*torch_like((k,), slots, evicted))

    def place_async(self, layer: int, q, k, position, out_slots=None, out_evicted=None) -> Placement:
        """The asynchronous decode step of a CUDA sequence
        (``hashevict_place_async``): ``q`` [1, n_q_heads, head_dim] and ``k``
        [1, n_kv_heads, head_dim] in CUDA memory (torch CUDA tensors, queued on
        ``torch.cuda.current_stream()``, or ``__cuda_array_interface__``
        objects, on their ``stream``), one ``position``. Each KV head's slot
        and evicted position (-1: a free slot) are written into
        ``out_slots`` / ``out_evicted`` (contiguous int32 CUDA memory of
        n_kv_heads) on that stream, and the call returns without waiting for
        the device: read them in stream order (e.g. as the row indices of the
        cache write). With torch tensors, outputs not given are allocated on
        ``k``'s device. Returns :class:`Placement` (out_slots, out_evicted).
        A NaN or Inf row is not refused here (its code is zero): see the
        header."""
        _need("hashevict_place_async")
        layer = _int32(layer, "layer")
        pos = _positions(position)  # the library refuses more than one
        kv = describe(k, "k")
        qv = describe(q, "q") if q is not None else None
        nkv = self.engine.params.n_kv_heads
        if out_slots is None or out_evicted is None:
            if not _is_torch(k):
                raise InvalidArgument(
                    "place_async: pass out_slots and out_evicted (int32 CUDA memory of n_kv_heads) unless k is a "
                    "torch tensor, for which they are allocated"
                )
            import sys

            torch = sys.modules["torch"]
            if out_slots is None:
                out_slots = torch.empty(nkv, dtype=torch.int32, device=k.device)
            if out_evicted is None:
                out_evicted = torch.empty(nkv, dtype=torch.int32, device=k.device)
        sp = device_int32(out_slots, nkv, "out_slots")
        ep = device_int32(out_evicted, nkv, "out_evicted")
        with self._enter() as e:
            _call(
                "hashevict_place_async",
                e,
                self.id,
                layer,
                byref(qv.desc) if qv is not None else None,
                byref(kv.desc),
                _i32p(pos),
                pos.size,
                ctypes.cast(c_void_p(sp), _I32),
                ctypes.cast(c_void_p(ep), _I32),
            )
        return Placement(out_slots, out_evicted)

    def slot_positions(self, layer: int, kv_head: int) -> np.ndarray:
        """The position in each of the ``budget`` slots of (layer, kv_head),
        -1 for a free slot."""
        layer, kv_head = _int32(layer, "layer"), _int32(kv_head, "kv_head")
        out = np.empty(self.engine.params.budget, np.int32)
        with self._enter() as e:
            _call("hashevict_slot_positions", e, self.id, layer, kv_head, _i32p(out), out.size)
        return out

    def compress(self, layer: int, q_window, k, positions, *, n_window: int | None = None, pool: int = 11,
                 form="cosine"):
        """Compress after prefill in slot mode (``hashevict_compress``): places
        the chunk ``k`` ([n_tokens, n_kv_heads, head_dim]) at ``positions``
        and keeps per KV head at most ``budget`` of the held and new
        positions, scored from the chunk's last ``n_window`` queries
        ``q_window`` ([n_window, n_q_heads, head_dim]; None with probe="key"
        or a policy other than hash; n_window defaults to its length).
        ``pool``: max-pool kernel along the positions (0: none); ``form``:
        "cosine", "distance" or "softmax", optionally with the flags "+local"
        and "+trailing" (the header's hashevict_compress_form; the flags were
        no better than the plain cosine on held-out text, docs/eval). Returns the slots, [n_tokens, n_kv_heads] int32, -1 for a dropped
        token (torch on ``k``'s device when ``k`` is a torch tensor)."""
        _need("hashevict_compress")
        layer = _int32(layer, "layer")
        pos = _positions(positions)
        kv = describe(k, "k")
        qv = describe(q_window, "q_window") if q_window is not None else None
        if n_window is None:
            if qv is None:
                raise InvalidArgument("n_window is needed when q_window is None")
            n_window = qv.desc.n_tokens
        nw = _int32(n_window, "n_window", too_big=InvalidArgument)
        pool = _int32(pool, "pool", too_big=InvalidArgument)
        f = _compress_form(form)
        slots = np.empty((pos.size, self.engine.params.n_kv_heads), np.int32)
        with self._enter() as e:
            _call(
                "hashevict_compress",
                e,
                self.id,
                layer,
                byref(qv.desc) if qv is not None else None,
                nw,
                byref(kv.desc),
                _i32p(pos),
                pos.size,
                pool,
                f,
                _i32p(slots),
            )
        return torch_like((k,), slots)

    # -- token mode --------------------------------------------------------
    def observe(self, layer: int, q, k, positions) -> None:
        """Records layer ``layer``'s queries and keys for new positions
        (``hashevict_observe``); arguments as in :meth:`place`. CUDA memory
        keeps the sequence's scores on the device (hash policy only; the
        call waits for the hashes, and :meth:`evictions` for the totals;
        tested against an emulated driver, not yet on a GPU)."""
        layer = _int32(layer, "layer")
        pos = _positions(positions)
        kv = describe(k, "k")
        qv = describe(q, "q") if q is not None else None
        with self._enter() as e:
            _call(
                "hashevict_observe",
                e,
                self.id,
                layer,
                byref(qv.desc) if qv is not None else None,
                byref(kv.desc),
                _i32p(pos),
                pos.size,
            )

    def compress_score(self, layer: int, q_window, window_positions, *, pool: int = 11, form="cosine") -> None:
        """Scores every position layer ``layer`` observed from the window's
        queries (``hashevict_compress_score``, token mode); call it for every
        layer after the prompt was observed, then :meth:`evictions`.
        ``q_window``: [n_window, n_q_heads, head_dim] (None with probe="key");
        ``window_positions``: the window's n_window held positions;
        ``pool`` and ``form`` as in :meth:`compress`."""
        _need("hashevict_compress_score")
        layer = _int32(layer, "layer")
        wpos = _positions(window_positions)
        qv = describe(q_window, "q_window") if q_window is not None else None
        pool = _int32(pool, "pool", too_big=InvalidArgument)
        f = _compress_form(form)
        with self._enter() as e:
            _call(
                "hashevict_compress_score",
                e,
                self.id,
                layer,
                byref(qv.desc) if qv is not None else None,
                _i32p(wpos),
                wpos.size,
                pool,
                f,
            )

    def evictions(self, max: int | None = None) -> np.ndarray:
        """The positions to drop now (forgotten by the engine), ascending.

        With ``max`` at most that many (one ``hashevict_evictions`` call);
        without, every position needed to get back within the budget."""
        count = c_int32(0)
        if max is not None:
            cap = _int32(max, "max", too_big=InvalidArgument)
            if cap > 0:
                # No more than the positions held can go: a buffer of `max`
                # would be gigabytes for a large max and hold nothing more.
                cap = min(cap, builtins.max(self.stats().cached, 1))
            buf = np.empty(builtins.max(cap, 1), np.int32)
            with self._enter() as e:
                _call("hashevict_evictions", e, self.id, _i32p(buf), cap, byref(count))
            return buf[: count.value].copy()
        parts = []
        while True:
            cap = self.stats().cached
            cap = cap if cap > 0 else 1
            buf = np.empty(cap, np.int32)
            with self._enter() as e:
                _call("hashevict_evictions", e, self.id, _i32p(buf), cap, byref(count))
            parts.append(buf[: count.value].copy())
            if count.value < cap:
                break
        return np.sort(np.concatenate(parts)) if len(parts) > 1 else parts[0]

    def token_positions(self) -> np.ndarray:
        """The positions this token-mode sequence holds, ascending."""
        count = c_int32(0)
        cap = 64
        while True:
            buf = np.empty(cap, np.int32)
            try:
                with self._enter() as e:
                    _call("hashevict_token_positions", e, self.id, _i32p(buf), cap, byref(count))
            except BufferTooSmall:
                if count.value <= cap:
                    raise
                cap = count.value  # the library reported how many it holds
                continue
            return buf[: count.value].copy()
