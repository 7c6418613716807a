"""A node of several workers (``--workers N``, docs/workers.md): real
supervisors and workers over the module's 3-member etcd, lease TTL 2 s.

- the workers are members ``n<i>.w<j>`` of host ``n<i>``, each advertising
  its own address;
- checkpoints created over many connections to a node's shared port are
  active on each of its workers; every record's replicas sit on distinct
  hosts (--replicas 2, and --replicas 3 with 2 hosts: 2 replicas);
- a worker that is not a checkpoint's active, and one that holds no replica
  of it, serves opens, reads, writes and notifications of it (forwarded);
- a second node on the node's data directory (or a worker's) is refused;
- kill -9 of a worker: its supervisor starts it again (a new incarnation)
  and no acknowledged write through the Python client is lost;
- SIGTERM of a supervisor stops every worker and exits 0;
- a worker that cannot start makes the node exit 1 with one line, and
  ``--workers 2`` without etcd is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cps.client import (
    Callbacks,
    ChangedSection,
    CkptError,
    CreationAttributes,
    CreationFlags,
    DispatchFlags,
    Session,
)
from cps.server.cluster.etcd import Etcd
from cps.v1 import checkpoint_service_pb2 as pb
from tests.cluster.harness import CpsCluster, EtcdCluster, cps_cluster, free_port_blocks
from tests.cluster.harness.cps_cluster import SERVER, _alive
from tests.cluster.helpers import ASYNC, SYNC, wait_for
from tests.support import RW, Client, attributes, sid

FLAGS = ("--lease-ttl", "2", "--replica-timeout-seconds", "0.5")
TIMEOUT = 20.0
# A new TCP connection for each channel (the kernel picks a worker per connection).
NEW_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
SPREAD = 16  # checkpoints created through each node, one connection each


@contextlib.contextmanager
def _started(etcd: EtcdCluster, flags: tuple[str, ...]) -> Iterator[CpsCluster]:
    """Two nodes of two workers each; their logs' tails printed after a
    test of it failed (a module's fixture does not see the failure)."""
    with cps_cluster(etcd.endpoints, 2, flags, workers=2) as running:
        yield running
        if _failed:
            for node in running.nodes:
                print(
                    f"--- {node.name} log (tail) ---\n{node.log_text()[-12000:]}", file=sys.stderr
                )


_failed: list[str] = []


@pytest.fixture(autouse=True)
def _note_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed > failed_before:
        _failed.append(request.node.name)


@pytest.fixture(scope="module")
def pair(etcd_cluster: EtcdCluster) -> Iterator[CpsCluster]:
    """Two nodes of two workers each, --replicas 2 (the default)."""
    with _started(etcd_cluster, FLAGS) as running:
        yield running


@pytest.fixture(scope="module")
def trio(etcd_cluster: EtcdCluster) -> Iterator[CpsCluster]:
    """Two nodes of two workers each, --replicas 3: more replicas than hosts."""
    with _started(etcd_cluster, (*FLAGS, "--replicas", "3")) as running:
        yield running


def _prefix(endpoints: list[str], prefix: str) -> dict[str, dict[str, Any]]:
    """The JSON values under an etcd prefix, by the rest of their key."""

    async def read() -> dict[str, dict[str, Any]]:
        async with await Etcd.connect(endpoints) as etcd:
            kvs, _ = await etcd.get_prefix(prefix.encode())
            return {kv.key.decode()[len(prefix) :]: dict(json.loads(kv.value)) for kv in kvs}

    return asyncio.run(read())


def _members(etcd: EtcdCluster, cluster: CpsCluster) -> dict[str, dict[str, Any]]:
    return _prefix(etcd.endpoints, f"/cps/{cluster.name}/members/")


def _records(etcd: EtcdCluster, cluster: CpsCluster) -> dict[str, dict[str, Any]]:
    return _prefix(etcd.endpoints, f"/cps/{cluster.name}/ckpt/")


def _host(member: dict[str, Any]) -> str:
    return str(member["node"]).split(".")[0]  # n0.w1 -> n0


def _create(address: str, name: str, flags: tuple[int, ...] = ASYNC) -> None:
    """Create a checkpoint with one section "s", over a connection of its own."""
    with grpc.insecure_channel(address, options=NEW_CONNECTION) as channel:
        c = Client(channel)
        handle = c.open(name, attributes(flags=flags))
        c.create_section(handle, b"s", b"created")
        c.stub.CheckpointClose(pb.CheckpointCloseRequest(checkpoint_handle=handle))


def _write_and_read(address: str, name: str, data: bytes) -> bytes:
    with grpc.insecure_channel(address, options=NEW_CONNECTION) as channel:
        c = Client(channel)
        handle = c.open(name, flags=RW)
        c.stub.SectionOverwrite(
            pb.SectionOverwriteRequest(
                checkpoint_handle=handle, section_id=sid(b"s"), data_buffer=data
            ),
            timeout=TIMEOUT,
        )
        value = c.read(handle, b"s")
        c.stub.CheckpointClose(pb.CheckpointCloseRequest(checkpoint_handle=handle))
        return value


def _collect(
    seen: list[list[ChangedSection]],
) -> Callable[[str, object, list[ChangedSection]], None]:
    """A notification callback that keeps the changed sections."""

    def notify(_name: str, _checkpoint: object, sections: list[ChangedSection]) -> None:
        seen.append(sections)

    return notify


def _spread(cluster: CpsCluster, prefix: str) -> list[str]:
    names = []
    for node in cluster.nodes:
        for k in range(SPREAD):
            name = f"{prefix}-{node.name}-{k}"
            _create(node.address, name)
            names.append(name)
    return names


def _assert_distinct_hosts(
    records: dict[str, dict[str, Any]], names: list[str], count: int
) -> None:
    for name in names:
        replicas = records[name]["replicas"]
        hosts = [_host(m) for m in replicas]
        assert len(replicas) == count and len(set(hosts)) == count, (name, replicas)


def test_workers_are_members_of_their_node_s_host(
    pair: CpsCluster, etcd_cluster: EtcdCluster
) -> None:
    members = _members(etcd_cluster, pair)
    assert sorted(members) == ["n0.w0", "n0.w1", "n1.w0", "n1.w1"]
    for node in pair.nodes:
        for index, name in enumerate(node.members):
            assert members[name]["host"] == node.name
            assert members[name]["address"] == node.worker_address(index)
        serving = [e for e in node.log_entries() if e.get("msg") == "workers serving"]
        assert serving and serving[0]["pids"] == [node.worker_pids()[0], node.worker_pids()[1]]


def test_checkpoints_spread_over_workers_and_their_replicas_over_hosts(
    pair: CpsCluster, etcd_cluster: EtcdCluster
) -> None:
    names = _spread(pair, "spread")
    records = _records(etcd_cluster, pair)
    for node in pair.nodes:
        actives = {
            records[name]["active"]["node"]
            for name in names
            if name.startswith(f"spread-{node.name}-")
        }
        # Created active on the worker the connection landed on: both of them.
        assert actives == set(node.members)
    _assert_distinct_hosts(records, names, 2)


def test_a_worker_that_is_not_the_active_or_holds_nothing_serves_the_checkpoint(
    pair: CpsCluster, etcd_cluster: EtcdCluster
) -> None:
    n0, n1 = pair.nodes
    for name, flags in (("fwd-async", ASYNC), ("fwd-sync", SYNC)):
        _create(n0.worker_address(0), name, flags)  # active n0.w0
        record = _records(etcd_cluster, pair)[name]
        assert record["active"]["node"] == "n0.w0"
        holders = {m["node"] for m in record["replicas"]}
        others = [
            (member, node.worker_address(i))
            for node in pair.nodes
            for i, member in enumerate(node.members)
            if member != "n0.w0"
        ]
        assert sum(member not in holders for member, _ in others) == 2  # n0.w1 and one of n1
        for member, address in others:
            data = f"through {member}".encode()
            assert _write_and_read(address, name, data) == data, (name, member)
        # The shared ports, whichever worker answers.
        for node in pair.nodes:
            assert _write_and_read(node.address, name, b"shared") == b"shared"

    # Notifications: a session on a worker holding no replica registers; a
    # write through another worker that holds none is notified.
    for name in ("fwd-async", "fwd-sync"):
        holders = {m["node"] for m in _records(etcd_cluster, pair)[name]["replicas"]}
        n1_bare = next(i for i, member in enumerate(n1.members) if member not in holders)
        notified: list[list[ChangedSection]] = []
        with Session.connect(n0.worker_address(1), Callbacks(), timeout=TIMEOUT) as session:
            checkpoint = session.open(name)
            checkpoint.immediate_consumption_register(_collect(notified))
            assert checkpoint.read(b"s") == b"shared"
            with Session.connect(n1.worker_address(n1_bare), timeout=TIMEOUT) as writer:
                writer.open(name).overwrite(b"s", b"notify me")
            deadline = time.monotonic() + TIMEOUT
            while not any(s.section_id == b"s" for sections in notified for s in sections):
                assert time.monotonic() < deadline, f"no notification of {name}"
                session.dispatch(DispatchFlags.ALL)
                time.sleep(0.05)
            assert checkpoint.read(b"s") == b"notify me"


def test_a_second_node_on_the_node_s_data_dir_or_a_worker_s_is_refused(
    pair: CpsCluster, etcd_cluster: EtcdCluster
) -> None:
    n0 = pair.nodes[0]
    data = pair.folder / "n0-data"
    cases = [
        (data, [], n0.pid),
        (data, ["--workers", "2"], n0.pid),
        (data / "worker-1", [], n0.worker_pids()[1]),
    ]
    for data_dir, extra, holder in cases:
        (port,) = free_port_blocks(1, 3)
        done = subprocess.run(
            [
                SERVER,
                *("--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir)),
                *("--etcd-endpoints", ",".join(etcd_cluster.endpoints)),
                *("--cluster-name", pair.name, "--node-name", "intruder"),
                *("--cluster-secret-file", str(pair.secret_file), *extra),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1, done.stderr
        assert f"data directory {data_dir} is in use by another cps-server (pid {holder})" in (
            done.stderr
        )
    assert "intruder" not in _members(etcd_cluster, pair)


class _Writer:
    """Overwrites section "s" with 1, 2, 3, ... through the Python client
    (which follows the cluster), remembering the last value acknowledged."""

    def __init__(self, targets: str, name: str) -> None:
        self.targets, self.name = targets, name
        self.acked = 0
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with Session.connect(self.targets, timeout=TIMEOUT) as session:
            checkpoint = session.open(self.name)
            value = 0
            while not self.stop.is_set():
                value += 1
                try:
                    checkpoint.overwrite(b"s", str(value).encode())
                except CkptError as error:
                    self.errors.append(type(error).__name__)
                    time.sleep(0.05)
                    continue
                self.acked = value

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(TIMEOUT + 5)


def test_kill_9_of_a_worker_restarts_it_and_loses_no_acknowledged_write(
    pair: CpsCluster, etcd_cluster: EtcdCluster
) -> None:
    n0, n1 = pair.nodes
    name = "killed-worker"
    with Session.connect(n0.worker_address(0), timeout=TIMEOUT) as session:
        attrs = CreationAttributes(
            creation_flags=CreationFlags.WR_ALL_REPLICAS, max_sections=4, max_section_size=64
        )
        session.open(name, attrs).section_create(b"s", b"0")
    assert _records(etcd_cluster, pair)[name]["active"]["node"] == "n0.w0"
    old = _members(etcd_cluster, pair)["n0.w0"]["incarnation"]
    writer = _Writer(f"{n0.address},{n1.address}", name)
    try:
        wait_for(lambda: writer.acked >= 20, TIMEOUT, "writes under way")
        victim = n0.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        acked_at_kill = writer.acked
        wait_for(lambda: n0.worker_pids().get(0) != victim, 10, "the worker started again")

        def rejoined() -> bool:
            member = _members(etcd_cluster, pair).get("n0.w0")
            return member is not None and member["incarnation"] != old

        wait_for(rejoined, TIMEOUT, "the new incarnation of n0.w0 registered")
        wait_for(lambda: writer.acked > acked_at_kill + 20, TIMEOUT, "writes go on")
    finally:
        writer.finish()
    with Session.connect(n1.address, timeout=TIMEOUT) as session:
        value = int(session.open(name).read(b"s"))
    assert writer.acked <= value <= writer.acked + 1, (value, writer.acked, writer.errors)
    record = _records(etcd_cluster, pair)[name]
    assert record["active"]["node"].startswith("n1.")  # the backup took over
    exited = [e for e in n0.log_entries() if e.get("msg") == "worker exited: starting it again"]
    assert exited and exited[-1]["pid"] == victim and exited[-1]["exit"] == "signal SIGKILL"
    n0.wait_serving()  # the new worker serves on its own port too

    # The replica count comes back, on distinct hosts.
    def replicated() -> bool:
        record = _records(etcd_cluster, pair)[name]
        return len(record["in_sync"]) == 2 and len({_host(m) for m in record["replicas"]}) == 2

    wait_for(replicated, TIMEOUT, "two in-sync replicas on two hosts")
    _assert_one_active_per_epoch(pair)


def _assert_one_active_per_epoch(cluster: CpsCluster) -> None:
    """No two workers served one checkpoint as its active at one epoch (from
    the 'serving as active' lines each logs, with its worker's index)."""
    served: dict[tuple[str, int], set[str]] = {}
    for node in cluster.nodes:
        for entry in node.log_entries():
            if entry.get("msg") == "serving as active":
                key = (str(entry["checkpoint"]), int(str(entry["epoch"])))
                served.setdefault(key, set()).add(f"{node.name}.w{entry['worker']}")
    assert served
    doubles = {key: members for key, members in served.items() if len(members) > 1}
    assert not doubles, f"two actives for one checkpoint at one epoch: {doubles}"


def test_three_replicas_wanted_on_two_hosts_make_two(
    trio: CpsCluster, etcd_cluster: EtcdCluster
) -> None:
    names = _spread(trio, "trio")
    records = _records(etcd_cluster, trio)
    _assert_distinct_hosts(records, names, 2)
    time.sleep(2.5)  # the director's passes (every second) add no replica on a taken host
    later = _records(etcd_cluster, trio)
    assert {n: later[n]["replicas"] for n in names} == {n: records[n]["replicas"] for n in names}


def test_sigterm_of_a_supervisor_stops_every_worker_and_exits_0(
    trio: CpsCluster, etcd_cluster: EtcdCluster
) -> None:
    node = trio.nodes[1]
    pids = list(node.worker_pids().values())
    assert node.popen is not None
    started = time.monotonic()
    node.popen.send_signal(signal.SIGTERM)
    assert node.popen.wait(30) == 0
    took = time.monotonic() - started
    assert not any(_alive(pid) for pid in pids)
    # They left the cluster (leases revoked), not waited out.
    assert not any(name.startswith("n1.") for name in _members(etcd_cluster, trio))
    stopped = [e for e in node.log_entries() if e.get("msg") == "stopped"]
    assert len(stopped) == 3  # each worker, then the supervisor
    print(f"\nSIGTERM: node of 2 workers stopped in {took:.2f}s")


def test_a_worker_that_cannot_start_stops_the_node_with_one_line(
    etcd_cluster: EtcdCluster, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    (port,) = free_port_blocks(1, 3)
    base = [
        SERVER,
        *("--listen", f"127.0.0.1:{port}", "--workers", "2", "--cluster-name", "tw"),
        *("--etcd-endpoints", ",".join(etcd_cluster.endpoints)),
        *("--cluster-secret-file", str(secret), "--grace-seconds", "1"),
    ]

    def run(data_dir: Path) -> tuple[int, list[str]]:
        done = subprocess.run(
            [*base, "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60
        )
        return done.returncode, [line for line in done.stderr.splitlines() if line[:1] != "{"]

    # Worker 1's own port is taken.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port + 2))
        taken.listen()
        code, lines = run(tmp_path / "a")
    assert code == 1
    assert lines == [
        f"cps-server: cannot listen on 127.0.0.1:{port + 2} (worker 1's own address): "
        "Address already in use"
    ]
    # Worker 1 cannot make its store (a file where its directory goes).
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "worker-1").write_text("in the way")
    code, lines = run(tmp_path / "b")
    assert code == 1
    assert len(lines) == 1 and lines[0].startswith(
        f"cps-server: worker 1 could not start: cannot create data directory {tmp_path}/b/worker-1"
    ), lines


def test_several_workers_without_etcd_are_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [SERVER, "--workers", "2", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "cps-server: workers = 2 (from flag --workers) needs etcd_endpoints: a node without "
        "etcd keeps its directory of checkpoints in the memory of its one process, so it runs "
        "a single worker; workers share the directory a cluster keeps in etcd "
        "(--etcd-endpoints)"
    ]
    assert not list(tmp_path.iterdir())  # nothing started, nothing written


def test_the_worker_variable_alone_makes_no_worker(tmp_path: Path) -> None:
    """Only a supervisor's child is its worker (a variable set by hand is not
    obeyed: the status pipe it names is not this process's)."""
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    done = subprocess.run(
        [
            SERVER,
            *("--workers", "2", "--etcd-endpoints", "127.0.0.1:1"),
            *("--cluster-secret-file", str(secret), "--data-dir", str(tmp_path / "d")),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "CPS_INTERNAL_WORKER": '{"index": 0, "supervisor": 1, "status_fd": 9}'},
    )
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        "cps-server: CPS_INTERNAL_WORKER names supervisor 1, which is not this process's parent"
    )
    assert not (tmp_path / "d").exists()
