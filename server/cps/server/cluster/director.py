"""The director: one node of the cluster, elected through etcd, makes the
placement and failover decisions (core.directory.reconcile) and writes
them to the records.

It wins the election by creating the director key under its lease (a
create-if-absent transaction); the key's create_revision fences its
writes: each one also compares it, so a director that lost its lease
(paused, cut off) can no longer change anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from cps.server.core.directory import Member, lost, reconcile

from .directory import EtcdDirectory
from .etcd import Etcd, EtcdError, compare_create_revision, op_put
from .membership import Membership
from .records import Keys

log = logging.getLogger("cps.director")

# Reconcile at least this often, even when nothing seems to change.
PERIOD_SECONDS = 1.0


class Director:
    def __init__(
        self,
        etcd: Etcd,
        keys: Keys,
        membership: Membership,
        directory: EtcdDirectory,
        replicas_wanted: int,
    ) -> None:
        self.etcd = etcd
        self.keys = keys
        self.membership = membership
        self.directory = directory
        self.replicas_wanted = replicas_wanted
        self.holder: Member | None = None  # the director, as last seen
        # Checkpoints this node, as director, gave a new active because theirs
        # was lost (for the metrics: cps_failovers_total).
        self.failovers = 0
        self._mine = 0  # the create_revision of our director key, while we lead
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        directory.on_director.append(self._director_changed)
        directory.on_members.append(lambda live: self._wake.set())
        directory.on_record.append(lambda old, new: self._wake.set())

    @property
    def leading(self) -> bool:
        return self._mine != 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def _director_changed(self, value: bytes | None, create_revision: int) -> None:
        if value is None:
            self.holder = None
            if self._mine:
                log.warning("no longer the director")
            self._mine = 0
        else:
            data = json.loads(value)
            self.holder = Member(data["node"], int(data["incarnation"]))
            if self.holder != self.membership.me:
                self._mine = 0
        self._wake.set()

    async def _run(self) -> None:
        await self.directory.loaded.wait()
        while True:
            try:
                if not self.leading and self.holder is None:
                    await self._campaign()
                if self.leading:
                    await self._reconcile()
            except EtcdError as error:
                log.warning("director step failed", extra={"why": str(error)})
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), PERIOD_SECONDS)
            await asyncio.sleep(0.02)  # gather a burst of changes into one pass

    async def _campaign(self) -> None:
        if not self.membership.valid():
            return
        me = self.membership.me
        value = json.dumps({"node": me.name, "incarnation": me.incarnation}).encode()
        key = self.keys.director
        result = await self.etcd.txn(
            [compare_create_revision(key, "==", 0)],
            [op_put(key, value, lease=self.membership.lease_id)],
            [],
        )
        if result.succeeded:
            self._mine = result.revision
            self.holder = me
            log.info("director elected", extra={"member": str(me), "revision": self._mine})

    async def _reconcile(self) -> None:
        """Every record against the live members; each change fenced by our
        director key."""
        if not self.membership.valid():
            return
        live = self.membership.live
        hosts = self.membership.hosts  # at most one replica per host
        guard = compare_create_revision(self.keys.director, "==", self._mine)
        for record in self.directory.records():
            if lost(record, live):
                if await self.directory.delete_lost(record, [guard]):
                    log.warning(
                        "checkpoint lost: no live replica holds it",
                        extra={
                            "checkpoint": record.name,
                            "in_sync": [str(m) for m in record.in_sync],
                        },
                    )
                continue
            updated = reconcile(record, live, self.replicas_wanted, hosts)
            if updated is None:
                continue
            written = await self.directory.write(record, updated, [guard])
            if written and updated.active != record.active:
                self.failovers += 1
                log.warning(
                    "active replica changed",
                    extra={
                        "checkpoint": record.name,
                        "old": str(record.active),
                        "new": str(updated.active),
                        "epoch": updated.epoch,
                    },
                )
