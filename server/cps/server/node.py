"""The composition root: builds one CPS node from its settings and wires
the layers together (api over service over core; cluster and storage
plugged into the service's ports). No behaviour of its own."""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from cps.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    checkpoint_service_pb2,
    checkpoint_service_pb2_grpc,
    event_service_pb2,
    event_service_pb2_grpc,
    library_service_pb2,
    library_service_pb2_grpc,
)

from .api.admin_service import AdminService
from .api.checkpoint_service import CheckpointService
from .api.event_service import EventService
from .api.library_service import LibraryCheckpointService
from .api.registration import Registrar
from .cluster.solo import NoForwarder, NoReplication, SoloDirectory
from .config import Settings, advertise_of, split_address, version
from .core.directory import Member
from .core.library import LibraryManager
from .core.replica import Changes, Ref
from .core.replicas import Replicas
from .core.sessions import Sessions
from .metrics import ServerMetrics, serve_http
from .node_events import wire_events
from .node_metrics import NodeCollector, health_serving
from .security import server_credentials
from .service.active import ActiveReplicas
from .service.admin import Admin
from .service.checkpoints import Checkpoints
from .service.clock import LoopClock
from .service.ports import (
    Directory,
    ForeverLease,
    Forwarder,
    Lease,
    NoPersistence,
    Persistence,
    Replication,
)
from .storage.journal import Journal
from .storage.mapping import load_replicas, restore_library
from .storage.sqlite_store import SqliteStore

if TYPE_CHECKING:
    from .cluster_parts import ClusterParts

log = logging.getLogger("cps.server")

CHECKPOINT_SERVICE = checkpoint_service_pb2.DESCRIPTOR.services_by_name[
    "CheckpointService"
].full_name
LIBRARY_SERVICE = library_service_pb2.DESCRIPTOR.services_by_name[
    "LibraryCheckpointService"
].full_name
ADMIN_SERVICE = admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
EVENT_SERVICE = event_service_pb2.DESCRIPTOR.services_by_name["EventService"].full_name
CLIENT_SERVICES = ("", CHECKPOINT_SERVICE, LIBRARY_SERVICE)


class Node:
    """A running node: the grpc.aio server and what it serves."""

    def __init__(self, settings: Settings) -> None:
        """Open the store and load what it holds; call on the running loop."""
        self.settings = settings
        limits = settings.limits
        self.clock = LoopClock()
        self.metrics = ServerMetrics(version())
        worker = settings.worker
        self.server = _grpc_server(settings, share_port=worker is not None)
        # What is registered through it reaches the server with the request
        # gate and the call metrics around every method.
        self.services = Registrar(self.server, self.metrics)
        self.port = self._listen(settings.listen)
        # A worker of a node of several (docs/workers.md) also listens on an
        # address of its own, the one it advertises: peers and forwarded
        # calls must reach this very worker, not any that shares the port.
        self.own_port = 0 if worker is None else self._listen(worker.listen)
        self.advertise = settings.advertise or advertise_of(settings.listen, self.port)
        self.me = Member(settings.node_name or self.advertise, secrets.randbits(63))
        # Placement puts at most one replica of a checkpoint per host.
        self.host = self.me.name if worker is None else worker.host
        store = SqliteStore.open(settings.data_dir, settings.sync)
        # Library and server checkpoints share max_checkpoints and
        # max_reserved_bytes: each sees what the other holds.
        self.replicas = Replicas(limits, lambda: self.library.usage())
        self.library = LibraryManager(None, limits, self.replicas.usage, time.monotonic_ns)
        self.journal = Journal(store, self.library)
        self.library.changelog = self.journal
        self.journal.on_rollback = self._reload
        self.sessions = Sessions(limits)
        self.cluster: ClusterParts | None = None
        if settings.etcd_endpoints:
            # The other replicas are the redundancy: server checkpoints live
            # in memory on each of them (docs/replication.md).
            from .cluster_parts import ClusterParts  # etcd only in cluster mode

            self.persistence: Persistence = NoPersistence()
            self.cluster = ClusterParts(self, settings)
            self.directory: Directory = self.cluster.directory
            replication: Replication = self.cluster.replication
            lease: Lease = self.cluster.membership
            forwarder: Forwarder = self.cluster.forwarder
        else:
            self.persistence = (
                self.journal if settings.persist_server_checkpoints else NoPersistence()
            )
            self.directory = self.solo = SoloDirectory(self.me)
            replication, lease, forwarder = NoReplication(), ForeverLease(), NoForwarder()
        self.active = ActiveReplicas(
            self.me,
            self.replicas,
            self.directory,
            replication,
            self.persistence,
            lease,
            self.clock,
            self._deliver,
        )
        self.checkpoints = Checkpoints(
            self.sessions,
            self.replicas,
            self.active,
            self.directory,
            forwarder,
            self.clock,
            limits,
        )
        if self.cluster is None:
            self._load_store()
        else:
            restore_library(self.journal.store, self.library)
            self.cluster.wire(self)
        self.events = wire_events(self)  # the service-event feed (EventService)
        self.health = health.aio.HealthServicer()
        # --auth-file, read and checked at start (config.parse).
        authorization = settings.authorization
        checkpoint_service_pb2_grpc.add_CheckpointServiceServicer_to_server(
            CheckpointService(self.checkpoints, authorization), self.services
        )
        library_service_pb2_grpc.add_LibraryCheckpointServiceServicer_to_server(
            LibraryCheckpointService(self.library, self.journal, authorization), self.services
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.services)
        admin = Admin(
            self.checkpoints,
            address=self.advertise,
            clustered=self.cluster is not None,
            serving=lambda: self.cluster is None or self.cluster.ready,
        )
        admin_service_pb2_grpc.add_AdminServiceServicer_to_server(
            AdminService(admin, authorization, self.journal.store), self.services
        )
        event_service_pb2_grpc.add_EventServiceServicer_to_server(
            EventService(self.events, self.me.name, authorization), self.services
        )
        services = [
            CHECKPOINT_SERVICE,
            LIBRARY_SERVICE,
            ADMIN_SERVICE,
            EVENT_SERVICE,
            health.SERVICE_NAME,
        ]
        if self.cluster is not None:
            from .cluster_parts import PEER_SERVICE

            services.append(PEER_SERVICE)
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            reflection.aio.ReflectionServicer((*services, reflection.SERVICE_NAME)), self.services
        )
        self._reaper: asyncio.Task[None] | None = None
        self._metrics_server: asyncio.Server | None = None
        self.metrics_port = 0
        self.metrics.registry.register(NodeCollector(self))

    def _listen(self, address: str) -> int:
        credentials = server_credentials(self.settings)
        port: int
        try:
            if credentials is None:
                port = self.server.add_insecure_port(address)
            else:
                port = self.server.add_secure_port(address, credentials)
        except RuntimeError:  # grpc's "Failed to bind": the address is taken
            port = 0
        if port == 0:
            raise OSError(f"cannot listen on {address}: the address is in use or not ours")
        return port

    async def start(self) -> None:
        # A cluster node is NOT_SERVING until it has joined (health starts SERVING).
        await self._set_health(self.cluster is None)
        await self.server.start()
        self._reaper = asyncio.create_task(self._reap_idle_sessions())
        if self.settings.metrics_listen:
            host, port = split_address(self.settings.metrics_listen)
            self._metrics_server = await serve_http(
                self.metrics, lambda: health_serving(self.health), host, port
            )
            self.metrics_port = self._metrics_server.sockets[0].getsockname()[1]
            log.info("metrics serving", extra={"host": host, "port": self.metrics_port})
        if self.cluster is not None:
            await self.cluster.start(self)
        log.info(
            "serving",
            extra={
                "listen": self.settings.listen,
                "port": self.port,
                "node": self.me.name,
                "advertise": self.advertise,
                **({"own_port": self.own_port, "host": self.host} if self.own_port else {}),
            },
        )

    async def _set_health(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in CLIENT_SERVICES:
            await self.health.set(service, status)

    def _load_store(self) -> None:
        restore_library(self.journal.store, self.library)
        if not self.settings.persist_server_checkpoints:
            return
        loaded = load_replicas(self.journal.store, self.me.name, self.clock.now())
        for replica in loaded:
            name = replica.ref.name
            record = self.solo.add(
                name, replica.attributes, epoch=replica.epoch, active=replica.active is not None
            )
            replica.ref = Ref(name, record.incarnation)
            self.replicas.add(replica)
            self.journal.server[name] = replica
            if record.active is not None:
                self.active.restore(record)  # nobody has it open: retention starts
        log.info(
            "store loaded",
            extra={"checkpoints": len(loaded), "path": str(self.journal.store.path)},
        )

    def _reload(self, server: set[str], library: set[str]) -> None:
        """A commit failed: memory goes back to what the store holds."""
        store = self.journal.store
        if library:
            restore_library(store, self.library, library)
        fresh = {
            replica.ref.name: replica
            for replica in load_replicas(store, self.me.name, self.clock.now(), server)
        }
        for name in server:
            current = self.journal.server.get(name)
            if current is None:
                continue
            ref = current.ref
            self.active.stop(ref)
            replica = fresh.get(name)
            if replica is None:  # created by the failed batch: it never was
                self.journal.server.pop(name, None)
                self.replicas.pop(ref)
                self.solo.discard(ref.incarnation)
                continue
            replica.ref = ref
            replica.openers, replica.last_close = current.openers, current.last_close
            self.replicas.add(replica)
            self.journal.server[name] = replica
            record = self.directory.get(ref.incarnation)
            if record is not None and record.active is not None:
                self.active.restore(record)
        log.warning("memory reloaded from the store", extra={"checkpoints": sorted(server)})

    def _deliver(self, ref: Ref, changes: Changes) -> None:
        self.checkpoints.deliver(ref, changes)

    async def stop(self) -> None:
        """Graceful stop: report NOT_SERVING, let in-flight calls finish
        within the grace period, then close."""
        if self._reaper is not None:
            self._reaper.cancel()
        if self.cluster is not None:
            await self.cluster.stop()
        await self.health.enter_graceful_shutdown()
        log.info("stopping", extra={"grace_seconds": self.settings.grace_seconds})
        for session in list(self.sessions.sessions.values()):
            session.events.close()  # ends callback streams
        self.events.close()  # ends Watch streams
        await self.server.stop(self.settings.grace_seconds)
        if self._metrics_server is not None:  # /readyz said 503 during the drain
            self._metrics_server.close()
        await self.journal.close()
        log.info("stopped")

    async def _reap_idle_sessions(self) -> None:
        interval = self.settings.session_timeout_seconds / 2
        while True:
            await asyncio.sleep(interval)
            for session_id in await self.checkpoints.reap_idle_sessions():
                log.info("session reaped", extra={"session": session_id})
            for handle in self.library.reap_idle(time.monotonic_ns()):
                log.info("library handle reaped", extra={"library_handle": handle})


async def serve(settings: Settings, started: Callable[[], None] | None = None) -> None:
    """Run a node until SIGTERM or SIGINT; ``started`` is called once it
    listens (a worker tells its supervisor so)."""
    node = Node(settings)
    await node.start()
    if started is not None:
        started()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await node.stop()


def _grpc_server(settings: Settings, *, share_port: bool) -> grpc.aio.Server:
    keepalive_ms = int(settings.keepalive_seconds * 1000)
    return grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.keepalive_time_ms", keepalive_ms),
            ("grpc.keepalive_timeout_ms", 10_000),
            # Let clients and peers ping every second without being cut off.
            ("grpc.http2.min_ping_interval_without_data_ms", 1_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            # One node per address: a second one on a busy port fails. The
            # workers of one node share its port (the kernel spreads the
            # connections over them); their supervisor checked it was free.
            ("grpc.so_reuseport", 1 if share_port else 0),
        ],
    )
