"""The metrics of a cluster, scraped from real cps-server processes: a kill
-9 of an active shows in the survivors' metrics as an epoch change, a
takeover and a director's failover, and the survivors' replication link to
it goes down; the peer service's calls are counted like the others; a node
that has not joined answers /healthz but not /readyz."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from grpc_health.v1 import health_pb2

from tests.cluster.harness import CpsCluster, EtcdCluster
from tests.cluster.harness.cps_cluster import CpsNode
from tests.cluster.harness.etcd_cluster import free_ports
from tests.cluster.helpers import SYNC, client, create, wait_for
from tests.service.test_metrics import Samples, get, scrape, value
from tests.support import RW

# Every node holds every checkpoint: each active has a link to both others.
FLAGS = ("--lease-ttl", "2", "--replica-timeout-seconds", "0.5", "--replicas", "3")
PEER_SERVICE = "cps.peer.v1.PeerService"


def _with_metrics(node: CpsNode, port: int) -> None:
    node.env["CPS_METRICS_LISTEN"] = f"127.0.0.1:{port}"


@pytest.fixture()
def cluster(etcd_cluster: EtcdCluster) -> Iterator[tuple[CpsCluster, list[int]]]:
    running = CpsCluster(etcd_cluster.endpoints, 3, FLAGS)
    ports = free_ports(3)
    for node, port in zip(running.nodes, ports, strict=True):
        _with_metrics(node, port)
    with running:
        yield running, ports


def _samples(port: int) -> Samples:
    return scrape(port)[1]


def _total(ports: list[int], name: str) -> float:
    return sum(value(_samples(port), name) for port in ports)


def test_a_killed_active_shows_as_a_failover_in_the_survivors_metrics(
    cluster: tuple[CpsCluster, list[int]],
) -> None:
    running, ports = cluster
    a, b, _c = running.nodes
    survivors = ports[1:]
    for node, name in ((a, "on-a"), (b, "on-b")):
        create(node.address, name, SYNC)
        with client(node.address) as c:
            handle = c.open(name, flags=RW)
            c.create_section(handle, b"s", b"1")
    # b is the active of on-b: its link to a is up.
    wait_for(
        lambda: value(_samples(ports[1]), "cps_peer_connected", peer=a.name) == 1,
        10,
        "b's link to a",
    )
    samples = _samples(ports[1])
    assert value(samples, "cps_cluster_members") == 3
    assert value(samples, "cps_active_checkpoints") == 1
    assert value(samples, "cps_checkpoints") == 2
    assert value(samples, "cps_replication_lag_operations", peer=a.name, mode="sync") == 0
    assert value(samples, "cps_replication_pending_bytes", peer=a.name) == 0
    # The peer service is counted like the client services.
    replicate = {"grpc_service": PEER_SERVICE, "grpc_method": "Replicate"}
    assert value(samples, "grpc_server_started_total", **replicate, grpc_type="bidi_stream") >= 1
    before = {
        name: _total(survivors, name)
        for name in ("cps_epoch_changes_total", "cps_takeovers_total", "cps_failovers_total")
    }
    epochs_before = [value(_samples(port), "cps_epoch_changes_total") for port in survivors]

    a.kill()

    def failed_over() -> bool:
        return all(_total(survivors, name) > count for name, count in before.items()) and all(
            value(_samples(port), "cps_epoch_changes_total") > seen
            for port, seen in zip(survivors, epochs_before, strict=True)
        )

    wait_for(failed_over, 15, "the failover in the survivors' metrics")
    # One checkpoint lost its active: one survivor took it over, as the director decided.
    assert _total(survivors, "cps_takeovers_total") - before["cps_takeovers_total"] == 1
    assert _total(survivors, "cps_failovers_total") - before["cps_failovers_total"] == 1
    assert _total(survivors, "cps_active_checkpoints") == 2
    # b's link to a is down (then gone, once a left the membership).
    wait_for(
        lambda: value(_samples(ports[1]), "cps_peer_connected", peer=a.name) == 0,
        10,
        "b's link to a down",
    )
    wait_for(lambda: value(_samples(ports[1]), "cps_cluster_members") == 2, 10, "a left")
    for port in survivors:
        assert get(port, "/readyz")[0] == 200


def test_a_node_that_has_not_joined_is_alive_but_not_ready(
    cluster: tuple[CpsCluster, list[int]],
) -> None:
    running, _ = cluster
    node_port, metrics_port, dead_etcd = free_ports(3)
    lonely = CpsNode(running, len(running.nodes), node_port)
    running.nodes.append(lonely)  # killed with the others
    lonely.etcd_endpoints = f"127.0.0.1:{dead_etcd}"  # nothing listens there
    _with_metrics(lonely, metrics_port)
    lonely.start(wait=False)

    def answers() -> bool:
        try:
            return get(metrics_port, "/healthz")[0] == 200
        except OSError:
            return False

    wait_for(answers, 15, "the endpoint of the node that cannot join")
    assert get(metrics_port, "/readyz")[0] == 503
    assert lonely.health() == health_pb2.HealthCheckResponse.NOT_SERVING
    assert value(_samples(metrics_port), "cps_lease_valid") == 0
