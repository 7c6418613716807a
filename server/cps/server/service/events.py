"""Service events derived from what the directory tells this node: members
joining and leaving, and each change of a checkpoint's record (created,
unlinked, deleted, its active replica, its replicas and in-sync set).

Every node of a cluster follows every record and member, so every node's
feed has these; what happens on one node only (expiry, limits, storage,
its lease) is emitted where it happens (service/active.py, node_events.py).
"""

from __future__ import annotations

from collections.abc import Mapping

from cps.server.core.directory import Member, Record
from cps.server.core.service_events import (
    ActiveDetail,
    CheckpointDetail,
    EventKind,
    EventLog,
    NodeDetail,
    ReplicaDetail,
)


class DirectoryEvents:
    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.live: dict[str, Member] | None = None  # None: not seen yet

    def members_changed(self, live: Mapping[str, Member]) -> None:
        """The first call is the membership as this node found it (no
        events); later ones are reported as differences."""
        previous, self.live = self.live, dict(live)
        if previous is None:
            return
        for name, member in sorted(previous.items()):
            if live.get(name) != member:
                self.log.emit(EventKind.NODE_LEFT, "", NodeDetail(name, member.incarnation))
        for name, member in sorted(live.items()):
            if previous.get(name) != member:
                self.log.emit(EventKind.NODE_JOINED, "", NodeDetail(name, member.incarnation))

    def _alive(self, member: Member) -> bool:
        return self.live is None or self.live.get(member.name) == member

    def record_changed(self, old: Record | None, new: Record | None) -> None:
        emit = self.log.emit
        if new is None:
            if old is not None:
                emit(
                    EventKind.CHECKPOINT_DELETED,
                    old.name,
                    CheckpointDetail(old.incarnation),
                )
            return
        name, incarnation = new.name, new.incarnation
        if old is None:
            if new.unlinked:
                return  # an unlinked instance first seen: nothing new
            emit(EventKind.CHECKPOINT_CREATED, name, CheckpointDetail(incarnation))
            for member in new.replicas:
                if member != new.active:
                    emit(EventKind.REPLICA_CREATED, name, _replica(member, incarnation))
            return
        if new.unlinked and not old.unlinked:
            emit(EventKind.CHECKPOINT_UNLINKED, name, CheckpointDetail(incarnation))
        if old.active != new.active:
            emit(
                EventKind.ACTIVE_CHANGED,
                name,
                ActiveDetail(
                    old_node="" if old.active is None else old.active.name,
                    new_node="" if new.active is None else new.active.name,
                    new_incarnation=0 if new.active is None else new.active.incarnation,
                    epoch=new.epoch,
                    why=self._why(old, new),
                    checkpoint_incarnation=incarnation,
                ),
            )
        for member in new.replicas:
            if member not in old.replicas:
                emit(EventKind.REPLICA_CREATED, name, _replica(member, incarnation))
        for member in new.in_sync:
            if member not in old.in_sync:
                emit(EventKind.REPLICA_CAUGHT_UP, name, _replica(member, incarnation))
        for member in old.replicas:
            if member in new.replicas and (member in new.in_sync or member not in old.in_sync):
                continue
            if not self._alive(member):
                why = "node left"
            elif member not in new.replicas:
                why = "no longer placed"
            else:
                why = "left the in-sync set"
            emit(EventKind.REPLICA_LOST, name, _replica(member, incarnation, why))

    def _why(self, old: Record, new: Record) -> str:
        if old.active is not None and not self._alive(old.active):
            if new.active is None:
                return f"failover: {old.active.name} left; collocated, no active until set"
            return f"failover: {old.active.name} left"
        if old.active is None:
            return "active replica set"
        if new.attributes.collocated:
            return "active replica set"
        return "switchover"


def _replica(member: Member, incarnation: int, why: str = "") -> ReplicaDetail:
    return ReplicaDetail(member.name, member.incarnation, incarnation, why)
