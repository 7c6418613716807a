"""What the use cases need from the rest of the node, as protocols: the
directory of checkpoints, the other replicas, the store. cluster/ and
storage/ implement them; node.py plugs them in. Nothing here imports grpc,
etcd or SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import BinaryIO, Protocol

from cps.server.core.calls import Call
from cps.server.core.directory import Member, MemberStatus, Record
from cps.server.core.operations import Operation
from cps.server.core.replica import Changes, Ref, Replica
from cps.server.core.rules import Answer
from cps.server.core.types import CreationAttributes


class Directory(Protocol):
    """The records of every checkpoint instance (core/directory.py)."""

    @property
    def me(self) -> Member: ...

    def lookup(self, name: str) -> Record | None:
        """The live (not unlinked) record of ``name`` as last seen here."""
        ...

    async def find(self, name: str) -> Record | None:
        """As lookup, but asks the source of truth: for a name not seen here
        yet (created on another node a moment ago)."""
        ...

    def get(self, incarnation: int) -> Record | None: ...

    async def create(self, name: str, attributes: CreationAttributes) -> Record:
        """A new instance with this node active; raises NameTaken."""
        ...

    async def unlink(self, record: Record) -> None:
        """The name is free again; the instance lives while handles remain."""
        ...

    async def remove(self, record: Record) -> None:
        """The instance is gone (last close after unlink, retention, lost)."""
        ...

    async def set_active(self, record: Record, member: Member) -> Record:
        """``member`` becomes active at epoch + 1 (ActiveReplicaSet)."""
        ...

    # -- reads for the admin service (change nothing) ------------------------------

    def records(self) -> list[Record]:
        """Every instance known here, live and unlinked."""
        ...

    def members(self) -> list[MemberStatus]:
        """The live members, this node included."""
        ...

    @property
    def revision(self) -> int:
        """The position of the source of truth this copy has applied (an etcd
        revision; 0 on a single node)."""
        ...


class ClusterDirectory(Directory, Protocol):
    async def set_in_sync(self, record: Record, in_sync: tuple[Member, ...]) -> Record:
        """Compare-and-swap of the record's in-sync set; raises CkptError
        when the record changed (TRY_AGAIN) or cannot be written (TIMEOUT)."""
        ...


class Tracking(Protocol):
    """The cluster's side of the checkpoints this node holds."""

    def track(self, record: Record) -> None:
        """The record of a checkpoint active here changed: bring new backups
        up to date, forget removed ones."""
        ...

    def untrack(self, ref: Ref) -> None:
        """No longer active for ``ref``."""
        ...

    def forget(self, ref: Ref) -> None:
        """This node holds no replica of ``ref`` any more."""
        ...

    def forget_member(self, member: Member) -> None:
        """A member left the cluster."""
        ...


class Replication(Protocol):
    """The other replicas of the checkpoints this node is active for."""

    def ship(self, record: Record, replica: Replica, operation: Operation) -> None:
        """Send an applied operation (it is replica.seq) to the backups, in order."""
        ...

    def replicated(self, record: Record, replica: Replica) -> Awaitable[None] | None:
        """Done when every in-sync backup holds replica.seq (None: nothing to
        wait for); awaitable more than once (the writer and the notification
        of its change both wait for it). A backup that does not answer in
        time leaves the in-sync set before this is done; where that fails
        the outcome is unknown (CkptError TIMEOUT)."""
        ...

    def notify(self, record: Record, nodes: list[str], changes: Changes) -> None:
        """Immediate-consumption notifications for sessions on other nodes."""
        ...

    def acknowledged(self, ref: Ref) -> Mapping[Member, int]:
        """For a checkpoint active here: the operations (seq) each backup
        has acknowledged, where known (a read for the admin service)."""
        ...

    async def seal(self, record: Record) -> tuple[bytes, ...]:
        """Before this node serves as active at ``record.epoch``: the other
        replicas raise their fence to it, and the replica held here catches
        up with the most advanced of them (it may fetch it whole). Returns
        the sections of a weak write the replica here holds only in part."""
        ...


class Forwarder(Protocol):
    """Calls on the active replica when it is on another node."""

    async def call(self, record: Record, call: Call) -> Answer | bytes:
        """Raises CkptError as the active answered, or TRY_AGAIN/TIMEOUT
        when it cannot be reached."""
        ...


class Persistence(Protocol):
    """This node's store of its replicas (storage/journal.py)."""

    def stored(self, replica: Replica, operation: Operation, changes: Changes) -> None:
        """Record what an applied operation changed."""
        ...

    def dropped(self, ref: Ref) -> None:
        """The replica is gone from this node."""
        ...

    def durable(self) -> asyncio.Future[None] | None:
        """Done when everything recorded so far is stored (None: already)."""
        ...

    def after_durable(self, action: Callable[[], None]) -> None:
        """Run ``action`` once everything recorded so far is stored, in order."""
        ...


class Snapshots(Protocol):
    """Consistent copies of this node's store (storage/sqlite_store.py)."""

    schema_version: int

    def snapshot(self) -> BinaryIO:
        """A copy of the store as of one moment, open at its start (it has no
        name: it goes when it is closed); blocking, call it off the loop. An
        exception: the copy could not be made."""
        ...


class Lease(Protocol):
    """Whether this node may still act as an active replica."""

    def check(self) -> None:
        """Raise CkptError TRY_AGAIN past the lease deadline."""
        ...


class NoPersistence:
    """A node that keeps server checkpoints in memory only."""

    def stored(self, replica: Replica, operation: Operation, changes: Changes) -> None:
        return None

    def dropped(self, ref: Ref) -> None:
        return None

    def durable(self) -> asyncio.Future[None] | None:
        return None

    def after_durable(self, action: Callable[[], None]) -> None:
        action()


class ForeverLease:
    """A single node: nobody else can take its checkpoints over."""

    def check(self) -> None:
        return None
