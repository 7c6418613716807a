"""One unary call: a deadline, and a typed exception instead of grpc.RpcError."""

from __future__ import annotations

from typing import Any

import grpc

from ._requests import Call
from .errors import from_rpc_error
from .values import Duration, as_timedelta


def _seconds(timeout: Duration | None) -> float | None:
    return None if timeout is None else as_timedelta(timeout).total_seconds()


def invoke(stub: Any, call: Call, timeout: Duration | None) -> Any:
    """Run ``call`` on a CheckpointService stub; ``timeout`` (seconds or a
    timedelta) is the gRPC deadline, None for none."""
    try:
        return getattr(stub, call.method)(call.request, timeout=_seconds(timeout))
    except grpc.RpcError as error:
        raise from_rpc_error(error) from error


async def invoke_async(stub: Any, call: Call, timeout: Duration | None) -> Any:
    """``invoke`` on a grpc.aio stub."""
    try:
        return await getattr(stub, call.method)(call.request, timeout=_seconds(timeout))
    except grpc.RpcError as error:
        raise from_rpc_error(error) from error
