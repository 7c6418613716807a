"""The gate every call of the node passes first (installed on every method
by api/registration.py): a request that does not decode is refused with
INVALID_ARGUMENT (the seed's invalid-parameter error) and one warning line,
never an exception of the server (UNKNOWN and a traceback).

grpc decodes a request before the servicer runs and turns a decoding error
into UNKNOWN; here the decoder of every method is wrapped so that it answers
a marker instead of raising, and the method, seeing the marker, refuses the
call. Streamed requests are checked message by message.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from google.protobuf.message import DecodeError

from cps.server.core.errors import CkptError, ErrorCode
from cps.server.status import to_status

log = logging.getLogger("cps.api")

Context = Any  # grpc.aio.ServicerContext
LIBRARY_PREFIX = "/cps.v1.LibraryCheckpointService/"


class Undecodable:
    """Stands for a request that did not decode."""

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem


def guarded_decoder(decode: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
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


async def refuse(method: str, bad: Undecodable, context: Context) -> None:
    log.warning(
        "undecodable request refused",
        extra={"method": method, "problem": bad.problem, "peer": context.peer()},
    )
    await context.abort_with_status(to_status(_error(method, bad)))


async def checked(
    method: str, requests: AsyncIterator[Any], context: Context
) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, Undecodable):
            await refuse(method, request, context)
        yield request
