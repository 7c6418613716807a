"""How a servicer method runs a core call: errors become the call's status,
and a change is acknowledged only once it is durable."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeAlias, TypeVar

from cps.server.core.errors import CkptError, ErrorCode
from cps.server.metrics import METRICS

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

    async def replicated(self) -> None:
        """Until every replica holds every change stored so far."""
        ...

    def check_serving(self) -> None:
        """Raise CkptError when this node must not serve clients (a standby)."""
        ...


class InMemory:
    """Durability of a node that keeps nothing on disk and has no replicas."""

    def durable(self) -> asyncio.Future[None] | None:
        return None

    async def replicated(self) -> None:
        return None

    def check_serving(self) -> None:
        return None


class HasDurability(Protocol):
    durability: Durability


S = TypeVar("S", bound=HasDurability)


def seed_call(
    method: Callable[[S, Request], Response],
) -> Callable[[S, Request, Context], Awaitable[Response]]:
    """Run a synchronous core call; a CkptError becomes the call's status."""
    return _handler(method, durable=False)


def seed_mutation(
    method: Callable[[S, Request], Response],
) -> Callable[[S, Request, Context], Awaitable[Response]]:
    """As seed_call, then wait until the change is durable before answering."""
    return _handler(method, durable=True)


def seed_replicated(
    method: Callable[[S, Request], Response],
) -> Callable[[S, Request, Context], Awaitable[Response]]:
    """As seed_call, then wait until every replica holds every change stored
    so far (CheckpointSynchronize)."""
    return _handler(method, durable=False, replicated=True)


def _handler(
    method: Callable[[S, Request], Response], *, durable: bool, replicated: bool = False
) -> Callable[[S, Request, Context], Awaitable[Response]]:
    name = method.__name__

    @functools.wraps(method)
    async def handler(self: S, request: Request, context: Context) -> Response:
        started = time.perf_counter()
        try:
            self.durability.check_serving()
            response = method(self, request)
            pending = self.durability.durable() if durable else None
            if pending is not None:
                try:
                    await pending
                except Exception as error:  # storage failed: not the caller's fault
                    raise CkptError(ErrorCode.INTERNAL, str(error)) from error
            if replicated:
                await self.durability.replicated()
        except CkptError as error:
            METRICS.observe(name, error.code.value, time.perf_counter() - started)
            log.debug("%s failed: %s", name, error)
            await context.abort_with_status(to_status(error))
            raise  # unreachable: abort raises
        METRICS.observe(name, "OK", time.perf_counter() - started)
        return response

    return handler
