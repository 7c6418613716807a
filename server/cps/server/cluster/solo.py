"""A cluster of one: the embedded default, with nothing to install or run.

Its directory lives in memory (the records are rebuilt from the store at
start); every checkpoint is active here, or has no active replica yet
(collocated); there are no other replicas to ship to or seal.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import replace

from cps.server.core.calls import Call
from cps.server.core.directory import Member, MemberStatus, Record
from cps.server.core.errors import CkptError, ErrorCode
from cps.server.core.operations import Operation
from cps.server.core.replica import Changes, Ref, Replica
from cps.server.core.rules import Answer
from cps.server.core.types import CreationAttributes


class SoloDirectory:
    def __init__(self, me: Member) -> None:
        self._me = me
        self.by_name: dict[str, Record] = {}  # live names
        self.by_incarnation: dict[int, Record] = {}
        self._incarnations = itertools.count(1)
        # (old, new) after each change, as EtcdDirectory.on_record.
        self.on_record: list[Callable[[Record | None, Record | None], None]] = []

    @property
    def me(self) -> Member:
        return self._me

    def lookup(self, name: str) -> Record | None:
        return self.by_name.get(name)

    async def find(self, name: str) -> Record | None:
        return self.by_name.get(name)

    def get(self, incarnation: int) -> Record | None:
        return self.by_incarnation.get(incarnation)

    def add(self, name: str, attributes: CreationAttributes, *, epoch: int, active: bool) -> Record:
        """A record for a new instance (created, or restored from the store)."""
        record = Record(
            name=name,
            incarnation=next(self._incarnations),
            attributes=attributes,
            epoch=epoch,
            active=self._me if active else None,
            replicas=(self._me,),
            in_sync=(self._me,),
        )
        self._put(record)
        return record

    async def create(self, name: str, attributes: CreationAttributes) -> Record:
        collocated = attributes.collocated
        return self.add(name, attributes, epoch=0 if collocated else 1, active=not collocated)

    async def unlink(self, record: Record) -> None:
        if self.by_name.get(record.name) == record:
            del self.by_name[record.name]
        self._put(replace(record, unlinked=True))

    async def remove(self, record: Record) -> None:
        if self.by_name.get(record.name, record).incarnation == record.incarnation:
            self.by_name.pop(record.name, None)
        old = self.by_incarnation.pop(record.incarnation, None)
        self._tell(old, None)

    def discard(self, incarnation: int) -> None:
        """Forget an instance at once (its creation was rolled back)."""
        record = self.by_incarnation.pop(incarnation, None)
        if record is not None and self.by_name.get(record.name) == record:
            del self.by_name[record.name]
        self._tell(record, None)

    async def set_active(self, record: Record, member: Member) -> Record:
        current = self.by_incarnation.get(record.incarnation)
        if current is None:
            raise CkptError(ErrorCode.NOT_EXIST, f"checkpoint {record.name!r} no longer exists")
        updated = replace(current, active=member, epoch=current.epoch + 1)
        self._put(updated)
        return updated

    # -- reads for the admin service --------------------------------------------

    def records(self) -> list[Record]:
        return list(self.by_incarnation.values())

    def members(self) -> list[MemberStatus]:
        """Itself alone (its address is the node's to tell)."""
        return [MemberStatus(self._me, "", "", director=True, lease_id=0)]

    @property
    def revision(self) -> int:
        return 0

    def _put(self, record: Record) -> None:
        old = self.by_incarnation.get(record.incarnation)
        self.by_incarnation[record.incarnation] = record
        if not record.unlinked:
            self.by_name[record.name] = record
        self._tell(old, record)

    def _tell(self, old: Record | None, new: Record | None) -> None:
        if old == new:
            return
        for handler in self.on_record:
            handler(old, new)


class NoReplication:
    """No other node holds a replica."""

    def ship(self, record: Record, replica: Replica, operation: Operation) -> None:
        return None

    def replicated(self, record: Record, replica: Replica) -> None:
        return None

    def notify(self, record: Record, nodes: list[str], changes: Changes) -> None:
        return None

    def acknowledged(self, ref: Ref) -> Mapping[Member, int]:
        return {}

    async def seal(self, record: Record) -> tuple[bytes, ...]:
        return ()


class NoForwarder:
    """Every active replica is on this node."""

    async def call(self, record: Record, call: Call) -> Answer | bytes:
        raise CkptError(ErrorCode.INTERNAL, f"checkpoint {record.name!r} is active on another node")
