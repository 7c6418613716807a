"""What the report says about the machine: CPU, versions, file systems, fsync."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import google.protobuf
import grpc

FSYNC_PROBES = 50


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def versions() -> dict[str, str]:
    return {
        "nproc": f"{os.cpu_count()} (client and servers share them; nothing is pinned)",
        "CPU": cpu_model(),
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "grpcio": grpc.__version__,
        "protobuf": google.protobuf.__version__,
    }


def fs_type(path: Path) -> str:
    """The file system type of the mount holding `path`, from /proc/mounts."""
    best, found = "", "unknown file system"
    resolved = str(path.resolve())
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            mount = fields[1]
            inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) > len(best):
                best, found = mount, fields[2]
    return found


def describe_dir(path: Path) -> str:
    """`path (fs type)`, e.g. `/dev/shm (tmpfs)`."""
    return f"{path} ({fs_type(path)})"


def fsync_ms(directory: Path) -> float | None:
    """Median time of a 4 KiB append + fsync in `directory` (a scratch file, removed)."""
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix="cps-bench-fsync-") as scratch:
            fd = scratch.fileno()
            times: list[float] = []
            block = b"\0" * 4096
            for _ in range(FSYNC_PROBES):
                t0 = time.perf_counter()
                os.write(fd, block)
                os.fsync(fd)
                times.append(time.perf_counter() - t0)
    except OSError:
        return None
    return statistics.median(times) * 1e3
