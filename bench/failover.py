"""Failover time of a 3-node cluster: kill -9 of the active of a synchronous
checkpoint, under a closed-loop writer through a surviving node, to the first
write acknowledged by its successor.

One cluster (3 CPS nodes over a 3-member etcd, started by the cluster tests'
harness) per lease TTL; each round:

1. creates a synchronous checkpoint through node k (so node k is its active)
   and waits until every replica is in its in-sync set;
2. starts one closed-loop writer (one SectionOverwrite of 1 KiB after another,
   in-flight 1) through node k+1, on a session of its own there (the call is
   forwarded to the active); after a failed call it waits 10 ms and goes on;
3. after a short warm-up, kills node k with SIGKILL (time 0 is taken just
   before the signal; the kill returns once the process is reaped);
4. measures the time to the first write *sent after node k was reaped* and
   acknowledged: node k is dead by then, so the new active acknowledged it
   (and, the checkpoint being synchronous, every in-sync replica applied it).
   It also polls the record in etcd every 20 ms: when it named a new active;
5. checks the record names a survivor as active at a higher epoch, deletes the
   checkpoint, starts node k again (a new member) and waits until it serves.

k goes round the nodes, so some rounds also kill the director (the node that
decides failovers, docs/replication.md); the report says which.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from grpc import aio

from bench.cluster import (
    CpsClusterServer,
    describe_record,
    in_sync_names,
    member_name,
    new_etcd,
    read_json,
    read_record,
)
from bench.cps_scenarios import (
    SERVICE,
    SYNCHRONOUS,
    bench_attributes,
    close_handles,
    cps_call,
    create_checkpoint,
    delete_checkpoints,
    initialize,
    open_read_write,
    overwrite_sid,
)
from bench.load import describe, raw_unary
from bench.scenarios import PAYLOAD
from cps.v1 import checkpoint_service_pb2 as pb

NODES = 3
WARMUP_S = 0.5
RETRY_PAUSE_S = 0.01
POLL_S = 0.02
# How long placement (every replica in sync) may take before a round is given up.
PLACEMENT_TIMEOUT_S = 30.0


def failover_timeout(ttl: float) -> float:
    """How long a round waits for the first acknowledged write after the kill."""
    return max(30.0, 10 * ttl)


@dataclass(frozen=True)
class FailoverRound:
    index: int
    killed: str
    writer_via: str
    director_killed: bool
    # Seconds from the kill: the record named a new active; the first write
    # sent after the kill was acknowledged (None: not within the timeout).
    record_changed_s: float | None
    first_ack_s: float | None
    # Seconds from the kill: the first acknowledged write was sent (the writer
    # sends its next write when the previous call ends); the last failed call
    # before it ended (None: none failed).
    first_ack_sent_s: float | None
    last_error_s: float | None
    # The record after the round, and the writer's failed calls by code.
    record_after: str
    errors: dict[str, int]
    # Why the round is not valid (None: it is).
    problem: str | None = None

    @property
    def valid(self) -> bool:
        return self.problem is None and self.first_ack_s is not None


@dataclass
class FailoverResult:
    ttl: int
    replicas: int
    command: str = ""
    rounds: list[FailoverRound] = field(default_factory=list)
    error: str | None = None

    @property
    def times(self) -> list[float]:
        return [r.first_ack_s for r in self.rounds if r.valid and r.first_ack_s is not None]

    def spread(self) -> tuple[float, float, float] | None:
        """min, median, max of the valid rounds' failover times."""
        times = self.times
        if not times:
            return None
        return min(times), statistics.median(times), max(times)

    @property
    def failed(self) -> bool:
        return self.error is not None or not self.rounds or not all(r.valid for r in self.rounds)


@dataclass
class _Writer:
    """A closed-loop writer: (sent, acknowledged) monotonic times of each acknowledged write."""

    acks: list[tuple[float, float]] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    # (sent, ended, outcome) of every call: "ok" or the status code.
    calls: list[tuple[float, float, str]] = field(default_factory=list)
    stop: bool = False

    async def loop(self, channel: aio.Channel, request: bytes) -> None:
        overwrite = raw_unary(channel, SERVICE + "SectionOverwrite")
        while not self.stop:
            sent = time.monotonic()
            try:
                await overwrite(request)
            except aio.AioRpcError as error:
                code = error.code().name
                self.errors[code] = self.errors.get(code, 0) + 1
                self.calls.append((sent, time.monotonic(), code))
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            acked = time.monotonic()
            self.acks.append((sent, acked))
            self.calls.append((sent, acked, "ok"))

    def first_ack_sent_after(self, moment: float) -> tuple[float, float] | None:
        """(sent, acknowledged) of the first write sent at `moment` or later and acknowledged."""
        for sent, acked in self.acks:
            if sent >= moment:
                return sent, acked
        return None

    def last_error_between(self, start: float, end: float) -> float | None:
        """When the last call that failed between the two moments ended."""
        ends = [
            ended for _, ended, outcome in self.calls if outcome != "ok" and start < ended <= end
        ]
        return max(ends) if ends else None


async def _wait_placed(
    etcd_channel: aio.Channel, cluster: str, name: str, active: str, replicas: int
) -> None:
    deadline = time.monotonic() + PLACEMENT_TIMEOUT_S
    record = None
    while time.monotonic() < deadline:
        record = await read_record(etcd_channel, cluster, name)
        if (
            record is not None
            and member_name(record.get("active")) == active
            and len(in_sync_names(record)) >= replicas
        ):
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(
        f"{name}: not placed with {replicas} in-sync replicas on time ({describe_record(record)})"
    )


async def _one_round(
    server: CpsClusterServer, etcd_channel: aio.Channel, index: int, ttl: int, replicas: int
) -> FailoverRound:
    cluster = server.running
    killed, via = cluster.nodes[index % NODES], cluster.nodes[(index + 1) % NODES]
    name = f"cps-bench-failover-{os.getpid()}-{index}"
    section = overwrite_sid(0)
    async with aio.insecure_channel(killed.address) as creator:
        service = await initialize(creator)
        handle = await create_checkpoint(
            creator, service, name, bench_attributes(2, SYNCHRONOUS), [section]
        )
        await close_handles(creator, [handle])
        await cps_call(
            creator, "Finalize", pb.FinalizeRequest(service_handle=service), pb.FinalizeResponse
        )
    await _wait_placed(etcd_channel, cluster.name, name, killed.name, replicas)
    before = await read_record(etcd_channel, cluster.name, name)
    epoch_before = int((before or {}).get("epoch", 0))
    director = member_name(await read_json(etcd_channel, f"/cps/{cluster.name}/director".encode()))

    writer = _Writer()
    async with aio.insecure_channel(via.address) as channel:
        service = await initialize(channel)
        handle = await open_read_write(channel, service, name)
        request = pb.SectionOverwriteRequest(
            checkpoint_handle=handle, section_id=section, data_buffer=PAYLOAD
        ).SerializeToString()
        task = asyncio.create_task(writer.loop(channel, request))
        try:
            await asyncio.sleep(WARMUP_S)
            if not writer.acks:
                raise RuntimeError(f"no write acknowledged in the warm-up: {writer.errors}")
            warmup_errors = dict(writer.errors)
            writer.errors.clear()
            killed_at = time.monotonic()
            await asyncio.to_thread(killed.kill)
            dead_at = time.monotonic()
            record_changed: float | None = None
            deadline = killed_at + failover_timeout(ttl)
            while time.monotonic() < deadline:
                if record_changed is None:
                    record = await read_record(etcd_channel, cluster.name, name)
                    now = time.monotonic()
                    if record is not None and member_name(record.get("active")) != killed.name:
                        record_changed = now - killed_at
                if writer.first_ack_sent_after(dead_at) is not None and record_changed is not None:
                    break
                await asyncio.sleep(POLL_S)
            acked = writer.first_ack_sent_after(dead_at)
        finally:
            writer.stop = True
            await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 15)
        last_error = None if acked is None else writer.last_error_between(killed_at, acked[1])
        after = await read_record(etcd_channel, cluster.name, name)
        problems: list[str] = []
        if warmup_errors:
            problems.append(f"errors before the kill: {warmup_errors}")
        if acked is None:
            problems.append(f"no write acknowledged within {failover_timeout(ttl):.0f} s")
        new_active = member_name((after or {}).get("active"))
        if new_active in (None, killed.name) or int((after or {}).get("epoch", 0)) <= epoch_before:
            problems.append(f"no new active at a higher epoch: {describe_record(after)}")
        await delete_checkpoints(channel, service, {name: handle})
    # A new member at the same address; it serves once it has joined.
    killed.start(wait=True)
    return FailoverRound(
        index=index,
        killed=killed.name,
        writer_via=via.name,
        director_killed=director == killed.name,
        record_changed_s=record_changed,
        first_ack_s=None if acked is None else acked[1] - killed_at,
        record_after=describe_record(after),
        errors=writer.errors,
        first_ack_sent_s=None if acked is None else acked[0] - killed_at,
        last_error_s=None if last_error is None else last_error - killed_at,
        problem="; ".join(problems) or None,
    )


async def run_failover(
    *,
    ttl: int,
    rounds: int,
    replicas: int,
    flags: Sequence[str],
    etcd_binary: str,
    data_base: Path,
    log: Callable[[str], None],
) -> FailoverResult:
    """`rounds` kill -9 rounds on one fresh cluster whose nodes have lease TTL `ttl`."""
    result = FailoverResult(ttl=ttl, replicas=replicas)
    server = CpsClusterServer(
        name=f"cps-failover-ttl{ttl}",
        etcd=new_etcd(3, etcd_binary, data_base),
        size=NODES,
        flags=[*flags, "--replicas", str(replicas), "--lease-ttl", str(ttl)],
    )
    try:
        server.start()
        await server.wait_ready()
        result.command = server.command_template()
        async with aio.insecure_channel(server.etcd_endpoints[0]) as etcd_channel:
            for index in range(rounds):
                try:
                    one = await _one_round(server, etcd_channel, index, ttl, replicas)
                except Exception as exc:
                    result.error = f"round {index + 1}: {describe(exc)}"
                    log(f"  failover ttl {ttl}: {result.error}")
                    break
                result.rounds.append(one)
                log(f"  failover ttl {ttl} round {index + 1}: " + round_summary(one))
    except Exception as exc:
        result.error = describe(exc)
        log(f"  failover ttl {ttl}: {result.error}")
        for process, tail in server.log_tails().items():
            log(f"{process} log tail:\n{tail}")
    finally:
        server.stop()
    return result


def round_summary(one: FailoverRound) -> str:
    first = "none" if one.first_ack_s is None else f"{one.first_ack_s:.2f} s"
    changed = "never" if one.record_changed_s is None else f"{one.record_changed_s:.2f} s"
    sent = "-" if one.first_ack_sent_s is None else f"{one.first_ack_sent_s:.2f} s"
    last_error = "-" if one.last_error_s is None else f"{one.last_error_s:.2f} s"
    text = (
        f"killed {one.killed}{' (director)' if one.director_killed else ''}, writer via "
        f"{one.writer_via}: record changed at {changed}, last failed call ended at "
        f"{last_error}, first acknowledged write sent at {sent}, acknowledged at {first}; "
        f"{one.record_after}"
    )
    if one.errors:
        text += f"; writer errors {one.errors}"
    if one.problem:
        text += f"; INVALID: {one.problem}"
    return text
