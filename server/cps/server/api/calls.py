"""How a servicer method runs a core call: errors become the call's status,
and a change is acknowledged only once it is durable."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeAlias, TypeVar

from cps.server.core.errors import CkptError, ErrorCode

from .status import to_status

log = logging.getLogger("cps.api")

# grpc.aio.ServicerContext; grpc ships no type hints.
Context: TypeAlias = Any
Request = TypeVar("Request")
Response = TypeVar("Response")


class Durability(Protocol):
    def durable(self) -> asyncio.Future[None] | None:
        """Done when every change made so far is stored; None: nothing to wait for."""
        ...


class InMemory:
    """Durability of a node that keeps nothing on disk."""

    def durable(self) -> asyncio.Future[None] | None:
        return None


class HasDurability(Protocol):
    durability: Durability


S = TypeVar("S", bound=HasDurability)
T = TypeVar("T")


def seed_call(
    method: Callable[[T, Request], Response],
) -> Callable[[T, Request, Context], Awaitable[Response]]:
    """Run a synchronous core call; a CkptError becomes the call's status."""

    @functools.wraps(method)
    async def handler(self: T, request: Request, context: Context) -> Response:
        try:
            return method(self, request)
        except CkptError as error:
            log.debug("%s failed: %s", method.__name__, error)
            await context.abort_with_status(to_status(error))
            raise  # unreachable: abort raises

    return handler


def seed_mutation(
    method: Callable[[S, Request], Response],
) -> Callable[[S, Request, Context], Awaitable[Response]]:
    """As seed_call, then wait until the change is durable before answering."""

    @functools.wraps(method)
    async def handler(self: S, request: Request, context: Context) -> Response:
        try:
            response = method(self, request)
        except CkptError as error:
            log.debug("%s failed: %s", method.__name__, error)
            await context.abort_with_status(to_status(error))
            raise  # unreachable: abort raises
        pending = self.durability.durable()
        if pending is not None:
            try:
                await pending
            except Exception as error:
                failure = CkptError(ErrorCode.INTERNAL, str(error))
                await context.abort_with_status(to_status(failure))
        return response

    return handler
