"""Assemble and run one CPS node: services, health, reflection, shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cps.v1 import (
    checkpoint_service_pb2,
    checkpoint_service_pb2_grpc,
    library_service_pb2,
    library_service_pb2_grpc,
    replica_service_pb2,
    replica_service_pb2_grpc,
)

from .api.checkpoint_service import CheckpointService
from .api.library_service import LibraryCheckpointService
from .api.replica_service import ReplicaService
from .config import Settings
from .core.clock import LoopClock
from .core.library import LibraryManager
from .core.manager import ReplicaManager
from .metrics import METRICS, Metrics, serve_metrics
from .storage.journal import Journal
from .storage.mapping import restore_checkpoints, restore_library
from .storage.replication import Followers
from .storage.sqlite_store import SqliteStore
from .storage.standby import Standby

log = logging.getLogger("cps.server")

CHECKPOINT_SERVICE = checkpoint_service_pb2.DESCRIPTOR.services_by_name[
    "CheckpointService"
].full_name
LIBRARY_SERVICE = library_service_pb2.DESCRIPTOR.services_by_name[
    "LibraryCheckpointService"
].full_name
REPLICA_SERVICE = replica_service_pb2.DESCRIPTOR.services_by_name["ReplicaService"].full_name
CLIENT_SERVICES = ("", CHECKPOINT_SERVICE, LIBRARY_SERVICE)


class Node:
    """A running node: the grpc.aio server and what it serves."""

    def __init__(self, settings: Settings) -> None:
        """Open the store and load what it holds; call on the running loop."""
        self.settings = settings
        self.journal = Journal(SqliteStore.open(settings.data_dir, settings.sync))
        self.library = LibraryManager(self.journal, settings.limits.max_section_size)
        self.journal.library = self.library
        persist = settings.persist_server_checkpoints
        self.manager = ReplicaManager(
            LoopClock(), settings.limits, self.journal if persist else None
        )
        if persist:
            self.journal.replicas = self.manager
        self.followers = Followers(settings.replica_timeout_seconds)
        self.journal.followers = self.followers
        self.standby: Standby | None = None
        if settings.standby_of:
            # The store is the primary's: loaded only if this node takes over.
            self.journal.standby_of = settings.standby_of
            self.standby = Standby(
                self.journal,
                settings.standby_of,
                settings.node_name,
                settings.failover_seconds,
                self._take_over,
            )
        else:
            self._load_store()
        self.health = health.aio.HealthServicer()
        keepalive_ms = int(settings.keepalive_seconds * 1000)
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", settings.max_message_bytes),
                ("grpc.keepalive_time_ms", keepalive_ms),
                ("grpc.keepalive_timeout_ms", 10_000),
                # Let clients ping every 10 s without being cut off.
                # Standbys ping their primary every second.
                ("grpc.http2.min_ping_interval_without_data_ms", 1_000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.max_pings_without_data", 0),
            ]
        )
        checkpoint_service_pb2_grpc.add_CheckpointServiceServicer_to_server(
            CheckpointService(self.manager, self.journal if persist else None), self.server
        )
        library_service_pb2_grpc.add_LibraryCheckpointServiceServicer_to_server(
            LibraryCheckpointService(self.library, self.journal), self.server
        )
        replica_service_pb2_grpc.add_ReplicaServiceServicer_to_server(
            ReplicaService(self.journal, self.followers), self.server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (
                CHECKPOINT_SERVICE,
                LIBRARY_SERVICE,
                REPLICA_SERVICE,
                health.SERVICE_NAME,
                reflection.SERVICE_NAME,
            ),
            self.server,
        )
        self._reaper: asyncio.Task[None] | None = None
        self._standby_task: asyncio.Task[None] | None = None
        self._metrics_server: asyncio.Server | None = None
        self.metrics_port = 0
        _register_gauges(METRICS, self)
        self.port = self.server.add_insecure_port(settings.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {settings.listen}")

    async def start(self) -> None:
        await self.server.start()
        self._reaper = asyncio.create_task(self._reap_idle_sessions())
        if self.settings.metrics_listen:
            host, _, port = self.settings.metrics_listen.rpartition(":")
            self._metrics_server = await serve_metrics(METRICS, host.strip("[]"), int(port))
            self.metrics_port = self._metrics_server.sockets[0].getsockname()[1]
            log.info("metrics serving", extra={"port": self.metrics_port})
        await self.health.set(REPLICA_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        if self.standby is None:
            await self._serve_clients()
        else:
            # A standby is not ready for clients until it takes over.
            for service in CLIENT_SERVICES:
                await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
            self._standby_task = asyncio.create_task(self.standby.run())
        log.info("serving", extra={"listen": self.settings.listen, "port": self.port})

    def _load_store(self, minimum_retention: float = 0.0) -> None:
        restore_library(self.journal.store, self.library)
        if self.journal.replicas is not None:
            restored = restore_checkpoints(self.journal.store, self.manager, minimum_retention)
            log.info(
                "store loaded",
                extra={"checkpoints": restored, "path": str(self.journal.store.path)},
            )

    async def _serve_clients(self) -> None:
        for service in CLIENT_SERVICES:
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    async def _take_over(self) -> None:
        """The primary is gone: serve what it replicated here."""
        self.journal.standby_of = None
        self._load_store(self.settings.failover_grace_seconds)
        await self._serve_clients()

    async def stop(self) -> None:
        """Graceful stop: report NOT_SERVING, let in-flight calls finish
        within the grace period, then close."""
        if self._reaper is not None:
            self._reaper.cancel()
        if self._standby_task is not None:
            self._standby_task.cancel()
        if self._metrics_server is not None:
            self._metrics_server.close()
        await self.health.enter_graceful_shutdown()
        log.info("stopping", extra={"grace_seconds": self.settings.grace_seconds})
        for session_id in list(self.manager.sessions):
            self.manager.sessions[session_id].events.close()  # ends callback streams
        await self.server.stop(self.settings.grace_seconds)
        await self.journal.close()
        log.info("stopped")

    async def _reap_idle_sessions(self) -> None:
        interval = self.settings.session_timeout_seconds / 2
        while True:
            await asyncio.sleep(interval)
            for session_id in self.manager.sweep_idle_sessions():
                log.info("session reaped", extra={"session": session_id})


def _register_gauges(metrics: Metrics, node: Node) -> None:
    """Read at scrape time: nothing to keep up to date on the call path."""
    metrics.gauges.clear()  # one node per process (tests start several in turn)
    manager = node.manager
    metrics.gauge("cps_sessions", "Open sessions.", lambda: len(manager.sessions))
    metrics.gauge(
        "cps_checkpoint_handles", "Open checkpoint handles.", lambda: len(manager.handles)
    )
    metrics.gauge("cps_checkpoints", "Live server checkpoints.", lambda: len(manager.checkpoints))
    metrics.gauge(
        "cps_reserved_bytes",
        "Sum of checkpoint_size of live checkpoints (limit: --max-reserved-bytes).",
        lambda: manager.reserved_bytes,
    )
    metrics.gauge(
        "cps_section_bytes",
        "Bytes of section data in live checkpoints.",
        lambda: sum(c.memory_used for c in manager.checkpoints.values()),
    )
    metrics.gauge(
        "cps_callback_queue_max",
        "Longest session callback queue (limit: --max-callback-queue).",
        lambda: max((len(s.events.queue) for s in manager.sessions.values()), default=0),
    )
    metrics.gauge(
        "cps_library_checkpoints", "Library checkpoints.", lambda: len(node.library.checkpoints)
    )
    metrics.gauge(
        "cps_storage_commits", "Transactions committed to the store.", lambda: node.journal.batches
    )
    metrics.gauge(
        "cps_followers", "Standbys following this node.", lambda: len(node.followers.members)
    )
    metrics.gauge(
        "cps_standby",
        "1 while this node is a standby, 0 when it serves clients.",
        lambda: int(node.journal.standby),
    )


async def serve(settings: Settings) -> None:
    node = Node(settings)
    await node.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await node.stop()
