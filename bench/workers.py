"""The scaling curve of a node of several workers (``--workers N``,
docs/workers.md), and the cost of a call forwarded between two workers.

    python -m bench.workers [--seconds 6] [--repeat 2] [--out bench/WORKERS.md]

A one-node cluster (--replicas 1) over a 3-member etcd, both from the
cluster tests' harness (tests/cluster/harness), with 1 and 2 workers (and 4
when the machine has 4 cores or more). The load is closed-loop 1 KiB
SectionOverwrite at 64 in flight over 8 channels to the node's shared port
(bench.load, the driver of every benchmark here; the requests of
bench.cps_scenarios). The kernel gives each connection to one worker; the
benchmark keeps the same number of channels on each worker (it opens
connections until it has them, and says how the kernel spread them), and
each channel's workers overwrite their own sections of a checkpoint created
through that channel, so it is active on the worker that serves the channel
(no call is forwarded). Server CPU is the supervisor's process tree (its
workers) from /proc (bench.cpu).

The forwarding rows run on the 2-worker node: a checkpoint created through
worker 0's own address, overwritten at the same load through worker 0
(its active) and through worker 1 (which forwards every call to worker 0).

Prints a Markdown section and writes it to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from grpc import aio

from bench import machine
from bench.cluster import new_etcd
from bench.cps_scenarios import (
    CpsOverwrite,
    bench_attributes,
    create_checkpoint,
    delete_checkpoints,
    initialize,
    overwrite_sid,
)
from bench.load import Call, LoadResult, close_channels, open_channels, raw_unary, run_load
from bench.scenarios import PAYLOAD
from cps.v1 import admin_service_pb2 as admin
from cps.v1 import checkpoint_service_pb2 as pb
from tests.cluster.harness import CpsCluster, EtcdCluster

COMMAND = "python -m bench.workers"
INFLIGHT = 64
CHANNELS = 8
FLAGS = ("--replicas", "1")
ADMIN = "/cps.v1.AdminService/"
SERVICE = "/cps.v1.CheckpointService/"
# Connections opened at most, per channel kept, to find a balanced spread.
TRIES_PER_CHANNEL = 8


def _log(message: str) -> None:
    print(f"[bench.workers] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Row:
    label: str
    workers: int
    runs: list[LoadResult]
    note: str = ""

    @property
    def ops_per_s(self) -> float:
        return statistics.mean(run.ops_per_s for run in self.runs)

    @property
    def spread(self) -> str:
        values = [run.ops_per_s for run in self.runs]
        return f"{min(values):,.0f}-{max(values):,.0f}" if len(values) > 1 else ""

    def mean(self, value: str) -> float:
        return statistics.mean(float(getattr(run, value)) for run in self.runs)

    def server_cores(self) -> float:
        return statistics.mean(run.cpu.server or 0.0 for run in self.runs)

    def cpu_ms_per_op(self) -> float:
        """Server CPU milliseconds per operation."""
        ops = sum(run.ops for run in self.runs)
        seconds = sum((run.cpu.server or 0.0) * run.seconds for run in self.runs)
        return 1000 * seconds / ops if ops else 0.0

    def ops_per_cpu_s(self) -> float:
        per_op = self.cpu_ms_per_op()
        return 1000 / per_op if per_op else 0.0

    def client_cores(self) -> float:
        return statistics.mean(run.cpu.client for run in self.runs)

    def other(self) -> str:
        etcd = statistics.mean(run.cpu.support or 0.0 for run in self.runs)
        other = statistics.mean(run.cpu.other for run in self.runs)
        tops = sorted({run.cpu.top_other for run in self.runs if run.cpu.top_other})
        return f"{etcd:.2f} / {other:.2f}" + (f" ({'; '.join(tops)})" if tops else "")

    def errors(self) -> int:
        return sum(run.errors for run in self.runs)


# --- the scaling runs: one checkpoint per channel, active where it lands -----


@dataclass
class _Channel:
    channel: aio.Channel
    worker: str
    service_handle: int
    checkpoint: str
    handle: int


async def _active_node(channel: aio.Channel, name: str) -> str:
    request = admin.GetCheckpointRequest(checkpoint_name=name).SerializeToString()
    raw = await raw_unary(channel, ADMIN + "GetCheckpoint")(request)
    return admin.GetCheckpointResponse.FromString(raw).checkpoint.active_node


async def _balanced_channels(
    address: str, workers: int, channels: int, inflight: int
) -> tuple[list[_Channel], str]:
    """``channels`` channels to ``address``, as many on each worker, each with
    a checkpoint created through it (active on its worker) holding the
    sections of its share of the ``inflight`` workers of the load."""
    per_worker = channels // workers
    kept: list[_Channel] = []
    landed: dict[str, int] = {}
    for attempt in range(channels * TRIES_PER_CHANNEL):
        if len(kept) == channels:
            break
        (channel,) = await open_channels(address, 1)
        index = len(kept)
        service_handle = await initialize(channel)
        name = f"wbench-{os.getpid()}-{attempt}"
        sections = [overwrite_sid(w) for w in range(index, inflight, channels)]
        handle = await create_checkpoint(
            channel, service_handle, name, bench_attributes(len(sections) + 1), sections
        )
        worker = await _active_node(channel, name)
        landed[worker] = landed.get(worker, 0) + 1
        if sum(1 for c in kept if c.worker == worker) < per_worker:
            kept.append(_Channel(channel, worker, service_handle, name, handle))
            continue
        await delete_checkpoints(channel, service_handle, {name: handle})
        await close_channels([channel])
    if len(kept) < channels:
        await _release(kept)
        raise RuntimeError(f"no balanced spread over {workers} workers: connections {landed}")
    spread = ", ".join(f"{worker} {count}" for worker, count in sorted(landed.items()))
    return kept, spread


async def _release(channels: Sequence[_Channel]) -> None:
    for c in channels:
        try:
            await delete_checkpoints(c.channel, c.service_handle, {c.checkpoint: c.handle})
        finally:
            await close_channels([c.channel])


def _overwrite_calls(channels: Sequence[_Channel], inflight: int) -> list[Call]:
    calls: list[Call] = []
    for worker in range(inflight):
        c = channels[worker % len(channels)]
        request = pb.SectionOverwriteRequest(
            checkpoint_handle=c.handle, section_id=overwrite_sid(worker), data_buffer=PAYLOAD
        ).SerializeToString()
        calls.append(functools.partial(raw_unary(c.channel, SERVICE + "SectionOverwrite"), request))
    return calls


async def _scaling_run(
    cluster: CpsCluster, etcd: EtcdCluster, workers: int, args: argparse.Namespace
) -> tuple[LoadResult, str]:
    node = cluster.nodes[0]
    channels, spread = await _balanced_channels(node.address, workers, args.channels, args.inflight)
    try:
        return (
            await run_load(
                _overwrite_calls(channels, args.inflight),
                warmup_s=args.warmup,
                seconds=args.seconds,
                channels=len(channels),
                server_pids=[node.pid],
                support_pids=_pids(etcd),
            ),
            spread,
        )
    finally:
        await _release(channels)


# --- forwarding: through the active worker, and through the other one ---------


async def _forwarding_runs(
    cluster: CpsCluster, etcd: EtcdCluster, args: argparse.Namespace
) -> tuple[LoadResult, LoadResult]:
    node = cluster.nodes[0]
    name = f"wbench-fwd-{os.getpid()}"
    (setup,) = await open_channels(node.worker_address(0), 1)
    service_handle = await initialize(setup)
    sections = [overwrite_sid(w) for w in range(args.inflight)]
    handle = await create_checkpoint(
        setup, service_handle, name, bench_attributes(len(sections) + 1), sections
    )
    active = await _active_node(setup, name)
    if active != "n0.w0":
        raise RuntimeError(f"{name} is active on {active}, not n0.w0")
    results = []
    try:
        for worker in (0, 1):
            channels = await open_channels(node.worker_address(worker), args.channels)
            scenario = CpsOverwrite(name)
            try:
                calls = await scenario.start(channels, args.inflight)
                results.append(
                    await run_load(
                        calls,
                        warmup_s=args.warmup,
                        seconds=args.seconds,
                        channels=len(channels),
                        server_pids=[node.pid],
                        support_pids=_pids(etcd),
                    )
                )
                await scenario.stop()
            finally:
                await close_channels(channels)
    finally:
        await delete_checkpoints(setup, service_handle, {name: handle})
        await close_channels([setup])
    return results[0], results[1]


def _pids(etcd: EtcdCluster) -> list[int]:
    return [m.pid for m in etcd.members if m.pid is not None]


# --- the report ------------------------------------------------------------------


def _table(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| run | ops/s (mean) | runs' range | p50 ms | p99 ms | server CPU (cores) "
        "| server CPU ms/op | ops per server CPU-s | client CPU (cores) | etcd / other CPU "
        "| errors | channels |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row.label} | {row.ops_per_s:,.0f} | {row.spread} | {row.mean('p50_ms'):.1f} "
            f"| {row.mean('p99_ms'):.1f} | {row.server_cores():.2f} | {row.cpu_ms_per_op():.3f} "
            f"| {row.ops_per_cpu_s():,.0f} | {row.client_cores():.2f} | {row.other()} "
            f"| {row.errors()} | {row.note} |"
        )
    return lines


def report(
    scaling: Sequence[Row], forwarding: Sequence[Row], args: argparse.Namespace, took: float
) -> str:
    one = scaling[0]
    cores = os.cpu_count() or 1
    info = machine.versions()
    lines = [
        "# Workers: the scaling curve of one node",
        "",
        f"Command: `{COMMAND} --seconds {args.seconds:g} --warmup {args.warmup:g} "
        f"--repeat {args.repeat} --inflight {args.inflight} --channels {args.channels}` "
        f"({took:.0f} s). Written by bench/workers.py; how workers work: "
        "[docs/workers.md](../docs/workers.md).",
        "",
        f"**This machine has {cores} cores, shared by the client (one Python process "
        "driving the load), the node's workers and etcd; nothing is pinned.** "
        + (
            "With 2 cores the client alone takes about one of them, so a second worker "
            "cannot double the throughput here: read the ratio per server CPU-second, and "
            "run it on a bigger machine (4 workers run when there are 4 cores or more)."
            if cores < 4
            else ""
        ),
        "",
        "- Node: a one-node cluster, `cps-server --listen 127.0.0.1:PORT --node-name n0 "
        "--etcd-endpoints ETCD1,ETCD2,ETCD3 --cluster-name NAME --cluster-secret-file FILE "
        "--grace-seconds 1 --replicas 1 [--workers N]`, over a 3-member etcd (etcd's default "
        "timing), both from tests/cluster/harness.",
        f"- Load: closed loop, {args.inflight} in flight over {args.channels} channels to the "
        "node's address, SectionOverwrite of 1 KiB (bench.load; requests of "
        "bench.cps_scenarios). Each channel has its own checkpoint (WR_ACTIVE_REPLICA), "
        "created through it, so active on the worker that serves the channel: no call is "
        "forwarded. The kernel spreads connections over the workers; the benchmark keeps "
        f"{args.channels} channels balanced over them ('channels' column: how the kernel "
        "spread the connections it opened to get them).",
        f"- Each run: {args.warmup:g} s warm-up, {args.seconds:g} s measured, {args.repeat} "
        "runs per row (a new node for each row). Server CPU: the node's process tree (a "
        "supervisor and its workers) from /proc; per op = CPU-seconds / operations.",
        "- Machine: " + "; ".join(f"{key} {value}" for key, value in info.items()) + ".",
        "",
        "## Scaling",
        "",
        *_table(scaling),
        "",
    ]
    for row in scaling[1:]:
        raw = row.ops_per_s / one.ops_per_s if one.ops_per_s else 0.0
        per_cpu = row.ops_per_cpu_s() / one.ops_per_cpu_s() if one.ops_per_cpu_s() else 0.0
        lines.append(
            f"- {row.workers} workers / 1 worker: **{raw:.2f}x** ops/s; "
            f"**{per_cpu:.2f}x** ops per server CPU-second."
        )
    direct, forwarded = forwarding
    ratio = forwarded.ops_per_s / direct.ops_per_s if direct.ops_per_s else 0.0
    cost = forwarded.cpu_ms_per_op() / direct.cpu_ms_per_op() if direct.cpu_ms_per_op() else 0.0
    lines += [
        "",
        "## The cost of forwarding",
        "",
        "The 2-worker node; one checkpoint created through worker 0's own address (its "
        f"active, and with --replicas 1 its only replica), {args.inflight} in flight over "
        f"{args.channels} channels to one worker's own address.",
        "",
        *_table(forwarding),
        "",
        f"- Forwarded / direct: **{ratio:.2f}x** ops/s, **{cost:.2f}x** server CPU per op "
        "(a forwarded call costs a call on each worker and a hop over loopback).",
        "",
    ]
    return "\n".join(lines)


# --- main ------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.5, help="warm-up seconds per run")
    parser.add_argument("--repeat", type=int, default=2, help="runs per row")
    parser.add_argument("--inflight", type=int, default=INFLIGHT)
    parser.add_argument("--channels", type=int, default=CHANNELS)
    parser.add_argument("--out", type=Path, default=Path("bench/WORKERS.md"))
    parser.add_argument("--etcd", default="/usr/bin/etcd", help="the etcd binary")
    return parser.parse_args(argv)


async def _bench(args: argparse.Namespace, etcd: EtcdCluster) -> tuple[list[Row], list[Row]]:
    counts = [1, 2] + ([4] if (os.cpu_count() or 1) >= 4 else [])
    scaling: list[Row] = []
    forwarding: list[Row] = []
    for workers in counts:
        _log(f"{workers} worker(s)")
        with CpsCluster(etcd.endpoints, 1, FLAGS, workers=workers) as cluster:
            runs, spreads = [], []
            for _ in range(args.repeat):
                run, spread = await _scaling_run(cluster, etcd, workers, args)
                _log(f"  {run.ops_per_s:,.0f} ops/s, server {run.cpu.server or 0:.2f} cores")
                runs.append(run)
                spreads.append(spread)
            label = f"{workers} worker" + ("s" if workers > 1 else "")
            scaling.append(Row(label, workers, runs, "; ".join(spreads)))
            if workers == 2:
                _log("forwarding")
                pairs = [await _forwarding_runs(cluster, etcd, args) for _ in range(args.repeat)]
                note = "to n0.w0's own address"
                forwarding.append(
                    Row("direct: through the active (n0.w0)", 2, [d for d, _ in pairs], note)
                )
                note = "to n0.w1's own address"
                forwarding.append(Row("forwarded: through n0.w1", 2, [f for _, f in pairs], note))
    return scaling, forwarding


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.channels % 4 or args.inflight % args.channels:
        print("--channels must be a multiple of 4 dividing --inflight", file=sys.stderr)
        return 2
    started = time.monotonic()
    etcd = new_etcd(3, args.etcd, Path("/dev/shm") if Path("/dev/shm").is_dir() else Path("/tmp"))
    with etcd:
        scaling, forwarding = asyncio.run(_bench(args, etcd))
    text = report(scaling, forwarding, args, time.monotonic() - started)
    print(text)
    args.out.write_text(text)
    _log(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
