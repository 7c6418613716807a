"""The checkpoints this node is the active replica of: calls are evaluated
here, applied, stored and shipped to the backups, and the active's timers
(section expiry, retention) become operations too.

Evaluate, apply, store and ship run with no await in between, so calls on
one checkpoint are serialised by the event loop and every replica sees the
operations in the order the active applied them. What the caller then
waits for depends on the write mode (``complete``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from cps.server.core import calls as c
from cps.server.core import operations as op
from cps.server.core import rules
from cps.server.core.clock import Clock, Timer
from cps.server.core.directory import Member, Record
from cps.server.core.errors import (
    CkptError,
    ErrorCode,
    no_active_replica,
    not_active,
    unknown_outcome,
)
from cps.server.core.replica import Changes, Ref, Replica
from cps.server.core.replicas import Replicas
from cps.server.core.service_events import CheckpointDetail, EventKind, EventLog, SectionDetail

from .ports import Directory, Lease, Persistence, Replication

log = logging.getLogger("cps.active")

# Local immediate-consumption delivery: (instance, changed sections).
Deliver = Callable[[Ref, Changes], None]


class Serving:
    """The active's timers of one checkpoint."""

    __slots__ = ("epoch", "expiry", "retention")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.expiry: dict[bytes, Timer] = {}
        self.retention: Timer | None = None

    def cancel(self) -> None:
        for timer in self.expiry.values():
            timer.cancel()
        self.expiry.clear()
        if self.retention is not None:
            self.retention.cancel()
            self.retention = None


class Outcome:
    """An applied call: its answer, and what the caller must wait for."""

    __slots__ = ("answer", "durable", "replicated")

    def __init__(
        self,
        answer: rules.Answer | bytes,
        durable: asyncio.Future[None] | None,
        replicated: Awaitable[None] | None,
    ) -> None:
        self.answer = answer
        self.durable = durable
        self.replicated = replicated


class ActiveReplicas:
    def __init__(
        self,
        me: Member,
        replicas: Replicas,
        directory: Directory,
        replication: Replication,
        persistence: Persistence,
        lease: Lease,
        clock: Clock,
        deliver: Deliver,
    ) -> None:
        self.me = me
        self.replicas = replicas
        self.directory = directory
        self.replication = replication
        self.persistence = persistence
        self.lease = lease
        self.clock = clock
        self.deliver = deliver
        self.serving: dict[Ref, Serving] = {}
        # Service events of the active's timers (node_events.py sets it).
        self.events: EventLog | None = None
        self._becoming: dict[Ref, tuple[int, asyncio.Future[None]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the active's side of a call -------------------------------------------

    def record_of(self, ref: Ref) -> Record:
        """The record of a checkpoint this node serves as active, or the
        error that sends the caller elsewhere."""
        record = self.directory.get(ref.incarnation)
        serving = self.serving.get(ref)
        if record is None or record.active != self.me or serving is None:
            raise not_active(ref.name, self.me.name)
        if serving.epoch != record.epoch:
            raise not_active(ref.name, self.me.name)  # promotion under way
        replica = self.replicas.find(ref)
        if replica is None or replica.epoch != serving.epoch:
            raise not_active(ref.name, self.me.name)  # sealed by a newer active
        self.lease.check()
        return record

    def execute(self, ref: Ref, call: c.Call) -> Outcome:
        """Run ``call`` on the active replica: synchronous up to what it
        must wait for."""
        record = self.record_of(ref)
        replica = self.replicas.get(ref)
        match call:
            case c.ReadCall() | c.StatusCall() | c.IterateCall() | c.DescribeCall():
                return Outcome(rules.answer(replica, call), None, None)
            case c.SynchronizeCall():
                if replica.attributes.synchronous:
                    raise CkptError(
                        ErrorCode.BAD_OPERATION,
                        f"checkpoint {ref.name!r} is synchronous (WR_ALL_REPLICAS): "
                        "its replicas are always in step",
                    )
                return Outcome(
                    None,
                    self.persistence.durable(),
                    self.replication.replicated(record, replica),
                )
            case c.ActiveReplicaSetCall():
                raise TypeError("ActiveReplicaSet goes through promote()")
        if isinstance(call, c.RetentionSetCall) and record.unlinked:
            raise CkptError(ErrorCode.BAD_OPERATION, f"checkpoint {ref.name!r} has been unlinked")
        operation = rules.evaluate(replica, call, self.clock.now())
        changes = self._apply(record, replica, operation)
        answer: bytes | None = None
        if isinstance(operation, op.SectionCreate):
            answer = operation.section_id
        return self._outcome(record, replica, answer, changes)

    def _apply(self, record: Record, replica: Replica, operation: op.Operation) -> Changes:
        changes = replica.apply(operation)
        self.persistence.stored(replica, operation, changes)
        self.replication.ship(record, replica, operation)
        self._rearm(record, replica, operation)
        return changes

    def _outcome(
        self,
        record: Record,
        replica: Replica,
        answer: rules.Answer | bytes,
        changes: Changes,
    ) -> Outcome:
        durable = self.persistence.durable()
        replicated = (
            self.replication.replicated(record, replica) if replica.attributes.synchronous else None
        )
        if changes:
            watchers = replica.watching_nodes()
            if watchers:
                self._notify_after(record, watchers, changes, durable, replicated)
        return Outcome(answer, durable, replicated)

    def _notify_after(
        self,
        record: Record,
        watchers: list[str],
        changes: Changes,
        durable: asyncio.Future[None] | None,
        replicated: Awaitable[None] | None,
    ) -> None:
        """Notifications go out once the change is acknowledged to its
        writer: a consumer never hears of a change that could still vanish."""
        ref = Ref(record.name, record.incarnation)
        others = [node for node in watchers if node != self.me.name]
        local = self.me.name in watchers

        def send() -> None:
            if local:
                self.deliver(ref, changes)
            if others:
                self.replication.notify(record, others, changes)

        if replicated is None:
            self.persistence.after_durable(send)
            return

        async def later() -> None:
            try:
                if durable is not None:
                    await durable
                await replicated
            except Exception:  # the writer hears of the failure; nothing to report
                return
            send()

        self._spawn(later())

    async def complete(self, outcome: Outcome) -> rules.Answer | bytes:
        """Wait for what the write mode asks, then the answer."""
        if outcome.durable is not None:
            try:
                await outcome.durable
            except Exception as error:  # storage failed: not the caller's fault
                raise CkptError(ErrorCode.INTERNAL, str(error)) from error
        if outcome.replicated is not None:
            await outcome.replicated  # every in-sync replica holds it: safe now
        elif outcome.durable is not None:
            # Answered by this node alone: only while it may still be active
            # (a deposed active's late answer could promise a lost write).
            try:
                self.lease.check()
            except CkptError:
                raise unknown_outcome("(a checkpoint)", "this node's lease ran out") from None
        return outcome.answer

    async def run(self, ref: Ref, call: c.Call) -> rules.Answer | bytes:
        return await self.complete(self.execute(ref, call))

    # -- becoming and ceasing to be active -----------------------------------

    def create(self, record: Record, first_opener: op.Openers) -> Outcome:
        """A new checkpoint instance created here, opened once by this node;
        active here unless it is collocated (no active until ActiveReplicaSet)."""
        ref = Ref(record.name, record.incarnation)
        created = op.Create(record.attributes, first_opener.at)
        active = None if record.active is None else record.active.name
        replica = Replica.create(ref, created, epoch=record.epoch, active=active)
        self.replicas.add(replica)
        self.persistence.stored(replica, created, [])
        self.replication.ship(record, replica, created)
        if record.active == self.me:
            self.serving[ref] = Serving(record.epoch)
        changes = self._apply(record, replica, first_opener)
        return self._outcome(record, replica, None, changes)

    def promote(self, record: Record) -> Outcome:
        """Serve a replica held here at the record's (new) epoch: the
        cluster sealed the other replicas first, where there are any."""
        ref = Ref(record.name, record.incarnation)
        replica = self.replicas.get(ref)
        previous = self.serving.pop(ref, None)
        if previous is not None:
            previous.cancel()
        serving = self.serving[ref] = Serving(record.epoch)
        changes = self._apply(record, replica, op.Promote(record.epoch, self.me.name))
        self._arm_all(record, replica, serving)
        log.info(
            "serving as active",
            extra={"checkpoint": ref.name, "epoch": record.epoch, "seq": replica.seq},
        )
        return self._outcome(record, replica, None, changes)

    async def become_active(self, record: Record) -> None:
        """Serve at the record's epoch: seal the other replicas (they refuse
        the previous active from now on) and catch up from the most advanced
        of them, then promote the replica held here."""
        ref = Ref(record.name, record.incarnation)
        serving = self.serving.get(ref)
        if serving is not None and serving.epoch >= record.epoch:
            return
        under_way = self._becoming.get(ref)
        if under_way is not None and under_way[0] == record.epoch:
            await asyncio.shield(under_way[1])  # the same takeover, asked twice
            return
        task = asyncio.ensure_future(self._become_active(record))
        self._becoming[ref] = (record.epoch, task)
        try:
            await asyncio.shield(task)
        finally:
            if self._becoming.get(ref, (0, None))[1] is task:
                del self._becoming[ref]

    async def _become_active(self, record: Record) -> None:
        interrupted = await self.replication.seal(record)
        current = self.directory.get(record.incarnation)
        if current is None or current.active != self.me or current.epoch != record.epoch:
            return  # moved on meanwhile: whoever is active now does this
        await self.complete(self.promote(current))
        if interrupted:
            # A weak write reached this replica in part: say so (seed: CORRUPTED).
            log.warning(
                "sections corrupted by an interrupted write",
                extra={"checkpoint": record.name, "sections": [s.hex() for s in interrupted]},
            )
            ref = Ref(record.name, record.incarnation)
            await self.complete(self.apply_internal(ref, op.Corrupt(interrupted)))

    async def take_over(self, record: Record) -> None:
        """ActiveReplicaSet: this node becomes the collocated checkpoint's
        active replica."""
        await self.become_active(await self.directory.set_active(record, self.me))

    def unlinked(self, ref: Ref) -> Outcome:
        """The name was deleted: the instance is no longer stored (it would be
        gone after a restart anyway), and goes at its last close."""
        self.persistence.dropped(ref)
        serving = self.serving.get(ref)
        record = self.directory.get(ref.incarnation)
        replica = self.replicas.find(ref)
        if serving is not None and record is not None and replica is not None:
            self._arm_retention(record, replica, serving)
        return Outcome(None, self.persistence.durable(), None)

    def restore(self, record: Record) -> None:
        """A replica loaded from this node's store (a single node's restart):
        serve it as it was, timers included."""
        ref = Ref(record.name, record.incarnation)
        serving = self.serving[ref] = Serving(record.epoch)
        self._arm_all(record, self.replicas.get(ref), serving)

    def stop(self, ref: Ref) -> None:
        """No longer active (deposed, or the instance is gone)."""
        serving = self.serving.pop(ref, None)
        if serving is not None:
            serving.cancel()

    def apply_internal(self, ref: Ref, operation: op.Operation) -> Outcome:
        """An operation the active decides by itself (a node's openers
        dropped when it left the cluster)."""
        record = self.record_of(ref)
        replica = self.replicas.get(ref)
        changes = self._apply(record, replica, operation)
        return self._outcome(record, replica, None, changes)

    # -- timers ---------------------------------------------------------------

    def _arm_all(self, record: Record, replica: Replica, serving: Serving) -> None:
        for section in replica.sections.values():
            if section.expiration_time is not None:
                self._arm_expiry(replica, serving, section.section_id)
        self._arm_retention(record, replica, serving)

    def _rearm(self, record: Record, replica: Replica, operation: op.Operation) -> None:
        serving = self.serving.get(replica.ref)
        if serving is None:
            return
        match operation:
            case op.SectionCreate(section_id) | op.ExpirationSet(section_id):
                self._arm_expiry(replica, serving, section_id)
            case op.SectionDelete(section_id) | op.SectionExpire(section_id):
                timer = serving.expiry.pop(section_id, None)
                if timer is not None:
                    timer.cancel()
            case op.Openers() | op.RetentionSet():
                self._arm_retention(record, replica, serving)

    def _arm_expiry(self, replica: Replica, serving: Serving, section_id: bytes) -> None:
        timer = serving.expiry.pop(section_id, None)
        if timer is not None:
            timer.cancel()
        section = replica.sections.get(section_id)
        if section is None or section.expiration_time is None:
            return
        expiration = section.expiration_time
        ref = replica.ref

        def expire() -> None:
            serving.expiry.pop(section_id, None)
            current = replica.sections.get(section_id)
            if current is None or current.expiration_time != expiration:
                return
            try:
                self._settle(self.apply_internal(ref, op.SectionExpire(section_id)))
            except CkptError as error:  # deposed meanwhile: the new active expires it
                log.info("expiry skipped", extra={"checkpoint": ref.name, "why": error.message})
                return
            if self.events is not None:
                self.events.emit(EventKind.SECTION_EXPIRED, ref.name, SectionDetail(section_id))

        serving.expiry[section_id] = self.clock.call_later(expiration - self.clock.now(), expire)

    def _arm_retention(self, record: Record, replica: Replica, serving: Serving) -> None:
        if serving.retention is not None:
            serving.retention.cancel()
            serving.retention = None
        if replica.open_handles or replica.last_close is None:
            return
        if record.unlinked:
            self._spawn(self._free(replica.ref))
            return
        if replica.retention is None:
            return
        delay = replica.last_close + replica.retention - self.clock.now()
        if delay <= 0:  # a duration of 0, or a failover after it ran out
            self._spawn(self._free(replica.ref, retention=True))
            return

        def retention_ended() -> None:
            serving.retention = None
            if not replica.open_handles:
                self._spawn(self._free(replica.ref, retention=True))

        serving.retention = self.clock.call_later(delay, retention_ended)

    async def _free(self, ref: Ref, *, retention: bool = False) -> None:
        record = self.directory.get(ref.incarnation)
        if record is None or record.active != self.me:
            return
        if retention and self.events is not None:
            self.events.emit(
                EventKind.RETENTION_EXPIRED, ref.name, CheckpointDetail(ref.incarnation)
            )
        self.stop(ref)
        try:
            await self.directory.remove(record)
        except CkptError as error:
            log.warning("free failed", extra={"checkpoint": ref.name, "why": error.message})
            return
        self.drop(ref)
        log.info("checkpoint freed", extra={"checkpoint": ref.name})

    def drop(self, ref: Ref) -> None:
        """Forget the replica held here (the instance is gone, or this node
        no longer holds one)."""
        self.stop(ref)
        if self.replicas.pop(ref) is not None:
            self.persistence.dropped(ref)

    # -- plumbing ---------------------------------------------------------------

    def _settle(self, outcome: Outcome) -> None:
        """Complete an outcome nobody waits for (a timer's), logging failures."""
        if outcome.durable is None and outcome.replicated is None:
            return

        async def wait() -> None:
            try:
                await self.complete(outcome)
            except CkptError as error:
                log.warning("internal change not completed", extra={"why": error.message})

        self._spawn(wait())

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def require_active(record: Record | None, name: str) -> Record:
    """The record of a checkpoint with an active replica somewhere."""
    if record is None:
        raise CkptError(ErrorCode.NOT_EXIST, f"checkpoint {name!r} no longer exists")
    if record.active is None:
        raise no_active_replica(name)
    return record
