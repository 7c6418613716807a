"""The clustered targets: a 3-member etcd, and 3 CPS nodes over one.

Both are started by the cluster tests' harness (tests/cluster/harness:
EtcdCluster, CpsCluster), the tested way to run them on loopback ports; the
benchmark only wraps them in the `Server` interface of bench.targets. Their
etcd keeps etcd's own default timing (heartbeat 100 ms, election 1 s; the
harness's default is faster, for the fault tests) and its data dirs under the
benchmark's data-dir base (tmpfs), as the single-member `etcd` target.

Every process is stopped with SIGKILL by its pid (the harness's stop), data
dirs removed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpc import aio

from bench import targets as tg
from bench.load import raw_unary
from cps.server.cluster.etcdpb import rpc_pb2 as etcd
from tests.cluster.harness import CpsCluster, EtcdCluster
from tests.cluster.harness.cps_cluster import SERVER as HARNESS_SERVER

# etcd's defaults (the harness tunes its tests' etcd to 50 ms / 500 ms).
ETCD_HEARTBEAT_MS = 100
ETCD_ELECTION_MS = 1000
ETCD_RANGE = "/etcdserverpb.KV/Range"
# What a CPS node logs when a replica stops being waited for (a synchronous
# write is then acknowledged without it), or a peer is refused/dropped:
# any of them during the runs means a synchronous row did not wait for every
# replica all along.
REPLICATION_TROUBLE = (
    "replica left the in-sync set",
    "link overflow: peer dropped",
    "a replica refused this node's operations",
)


def harness_server() -> str:
    """The cps-server the harness starts (the one next to this Python)."""
    return HARNESS_SERVER


def same_program(program: str) -> bool:
    """Whether `program` is the harness's cps-server."""
    return os.path.realpath(program) == os.path.realpath(HARNESS_SERVER)


def new_etcd(size: int, binary: str, base_dir: Path) -> EtcdCluster:
    return EtcdCluster(
        size,
        binary=binary,
        base_dir=base_dir,
        heartbeat_ms=ETCD_HEARTBEAT_MS,
        election_ms=ETCD_ELECTION_MS,
    )


def _tail(text: str, lines: int = 10) -> str:
    return "\n".join(text.splitlines()[-lines:])


@dataclass(eq=False)
class EtcdClusterServer:
    """A 3-member etcd (the reference for the cluster): the client talks to its leader."""

    name: str
    etcd: EtcdCluster
    leader: int = 0

    @property
    def addresses(self) -> list[str]:
        endpoints = self.etcd.endpoints
        return [endpoints[self.leader], *(e for i, e in enumerate(endpoints) if i != self.leader)]

    @property
    def pid(self) -> int:
        return self.server_pids[0]

    @property
    def server_pids(self) -> list[int]:
        return [m.pid for m in self.etcd.members if m.pid is not None]

    @property
    def support_pids(self) -> list[int]:
        return []

    def start(self) -> None:
        tg.track(self)

    async def wait_ready(self) -> None:
        # Blocking (a few seconds): nothing else runs meanwhile, and a SIGTERM
        # is handled once it returns, so no process is left behind.
        self.etcd.start()
        self.leader = self.etcd.leader_index()

    def stop(self) -> None:
        self.etcd.stop()
        tg.untrack(self)

    def log_tails(self) -> dict[str, str]:
        return {f"{self.name}-{m.name}": _tail(m.log_text()) for m in self.etcd.members}


@dataclass(eq=False)
class CpsClusterServer:
    """`size` CPS nodes over a 3-member etcd; node 0 creates the checkpoints, so
    it is their active replica."""

    name: str
    etcd: EtcdCluster
    size: int
    flags: list[str]
    cluster: CpsCluster | None = None
    # Log lines of the nodes already read (a later check looks at what follows).
    _seen: dict[str, int] = field(default_factory=dict)

    @property
    def running(self) -> CpsCluster:
        if self.cluster is None:
            raise RuntimeError(f"{self.name} is not started")
        return self.cluster

    @property
    def addresses(self) -> list[str]:
        return [node.address for node in self.running.nodes]

    @property
    def pid(self) -> int:
        return self.running.nodes[0].pid

    @property
    def server_pids(self) -> list[int]:
        return [node.pid for node in self.running.nodes if node.running]

    @property
    def support_pids(self) -> list[int]:
        return [m.pid for m in self.etcd.members if m.pid is not None]

    @property
    def etcd_endpoints(self) -> list[str]:
        return self.etcd.endpoints

    @property
    def cluster_name(self) -> str:
        return self.running.name

    def start(self) -> None:
        tg.track(self)

    async def wait_ready(self) -> None:
        # Blocking, as EtcdClusterServer.wait_ready.
        self.etcd.start()
        self.cluster = CpsCluster(self.etcd.endpoints, self.size, self.flags).start()

    def stop(self) -> None:
        # The nodes first (SIGKILL), then etcd.
        if self.cluster is not None:
            self.cluster.stop()
        self.etcd.stop()
        tg.untrack(self)

    def log_tails(self) -> dict[str, str]:
        tails = {f"{self.name}-etcd-{m.name}": _tail(m.log_text()) for m in self.etcd.members}
        if self.cluster is not None:
            for node in self.cluster.nodes:
                tails[f"{self.name}-{node.name}"] = _tail(node.log_text())
        return tails

    def command_template(self) -> str:
        """Node 0's command line as it ran, with its ports, dirs and names as placeholders."""
        node = self.running.nodes[0]
        argv = process_argv(node.pid) or []
        # A console script runs as `python SCRIPT ...`: show the script.
        if len(argv) > 1 and same_program(argv[1]):
            argv = argv[1:]
        folder = str(self.running.folder)
        replace = {
            node.address: "127.0.0.1:PORT",
            str(self.running.folder / f"{node.name}-data"): "CLUSTERDIR/nI-data",
            ",".join(self.etcd.endpoints): "ETCD1,ETCD2,ETCD3",
            self.running.name: "NAME",
            node.name: "nI",
        }
        shown = [replace.get(arg, arg) for arg in argv]
        return " ".join(
            "CLUSTERDIR" + arg[len(folder) :] if arg.startswith(folder) else arg for arg in shown
        )

    def replication_trouble(self) -> list[str]:
        """Log lines since the last call that say a replica was not waited for."""
        found: list[str] = []
        for node in self.running.nodes:
            lines = node.log_text().splitlines()
            start = self._seen.get(node.name, 0)
            self._seen[node.name] = len(lines)
            found += [
                f"{node.name}: {line.strip()[:200]}"
                for line in lines[start:]
                if any(text in line for text in REPLICATION_TROUBLE)
            ]
        return found


def process_argv(pid: int) -> list[str] | None:
    """The command line of a running process."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


# --- the records in etcd (docs/replication.md) ---------------------------------


async def read_record(channel: aio.Channel, cluster: str, name: str) -> dict[str, Any] | None:
    """The checkpoint's record (/cps/<cluster>/ckpt/<name>), as JSON; None if there is none."""
    return await read_json(channel, f"/cps/{cluster}/ckpt/{name}".encode())


async def read_json(channel: aio.Channel, key: bytes) -> dict[str, Any] | None:
    raw = await raw_unary(channel, ETCD_RANGE)(etcd.RangeRequest(key=key).SerializeToString())
    response = etcd.RangeResponse.FromString(raw)
    if not response.kvs:
        return None
    return dict(json.loads(response.kvs[0].value))


def member_name(member: Any) -> str | None:
    """A record's member ({"node": ..., "incarnation": ...}) -> its node name."""
    return None if not isinstance(member, dict) else str(member.get("node"))


def in_sync_names(record: dict[str, Any]) -> list[str]:
    return [name for m in record.get("in_sync", []) if (name := member_name(m)) is not None]


def describe_record(record: dict[str, Any] | None) -> str:
    if record is None:
        return "no record"
    return (
        f"active {member_name(record.get('active'))}, epoch {record.get('epoch')}, "
        f"in_sync {in_sync_names(record)}"
    )
