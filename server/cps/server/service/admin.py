"""The management information model (the seed's chapter 4), read only: the
nodes, the checkpoints and their replicas, the sections of one checkpoint,
and this node's sessions, from what the node already holds (its replicas,
its sessions, its copy of the directory) and, for one checkpoint's details,
its active replica wherever it is. Nothing here changes anything."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import cast

from cps.server.core import calls as c
from cps.server.core.directory import Member, MemberStatus, Record
from cps.server.core.errors import CkptError, ErrorCode
from cps.server.core.replica import Ref, Replica
from cps.server.core.sessions import Session
from cps.server.core.types import CheckpointDescriptor, SectionDescriptor, SectionsChosen

from .checkpoints import Checkpoints

DEFAULT_PAGE = 100
MAX_PAGE = 1000
# How long GetCheckpoint waits for a checkpoint's active replica on another
# node before it answers from what this node holds.
ASK_ACTIVE_SECONDS = 3.0


def version() -> str:
    try:
        return metadata.version("cps")
    except metadata.PackageNotFoundError:
        return "unknown"


class Source(enum.Enum):
    """Where a checkpoint's sections and memory figures came from."""

    ACTIVE_REPLICA = 1
    BACKUP_REPLICA = 2  # this node's backup (may lag an asynchronous checkpoint)
    RECORD = 3  # the directory alone: no figures


@dataclass(frozen=True, slots=True)
class ReplicaView:
    member: Member
    active: bool
    in_sync: bool
    applied_seq: int | None  # known on the active only (and for a replica held here)
    lag: int | None  # the active's seq minus this one's: known on the active only


@dataclass(frozen=True, slots=True)
class CheckpointView:
    record: Record
    number_of_sections: int
    memory_used: int
    source: Source
    replicas: tuple[ReplicaView, ...]
    open_handles: int


@dataclass(frozen=True, slots=True)
class NodeView:
    status: MemberStatus
    answering: bool
    serving: bool | None  # the answering node's health; None for another node
    clustered: bool
    replicas_held: int = 0
    active_replicas: int = 0
    sessions: int = 0
    revision: int = 0


def page_size(asked: int) -> int:
    return DEFAULT_PAGE if asked == 0 else min(asked, MAX_PAGE)


class Admin:
    def __init__(
        self,
        checkpoints: Checkpoints,
        *,
        address: str,
        clustered: bool,
        serving: Callable[[], bool],
    ) -> None:
        self.checkpoints = checkpoints
        self.directory = checkpoints.directory
        self.replicas = checkpoints.replicas
        self.sessions = checkpoints.sessions
        self.replication = checkpoints.active.replication
        self.me = checkpoints.me
        self.address = address
        self.clustered = clustered
        self.serving = serving
        self.version = version()

    # -- nodes -----------------------------------------------------------------------

    def nodes(self) -> list[NodeView]:
        members = self.directory.members()
        if all(status.member != self.me for status in members):
            # Not (or no longer) in the directory: joining, or its lease lost.
            members.append(MemberStatus(self.me, self.address, self.version, False, 0))
        views = []
        for status in sorted(members, key=lambda s: s.member.name):
            if status.member != self.me:
                views.append(NodeView(status, False, None, self.clustered))
                continue
            if not status.address or not status.version:
                status = MemberStatus(
                    status.member,
                    status.address or self.address,
                    status.version or self.version,
                    status.director,
                    status.lease_id,
                    status.lease_remaining,
                )
            held = list(self.replicas.by_ref.values())
            views.append(
                NodeView(
                    status,
                    answering=True,
                    serving=self.serving(),
                    clustered=self.clustered,
                    replicas_held=len(held),
                    active_replicas=sum(1 for r in held if r.active == self.me.name),
                    sessions=len(self.sessions.sessions),
                    revision=self.directory.revision,
                )
            )
        return views

    # -- checkpoints -------------------------------------------------------------------

    def live_records(self, prefix: str) -> list[Record]:
        """Live (not unlinked) checkpoints whose name starts with ``prefix``, by name."""
        records = [r for r in self.directory.records() if not r.unlinked]
        return sorted((r for r in records if r.name.startswith(prefix)), key=lambda r: r.name)

    def list_checkpoints(
        self,
        prefix: str,
        size: int,
        token: str,
        visible: Callable[[str], bool] = lambda name: True,
    ) -> tuple[list[CheckpointView], str]:
        """A page of the checkpoints ``visible`` lets through, after ``token``
        (the last name of the page before); details from this node's replica
        where it holds one."""
        records = [
            r
            for r in self.live_records(prefix)
            if (not token or r.name > token) and visible(r.name)
        ]
        size = page_size(size)
        page = records[:size]
        next_token = page[-1].name if len(records) > size else ""
        return [self._view(record, None) for record in page], next_token

    async def checkpoint(self, name: str) -> CheckpointView:
        """One checkpoint, its figures from its active replica when it answers
        (wherever it is), else from this node's replica, else the record."""
        record = self._record(name)
        ref = Ref(record.name, record.incarnation)
        held = self.replicas.find(ref)
        if record.active is not None and record.active != self.me:
            try:
                status = await asyncio.wait_for(
                    self.checkpoints.route(ref, c.StatusCall()), ASK_ACTIVE_SECONDS
                )
                return self._view(record, cast(CheckpointDescriptor, status))
            except (CkptError, TimeoutError):
                pass  # what this node holds, below (and the source says so)
        return self._view(self.directory.get(record.incarnation) or record, None, held)

    def _record(self, name: str) -> Record:
        record = self.directory.lookup(name)
        if record is None:
            raise CkptError(ErrorCode.NOT_EXIST, f"checkpoint {name!r} does not exist")
        return record

    def _view(
        self,
        record: Record,
        descriptor: CheckpointDescriptor | None,
        held: Replica | None = None,
    ) -> CheckpointView:
        ref = Ref(record.name, record.incarnation)
        if held is None:
            held = self.replicas.find(ref)
        active_here = record.active == self.me and held is not None
        acknowledged = self.replication.acknowledged(ref) if active_here else {}
        replicas = []
        for member in _active_first(record):
            applied: int | None = None
            lag: int | None = None
            if held is not None and member == self.me:
                applied = held.seq
                lag = 0 if active_here else None
            elif active_here and held is not None and member in acknowledged:
                applied = acknowledged[member]
                lag = max(0, held.seq - applied)
            replicas.append(
                ReplicaView(member, member == record.active, member in record.in_sync, applied, lag)
            )
        if descriptor is not None:
            source, sections, memory = (
                Source.ACTIVE_REPLICA,
                descriptor.number_of_sections,
                descriptor.memory_used,
            )
        elif held is not None:
            source = Source.ACTIVE_REPLICA if active_here else Source.BACKUP_REPLICA
            sections, memory = len(held.sections), held.memory_used
        else:
            source, sections, memory = Source.RECORD, 0, 0
        open_handles = held.open_handles if held is not None else 0
        return CheckpointView(record, sections, memory, source, tuple(replicas), open_handles)

    # -- sections ----------------------------------------------------------------------

    async def sections(
        self, name: str, size: int, token: bytes | None
    ) -> tuple[list[SectionDescriptor], bytes | None, Source]:
        """A page of one checkpoint's section descriptors by id, after
        ``token`` (the last id of the page before); from its active replica,
        else this node's backup."""
        record = self._record(name)
        ref = Ref(record.name, record.incarnation)
        size = page_size(size)
        held = self.replicas.find(ref)
        if record.active is None and held is not None:
            # No active replica (collocated, before ActiveReplicaSet): this
            # node's own copy.
            described = sorted(
                (section.descriptor() for section in held.sections.values()),
                key=lambda d: d.section_id,
            )
            later = [d for d in described if token is None or d.section_id > token]
            more = len(later) > size
            page = later[:size]
            return page, page[-1].section_id if more else None, Source.BACKUP_REPLICA
        ids = cast(
            list[bytes], await self.checkpoints.route(ref, c.IterateCall(SectionsChosen.ANY, None))
        )
        ids = sorted(i for i in ids if token is None or i > token)
        page = []
        for section_id in ids:
            if len(page) == size:
                return page, page[-1].section_id, Source.ACTIVE_REPLICA
            descriptor = await self.checkpoints.route(ref, c.DescribeCall(section_id))
            if descriptor is not None:  # deleted meanwhile
                page.append(cast(SectionDescriptor, descriptor))
        return page, None, Source.ACTIVE_REPLICA

    # -- sessions ----------------------------------------------------------------------

    def sessions_of(self, who: str) -> list[Session]:
        """This node's sessions that ``who`` initialized (a caller sees its own)."""
        return sorted(
            (s for s in self.sessions.sessions.values() if s.owner == who),
            key=lambda s: s.session_id,
        )


def _active_first(record: Record) -> list[Member]:
    members = list(record.replicas)
    if record.active is not None and record.active in members:
        members.remove(record.active)
        members.insert(0, record.active)
    for member in record.in_sync:
        if member not in members:
            members.append(member)
    return members
