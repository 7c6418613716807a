"""A standby node: follows its primary's store, and takes over when the
primary is gone.

It applies every batch the primary sends to its own store and acknowledges
it. When the stream breaks and the primary cannot be reached again for
``failover_seconds``, it is promoted: it loads its store, as a restarted
node would, and serves. A standby that never received a snapshot is never
promoted: it has nothing to serve.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import grpc

from cps.v1 import replica_service_pb2 as pb
from cps.v1 import replica_service_pb2_grpc as pb_grpc

from .journal import Journal
from .replication import from_message
from .sqlite_store import Statement

log = logging.getLogger("cps.standby")

# Notice a primary that stopped answering without closing the connection.
_CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 1000),
    ("grpc.keepalive_timeout_ms", 1000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 512 * 1024 * 1024),
]


class Standby:
    def __init__(
        self,
        journal: Journal,
        primary: str,
        node_name: str,
        failover_seconds: float,
        promote: Callable[[], Awaitable[None]],
    ) -> None:
        self.journal = journal
        self.primary = primary
        self.node_name = node_name
        self.failover_seconds = failover_seconds
        self.promote = promote
        self.applied = 0  # sequence of the last batch applied
        self.synced = False  # a snapshot was applied: the store is the primary's
        self._down_since: float | None = None  # when the stream to the primary broke

    async def run(self) -> None:
        while True:
            try:
                await self._follow()
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.ABORTED:
                    # The primary dropped us (too slow): our store is behind what
                    # it acknowledged, so we may not take over before a new snapshot.
                    self.synced = False
                log.warning(
                    "primary unreachable",
                    extra={"primary": self.primary, "code": error.code().name},
                )
            if self._down_since is None:
                self._down_since = time.monotonic()
            takes_over = self.failover_seconds > 0 and self.synced
            if takes_over and time.monotonic() - self._down_since >= self.failover_seconds:
                log.warning(
                    "promoted: the primary is gone",
                    extra={"primary": self.primary, "applied": self.applied},
                )
                await self.promote()
                return
            await asyncio.sleep(0.2)

    async def _follow(self) -> None:
        async with grpc.aio.insecure_channel(self.primary, options=_CHANNEL_OPTIONS) as channel:
            stub = pb_grpc.ReplicaServiceStub(channel)
            applied = asyncio.Event()
            # Acknowledge on the side, the latest batch only: applying the next
            # batch never waits for a round trip to a busy primary.
            acknowledging = asyncio.create_task(self._acknowledge(stub, applied))
            pending: list[Statement] = []  # the first messages of a split batch
            try:
                async for batch in stub.Follow(pb.FollowRequest(node_name=self.node_name)):
                    self._down_since = None
                    pending += from_message(batch)
                    if batch.more:
                        continue
                    statements, pending = pending, []
                    await self.journal.apply_from_primary(statements)
                    self.applied = batch.sequence
                    applied.set()
                    if batch.snapshot:
                        self.synced = True
                        log.info(
                            "following",
                            extra={"primary": self.primary, "sequence": batch.sequence},
                        )
            finally:
                acknowledging.cancel()

    async def _acknowledge(self, stub: pb_grpc.ReplicaServiceStub, applied: asyncio.Event) -> None:
        sent = 0
        while True:
            await applied.wait()
            applied.clear()
            if self.applied > sent:
                sequence = self.applied
                try:
                    await stub.Acknowledge(
                        pb.AcknowledgeRequest(node_name=self.node_name, sequence=sequence)
                    )
                except grpc.aio.AioRpcError:
                    return  # the stream breaks too: following again starts afresh
                sent = sequence
