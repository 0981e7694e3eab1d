"""Exceptions: one class per hashevict_status, under :class:`HashevictError`.

An exception raised because a library call failed carries the library's own
message (``hashevict_last_error()``, read on the same thread right after the
call) in ``message`` and ``str(exc)``, the status in ``status`` and the C
function in ``function``. Exceptions raised by the bindings before any call
(an input the C descriptor cannot express, a closed object) have
``function = None`` and a message written here.
"""

from __future__ import annotations

from . import _ffi


class HashevictError(Exception):
    """Base class of every error of the hashevict bindings."""

    status: int = _ffi.HASHEVICT_ERR_INTERNAL

    def __init__(self, message: str, *, status: int | None = None, function: str | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.function = function

    @property
    def status_name(self) -> str:
        return _STATUS_NAMES.get(self.status, "HASHEVICT_ERR_UNKNOWN_STATUS")

    @property
    def from_library(self) -> bool:
        """True when the message is the library's (a C call failed)."""
        return self.function is not None

    def __str__(self) -> str:
        return self.message


class InvalidArgument(HashevictError, ValueError):
    status = _ffi.HASHEVICT_ERR_INVALID_ARGUMENT


class InvalidHandle(HashevictError):
    status = _ffi.HASHEVICT_ERR_INVALID_HANDLE


class OutOfRange(HashevictError, IndexError):
    status = _ffi.HASHEVICT_ERR_OUT_OF_RANGE


class InvalidParams(HashevictError, ValueError):
    status = _ffi.HASHEVICT_ERR_INVALID_PARAMS


class Unsupported(HashevictError, TypeError):
    """A dtype, device or feature the library (or these bindings) cannot take."""

    status = _ffi.HASHEVICT_ERR_UNSUPPORTED


class ShapeError(HashevictError, ValueError):
    status = _ffi.HASHEVICT_ERR_SHAPE


class NonFinite(HashevictError, ValueError):
    status = _ffi.HASHEVICT_ERR_NONFINITE


class UnknownSequence(HashevictError, LookupError):
    status = _ffi.HASHEVICT_ERR_UNKNOWN_SEQUENCE


class SequenceExists(HashevictError):
    status = _ffi.HASHEVICT_ERR_SEQUENCE_EXISTS


class ChunkTooLarge(HashevictError):
    status = _ffi.HASHEVICT_ERR_CHUNK_TOO_LARGE


class BufferTooSmall(HashevictError):
    status = _ffi.HASHEVICT_ERR_BUFFER_TOO_SMALL


class MemoryCap(HashevictError, MemoryError):
    status = _ffi.HASHEVICT_ERR_MEMORY_CAP


class PositionError(HashevictError, ValueError):
    status = _ffi.HASHEVICT_ERR_POSITION


class WrongMode(HashevictError):
    status = _ffi.HASHEVICT_ERR_WRONG_MODE


class CorruptState(HashevictError, ValueError):
    """A saved state blob is truncated, corrupted or not a hashevict state."""

    status = _ffi.HASHEVICT_ERR_CORRUPT_STATE


class IncompatibleState(HashevictError, ValueError):
    """A saved state comes from another format version or other parameters."""

    status = _ffi.HASHEVICT_ERR_INCOMPATIBLE_STATE


class InternalError(HashevictError):
    """A bug inside the library (a recovered panic); the engine is poisoned."""

    status = _ffi.HASHEVICT_ERR_INTERNAL


class EngineClosed(InvalidHandle):
    """The Engine was closed; raised by the bindings, the handle is not used."""


class SequenceClosed(UnknownSequence):
    """The Sequence object was closed (removed) or its id was taken over."""


#: status value -> exception class
STATUS_CLASSES = {
    cls.status: cls
    for cls in (
        InvalidArgument,
        InvalidHandle,
        OutOfRange,
        InvalidParams,
        Unsupported,
        ShapeError,
        NonFinite,
        UnknownSequence,
        SequenceExists,
        ChunkTooLarge,
        BufferTooSmall,
        MemoryCap,
        PositionError,
        WrongMode,
        CorruptState,
        IncompatibleState,
        InternalError,
    )
}

_STATUS_NAMES = {
    getattr(_ffi, name): name
    for name in dir(_ffi)
    if name == "HASHEVICT_OK" or name.startswith("HASHEVICT_ERR_")
}


def error_for(status: int, message: str, function: str | None) -> HashevictError:
    """The exception for a failed call; unknown statuses give the base class."""
    cls = STATUS_CLASSES.get(status, HashevictError)
    if not message:
        message = f"{function} failed with status {status}"
    return cls(message, status=status, function=function)
