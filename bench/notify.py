"""Notification latency (issue 3): one paced writer, S subscriber sessions.

Each subscriber is a session of its own (Initialize, CheckpointOpen READ,
ImmediateConsumptionRegister, then the session's `Callbacks` stream), all in
this one asyncio process over a few channels. One writer, on a channel of its
own, sends N SectionOverwrite calls on a fixed schedule (open loop: write i is
sent at t0 + i / rate whether or not earlier ones were answered), each to a
section of its own, so every notification names the write it reports.

Per write: the send time and the time its acknowledgement arrived; per
subscriber and write: the time the notification arrived (when the stream
message holding it was received). All from time.perf_counter_ns in this
process. Latency = arrival - ack and arrival - send, over every subscriber and
write.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from dataclasses import dataclass
from typing import Any

from grpc import aio

from bench import cpu
from bench.cps_scenarios import SERVICE, bench_attributes, bounded, cps_call, initialize
from bench.load import (
    CALL_TIMEOUT_S,
    close_channels,
    describe,
    open_channels,
    percentile,
    raw_unary,
)
from bench.scenarios import PAYLOAD
from cps.v1 import checkpoint_service_pb2 as pb
from cps.v1 import types_pb2 as types

# Subscribers are spread over at most this many channels (TCP connections).
MAX_CHANNELS = 4
# After the last acknowledgement, how long missing notifications are awaited.
SETTLE_S = 5.0
# How long every subscriber may take to see the warm-up write.
BARRIER_TIMEOUT_S = 15.0
WARM_SID = b"warm"


def write_sid(index: int) -> bytes:
    return b"n-%d" % index


def channel_count(subscribers: int) -> int:
    return max(1, min(subscribers, MAX_CHANNELS))


@dataclass(frozen=True)
class Spread:
    """Percentiles of signed durations, in ms."""

    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @staticmethod
    def of(values_ns: list[int]) -> Spread | None:
        if not values_ns:
            return None
        ordered = sorted(values_ns)
        return Spread(
            count=len(ordered),
            p50_ms=percentile(ordered, 0.50) / 1e6,
            p99_ms=percentile(ordered, 0.99) / 1e6,
            max_ms=ordered[-1] / 1e6,
        )


@dataclass(frozen=True)
class NotifyResult:
    subscribers: int
    channels: int
    writes: int
    rate: float
    # Notifications expected (writes acknowledged x subscribers) and received.
    expected: int
    received: int
    # Counted by the `dropped` callbacks (a subscriber fell behind).
    dropped: int
    after_ack: Spread | None
    after_send: Spread | None
    # Share of notifications that arrived before their write's acknowledgement.
    before_ack: float
    # The writes' own latency (send to acknowledgement).
    ack: Spread | None
    # How late the writes were sent against their schedule (the client's loop was busy).
    send_lag: Spread | None
    errors: int
    first_error: str | None
    # CPU from the first write until the last notification (or the settle timeout).
    cpu: cpu.Usage
    seconds: float


class NotifyFixture:
    """The checkpoint the runs write: one section per write, plus the warm-up one."""

    def __init__(self, writes: int) -> None:
        self.writes = writes
        self.checkpoint_name = f"cps-bench-notify-{os.getpid()}"
        self._session: tuple[int, int] | None = None

    async def prepare(self, channel: aio.Channel) -> None:
        service_handle = await initialize(channel)
        max_sections = self.writes + 1
        attributes = bench_attributes(max_sections)
        request = pb.CheckpointOpenRequest(
            service_handle=service_handle,
            checkpoint_name=self.checkpoint_name,
            checkpoint_creation_attributes=attributes,
            checkpoint_open_flags=[types.OPEN_FLAG_WRITE, types.OPEN_FLAG_CREATE],
        )
        opened = await cps_call(channel, "CheckpointOpen", request, pb.CheckpointOpenResponse)
        handle = opened.checkpoint_handle
        self._session = (service_handle, handle)
        create = raw_unary(channel, SERVICE + "SectionCreate")
        ids = [WARM_SID, *(write_sid(i) for i in range(self.writes))]
        await bounded(
            [
                functools.partial(
                    create,
                    pb.SectionCreateRequest(
                        checkpoint_handle=handle,
                        section_creation_attributes=types.SectionCreationAttributes(
                            section_id=types.SectionId(id=section_id)
                        ),
                        initial_data=PAYLOAD,
                    ).SerializeToString(),
                )
                for section_id in ids
            ]
        )

    async def finish(self, channel: aio.Channel) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        service_handle, handle = session
        await cps_call(
            channel,
            "CheckpointClose",
            pb.CheckpointCloseRequest(checkpoint_handle=handle),
            pb.CheckpointCloseResponse,
        )
        await cps_call(
            channel,
            "CheckpointDelete",
            pb.CheckpointDeleteRequest(
                service_handle=service_handle, checkpoint_name=self.checkpoint_name
            ),
            pb.CheckpointDeleteResponse,
        )
        await cps_call(
            channel,
            "Finalize",
            pb.FinalizeRequest(service_handle=service_handle),
            pb.FinalizeResponse,
        )


class _Subscriber:
    """One session watching the checkpoint through its Callbacks stream."""

    def __init__(self, channel: aio.Channel, writes: int) -> None:
        self.channel = channel
        self.writes = writes
        self.arrivals = [0] * writes
        self.received = 0
        self.dropped = 0
        self.warm = asyncio.Event()
        self.done = asyncio.Event()
        self.service_handle: int | None = None
        self.task: asyncio.Task[None] | None = None
        self.error: str | None = None
        self.closing = False

    async def attach(self, checkpoint_name: str, stream_timeout_s: float) -> None:
        self.service_handle = service_handle = await initialize(self.channel)
        request = pb.CheckpointOpenRequest(
            service_handle=service_handle,
            checkpoint_name=checkpoint_name,
            checkpoint_open_flags=[types.OPEN_FLAG_READ],
        )
        opened = await cps_call(self.channel, "CheckpointOpen", request, pb.CheckpointOpenResponse)
        await cps_call(
            self.channel,
            "ImmediateConsumptionRegister",
            pb.ImmediateConsumptionRegisterRequest(checkpoint_handle=opened.checkpoint_handle),
            pb.ImmediateConsumptionRegisterResponse,
        )
        stream = self.channel.unary_stream(SERVICE + "Callbacks")
        call = stream(
            pb.CallbacksRequest(service_handle=service_handle).SerializeToString(),
            timeout=stream_timeout_s,
        )
        self.task = asyncio.create_task(self._consume(call))

    async def _consume(self, call: Any) -> None:
        clock = time.perf_counter_ns
        try:
            async for raw in call:
                now = clock()
                for callback in pb.CallbacksResponse.FromString(raw).callbacks:
                    kind = callback.WhichOneof("kind")
                    if kind == "notification":
                        for changed in callback.notification.changed_sections:
                            self._arrived(changed.section_id.id, now)
                    elif kind == "dropped":
                        self.dropped += callback.dropped.count
        except aio.AioRpcError as exc:
            if not self.closing:
                self.error = describe(exc)

    def _arrived(self, section_id: bytes, now: int) -> None:
        if section_id == WARM_SID:
            self.warm.set()
            return
        index = int(section_id[2:])
        if self.arrivals[index] == 0:
            self.arrivals[index] = now
            self.received += 1
            if self.received == self.writes:
                self.done.set()

    async def detach(self) -> None:
        """Finalize the session (which ends its stream), then reap the consumer."""
        self.closing = True
        if self.service_handle is not None:
            with contextlib.suppress(Exception):
                await cps_call(
                    self.channel,
                    "Finalize",
                    pb.FinalizeRequest(service_handle=self.service_handle),
                    pb.FinalizeResponse,
                )
        if self.task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self.task, timeout=5.0)


@dataclass
class _Writes:
    sends: list[int]
    acks: list[int]
    lags: list[int]
    errors: int = 0
    first_error: str | None = None


async def _paced_writes(channel: aio.Channel, handle: int, writes: int, rate: float) -> _Writes:
    """Write i is sent at t0 + i / rate, each in a task of its own (open loop)."""
    overwrite = raw_unary(channel, SERVICE + "SectionOverwrite")
    requests = [
        pb.SectionOverwriteRequest(
            checkpoint_handle=handle,
            section_id=types.SectionId(id=write_sid(i)),
            data_buffer=PAYLOAD,
        ).SerializeToString()
        for i in range(writes)
    ]
    result = _Writes(sends=[0] * writes, acks=[0] * writes, lags=[0] * writes)
    clock = time.perf_counter_ns

    async def write(index: int, scheduled: int) -> None:
        result.sends[index] = sent = clock()
        result.lags[index] = sent - scheduled
        try:
            await overwrite(requests[index])
        except Exception as exc:
            result.errors += 1
            if result.first_error is None:
                result.first_error = describe(exc)
            return
        result.acks[index] = clock()

    period_ns = round(1e9 / rate)
    t0 = clock() + 1_000_000
    tasks: list[asyncio.Task[None]] = []
    try:
        for index in range(writes):
            scheduled = t0 + index * period_ns
            delay_ns = scheduled - clock()
            if delay_ns > 0:
                await asyncio.sleep(delay_ns / 1e9)
            tasks.append(asyncio.create_task(write(index, scheduled)))
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=CALL_TIMEOUT_S + 5.0)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return result


async def run_notify(
    address: str,
    server_pid: int,
    fixture: NotifyFixture,
    subscribers: int,
    writes: int,
    rate: float,
) -> NotifyResult:
    """One run: attach the subscribers, write `writes` times at `rate`, measure."""
    if writes > fixture.writes:
        raise ValueError(f"{writes} writes, but the fixture has {fixture.writes} sections")
    n_channels = channel_count(subscribers)
    stream_timeout_s = writes / rate + BARRIER_TIMEOUT_S + SETTLE_S + 60.0
    writer_channels = await open_channels(address, 1)
    try:
        channels = await open_channels(address, n_channels)
        try:
            writer = writer_channels[0]
            writer_session = await initialize(writer)
            open_request = pb.CheckpointOpenRequest(
                service_handle=writer_session,
                checkpoint_name=fixture.checkpoint_name,
                checkpoint_open_flags=[types.OPEN_FLAG_WRITE],
            )
            opened = await cps_call(
                writer, "CheckpointOpen", open_request, pb.CheckpointOpenResponse
            )
            subs = [_Subscriber(channels[i % n_channels], writes) for i in range(subscribers)]
            try:
                await bounded(
                    [
                        functools.partial(s.attach, fixture.checkpoint_name, stream_timeout_s)
                        for s in subs
                    ]
                )
                # Every stream is attached and delivering once each has seen this write.
                await cps_call(
                    writer,
                    "SectionOverwrite",
                    pb.SectionOverwriteRequest(
                        checkpoint_handle=opened.checkpoint_handle,
                        section_id=types.SectionId(id=WARM_SID),
                        data_buffer=PAYLOAD,
                    ),
                    pb.SectionOverwriteResponse,
                )
                await asyncio.wait_for(
                    asyncio.gather(*(s.warm.wait() for s in subs)), timeout=BARRIER_TIMEOUT_S
                )
                cpu0 = cpu.Snapshot.take([server_pid])
                start_ns = time.perf_counter_ns()
                done = await _paced_writes(writer, opened.checkpoint_handle, writes, rate)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(
                        asyncio.gather(*(s.done.wait() for s in subs)), timeout=SETTLE_S
                    )
                end_ns = time.perf_counter_ns()
                cpu1 = cpu.Snapshot.take([server_pid])
            finally:
                await asyncio.gather(*(s.detach() for s in subs))
                with contextlib.suppress(Exception):
                    await cps_call(
                        writer,
                        "Finalize",
                        pb.FinalizeRequest(service_handle=writer_session),
                        pb.FinalizeResponse,
                    )
        finally:
            await close_channels(channels)
    finally:
        await close_channels(writer_channels)
    return _result(subs, done, n_channels, rate, cpu0, cpu1, start_ns, end_ns, server_pid)


def _result(
    subs: list[_Subscriber],
    done: _Writes,
    n_channels: int,
    rate: float,
    cpu0: cpu.Snapshot,
    cpu1: cpu.Snapshot,
    start_ns: int,
    end_ns: int,
    server_pid: int,
) -> NotifyResult:
    after_ack: list[int] = []
    after_send: list[int] = []
    acked = [i for i, ack in enumerate(done.acks) if ack]
    for sub in subs:
        for i in acked:
            arrival = sub.arrivals[i]
            if arrival:
                after_ack.append(arrival - done.acks[i])
                after_send.append(arrival - done.sends[i])
    errors = done.errors + sum(1 for s in subs if s.error is not None)
    first_error = done.first_error or next((s.error for s in subs if s.error is not None), None)
    seconds = (end_ns - start_ns) / 1e9
    return NotifyResult(
        subscribers=len(subs),
        channels=n_channels,
        writes=len(done.sends),
        rate=rate,
        expected=len(acked) * len(subs),
        received=len(after_ack),
        dropped=sum(s.dropped for s in subs),
        after_ack=Spread.of(after_ack),
        after_send=Spread.of(after_send),
        before_ack=sum(1 for d in after_ack if d < 0) / len(after_ack) if after_ack else 0.0,
        ack=Spread.of([done.acks[i] - done.sends[i] for i in acked]),
        send_lag=Spread.of(done.lags),
        errors=errors,
        first_error=first_error,
        cpu=cpu.usage(cpu0, cpu1, seconds, [server_pid]),
        seconds=seconds,
    )
