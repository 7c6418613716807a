"""Real `cps-server` processes forming a cluster over a real etcd, on
loopback ports, for the cluster tests. Each node keeps its port across
restarts (a restarted node is a new incarnation at the same address);
everything is stopped with SIGKILL at the end, by pid.

A node of several workers (``CpsCluster(..., workers=N)``, docs/workers.md)
is its supervisor's process: its port is followed by one port per worker
(free blocks of ports), its workers are members ``n<i>.w<j>``, and killing
the supervisor with SIGKILL takes its workers with it (they die with their
parent)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .etcd_cluster import free_port_blocks, free_ports

SERVER = str(Path(sys.executable).parent / "cps-server")


def health_of(
    address: str, timeout: float = 1.0, credentials: grpc.ChannelCredentials | None = None
) -> int | None:
    """grpc.health.v1 status of service "" (None: no answer)."""
    try:
        with (
            grpc.insecure_channel(address)
            if credentials is None
            else grpc.secure_channel(address, credentials)
        ) as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
    except grpc.RpcError:
        return None
    return int(response.status)


class CpsNode:
    def __init__(self, cluster: CpsCluster, index: int, port: int) -> None:
        self.cluster = cluster
        self.index = index
        self.port = port
        self.name = f"n{index}"
        self.popen: subprocess.Popen[bytes] | None = None
        self.log_path = cluster.folder / f"{self.name}.log"
        self.etcd_endpoints: str | None = None  # overrides the cluster's (a proxy)
        self.env: dict[str, str] = {}  # added to the process's environment
        self.paused = False
        self.workers = cluster.workers

    @property
    def address(self) -> str:
        """The node's address (with workers: shared by them all)."""
        return f"127.0.0.1:{self.port}"

    def worker_address(self, index: int) -> str:
        """The own address of worker ``index`` (the node's port + 1 + index)."""
        return f"127.0.0.1:{self.port + 1 + index}"

    @property
    def worker_addresses(self) -> list[str]:
        return [self.worker_address(i) for i in range(self.workers)] if self.workers > 1 else []

    @property
    def members(self) -> list[str]:
        """The names of this node's members of the cluster."""
        if self.workers == 1:
            return [self.name]
        return [f"{self.name}.w{i}" for i in range(self.workers)]

    def worker_pids(self) -> dict[int, int]:
        """Worker index -> pid of its latest start (the supervisor logs each)."""
        pids: dict[int, int] = {}
        for entry in self.log_entries():
            if entry.get("supervisor") and entry.get("msg") == "worker started":
                pids[int(str(entry["worker"]))] = int(str(entry["pid"]))
        return pids

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def start(self, *, wait: bool = True) -> None:
        assert not self.running
        data = self.cluster.folder / f"{self.name}-data"
        flags = [
            "--listen",
            self.address,
            "--node-name",
            self.name,
            "--data-dir",
            str(data),
            "--etcd-endpoints",
            self.etcd_endpoints or ",".join(self.cluster.etcd_endpoints),
            "--cluster-name",
            self.cluster.name,
            "--grace-seconds",
            "1",
            *(
                ("--cluster-secret-file", str(self.cluster.secret_file))
                if self.cluster.secret
                else ()
            ),
            *(("--workers", str(self.workers)) if self.workers > 1 else ()),
            *self.cluster.flags,
        ]
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                [SERVER, *flags], stdout=log, stderr=log, env={**os.environ, **self.env}
            )
        if wait:
            self.wait_serving()

    def kill(self) -> None:
        """SIGKILL (continued first if paused); a supervisor's workers die
        with it (waited for, so that its ports are free again)."""
        if self.popen is not None and self.popen.poll() is None:
            if self.paused:
                self.cont()
            workers = list(self.worker_pids().values()) if self.workers > 1 else []
            self.popen.kill()
            self.popen.wait(10)
            deadline = time.monotonic() + 10
            while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
                time.sleep(0.05)

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True

    def cont(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    def health(self, timeout: float = 1.0) -> int | None:
        return health_of(self.address, timeout, self.cluster.credentials)

    def wait_serving(self, timeout: float = 30.0) -> None:
        """Until the node (with workers: every worker) reports SERVING."""
        deadline = time.monotonic() + timeout
        addresses = [self.address, *self.worker_addresses]
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"{self.name} exited: {self.log_text()[-3000:]}")
            serving = health_pb2.HealthCheckResponse.SERVING
            credentials = self.cluster.credentials
            if all(health_of(a, 1.0, credentials) == serving for a in addresses):
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not SERVING after {timeout}s: {self.log_text()[-3000:]}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_entries(self) -> list[dict[str, object]]:
        entries = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                try:
                    entries.append(json.loads(line))
                except ValueError:
                    continue
        return entries


def _alive(pid: int) -> bool:
    """Whether a process that is not our child still runs (a zombie does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z"


class CpsCluster:
    def __init__(
        self,
        etcd_endpoints: Sequence[str],
        size: int = 3,
        flags: Sequence[str] = (),
        *,
        secret: bool = True,
        credentials: grpc.ChannelCredentials | None = None,
        workers: int = 1,
    ) -> None:
        self.etcd_endpoints = list(etcd_endpoints)
        self.secret = secret  # the nodes get --cluster-secret-file
        self.credentials = credentials  # of health checks, for nodes that speak TLS
        self.name = "t" + uuid.uuid4().hex[:10]  # a cluster of its own in the shared etcd
        self.flags = list(flags)
        self._folder = tempfile.TemporaryDirectory(prefix="cps-cluster-")
        self.folder = Path(self._folder.name)
        # The nodes know each other by this secret (no TLS here: docs/security.md).
        self.secret_file = self.folder / "cluster-secret"
        self.secret_file.write_text(secrets.token_hex(32))
        self.secret_file.chmod(0o600)
        self.workers = workers  # worker processes of each node (--workers)
        self.nodes = [CpsNode(self, i, port) for i, port in enumerate(self._ports(size))]

    def _ports(self, count: int) -> list[int]:
        if self.workers == 1:
            return free_ports(count)
        return free_port_blocks(count, 1 + self.workers)

    @property
    def addresses(self) -> str:
        return ",".join(node.address for node in self.nodes)

    def start(self) -> CpsCluster:
        for node in self.nodes:
            node.start(wait=False)
        for node in self.nodes:
            node.wait_serving()
        return self

    def add_node(self) -> CpsNode:
        (port,) = self._ports(1)
        node = CpsNode(self, len(self.nodes), port)
        self.nodes.append(node)
        node.start()
        return node

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()
        self._folder.cleanup()

    def __enter__(self) -> CpsCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            for node in self.nodes:
                tail = node.log_text()[-4000:]
                print(f"--- {node.name} log (tail) ---\n{tail}", file=sys.stderr)
        self.stop()


@contextmanager
def cps_cluster(
    etcd_endpoints: Sequence[str], size: int = 3, flags: Sequence[str] = (), *, workers: int = 1
) -> Iterator[CpsCluster]:
    with CpsCluster(etcd_endpoints, size, flags, workers=workers) as cluster:
        yield cluster
