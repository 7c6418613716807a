"""Every RPC of the node counted (installed on every method by
api/registration.py): the usual
gRPC server metrics, grpc_server_started_total, grpc_server_handled_total
with the status code and grpc_server_handling_seconds, for every service the
server has (CPS, admin, health, reflection, the peer service), plus
cps_seed_errors_total with the seed error's name (the ErrorInfo reason the
call ended with).

Labels stay bounded: service and method are those the server registered
(an unknown method is never wrapped), the code is a
grpc.StatusCode, the reason one of the seed's errors (else OTHER).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from cps.server.core.errors import ErrorCode
from cps.server.metrics import ServerMetrics
from cps.server.status import ERROR_DOMAIN

Handler = Any  # grpc.RpcMethodHandler (a namedtuple); grpc ships no type hints
Context = Any  # grpc.aio.ServicerContext

_DETAILS_KEY = "grpc-status-details-bin"
_SEED_REASONS = frozenset(code.value for code in ErrorCode)


def _seed_reason(context: Context) -> str | None:
    """The seed error a failed call ended with, from its rich status."""
    for key, value in context.trailing_metadata() or ():
        if key != _DETAILS_KEY:
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            return None
        info = error_details_pb2.ErrorInfo()
        for detail in status.details:
            if detail.Unpack(info) and info.domain == ERROR_DOMAIN:
                return info.reason if info.reason in _SEED_REASONS else "OTHER"
    return None


class MethodMetrics:
    """The label values and metric children of one method, made once."""

    __slots__ = ("handled", "handling", "labels", "metrics", "seed_errors", "started")

    def __init__(self, metrics: ServerMetrics, path: str, handler: Handler) -> None:
        service, _, method = path.lstrip("/").rpartition("/")
        if handler.request_streaming:
            kind = "bidi_stream" if handler.response_streaming else "client_stream"
        else:
            kind = "server_stream" if handler.response_streaming else "unary"
        self.metrics = metrics
        self.labels = (service, method, kind)
        self.started = metrics.started.labels(*self.labels)
        self.handling = metrics.handling.labels(*self.labels)
        self.handled: dict[grpc.StatusCode, Any] = {}
        self.seed_errors: dict[str, Any] = {}

    def begin(self) -> float:
        self.started.inc()
        return time.perf_counter()

    def end(self, began: float, context: Context, error: BaseException | None) -> None:
        self.handling.observe(time.perf_counter() - began)
        code = _code(context, error)
        handled = self.handled.get(code)
        if handled is None:
            handled = self.handled[code] = self.metrics.handled.labels(*self.labels, code.name)
        handled.inc()
        if code is grpc.StatusCode.OK:
            return
        reason = _seed_reason(context)
        if reason is not None:
            counter = self.seed_errors.get(reason)
            if counter is None:
                service, method, _ = self.labels
                counter = self.seed_errors[reason] = self.metrics.seed_errors.labels(
                    service, method, reason
                )
            counter.inc()
            if self.metrics.on_seed_error is not None:
                service, method, _ = self.labels
                self.metrics.on_seed_error(f"/{service}/{method}", reason)


def _code(context: Context, error: BaseException | None) -> grpc.StatusCode:
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED  # the client went away (or the server is stopping)
    code = context.code()  # set by abort, abort_with_status or set_code
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN
