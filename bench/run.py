"""Benchmark CLI: `python -m bench.run [--quick] [--seconds S] [--out bench/RESULTS.md]`.

Starts the bare reference server, etcd (one member, then three) and CPS (in
memory, persistent on tmpfs, a 3-node cluster over a 3-member etcd,
persistent on a disk at --sync full and normal) one after the other as
subprocesses on loopback ports, drives each with the same client code, times
the cluster's failover (kill -9 of an active) and writes one report with the
ratios side by side: closed-loop throughput, the cost of persistence, the
cluster's write modes and failover, notification latency and
library-checkpoint throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from grpc import aio

from bench import cluster as cl
from bench import machine
from bench import targets as tg
from bench.cps_scenarios import FORWARDING_NODE, ClusterSuite, CpsSuite
from bench.failover import FailoverResult, failover_timeout, run_failover
from bench.library_scenarios import LibrarySuite
from bench.load import (
    CALL_TIMEOUT_S,
    INFLIGHT_PER_CHANNEL,
    LoadResult,
    channel_count,
    close_channels,
    describe,
    open_channels,
    run_load,
)
from bench.notify import MAX_CHANNELS, SETTLE_S, NotifyFixture, NotifyResult, run_notify
from bench.report import (
    CPS,
    CPS_CLUSTER,
    CPS_DISK,
    CPS_DISK_NORMAL,
    CPS_FAILOVER,
    CPS_MEM,
    ETCD3,
    NOISY_OTHER_CORES,
    Row,
    TargetResult,
    ratio_level,
    render,
)
from bench.scenarios import BareSuite, CompositeSuite, EtcdSuite, Scenario, Suite


@dataclass(frozen=True)
class TargetSpec:
    """A server configuration under test and what is run against it."""

    name: str
    title: str
    suite: Callable[[], Suite]
    # The in-flight levels its scenarios run at, from the command line.
    levels: Callable[[argparse.Namespace], list[int]]
    # Where its temporary data dir goes (None: it has none).
    data_base: Callable[[argparse.Namespace], Path] | None = None
    # CPS only: options appended to --cps-cmd.
    cps_flags: tuple[str, ...] | None = None
    # Run the notification-latency runs too.
    notify: bool = False
    # etcd only: its members (1: one process; more: a cluster started by the harness).
    etcd_members: int = 1
    # CPS only: CLUSTER_NODES nodes over a 3-member etcd (the harness), not one process.
    cluster: bool = False
    # Not a load target: the failover rounds of bench.failover.
    failover: bool = False


def _all_levels(args: argparse.Namespace) -> list[int]:
    return list(args.levels)


def _disk_levels(args: argparse.Namespace) -> list[int]:
    """The disk runs: the lowest level (one commit per op) and the targets' level."""
    return sorted({min(args.levels), ratio_level(args.levels)})


def _no_levels(args: argparse.Namespace) -> list[int]:
    return []


# The cluster: its nodes, and the replicas of each checkpoint (the active included).
CLUSTER_NODES = 3
CLUSTER_REPLICAS = 3
CLUSTER_FLAGS = ("--replicas", str(CLUSTER_REPLICAS))
# How long the checkpoints may take to have every replica in sync after their creation.
PLACEMENT_TIMEOUT_S = 30.0


def _data_base(args: argparse.Namespace) -> Path:
    return Path(args.data_base)


def _disk_base(args: argparse.Namespace) -> Path:
    return Path(args.disk_base)


SPECS = [
    TargetSpec(
        "bare",
        "bare: grpc.aio server, empty unary handler (Python gRPC ceiling)",
        BareSuite,
        _all_levels,
    ),
    TargetSpec("etcd", "etcd: single member, KV over gRPC", EtcdSuite, _all_levels, _data_base),
    TargetSpec(
        ETCD3,
        f"{ETCD3}: 3 members on this machine, KV Put over gRPC, to the leader",
        lambda: EtcdSuite(only=["put"]),
        _all_levels,
        _data_base,
        etcd_members=3,
    ),
    TargetSpec(
        CPS_MEM,
        f"{CPS_MEM}: cps-server --no-persist-server-checkpoints (server checkpoints in memory)",
        CpsSuite,
        _all_levels,
        _data_base,
        cps_flags=("--no-persist-server-checkpoints",),
        notify=True,
    ),
    TargetSpec(
        CPS,
        f"{CPS}: cps-server, default flags (server checkpoints stored in SQLite)",
        lambda: CompositeSuite(CpsSuite(), LibrarySuite()),
        _all_levels,
        _data_base,
        cps_flags=(),
        notify=True,
    ),
    TargetSpec(
        CPS_CLUSTER,
        f"{CPS_CLUSTER}: {CLUSTER_NODES} cps-server nodes over a 3-member etcd, "
        f"--replicas {CLUSTER_REPLICAS} (server checkpoints in the replicas' memory)",
        ClusterSuite,
        _all_levels,
        _data_base,
        cps_flags=CLUSTER_FLAGS,
        cluster=True,
    ),
    TargetSpec(
        CPS_FAILOVER,
        f"{CPS_FAILOVER}: kill -9 of the active of a synchronous checkpoint on "
        f"{CLUSTER_NODES} nodes, --replicas {CLUSTER_REPLICAS}",
        CompositeSuite,
        _no_levels,
        _data_base,
        cps_flags=(),  # run_failover adds --replicas and --lease-ttl
        cluster=True,
        failover=True,
    ),
    TargetSpec(
        CPS_DISK,
        f"{CPS_DISK}: cps-server --sync full, data dir on a disk",
        lambda: CompositeSuite(CpsSuite(only=["overwrite"]), LibrarySuite(only=["lib-write"])),
        _disk_levels,
        _disk_base,
        cps_flags=("--sync", "full"),
    ),
    TargetSpec(
        CPS_DISK_NORMAL,
        f"{CPS_DISK_NORMAL}: cps-server --sync normal, data dir on a disk",
        lambda: CpsSuite(only=["overwrite"]),
        _disk_levels,
        _disk_base,
        cps_flags=("--sync", "normal"),
    ),
]
SPEC_BY_NAME = {spec.name: spec for spec in SPECS}
ALL_TARGETS = tuple(SPEC_BY_NAME)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _int_list(text: str) -> list[int]:
    return sorted({int(x) for x in text.split(",") if x.strip()})


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed window per run")
    parser.add_argument("--warmup", type=float, default=0.5, help="untimed warm-up per run")
    parser.add_argument(
        "--inflight", default="1,16,64", help="comma-separated in-flight levels (default 1,16,64)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 s per run, in-flight 1 and 16, 200 writes per notification run, "
        "2 failover rounds at the first TTL only",
    )
    parser.add_argument(
        "--targets",
        default=",".join(ALL_TARGETS),
        help=f"comma-separated, of {','.join(ALL_TARGETS)}",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per scenario and level; the run of median ops/s is reported "
        "(notification runs are not repeated)",
    )
    parser.add_argument("--out", type=Path, help="write the Markdown report here too")
    parser.add_argument(
        "--cps-cmd",
        default=shlex.join(tg.default_cps_command()),
        help="command starting CPS, options included; each CPS target appends its own "
        "options (e.g. --no-persist-server-checkpoints), then '--listen HOST:PORT --data-dir DIR'",
    )
    parser.add_argument("--etcd-bin", default="/usr/bin/etcd")
    parser.add_argument(
        "--data-base",
        type=Path,
        default=tg.default_data_dir_base(),
        help="where the temporary data dirs of etcd, cps and cps-mem go (default: /dev/shm, "
        "a tmpfs, when present)",
    )
    parser.add_argument(
        "--disk-base",
        type=Path,
        default=Path("/var/tmp"),
        help="where the temporary data dirs of cps-disk and cps-disk-normal go: a directory "
        "on a real disk, so that fsync costs what it costs (default: /var/tmp)",
    )
    parser.add_argument(
        "--notify-runs",
        default="1@200,10@200,100@200,100@50",
        help="notification runs, comma-separated SUBSCRIBERS@WRITES_PER_S ('' for none; "
        "default 1@200,10@200,100@200,100@50)",
    )
    parser.add_argument(
        "--notify-seconds",
        type=float,
        default=5.0,
        help="length of the write schedule of a notification run: writes = rate x seconds "
        "(default 5: 1,000 writes at 200/s)",
    )
    parser.add_argument(
        "--failover-ttls",
        default="3,2",
        help="lease TTLs (whole seconds) of the failover runs, one cluster each "
        "(default 3,2: the default TTL, then the shortest that etcd's default timing allows)",
    )
    parser.add_argument(
        "--failover-rounds",
        type=int,
        default=5,
        help="kill -9 rounds per failover TTL (default 5)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup, args.inflight = 1.0, 0.3, "1,16"
        args.notify_seconds = min(args.notify_seconds, 1.0)
        args.failover_rounds = min(args.failover_rounds, 2)
    try:
        args.levels = _int_list(args.inflight)
        args.notify_plan = _notify_plan(args.notify_runs, args.notify_seconds)
        args.ttls = [int(x) for x in args.failover_ttls.split(",") if x.strip()]
    except ValueError as exc:
        parser.error(str(exc))
    if args.quick:
        args.ttls = args.ttls[:1]
    if not args.ttls or min(args.ttls) < 1 or args.failover_rounds < 1:
        parser.error(
            f"bad --failover-ttls {args.failover_ttls!r} or --failover-rounds "
            f"{args.failover_rounds}"
        )
    requested = [t for t in args.targets.split(",") if t.strip()]
    args.target_names = [t for t in ALL_TARGETS if t in requested]
    unknown = set(requested) - set(ALL_TARGETS)
    if unknown or not args.levels or min(args.levels) < 1 or args.repeat < 1:
        parser.error(
            f"bad --targets {sorted(unknown)}, --inflight {args.inflight!r} "
            f"or --repeat {args.repeat}"
        )
    return args


@dataclass(frozen=True)
class NotifyPlan:
    subscribers: int
    rate: float
    writes: int


def _notify_plan(text: str, seconds: float) -> list[NotifyPlan]:
    """Parse SUBSCRIBERS@RATE,...; each run writes rate x seconds times."""
    plan: list[NotifyPlan] = []
    for item in text.split(","):
        if not item.strip():
            continue
        subscribers, _, rate = item.partition("@")
        try:
            run = NotifyPlan(int(subscribers), float(rate), round(float(rate) * seconds))
        except ValueError:
            raise ValueError(f"bad --notify-runs item {item!r}: want SUBSCRIBERS@RATE") from None
        if run.subscribers < 1 or run.rate <= 0 or run.writes < 1:
            raise ValueError(f"bad --notify-runs item {item!r} with --notify-seconds {seconds:g}")
        plan.append(run)
    return plan


def cps_argv(args: argparse.Namespace, spec: TargetSpec) -> list[str]:
    return [*shlex.split(args.cps_cmd), *(spec.cps_flags or ())]


def cps_config(argv: Sequence[str]) -> str:
    """What a CPS command line asks for, as the server reads it (the last option wins)."""
    persist, sync = True, "full"
    for i, arg in enumerate(argv):
        if arg == "--no-persist-server-checkpoints":
            persist = False
        elif arg == "--persist-server-checkpoints":
            persist = True
        elif arg == "--sync" and i + 1 < len(argv):
            sync = argv[i + 1]
        elif arg.startswith("--sync="):
            sync = arg.split("=", 1)[1]
    if persist:
        return f"server checkpoints stored, --sync {sync}"
    return "server checkpoints in memory"


def cluster_flags(args: argparse.Namespace, spec: TargetSpec) -> list[str]:
    """The options of a cluster's nodes: --cps-cmd's, then the target's (the harness
    adds --listen, --node-name, --data-dir, --etcd-endpoints, --cluster-name and
    --grace-seconds before them)."""
    program, *options = shlex.split(args.cps_cmd)
    if not cl.same_program(program):
        raise ValueError(
            f"the cluster targets run {cl.harness_server()} (tests/cluster/harness), not "
            f"{program}: give --cps-cmd that program, or leave out {CPS_CLUSTER} and "
            f"{CPS_FAILOVER}"
        )
    return [*options, *(spec.cps_flags or ())]


def uses_etcd(spec: TargetSpec) -> bool:
    return spec.name.startswith("etcd") or spec.cluster


def machine_info(args: argparse.Namespace) -> dict[str, str]:
    info = machine.versions()
    if any(uses_etcd(SPEC_BY_NAME[name]) for name in args.target_names):
        info["etcd"] = tg.etcd_version(args.etcd_bin)
    by_base: dict[Path, list[str]] = {}
    for name in args.target_names:
        spec = SPEC_BY_NAME[name]
        if spec.data_base is not None:
            # A CPS cluster's nodes keep theirs in the harness's temporary folder (they
            # hold no server checkpoint); its etcd's go under the data-dir base.
            shown = f"`{name}` (its etcd)" if spec.cluster else f"`{name}`"
            by_base.setdefault(spec.data_base(args), []).append(shown)
    info["data dirs (temporary, one per server)"] = "; ".join(
        f"{', '.join(names)} under {machine.describe_dir(base)}" for base, names in by_base.items()
    )
    return info


def fsync_note(args: argparse.Namespace) -> str | None:
    """The median fsync time in each data-dir base (measured now), if a disk target runs."""
    if not any(SPEC_BY_NAME[n].data_base is _disk_base for n in args.target_names):
        return None
    parts: list[str] = []
    for base in dict.fromkeys([Path(args.disk_base), Path(args.data_base)]):
        value = machine.fsync_ms(base)
        shown = "failed" if value is None else f"{value:.3f} ms"
        parts.append(f"{shown} in {machine.describe_dir(base)}")
    return (
        f"fsync after a 4 KiB append, median of {machine.FSYNC_PROBES} measured before the "
        "run: " + ", ".join(parts) + "."
    )


def _cps_line(args: argparse.Namespace, spec: TargetSpec) -> str:
    command = shlex.join(cps_argv(args, spec))
    return f"`{spec.name}`: `{command} --listen 127.0.0.1:PORT --data-dir TMPDIR`"


def cluster_notes(args: argparse.Namespace, commands: dict[str, str]) -> list[str]:
    """How the cluster targets ran, with each one's node command line as it ran."""
    names = [n for n in args.target_names if SPEC_BY_NAME[n].cluster]
    if not names and ETCD3 not in args.target_names:
        return []
    started = "; ".join(
        f"`{name}`: `{commands[name]}`" if name in commands else f"`{name}`: not started"
        for name in names
    )
    ttls = ", ".join(f"{ttl} s" for ttl in args.ttls)
    return [
        f"Clusters: etcd's 3 members (`{ETCD3}`, and the etcd behind each CPS cluster) are "
        "started by the cluster tests' harness (tests/cluster/harness/etcd_cluster.py, "
        f"EtcdCluster) with etcd's default timing (heartbeat {cl.ETCD_HEARTBEAT_MS} ms, "
        f"election {cl.ETCD_ELECTION_MS} ms), data dirs under {args.data_base}; `{ETCD3}`'s "
        "client calls its leader (etcd's best case; a follower forwards puts to it). Server "
        f"CPU of `{ETCD3}` is its 3 members together.",
        f"`{CPS_CLUSTER}`: {CLUSTER_NODES} cps-server nodes started by the harness "
        "(tests/cluster/harness/cps_cluster.py, CpsCluster) over a 3-member etcd of their "
        f"own; node command lines (n0 shown) {started}. Every checkpoint has "
        f"{CLUSTER_REPLICAS} replicas (the active and 2 backups, one per node); in a cluster "
        "server checkpoints live in the replicas' memory (docs/replication.md), so the "
        f"comparable single node is `{CPS_MEM}`. One checkpoint per write mode, each with one "
        "1 KiB section per worker, created through node 0, which makes node 0 their active "
        "replica; before the runs the harness waits until each record in etcd names node 0 "
        f"active with all {CLUSTER_REPLICAS} replicas in sync, after them it checks the "
        "records again and the nodes' logs (no replica left the in-sync set, no peer "
        "dropped), else the target is marked failed. The client calls node 0, except "
        f"`overwrite-sync-fwd`, which calls node {FORWARDING_NODE} (a backup: every call "
        "forwarded to node 0), at in-flight 16 and more. Server CPU = the 3 nodes together; "
        "etcd cores = the 3 etcd members (shown apart, not in other cores).",
        f"Failover (`{CPS_FAILOVER}`): one fresh cluster as `{CPS_CLUSTER}` per lease TTL "
        f"({ttls}), {args.failover_rounds} rounds each: create a synchronous checkpoint "
        "(3 replicas) through node k (its active), wait until all replicas are in sync, "
        "write 1 KiB overwrites in a closed loop (in-flight 1) through node k+1, kill -9 "
        "node k (time 0 just before the signal), and time the first write sent after node k "
        "was reaped and acknowledged (node k being dead, its successor acknowledged it); "
        "also when the record in etcd first named a new active (polled every 20 ms). A "
        "round is valid when the record ends with a survivor active at a higher epoch and "
        "no write failed before the kill; a round waits at most "
        f"{failover_timeout(max(args.ttls)):.0f} s. Then the checkpoint is deleted and "
        "node k started again (a new member); k goes round the nodes, so some rounds kill "
        "the director too. Node command lines as for the cluster, with --lease-ttl TTL.",
    ]


def method_notes(args: argparse.Namespace, cluster_commands: dict[str, str]) -> list[str]:
    cps_lines = [
        _cps_line(args, SPEC_BY_NAME[name])
        for name in args.target_names
        if SPEC_BY_NAME[name].cps_flags is not None and not SPEC_BY_NAME[name].cluster
    ]
    runs = ", ".join(f"{r.subscribers} at {r.rate:g}/s" for r in args.notify_plan) or "none"
    return [
        "Closed loop: the in-flight level is the number of concurrent workers (asyncio tasks "
        "in one client process, grpc.aio), each awaiting one call after another.",
        f"Channels: one per {INFLIGHT_PER_CHANNEL} in-flight (1, 1 and 4 channels for 1, 16 "
        "and 64), each with its own TCP connection (local subchannel pool); worker i uses "
        "channel i mod channels.",
        f"Each run: {args.warmup:g} s warm-up, then a {args.seconds:g} s timed window; an op "
        "counts when it started inside the window. Latency is per op; p50/p99 nearest rank. "
        f"Runs per scenario and level: {args.repeat} (the run of median ops/s is shown).",
        "Same client code for every target: requests are pre-serialized bytes and responses "
        "are not parsed (except the handle returned by CheckpointOpen in `open`, which the "
        "same op then closes). "
        f"Call deadline {CALL_TIMEOUT_S:g} s.",
        "Servers run as subprocesses on 127.0.0.1, one target at a time. Cores = CPU seconds "
        "per wall second during the window (1.00 = one core busy): the client process, the "
        "server's process tree, anything else on the machine / time stolen by the hypervisor; "
        "server CPU µs/op = server cores / ops/s. "
        f"A ratio is flagged noisy when a run it uses saw other load > {NOISY_OTHER_CORES:g} "
        "cores.",
        "CPS: one checkpoint (WR_ACTIVE_REPLICA) with 1 KiB sections per worker; each run opens "
        "one session (Initialize + CheckpointOpen READ|WRITE) per channel, shared by the "
        "channel's workers. Started as (each its own data dir, other options at their "
        "defaults, see `cps-server --help`): " + "; ".join(cps_lines) + ".",
        f"Disk targets (`{CPS_DISK}`, `{CPS_DISK_NORMAL}`) run only overwrite (and lib-write) "
        "at the lowest in-flight level and the targets' level.",
        *cluster_notes(args, cluster_commands),
        "Library: one library checkpoint with a dataset per worker; each run initializes one "
        "library handle per channel.",
        f"Notifications (`{CPS_MEM}`, `{CPS}`), runs of subscribers at writes/s: {runs}. "
        "Subscriber sessions (each: Initialize, CheckpointOpen READ, "
        "ImmediateConsumptionRegister, then its `Callbacks` stream) are spread over up to "
        f"{MAX_CHANNELS} channels; one writer on its own channel sends SectionOverwrite of "
        f"1 KiB on a fixed schedule (open loop) for {args.notify_seconds:g} s (rate x "
        f"{args.notify_seconds:g} writes), each to a section of its own so that every "
        "notification names its write. Times from one monotonic clock in the one client "
        "process: send, acknowledgement received, notification received (per subscriber). "
        "The subscribers, the writer and the server share the machine's cores: the client "
        "and the server each run one Python event loop. "
        f"Missing notifications are awaited up to {SETTLE_S:g} s after the last write; "
        "send lag = how late the client's loop sent a write against its schedule. Server "
        "µs/notification = server CPU time from the first write to the last notification "
        "(writes included) / notifications received.",
        "etcd: started with default tuning (linearizable reads, fsync on each commit, into "
        "its data dir).",
    ]


async def bench_target(
    spec: TargetSpec,
    server: tg.Server,
    result: TargetResult,
    args: argparse.Namespace,
) -> TargetResult:
    suite = spec.suite()
    levels = spec.levels(args)
    result.descriptions = {s.name: s.description for s in suite.scenarios}
    name = spec.name
    try:
        server.start()
        await server.wait_ready()
        if isinstance(server, cl.CpsClusterServer):
            result.command = server.command_template()
        setup = await open_channels(server.addresses[0], 1)
        try:
            await suite.prepare(setup[0], max(levels))
            if isinstance(suite, ClusterSuite):
                assert isinstance(server, cl.CpsClusterServer)
                await _check_placement(server, suite, wait=True)
            for scenario in suite.scenarios:
                for level in levels:
                    if level < scenario.min_inflight:
                        continue
                    row = await _run_one(server, scenario, level, args)
                    result.rows.append(row)
                    _log(f"  {name} {scenario.name} @{level}: " + _summary(row))
            if isinstance(suite, ClusterSuite):
                assert isinstance(server, cl.CpsClusterServer)
                await _check_placement(server, suite, wait=False)
            with contextlib.suppress(Exception):
                await suite.finish(setup[0])
            if spec.notify and args.notify_plan:
                await _notify_runs(server, setup[0], result, args)
        finally:
            await close_channels(setup)
    except Exception as exc:
        result.error = describe(exc)
        _log(f"  {name}: {result.error}")
        for process, tail in server.log_tails().items():
            _log(f"{process} log tail:\n{tail}")
    finally:
        server.stop()
    return result


async def _check_placement(server: cl.CpsClusterServer, suite: ClusterSuite, wait: bool) -> None:
    """Every checkpoint of the suite has node 0 active and all its replicas in sync
    (waiting for it up to PLACEMENT_TIMEOUT_S when `wait`), and no node logged that
    a replica stopped being waited for since the last check."""
    active = server.running.nodes[0].name
    deadline = time.monotonic() + (PLACEMENT_TIMEOUT_S if wait else 0.0)
    async with aio.insecure_channel(server.etcd_endpoints[0]) as channel:
        for name in suite.names.values():
            while True:
                record = await cl.read_record(channel, server.cluster_name, name)
                placed = (
                    record is not None
                    and cl.member_name(record.get("active")) == active
                    and len(cl.in_sync_names(record)) == CLUSTER_REPLICAS
                )
                if placed:
                    break
                if time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"{name}: want {active} active with {CLUSTER_REPLICAS} replicas in "
                        f"sync, the record says {cl.describe_record(record)}"
                    )
                await asyncio.sleep(0.05)
    trouble = server.replication_trouble()
    if trouble:
        raise RuntimeError(
            "a replica was not waited for all along (the synchronous rows may not have "
            "waited for every replica): " + "; ".join(trouble[:5])
        )


async def _notify_runs(
    server: tg.Server, setup: aio.Channel, result: TargetResult, args: argparse.Namespace
) -> None:
    fixture = NotifyFixture(max(run.writes for run in args.notify_plan))
    try:
        await fixture.prepare(setup)
        for plan in args.notify_plan:
            run = await run_notify(
                server.addresses[0], server.pid, fixture, plan.subscribers, plan.writes, plan.rate
            )
            result.notify.append(run)
            _log(
                f"  {result.name} notify x{plan.subscribers} @{plan.rate:g}/s: "
                + _notify_summary(run)
            )
        with contextlib.suppress(Exception):
            await fixture.finish(setup)
    except Exception as exc:
        result.notify_error = describe(exc)
        _log(f"  {result.name} notify: {result.notify_error}")


def _notify_summary(run: NotifyResult) -> str:
    text = f"{run.received:,}/{run.expected:,} received"
    if run.after_ack is not None and run.after_send is not None:
        text += (
            f", after ack p50 {run.after_ack.p50_ms:.2f} p99 {run.after_ack.p99_ms:.2f} ms, "
            f"after send p50 {run.after_send.p50_ms:.2f} p99 {run.after_send.p99_ms:.2f} ms"
        )
    if run.errors:
        text += f" ({run.errors} errors: {run.first_error})"
    return text


async def _run_one(
    server: tg.Server, scenario: Scenario, level: int, args: argparse.Namespace
) -> Row:
    """Run a scenario at one level `--repeat` times; keep the run of median ops/s."""
    runs: list[LoadResult] = []
    try:
        for _ in range(args.repeat):
            load = await _run_once(server, scenario, level, args)
            runs.append(load)
            if load.errors:
                break
    except Exception as exc:
        return Row(scenario.name, scenario.items_per_op, scenario.item_unit, None, describe(exc))
    chosen = runs[-1] if runs[-1].errors else median_run(runs)
    return Row(scenario.name, scenario.items_per_op, scenario.item_unit, chosen)


def median_run(runs: Sequence[LoadResult]) -> LoadResult:
    ordered = sorted(runs, key=lambda r: r.ops_per_s)
    return ordered[(len(ordered) - 1) // 2]


async def _run_once(
    server: tg.Server, scenario: Scenario, level: int, args: argparse.Namespace
) -> LoadResult:
    n_channels = channel_count(level)
    channels = await open_channels(server.addresses[scenario.node], n_channels)
    try:
        calls = await scenario.start(channels, level)
        try:
            return await run_load(
                calls,
                warmup_s=args.warmup,
                seconds=args.seconds,
                channels=n_channels,
                server_pids=server.server_pids,
                support_pids=server.support_pids,
            )
        finally:
            await scenario.stop()
    finally:
        await close_channels(channels)


def _summary(row: Row) -> str:
    res = row.result
    if res is None:
        return f"FAILED {row.error}"
    text = f"{res.ops_per_s:,.0f} ops/s p50 {res.p50_ms:.3f} ms p99 {res.p99_ms:.3f} ms"
    if res.cpu.support is not None:
        text += f", server {res.cpu.server or 0:.2f} + etcd {res.cpu.support:.2f} cores"
    if res.errors:
        text += f" ({res.errors} errors: {res.first_error})"
    return text


def make_server(spec: TargetSpec, args: argparse.Namespace, workdir: Path) -> tg.Server:
    if spec.name == "bare":
        return tg.bare_server(workdir)
    if spec.etcd_members > 1:
        etcd = cl.new_etcd(spec.etcd_members, args.etcd_bin, Path(args.data_base))
        return cl.EtcdClusterServer(spec.name, etcd)
    if spec.name == "etcd":
        return tg.etcd_server(workdir, args.etcd_bin, Path(args.data_base))
    if spec.cluster:
        etcd = cl.new_etcd(3, args.etcd_bin, Path(args.data_base))
        return cl.CpsClusterServer(spec.name, etcd, CLUSTER_NODES, cluster_flags(args, spec))
    assert spec.data_base is not None and spec.cps_flags is not None
    return tg.cps_server(
        workdir,
        shlex.split(args.cps_cmd),
        spec.data_base(args),
        name=spec.name,
        extra_args=spec.cps_flags,
    )


def new_result(spec: TargetSpec, args: argparse.Namespace) -> TargetResult:
    result = TargetResult(name=spec.name, title=spec.title)
    if spec.data_base is not None:
        result.data_dir = machine.describe_dir(spec.data_base(args))
        if spec.cluster:
            result.data_dir = f"{result.data_dir} for its etcd, the nodes' in a temporary folder"
    if spec.cluster:
        result.config = (
            f"{CLUSTER_NODES} nodes, {CLUSTER_REPLICAS} replicas per checkpoint, server "
            "checkpoints in memory"
        )
    elif spec.cps_flags is not None:
        result.config = cps_config(cps_argv(args, spec))
    elif spec.etcd_members > 1:
        result.config = f"{spec.etcd_members} members"
    return result


async def _failover_runs(args: argparse.Namespace, spec: TargetSpec) -> list[FailoverResult]:
    results: list[FailoverResult] = []
    for ttl in args.ttls:
        try:
            flags = cluster_flags(args, spec)
        except ValueError as exc:
            results.append(FailoverResult(ttl=ttl, replicas=CLUSTER_REPLICAS, error=str(exc)))
            continue
        results.append(
            await run_failover(
                ttl=ttl,
                rounds=args.failover_rounds,
                replicas=CLUSTER_REPLICAS,
                flags=flags,
                etcd_binary=args.etcd_bin,
                data_base=Path(args.data_base),
                log=_log,
            )
        )
    return results


@dataclass
class RunResults:
    targets: dict[str, TargetResult]
    failovers: list[FailoverResult]


async def run_all(args: argparse.Namespace, workdir: Path) -> RunResults:
    # SIGTERM and SIGINT cancel the run, so every `finally` stops its server.
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    results = RunResults({}, [])
    for name in args.target_names:
        spec = SPEC_BY_NAME[name]
        _log(f"{name}:")
        if spec.failover:
            results.failovers = await _failover_runs(args, spec)
            continue
        result = results.targets[name] = new_result(spec, args)
        try:
            server = make_server(spec, args, workdir)
        except Exception as exc:
            result.error = describe(exc)
            _log(f"  {name}: {result.error}")
            continue
        await bench_target(spec, server, result, args)
    return results


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """Let a cleanup finish even if SIGTERM or SIGINT arrives again."""
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(["python", "-m", "bench.run", *(sys.argv[1:] if argv is None else argv)])
    started = time.monotonic()
    fsync = fsync_note(args)
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    with tempfile.TemporaryDirectory(prefix="cps-bench-") as tmp:
        try:
            results = asyncio.run(run_all(args, Path(tmp)))
        except asyncio.CancelledError:
            _log("interrupted: servers stopped, no report written")
            return 130
        finally:
            with _signals_ignored():
                tg.stop_all()
    commands = {r.name: r.command for r in results.targets.values() if r.command}
    if results.failovers and results.failovers[0].command:
        commands.setdefault(CPS_FAILOVER, results.failovers[0].command)
    text = render(
        command=command,
        date=date,
        duration_s=time.monotonic() - started,
        machine=machine_info(args),
        method=method_notes(args, commands),
        levels=args.levels,
        targets=results.targets,
        fsync_note=fsync,
        cores=os.cpu_count(),
        failovers=results.failovers,
    )
    print(text)
    if args.out is not None:
        args.out.write_text(text)
        _log(f"wrote {args.out}")
    failed = any(r.failed for r in results.targets.values()) or any(
        f.failed for f in results.failovers
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
