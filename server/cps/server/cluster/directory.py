"""The directory of a cluster, in etcd: every node keeps a copy of the
records and members (a listing, then a watch from its revision) and
changes records only by compare-and-swap on their revision.

Changes seen on the watch are handed over per etcd revision, so that a
delete and a put made by one transaction (an unlink moves a record from
ckpt/ to unlinked/) are seen as one change of one instance.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

from cps.server.core.directory import Member, MemberStatus, NameTaken, Record, place
from cps.server.core.errors import CkptError, ErrorCode
from cps.server.core.types import CreationAttributes

from .etcd import (
    Compacted,
    Compare,
    Etcd,
    EtcdError,
    Event,
    EventType,
    KeyValue,
    RangeResult,
    compare_create_revision,
    compare_mod_revision,
    op_delete,
    op_get,
    op_put,
)
from .membership import Membership
from .records import Keys, member_of, record_of, record_value

log = logging.getLogger("cps.directory")

RecordChanged = Callable[[Record | None, Record | None], None]
MembersChanged = Callable[[Mapping[str, Member]], None]
DirectorChanged = Callable[[bytes | None, int], None]  # value, create_revision


def _conflict(name: str) -> CkptError:
    return CkptError(
        ErrorCode.TRY_AGAIN,
        f"the record of checkpoint {name!r} changed meanwhile",
        metadata={"cause": "conflict"},
    )


def _unreachable(error: Exception) -> CkptError:
    return CkptError(
        ErrorCode.TIMEOUT,
        f"the cluster's directory (etcd) did not answer: {error}",
        metadata={"cause": "unknown_outcome"},
    )


class EtcdDirectory:
    def __init__(
        self, etcd: Etcd, keys: Keys, membership: Membership, replicas_wanted: int
    ) -> None:
        self.etcd = etcd
        self.keys = keys
        self.membership = membership
        self.replicas_wanted = replicas_wanted
        self.by_name: dict[str, Record] = {}
        self.by_incarnation: dict[int, Record] = {}
        self.on_record: list[RecordChanged] = []
        self.on_members: list[MembersChanged] = []
        self.on_director: list[DirectorChanged] = []
        self.revision = 0
        # For the admin service: the lease of each member's key, and the
        # director as its key says (the Director acts on its own copy).
        self.member_leases: dict[str, int] = {}
        self.director: Member | None = None
        self.loaded = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def me(self) -> Member:
        return self.membership.me

    def records(self) -> list[Record]:
        return list(self.by_incarnation.values())

    # -- the copy ------------------------------------------------------------------

    async def start(self) -> None:
        await self._load()
        self._task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _load(self) -> None:
        """List everything; hand over what differs from the copy."""
        kvs, revision = await self.etcd.get_prefix(self.keys.root)
        members: dict[str, bytes] = {}
        leases: dict[str, int] = {}
        records: dict[int, Record] = {}
        director: KeyValue | None = None
        for kv in kvs:
            if kv.key.startswith(self.keys.members):
                members[kv.key[len(self.keys.members) :].decode()] = kv.value
                leases[kv.key[len(self.keys.members) :].decode()] = kv.lease
            elif kv.key == self.keys.director:
                director = kv
            else:
                record = self._decode(kv)
                if record is not None:
                    records[record.incarnation] = record
        self.membership.infos = {name: member_of(value) for name, value in members.items()}
        self.member_leases = leases
        self._members_changed()
        self._director_seen(None if director is None else director.value)
        for handler in self.on_director:
            handler(
                None if director is None else director.value,
                0 if director is None else director.create_revision,
            )
        changes: list[tuple[Record | None, Record | None]] = [
            (old, records.get(incarnation))
            for incarnation, old in self.by_incarnation.items()
            if records.get(incarnation) != old
        ]
        changes += [(None, r) for i, r in records.items() if i not in self.by_incarnation]
        for old, new in changes:
            self._put(old, new)
        self.revision = revision
        self.loaded.set()

    async def _watch(self) -> None:
        while True:
            try:
                async for events in self.etcd.watch_prefix(self.keys.root, self.revision + 1):
                    self._apply(events)
            except Compacted:
                log.warning("directory watch compacted: listing again")
                await self._reload()
            except EtcdError as error:
                log.warning("directory watch broken", extra={"why": str(error)})
                await asyncio.sleep(0.2)
                await self._reload()

    async def _reload(self) -> None:
        while True:
            try:
                await self._load()
                return
            except EtcdError as error:
                log.warning("directory listing failed", extra={"why": str(error)})
                await asyncio.sleep(0.5)

    def _apply(self, events: list[Event]) -> None:
        """One watch response: events of one or more revisions, in order."""
        members_touched = False
        by_instance: dict[int, Record | None] = {}
        for event in events:
            kv = event.kv
            self.revision = max(self.revision, kv.mod_revision)
            if kv.key.startswith(self.keys.members):
                name = kv.key[len(self.keys.members) :].decode()
                if event.type is EventType.DELETE:
                    self.membership.infos.pop(name, None)
                    self.member_leases.pop(name, None)
                else:
                    self.membership.infos[name] = member_of(kv.value)
                    self.member_leases[name] = kv.lease
                members_touched = True
            elif kv.key == self.keys.director:
                self._director_seen(None if event.type is EventType.DELETE else kv.value)
                for handler in self.on_director:
                    handler(
                        None if event.type is EventType.DELETE else kv.value, kv.create_revision
                    )
            elif event.type is EventType.DELETE:
                old = self._find_key(kv.key)
                if old is not None:
                    by_instance.setdefault(old.incarnation, None)
            else:
                record = self._decode(kv)
                if record is not None:
                    by_instance[record.incarnation] = record
        if members_touched:
            self._members_changed()
        for incarnation, new in by_instance.items():
            old = self.by_incarnation.get(incarnation)
            if new is not None and old is not None and new.version < old.version:
                continue  # our own write, seen already
            self._put(old, new)

    def _find_key(self, key: bytes) -> Record | None:
        if key.startswith(self.keys.checkpoints):
            return self.by_name.get(key[len(self.keys.checkpoints) :].decode())
        if key.startswith(self.keys.unlinked_prefix):
            return self.by_incarnation.get(int(key[len(self.keys.unlinked_prefix) :]))
        return None

    def _decode(self, kv: KeyValue) -> Record | None:
        live = kv.key.startswith(self.keys.checkpoints)
        if not live and not kv.key.startswith(self.keys.unlinked_prefix):
            return None
        try:
            return record_of(
                kv.value,
                create_revision=kv.create_revision,
                mod_revision=kv.mod_revision,
                live=live,
            )
        except (ValueError, KeyError, TypeError) as error:
            log.error("unreadable record", extra={"key": kv.key.decode(), "why": str(error)})
            return None

    def _put(self, old: Record | None, new: Record | None) -> None:
        """Update the copy and tell the handlers."""
        if old is not None:
            if self.by_name.get(old.name) == old:
                del self.by_name[old.name]
            self.by_incarnation.pop(old.incarnation, None)
        if new is not None:
            self.by_incarnation[new.incarnation] = new
            if not new.unlinked:
                self.by_name[new.name] = new
        if old == new:
            return
        for handler in self.on_record:
            try:
                handler(old, new)
            except Exception:
                log.exception("record change handler failed")

    def _director_seen(self, value: bytes | None) -> None:
        try:
            data = None if value is None else json.loads(value)
            self.director = None if data is None else Member(data["node"], int(data["incarnation"]))
        except (ValueError, KeyError, TypeError):
            self.director = None

    def _members_changed(self) -> None:
        live = self.membership.live
        for handler in self.on_members:
            try:
                handler(live)
            except Exception:
                log.exception("members change handler failed")

    # -- service.ports.Directory ------------------------------------------------------

    def members(self) -> list[MemberStatus]:
        me = self.me
        return [
            MemberStatus(
                info.member,
                info.address,
                info.version,
                director=info.member == self.director,
                lease_id=self.member_leases.get(name, 0),
                lease_remaining=self.membership.remaining() if info.member == me else None,
            )
            for name, info in sorted(self.membership.infos.items())
        ]

    def lookup(self, name: str) -> Record | None:
        return self.by_name.get(name)

    def get(self, incarnation: int) -> Record | None:
        return self.by_incarnation.get(incarnation)

    async def find(self, name: str) -> Record | None:
        try:
            kv = await self.etcd.get(self.keys.checkpoint(name))
        except EtcdError as error:
            raise CkptError(
                ErrorCode.TRY_AGAIN, f"the cluster's directory (etcd) did not answer: {error}"
            ) from error
        if kv is None:
            return None
        record = self._decode(kv)
        if record is not None:
            self._learn(record)
        return record

    def _learn(self, record: Record) -> None:
        """A record read or written here, maybe before the watch shows it."""
        old = self.by_incarnation.get(record.incarnation)
        if old is None or old.version < record.version:
            self._put(old, record)

    async def create(self, name: str, attributes: CreationAttributes) -> Record:
        live = self.membership.live
        others = [m for m in live.values() if m != self.me]
        # At most one replica per host, none on this node's host (its other
        # workers: docs/workers.md).
        hosts = self.membership.hosts
        backups = tuple(
            place(name, others, self.replicas_wanted - 1, hosts, [self.membership.host])
        )
        collocated = attributes.collocated
        record = Record(
            name=name,
            incarnation=0,
            attributes=attributes,
            epoch=0 if collocated else 1,
            active=None if collocated else self.me,
            replicas=(self.me, *backups),
            in_sync=(self.me, *backups),
        )
        key = self.keys.checkpoint(name)
        try:
            result = await self.etcd.txn(
                [compare_create_revision(key, "==", 0)],
                [op_put(key, record_value(record))],
                [op_get(key)],
            )
        except EtcdError as error:
            raise CkptError(
                ErrorCode.TRY_AGAIN, f"the cluster's directory (etcd) did not answer: {error}"
            ) from error
        if not result.succeeded:
            got = result.responses[0] if result.responses else None
            existing = got.kvs[0] if isinstance(got, RangeResult) and got.kvs else None
            taken = None if existing is None else self._decode(existing)
            if taken is None:
                raise _conflict(name)
            self._learn(taken)
            raise NameTaken(taken)
        created = replace(record, incarnation=result.revision, version=result.revision)
        self._learn(created)
        return created

    async def _swap(self, record: Record, new: Record, *, move: bool = False) -> Record:
        """Write ``new`` in place of ``record`` if it did not change."""
        old_key, new_key = self.keys.of(record), self.keys.of(new)
        success = [op_put(new_key, record_value(new))]
        if move:
            success.insert(0, op_delete(old_key))
        try:
            result = await self.etcd.txn(
                [compare_mod_revision(old_key, "==", record.version)], success, []
            )
        except EtcdError as error:
            raise _unreachable(error) from error
        if not result.succeeded:
            raise _conflict(record.name)
        written = replace(new, version=result.revision)
        if move:
            self._put(record, written)
        else:
            self._learn(written)
        return written

    async def unlink(self, record: Record) -> None:
        for _ in range(10):
            current = self.by_incarnation.get(record.incarnation, record)
            if current.unlinked:
                return
            try:
                await self._swap(current, replace(current, unlinked=True), move=True)
                return
            except CkptError as error:
                if error.metadata.get("cause") != "conflict":
                    raise
                await self.find(record.name)
        raise _conflict(record.name)

    async def remove(self, record: Record) -> None:
        for _ in range(10):
            current = self.by_incarnation.get(record.incarnation)
            if current is None:
                return
            key = self.keys.of(current)
            try:
                result = await self.etcd.txn(
                    [compare_mod_revision(key, "==", current.version)], [op_delete(key)], []
                )
            except EtcdError as error:
                raise _unreachable(error) from error
            if result.succeeded:
                self._put(current, None)
                return
            await self._refresh(current)
        raise _conflict(record.name)

    async def _refresh(self, record: Record) -> None:
        try:
            kv = await self.etcd.get(self.keys.of(record))
        except EtcdError as error:
            raise _unreachable(error) from error
        fresh = None if kv is None else self._decode(kv)
        if fresh is None or fresh.incarnation != record.incarnation:
            self._put(record, None)
        else:
            self._learn(fresh)

    async def set_active(self, record: Record, member: Member) -> Record:
        current = self.by_incarnation.get(record.incarnation, record)
        replicas = current.replicas if member in current.replicas else (*current.replicas, member)
        in_sync = current.in_sync
        new = replace(
            current, active=member, epoch=current.epoch + 1, replicas=replicas, in_sync=in_sync
        )
        try:
            return await self._swap(current, new)
        except CkptError as error:
            if error.metadata.get("cause") == "conflict":
                await self._refresh(current)
            raise

    async def set_in_sync(self, record: Record, in_sync: tuple[Member, ...]) -> Record:
        try:
            return await self._swap(record, replace(record, in_sync=in_sync))
        except CkptError as error:
            if error.metadata.get("cause") == "conflict":
                await self._refresh(record)
            raise

    async def write(self, record: Record, new: Record, guards: Iterable[Compare] = ()) -> bool:
        """The director's compare-and-swap (``guards``: its own fence)."""
        key = self.keys.of(record)
        try:
            result = await self.etcd.txn(
                [compare_mod_revision(key, "==", record.version), *guards],
                [op_put(key, record_value(new))],
                [],
            )
        except EtcdError as error:
            log.warning("director write failed", extra={"why": str(error)})
            return False
        if result.succeeded:
            self._learn(replace(new, version=result.revision))
        return bool(result.succeeded)

    async def delete_lost(self, record: Record, guards: Iterable[Compare] = ()) -> bool:
        key = self.keys.of(record)
        try:
            result = await self.etcd.txn(
                [compare_mod_revision(key, "==", record.version), *guards], [op_delete(key)], []
            )
        except EtcdError as error:
            log.warning("director delete failed", extra={"why": str(error)})
            return False
        if result.succeeded:
            self._put(record, None)
        return bool(result.succeeded)
