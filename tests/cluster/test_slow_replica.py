"""A backup that stops answering (SIGSTOP): synchronous writes go on once
it has left the in-sync set (never acknowledged without it before), an
unrelated asynchronous checkpoint never waits for it, and it comes back
into the in-sync set once it holds everything again."""

from __future__ import annotations

import time

from tests.cluster.harness import CpsCluster, EtcdCluster, cps_cluster
from tests.cluster.helpers import (
    ASYNC,
    SYNC,
    Writer,
    active_node,
    client,
    create,
    overwrite,
    read_value,
    record,
    wait_for,
)
from tests.support import RW

FLAGS = ("--lease-ttl", "6", "--replica-timeout-seconds", "0.5")


def _in_sync(etcd: EtcdCluster, cluster: CpsCluster, name: str) -> set[str]:
    data = record(etcd.endpoints, cluster, name)
    return set() if data is None else {m["node"] for m in data["in_sync"]}


def test_a_paused_backup_leaves_the_in_sync_set_and_comes_back(
    etcd_cluster: EtcdCluster,
) -> None:
    with cps_cluster(etcd_cluster.endpoints, 3, FLAGS) as cluster:
        a = cluster.nodes[0]
        create(a.address, "slow-sync", SYNC)
        create(a.address, "fast-async", ASYNC)
        with client(a.address) as setup:
            for name in ("slow-sync", "fast-async"):
                handle = setup.open(name, flags=RW)
                setup.create_section(handle, b"s", b"0")
        data = record(etcd_cluster.endpoints, cluster, "slow-sync")
        assert data is not None
        backup = next(n for n in cluster.nodes if n.name == data["replicas"][1]["node"])
        writer = Writer(a.address, "slow-sync", b"s").start()
        wait_for(lambda: writer.acked > 10, 20, "writes under way")
        backup.pause()
        try:
            # While a synchronous write waits for the paused backup, the
            # asynchronous checkpoint answers at once.
            with client(a.address) as other:
                handle = other.open("fast-async", flags=RW)
                slowest = 0.0
                for value in range(20):
                    started = time.monotonic()
                    overwrite(other, handle, b"s", str(value).encode())
                    slowest = max(slowest, time.monotonic() - started)
            assert slowest < 0.25, f"an asynchronous write waited {slowest:.2f}s"
            wait_for(
                lambda: backup.name not in _in_sync(etcd_cluster, cluster, "slow-sync"),
                5,
                "the paused backup leaves the in-sync set",
            )
            before = writer.acked
            wait_for(lambda: writer.acked > before + 20, 5, "synchronous writes go on")
        finally:
            backup.cont()
        wait_for(
            lambda: backup.name in _in_sync(etcd_cluster, cluster, "slow-sync"),
            15,
            "the backup comes back into the in-sync set",
        )
        writer.finish()
        # It holds every acknowledged write: kill the active and read there.
        a.kill()
        wait_for(
            lambda: active_node(etcd_cluster.endpoints, cluster, "slow-sync") not in (None, 0),
            15,
            "failover",
        )
        assert int(read_value(backup.address, "slow-sync", b"s")) >= writer.acked
