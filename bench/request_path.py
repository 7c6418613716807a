"""Server CPU time per SectionOverwrite: a trivial protobuf server against CPS
in memory and CPS persistent, side by side (the "where does the time go" of
bench/PROFILE.md). Run: python -m bench.request_path [--seconds 4]"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from cps.v1 import checkpoint_service_pb2 as pb
from cps.v1 import checkpoint_service_pb2_grpc as rpc
from cps.v1 import types_pb2 as t

INFLIGHT, CHANNELS, PAYLOAD = 64, 4, b"y" * 1024
SERVER = str(Path(sys.executable).parent / "cps-server")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(address: str, seconds: float, *, create: bool) -> int:
    """Overwrite for ``seconds``; ``create``: set up the checkpoint first."""
    channels = [
        grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(CHANNELS)
    ]
    stubs = [rpc.CheckpointServiceStub(channel) for channel in channels]
    version = t.Version(release_code="B", major_version=1)
    session = (await stubs[0].Initialize(pb.InitializeRequest(version=version))).service_handle
    attributes = t.CheckpointCreationAttributes(
        creation_flags=[t.CREATION_FLAG_WR_ACTIVE_REPLICA],
        checkpoint_size=INFLIGHT * len(PAYLOAD),
        max_sections=INFLIGHT,
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
    for index in range(INFLIGHT if create else 0):
        await stubs[0].SectionCreate(
            pb.SectionCreateRequest(
                checkpoint_handle=handle,
                section_creation_attributes=t.SectionCreationAttributes(
                    section_id=t.SectionId(id=b"s%d" % index)
                ),
            )
        )
    done = 0
    end = time.monotonic() + seconds

    async def worker(index: int) -> None:
        nonlocal done
        stub = stubs[index % CHANNELS]
        request = pb.SectionOverwriteRequest(
            checkpoint_handle=handle, section_id=t.SectionId(id=b"s%d" % index), data_buffer=PAYLOAD
        )
        while time.monotonic() < end:
            await stub.SectionOverwrite(request)
            done += 1

    await asyncio.gather(*(worker(index) for index in range(INFLIGHT)))
    for channel in channels:
        await channel.close()
    return done


def measure(label: str, command: list[str], seconds: float) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"127.0.0.1:{port}"
    server = subprocess.Popen([*command, "--listen", address], stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)
        asyncio.run(drive(address, 0.5, create=True))  # set up and warm up
        before = cpu_seconds(server.pid)
        calls = asyncio.run(drive(address, seconds, create=False))
        used = cpu_seconds(server.pid) - before
    finally:
        server.terminate()
        server.wait(timeout=15)
    print(f"{label:28} {calls / seconds:8,.0f} ops/s {used / calls * 1e6:6.0f} server µs/op")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0)
    seconds = parser.parse_args().seconds
    print(f"SectionOverwrite 1 KiB, {INFLIGHT} in flight over {CHANNELS} channels")
    with (
        tempfile.TemporaryDirectory(dir="/dev/shm") as memory,
        tempfile.TemporaryDirectory(dir="/dev/shm") as stored,
    ):
        measure("protobuf handler, no CPS", [sys.executable, "-m", "bench.min_server"], seconds)
        measure(
            "CPS, in memory",
            [
                SERVER,
                "--data-dir",
                memory,
                "--no-persist-server-checkpoints",
                "--log-level",
                "warning",
            ],
            seconds,
        )
        measure(
            "CPS, persistent (tmpfs)",
            [SERVER, "--data-dir", stored, "--log-level", "warning"],
            seconds,
        )


if __name__ == "__main__":
    main()
