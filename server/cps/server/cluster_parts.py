"""The composition of a cluster node (--etcd-endpoints): the etcd client,
membership, directory, director, replication and the peer service, wired
into the node. Imported only in cluster mode, so a single node never loads
the etcd stubs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import TYPE_CHECKING

from cps.peer.v1 import peer_pb2, peer_pb2_grpc

from .cluster.backup import Backups
from .cluster.channels import Channels
from .cluster.director import Director
from .cluster.directory import EtcdDirectory
from .cluster.etcd import Etcd, EtcdError
from .cluster.forwarder import Forwarder
from .cluster.membership import Membership
from .cluster.peer_server import SECRET_HEADER, PeerGate, PeerService
from .cluster.records import Keys
from .cluster.replication import Replication
from .config import Settings
from .core.directory import Record
from .core.errors import CkptError, ErrorCode
from .security import etcd_credentials, peer_credentials
from .service.coordinator import Coordinator

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger("cps.cluster")

PEER_SERVICE = peer_pb2.DESCRIPTOR.services_by_name["PeerService"].full_name


def _version() -> str:
    try:
        return metadata.version("cps")
    except metadata.PackageNotFoundError:
        return "unknown"


class ClusterParts:
    def __init__(self, node: Node, settings: Settings) -> None:
        keys = Keys(settings.cluster_name)
        self.peers = peer_credentials(settings)
        self.etcd = Etcd(settings.etcd_endpoints, credentials=etcd_credentials(settings))
        self.membership = Membership(
            self.etcd,
            keys,
            node.me,
            node.advertise,
            _version(),
            settings.lease_ttl_seconds,
            host=node.host,
        )
        self.directory = EtcdDirectory(self.etcd, keys, self.membership, settings.replicas)
        secret = () if self.peers.secret is None else ((SECRET_HEADER, self.peers.secret.decode()),)
        self.channels = Channels(settings.max_message_bytes, self.peers.channel, secret)
        self.backups = Backups(node.replicas, node._deliver)
        self.replication = Replication(
            node.replicas,
            self.directory,
            self.membership,
            self.channels,
            self.backups,
            timeout=settings.replica_timeout_seconds,
            max_link_bytes=settings.limits.max_peer_queue_bytes,
        )
        # A forwarded write may wait for the replicas of its active, and for
        # the record change that drops a slow one.
        self.forwarder = Forwarder(
            self.membership, self.channels, timeout=4 * settings.replica_timeout_seconds + 5
        )
        self.director = Director(
            self.etcd, keys, self.membership, self.directory, settings.replicas
        )
        self._health: asyncio.Task[None] | None = None
        self._joining: asyncio.Task[None] | None = None
        # For the metrics: epoch changes of the checkpoints' records this node
        # saw (every node follows every record), and those where this node
        # became the active after another node.
        self.epoch_changes = 0
        self.takeovers = 0
        self.directory.on_record.append(self._count_change)

    def wire(self, node: Node) -> None:
        """Once the node's use cases exist."""
        self.coordinator = Coordinator(
            self.directory,
            node.replicas,
            node.active,
            self.replication,
            node.checkpoints.openers,
            node.clock,
        )
        self.directory.on_members.append(self.coordinator.members_changed)
        self.directory.on_record.append(self.coordinator.record_changed)
        peer_pb2_grpc.add_PeerServiceServicer_to_server(
            PeerService(
                lambda: node.me,
                node.replicas,
                self.backups,
                node.active.run,
                node.active.stop,
                PeerGate(self.peers.secret, self.peers.peer_ca),
            ),
            node.services,
        )
        node.checkpoints.ready_check = self.check_ready

    def _count_change(self, old: Record | None, new: Record | None) -> None:
        if old is None or new is None:
            return  # created, deleted, or first seen (joining)
        if new.epoch != old.epoch:
            self.epoch_changes += 1
        me = self.membership.me
        if new.active == me and old.active is not None and old.active != me:
            self.takeovers += 1

    def check_ready(self) -> None:
        if not self.directory.loaded.is_set():
            raise CkptError(
                ErrorCode.TRY_AGAIN, "this node is joining the cluster: try again or another node"
            )

    @property
    def ready(self) -> bool:
        return (
            self.directory.loaded.is_set() and self.membership.valid() and self.coordinator.settled
        )

    async def start(self, node: Node) -> None:
        """Join (waiting for etcd as long as it takes: nodes and etcd may
        start in any order), then follow the directory."""
        self._health = asyncio.create_task(self._report_health(node))
        self._joining = asyncio.create_task(self._join())

    async def _join(self) -> None:
        await _until_done(self.membership.join)
        await _until_done(self.directory.start)
        self.director.start()

    async def _report_health(self, node: Node) -> None:
        """grpc.health.v1 follows readiness: NOT_SERVING while joining,
        catching up, or without a lease."""
        serving: bool | None = None
        while True:
            now = self.ready
            if now != serving:
                serving = now
                await node._set_health(now)
                log.info("health", extra={"serving": now})
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self._health is not None:
            self._health.cancel()
        if self._joining is not None:
            self._joining.cancel()
        await self.director.stop()
        await self.membership.leave()  # the others take over at once
        await self.directory.stop()
        await self.replication.close()
        await self.channels.close()
        await self.etcd.close()


async def _until_done(step: Callable[[], Awaitable[None]]) -> None:
    """Try ``step`` until etcd lets it through."""
    pause = 0.2
    while True:
        try:
            await step()
            return
        except EtcdError as error:
            log.warning("cannot join the cluster yet", extra={"why": str(error)})
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)
