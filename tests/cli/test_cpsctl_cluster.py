"""`cpsctl` against a real 3-node cluster over a real 3-member etcd: the
nodes with their roles and leases, the placement of a checkpoint's replicas
and its replication lag, sections and data through a node that holds no
replica, and the placement after its active node is killed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.cli.support import as_json, cpsctl, ok
from tests.cluster.harness import CpsCluster, EtcdCluster, cps_cluster
from tests.cluster.helpers import ASYNC, SYNC, client, create, wait_for
from tests.support import RW


@pytest.fixture(scope="module")
def etcd_cluster() -> Iterator[EtcdCluster]:
    with EtcdCluster(size=3) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def cluster(etcd_cluster: EtcdCluster) -> Iterator[CpsCluster]:
    with cps_cluster(etcd_cluster.endpoints, 3) as running:
        yield running


def test_nodes_roles_and_leases(cluster: CpsCluster) -> None:
    a = cluster.nodes[0]
    nodes = as_json(a.address, "nodes")
    assert [n["name"] for n in nodes] == ["n0", "n1", "n2"]
    assert [n["address"] for n in nodes] == [node.address for node in cluster.nodes]
    assert sum(n["role"] == "DIRECTOR" for n in nodes) == 1
    assert {n["role"] for n in nodes} <= {"DIRECTOR", "MEMBER"}
    me = next(n for n in nodes if n["answering"])
    assert me["name"] == "n0" and me["state"] == "SERVING"
    assert me["lease_id"] != 0 and 0 < me["lease_remaining_seconds"] <= 3
    assert me["directory_revision"] > 0
    others = [n for n in nodes if not n["answering"]]
    assert {n["state"] for n in others} == {"LIVE"} and all(n["lease_id"] for n in others)
    table = ok(a.address, "nodes")
    assert "DIRECTOR" in table and "n0 *" in table


def _placed(address: str, name: str) -> dict[str, Any]:
    info = as_json(address, "status", name)
    assert isinstance(info, dict)
    return info


def test_placement_lag_and_data_through_any_node(cluster: CpsCluster) -> None:
    a, b, c = cluster.nodes
    create(a.address, "cli-sync", SYNC, max_sections=4)
    create(a.address, "cli-async", ASYNC, max_sections=4)
    with client(b.address) as writer:
        handle = writer.open("cli-async", flags=RW)
        writer.create_section(handle, b"s", b"through b")
    info = _placed(a.address, "cli-async")
    assert info["active"] == "n0" and info["epoch"] == 1
    assert len(info["replicas"]) == 2 and sorted(info["in_sync"]) == sorted(
        r["node"] for r in info["replicas"]
    )
    active, backup = info["replicas"]
    assert active["node"] == "n0" and active["active"] and active["lag"] == 0
    assert not backup["active"]

    def caught_up() -> bool:
        replicas = _placed(a.address, "cli-async")["replicas"]
        return bool(
            replicas[1]["lag"] == 0 and replicas[1]["applied_seq"] == replicas[0]["applied_seq"]
        )

    wait_for(caught_up, 10, "the backup acknowledged every operation")
    # Every node lists both, with the same placement.
    for node in cluster.nodes:
        listed = {c["name"]: c for c in as_json(node.address, "ls", "cli-")}
        assert set(listed) == {"cli-async", "cli-sync"}
        assert listed["cli-async"]["active"] == "n0"
        assert [r["node"] for r in listed["cli-async"]["replicas"]] == [
            r["node"] for r in info["replicas"]
        ]
    # A node that holds no replica answers from the record in the list, and
    # asks the active for the details.
    spare = next(n for n in cluster.nodes if n.name not in {r["node"] for r in info["replicas"]})
    (from_spare,) = as_json(spare.address, "ls", "cli-async")
    assert from_spare["source"] == "record"
    detail = _placed(spare.address, "cli-async")
    assert detail["source"] == "active_replica" and detail["sections"] == 1
    assert all(r["lag"] is None for r in detail["replicas"])  # only the active knows
    sections = as_json(spare.address, "sections", "cli-async")
    assert [s["id"] for s in sections] == ["s"]
    assert ok(spare.address, "read", "cli-async", "s") == "through b\n"
    ok(c.address, "write", "cli-async", "s", "through c")
    assert ok(b.address, "read", "cli-async", "s") == "through c\n"
    table = ok(b.address, "ls")
    assert "cli-async" in table and "n0" in table and "sync" in table


def test_placement_after_the_active_is_killed(cluster: CpsCluster) -> None:
    a = cluster.nodes[0]
    create(a.address, "cli-failover", ASYNC, max_sections=2)
    before = _placed(a.address, "cli-failover")
    assert before["active"] == "n0"
    a.kill()
    # The dead node first in the list: the next one that answers is used.
    endpoints = cluster.addresses

    def moved() -> bool:
        result = cpsctl(endpoints, "--json", "status", "cli-failover")
        return result.returncode == 0 and '"active": "n0"' not in result.stdout

    wait_for(moved, 30, "a new active replica")
    after = _placed(endpoints, "cli-failover")
    backup = next(r["node"] for r in before["replicas"] if not r["active"])
    assert after["active"] == backup and after["epoch"] == before["epoch"] + 1
    assert "n0" not in [r["node"] for r in after["replicas"]]
    nodes = as_json(endpoints, "nodes")
    assert "n0" not in [n["name"] for n in nodes]
    health = cpsctl(endpoints, "--json", "health")
    assert health.returncode == 1  # n0 is unreachable, the others serve
