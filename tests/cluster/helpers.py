"""Helpers of the cluster tests: clients on given nodes, the records in
etcd, continuous writers, and the invariants read from the nodes' logs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from cps.server.cluster.etcd import Etcd
from cps.v1 import checkpoint_service_pb2 as pb
from cps.v1 import types_pb2 as t
from tests.cluster.harness import CpsCluster
from tests.support import RW, Client, attributes, seed_error, sid

SYNC = (t.CREATION_FLAG_WR_ALL_REPLICAS,)
ASYNC = (t.CREATION_FLAG_WR_ACTIVE_REPLICA,)
WEAK = (t.CREATION_FLAG_WR_ACTIVE_REPLICA_WEAK,)
COLLOCATED = (t.CREATION_FLAG_WR_ACTIVE_REPLICA, t.CREATION_FLAG_CHECKPOINT_COLLOCATED)


@contextlib.contextmanager
def client(address: str) -> Iterator[Client]:
    with grpc.insecure_channel(address) as channel:
        yield Client(channel)


def record(etcd_endpoints: list[str], cluster: CpsCluster, name: str) -> dict[str, Any] | None:
    """The checkpoint's record in etcd, as JSON (None when there is none)."""

    async def read() -> dict[str, Any] | None:
        async with await Etcd.connect(etcd_endpoints) as etcd:
            kv = await etcd.get(f"/cps/{cluster.name}/ckpt/{name}".encode())
            return None if kv is None else dict(json.loads(kv.value))

    return asyncio.run(read())


def active_node(etcd_endpoints: list[str], cluster: CpsCluster, name: str) -> int | None:
    """The index of the node that is the checkpoint's active replica."""
    data = record(etcd_endpoints, cluster, name)
    if data is None or data["active"] is None:
        return None
    return int(str(data["active"]["node"])[1:])


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds it took; fails after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


def overwrite(c: Client, handle: int, section: bytes, data: bytes, timeout: float = 10) -> None:
    c.stub.SectionOverwrite(
        pb.SectionOverwriteRequest(
            checkpoint_handle=handle, section_id=sid(section), data_buffer=data
        ),
        timeout=timeout,
    )


def synchronize(c: Client, handle: int, timeout: float = 10) -> None:
    c.stub.CheckpointSynchronize(
        pb.CheckpointSynchronizeRequest(checkpoint_handle=handle), timeout=timeout
    )


def reason(error: grpc.RpcError) -> str:
    try:
        return seed_error(error)[1]
    except AssertionError:
        return f"(no seed error: {error.code().name})"


@dataclass
class Writer:
    """Overwrites its own section with 1, 2, 3, ... through one node until
    stopped, remembering the last value acknowledged (and, for
    asynchronous checkpoints, the last one a Synchronize covered)."""

    address: str
    name: str
    section: bytes
    synchronize_every: int = 0
    acked: int = 0
    synchronized: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> Writer:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        with client(self.address) as c:
            handle = c.open(self.name, flags=RW)
            value = self.acked
            while not self.stop.is_set():
                value += 1
                try:
                    overwrite(c, handle, self.section, str(value).encode(), timeout=5)
                except grpc.RpcError as error:
                    key = reason(error)
                    self.errors[key] = self.errors.get(key, 0) + 1
                    time.sleep(0.05)
                    continue
                self.acked = value
                if self.synchronize_every and value % self.synchronize_every == 0:
                    try:
                        synchronize(c, handle, timeout=5)
                        self.synchronized = value
                    except grpc.RpcError as error:
                        key = "sync:" + reason(error)
                        self.errors[key] = self.errors.get(key, 0) + 1

    def finish(self) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(20)


def served_epochs(cluster: CpsCluster) -> dict[tuple[str, int], set[str]]:
    """(checkpoint, epoch) -> the nodes that served it as active, from the
    nodes' logs (every node logs 'serving as active' when it starts)."""
    served: dict[tuple[str, int], set[str]] = {}
    for node in cluster.nodes:
        for entry in node.log_entries():
            if entry.get("msg") == "serving as active":
                key = (str(entry["checkpoint"]), int(str(entry["epoch"])))
                served.setdefault(key, set()).add(node.name)
    return served


def assert_one_active_per_epoch(cluster: CpsCluster) -> None:
    doubles = {key: nodes for key, nodes in served_epochs(cluster).items() if len(nodes) > 1}
    assert not doubles, f"two actives for one checkpoint at one epoch: {doubles}"


def create(address: str, name: str, flags: tuple[int, ...], **kw: Any) -> None:
    """Create a checkpoint through a node (and close the handle: forever
    retention keeps it)."""
    with client(address) as c:
        handle = c.open(name, attributes(flags=flags, **kw))
        c.stub.CheckpointClose(pb.CheckpointCloseRequest(checkpoint_handle=handle))


def read_value(address: str, name: str, section: bytes, timeout: float = 10) -> bytes:
    with client(address) as c:
        handle = c.open(name, flags=RW)
        response = c.stub.CheckpointRead(
            pb.CheckpointReadRequest(
                checkpoint_handle=handle,
                io_vector=[t.IOVectorElement(section_id=sid(section))],
            ),
            timeout=timeout,
        )
        return bytes(response.io_vector[0].data_buffer)
