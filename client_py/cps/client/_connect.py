"""Opening a channel to the first node of a list that serves (shared by
Session, AsyncSession and Library)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ._failover import PROBE_TIMEOUT
from .errors import TryAgainError
from .values import split_targets

_MiB = 1024 * 1024
DEFAULT_CHANNEL_OPTIONS: Final[tuple[tuple[str, int], ...]] = (
    # The node's default message limit: a read of a large section must fit.
    ("grpc.max_receive_message_length", 80 * _MiB),
    ("grpc.max_send_message_length", 80 * _MiB),
    # Notice a dead or frozen node on an idle callback stream within about
    # 10 s (the node allows pings every second).
    ("grpc.keepalive_time_ms", 5_000),
    ("grpc.keepalive_timeout_ms", 5_000),
)
"""Channel options of ``Session.connect``; ``options`` adds to or overrides them."""

T = TypeVar("T")


def channel_options(options: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    merged: dict[str, Any] = dict(DEFAULT_CHANNEL_OPTIONS)
    merged.update(options)
    return list(merged.items())


def open_channel(
    target: str, options: list[tuple[str, Any]], credentials: grpc.ChannelCredentials | None
) -> grpc.Channel:
    if credentials is None:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, credentials, options=options)


def open_aio_channel(
    target: str, options: list[tuple[str, Any]], credentials: grpc.ChannelCredentials | None
) -> grpc.aio.Channel:
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, credentials, options=options)


_GONE = (
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.CANCELLED,
)
_CHECK = health_pb2.HealthCheckRequest(service="")


def alive(channel: grpc.Channel, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether the node answers a grpc.health.v1 Check in time (any answer,
    even NOT_SERVING or UNIMPLEMENTED, says its process runs)."""
    try:
        health_pb2_grpc.HealthStub(channel).Check(_CHECK, timeout=timeout)
    except grpc.RpcError as error:
        return error.code() not in _GONE
    except ValueError:  # the channel was closed
        return False
    return True


async def alive_async(channel: grpc.aio.Channel, timeout: float = PROBE_TIMEOUT) -> bool:
    """``alive`` over a grpc.aio channel."""
    try:
        await health_pb2_grpc.HealthStub(channel).Check(_CHECK, timeout=timeout)
    except grpc.RpcError as error:
        return error.code() not in _GONE
    except (ValueError, RuntimeError):  # the channel was closed
        return False
    return True


def first_serving(
    targets: str, open_one: Callable[[str], grpc.Channel], start: Callable[[grpc.Channel], T]
) -> T:
    """``start`` on a channel to each node of "a:50051,b:50051" in turn until
    one serves; a standby or an unreachable node (TryAgainError) is skipped.
    The channel of a node that failed is closed."""
    last_error: TryAgainError | None = None
    for target in split_targets(targets):
        channel = open_one(target)
        try:
            return start(channel)
        except TryAgainError as error:
            channel.close()
            last_error = error
        except BaseException:
            channel.close()
            raise
    assert last_error is not None  # split_targets gives at least one
    raise last_error


async def first_serving_async(
    targets: str,
    open_one: Callable[[str], grpc.aio.Channel],
    start: Callable[[grpc.aio.Channel], Awaitable[T]],
) -> T:
    """``first_serving`` over grpc.aio channels."""
    last_error: TryAgainError | None = None
    for target in split_targets(targets):
        channel = open_one(target)
        try:
            return await start(channel)
        except TryAgainError as error:
            await channel.close()
            last_error = error
        except BaseException:
            await channel.close()
            raise
    assert last_error is not None  # split_targets gives at least one
    raise last_error
