"""Server CPU time per SectionOverwrite, side by side: a protobuf handler that
only returns, CPS in memory, CPS persistent (the default), optionally with
py-spy on each server during the measured window (bench/PROFILE.md).

Run: python -m bench.request_path [--inflight 1 64] [--seconds 4]
     [--only cps] [--py-spy DIR] [--extra-args "--sync normal"]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from bench.cpu import tree_seconds
from cps.v1 import checkpoint_service_pb2 as pb
from cps.v1 import checkpoint_service_pb2_grpc as rpc
from cps.v1 import types_pb2 as t

PAYLOAD = b"y" * 1024
SERVER = str(Path(sys.executable).parent / "cps-server")
PY_SPY = str(Path(sys.executable).parent / "py-spy")


async def drive(
    address: str,
    inflight: int,
    seconds: float,
    *,
    create: bool,
    mode: t.CreationFlag.ValueType = t.CREATION_FLAG_WR_ACTIVE_REPLICA,
    channels_wanted: int | None = None,
) -> list[float]:
    """Overwrite for ``seconds`` with ``inflight`` workers; the latencies.
    ``create``: set up the checkpoint (its write ``mode``) and its sections
    first. One channel per 16 in flight unless ``channels_wanted``."""
    count = channels_wanted or max(1, inflight // 16)
    channels = [
        grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(count)
    ]
    stubs = [rpc.CheckpointServiceStub(channel) for channel in channels]
    version = t.Version(release_code="B", major_version=1)
    session = (await stubs[0].Initialize(pb.InitializeRequest(version=version))).service_handle
    attributes = t.CheckpointCreationAttributes(
        creation_flags=[mode],
        checkpoint_size=64 * len(PAYLOAD),
        max_sections=64,
        max_section_size=len(PAYLOAD),
        max_section_id_size=8,
        retention_duration=t.RetentionDuration(forever=True),
    )
    opened = await stubs[0].CheckpointOpen(
        pb.CheckpointOpenRequest(
            service_handle=session,
            checkpoint_name="request-path",
            checkpoint_open_flags=[t.OPEN_FLAG_READ, t.OPEN_FLAG_WRITE, t.OPEN_FLAG_CREATE],
            checkpoint_creation_attributes=attributes,
        )
    )
    handle = opened.checkpoint_handle
    for index in range(64 if create else 0):
        await stubs[0].SectionCreate(
            pb.SectionCreateRequest(
                checkpoint_handle=handle,
                section_creation_attributes=t.SectionCreationAttributes(
                    section_id=t.SectionId(id=b"s%d" % index)
                ),
            )
        )
    latencies: list[float] = []
    end = time.monotonic() + seconds

    async def worker(index: int) -> None:
        stub = stubs[index % count]
        request = pb.SectionOverwriteRequest(
            checkpoint_handle=handle, section_id=t.SectionId(id=b"s%d" % index), data_buffer=PAYLOAD
        )
        while (start := time.monotonic()) < end:
            await stub.SectionOverwrite(request)
            latencies.append(time.monotonic() - start)

    await asyncio.gather(*(worker(index) for index in range(inflight)))
    for channel in channels:
        await channel.close()
    return latencies


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def measure(
    label: str,
    command: list[str],
    inflight: int,
    seconds: float,
    spy: Path | None,
    native: bool = False,
) -> tuple[float, float, float]:
    """Ops/s, p50 ms and server µs/op of one target."""
    address = f"127.0.0.1:{_free_port()}"
    server = subprocess.Popen([*command, "--listen", address], stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)
        asyncio.run(drive(address, inflight, 0.5, create=True))  # set up and warm up
        recorder = None
        if spy is not None:
            out = spy / f"{label.replace(' ', '_')}-{inflight}.txt"
            record = ["record", "-p", str(server.pid), "-d", str(int(seconds)), "-r", "250"]
            recorder = subprocess.Popen(
                [PY_SPY, *record, "-f", "raw", "-o", str(out), "--threads"]
                + (["--native"] if native else ["--nonblocking"]),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        before = tree_seconds(server.pid)
        latencies = asyncio.run(drive(address, inflight, seconds, create=False))
        used = tree_seconds(server.pid) - before
        if recorder is not None:
            recorder.wait(timeout=seconds + 30)
    finally:
        server.terminate()
        server.wait(timeout=15)
    calls = len(latencies)
    p50 = statistics.median(latencies) * 1e3
    print(
        f"{label:26} in-flight {inflight:3}: {calls / seconds:8,.0f} ops/s "
        f"p50 {p50:6.3f} ms {used / calls * 1e6:6.0f} server µs/op",
        flush=True,
    )
    return calls / seconds, p50, used / calls * 1e6


def summarise(path: Path, top: int = 30) -> str:
    """Self and inclusive shares of a py-spy raw (collapsed) profile."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    lines = [f"{path.name}: {total} samples", "-- self"]
    lines += [f"{100 * n / total:5.1f}% {f[:140]}" for f, n in own.most_common(top)]
    lines += ["-- inclusive"]
    lines += [f"{100 * n / total:5.1f}% {f[:140]}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


def _cps(tree: Path | None, *options: str) -> list[str]:
    """cps-server of this checkout, or of another one (``tree``, a git
    worktree of an older commit, for an A/B run side by side)."""
    if tree is None:
        return [SERVER, "--log-level", "warning", *options]
    path = f"PYTHONPATH={tree}/server:{tree}/client_py"
    main = [sys.executable, "-m", "cps.server.main"]
    return ["env", path, *main, "--log-level", "warning", *options]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--inflight", type=int, nargs="+", default=[64])
    parser.add_argument("--rounds", type=int, default=1, help="interleaved runs; medians shown")
    parser.add_argument("--only", nargs="+", choices=["handler", "cps-mem", "cps"])
    parser.add_argument("--py-spy", type=Path, help="record raw py-spy stacks into DIR")
    parser.add_argument("--native", action="store_true", help="py-spy --native (C frames)")
    parser.add_argument("--extra-args", default="", help="more cps-server options")
    parser.add_argument(
        "--compare-tree",
        type=Path,
        help="also run cps-mem and cps from this checkout (e.g. `git worktree add /tmp/old "
        "COMMIT`), labelled old-*, interleaved with this checkout's",
    )
    args = parser.parse_args()
    extra = shlex.split(args.extra_args)
    print(f"SectionOverwrite 1 KiB; one channel per 16 in flight; cps-server {extra}")
    if args.py_spy:
        args.py_spy.mkdir(parents=True, exist_ok=True)
    targets = {
        "handler": [sys.executable, "-m", "bench.min_server"],
        "cps-mem": _cps(None, "--no-persist-server-checkpoints"),
        "cps": _cps(None, *extra),
    }
    if args.compare_tree:
        targets["old-cps-mem"] = _cps(args.compare_tree, "--no-persist-server-checkpoints")
        targets["old-cps"] = _cps(args.compare_tree, *extra)
    chosen = {
        label: command
        for label, command in targets.items()
        if not args.only or label.removeprefix("old-") in args.only
    }
    with tempfile.TemporaryDirectory(dir="/dev/shm") as scratch:
        for inflight in args.inflight:
            results: dict[str, list[tuple[float, float, float]]] = {label: [] for label in chosen}
            for round_ in range(args.rounds):
                for label, command in chosen.items():
                    if label != "handler":
                        command = [*command, "--data-dir", f"{scratch}/{label}-{inflight}-{round_}"]
                    results[label].append(
                        measure(label, command, inflight, args.seconds, args.py_spy, args.native)
                    )
            if args.rounds > 1:
                print(f"-- medians of {args.rounds} interleaved runs, in-flight {inflight}")
                for label, rows in results.items():
                    ops, p50, cost = (
                        statistics.median(column) for column in zip(*rows, strict=True)
                    )
                    spread = sorted(round(row[2]) for row in rows)
                    print(
                        f"{label:14} {ops:8,.0f} ops/s p50 {p50:6.3f} ms "
                        f"{cost:6.0f} server µs/op (runs: {spread})"
                    )
    if args.py_spy:
        for path in sorted(args.py_spy.glob("*.txt")):
            print(summarise(path))


if __name__ == "__main__":
    main()
