"""The server processes under test: CPS (alone, or a primary with a standby),
the bare gRPC server and etcd.

Each runs as a subprocess on a loopback port, so it does not share the CPU or
the GIL with the client. A process is only ever stopped by its own pid.
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

from bench import cpu
from bench.load import raw_unary

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0

Probe = Callable[[aio.Channel], Awaitable[bool]]


class Server(Protocol):
    """What the runs need of a target: one process, or a primary with its standby."""

    @property
    def name(self) -> str: ...

    @property
    def address(self) -> str:
        """Where the client sends its calls."""
        ...

    @property
    def pid(self) -> int:
        """The process whose tree counts as the server's CPU."""
        ...

    @property
    def standby_pid(self) -> int | None:
        """A standby's process (its CPU is shown apart), None without one."""
        ...

    def start(self) -> None: ...

    async def wait_ready(self) -> None: ...

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
_LIVE: list[ServerProcess] = []


def stop_all() -> None:
    """Stop every server still running (each by its own pid)."""
    while _LIVE:
        _LIVE[-1].stop()


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
        _LIVE.append(self)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not started")
        return self.proc.pid

    @property
    def standby_pid(self) -> int | None:
        return None

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
        if self in _LIVE:
            _LIVE.remove(self)


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


# --- CPS: a primary and its standby ----------------------------------------

PRIMARY_NODE = "primary"
STANDBY_NODE = "standby"
# What the standby logs once it applied the primary's snapshot (docs/replication.md).
FOLLOWING_LOG = '"msg": "following"'
# What the primary logs when it drops its standby (a synchronous batch not
# acknowledged in time, or too far behind), and what the standby logs when
# its stream to the primary breaks.
DROPPED_LOG = '"msg": "follower dropped"'
UNREACHABLE_LOG = '"msg": "primary unreachable"'
# The standby has caught up once it uses less CPU than this in a poll interval
# (its CPU time counts in clock ticks of 10 ms): with no backlog it only
# answers keepalive pings.
IDLE_POLL_S = 0.2
IDLE_CPU_S = 0.02
CATCH_UP_TIMEOUT_S = 60.0


def primary_args() -> list[str]:
    return ["--node-name", PRIMARY_NODE]


def standby_args(primary_address: str) -> list[str]:
    return ["--node-name", STANDBY_NODE, "--standby-of", primary_address]


@dataclass(eq=False)
class CpsPair:
    """A CPS primary and one standby following it, each with its own data dir.

    The client talks to the primary only (a standby serves no client). Ready
    once the primary serves and the standby has applied its snapshot.
    """

    name: str
    primary: ServerProcess
    standby: ServerProcess

    @property
    def address(self) -> str:
        return self.primary.address

    @property
    def pid(self) -> int:
        return self.primary.pid

    @property
    def standby_pid(self) -> int | None:
        return self.standby.pid

    def start(self) -> None:
        self.primary.start()

    async def wait_ready(self) -> None:
        await self.primary.wait_ready()
        self.standby.start()
        await self.standby.wait_for_log(FOLLOWING_LOG, "following its primary")

    def stop(self) -> None:
        # The standby first: without its primary it would try to take over.
        self.standby.stop()
        self.primary.stop()

    async def standby_catch_up(self) -> tuple[float, float]:
        """Wait until the standby is idle: it has applied every batch sent so far.

        The primary queues every committed batch for the standby without
        waiting (except for synchronous checkpoints), so after a run of
        asynchronous writes the standby may still be applying a backlog.
        Returns the seconds it took, to the start of the first idle poll
        interval (resolution IDLE_POLL_S), and the standby's CPU seconds
        meanwhile.
        """
        start = time.monotonic()
        deadline = start + CATCH_UP_TIMEOUT_S
        first = used = cpu.tree_seconds(self.standby.pid)
        while True:
            await asyncio.sleep(IDLE_POLL_S)
            now = time.monotonic()
            previous, used = used, cpu.tree_seconds(self.standby.pid)
            if used - previous < IDLE_CPU_S:
                return max(0.0, now - IDLE_POLL_S - start), previous - first
            if not self.standby.running or now > deadline:
                raise RuntimeError(
                    f"{self.standby.name} still busy {now - start:.0f} s after the run "
                    f"(running: {self.standby.running})"
                )

    def replication_problems(self) -> list[str]:
        """Why the standby may not have followed all along (empty: it did)."""
        problems: list[str] = []
        if not self.standby.running:
            problems.append(f"{self.standby.name} is not running")
        if DROPPED_LOG in self.primary.log_text():
            problems.append(f"{self.primary.name} dropped its standby")
        if UNREACHABLE_LOG in self.standby.log_text():
            problems.append(f"{self.standby.name} lost its stream to the primary")
        return problems


def cps_pair(
    workdir: Path,
    command: list[str],
    dir_base: Path,
    name: str = "cps-pair",
    extra_args: Sequence[str] = (),
) -> CpsPair:
    """A primary (logging to NAME.log) and its standby (NAME-standby.log), both
    with default replication options and `extra_args`."""
    primary_port, standby_port = free_ports(2)
    primary = cps_server(
        workdir,
        command,
        dir_base,
        name=name,
        extra_args=[*extra_args, *primary_args()],
        port=primary_port,
    )
    standby = cps_server(
        workdir,
        command,
        dir_base,
        name=f"{name}-standby",
        extra_args=[*extra_args, *standby_args(primary.address)],
        port=standby_port,
    )
    return CpsPair(name, primary, standby)


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
