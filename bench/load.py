"""Closed-loop load driver: N concurrent workers over a few grpc.aio channels.

Every target (CPS, the bare server, etcd) is driven by this same code: each
worker awaits one pre-built call after another, so the in-flight level is the
number of workers. Requests are sent as pre-serialized bytes and responses are
received as bytes (no serializers), so the client does the same work per call
whatever the target.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from grpc import aio

from bench import cpu

# One channel (and so one TCP connection) per this many in-flight calls.
INFLIGHT_PER_CHANNEL = 16

# A local subchannel pool gives each channel its own connection: channels
# with equal arguments would otherwise share one subchannel.
CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
]

# Every call carries this deadline, so a stuck server cannot hang a run.
CALL_TIMEOUT_S = 10.0

Call = Callable[[], Awaitable[object]]
RawUnary = Callable[[bytes], Awaitable[bytes]]


def channel_count(inflight: int) -> int:
    """Number of channels used for an in-flight level."""
    return max(1, math.ceil(inflight / INFLIGHT_PER_CHANNEL))


def channel_of(worker: int, channels: int) -> int:
    """Index of the channel that a worker uses (workers are spread evenly)."""
    return worker % channels


async def open_channels(address: str, count: int) -> list[aio.Channel]:
    """Open `count` insecure channels to `address` and wait until all are ready."""
    channels = [aio.insecure_channel(address, options=CHANNEL_OPTIONS) for _ in range(count)]
    try:
        await asyncio.wait_for(
            asyncio.gather(*(c.channel_ready() for c in channels)), timeout=CALL_TIMEOUT_S
        )
    except BaseException:
        await close_channels(channels)
        raise
    return channels


async def close_channels(channels: Sequence[aio.Channel]) -> None:
    await asyncio.gather(*(c.close() for c in channels))


def raw_unary(channel: aio.Channel, method: str) -> RawUnary:
    """A unary call of `method` ("/pkg.Service/Method") sending and returning bytes."""
    multicallable = channel.unary_unary(method)

    async def call(request: bytes) -> bytes:
        response: bytes = await multicallable(request, timeout=CALL_TIMEOUT_S)
        return response

    return call


@dataclass(frozen=True)
class LoadResult:
    inflight: int
    channels: int
    ops: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    first_error: str | None
    # CPU used during the timed window by the client, the server(s), the
    # supporting processes (a cluster's etcd) and the rest.
    cpu: cpu.Usage

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0


def percentile(sorted_values: Sequence[int], fraction: float) -> int:
    """Nearest-rank percentile of already sorted values (0 when empty)."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


class _Window:
    """The timed window shared by the workers of one run."""

    def __init__(self) -> None:
        self.start_ns: int | None = None
        self.stop = False
        self.errors = 0
        self.first_error: str | None = None


async def _worker(call: Call, window: _Window, starts: list[int], latencies: list[int]) -> None:
    clock = time.perf_counter_ns
    while not window.stop:
        t0 = clock()
        try:
            await call()
        except Exception as exc:  # a failed call ends this worker; the run reports it
            window.errors += 1
            if window.first_error is None:
                window.first_error = describe(exc)
            return
        t1 = clock()
        start = window.start_ns
        if start is not None and t0 >= start:
            starts.append(t0)
            latencies.append(t1 - t0)


def describe(exc: BaseException) -> str:
    """One line naming an error (the status code and details for a gRPC error)."""
    if isinstance(exc, aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


async def run_load(
    calls: Sequence[Call],
    *,
    warmup_s: float,
    seconds: float,
    channels: int,
    server_pids: Sequence[int] = (),
    support_pids: Sequence[int] = (),
) -> LoadResult:
    """Run one worker per call for `warmup_s` + `seconds`, measuring the latter.

    An operation counts when it started inside the timed window; operations
    still in flight at the end of the window are awaited and counted, those
    started during the warm-up are not.
    """
    window = _Window()
    starts: list[list[int]] = [[] for _ in calls]
    latencies: list[list[int]] = [[] for _ in calls]
    tasks = [
        asyncio.create_task(_worker(call, window, starts[i], latencies[i]))
        for i, call in enumerate(calls)
    ]
    try:
        await asyncio.sleep(warmup_s)
        cpu0 = cpu.Snapshot.take(server_pids, support_pids)
        window.start_ns = start_ns = time.perf_counter_ns()
        await asyncio.sleep(seconds)
        end_ns = time.perf_counter_ns()
        cpu1 = cpu.Snapshot.take(server_pids, support_pids)
        window.stop = True
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=CALL_TIMEOUT_S + 5.0)
    finally:
        window.stop = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    measured = sorted(
        lat
        for worker_starts, worker_lats in zip(starts, latencies, strict=True)
        for t0, lat in zip(worker_starts, worker_lats, strict=True)
        if t0 < end_ns
    )
    elapsed_s = (end_ns - start_ns) / 1e9
    return LoadResult(
        inflight=len(calls),
        channels=channels,
        ops=len(measured),
        seconds=elapsed_s,
        p50_ms=percentile(measured, 0.50) / 1e6,
        p99_ms=percentile(measured, 0.99) / 1e6,
        errors=window.errors,
        first_error=window.first_error,
        cpu=cpu.usage(cpu0, cpu1, elapsed_s, server_pids, support_pids),
    )
