"""The active side of replication: ship each applied operation to the
backups, wait for the in-sync ones where the write mode asks, keep the
in-sync set true, bring new backups up to date, and seal the replicas
before serving at a new epoch.

The in-sync set lives in the checkpoint's record. A backup leaves it (by
compare-and-swap) before any write is acknowledged without it; it comes
back only once it holds every write acknowledged without it, and from the
moment it starts coming back every new write waits for it too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from typing import Protocol

import grpc

from cps.peer.v1 import peer_pb2 as pb
from cps.server import failpoints
from cps.server.core import operations as op
from cps.server.core.directory import Member, Record
from cps.server.core.errors import CkptError, ErrorCode, unknown_outcome
from cps.server.core.replica import Changes, Ref, Replica
from cps.server.core.replicas import Replicas
from cps.server.status import seed_error_of

from . import codec
from .backup import Backups
from .channels import Channels
from .links import Link, LinkDropped, Sent
from .write_waits import WriteWaits

log = logging.getLogger("cps.replication")


class InSyncDirectory(Protocol):
    @property
    def me(self) -> Member: ...

    def get(self, incarnation: int) -> Record | None: ...

    async def set_in_sync(self, record: Record, in_sync: tuple[Member, ...]) -> Record:
        """Compare-and-swap of the record's in-sync set; raises CkptError
        when the record changed or cannot be written."""
        ...


class Membership(Protocol):
    @property
    def live(self) -> Mapping[str, Member]: ...

    def address_of(self, member: Member) -> str | None: ...


class _CatchUp:
    """A backup on its way (back) into the in-sync set."""

    __slots__ = ("joining", "target_seq", "writing")

    def __init__(self, target_seq: int) -> None:
        self.target_seq = target_seq
        self.joining = False  # writes wait for it; in-sync once it holds target_seq
        self.writing = False  # the record update is under way


class Replication:
    def __init__(
        self,
        replicas: Replicas,
        directory: InSyncDirectory,
        members: Membership,
        channels: Channels,
        backups: Backups,
        *,
        timeout: float,
        max_link_bytes: int,
    ) -> None:
        self.replicas = replicas
        self.directory = directory
        self.members = members
        self.channels = channels
        self.backups = backups
        self.timeout = timeout
        self.max_link_bytes = max_link_bytes
        self.links: dict[Member, Link] = {}
        self.sent = Sent()
        self._catch_up: dict[Ref, dict[Member, _CatchUp]] = {}
        self._catching: dict[Member, set[Ref]] = {}  # the same, by member
        self._tasks: set[asyncio.Task[None]] = set()
        self.waits = WriteWaits(timeout, self.drop_from_in_sync, self._spawn)

    @property
    def me(self) -> Member:
        return self.directory.me

    def link(self, member: Member) -> Link:
        link = self.links.get(member)
        if link is None:
            link = self.links[member] = Link(
                self.me,
                member,
                self.members.address_of,
                self.channels,
                max_bytes=self.max_link_bytes,
                on_resync=self._resync,
                on_fenced=self._fenced,
                on_overflow=self._overflow,
                on_acknowledged=self._acknowledged,
                sent=self.sent,
            )
        return link

    # -- service.ports.Replication -------------------------------------------

    def acknowledged(self, ref: Ref) -> Mapping[Member, int]:
        return {
            member: link.acked_seq[ref]
            for member, link in self.links.items()
            if ref in link.acked_seq
        }

    def ship(self, record: Record, replica: Replica, operation: op.Operation) -> None:
        targets = [m for m in record.replicas if m != self.me]
        if not targets:
            return
        ref = codec.ref_message(replica.ref)
        if (
            replica.attributes.weak
            and isinstance(operation, op.Write)
            and len(operation.elements) > 1
        ):
            self._ship_in_parts(targets, replica, ref, operation)
            return
        stamped = pb.StampedOperation(
            ref=ref,
            epoch=replica.epoch,
            seq=replica.seq,
            operation=codec.operation_message(operation),
        )
        item = pb.Item(operation=stamped).SerializeToString()
        for member in targets:
            self.link(member).enqueue(replica.ref, replica.seq, item)

    def _ship_in_parts(
        self, targets: list[Member], replica: Replica, ref: pb.Ref, operation: op.Write
    ) -> None:
        """A weak write goes element by element (see StampedOperation)."""
        parts = len(operation.elements)
        items = [
            pb.Item(
                operation=pb.StampedOperation(
                    ref=ref,
                    epoch=replica.epoch,
                    seq=replica.seq,
                    operation=codec.operation_message(op.Write((element,), operation.at)),
                    part=number,
                    parts=parts,
                )
            ).SerializeToString()
            for number, element in enumerate(operation.elements, start=1)
        ]
        crash = failpoints.armed("exit-after-first-weak-part")
        for member in targets:
            link = self.link(member)
            for number, item in enumerate(items, start=1):
                index = link.enqueue(replica.ref, replica.seq, item, last_part=number == parts)
                if crash and number == 1:
                    link.fail_after_ack = index

    def replicated(self, record: Record, replica: Replica) -> Awaitable[None] | None:
        ref = replica.ref
        waiting = {m for m in record.in_sync if m != self.me}
        waiting.update(m for m, c in self._catch_up.get(ref, {}).items() if c.joining)
        if not waiting:
            return None
        seq = replica.seq
        # A future, not a bare coroutine: the writer awaits it, and so does
        # the notification that waits for the same acknowledgement.
        return self.waits.wait(ref, seq, {m: self.link(m).wait(ref, seq) for m in waiting})

    async def drop_from_in_sync(self, ref: Ref, members: list[Member], why: str) -> None:
        """Members leave the in-sync set before anything is acknowledged
        without them; where that cannot be done the outcome is unknown."""
        for member in members:
            self._stop(ref, member)
        for _ in range(5):
            record = self.directory.get(ref.incarnation)
            if record is None or record.active != self.me:
                raise unknown_outcome(ref.name, "this node stopped being its active replica")
            in_sync = tuple(m for m in record.in_sync if m not in members or m == self.me)
            if in_sync == record.in_sync:
                return
            try:
                await self.directory.set_in_sync(record, in_sync)
            except CkptError as error:
                if error.code is ErrorCode.TIMEOUT:
                    raise
                continue  # the record moved: look again
            log.warning(
                "replica left the in-sync set",
                extra={"checkpoint": ref.name, "replicas": [str(m) for m in members], "why": why},
            )
            return
        raise unknown_outcome(ref.name, "its record kept changing")

    def notify(self, record: Record, nodes: list[str], changes: Changes) -> None:
        item = pb.Item(
            notification=pb.Notification(
                ref=codec.ref_message(Ref(record.name, record.incarnation)),
                changes=codec.changes_message(changes),
            )
        ).SerializeToString()
        live = self.members.live
        for node in nodes:
            member = live.get(node)
            if member is not None and member != self.me:
                self.link(member).enqueue(None, 0, item, urgent=True)

    async def seal(self, record: Record) -> tuple[bytes, ...]:
        """Fence the other replicas at ``record.epoch`` and take the most
        advanced state among this node and them."""
        ref = Ref(record.name, record.incarnation)
        mine = self.replicas.find(ref)
        if mine is not None and mine.epoch < record.epoch:
            mine.epoch = record.epoch  # refuse the old active's late operations here too
        others = [m for m in record.replicas if m != self.me]
        answers = await asyncio.gather(*(self._seal_one(m, ref, record) for m in others))
        best: tuple[int, Member] | None = None
        for member, answer in zip(others, answers, strict=True):
            if answer is not None and answer.held and (best is None or answer.seq > best[0]):
                best = (answer.seq, member)
        if best is not None and (mine is None or best[0] > mine.seq):
            fetched = await self._fetch(best[1], ref, record.epoch)
            if fetched is not None:
                fetched.epoch = max(fetched.epoch, record.epoch)
                self.replicas.add(fetched)
                mine = fetched
        if mine is None:
            raise CkptError(
                ErrorCode.NOT_EXIST, f"no replica of checkpoint {ref.name!r} could be found"
            )
        return self.backups.interrupted(ref)

    async def _seal_one(self, member: Member, ref: Ref, record: Record) -> pb.SealResponse | None:
        address = self.members.address_of(member)
        if address is None:
            return None
        request = pb.SealRequest(
            ref=codec.ref_message(ref),
            epoch=record.epoch,
            active=codec.member_message(self.me),
        )
        try:
            response: pb.SealResponse = await self.channels.stub(address).Seal(
                request, timeout=self.timeout, metadata=self.channels.metadata or None
            )
        except grpc.aio.AioRpcError as error:
            log.info("seal failed", extra={"peer": str(member), "code": error.code().name})
            return None
        return response

    async def _fetch(self, member: Member, ref: Ref, epoch: int) -> Replica | None:
        address = self.members.address_of(member)
        if address is None:
            return None
        parts: list[pb.SnapshotPart] = []
        try:
            call = self.channels.stub(address).Fetch(
                pb.FetchRequest(ref=codec.ref_message(ref), epoch=epoch),
                timeout=max(self.timeout, 30.0),
                metadata=self.channels.metadata or None,
            )
            async for response in call:
                parts.append(response.part)
        except grpc.aio.AioRpcError as error:
            log.warning(
                "fetch failed",
                extra={
                    "peer": str(member),
                    "checkpoint": ref.name,
                    "why": str(seed_error_of(error)),
                },
            )
            return None
        if not parts or not parts[-1].last:
            return None
        log.info("caught up from a backup", extra={"peer": str(member), "checkpoint": ref.name})
        return codec.replica_of(parts)

    # -- keeping the backups and the in-sync set (for checkpoints active here)

    def track(self, record: Record) -> None:
        """The record of a checkpoint active here changed (or it was just
        promoted): bring new backups up to date, forget removed ones."""
        ref = Ref(record.name, record.incarnation)
        replica = self.replicas.find(ref)
        if replica is None:
            return
        catching = self._catch_up.get(ref, {})
        for member in list(catching):
            if member not in record.replicas or member in record.in_sync:
                self._stop(ref, member)
        for member, link in list(self.links.items()):
            if member not in record.replicas:
                link.forget(ref)
        for member in record.replicas:
            if member == self.me or member in record.in_sync or member in catching:
                continue
            link = self.link(member)
            if ref not in link.acked_seq:
                self._send_whole(member, replica)
            self._catch_up.setdefault(ref, {})[member] = _CatchUp(replica.seq)
            self._catching.setdefault(member, set()).add(ref)
        self._progress(ref)

    def untrack(self, ref: Ref) -> None:
        """No longer active for ``ref``."""
        for member in list(self._catch_up.get(ref, ())):
            self._stop(ref, member)

    def _stop(self, ref: Ref, member: Member) -> None:
        catching = self._catch_up.get(ref)
        if catching is not None:
            catching.pop(member, None)
            if not catching:
                del self._catch_up[ref]
        refs = self._catching.get(member)
        if refs is not None:
            refs.discard(ref)
            if not refs:
                del self._catching[member]

    def _send_whole(self, member: Member, replica: Replica) -> None:
        link = self.link(member)
        parts = list(codec.snapshot_parts(replica))
        for part in parts:
            item = pb.Item(snapshot=part).SerializeToString()
            link.enqueue(replica.ref, replica.seq, item, snapshot=True, last_part=part.last)

    def _progress(self, ref: Ref) -> None:
        catching = self._catch_up.get(ref)
        replica = self.replicas.find(ref)
        if not catching or replica is None:
            return
        for member, state in catching.items():
            acked = self.link(member).acked_seq.get(ref, 0)
            if acked < state.target_seq:
                continue
            if not state.joining:
                # From now on writes wait for it; it joins once it also holds
                # everything acknowledged before this moment.
                state.joining = True
                state.target_seq = replica.seq
                if acked < state.target_seq:
                    continue
            if not state.writing:
                state.writing = True
                self._spawn(self._join(ref, member, state))

    async def _join(self, ref: Ref, member: Member, state: _CatchUp) -> None:
        record = self.directory.get(ref.incarnation)
        if record is None or record.active != self.me or member not in record.replicas:
            return
        if member not in record.in_sync:
            try:
                await self.directory.set_in_sync(record, (*record.in_sync, member))
            except CkptError as error:
                log.info(
                    "in-sync join deferred", extra={"checkpoint": ref.name, "why": error.message}
                )
                state.writing = False  # the next acknowledgement or record change tries again
                return
        self._stop(ref, member)
        log.info("replica in sync", extra={"checkpoint": ref.name, "replica": str(member)})

    # -- link events ---------------------------------------------------------------

    def _acknowledged(self, member: Member) -> None:
        for ref in list(self._catching.get(member, ())):
            self._progress(ref)

    def _resync(self, member: Member, ref: Ref) -> None:
        record = self.directory.get(ref.incarnation)
        replica = self.replicas.find(ref)
        if record is None or record.active != self.me or replica is None:
            return
        self._send_whole(member, replica)

    def _fenced(self, member: Member, ref: Ref, epoch: int) -> None:
        log.warning(
            "a replica refused this node's operations (a newer active exists)",
            extra={"checkpoint": ref.name, "replica": str(member), "epoch": epoch},
        )

    def _overflow(self, member: Member) -> None:
        """The member fell too far behind: it leaves every in-sync set of
        ours, and is sent whole again."""
        for ref in list(self.replicas.by_ref):
            record = self.directory.get(ref.incarnation)
            if record is None or record.active != self.me or member not in record.replicas:
                continue
            if member in record.in_sync:
                self._spawn(self._drop_quietly(ref, member))
            self._stop(ref, member)

    async def _drop_quietly(self, ref: Ref, member: Member) -> None:
        try:
            await self.drop_from_in_sync(ref, [member], "fell too far behind")
        except CkptError as error:
            log.warning("in-sync drop failed", extra={"checkpoint": ref.name, "why": error.message})

    def forget(self, ref: Ref) -> None:
        self.untrack(ref)
        self.backups.forget(ref)
        for link in self.links.values():
            link.forget(ref)

    def forget_member(self, member: Member) -> None:
        """A member left the cluster: close its link."""
        link = self.links.pop(member, None)
        if link is not None:
            link.close()
        for ref in list(self._catching.get(member, ())):
            self._stop(ref, member)

    async def close(self) -> None:
        self.waits.close()
        for link in self.links.values():
            link.close()
        self.links.clear()

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


__all__ = ["LinkDropped", "Replication"]
