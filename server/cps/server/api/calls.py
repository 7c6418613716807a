"""How a servicer method runs a use case: the caller's identity in, a seed
error out as the call's status (counted, with its reason, by
api/call_metrics.py)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeAlias, TypeVar

from cps.server.core.errors import CkptError, ErrorCode
from cps.server.status import to_status

log = logging.getLogger("cps.api")

# grpc.aio.ServicerContext; grpc ships no type hints.
Context: TypeAlias = Any
Request = TypeVar("Request")
Response = TypeVar("Response")
S = TypeVar("S")


def identity(context: Context) -> str:
    """Who is calling: the subject of the client certificate the port
    verified (--client-ca), "" without one (every session then belongs to
    ""). A session answers only to the identity that initialized it."""
    auth = context.auth_context() or {}
    subject = auth.get("x509_subject") or auth.get("x509_common_name")
    return subject[0].decode(errors="replace") if subject else ""


def seed_rpc(
    method: Callable[[S, Request, str], Awaitable[Response]],
) -> Callable[[S, Request, Context], Awaitable[Response]]:
    """Run a use case; a CkptError becomes the call's status."""
    name = method.__name__

    @functools.wraps(method)
    async def handler(self: S, request: Request, context: Context) -> Response:
        try:
            return await method(self, request, identity(context))
        except CkptError as error:
            log.debug("%s failed: %s", name, error)
            await context.abort_with_status(to_status(error))
            raise  # unreachable: abort raises

    return handler


class Durability(Protocol):
    def durable(self) -> asyncio.Future[None] | None:
        """Done when every change made so far is stored; None: nothing to wait for."""
        ...


async def stored(durability: Durability) -> None:
    """Until what the call changed is stored; a storage failure is the
    node's, not the caller's."""
    pending = durability.durable()
    if pending is not None:
        try:
            await pending
        except Exception as error:
            raise CkptError(ErrorCode.INTERNAL, str(error)) from error


class LibraryCalls(Protocol):
    durability: Durability

    def authorize(self, request: Any, who: str) -> None:
        """Refuse a handle of another identity (before anything is done)."""
        ...


D = TypeVar("D", bound=LibraryCalls)


def seed_call(
    method: Callable[[D, Request, str], Response],
) -> Callable[[D, Request, Context], Awaitable[Response]]:
    """A synchronous core call (the library API), given the caller's identity."""

    async def run(self: D, request: Request, who: str) -> Response:
        self.authorize(request, who)
        return method(self, request, who)

    run.__name__ = method.__name__
    return seed_rpc(run)


def seed_mutation(
    method: Callable[[D, Request, str], Response],
) -> Callable[[D, Request, Context], Awaitable[Response]]:
    """As seed_call, answered once the change is stored."""

    async def run(self: D, request: Request, who: str) -> Response:
        self.authorize(request, who)
        response = method(self, request, who)
        await stored(self.durability)
        return response

    run.__name__ = method.__name__
    return seed_rpc(run)
