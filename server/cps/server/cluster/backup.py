"""This node as a backup: it applies what active replicas on other nodes
ship to it, in order, and refuses what a deposed active sends.

The fence of a replica is its epoch: an operation of a lower epoch is
refused (the sender learns it is no longer active); a gap in the sequence,
or an operation of a higher epoch that does not follow on, means this
replica missed something and asks to be sent whole.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from cps.peer.v1 import peer_pb2 as pb
from cps.server.core import operations as op
from cps.server.core.directory import Member
from cps.server.core.replica import Changes, Ref, Replica
from cps.server.core.replicas import Replicas

from . import codec

log = logging.getLogger("cps.backup")

Deliver = Callable[[Ref, Changes], None]


class Backups:
    def __init__(self, replicas: Replicas, deliver: Deliver) -> None:
        self.replicas = replicas
        self.deliver = deliver
        self._parts: dict[Ref, list[pb.SnapshotPart]] = {}
        self._awaiting: set[Ref] = set()  # asked to be sent whole
        # A weak write received in part: (its seq, next part, sections so far).
        self._partial: dict[Ref, tuple[int, int, list[bytes]]] = {}

    def apply(self, sender: Member, batch: pb.Batch) -> list[pb.ReplicateResponse]:
        """Apply a batch; the answers to send (resyncs, fences, then the
        acknowledgement of the whole batch)."""
        answers: list[pb.ReplicateResponse] = []
        for encoded in batch.items:
            item = pb.Item.FromString(encoded)
            kind = item.WhichOneof("kind")
            if kind == "operation":
                answer = self._operation(sender, item.operation)
                if answer is not None:
                    answers.append(answer)
            elif kind == "snapshot":
                self._snapshot_part(item.snapshot)
            elif kind == "notification":
                notification = item.notification
                self.deliver(codec.ref_of(notification.ref), codec.changes_of(notification.changes))
        if batch.items:
            last = batch.first_index + len(batch.items) - 1
            answers.append(pb.ReplicateResponse(acknowledged=last))
        return answers

    def _operation(
        self, sender: Member, stamped: pb.StampedOperation
    ) -> pb.ReplicateResponse | None:
        ref = codec.ref_of(stamped.ref)
        if ref in self._awaiting:
            return None  # the snapshot on its way replaces all of it
        operation = codec.operation_of(stamped.operation)
        replica = self.replicas.find(ref)
        if replica is None:
            if isinstance(operation, op.Create) and stamped.seq == 1:
                active = sender.name if stamped.epoch else None
                self.replicas.add(
                    Replica.create(ref, operation, epoch=stamped.epoch, active=active)
                )
                return None
            return self._resync(ref)
        if stamped.epoch < replica.epoch:
            return pb.ReplicateResponse(fenced=pb.Fenced(ref=stamped.ref, epoch=replica.epoch))
        if stamped.epoch == replica.epoch and stamped.seq <= replica.seq:
            return None  # sent again after a broken stream: already applied
        if stamped.seq != replica.seq + 1:
            return self._resync(ref)
        replica.epoch = stamped.epoch
        if stamped.parts > 1:
            return self._part(ref, replica, stamped, operation)
        replica.apply(operation)
        return None

    def _part(
        self,
        ref: Ref,
        replica: Replica,
        stamped: pb.StampedOperation,
        operation: op.Operation,
    ) -> pb.ReplicateResponse | None:
        """One element of a weak write, applied on arrival."""
        seq, expected, sections = self._partial.get(ref, (stamped.seq, 1, []))
        if seq != stamped.seq or stamped.part < expected:
            return None  # a part already applied, sent again
        if stamped.part != expected or not isinstance(operation, op.Write):
            return self._resync(ref)
        replica.write_part(operation)
        sections.append(operation.elements[0].section_id)
        if stamped.part == stamped.parts:
            self._partial.pop(ref, None)
            replica.seq += 1
        else:
            self._partial[ref] = (seq, expected + 1, sections)
        return None

    def interrupted(self, ref: Ref) -> tuple[bytes, ...]:
        """The sections of a weak write this replica holds only in part (its
        writer is gone); forgotten once told."""
        partial = self._partial.pop(ref, None)
        return () if partial is None else tuple(dict.fromkeys(partial[2]))

    def _resync(self, ref: Ref) -> pb.ReplicateResponse:
        log.info("replica asks to be sent whole", extra={"checkpoint": ref.name})
        self._awaiting.add(ref)
        return pb.ReplicateResponse(resync=codec.ref_message(ref))

    def _snapshot_part(self, part: pb.SnapshotPart) -> None:
        ref = codec.ref_of(part.ref)
        if part.HasField("header"):
            self._parts[ref] = [part]
        elif ref in self._parts:
            self._parts[ref].append(part)
        else:
            return  # its first part went with a broken stream: it comes again
        if part.last:
            replica = codec.replica_of(self._parts.pop(ref))
            held = self.replicas.find(ref)
            if held is not None and held.epoch > replica.epoch:
                return  # sealed by a newer active meanwhile: this one is stale
            self.replicas.add(replica)
            self._awaiting.discard(ref)
            self._partial.pop(ref, None)

    # -- fencing and catch-up (calls of a new active) --------------------------

    def seal(self, ref: Ref, epoch: int) -> pb.SealResponse:
        replica = self.replicas.find(ref)
        if replica is None:
            return pb.SealResponse(held=False)
        before = replica.epoch
        if epoch > before:
            replica.epoch = epoch
        return pb.SealResponse(held=True, seq=replica.seq, epoch=before)

    def forget(self, ref: Ref) -> None:
        self._parts.pop(ref, None)
        self._partial.pop(ref, None)
        self._awaiting.discard(ref)
