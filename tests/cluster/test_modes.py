"""The seed's calls across the nodes of a real 3-node cluster over a real
3-member etcd: every write mode through a node that is not the active
replica, collocated checkpoints and ActiveReplicaSet, notifications to
sessions on other nodes, cluster-wide retention, expiry, iteration, delete."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from cps.server.cluster.etcd import Etcd
from cps.v1 import checkpoint_service_pb2 as pb
from cps.v1 import types_pb2 as t
from tests.cluster.harness import CpsCluster, EtcdCluster, cps_cluster
from tests.cluster.helpers import (
    ASYNC,
    COLLOCATED,
    SYNC,
    WEAK,
    active_node,
    client,
    create,
    overwrite,
    read_value,
    reason,
    record,
    synchronize,
    wait_for,
)
from tests.support import RW, Client, attributes, sid


@pytest.fixture(scope="module")
def cluster(etcd_cluster: EtcdCluster) -> Iterator[CpsCluster]:
    with cps_cluster(etcd_cluster.endpoints, 3) as running:
        yield running


@pytest.mark.parametrize("flags", [SYNC, ASYNC, WEAK], ids=["sync", "async", "weak"])
def test_every_write_mode_through_a_node_that_is_not_active(
    cluster: CpsCluster, etcd_cluster: EtcdCluster, flags: tuple[int, ...]
) -> None:
    a, b, c = cluster.nodes
    name = f"modes-{flags[0]}"
    create(a.address, name, flags)
    assert active_node(etcd_cluster.endpoints, cluster, name) == 0
    data = record(etcd_cluster.endpoints, cluster, name)
    assert data is not None and len(data["replicas"]) == 2 and len(data["in_sync"]) == 2
    with client(b.address) as writer:
        handle = writer.open(name, flags=RW)
        writer.create_section(handle, b"s", b"first")
        overwrite(writer, handle, b"s", b"second")
        writer.stub.CheckpointWrite(
            pb.CheckpointWriteRequest(
                checkpoint_handle=handle,
                io_vector=[
                    t.IOVectorElement(section_id=sid(b"s"), data_buffer=b"S", data_offset=0)
                ],
            )
        )
        if flags != SYNC:
            synchronize(writer, handle)
        else:
            with pytest.raises(grpc.RpcError) as caught:
                synchronize(writer, handle)
            assert reason(caught.value) == "CL_CKPT_ERR_BAD_OPERATION"
        assert writer.read(handle, b"s") == b"Second"
    assert read_value(c.address, name, b"s") == b"Second"
    # An error answered through another node is the active's, and wrote nothing.
    with client(c.address) as other:
        handle = other.open(name, flags=RW)
        with pytest.raises(grpc.RpcError) as caught:
            other.create_section(handle, b"s", b"again")
        assert reason(caught.value) == "CL_ERR_ALREADY_EXIST"
        with pytest.raises(grpc.RpcError) as caught:
            other.stub.CheckpointWrite(
                pb.CheckpointWriteRequest(
                    checkpoint_handle=handle,
                    io_vector=[
                        t.IOVectorElement(section_id=sid(b"s"), data_buffer=b"x", data_offset=0),
                        t.IOVectorElement(section_id=sid(b"nope"), data_buffer=b"y"),
                    ],
                )
            )
        assert reason(caught.value) == "CL_CKPT_ERR_NOT_EXIST"
        assert other.read(handle, b"s") == b"Second"


def test_status_iteration_and_expiry_behave_the_same_through_every_node(
    cluster: CpsCluster,
) -> None:
    a, b, _c = cluster.nodes
    create(a.address, "status", ASYNC)
    with client(b.address) as writer:
        handle = writer.open("status", flags=RW)
        writer.create_section(handle, b"keep", b"12345")
        soon = t.ExpirationTime(at=_timestamp(time.time() + 1.0))
        writer.create_section(handle, b"soon", b"x", expiration_time=soon)
    for node in cluster.nodes:
        with client(node.address) as reader:
            handle = reader.open("status", flags=RW)
            status = reader.stub.CheckpointStatusGet(
                pb.CheckpointStatusGetRequest(checkpoint_handle=handle)
            ).checkpoint_status
            assert status.number_of_sections in (1, 2)  # "soon" may be gone already
            ids = _iterate(reader, handle)
            assert b"keep" in ids
    # The active's timer expires the section: gone through every node.
    wait_for(lambda: all(b"soon" not in _ids_via(n.address) for n in cluster.nodes), 10, "expiry")


def test_collocated_checkpoint_has_no_active_until_active_replica_set(
    cluster: CpsCluster, etcd_cluster: EtcdCluster
) -> None:
    a, b, c = cluster.nodes
    create(a.address, "colloc", COLLOCATED)
    assert active_node(etcd_cluster.endpoints, cluster, "colloc") is None
    with client(c.address) as writer:
        handle = writer.open("colloc", flags=RW)
        with pytest.raises(grpc.RpcError) as caught:
            writer.create_section(handle, b"s", b"x")
        assert reason(caught.value) == "CL_CKPT_ERR_NOT_EXIST"
    with client(b.address) as app:
        handle = app.open("colloc", flags=RW)
        app.stub.ActiveReplicaSet(pb.ActiveReplicaSetRequest(checkpoint_handle=handle))
        assert active_node(etcd_cluster.endpoints, cluster, "colloc") == 1
        app.create_section(handle, b"s", b"on b")
    assert read_value(c.address, "colloc", b"s") == b"on b"
    with client(c.address) as app:
        handle = app.open("colloc", flags=RW)
        app.stub.ActiveReplicaSet(pb.ActiveReplicaSetRequest(checkpoint_handle=handle))
        assert active_node(etcd_cluster.endpoints, cluster, "colloc") == 2
        assert app.read(handle, b"s") == b"on b"  # caught up before serving
        overwrite(app, handle, b"s", b"on c")
    assert read_value(a.address, "colloc", b"s") == b"on c"
    data = record(etcd_cluster.endpoints, cluster, "colloc")
    assert data is not None and data["epoch"] == 2


@pytest.mark.parametrize("flags", [SYNC, ASYNC], ids=["sync", "async"])
def test_notifications_reach_sessions_on_every_node(
    cluster: CpsCluster, flags: tuple[int, ...]
) -> None:
    a, b, c = cluster.nodes
    name = f"notified-{flags[0]}"
    create(a.address, name, flags)
    arrived: queue.Queue[pb.Callback] = queue.Queue()
    with client(c.address) as watcher, client(b.address) as writer:
        watched = watcher.open(name, flags=RW)
        watcher.stub.ImmediateConsumptionRegister(
            pb.ImmediateConsumptionRegisterRequest(checkpoint_handle=watched)
        )
        stream = watcher.stub.Callbacks(pb.CallbacksRequest(service_handle=watcher.session))

        def read_stream() -> None:
            with contextlib.suppress(grpc.RpcError):
                for message in stream:
                    for callback in message.callbacks:
                        arrived.put(callback)

        threading.Thread(target=read_stream, daemon=True).start()
        handle = writer.open(name, flags=RW)
        writer.create_section(handle, b"s", b"1")
        overwrite(writer, handle, b"s", b"2")
        changes: list[tuple[bytes, int]] = []
        deadline = time.monotonic() + 10
        while len(changes) < 2 and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                callback = arrived.get(timeout=0.5)
                assert callback.notification.checkpoint_handle == watched
                changes += [
                    (s.section_id.id, s.change) for s in callback.notification.changed_sections
                ]
        stream.cancel()
    assert changes == [
        (b"s", t.SECTION_CHANGE_CREATED),
        (b"s", t.SECTION_CHANGE_OVERWRITTEN),
    ]


def test_retention_starts_when_the_last_handle_anywhere_closes(
    cluster: CpsCluster, etcd_cluster: EtcdCluster
) -> None:
    a, _b, c = cluster.nodes
    zero = t.RetentionDuration(duration=_duration(0))
    with client(a.address) as first, client(c.address) as second:
        mine = first.open("retained", attributes(flags=ASYNC, retention=zero))
        theirs = second.open("retained", flags=RW)
        first.stub.CheckpointClose(pb.CheckpointCloseRequest(checkpoint_handle=mine))
        time.sleep(0.5)
        assert record(etcd_cluster.endpoints, cluster, "retained") is not None  # c still has it
        second.create_section(theirs, b"s", b"still here")
        second.stub.CheckpointClose(pb.CheckpointCloseRequest(checkpoint_handle=theirs))
    wait_for(lambda: record(etcd_cluster.endpoints, cluster, "retained") is None, 10, "retention")


def test_a_dead_session_node_closes_its_handles(
    cluster: CpsCluster, etcd_cluster: EtcdCluster
) -> None:
    """Not a fault test: the sessions of a finalized client on another node
    count no more (Finalize there closes them cluster-wide)."""
    a, b, _c = cluster.nodes
    zero = t.RetentionDuration(duration=_duration(0))
    with client(a.address) as creator:
        handle = creator.open("finalized", attributes(flags=ASYNC, retention=zero))
        with client(b.address) as other:
            other.open("finalized", flags=RW)
            creator.stub.CheckpointClose(pb.CheckpointCloseRequest(checkpoint_handle=handle))
            time.sleep(0.3)
            assert record(etcd_cluster.endpoints, cluster, "finalized") is not None
            other.stub.Finalize(pb.FinalizeRequest(service_handle=other.session))
    wait_for(lambda: record(etcd_cluster.endpoints, cluster, "finalized") is None, 10, "finalize")


def test_delete_unlinks_through_any_node_and_openers_keep_the_instance(
    cluster: CpsCluster, etcd_cluster: EtcdCluster
) -> None:
    a, _b, c = cluster.nodes
    with client(a.address) as owner, client(c.address) as deleter:
        handle = owner.open("unlinked", attributes(flags=SYNC))
        owner.create_section(handle, b"s", b"old")
        deleter.stub.CheckpointDelete(
            pb.CheckpointDeleteRequest(service_handle=deleter.session, checkpoint_name="unlinked")
        )
        assert record(etcd_cluster.endpoints, cluster, "unlinked") is None
        with pytest.raises(grpc.RpcError) as caught:
            deleter.open("unlinked", flags=RW)
        assert reason(caught.value) == "CL_CKPT_ERR_NOT_EXIST"
        fresh = deleter.open("unlinked", attributes(flags=ASYNC))  # a new instance
        assert owner.read(handle, b"s") == b"old"  # the old one lives on for its opener
        with pytest.raises(grpc.RpcError) as caught:
            deleter.read(fresh, b"s")
        assert reason(caught.value) == "CL_CKPT_ERR_NOT_EXIST"


def _ids_via(address: str) -> list[bytes]:
    with client(address) as reader:
        return _iterate(reader, reader.open("status", flags=RW))


def _iterate(reader: Client, handle: int) -> list[bytes]:
    iteration = reader.stub.SectionIterationInitialize(
        pb.SectionIterationInitializeRequest(
            checkpoint_handle=handle, sections_chosen=t.SECTIONS_CHOSEN_ANY
        )
    ).section_iteration_handle
    ids: list[bytes] = []
    while True:
        response = reader.stub.SectionIterationNext(
            pb.SectionIterationNextRequest(section_iteration_handle=iteration)
        )
        if response.no_more_sections:
            return ids
        ids.append(response.section_descriptor.section_id.id)


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def _duration(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(int(seconds * 1e9))
    return duration


def test_data_writes_do_not_write_etcd(cluster: CpsCluster, etcd_cluster: EtcdCluster) -> None:
    """etcd is written on create, delete, ActiveReplicaSet, failover and
    in-sync changes only: 300 writes of every mode, through the active and
    through another node, move etcd's revision by at most the two in-sync
    changes a backup slowed by this busy machine may cause (drop, rejoin)."""
    a, b, _ = cluster.nodes
    names = {flags[0]: f"quiet-{flags[0]}" for flags in (SYNC, ASYNC, WEAK)}
    for flags in (SYNC, ASYNC, WEAK):
        create(a.address, names[flags[0]], flags)
    handles = []
    channels = contextlib.ExitStack()
    for node in (a, b):
        session = Client(channels.enter_context(grpc.insecure_channel(node.address)))
        for name in names.values():
            handle = session.open(name, flags=RW)
            with contextlib.suppress(grpc.RpcError):  # the second node finds it made
                session.create_section(handle, b"s", b"0")
            handles.append((session, handle))
    before = _etcd_revision(etcd_cluster)
    for i in range(50):
        for session, handle in handles:
            overwrite(session, handle, b"s", str(i).encode())
    after = _etcd_revision(etcd_cluster)
    channels.close()
    assert after - before <= 2, f"{after - before} etcd revisions for 300 writes"


def _etcd_revision(etcd_cluster: EtcdCluster) -> int:
    async def read() -> int:
        async with await Etcd.connect(etcd_cluster.endpoints) as etcd:
            return (await etcd.status()).revision

    return asyncio.run(read())
