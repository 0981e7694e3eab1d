"""Python bindings of libhashevict, the HashEvict KV-cache eviction engine.

    >>> import numpy as np, hashevict
    >>> with hashevict.Engine(n_layers=1, n_kv_heads=1, n_q_heads=2, head_dim=8, budget=32) as eng:
    ...     seq = eng.sequence(0)
    ...     slots, evicted = seq.place(0, q, k, positions=[t])

The shared library is loaded on first use (``$HASHEVICT_LIBRARY``, then the
copy installed with this package, then the system path).
:mod:`hashevict.reference` is an independent pure-numpy model of the
algorithm and does not need the library.
"""

from ._ffi import AbiMismatch, LibraryNotFound
from ._tensors import bf16
from .engine import (
    Device,
    DType,
    Estimate,
    Engine,
    Mode,
    Params,
    Placement,
    Policy,
    Probe,
    Score,
    Sequence,
    Stats,
    abi_version,
    default_params,
    kernels,
    library,
    library_path,
    status_string,
    version,
)
from .errors import (
    BufferTooSmall,
    ChunkTooLarge,
    CorruptState,
    EngineClosed,
    HashevictError,
    IncompatibleState,
    InternalError,
    InvalidArgument,
    InvalidHandle,
    InvalidParams,
    MemoryCap,
    NonFinite,
    OutOfRange,
    PositionError,
    SequenceClosed,
    SequenceExists,
    ShapeError,
    UnknownSequence,
    Unsupported,
    WrongMode,
)

from ._ffi import HASHEVICT_VERSION_STRING as __version__  # the library version these bindings mirror

__all__ = [
    "AbiMismatch",
    "BufferTooSmall",
    "ChunkTooLarge",
    "CorruptState",
    "DType",
    "Estimate",
    "Device",
    "Engine",
    "EngineClosed",
    "HashevictError",
    "IncompatibleState",
    "InternalError",
    "InvalidArgument",
    "InvalidHandle",
    "InvalidParams",
    "LibraryNotFound",
    "MemoryCap",
    "Mode",
    "NonFinite",
    "OutOfRange",
    "Params",
    "Placement",
    "Policy",
    "PositionError",
    "Probe",
    "Score",
    "Sequence",
    "SequenceClosed",
    "SequenceExists",
    "ShapeError",
    "Stats",
    "UnknownSequence",
    "Unsupported",
    "WrongMode",
    "abi_version",
    "bf16",
    "default_params",
    "kernels",
    "library",
    "library_path",
    "status_string",
    "version",
]
