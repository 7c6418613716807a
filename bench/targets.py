"""The server processes under test: CPS (one node, or a 3-node cluster over a
3-member etcd), the bare gRPC server and etcd (one member or three).

Each runs as a subprocess on a loopback port, so it does not share the CPU or
the GIL with the client. A process is only ever stopped by its own pid. The
clusters (etcd's and CPS's) are started by the cluster tests' harness,
tests/cluster/harness, the one tested way to run them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import grpc
from grpc import aio

from bench.load import raw_unary

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0

Probe = Callable[[aio.Channel], Awaitable[bool]]


class Server(Protocol):
    """What the runs need of a target: one process, or a cluster of several."""

    @property
    def name(self) -> str: ...

    @property
    def addresses(self) -> list[str]:
        """Where the client can send its calls: one address, or one per node
        (a scenario names the node it calls, 0 unless it says otherwise)."""
        ...

    @property
    def pid(self) -> int:
        """The main process (a cluster's node 0)."""
        ...

    @property
    def server_pids(self) -> list[int]:
        """The processes whose trees count together as the server's CPU."""
        ...

    @property
    def support_pids(self) -> list[int]:
        """Processes the server needs, shown apart (a cluster's etcd members)."""
        ...

    def start(self) -> None: ...

    async def wait_ready(self) -> None: ...

    def stop(self) -> None: ...

    def log_tails(self) -> dict[str, str]:
        """The last lines of each process's log, by process name (for a failure)."""
        ...


class Stoppable(Protocol):
    def stop(self) -> None: ...


def free_ports(count: int) -> list[int]:
    """Distinct TCP ports on the loopback interface that are free right now."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((LOOPBACK, 0))
            ports.append(sock.getsockname()[1])
        return ports


# Started and not yet stopped, so that stop_all can stop them on any exit.
_LIVE: list[Stoppable] = []


def stop_all() -> None:
    """Stop every server still running (each by its own pid)."""
    while _LIVE:
        _LIVE[-1].stop()


def track(started: Stoppable) -> None:
    """Remember a started server, for stop_all."""
    _LIVE.append(started)


def untrack(stopped: Stoppable) -> None:
    if stopped in _LIVE:
        _LIVE.remove(stopped)


@dataclass(eq=False)
class ServerProcess:
    """A server subprocess listening for gRPC on `address`."""

    name: str
    argv: list[str]
    address: str
    probe: Probe
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    cleanup_dirs: list[Path] = field(default_factory=list)

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        track(self)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not started")
        return self.proc.pid

    @property
    def addresses(self) -> list[str]:
        return [self.address]

    @property
    def server_pids(self) -> list[int]:
        return [self.pid]

    @property
    def support_pids(self) -> list[int]:
        return []

    def log_tails(self) -> dict[str, str]:
        return {self.name: self.log_tail(10)}

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    async def wait_ready(self) -> None:
        """Poll the probe until it answers true, the process exits, or time runs out."""
        async with aio.insecure_channel(self.address) as channel:

            async def probe() -> bool:
                with contextlib.suppress(aio.AioRpcError):
                    return await self.probe(channel)
                return False

            await self._wait_until(probe, "ready")

    async def wait_for_log(self, text: str, what: str) -> None:
        """Poll the log until it holds `text`, the process exits, or time runs out."""

        async def logged() -> bool:
            return text in self.log_text()

        await self._wait_until(logged, what)

    async def _wait_until(self, check: Callable[[], Awaitable[bool]], what: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode} before it was {what}:\n"
                    + self.log_tail()
                )
            if await check():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.name} not {what} after {READY_TIMEOUT_S:.0f} s:\n" + self.log_tail()
                )
            await asyncio.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period; only this process, by its pid."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
        for directory in self.cleanup_dirs:
            shutil.rmtree(directory, ignore_errors=True)
        untrack(self)


async def _up_unless_unavailable(call: Callable[[], Awaitable[object]]) -> bool:
    """True once the server answers with anything but UNAVAILABLE."""
    try:
        await call()
    except aio.AioRpcError as exc:
        return bool(exc.code() != grpc.StatusCode.UNAVAILABLE)
    return True


# --- the bare server -------------------------------------------------------

BARE_METHOD = "/bench.Bare/Call"


async def _probe_bare(channel: aio.Channel) -> bool:
    call = raw_unary(channel, BARE_METHOD)
    await call(b"")
    return True


def bare_server(workdir: Path) -> ServerProcess:
    (port,) = free_ports(1)
    address = f"{LOOPBACK}:{port}"
    return ServerProcess(
        name="bare",
        argv=[sys.executable, "-m", "bench.bare_server", "--listen", address],
        address=address,
        probe=_probe_bare,
        log_path=workdir / "bare.log",
    )


# --- CPS ------------------------------------------------------------------

HEALTH_METHOD = "/grpc.health.v1.Health/Check"
# HealthCheckResponse{status: SERVING}: field 1, varint 1.
_HEALTH_SERVING = b"\x08\x01"


async def _probe_cps(channel: aio.Channel) -> bool:
    """Health says SERVING, or the server is up but has no Health service."""
    call = raw_unary(channel, HEALTH_METHOD)
    try:
        response = await call(b"")  # HealthCheckRequest{service: ""}
    except aio.AioRpcError as exc:
        return bool(exc.code() == grpc.StatusCode.UNIMPLEMENTED)
    return response == _HEALTH_SERVING


def default_cps_command() -> list[str]:
    return [str(Path(sys.executable).parent / "cps-server")]


def cps_server(
    workdir: Path,
    command: list[str],
    dir_base: Path,
    name: str = "cps",
    extra_args: Sequence[str] = (),
    port: int | None = None,
) -> ServerProcess:
    """CPS with its store in a fresh temporary data dir under `dir_base`.

    `extra_args` follow `command` (so they win over the same option in it),
    then come `--listen` and `--data-dir`. A free port is picked unless given.
    """
    if port is None:
        (port,) = free_ports(1)
    address = f"{LOOPBACK}:{port}"
    data_dir = Path(tempfile.mkdtemp(prefix=f"cps-bench-{name}-", dir=dir_base))
    return ServerProcess(
        name=name,
        argv=[*command, *extra_args, "--listen", address, "--data-dir", str(data_dir)],
        address=address,
        probe=_probe_cps,
        log_path=workdir / f"{name}.log",
        cleanup_dirs=[data_dir],
    )


# --- etcd -----------------------------------------------------------------

ETCD_RANGE_METHOD = "/etcdserverpb.KV/Range"


async def _probe_etcd(channel: aio.Channel) -> bool:
    call = raw_unary(channel, ETCD_RANGE_METHOD)
    return await _up_unless_unavailable(lambda: call(b"\x0a\x01x"))  # RangeRequest{key: "x"}


def default_data_dir_base() -> Path:
    """Where the servers' temporary data dirs go: tmpfs when there is one, else the temp dir."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm
    return Path(tempfile.gettempdir())


def etcd_server(workdir: Path, binary: str, dir_base: Path) -> ServerProcess:
    client_port, peer_port = free_ports(2)
    client_url = f"http://{LOOPBACK}:{client_port}"
    peer_url = f"http://{LOOPBACK}:{peer_port}"
    data_dir = Path(tempfile.mkdtemp(prefix="cps-bench-etcd-", dir=dir_base))
    return ServerProcess(
        name="etcd",
        argv=[
            binary,
            "--name=bench",
            f"--data-dir={data_dir}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=bench={peer_url}",
            "--initial-cluster-state=new",
            "--logger=zap",
            "--log-level=warn",
        ],
        address=f"{LOOPBACK}:{client_port}",
        probe=_probe_etcd,
        log_path=workdir / "etcd.log",
        cleanup_dirs=[data_dir],
    )


def etcd_version(binary: str) -> str:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except OSError:
        return "not found"
    first = out.splitlines()[0] if out else "unknown"
    return first.removeprefix("etcd Version: ").strip()
