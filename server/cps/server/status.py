"""The one table from seed errors to gRPC status codes, and the rich status."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from cps.server.core.errors import CkptError, ErrorCode
from cps.server.core.sessions import VersionMismatch
from cps.v1 import types_pb2

ERROR_DOMAIN = "cps.v1"

STATUS_CODES: dict[ErrorCode, grpc.StatusCode] = {
    ErrorCode.NULL_POINTER: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.INVALID_PARAM: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.BAD_FLAG: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.ALREADY_EXIST: grpc.StatusCode.ALREADY_EXISTS,
    ErrorCode.NOT_EXIST: grpc.StatusCode.NOT_FOUND,
    ErrorCode.INVALID_HANDLE: grpc.StatusCode.NOT_FOUND,
    ErrorCode.BAD_HANDLE: grpc.StatusCode.NOT_FOUND,
    ErrorCode.OP_NOT_PERMITTED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorCode.BAD_OPERATION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.INUSE: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.NOT_INITIALIZED: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.VERSION_MISMATCH: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.NO_SPACE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.NO_MEMORY: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.NO_RESOURCE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorCode.TRY_AGAIN: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
    ErrorCode.LIB_INVALID_HANDLE: grpc.StatusCode.NOT_FOUND,
    ErrorCode.LIB_NOT_EXIST: grpc.StatusCode.NOT_FOUND,
    ErrorCode.LIB_INVALID_PARAMETER: grpc.StatusCode.INVALID_ARGUMENT,
}


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def to_status(error: CkptError, code: grpc.StatusCode | None = None) -> grpc.Status:
    """The gRPC status of a seed error: code from the table (unless given),
    ErrorInfo with the seed's name as reason, and the iovector index or
    supported version where the call has one."""
    metadata = dict(error.metadata)
    details = []
    if error.vector_index is not None:
        metadata["erroneous_vector_index"] = str(error.vector_index)
        details.append(_pack(types_pb2.IOVectorError(erroneous_vector_index=error.vector_index)))
    if isinstance(error, VersionMismatch):
        supported = error.supported
        details.append(
            _pack(
                types_pb2.Version(
                    release_code=supported.release_code,
                    major_version=supported.major_version,
                    minor_version=supported.minor_version,
                )
            )
        )
    info = error_details_pb2.ErrorInfo(
        reason=error.code.value, domain=ERROR_DOMAIN, metadata=metadata
    )
    details.insert(0, _pack(info))
    status = status_pb2.Status(
        code=(code or STATUS_CODES[error.code]).value[0], message=error.message, details=details
    )
    return rpc_status.to_status(status)


_BY_REASON = {code.value: code for code in ErrorCode}


def seed_error_of(error: grpc.aio.AioRpcError) -> CkptError | None:
    """The seed error a peer answered with (the inverse of to_status), or
    None when the status carries none (the peer could not be reached)."""
    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info) and info.domain == ERROR_DOMAIN:
                code = _BY_REASON.get(info.reason)
                if code is None:
                    return None
                metadata = dict(info.metadata)
                index = metadata.pop("erroneous_vector_index", None)
                return CkptError(
                    code,
                    status.message,
                    vector_index=None if index is None else int(index),
                    metadata=metadata,
                )
    return None
