"""ctypes declarations mirroring ``include/hashevict.h`` (ABI version 1).

This module is the only place that describes the C contract to Python: the
macros, the enumerations, the three structs, the opaque engine handle and the
signature of every exported function. ``tests/test_header.py`` parses the
header and fails when anything here disagrees with it, so keep the names
spelled exactly as in C.

Nothing here calls into the library except :func:`load`, which finds the
shared object, sets ``argtypes``/``restype`` from :data:`FUNCTIONS` and
checks the ABI version.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from ctypes import (
    POINTER,
    Structure,
    c_char_p,
    c_float,
    c_int32,
    c_int64,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
)
from pathlib import Path

# ---------------------------------------------------------------------------
# Versions
# ---------------------------------------------------------------------------
HASHEVICT_VERSION_MAJOR = 0
HASHEVICT_VERSION_MINOR = 6
HASHEVICT_VERSION_PATCH = 0
HASHEVICT_VERSION_STRING = "0.6.0"
#: The ABI these declarations were written for; load() refuses any other.
HASHEVICT_ABI_VERSION = 1

# ---------------------------------------------------------------------------
# Status codes (pinned values)
# ---------------------------------------------------------------------------
hashevict_status = c_int32

HASHEVICT_OK = 0
HASHEVICT_ERR_INVALID_ARGUMENT = 1
HASHEVICT_ERR_INVALID_HANDLE = 2
HASHEVICT_ERR_OUT_OF_RANGE = 3
HASHEVICT_ERR_INVALID_PARAMS = 4
HASHEVICT_ERR_UNSUPPORTED = 5
HASHEVICT_ERR_SHAPE = 6
HASHEVICT_ERR_NONFINITE = 7
HASHEVICT_ERR_UNKNOWN_SEQUENCE = 8
HASHEVICT_ERR_SEQUENCE_EXISTS = 9
HASHEVICT_ERR_CHUNK_TOO_LARGE = 10
HASHEVICT_ERR_BUFFER_TOO_SMALL = 11
HASHEVICT_ERR_MEMORY_CAP = 12
HASHEVICT_ERR_POSITION = 13
HASHEVICT_ERR_WRONG_MODE = 14
HASHEVICT_ERR_CORRUPT_STATE = 15
HASHEVICT_ERR_INCOMPATIBLE_STATE = 16
HASHEVICT_ERR_INTERNAL = 99

# ---------------------------------------------------------------------------
# Enumerations (pinned values)
# ---------------------------------------------------------------------------
# hashevict_mode
HASHEVICT_MODE_SLOT = 0
HASHEVICT_MODE_TOKEN = 1
# hashevict_policy
HASHEVICT_POLICY_HASH = 0
HASHEVICT_POLICY_SINK_RECENT = 1
HASHEVICT_POLICY_KNORM = 2
HASHEVICT_POLICY_RANDOM = 3
HASHEVICT_POLICY_ORACLE = 4
# hashevict_probe
HASHEVICT_PROBE_QUERY = 0
HASHEVICT_PROBE_KEY = 1
# hashevict_score
HASHEVICT_SCORE_INSTANT = 0
HASHEVICT_SCORE_ACCUMULATED = 1
HASHEVICT_SCORE_DECAYED = 2
# hashevict_estimate
HASHEVICT_ESTIMATE_DISTANCE = 0
HASHEVICT_ESTIMATE_LOGIT = 1
# hashevict_compress_form
HASHEVICT_COMPRESS_COSINE = 0
HASHEVICT_COMPRESS_DISTANCE = 1
HASHEVICT_COMPRESS_SOFTMAX = 2
HASHEVICT_COMPRESS_LOCAL = 0x100  # flags, OR'ed into a form (0.6.0)
HASHEVICT_COMPRESS_TRAILING = 0x200
# hashevict_dtype
HASHEVICT_DTYPE_F32 = 0
HASHEVICT_DTYPE_F16 = 1
HASHEVICT_DTYPE_BF16 = 2
# hashevict_device
HASHEVICT_DEVICE_HOST = 0
HASHEVICT_DEVICE_CUDA = 1

#: Enumerations by C type name, in declaration order.
ENUMS = {
    "hashevict_mode": {"HASHEVICT_MODE_SLOT": 0, "HASHEVICT_MODE_TOKEN": 1},
    "hashevict_policy": {
        "HASHEVICT_POLICY_HASH": 0,
        "HASHEVICT_POLICY_SINK_RECENT": 1,
        "HASHEVICT_POLICY_KNORM": 2,
        "HASHEVICT_POLICY_RANDOM": 3,
        "HASHEVICT_POLICY_ORACLE": 4,
    },
    "hashevict_probe": {"HASHEVICT_PROBE_QUERY": 0, "HASHEVICT_PROBE_KEY": 1},
    "hashevict_score": {
        "HASHEVICT_SCORE_INSTANT": 0,
        "HASHEVICT_SCORE_ACCUMULATED": 1,
        "HASHEVICT_SCORE_DECAYED": 2,
    },
    "hashevict_estimate": {"HASHEVICT_ESTIMATE_DISTANCE": 0, "HASHEVICT_ESTIMATE_LOGIT": 1},
    "hashevict_compress_form": {
        "HASHEVICT_COMPRESS_COSINE": 0,
        "HASHEVICT_COMPRESS_DISTANCE": 1,
        "HASHEVICT_COMPRESS_SOFTMAX": 2,
        "HASHEVICT_COMPRESS_LOCAL": 0x100,
        "HASHEVICT_COMPRESS_TRAILING": 0x200,
    },
    "hashevict_dtype": {
        "HASHEVICT_DTYPE_F32": 0,
        "HASHEVICT_DTYPE_F16": 1,
        "HASHEVICT_DTYPE_BF16": 2,
    },
    "hashevict_device": {"HASHEVICT_DEVICE_HOST": 0, "HASHEVICT_DEVICE_CUDA": 1},
}

# ---------------------------------------------------------------------------
# Structs
# ---------------------------------------------------------------------------


class hashevict_params(Structure):
    """``hashevict_params``; ``size`` must be set to ``sizeof`` before use."""

    _fields_ = [
        ("size", c_uint32),
        ("mode", c_int32),
        ("policy", c_int32),
        ("probe", c_int32),
        ("score", c_int32),
        ("n_layers", c_int32),
        ("n_kv_heads", c_int32),
        ("n_q_heads", c_int32),
        ("head_dim", c_int32),
        ("hash_bits", c_int32),
        ("budget", c_int32),
        ("n_sink", c_int32),
        ("n_recent", c_int32),
        ("max_seqs", c_int32),
        ("decay", c_float),
        ("seed", c_uint64),
        ("memory_cap_bytes", c_uint64),
        # since 0.5.0
        ("estimate", c_int32),
        ("redundancy", c_float),
    ]


class hashevict_tensor(Structure):
    """``hashevict_tensor``: a borrowed view of rows [token][head][head_dim]."""

    _fields_ = [
        ("data", c_void_p),
        ("dtype", c_int32),
        ("device", c_int32),
        ("head_dim", c_int64),
        ("n_heads", c_int64),
        ("n_tokens", c_int64),
        ("head_stride", c_int64),
        ("token_stride", c_int64),
        ("stream", c_void_p),
    ]


class hashevict_stats(Structure):
    """``hashevict_stats``; ``size`` must be set to ``sizeof`` before use."""

    _fields_ = [
        ("size", c_uint32),
        ("n_sequences", c_int32),
        ("state_bytes", c_uint64),
        ("steps", c_uint64),
        ("tokens", c_uint64),
        ("evictions", c_uint64),
        ("cached", c_uint64),
    ]


class hashevict_engine(Structure):
    """The opaque ``struct hashevict_engine``: only pointers to it exist.

    The library hands out tagged numbers, never real addresses, so a pointer
    of this type must never be dereferenced (``.contents``) from Python.
    """

    _fields_: list = []


#: ``hashevict_engine *``
hashevict_engine_p = POINTER(hashevict_engine)

# ---------------------------------------------------------------------------
# Functions: name -> (restype, [argtypes]) in header order.
# ---------------------------------------------------------------------------
FUNCTIONS = {
    "hashevict_status_string": (c_char_p, [hashevict_status]),
    "hashevict_last_error": (c_char_p, []),
    "hashevict_version": (c_char_p, []),
    "hashevict_abi_version": (c_int32, []),
    # The header's hashevict_default_params() is a macro for this symbol (the
    # symbol without _v2 returns the 0.4 layout, for binaries built then).
    "hashevict_default_params_v2": (hashevict_params, []),
    "hashevict_engine_create": (
        hashevict_status,
        [POINTER(hashevict_params), POINTER(hashevict_engine_p)],
    ),
    "hashevict_engine_free": (None, [hashevict_engine_p]),
    "hashevict_engine_params": (
        hashevict_status,
        [hashevict_engine_p, POINTER(hashevict_params)],
    ),
    "hashevict_kernels": (c_char_p, []),
    "hashevict_seq_add": (hashevict_status, [hashevict_engine_p, c_int32]),
    "hashevict_seq_remove": (hashevict_status, [hashevict_engine_p, c_int32]),
    "hashevict_seq_reset": (hashevict_status, [hashevict_engine_p, c_int32]),
    "hashevict_seq_fork": (hashevict_status, [hashevict_engine_p, c_int32, c_int32]),
    "hashevict_seq_state_size": (
        hashevict_status,
        [hashevict_engine_p, c_int32, POINTER(c_size_t)],
    ),
    "hashevict_seq_state_save": (
        hashevict_status,
        [hashevict_engine_p, c_int32, c_void_p, c_size_t, POINTER(c_size_t)],
    ),
    "hashevict_seq_state_load": (
        hashevict_status,
        [hashevict_engine_p, c_int32, c_void_p, c_size_t],
    ),
    "hashevict_place": (
        hashevict_status,
        [
            hashevict_engine_p,
            c_int32,
            c_int32,
            POINTER(hashevict_tensor),
            POINTER(hashevict_tensor),
            POINTER(c_int32),
            c_int32,
            POINTER(c_int32),
            POINTER(c_int32),
        ],
    ),
    "hashevict_place_async": (
        hashevict_status,
        [
            hashevict_engine_p,
            c_int32,
            c_int32,
            POINTER(hashevict_tensor),
            POINTER(hashevict_tensor),
            POINTER(c_int32),
            c_int32,
            POINTER(c_int32),  # device memory
            POINTER(c_int32),  # device memory
        ],
    ),
    "hashevict_compress": (
        hashevict_status,
        [
            hashevict_engine_p,
            c_int32,
            c_int32,
            POINTER(hashevict_tensor),
            c_int32,
            POINTER(hashevict_tensor),
            POINTER(c_int32),
            c_int32,
            c_int32,
            c_int32,
            POINTER(c_int32),
        ],
    ),
    "hashevict_compress_score": (
        hashevict_status,
        [
            hashevict_engine_p,
            c_int32,
            c_int32,
            POINTER(hashevict_tensor),
            POINTER(c_int32),
            c_int32,
            c_int32,
            c_int32,
        ],
    ),
    "hashevict_slot_positions": (
        hashevict_status,
        [hashevict_engine_p, c_int32, c_int32, c_int32, POINTER(c_int32), c_int32],
    ),
    "hashevict_observe": (
        hashevict_status,
        [
            hashevict_engine_p,
            c_int32,
            c_int32,
            POINTER(hashevict_tensor),
            POINTER(hashevict_tensor),
            POINTER(c_int32),
            c_int32,
        ],
    ),
    "hashevict_evictions": (
        hashevict_status,
        [hashevict_engine_p, c_int32, POINTER(c_int32), c_int32, POINTER(c_int32)],
    ),
    "hashevict_token_positions": (
        hashevict_status,
        [hashevict_engine_p, c_int32, POINTER(c_int32), c_int32, POINTER(c_int32)],
    ),
    "hashevict_set_layer_window": (hashevict_status, [hashevict_engine_p, c_int32, c_int32]),
    "hashevict_hash": (
        hashevict_status,
        [hashevict_engine_p, c_int32, POINTER(hashevict_tensor), POINTER(c_uint64), c_int64],
    ),
    "hashevict_projection": (
        hashevict_status,
        [hashevict_engine_p, c_int32, POINTER(c_float), c_int64],
    ),
    "hashevict_stats_get": (
        hashevict_status,
        [hashevict_engine_p, c_int32, POINTER(hashevict_stats)],
    ),
}

#: Functions added after the first release of ABI version 1, with the
#: version that added them. ABI 1 grows only by additions, so a library of
#: ABI 1 may predate them: load() accepts it and the Python methods that need
#: a missing function raise Unsupported.
ADDED_IN = {
    "hashevict_seq_state_size": "0.2.0",
    "hashevict_seq_state_save": "0.2.0",
    "hashevict_seq_state_load": "0.2.0",
    "hashevict_compress": "0.3.0",
    "hashevict_compress_score": "0.3.0",
    "hashevict_place_async": "0.3.0",
    "hashevict_set_layer_window": "0.3.0",
}

# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------
#: Environment variable naming the shared object to load instead of the
#: package's own copy.
LIBRARY_ENV = "HASHEVICT_LIBRARY"
LIBRARY_FILE = "libhashevict.so"
#: Names the dynamic loader is asked for: the SONAME of this ABI (what the
#: Makefile and CMake produce), then the name of the first releases.
SONAMES = (f"libhashevict.so.{HASHEVICT_ABI_VERSION}", "libhashevict.so.0")


class LibraryNotFound(ImportError):
    """No usable libhashevict was found; the message lists every path tried."""


class AbiMismatch(ImportError):
    """The library's hashevict_abi_version() differs from HASHEVICT_ABI_VERSION."""


def candidates() -> list:
    """The places :func:`load` tries, in order, as (origin, path) pairs."""
    out = []
    env = os.environ.get(LIBRARY_ENV)
    if env:
        out.append((f"${LIBRARY_ENV}", env))
    out.append(("package", str(Path(__file__).resolve().parent / "lib" / LIBRARY_FILE)))
    found = ctypes.util.find_library("hashevict")
    if found:
        out.append(("ctypes.util.find_library('hashevict')", found))
    for name in SONAMES:
        out.append(("system loader", name))
    return out


def _declare(lib: ctypes.CDLL) -> None:
    missing = []
    for name, (restype, argtypes) in FUNCTIONS.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            if name in ADDED_IN:
                missing.append(name)
                continue
            raise  # names the missing symbol
        fn.restype = restype
        fn.argtypes = list(argtypes)
    lib._hashevict_missing = frozenset(missing)


def load(path: str | None = None) -> ctypes.CDLL:
    """Loads libhashevict, declares every function and checks the ABI.

    With ``path`` only that file is tried. Otherwise: ``$HASHEVICT_LIBRARY``
    (if set, it is the only candidate: a wrong override must not silently
    fall back), then the copy inside this package, then the system search
    path. Raises :class:`LibraryNotFound` naming every path tried and why it
    failed, or :class:`AbiMismatch`.
    """
    if path is not None:
        tries = [("argument", path)]
    elif os.environ.get(LIBRARY_ENV):
        tries = [(f"${LIBRARY_ENV}", os.environ[LIBRARY_ENV])]
    else:
        tries = candidates()
    failures = []
    for origin, where in tries:
        # A plain name goes to the dynamic loader's search; a path must exist.
        is_path = os.sep in where
        if is_path and not os.path.exists(where):
            failures.append(f"  {where} ({origin}): no such file")
            continue
        try:
            lib = ctypes.CDLL(where)
        except OSError as exc:
            failures.append(f"  {where} ({origin}): {exc}")
            continue
        try:
            _declare(lib)
        except AttributeError as exc:
            if hasattr(lib, "hashevict_version") and not hasattr(lib, "hashevict_default_params_v2"):
                lib.hashevict_version.restype = c_char_p
                old = lib.hashevict_version().decode(errors="replace")
                failures.append(
                    f"  {where} ({origin}): libhashevict {old} predates 0.5.0, whose "
                    f"hashevict_params these bindings use: install a matching library"
                )
            else:
                failures.append(f"  {where} ({origin}): not a libhashevict: {exc}")
            continue
        abi = lib.hashevict_abi_version()
        if abi != HASHEVICT_ABI_VERSION:
            raise AbiMismatch(
                f"{where} ({origin}) has hashevict ABI version {abi}, but these "
                f"bindings were written for ABI version {HASHEVICT_ABI_VERSION}; "
                f"install matching bindings or point {LIBRARY_ENV} at a matching library"
            )
        defaults = lib.hashevict_default_params_v2()
        if defaults.size != ctypes.sizeof(hashevict_params):
            raise AbiMismatch(
                f"{where} ({origin}): sizeof(hashevict_params) is {defaults.size} in the "
                f"library but {ctypes.sizeof(hashevict_params)} in these bindings"
            )
        lib._hashevict_path = where  # for diagnostics
        return lib
    raise LibraryNotFound(
        "cannot load libhashevict; tried, in order:\n"
        + "\n".join(failures)
        + f"\nSet {LIBRARY_ENV} to the path of libhashevict.so, or reinstall the "
        "package (pip install ./bindings/python builds it with Go)."
    )
