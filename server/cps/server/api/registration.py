"""Every method of every service the node serves, wrapped once, when it is
registered: the request gate (a request that does not decode is refused
with INVALID_ARGUMENT) inside the call metrics (every call counted, the
refused ones too).

Why not grpc.aio server interceptors: they run on every call, as a chain
of coroutines that finds the handler again, and each wrapped the behaviour
in coroutines of its own; one wrapper made at registration does the same
work in one coroutine. Simpler, not measurably faster (bench/PROFILE.md).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import grpc

from cps.server.metrics import ServerMetrics

from .call_metrics import MethodMetrics
from .gate import Undecodable, checked, guarded_decoder, refuse

Handler = Any  # grpc.RpcMethodHandler (a namedtuple); grpc ships no type hints
Context = Any  # grpc.aio.ServicerContext


def wrap(metrics: ServerMetrics, path: str, handler: Handler) -> Handler:
    """``handler`` with the gate and the metrics around its behaviour."""
    counted = MethodMetrics(metrics, path, handler)
    decoder = guarded_decoder(handler.request_deserializer)
    if handler.request_streaming and handler.response_streaming:
        return handler._replace(
            request_deserializer=decoder,
            stream_stream=_stream_stream(path, counted, handler.stream_stream),
        )
    if handler.request_streaming:
        return handler._replace(
            request_deserializer=decoder,
            stream_unary=_stream_unary(path, counted, handler.stream_unary),
        )
    if handler.response_streaming:
        return handler._replace(
            request_deserializer=decoder,
            unary_stream=_unary_stream(path, counted, handler.unary_stream),
        )
    return handler._replace(
        request_deserializer=decoder, unary_unary=_unary_unary(path, counted, handler.unary_unary)
    )


def _unary_unary(path: str, counted: MethodMetrics, inner: Any) -> Any:
    asynchronous = inspect.iscoroutinefunction(inner)

    async def unary_unary(request: Any, context: Context) -> Any:
        began = counted.begin()
        try:
            if isinstance(request, Undecodable):
                await refuse(path, request, context)
            response = await inner(request, context) if asynchronous else inner(request, context)
        except BaseException as error:
            counted.end(began, context, error)
            raise
        counted.end(began, context, None)
        return response

    return unary_unary


def _stream_unary(path: str, counted: MethodMetrics, inner: Any) -> Any:
    async def stream_unary(requests: AsyncIterator[Any], context: Context) -> Any:
        began = counted.begin()
        try:
            response = await _answer(inner(checked(path, requests, context), context))
        except BaseException as error:
            counted.end(began, context, error)
            raise
        counted.end(began, context, None)
        return response

    return stream_unary


def _unary_stream(path: str, counted: MethodMetrics, inner: Any) -> Any:
    async def unary_stream(request: Any, context: Context) -> AsyncIterator[Any]:
        began = counted.begin()
        try:
            if isinstance(request, Undecodable):
                await refuse(path, request, context)
            async for response in _responses(inner(request, context)):
                yield response
        except BaseException as error:
            counted.end(began, context, error)
            raise
        counted.end(began, context, None)

    return unary_stream


def _stream_stream(path: str, counted: MethodMetrics, inner: Any) -> Any:
    async def stream_stream(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
        began = counted.begin()
        try:
            async for response in _responses(inner(checked(path, requests, context), context)):
                yield response
        except BaseException as error:
            counted.end(began, context, error)
            raise
        counted.end(began, context, None)

    return stream_stream


async def _answer(result: Any) -> Any:
    """What a unary behaviour answers, a coroutine or a plain function."""
    return await result if inspect.isawaitable(result) else result


async def _responses(result: Any) -> AsyncIterator[Any]:
    """What a streaming behaviour answers, whichever way it is written: an
    async generator, a coroutine writing through the context, an iterator."""
    if hasattr(result, "__aiter__"):
        async for response in result:
            yield response
    elif inspect.isawaitable(result):
        await result
    else:
        for response in result:
            yield response


class _WrappedGeneric(grpc.GenericRpcHandler):  # type: ignore[misc]
    """A generic handler whose methods come out wrapped (made once each)."""

    def __init__(self, inner: Any, metrics: ServerMetrics) -> None:
        self.inner = inner
        self.metrics = metrics
        self.known: dict[str, tuple[Handler, Handler]] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler:
        handler = self.inner.service(handler_call_details)
        if handler is None:
            return None  # UNIMPLEMENTED, from grpc: not counted (the names are the caller's)
        path = handler_call_details.method
        known = self.known.get(path)
        if known is None or known[0] is not handler:
            known = self.known[path] = (handler, wrap(self.metrics, path, handler))
        return known[1]


class Registrar:
    """Stands in for the grpc.aio server in the generated
    ``add_*Servicer_to_server`` functions: what they register reaches the
    server wrapped."""

    def __init__(self, server: grpc.aio.Server, metrics: ServerMetrics) -> None:
        self.server = server
        self.metrics = metrics

    def add_generic_rpc_handlers(self, handlers: Iterable[Any]) -> None:
        self.server.add_generic_rpc_handlers(
            tuple(_WrappedGeneric(handler, self.metrics) for handler in handlers)
        )

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Any]) -> None:
        self.server.add_registered_method_handlers(
            service,
            {
                name: wrap(self.metrics, f"/{service}/{name}", handler)
                for name, handler in handlers.items()
            },
        )
