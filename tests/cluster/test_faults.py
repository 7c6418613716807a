"""Faults of real processes: kill -9, SIGSTOP/SIGCONT past the lease TTL,
a node cut off from etcd only (through TCP proxies), a restarted node, an
etcd member killed. Invariants: every acknowledged synchronous write is
readable afterwards from the survivors (asynchronous ones up to their last
completed Synchronize), never two actives for one checkpoint at one epoch,
the replica count comes back.

Each test starts its own 3 (or 4) cps-server processes with a lease TTL of
2 s over the module's 3-member etcd; `make test-faults` runs this file
five times in a row.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import grpc
import pytest

from cps.v1 import checkpoint_service_pb2 as pb
from cps.v1 import types_pb2 as t
from tests.cluster.harness import CpsCluster, EtcdCluster, TcpProxy, cps_cluster
from tests.cluster.helpers import (
    ASYNC,
    SYNC,
    WEAK,
    Writer,
    active_node,
    assert_one_active_per_epoch,
    client,
    create,
    overwrite,
    read_value,
    reason,
    record,
    wait_for,
)
from tests.support import RW, Client, sid

TTL = 2.0
FLAGS = ("--lease-ttl", "2", "--replica-timeout-seconds", "0.5")


@pytest.fixture()
def cluster(etcd_cluster: EtcdCluster) -> Iterator[CpsCluster]:
    with cps_cluster(etcd_cluster.endpoints, 3, FLAGS) as running:
        yield running


def _survivor_value(cluster: CpsCluster, name: str, section: bytes) -> int:
    for node in cluster.nodes:
        if node.running and not node.paused:
            return int(read_value(node.address, name, section) or b"0")
    raise AssertionError("no node left")


def _in_sync_count(etcd: EtcdCluster, cluster: CpsCluster, name: str) -> int:
    data = record(etcd.endpoints, cluster, name)
    return 0 if data is None else len(data["in_sync"])


def test_kill_9_of_the_active_under_writes_loses_no_acknowledged_write(
    cluster: CpsCluster, etcd_cluster: EtcdCluster
) -> None:
    a, b, _c = cluster.nodes
    create(a.address, "killed-sync", SYNC)
    create(a.address, "killed-async", ASYNC)
    for name in ("killed-sync", "killed-async"):
        with client(a.address) as setup:
            handle = setup.open(name, flags=RW)
            for node in cluster.nodes:
                setup.create_section(handle, node.name.encode(), b"0")
    writers = {
        (name, node.name): Writer(
            node.address,
            name,
            node.name.encode(),
            synchronize_every=0 if name == "killed-sync" else 5,
        ).start()
        for name in ("killed-sync", "killed-async")
        for node in cluster.nodes
    }
    wait_for(lambda: all(w.acked >= 20 for w in writers.values()), 20, "writes under way")
    a.kill()
    acked_at_kill = {key: (w.acked, w.synchronized) for key, w in writers.items()}
    # The first write acknowledged by the successor, through a survivor.
    survivor_writer = writers[("killed-sync", b.name)]
    before = survivor_writer.acked
    failover = wait_for(
        lambda: (
            active_node(etcd_cluster.endpoints, cluster, "killed-sync") in (1, 2)
            and survivor_writer.acked > before
        ),
        4 * TTL,
        "failover",
    )
    wait_for(
        lambda: all(w.acked > acked_at_kill[k][0] for k, w in writers.items() if k[1] != a.name),
        10,
        "writes resume",
    )
    for writer in writers.values():
        writer.finish()
    assert failover < 2 * TTL, f"failover took {failover:.2f}s"
    for (name, through), writer in writers.items():
        value = _survivor_value(cluster, name, writer.section)
        if name == "killed-sync":
            assert value >= writer.acked, (name, through, value, writer.acked)
        else:
            assert value >= writer.synchronized, (name, through, value, writer.synchronized)
        if through != a.name:
            assert value <= writer.acked + 1, (name, through, value, writer.acked)
    assert active_node(etcd_cluster.endpoints, cluster, "killed-sync") in (1, 2)
    # The replica count comes back (the third node takes the lost replica).
    wait_for(lambda: _in_sync_count(etcd_cluster, cluster, "killed-sync") == 2, 10, "in sync")
    assert_one_active_per_epoch(cluster)


def test_a_paused_active_steps_down_and_its_late_writes_are_refused(
    cluster: CpsCluster, etcd_cluster: EtcdCluster
) -> None:
    a, b, _c = cluster.nodes
    create(a.address, "paused", SYNC)
    with client(a.address) as setup:
        handle = setup.open("paused", flags=RW)
        setup.create_section(handle, b"a", b"0")
        setup.create_section(handle, b"b", b"0")
    on_active = Writer(a.address, "paused", b"a").start()
    on_other = Writer(b.address, "paused", b"b").start()
    wait_for(lambda: on_active.acked > 10 and on_other.acked > 10, 20, "writes under way")
    a.pause()
    wait_for(
        lambda: active_node(etcd_cluster.endpoints, cluster, "paused") in (1, 2),
        4 * TTL,
        "failover while paused",
    )
    acked_before = on_other.acked
    wait_for(lambda: on_other.acked > acked_before, 10, "writes through the new active")
    paused_acked = on_active.acked
    a.cont()
    # The old active learns it was deposed; writes through it now reach the
    # new active (the old one no longer accepts any as active).
    wait_for(lambda: on_active.acked > paused_acked, 15, "the old node forwards")
    on_active.finish()
    on_other.finish()
    assert _survivor_value(cluster, "paused", b"a") >= on_active.acked
    assert _survivor_value(cluster, "paused", b"b") >= on_other.acked
    deposed = [e for e in a.log_entries() if e.get("msg") == "no longer active"]
    assert deposed, "the paused active never stepped down"
    assert_one_active_per_epoch(cluster)
    a.wait_serving()


def test_an_active_cut_off_from_etcd_only_stops_and_is_taken_over(
    etcd_cluster: EtcdCluster,
) -> None:
    proxies = [TcpProxy(endpoint) for endpoint in etcd_cluster.endpoints]
    for proxy in proxies:
        proxy.start()
    try:
        with CpsCluster(etcd_cluster.endpoints, 3, FLAGS) as cluster:
            a, b, _c = cluster.nodes
            for node in cluster.nodes:
                node.kill()
            a.etcd_endpoints = ",".join(proxy.address for proxy in proxies)
            for node in cluster.nodes:
                node.start(wait=False)
            for node in cluster.nodes:
                node.wait_serving()
            create(a.address, "cut", SYNC)
            with client(a.address) as setup:
                handle = setup.open("cut", flags=RW)
                setup.create_section(handle, b"s", b"0")
            writer = Writer(b.address, "cut", b"s").start()
            wait_for(lambda: writer.acked > 10, 20, "writes under way")
            for proxy in proxies:
                proxy.cut("blackhole")  # a's peers still reach it; etcd does not
            wait_for(
                lambda: active_node(etcd_cluster.endpoints, cluster, "cut") in (1, 2),
                6 * TTL,
                "failover",
            )
            before = writer.acked
            wait_for(lambda: writer.acked > before + 5, 10, "writes through the new active")
            # a knows it may no longer act: it answers TRY_AGAIN, not as active.
            with client(a.address) as direct:
                with pytest.raises(grpc.RpcError) as caught:
                    direct.open("cut", flags=RW)
                    handle = direct.open("cut", flags=RW)
                    overwrite(direct, handle, b"s", b"from a", timeout=5)
                assert reason(caught.value) in ("CL_ERR_TRY_AGAIN", "CL_ERR_TIMEOUT")
            assert a.health() != 1
            for proxy in proxies:
                proxy.restore()
            a.wait_serving(20)  # it joins again
            writer.finish()
            assert _survivor_value(cluster, "cut", b"s") >= writer.acked
            assert_one_active_per_epoch(cluster)
    finally:
        for proxy in proxies:
            proxy.close()


def test_a_restarted_node_catches_up_and_serves(
    cluster: CpsCluster, etcd_cluster: EtcdCluster
) -> None:
    a, _b, _c = cluster.nodes
    create(a.address, "restarted", SYNC)
    with client(a.address) as setup:
        handle = setup.open("restarted", flags=RW)
        setup.create_section(handle, b"s", b"before")
    data = record(etcd_cluster.endpoints, cluster, "restarted")
    assert data is not None
    backup = next(n for n in cluster.nodes if n.name == data["replicas"][1]["node"])
    spare = next(n for n in cluster.nodes if n not in (a, backup))
    backup.kill()
    # The replica count comes back on the spare node, caught up.
    wait_for(
        lambda: (
            {
                m["node"]
                for m in (record(etcd_cluster.endpoints, cluster, "restarted") or {}).get(
                    "in_sync", []
                )
            }
            == {a.name, spare.name}
        ),
        10,
        "replica re-created",
    )
    backup.start()  # a new incarnation: it holds nothing of the old one
    assert backup.health() == 1
    with client(a.address) as writer:
        handle = writer.open("restarted", flags=RW)
        overwrite(writer, handle, b"s", b"after")
    assert read_value(backup.address, "restarted", b"s") == b"after"
    # Lose the active too: the restarted node may become a replica and serve.
    a.kill()
    wait_for(
        lambda: (
            active_node(etcd_cluster.endpoints, cluster, "restarted") is not None
            and active_node(etcd_cluster.endpoints, cluster, "restarted") != 0
        ),
        10,
        "failover",
    )
    wait_for(lambda: _in_sync_count(etcd_cluster, cluster, "restarted") == 2, 10, "replicas back")
    assert read_value(backup.address, "restarted", b"s") == b"after"
    assert_one_active_per_epoch(cluster)


def test_the_cluster_rides_out_the_loss_of_an_etcd_member(
    cluster: CpsCluster, etcd_cluster: EtcdCluster
) -> None:
    a, b, c = cluster.nodes
    create(a.address, "etcd-loss", SYNC)
    with client(b.address) as setup:
        handle = setup.open("etcd-loss", flags=RW)
        setup.create_section(handle, b"s", b"0")
    writer = Writer(c.address, "etcd-loss", b"s").start()
    wait_for(lambda: writer.acked > 10, 20, "writes under way")
    leader = etcd_cluster.leader_index()
    etcd_cluster.kill(leader)
    try:
        before = writer.acked
        wait_for(lambda: writer.acked > before + 20, 10, "writes go on")
        create(b.address, "etcd-loss-new", ASYNC)  # the directory still changes
        a.kill()  # and failover still works with two etcd members
        before = writer.acked
        wait_for(lambda: writer.acked > before + 5, 4 * TTL, "failover with 2 etcd members")
        writer.finish()
        assert _survivor_value(cluster, "etcd-loss", b"s") >= writer.acked
        assert_one_active_per_epoch(cluster)
    finally:
        etcd_cluster.restart(leader)


def test_four_nodes_three_replicas_keep_three_after_a_loss(etcd_cluster: EtcdCluster) -> None:
    with cps_cluster(etcd_cluster.endpoints, 4, (*FLAGS, "--replicas", "3")) as cluster:
        a = cluster.nodes[0]
        create(a.address, "three", SYNC)
        with client(a.address) as setup:
            handle = setup.open("three", flags=RW)
            setup.create_section(handle, b"s", b"kept")
        wait_for(lambda: _in_sync_count(etcd_cluster, cluster, "three") == 3, 10, "3 in sync")
        a.kill()
        wait_for(
            lambda: active_node(etcd_cluster.endpoints, cluster, "three") not in (None, 0),
            4 * TTL,
            "failover",
        )
        wait_for(lambda: _in_sync_count(etcd_cluster, cluster, "three") == 3, 10, "3 again")
        data = record(etcd_cluster.endpoints, cluster, "three")
        assert data is not None
        assert a.name not in {m["node"] for m in data["replicas"]}
        for node in cluster.nodes[1:]:
            assert read_value(node.address, "three", b"s") == b"kept"
        assert_one_active_per_epoch(cluster)


def test_an_interrupted_weak_write_leaves_its_sections_corrupted(
    etcd_cluster: EtcdCluster,
) -> None:
    """WR_ACTIVE_REPLICA_WEAK: a write travels element by element; here the
    active dies (a failpoint) once the backup applied the first element of
    a two-element write, so the backup, promoted, holds half of it."""
    mib = 1024 * 1024
    with CpsCluster(etcd_cluster.endpoints, 2, FLAGS) as cluster:
        a, b = cluster.nodes
        a.kill()
        a.env["CPS_FAILPOINTS"] = "exit-after-first-weak-part"
        a.start()
        big = {"max_section_size": 4 * mib, "max_sections": 4}
        create(a.address, "weak", WEAK, **big)
        with client(a.address) as writer:
            handle = writer.open("weak", flags=RW)
            writer.create_section(handle, b"s1", b"old")
            writer.create_section(handle, b"s2", b"old")
            with contextlib.suppress(grpc.RpcError):  # answered, or the node died first
                writer.stub.CheckpointWrite(
                    pb.CheckpointWriteRequest(
                        checkpoint_handle=handle,
                        io_vector=[
                            t.IOVectorElement(section_id=sid(b"s1"), data_buffer=b"N" * 3 * mib),
                            t.IOVectorElement(section_id=sid(b"s2"), data_buffer=b"N" * 3 * mib),
                        ],
                    ),
                    timeout=10,
                )
        wait_for(lambda: not a.running, 10, "the failpoint ends the active")
        wait_for(lambda: active_node(etcd_cluster.endpoints, cluster, "weak") == 1, 4 * TTL, "b")
        with client(b.address) as reader:
            handle = reader.open("weak", flags=RW)
            assert _chosen(reader, handle, t.SECTIONS_CHOSEN_CORRUPTED) == [b"s1"]
            assert reader.read(handle, b"s1") == b"N" * 3 * mib
            assert reader.read(handle, b"s2") == b"old"
            overwrite(reader, handle, b"s1", b"repaired")  # VALID again
            assert _chosen(reader, handle, t.SECTIONS_CHOSEN_CORRUPTED) == []


def _chosen(reader: Client, handle: int, chosen: int) -> list[bytes]:
    iteration = reader.stub.SectionIterationInitialize(
        pb.SectionIterationInitializeRequest(
            checkpoint_handle=handle,
            sections_chosen=chosen,  # type: ignore[arg-type]
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
