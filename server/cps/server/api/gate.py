"""The gate every call of the node passes first (a grpc.aio server
interceptor): a request that does not decode is refused with
INVALID_ARGUMENT (the seed's invalid-parameter error) and one warning line,
never an exception of the server (UNKNOWN and a traceback).

grpc decodes a request before the servicer runs and turns a decoding error
into UNKNOWN; here the decoder of every method is wrapped so that it answers
a marker instead of raising, and the method, seeing the marker, refuses the
call. Streamed requests are checked message by message.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from cps.server.api.behaviours import answer, responses
from cps.server.core.errors import CkptError, ErrorCode
from cps.server.status import to_status

log = logging.getLogger("cps.api")

Handler = Any  # grpc.RpcMethodHandler (a namedtuple); grpc ships no type hints
Context = Any  # grpc.aio.ServicerContext
LIBRARY_PREFIX = "/cps.v1.LibraryCheckpointService/"


class Undecodable:
    """Stands for a request that did not decode."""

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem


def _decoder(decode: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if decode is None:
        return None

    def guarded(raw: bytes) -> Any:
        try:
            return decode(raw)
        except (DecodeError, ValueError, TypeError, RuntimeError) as error:
            return Undecodable(f"{type(error).__name__}: {error}")

    return guarded


def _error(method: str, bad: Undecodable) -> CkptError:
    code = (
        ErrorCode.LIB_INVALID_PARAMETER
        if method.startswith(LIBRARY_PREFIX)
        else ErrorCode.INVALID_PARAM
    )
    return CkptError(code, f"the request of {method} does not decode: {bad.problem}")


async def _refuse(method: str, bad: Undecodable, context: Context) -> None:
    log.warning(
        "undecodable request refused",
        extra={"method": method, "problem": bad.problem, "peer": context.peer()},
    )
    await context.abort_with_status(to_status(_error(method, bad)))


async def _checked(
    method: str, requests: AsyncIterator[Any], context: Context
) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, Undecodable):
            await _refuse(method, request, context)
        yield request


def _guard(method: str, handler: Handler) -> Handler:
    """The handler with a decoder that never raises and a behaviour that
    refuses what did not decode."""
    if handler.request_streaming:
        inner_stream = handler.stream_stream or handler.stream_unary

        if handler.response_streaming:

            async def stream_stream(requests: AsyncIterator[Any], context: Context) -> Any:
                checked = _checked(method, requests, context)
                async for response in responses(inner_stream(checked, context)):
                    yield response

            behaviours: dict[str, Any] = {"stream_stream": stream_stream}
        else:

            async def stream_unary(requests: AsyncIterator[Any], context: Context) -> Any:
                return await answer(inner_stream(_checked(method, requests, context), context))

            behaviours = {"stream_unary": stream_unary}
    elif handler.response_streaming:
        inner_unary_stream = handler.unary_stream

        async def unary_stream(request: Any, context: Context) -> Any:
            if isinstance(request, Undecodable):
                await _refuse(method, request, context)
                return
            async for response in responses(inner_unary_stream(request, context)):
                yield response

        behaviours = {"unary_stream": unary_stream}
    else:
        inner_unary = handler.unary_unary

        async def unary_unary(request: Any, context: Context) -> Any:
            if isinstance(request, Undecodable):
                await _refuse(method, request, context)
            return await answer(inner_unary(request, context))

        behaviours = {"unary_unary": unary_unary}
    return handler._replace(
        request_deserializer=_decoder(handler.request_deserializer), **behaviours
    )


class RequestGate(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Give it to grpc.aio.server(interceptors=[RequestGate()])."""

    def __init__(self) -> None:
        # Each method's handler and its guarded twin, made once.
        self._guarded: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method = handler_call_details.method
        known = self._guarded.get(method)
        if known is None or known[0] is not handler:
            known = self._guarded[method] = (handler, _guard(method, handler))
        return known[1]
