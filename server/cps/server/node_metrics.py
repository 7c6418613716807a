"""What a node's metrics endpoint reads of the node when scraped (nothing
kept up to date on the call path), and its readiness as grpc.health.v1
reports it. Part of the composition root: it reads every layer."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NoReturn

from grpc_health.v1 import health_pb2
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .core.types import CreationAttributes

if TYPE_CHECKING:
    from .cluster_parts import ClusterParts
    from .node import Node


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, value=value)


def _mode(attributes: CreationAttributes) -> str:
    if attributes.synchronous:
        return "sync"
    return "weak" if attributes.weak else "async"


class NodeCollector(Collector):
    """The node's state as gauges and counters, read at scrape time."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        sessions, replicas, library = node.sessions, node.replicas, node.library
        yield _gauge("cps_sessions", "Open sessions.", len(sessions.sessions))
        yield _gauge("cps_checkpoint_handles", "Open checkpoint handles.", len(sessions.handles))
        yield _gauge(
            "cps_checkpoints",
            "Server checkpoint replicas held by this node, active or backup.",
            len(replicas.by_ref),
        )
        yield _gauge(
            "cps_active_checkpoints",
            "Server checkpoints this node serves as their active replica.",
            len(node.active.serving),
        )
        yield _gauge(
            "cps_sections",
            "Sections in the server checkpoint replicas held.",
            sum(len(replica.sections) for replica in replicas.by_ref.values()),
        )
        yield _gauge(
            "cps_section_bytes",
            "Bytes of section data in the server checkpoint replicas held.",
            replicas.section_bytes(),
        )
        yield _gauge(
            "cps_reserved_bytes",
            "Sum of checkpoint_size of the replicas held and bytes the library checkpoints "
            "hold (limit: --max-reserved-bytes).",
            replicas.reserved_bytes + library.bytes,
        )
        yield _gauge("cps_library_checkpoints", "Library checkpoints.", len(library.checkpoints))
        yield _gauge(
            "cps_library_bytes",
            "Bytes of dataset and element data (and element ids) in the library checkpoints.",
            library.bytes,
        )
        yield _gauge(
            "cps_library_handles",
            "Open library handles (limit: --max-library-handles).",
            len(library.handles),
        )
        depths = [len(session.events.queue) for session in sessions.sessions.values()]
        yield _gauge(
            "cps_callback_queue_max",
            "Longest session callback queue (limit: --max-callback-queue).",
            max(depths, default=0),
        )
        yield _gauge(
            "cps_callback_queue_events",
            "Callback events queued for all sessions, not yet delivered.",
            sum(depths),
        )
        yield CounterMetricFamily(
            "cps_storage_commits",
            "Transactions committed to the store (compare with grpc_server_handled_total: "
            "group commit).",
            value=node.journal.batches,
        )
        if node.cluster is not None:
            yield from _cluster(node, node.cluster)


def _cluster(node: Node, cluster: ClusterParts) -> Iterator[Metric]:
    membership, replication = cluster.membership, cluster.replication
    yield _gauge("cps_cluster_members", "Live members of the cluster.", len(membership.live))
    yield _gauge(
        "cps_lease_valid", "1 while this node holds a valid etcd lease.", int(membership.valid())
    )
    leading = int(cluster.director.leading)
    yield _gauge("cps_director", "1 while this node is the cluster's director.", leading)
    yield CounterMetricFamily(
        "cps_epoch_changes",
        "Epoch changes of checkpoints seen in the directory (every node sees every one): "
        "failovers and ActiveReplicaSet.",
        value=cluster.epoch_changes,
    )
    yield CounterMetricFamily(
        "cps_takeovers",
        "Checkpoints whose active replica became this node after another node.",
        value=cluster.takeovers,
    )
    yield CounterMetricFamily(
        "cps_failovers",
        "Checkpoints this node, as director, gave a new active replica because theirs was lost.",
        value=cluster.director.failovers,
    )
    yield CounterMetricFamily(
        "cps_replication_batches_sent",
        "Batches this node sent on its replication streams, all peers together.",
        value=replication.sent.batches,
    )
    yield CounterMetricFamily(
        "cps_replication_items_sent",
        "Items (operations, snapshot parts, notifications) in those batches.",
        value=replication.sent.items,
    )
    # A member is named without its incarnation (which changes at each
    # restart), so that the label values stay the cluster's node names.
    connected: dict[str, float] = defaultdict(float)
    pending_bytes: dict[str, float] = defaultdict(float)
    pending_items: dict[str, float] = defaultdict(float)
    for member, peer_link in replication.links.items():
        connected[member.name] = max(connected[member.name], float(peer_link.connected))
        pending_bytes[member.name] += peer_link.pending_bytes
        pending_items[member.name] += peer_link.pending_items
    yield _by_peer(
        "cps_peer_connected",
        "1 while this node's replication stream to the peer is up (a peer appears once this "
        "node has sent it something, and goes once it leaves the cluster).",
        connected,
    )
    yield _by_peer(
        "cps_replication_pending_bytes",
        "Bytes shipped to the peer and not acknowledged yet (limit: --max-peer-queue-bytes).",
        pending_bytes,
    )
    yield _by_peer(
        "cps_replication_pending_items",
        "Items (operations, snapshot parts, notifications) shipped to the peer and not "
        "acknowledged yet.",
        pending_items,
    )
    lag = GaugeMetricFamily(
        "cps_replication_lag_operations",
        "For the checkpoints this node is active for, by peer and update mode: operations "
        "applied here that the peer's replica has not acknowledged.",
        labels=("peer", "mode"),
    )
    lags: dict[tuple[str, str], int] = defaultdict(int)
    me = node.me
    for ref in node.active.serving:
        record = cluster.directory.get(ref.incarnation)
        replica = node.replicas.find(ref)
        if record is None or replica is None:
            continue
        mode = _mode(replica.attributes)
        for member in record.replicas:
            if member == me:
                continue
            link = replication.links.get(member)
            acked = 0 if link is None else link.acked_seq.get(ref, 0)
            lags[(member.name, mode)] += max(0, replica.seq - acked)
    for (peer, mode), value in sorted(lags.items()):
        lag.add_metric((peer, mode), value)
    yield lag


def _by_peer(name: str, help_text: str, values: dict[str, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_text, labels=("peer",))
    for peer, value in sorted(values.items()):
        family.add_metric((peer,), value)
    return family


class _NoContext:
    """Check asks its context to abort only for an unknown service; "" is always known."""

    async def abort(self, code: Any, details: str = "") -> NoReturn:
        raise LookupError(f"health: {code} {details}")


_OVERALL = health_pb2.HealthCheckRequest(service="")


async def health_serving(health: Any) -> bool:
    """What grpc.health.v1 Check answers for "" (the server as a whole): SERVING?"""
    response = await health.Check(_OVERALL, _NoContext())
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)
