"""The stream from this node to one peer: everything this node ships to it
(operations and snapshots of the checkpoints it is active for, and
notifications), in order, batched, with the peer's acknowledgements.

Items are numbered per link. An item stays until the peer acknowledges it,
so after a broken stream the link sends again every item not acknowledged
(the peer skips what it already applied, by sequence number). A link holds
at most ``max_bytes`` of unacknowledged items: past that the peer is too
far behind, its items are dropped and it must be sent whole again
(``on_overflow``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc

from cps.peer.v1 import peer_pb2 as pb
from cps.server import failpoints
from cps.server.core.directory import Member
from cps.server.core.replica import Ref

from . import codec
from .channels import Channels

log = logging.getLogger("cps.links")

# A Batch message carries about this much; a larger item goes alone.
BATCH_BYTES = 4 * 1024 * 1024
# Batches sent and not acknowledged yet: while they are on their way, new
# items gather into the next batch (group commit across the link). At 64
# writes in flight one batch per round trip carried about 1 item with no
# limit (every write was a stream message of its own); a lone write is
# still sent at once.
BATCHES_IN_FLIGHT = 1
# Items no one waits for (the operations of asynchronous checkpoints) wait
# up to this long, or until this many are queued, for others to share their
# batch: every stream message costs the active about as much as a client's
# call (bench/PROFILE.md). An item someone waits for (a synchronous write,
# Synchronize, a notification, a snapshot part) sends the batch at once.
LINGER_SECONDS = 0.002
LINGER_ITEMS = 64
# Items waited for (synchronous writes) linger too, but only while it pays:
# after a batch of two or more a linger this long is tried, and lingering
# goes on while items arrive during it (many writers); once one gathers
# nothing (one or two writers, all waiting on this link) it stops until
# PROBE_AFTER batches later.
BUSY_LINGER_SECONDS = 0.001
PROBE_AFTER = 64


@dataclass(slots=True)
class Sent:
    """What this node's links sent, all peers together (for the metrics:
    items per batch is how well the links batch)."""

    batches: int = 0
    items: int = 0


class LinkDropped(Exception):
    """The peer fell too far behind: what was waiting for it will not come."""


@dataclass(slots=True)
class _Item:
    index: int
    ref: Ref | None  # None: a notification (nothing to acknowledge per checkpoint)
    seq: int  # the checkpoint's sequence once applied
    message: bytes  # a serialized pb.Item
    weight: int
    snapshot: bool = False
    last_part: bool = True  # a snapshot part that completes the replica


@dataclass(slots=True)
class _Waiting:
    seq: int
    future: asyncio.Future[None] = field(repr=False)


class Link:
    def __init__(
        self,
        me: Member,
        target: Member,
        address_of: Callable[[Member], str | None],
        channels: Channels,
        *,
        max_bytes: int,
        on_resync: Callable[[Member, Ref], None],
        on_fenced: Callable[[Member, Ref, int], None],
        on_overflow: Callable[[Member], None],
        on_acknowledged: Callable[[Member], None],
        sent: Sent | None = None,
    ) -> None:
        self.me = me
        self.sent = Sent() if sent is None else sent
        self.target = target
        self.address_of = address_of
        self.channels = channels
        self.max_bytes = max_bytes
        self.on_resync = on_resync
        self.on_fenced = on_fenced
        self.on_overflow = on_overflow
        self.on_acknowledged = on_acknowledged
        self.next_index = 0
        self.acknowledged = 0  # the highest index the peer applied
        self.acked_seq: dict[Ref, int] = {}
        self._unacked: deque[_Item] = deque()
        self._outbox: deque[_Item] = deque()
        self._bytes = 0
        self._waiting: dict[Ref, deque[_Waiting]] = {}
        # Checkpoints the peer asked to be sent whole: its acknowledgements
        # of their operations mean nothing until the snapshot is applied.
        # (the index of the snapshot that will settle it).
        self._resyncing: dict[Ref, int] = {}
        # Set while the stream waits for something to send (or the peer's
        # answers to end): one future per wait, cheaper than an Event
        # raced against the receiving task with asyncio.wait.
        self._wakeup: asyncio.Future[None] | None = None
        self._urgent = False  # something in the outbox is waited for
        self._linger_started: float | None = None  # loop time
        self._linger_from = 0  # items in the outbox when it started
        self._last_batch = 0  # items in the last batch sent
        self._busy_linger = True  # the last linger of waited-for items gathered some
        self._since_probe = 0  # batches of waited-for items sent without a linger
        self._in_flight: deque[int] = deque()  # the last index of each batch sent
        self.fail_after_ack = 0  # a failpoint (see cps.server.failpoints)
        self.connected = False
        self.down_since: float | None = asyncio.get_running_loop().time()
        self._task = asyncio.create_task(self._run())

    # -- what the replication side calls -------------------------------------

    def enqueue(
        self,
        ref: Ref | None,
        seq: int,
        item: bytes,
        *,
        snapshot: bool = False,
        last_part: bool = True,
        urgent: bool = False,
    ) -> int:
        """Queue a serialized Item; its number on this link. ``urgent``:
        send it now, not after the linger of items no one waits for."""
        self.next_index += 1
        weight = len(item)
        entry = _Item(self.next_index, ref, seq, item, weight, snapshot, last_part)
        self._unacked.append(entry)
        self._outbox.append(entry)
        self._bytes += weight
        if urgent or snapshot:
            self._urgent = True
        if self._urgent or len(self._outbox) in (1, LINGER_ITEMS):
            self._wake_up()
        if self._bytes > self.max_bytes:
            self._drop(f"more than {self.max_bytes} bytes unacknowledged")
        return self.next_index

    def wait(self, ref: Ref, seq: int) -> asyncio.Future[None]:
        """Done when the peer holds ``ref`` up to ``seq``."""
        future = asyncio.get_running_loop().create_future()
        if self.acked_seq.get(ref, 0) >= seq:
            future.set_result(None)
        else:
            self._waiting.setdefault(ref, deque()).append(_Waiting(seq, future))
            self._urgent = True  # someone waits: no linger
            self._wake_up()
        return future

    def forget(self, ref: Ref) -> None:
        """The peer no longer holds ``ref`` for this node: stop waiting."""
        self.acked_seq.pop(ref, None)
        self._resyncing.pop(ref, None)
        for waiting in self._waiting.pop(ref, ()):
            if not waiting.future.done():
                waiting.future.set_exception(LinkDropped(f"{self.target} left {ref.name}"))

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    @property
    def pending_items(self) -> int:
        """Items queued and not acknowledged yet (operations, snapshot parts, notifications)."""
        return len(self._unacked)

    def close(self) -> None:
        self._task.cancel()
        self._fail_all(LinkDropped(f"link to {self.target} closed"))

    # -- the stream ----------------------------------------------------------

    async def _run(self) -> None:
        pause = 0.05
        while True:
            address = self.address_of(self.target)
            if address is None:
                await asyncio.sleep(0.2)  # not (yet) a live member
                continue
            try:
                await self._stream(address)
                pause = 0.05
            except grpc.aio.AioRpcError as error:
                if self.connected or pause > 0.5:
                    log.info(
                        "link down",
                        extra={"peer": str(self.target), "code": error.code().name},
                    )
            finally:
                if self.connected:
                    self.connected = False
                    self.down_since = asyncio.get_running_loop().time()
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)

    async def _stream(self, address: str) -> None:
        stub = self.channels.stub(address)
        call = stub.Replicate(metadata=self.channels.metadata or None)
        hello = pb.Hello(
            sender=codec.member_message(self.me), receiver=codec.member_message(self.target)
        )
        await call.write(pb.ReplicateRequest(hello=hello))
        self._outbox = deque(self._unacked)  # everything not acknowledged, again
        self._urgent = bool(self._outbox)
        self._in_flight.clear()
        receiving = asyncio.create_task(self._receive(call))
        receiving.add_done_callback(lambda _: self._wake_up())
        self.connected = True
        self.down_since = None
        try:
            while not receiving.done():
                if not self._outbox or len(self._in_flight) >= BATCHES_IN_FLIGHT:
                    await self._sleep(None)
                    continue
                linger = self._linger()
                if linger is not None and len(self._outbox) < LINGER_ITEMS:
                    now = asyncio.get_running_loop().time()
                    if self._linger_started is None:
                        self._linger_started, self._linger_from = now, len(self._outbox)
                    if now < self._linger_started + linger:
                        await self._sleep(self._linger_started + linger)
                        continue
                if self._urgent:
                    if self._linger_started is not None:
                        self._busy_linger = len(self._outbox) > self._linger_from
                        self._since_probe = 0
                    else:
                        self._since_probe += 1
                self._linger_started = None
                batch = self._next_batch()
                self._in_flight.append(batch.first_index + len(batch.items) - 1)
                self.sent.batches += 1
                self.sent.items += len(batch.items)
                self._last_batch = len(batch.items)
                await call.write(pb.ReplicateRequest(batch=batch))
                if self.fail_after_ack and batch.first_index <= self.fail_after_ack:
                    await self._fail_once_acknowledged(receiving)
        finally:
            receiving.cancel()
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await receiving
        receiving.result()  # raises what ended the stream

    def _linger(self) -> float | None:
        """How long the outbox may wait for more items to share its batch."""
        if not self._urgent:
            return LINGER_SECONDS
        if self._last_batch >= 2 and (self._busy_linger or self._since_probe >= PROBE_AFTER):
            return BUSY_LINGER_SECONDS
        return None

    async def _sleep(self, until: float | None) -> None:
        """Until woken up (something to send, an acknowledgement, the end of
        the peer's answers) or ``until`` (loop time)."""
        loop = asyncio.get_running_loop()
        self._wakeup = loop.create_future()
        if until is None:
            await self._wakeup
            return
        timer = loop.call_at(until, self._wake_up)
        try:
            await self._wakeup
        finally:
            timer.cancel()

    def _wake_up(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _fail_once_acknowledged(self, receiving: asyncio.Task[None]) -> None:
        """The failpoint: exit once the peer applied the marked item, before
        anything after it is sent."""
        while self.acknowledged < self.fail_after_ack and not receiving.done():
            await asyncio.sleep(0.001)
        failpoints.fail("exit-after-first-weak-part")

    def _next_batch(self) -> pb.Batch:
        items: list[bytes] = []
        first = self._outbox[0].index
        size = 0
        while self._outbox:
            entry = self._outbox[0]
            if size and size + entry.weight > BATCH_BYTES:
                break
            self._outbox.popleft()
            items.append(entry.message)
            size += entry.weight
        self._urgent = self._urgent and bool(self._outbox)  # what is left of a large batch
        return pb.Batch(first_index=first, items=items)

    async def _receive(self, call: AsyncIterator[pb.ReplicateResponse]) -> None:
        async for response in call:
            kind = response.WhichOneof("kind")
            if kind == "acknowledged":
                self._acknowledge(response.acknowledged)
            elif kind == "resync":
                ref = codec.ref_of(response.resync)
                self._resyncing[ref] = 2**63  # until the snapshot is queued
                self.on_resync(self.target, ref)  # queues the snapshot at once
                self._resyncing[ref] = self.next_index
            elif kind == "fenced":
                fenced = response.fenced
                self._resyncing[codec.ref_of(fenced.ref)] = 2**63  # nothing of it counts now
                self.on_fenced(self.target, codec.ref_of(fenced.ref), fenced.epoch)

    def _acknowledge(self, index: int) -> None:
        if index <= self.acknowledged:
            return
        self.acknowledged = index
        while self._in_flight and self._in_flight[0] <= index:
            self._in_flight.popleft()
            self._wake_up()  # the next batch may go
        touched: set[Ref] = set()
        while self._unacked and self._unacked[0].index <= index:
            entry = self._unacked.popleft()
            self._bytes -= entry.weight
            if entry.ref is None or not entry.last_part:
                continue
            settled_by = self._resyncing.get(entry.ref)
            if settled_by is not None:
                if entry.index < settled_by or not entry.snapshot:
                    continue
                del self._resyncing[entry.ref]
                self.acked_seq[entry.ref] = entry.seq
                touched.add(entry.ref)
            elif entry.seq > self.acked_seq.get(entry.ref, 0):
                self.acked_seq[entry.ref] = entry.seq
                touched.add(entry.ref)
        for ref in touched:
            queue = self._waiting.get(ref)
            acked = self.acked_seq[ref]
            while queue and queue[0].seq <= acked:
                waiting = queue.popleft()
                if not waiting.future.done():
                    waiting.future.set_result(None)
            if queue is not None and not queue:
                del self._waiting[ref]
        self.on_acknowledged(self.target)

    def _drop(self, why: str) -> None:
        log.warning("link overflow: peer dropped", extra={"peer": str(self.target), "why": why})
        self._unacked.clear()
        self._outbox.clear()
        self._bytes = 0
        self.acked_seq.clear()
        self._fail_all(LinkDropped(f"{self.target}: {why}"))
        self.on_overflow(self.target)

    def _fail_all(self, error: Exception) -> None:
        waiting, self._waiting = self._waiting, {}
        for queue in waiting.values():
            for entry in queue:
                if not entry.future.done():
                    entry.future.set_exception(error)
