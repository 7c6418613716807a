"""Benchmark CLI: `python -m bench.run [--quick] [--seconds S] [--out bench/RESULTS.md]`.

Starts the bare reference server, etcd and CPS one after the other as
subprocesses on loopback ports, drives each with the same client code and
writes one report with the ratios side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import platform
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import google.protobuf
import grpc

from bench import targets as tg
from bench.cps_scenarios import CpsSuite
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
from bench.report import NOISY_OTHER_CORES, Row, TargetResult, render
from bench.scenarios import BareSuite, EtcdSuite, Scenario, Suite

ALL_TARGETS = ("bare", "etcd", "cps")
TITLES = {
    "bare": "bare: grpc.aio server, empty unary handler (Python gRPC ceiling)",
    "etcd": "etcd: single member, KV over gRPC",
    "cps": "CPS: cps-server",
}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed window per run")
    parser.add_argument("--warmup", type=float, default=0.5, help="untimed warm-up per run")
    parser.add_argument(
        "--inflight", default="1,16,64", help="comma-separated in-flight levels (default 1,16,64)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 s per run, in-flight 1 and 16"
    )
    parser.add_argument(
        "--targets", default=",".join(ALL_TARGETS), help="comma-separated, of bare,etcd,cps"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per scenario and level; the run of median ops/s is reported",
    )
    parser.add_argument("--out", type=Path, help="write the Markdown report here too")
    parser.add_argument(
        "--cps-cmd",
        default=shlex.join(tg.default_cps_command()),
        help="command starting CPS, options included (e.g. '... --sync normal'); "
        "'--listen HOST:PORT --data-dir DIR' is appended",
    )
    parser.add_argument("--etcd-bin", default="/usr/bin/etcd")
    parser.add_argument(
        "--data-base",
        type=Path,
        default=tg.default_data_dir_base(),
        help="where the temporary data dirs of CPS and etcd go (default: /dev/shm, a tmpfs, "
        "when present; give a disk path to include real fsync costs)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup, args.inflight = 1.0, 0.3, "1,16"
    args.levels = sorted({int(x) for x in args.inflight.split(",") if x.strip()})
    args.target_names = [t for t in ALL_TARGETS if t in args.targets.split(",")]
    unknown = set(args.targets.split(",")) - set(ALL_TARGETS)
    if unknown or not args.levels or min(args.levels) < 1 or args.repeat < 1:
        parser.error(
            f"bad --targets {sorted(unknown)}, --inflight {args.inflight!r} "
            f"or --repeat {args.repeat}"
        )
    return args


def machine_info(args: argparse.Namespace) -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    info = {
        "nproc": f"{os.cpu_count()} (client and servers share them; nothing is pinned)",
        "CPU": model,
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "grpcio": grpc.__version__,
        "protobuf": google.protobuf.__version__,
    }
    if "etcd" in args.target_names:
        info["etcd"] = tg.etcd_version(args.etcd_bin)
    info["data dirs of CPS and etcd"] = (
        f"temporary, under {args.data_base} ({_fs_type(args.data_base)})"
    )
    return info


def _fs_type(path: Path) -> str:
    """The file system type of the mount holding `path`, from /proc/mounts."""
    best, fs_type = "", "unknown file system"
    resolved = str(path.resolve())
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            mount = fields[1]
            inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) > len(best):
                best, fs_type = mount, fields[2]
    return fs_type


def method_notes(args: argparse.Namespace) -> list[str]:
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
        "channel's workers. Started as "
        f"`{args.cps_cmd} --listen 127.0.0.1:PORT --data-dir TMPDIR`, "
        "its defaults otherwise (see `cps-server --help`).",
        "etcd: started with default tuning (linearizable reads, fsync on each commit, into "
        "the data dir above).",
    ]


async def bench_target(
    name: str,
    server: tg.ServerProcess,
    suite: Suite,
    levels: Sequence[int],
    args: argparse.Namespace,
) -> TargetResult:
    result = TargetResult(name=name, title=TITLES[name])
    result.descriptions = {s.name: s.description for s in suite.scenarios}
    try:
        server.start()
        await server.wait_ready()
        setup = await open_channels(server.address, 1)
        try:
            await suite.prepare(setup[0], max(levels))
            for scenario in suite.scenarios:
                for level in levels:
                    row = await _run_one(server, scenario, level, args)
                    result.rows.append(row)
                    _log(f"  {name} {scenario.name} @{level}: " + _summary(row))
            with contextlib.suppress(Exception):
                await suite.finish(setup[0])
        finally:
            await close_channels(setup)
    except Exception as exc:
        result.error = describe(exc)
        _log(f"  {name}: {result.error}")
    finally:
        server.stop()
    return result


async def _run_one(
    server: tg.ServerProcess, scenario: Scenario, level: int, args: argparse.Namespace
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
    server: tg.ServerProcess, scenario: Scenario, level: int, args: argparse.Namespace
) -> LoadResult:
    n_channels = channel_count(level)
    channels = await open_channels(server.address, n_channels)
    try:
        calls = await scenario.start(channels, level)
        try:
            return await run_load(
                calls,
                warmup_s=args.warmup,
                seconds=args.seconds,
                channels=n_channels,
                server_pid=server.pid,
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
    if res.errors:
        text += f" ({res.errors} errors: {res.first_error})"
    return text


def _servers(args: argparse.Namespace, workdir: Path) -> dict[str, Callable[[], tg.ServerProcess]]:
    return {
        "bare": lambda: tg.bare_server(workdir),
        "etcd": lambda: tg.etcd_server(workdir, args.etcd_bin, args.data_base),
        "cps": lambda: tg.cps_server(workdir, shlex.split(args.cps_cmd), args.data_base),
    }


SUITES: dict[str, Callable[[], Suite]] = {"bare": BareSuite, "etcd": EtcdSuite, "cps": CpsSuite}


async def run_all(args: argparse.Namespace, workdir: Path) -> dict[str, TargetResult]:
    # SIGTERM and SIGINT cancel the run, so every `finally` stops its server.
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    results: dict[str, TargetResult] = {}
    servers = _servers(args, workdir)
    for name in args.target_names:
        _log(f"{name}:")
        try:
            server = servers[name]()
        except Exception as exc:
            results[name] = TargetResult(name, TITLES[name], error=describe(exc))
            continue
        results[name] = await bench_target(name, server, SUITES[name](), args.levels, args)
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
        for result in results.values():
            if result.error is not None:
                log = Path(tmp) / f"{result.name}.log"
                if log.exists():
                    tail = log.read_text(errors="replace").splitlines()[-10:]
                    _log(f"{result.name} log tail:\n" + "\n".join(tail))
    text = render(
        command=command,
        date=date,
        duration_s=time.monotonic() - started,
        machine=machine_info(args),
        method=method_notes(args),
        levels=args.levels,
        targets=results,
    )
    print(text)
    if args.out is not None:
        args.out.write_text(text)
        _log(f"wrote {args.out}")
    failed = any(
        r.error is not None or any(row.result is None or row.result.errors for row in r.rows)
        for r in results.values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
