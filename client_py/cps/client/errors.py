"""Typed exceptions: one class per seed error name (docs/errors.md).

Every call of the client raises a ``CkptError`` subclass instead of
``grpc.RpcError``; the class is chosen by ``google.rpc.ErrorInfo.reason``
(domain ``cps.v1``), or by the gRPC status code when the failure never reached
the service (deadline, unreachable node).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from cps.v1 import types_pb2

from .values import Version

ERROR_DOMAIN = "cps.v1"
NO_ACTIVE_REPLICA = "no_active_replica"  # ErrorInfo.metadata["cause"]
UNKNOWN_OUTCOME = "unknown_outcome"  # ErrorInfo.metadata["cause"] of a CL_ERR_TIMEOUT


class CkptError(Exception):
    """A failed CPS call.

    ``reason`` is the seed's error name (``CL_CKPT_ERR_NO_SPACE``; None when
    the failure carried none), ``code`` the gRPC status code, ``message`` the
    server's text, ``metadata`` the ErrorInfo metadata and ``vector_index`` the
    index of the iovector element that made a write or read fail.
    ``from_node`` is True when a node answered with this error (it carried
    the seed's name), False when the call failed before or without an
    answer (unreachable node, deadline, broken connection).
    """

    reason: str | None = None
    default_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str = "",
        *,
        code: grpc.StatusCode | None = None,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        vector_index: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code: grpc.StatusCode = self.default_code if code is None else code
        if reason is not None:
            self.reason = reason  # a seed name this client does not know
        self.metadata: Mapping[str, str] = MappingProxyType(dict(metadata or {}))
        self.vector_index = vector_index
        self.from_node = False

    def __str__(self) -> str:
        text = f"{self.reason or self.code.name}: {self.message}"
        if self.vector_index is not None:
            text += f" (iovector element {self.vector_index})"
        return text


class NullPointerError(CkptError):
    """A required value is missing (e.g. a retention duration)."""

    reason = "CL_ERR_NULL_POINTER"
    default_code = grpc.StatusCode.INVALID_ARGUMENT


class InvalidParamError(CkptError):
    """A value breaks a rule (sizes, ids, offsets, empty iovector)."""

    reason = "CL_CKPT_ERR_INVALID_PARAM"
    default_code = grpc.StatusCode.INVALID_ARGUMENT


class BadFlagError(CkptError):
    """Unknown or inconsistent open or creation flags."""

    reason = "CL_CKPT_ERR_BAD_FLAG"
    default_code = grpc.StatusCode.INVALID_ARGUMENT


class AlreadyExistError(CkptError):
    """The checkpoint exists with other attributes, or the section exists."""

    reason = "CL_ERR_ALREADY_EXIST"
    default_code = grpc.StatusCode.ALREADY_EXISTS


class NotExistError(CkptError):
    """No such checkpoint or section (or no active replica: see the subclass)."""

    reason = "CL_CKPT_ERR_NOT_EXIST"
    default_code = grpc.StatusCode.NOT_FOUND


class NoActiveReplicaError(NotExistError):
    """A collocated checkpoint has no active replica yet: call
    ``Checkpoint.active_replica_set()``."""


class InvalidHandleError(CkptError):
    """Unknown or closed checkpoint or iteration handle."""

    reason = "CL_CKPT_ERR_INVALID_HANDLE"
    default_code = grpc.StatusCode.NOT_FOUND


class BadHandleError(CkptError):
    """Unknown or finalized session (service handle)."""

    reason = "CL_CKPT_ERR_BAD_HANDLE"
    default_code = grpc.StatusCode.NOT_FOUND


class OpNotPermittedError(CkptError):
    """A change through a handle opened without WRITE, or a read without READ."""

    reason = "CL_CKPT_ERR_OP_NOT_PERMITTED"
    default_code = grpc.StatusCode.PERMISSION_DENIED


class BadOperationError(CkptError):
    """The operation does not apply to this checkpoint (unlinked, synchronous,
    not collocated)."""

    reason = "CL_CKPT_ERR_BAD_OPERATION"
    default_code = grpc.StatusCode.FAILED_PRECONDITION


class InUseError(CkptError):
    """The session already has a callback stream attached."""

    reason = "CL_CKPT_ERR_INUSE"
    default_code = grpc.StatusCode.FAILED_PRECONDITION


class NotInitializedError(CkptError):
    """The session lacks what the call needs (e.g. the callback of an
    asynchronous call was not given to ``Session.connect``)."""

    reason = "CL_CKPT_ERR_NOT_INITIALIZED"
    default_code = grpc.StatusCode.FAILED_PRECONDITION


class VersionMismatchError(CkptError):
    """The node does not support the requested version; ``supported`` is the
    one it does (when it said)."""

    reason = "CL_CKPT_ERR_VERSION_MISMATCH"
    default_code = grpc.StatusCode.FAILED_PRECONDITION
    supported: Version | None = None


class NoSpaceError(CkptError):
    """``max_sections`` reached, or data would exceed ``checkpoint_size``."""

    reason = "CL_CKPT_ERR_NO_SPACE"
    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class NoMemoryError(CkptError):
    """The node's memory limits (reserved bytes, checkpoints, sizes)."""

    reason = "CL_ERR_NO_MEMORY"
    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class NoResourceError(CkptError):
    """The node's limits (sessions, handles per session, iterations)."""

    reason = "CL_ERR_NO_RESOURCE"
    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class CkptTimeoutError(CkptError, TimeoutError):
    """CL_ERR_TIMEOUT, or the call's deadline passed (also a TimeoutError).

    With ``metadata["cause"] == "unknown_outcome"`` the change may or may not
    have been applied (the node stopped answering mid-call, or said so
    itself): read it back."""

    reason = "CL_ERR_TIMEOUT"
    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class TryAgainError(CkptError):
    """CL_ERR_TRY_AGAIN, or the node is unreachable: retry later."""

    reason = "CL_ERR_TRY_AGAIN"
    default_code = grpc.StatusCode.UNAVAILABLE


class InternalError(CkptError):
    """A bug in the node."""

    reason = "CL_CKPT_INTERNAL_ERROR"
    default_code = grpc.StatusCode.INTERNAL


class LibraryInvalidHandleError(InvalidHandleError):
    """Library API (seed 3.3): unknown or finalized library handle."""

    reason = "CL_ERR_INVALID_HANDLE"


class LibraryNotExistError(NotExistError):
    """Library API (seed 3.3): no such checkpoint, dataset or element."""

    reason = "CL_ERR_NOT_EXIST"


class LibraryInvalidParameterError(InvalidParamError):
    """Library API (seed 3.3): a value breaks a rule."""

    reason = "CL_ERR_INVALID_PARAMETER"


ERRORS_BY_REASON: Mapping[str, type[CkptError]] = MappingProxyType(
    {
        cls.reason: cls
        for cls in (
            NullPointerError,
            InvalidParamError,
            BadFlagError,
            AlreadyExistError,
            NotExistError,
            InvalidHandleError,
            BadHandleError,
            OpNotPermittedError,
            BadOperationError,
            InUseError,
            NotInitializedError,
            VersionMismatchError,
            NoSpaceError,
            NoMemoryError,
            NoResourceError,
            CkptTimeoutError,
            TryAgainError,
            InternalError,
            LibraryInvalidHandleError,
            LibraryNotExistError,
            LibraryInvalidParameterError,
        )
        if cls.reason is not None
    }
)
"""The exception class of each seed error name."""

# Failures without an ErrorInfo: the call never reached the service.
_ERRORS_BY_CODE: Mapping[grpc.StatusCode, type[CkptError]] = MappingProxyType(
    {
        grpc.StatusCode.DEADLINE_EXCEEDED: CkptTimeoutError,
        grpc.StatusCode.UNAVAILABLE: TryAgainError,
    }
)


def error_for(
    reason: str,
    message: str,
    *,
    code: grpc.StatusCode | None = None,
    metadata: Mapping[str, str] | None = None,
    vector_index: int | None = None,
) -> CkptError:
    """The exception of a seed error name (as sent in ErrorInfo.reason or in
    the error_reason of an open or synchronize callback)."""
    cls = ERRORS_BY_REASON.get(reason, CkptError)
    if cls is NotExistError and metadata and metadata.get("cause") == NO_ACTIVE_REPLICA:
        cls = NoActiveReplicaError
    return cls(
        message,
        code=code,
        reason=None if cls is not CkptError else reason,
        metadata=metadata,
        vector_index=vector_index,
    )


def from_rpc_error(error: grpc.RpcError) -> CkptError:
    """The typed exception of a failed gRPC call."""
    code: grpc.StatusCode = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message: str = (error.details() if hasattr(error, "details") else None) or str(error)
    info: error_details_pb2.ErrorInfo | None = None
    vector_index: int | None = None
    supported: Version | None = None
    for detail in _details(error):
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            unpacked = error_details_pb2.ErrorInfo()
            detail.Unpack(unpacked)
            if unpacked.domain == ERROR_DOMAIN:
                info = unpacked
        elif detail.Is(types_pb2.IOVectorError.DESCRIPTOR):
            vector = types_pb2.IOVectorError()
            detail.Unpack(vector)
            vector_index = vector.erroneous_vector_index
        elif detail.Is(types_pb2.Version.DESCRIPTOR):
            version = types_pb2.Version()
            detail.Unpack(version)
            supported = Version(version.release_code, version.major_version, version.minor_version)
    if info is None:
        cls = _ERRORS_BY_CODE.get(code, CkptError)
        return cls(message, code=code)
    metadata = dict(info.metadata)
    if vector_index is None and "erroneous_vector_index" in metadata:
        vector_index = int(metadata["erroneous_vector_index"])
    result = error_for(
        info.reason, message, code=code, metadata=metadata, vector_index=vector_index
    )
    if isinstance(result, VersionMismatchError):
        result.supported = supported
    result.from_node = True
    return result


def _details(error: grpc.RpcError) -> list[Any]:
    try:
        status = rpc_status.from_call(error)
    except (AttributeError, ValueError):  # not a call, or an inconsistent status
        return []
    return [] if status is None else list(status.details)


__all__ = [
    "ERRORS_BY_REASON",
    "NO_ACTIVE_REPLICA",
    "UNKNOWN_OUTCOME",
    "AlreadyExistError",
    "BadFlagError",
    "BadHandleError",
    "BadOperationError",
    "CkptError",
    "CkptTimeoutError",
    "InUseError",
    "InternalError",
    "InvalidHandleError",
    "InvalidParamError",
    "LibraryInvalidHandleError",
    "LibraryInvalidParameterError",
    "LibraryNotExistError",
    "NoActiveReplicaError",
    "NoMemoryError",
    "NoResourceError",
    "NoSpaceError",
    "NotExistError",
    "NotInitializedError",
    "NullPointerError",
    "OpNotPermittedError",
    "TryAgainError",
    "VersionMismatchError",
    "error_for",
    "from_rpc_error",
]
