"""What this node does when the cluster's records or members change: take
over checkpoints it became active for, step down from those it lost, drop
replicas it no longer holds, forget the handles of nodes that left, and
tell new actives how many handles it has open."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping

from cps.server.core import operations as op
from cps.server.core.clock import Clock
from cps.server.core.directory import Member, Record
from cps.server.core.errors import CkptError
from cps.server.core.replica import Ref
from cps.server.core.replicas import Replicas

from .active import ActiveReplicas, Outcome
from .openers import OpenerReports
from .ports import ClusterDirectory, Tracking

log = logging.getLogger("cps.coordinator")


class Coordinator:
    def __init__(
        self,
        directory: ClusterDirectory,
        replicas: Replicas,
        active: ActiveReplicas,
        replication: Tracking,
        openers: OpenerReports,
        clock: Clock,
    ) -> None:
        self.directory = directory
        self.replicas = replicas
        self.active = active
        self.replication = replication
        self.openers = openers
        self.clock = clock
        self.live: Mapping[str, Member] = {}
        self._promoting: dict[Ref, int] = {}  # the epoch being taken over
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def me(self) -> Member:
        return self.directory.me

    @property
    def settled(self) -> bool:
        """No takeover under way (a restarted node is ready once settled)."""
        return not self._promoting

    def record_changed(self, old: Record | None, new: Record | None) -> None:
        record = new or old
        assert record is not None
        ref = Ref(record.name, record.incarnation)
        if new is None:
            self._forget(ref)
            return
        serving = self.active.serving.get(ref)
        if serving is not None and (new.active != self.me or new.epoch != serving.epoch):
            log.info(
                "no longer active",
                extra={"checkpoint": ref.name, "epoch": new.epoch, "active": str(new.active)},
            )
            self.active.stop(ref)
            self.replication.untrack(ref)
            serving = None
        if new.active == self.me:
            if serving is None and not (old is None and new.epoch == 1):
                self._promote(new)  # (epoch 1 active here: created here, served already)
            else:
                self.replication.track(new)
                if new.unlinked and (old is None or not old.unlinked):
                    self.active.unlinked(ref)
        elif not new.holds(self.me) and self.replicas.find(ref) is not None:
            self._forget(ref)  # this node no longer holds a replica of it
        if old is None or (old.active, old.epoch) != (new.active, new.epoch):
            self.openers.record_changed(ref)

    def members_changed(self, live: Mapping[str, Member]) -> None:
        gone = [m for m in self.live.values() if live.get(m.name) != m]
        self.live = dict(live)
        for member in gone:
            self.replication.forget_member(member)
        if gone:
            for ref in list(self.active.serving):
                self._drop_openers_of_gone(ref)

    # -- takeover ----------------------------------------------------------------

    def _promote(self, record: Record) -> None:
        ref = Ref(record.name, record.incarnation)
        if self._promoting.get(ref) == record.epoch:
            return
        self._promoting[ref] = record.epoch
        self._spawn(self._take_over(ref, record))

    async def _take_over(self, ref: Ref, record: Record) -> None:
        try:
            await self.active.become_active(record)
        except CkptError as error:
            log.warning("cannot take over", extra={"checkpoint": ref.name, "why": error.message})
            await self._give_up(ref)
            return
        finally:
            if self._promoting.get(ref) == record.epoch:
                del self._promoting[ref]
        current = self.directory.get(ref.incarnation)
        if current is not None and ref in self.active.serving:
            self.replication.track(current)
            self._drop_openers_of_gone(ref)
            if current.unlinked:
                self.active.unlinked(ref)

    async def _give_up(self, ref: Ref) -> None:
        """This node holds no copy to serve (it restarted, say): it leaves the
        in-sync set, so that the director picks another replica."""
        record = self.directory.get(ref.incarnation)
        if record is None or self.me not in record.in_sync:
            return
        in_sync = tuple(m for m in record.in_sync if m != self.me)
        try:
            await self.directory.set_in_sync(record, in_sync)
        except CkptError as error:
            log.warning(
                "in-sync leave failed", extra={"checkpoint": ref.name, "why": error.message}
            )

    def _drop_openers_of_gone(self, ref: Ref) -> None:
        """Handles of nodes that left the cluster are closed (their sessions
        died with them)."""
        replica = self.replicas.find(ref)
        if replica is None:
            return
        for node in [n for n in replica.openers if n not in self.live and n != self.me.name]:
            try:
                outcome = self.active.apply_internal(
                    ref, op.Openers(node, 0, False, self.clock.now())
                )
            except CkptError:
                return  # not active after all: the active does it
            self._spawn(self._settle(outcome))

    async def _settle(self, outcome: Outcome) -> None:
        try:
            await self.active.complete(outcome)
        except CkptError as error:
            log.info("openers update not completed", extra={"why": error.message})

    def _forget(self, ref: Ref) -> None:
        self.active.drop(ref)
        self.replication.forget(ref)

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
