"""A real etcd cluster (Debian's etcd-server, /usr/bin/etcd) on 127.0.0.1 for tests.

    with EtcdCluster(size=3) as cluster:
        endpoints = cluster.endpoints          # ["127.0.0.1:PORT", ...]
        cluster.kill(0)                        # SIGKILL member 0
        cluster.restart(0)                     # same data dir, --initial-cluster-state existing

or the `etcd_cluster` fixture of tests/cluster/conftest.py (module scope).

Every member listens on free loopback ports only (a client and a peer port
each) and keeps its data dir under /dev/shm when there is one. The harness
only ever signals the processes it started, by pid; stop() (and leaving the
`with`) SIGKILLs them all (SIGTERM takes etcd 5-7 s) and removes the data.

Tuning, chosen for fast and still stable tests on a small shared machine:
- data dirs on tmpfs (/dev/shm): fsync is cheap there. etcd 3.4 has no
  --unsafe-no-fsync (that came in 3.5), so tmpfs is the way to skip disk waits.
- --heartbeat-interval 50 ms and --election-timeout 500 ms (defaults 100 and
  1000): a killed leader is replaced in about 0.5-1 s instead of 1-2 s. Ten
  heartbeats per election timeout is etcd's advice; going lower makes load
  spikes of the shared machine cause needless elections. A side effect:
  etcd's minimum lease TTL (1.5 election timeouts, rounded up to a second)
  is 1 s instead of 2 s.
- --snapshot-count left at its default (100000): tests write far fewer
  entries, so no snapshot is ever taken and a restart replays a short WAL.
- --experimental-watch-progress-notify-interval 1 s (default 10 min): watches
  that ask for progress notifications get them often enough to be seen in a
  test; the client does not depend on them.
- --logger zap at warn level into one log file per member, next to the data
  dir (log_text() reads it for failure messages).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import grpc

from cps.server.cluster.etcdpb import rpc_pb2, rpc_pb2_grpc

ETCD_BINARY = "/usr/bin/etcd"
LOOPBACK = "127.0.0.1"
HEARTBEAT_MS = 50
ELECTION_MS = 500


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1 (held together while chosen)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port_blocks(count: int, size: int) -> list[int]:
    """`count` first ports of blocks of `size` consecutive free TCP ports on
    127.0.0.1 (a node of several workers: its port, then one per worker).

    Taken below the kernel's ephemeral range, so that no outgoing connection
    takes one of them between now and the node's start (the kernel gives
    ephemeral ports one at a time, never in blocks)."""
    low = 32768
    with contextlib.suppress(OSError, ValueError, IndexError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    floor = min(20000, low // 2)
    held: list[socket.socket] = []
    bases: list[int] = []
    try:
        for _ in range(200):
            if len(bases) == count:
                return bases
            base = random.randrange(floor, low - size)
            block: list[socket.socket] = []
            try:
                for port in range(base, base + size):
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    block.append(sock)
                    sock.bind((LOOPBACK, port))
            except OSError:
                for sock in block:
                    sock.close()
                continue
            held += block
            bases.append(base)
        if len(bases) == count:
            return bases
        raise RuntimeError(f"no {count} blocks of {size} free ports below {low}")
    finally:
        for sock in held:
            sock.close()


def _data_base() -> Path:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm
    return Path(tempfile.gettempdir())


@dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        """host:port of the client URL, as the client takes it."""
        return f"{LOOPBACK}:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"http://{LOOPBACK}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{LOOPBACK}:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class EtcdCluster:
    """A `size`-member etcd cluster of real processes on loopback ports."""

    def __init__(
        self,
        size: int = 3,
        *,
        binary: str = ETCD_BINARY,
        base_dir: Path | None = None,
        heartbeat_ms: int = HEARTBEAT_MS,
        election_ms: int = ELECTION_MS,
        start_timeout: float = 20.0,
    ) -> None:
        if size < 1:
            raise ValueError("an etcd cluster needs at least one member")
        self.size = size
        self.binary = binary
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.start_timeout = start_timeout
        self.root = Path(tempfile.mkdtemp(prefix="cps-etcd-", dir=base_dir or _data_base()))
        self.token = f"cps-test-{os.getpid()}-{int(time.monotonic() * 1000)}"
        self.members: list[EtcdMember] = []

    # --- lifecycle --------------------------------------------------------

    def start(self) -> EtcdCluster:
        """Start every member and wait until the cluster has a leader and serves."""
        if not Path(self.binary).exists():
            raise FileNotFoundError(f"{self.binary} not found: install etcd-server")
        ports = free_ports(2 * self.size)
        self.members = [
            EtcdMember(
                name=f"m{i}",
                client_port=ports[2 * i],
                peer_port=ports[2 * i + 1],
                data_dir=self.root / f"m{i}",
                log_path=self.root / f"m{i}.log",
            )
            for i in range(self.size)
        ]
        try:
            for member in self.members:
                self._spawn(member, state="new")
            self.wait_healthy(self.start_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def kill(self, index: int) -> None:
        """SIGKILL member `index` (by its pid) and reap it; its data dir stays."""
        member = self.members[index]
        process = member.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

    def restart(self, index: int, *, wait: bool = True) -> None:
        """Start member `index` again on its ports and data dir, as an existing member."""
        member = self.members[index]
        if member.running:
            raise RuntimeError(f"{member.name} is still running")
        self._spawn(member, state="existing")
        if wait:
            self.wait_member_ready(index, self.start_timeout)

    def stop(self) -> None:
        """SIGKILL every member and remove the data dirs and logs."""
        for index in range(len(self.members)):
            with contextlib.suppress(Exception):
                self.kill(index)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- queries ----------------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        """host:port of every member's client URL, in member order."""
        return [member.endpoint for member in self.members]

    def status(self, index: int, timeout: float = 1.0) -> rpc_pb2.StatusResponse | None:
        """Maintenance.Status of member `index`, or None when it does not answer."""
        with grpc.insecure_channel(self.members[index].endpoint) as channel:
            stub = rpc_pb2_grpc.MaintenanceStub(channel)
            try:
                response: rpc_pb2.StatusResponse = stub.Status(
                    rpc_pb2.StatusRequest(), timeout=timeout
                )
            except grpc.RpcError:
                return None
            return response

    def leader_index(self, timeout: float = 10.0) -> int:
        """Index of the member that the running members agree is the leader."""
        deadline = time.monotonic() + timeout
        while True:
            leader = self._agreed_leader(self._running_indexes())
            if leader is not None:
                return leader
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no agreed etcd leader in {timeout} s{self._logs()}")
            time.sleep(0.05)

    def wait_healthy(self, timeout: float = 20.0) -> None:
        """Until every running member answers Status, all name the same running
        leader, and a linearizable read through each running member succeeds."""
        deadline = time.monotonic() + timeout
        running = self._running_indexes()
        while True:
            self._check_alive(running)
            if self._agreed_leader(running) is not None and all(
                self._linearizable_read(i) for i in running
            ):
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"etcd cluster not healthy in {timeout} s{self._logs()}")
            time.sleep(0.05)

    def wait_member_ready(self, index: int, timeout: float = 20.0) -> None:
        """Until member `index` knows the leader and serves a linearizable read."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive([index])
            status = self.status(index)
            if status is not None and status.leader != 0 and self._linearizable_read(index):
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"etcd member {index} not ready in {timeout} s{self._logs()}")
            time.sleep(0.05)

    # --- internals --------------------------------------------------------

    def _spawn(self, member: EtcdMember, *, state: str) -> None:
        initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        argv = [
            self.binary,
            f"--name={member.name}",
            f"--data-dir={member.data_dir}",
            f"--listen-client-urls={member.client_url}",
            f"--advertise-client-urls={member.client_url}",
            f"--listen-peer-urls={member.peer_url}",
            f"--initial-advertise-peer-urls={member.peer_url}",
            f"--initial-cluster={initial_cluster}",
            f"--initial-cluster-state={state}",
            f"--initial-cluster-token={self.token}",
            f"--heartbeat-interval={self.heartbeat_ms}",
            f"--election-timeout={self.election_ms}",
            "--experimental-watch-progress-notify-interval=1s",
            "--logger=zap",
            "--log-outputs=stderr",
            "--log-level=warn",
        ]
        log = member.log_path.open("ab")
        try:
            member.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        finally:
            log.close()

    def _running_indexes(self) -> list[int]:
        return [i for i, member in enumerate(self.members) if member.running]

    def _check_alive(self, indexes: Sequence[int]) -> None:
        for i in indexes:
            member = self.members[i]
            if not member.running:
                raise RuntimeError(
                    f"etcd member {member.name} exited:\n{member.log_text()[-3000:]}"
                )

    def _agreed_leader(self, indexes: Sequence[int]) -> int | None:
        ids: dict[int, int] = {}
        leaders = set()
        for i in indexes:
            status = self.status(i)
            if status is None or status.leader == 0:
                return None
            ids[status.header.member_id] = i
            leaders.add(status.leader)
        if len(leaders) != 1:
            return None
        return ids.get(leaders.pop())

    def _linearizable_read(self, index: int) -> bool:
        with grpc.insecure_channel(self.members[index].endpoint) as channel:
            try:
                rpc_pb2_grpc.KVStub(channel).Range(
                    rpc_pb2.RangeRequest(key=b"cps-harness-probe"), timeout=1.0
                )
            except grpc.RpcError:
                return False
            return True

    def _logs(self) -> str:
        parts = [f"\n--- {m.name} ---\n{m.log_text()[-2000:]}" for m in self.members]
        return "".join(parts)
