"""Between the core's values and the node-to-node contract (cps.peer.v1),
both ways. A value the contract cannot carry is a bug here, never the
peer's: the receiving side trusts only what it can decode."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cps.peer.v1 import peer_pb2 as pb
from cps.server.core import calls as c
from cps.server.core import operations as op
from cps.server.core.directory import Member
from cps.server.core.replica import OpenerCount, Ref, Replica, Section
from cps.server.core.rules import Answer
from cps.server.core.types import (
    Change,
    CheckpointDescriptor,
    CreationAttributes,
    CreationFlag,
    MaybeForever,
    ReadElement,
    SectionDescriptor,
    SectionsChosen,
    SectionState,
    WriteElement,
)

# A snapshot travels in parts of about this many bytes of section data (a
# larger section goes alone), under every node's message limit.
SNAPSHOT_PART_BYTES = 4 * 1024 * 1024


def _opt(message: Any, field: str) -> MaybeForever:
    return getattr(message, field) if message.HasField(field) else None


def member_message(member: Member) -> pb.Member:
    return pb.Member(name=member.name, incarnation=member.incarnation)


def member_of(message: pb.Member) -> Member:
    return Member(message.name, message.incarnation)


def ref_message(ref: Ref) -> pb.Ref:
    return pb.Ref(name=ref.name, incarnation=ref.incarnation)


def ref_of(message: pb.Ref) -> Ref:
    return Ref(message.name, message.incarnation)


# -- attributes ------------------------------------------------------------------


def attributes_message(attributes: CreationAttributes) -> pb.Attributes:
    message = pb.Attributes(
        creation_flags=sorted(flag.value for flag in attributes.creation_flags),  # type: ignore[misc]
        checkpoint_size=attributes.checkpoint_size,
        max_section_id_size=attributes.max_section_id_size,
        max_sections=attributes.max_sections,
        max_section_size=attributes.max_section_size,
    )
    if attributes.retention_duration is not None:
        message.retention_nanos = attributes.retention_duration
    return message


def attributes_of(message: pb.Attributes) -> CreationAttributes:
    return CreationAttributes(
        creation_flags=frozenset(CreationFlag(value) for value in message.creation_flags),
        checkpoint_size=message.checkpoint_size,
        max_section_id_size=message.max_section_id_size,
        max_sections=message.max_sections,
        max_section_size=message.max_section_size,
        retention_duration=_opt(message, "retention_nanos"),
    )


# -- operations ----------------------------------------------------------------------


def operation_message(operation: op.Operation) -> pb.Operation:
    match operation:
        case op.Write(elements, at):
            return pb.Operation(
                write=pb.Write(
                    elements=[
                        pb.WriteElement(section_id=e.section_id, data=e.data, offset=e.offset)
                        for e in elements
                    ],
                    at_nanos=at,
                )
            )
        case op.Overwrite(section_id, data, at):
            return pb.Operation(
                overwrite=pb.Overwrite(section_id=section_id, data=data, at_nanos=at)
            )
        case op.SectionCreate(section_id, expiration, data, at, generated):
            message = pb.SectionCreate(
                section_id=section_id, data=data, at_nanos=at, generated_ids=generated
            )
            if expiration is not None:
                message.expiration_nanos = expiration
            return pb.Operation(section_create=message)
        case op.SectionDelete(section_id):
            return pb.Operation(section_delete=pb.SectionDelete(section_id=section_id))
        case op.SectionExpire(section_id):
            return pb.Operation(section_expire=pb.SectionExpire(section_id=section_id))
        case op.ExpirationSet(section_id, expiration):
            expiry = pb.ExpirationSet(section_id=section_id)
            if expiration is not None:
                expiry.expiration_nanos = expiration
            return pb.Operation(expiration_set=expiry)
        case op.RetentionSet(duration):
            retention = pb.RetentionSet()
            if duration is not None:
                retention.retention_nanos = duration
            return pb.Operation(retention_set=retention)
        case op.Openers(node, count, watching, at):
            return pb.Operation(
                openers=pb.Openers(node=node, count=count, watching=watching, at_nanos=at)
            )
        case op.Promote(epoch, active):
            promote = pb.Promote(epoch=epoch)
            if active is not None:
                promote.active = active
            return pb.Operation(promote=promote)
        case op.Corrupt(section_ids):
            return pb.Operation(corrupt=pb.Corrupt(section_ids=section_ids))
        case op.Create(attributes, at):
            return pb.Operation(
                create=pb.Create(attributes=attributes_message(attributes), at_nanos=at)
            )
    raise TypeError(f"not an operation: {operation!r}")


def operation_of(message: pb.Operation) -> op.Operation:
    kind = message.WhichOneof("kind")
    match kind:
        case "write":
            m = message.write
            return op.Write(
                tuple(WriteElement(e.section_id, e.data, e.offset) for e in m.elements), m.at_nanos
            )
        case "overwrite":
            o = message.overwrite
            return op.Overwrite(o.section_id, o.data, o.at_nanos)
        case "section_create":
            s = message.section_create
            return op.SectionCreate(
                s.section_id, _opt(s, "expiration_nanos"), s.data, s.at_nanos, s.generated_ids
            )
        case "section_delete":
            return op.SectionDelete(message.section_delete.section_id)
        case "section_expire":
            return op.SectionExpire(message.section_expire.section_id)
        case "expiration_set":
            e = message.expiration_set
            return op.ExpirationSet(e.section_id, _opt(e, "expiration_nanos"))
        case "retention_set":
            return op.RetentionSet(_opt(message.retention_set, "retention_nanos"))
        case "openers":
            n = message.openers
            return op.Openers(n.node, n.count, n.watching, n.at_nanos)
        case "promote":
            p = message.promote
            return op.Promote(p.epoch, p.active if p.HasField("active") else None)
        case "corrupt":
            return op.Corrupt(tuple(message.corrupt.section_ids))
        case "create":
            return op.Create(attributes_of(message.create.attributes), message.create.at_nanos)
    raise ValueError(f"unknown operation kind {kind!r}")


# -- snapshots -----------------------------------------------------------------------


def snapshot_parts(replica: Replica) -> Iterator[pb.SnapshotPart]:
    """The replica whole, in parts (the header in the first)."""
    header = pb.ReplicaHeader(
        ref=ref_message(replica.ref),
        attributes=attributes_message(replica.attributes),
        epoch=replica.epoch,
        memory_used=replica.memory_used,
        generated_ids=replica.generated_ids,
        openers=[
            pb.OpenerCount(node=node, count=count.count, watching=count.watching)
            for node, count in replica.openers.items()
        ],
        seq=replica.seq,
    )
    if replica.retention is not None:
        header.retention_nanos = replica.retention
    if replica.active is not None:
        header.active = replica.active
    if replica.last_close is not None:
        header.last_close_nanos = replica.last_close
    ref = ref_message(replica.ref)
    part = pb.SnapshotPart(header=header, ref=ref)
    size = 0
    for section in replica.sections.values():
        if size and size + len(section.data) > SNAPSHOT_PART_BYTES:
            yield part
            part, size = pb.SnapshotPart(ref=ref), 0
        message = pb.Section(
            section_id=section.section_id,
            data=bytes(section.data),
            state=section.state.value,  # type: ignore[arg-type]
            last_update_nanos=section.last_update,
        )
        if section.expiration_time is not None:
            message.expiration_nanos = section.expiration_time
        part.sections.append(message)
        size += len(section.data)
    part.last = True
    yield part


def replica_of(parts: list[pb.SnapshotPart]) -> Replica:
    header = parts[0].header
    replica = Replica(
        ref_of(header.ref),
        attributes_of(header.attributes),
        _opt(header, "retention_nanos"),
        header.epoch,
        header.active if header.HasField("active") else None,
        memory_used=header.memory_used,
        generated_ids=header.generated_ids,
        openers={o.node: OpenerCount(o.count, o.watching) for o in header.openers},
        last_close=_opt(header, "last_close_nanos"),
        seq=header.seq,
    )
    for part in parts:
        for s in part.sections:
            replica.sections[s.section_id] = Section(
                s.section_id,
                s.data,
                _opt(s, "expiration_nanos"),
                s.last_update_nanos,
                SectionState(s.state),
            )
    return replica


# -- notifications --------------------------------------------------------------------


def changes_message(changes: list[tuple[bytes, Change]]) -> list[pb.ChangedSection]:
    return [
        pb.ChangedSection(section_id=section_id, change=change.value)  # type: ignore[arg-type]
        for section_id, change in changes
    ]


def changes_of(messages: Any) -> list[tuple[bytes, Change]]:
    return [(m.section_id, Change(m.change)) for m in messages]


# -- forwarded calls -------------------------------------------------------------------


def call_message(call: c.Call) -> pb.Call:
    match call:
        case c.WriteCall(elements):
            return pb.Call(write=operation_message(op.Write(elements, 0)).write)
        case c.OverwriteCall(section_id, data):
            return pb.Call(overwrite=pb.Overwrite(section_id=section_id, data=data))
        case c.SectionCreateCall(section_id, expiration, data):
            create = pb.SectionCreateCall(data=data)
            if section_id is not None:
                create.section_id = section_id
            if expiration is not None:
                create.expiration_nanos = expiration
            return pb.Call(section_create=create)
        case c.SectionDeleteCall(section_id):
            return pb.Call(section_delete=pb.SectionDelete(section_id=section_id))
        case c.ExpirationSetCall(section_id, expiration):
            expiry = pb.ExpirationSet(section_id=section_id)
            if expiration is not None:
                expiry.expiration_nanos = expiration
            return pb.Call(expiration_set=expiry)
        case c.RetentionSetCall(duration):
            return pb.Call(retention_set=operation_message(op.RetentionSet(duration)).retention_set)
        case c.OpenersCall(node, count, watching):
            return pb.Call(openers=pb.Openers(node=node, count=count, watching=watching))
        case c.ReadCall(elements):
            return pb.Call(
                read=pb.ReadCall(
                    elements=[
                        pb.ReadElement(section_id=e.section_id, offset=e.offset, size=e.size)
                        for e in elements
                    ]
                )
            )
        case c.StatusCall():
            return pb.Call(status=pb.StatusCall())
        case c.IterateCall(chosen, time):
            iterate = pb.IterateCall(chosen=chosen.value)  # type: ignore[arg-type]
            if time is not None:
                iterate.expiration_nanos = time
            return pb.Call(iterate=iterate)
        case c.DescribeCall(section_id):
            return pb.Call(describe=pb.DescribeCall(section_id=section_id))
        case c.SynchronizeCall():
            return pb.Call(synchronize=pb.SynchronizeCall())
    raise TypeError(f"cannot forward {call!r}")


def call_of(message: pb.Call) -> c.Call:
    kind = message.WhichOneof("kind")
    match kind:
        case "write":
            w = message.write
            return c.WriteCall(
                tuple(WriteElement(e.section_id, e.data, e.offset) for e in w.elements)
            )
        case "overwrite":
            return c.OverwriteCall(message.overwrite.section_id, message.overwrite.data)
        case "section_create":
            s = message.section_create
            section_id = s.section_id if s.HasField("section_id") else None
            return c.SectionCreateCall(section_id, _opt(s, "expiration_nanos"), s.data)
        case "section_delete":
            return c.SectionDeleteCall(message.section_delete.section_id)
        case "expiration_set":
            e = message.expiration_set
            return c.ExpirationSetCall(e.section_id, _opt(e, "expiration_nanos"))
        case "retention_set":
            return c.RetentionSetCall(_opt(message.retention_set, "retention_nanos"))
        case "openers":
            n = message.openers
            return c.OpenersCall(n.node, n.count, n.watching)
        case "read":
            return c.ReadCall(
                tuple(ReadElement(e.section_id, e.offset, e.size) for e in message.read.elements)
            )
        case "status":
            return c.StatusCall()
        case "iterate":
            i = message.iterate
            return c.IterateCall(SectionsChosen(i.chosen), _opt(i, "expiration_nanos"))
        case "describe":
            return c.DescribeCall(message.describe.section_id)
        case "synchronize":
            return c.SynchronizeCall()
    raise ValueError(f"unknown call kind {kind!r}")


def answer_message(call: c.Call, answer: Answer | bytes | object) -> pb.ExecuteResponse:
    match call:
        case c.SectionCreateCall():
            assert isinstance(answer, bytes)
            return pb.ExecuteResponse(section_id=answer)
        case c.ReadCall():
            assert isinstance(answer, list)
            return pb.ExecuteResponse(read=pb.Chunks(chunks=answer))
        case c.IterateCall():
            assert isinstance(answer, list)
            return pb.ExecuteResponse(iterate=pb.SectionIds(section_ids=answer))
        case c.StatusCall():
            assert isinstance(answer, CheckpointDescriptor)
            return pb.ExecuteResponse(
                status=pb.Status(
                    attributes=attributes_message(answer.attributes),
                    memory_used=answer.memory_used,
                    number_of_sections=answer.number_of_sections,
                )
            )
        case c.DescribeCall():
            if answer is None:
                return pb.ExecuteResponse(gone=True)
            assert isinstance(answer, SectionDescriptor)
            section = pb.SectionDescriptor(
                section_id=answer.section_id,
                section_size=answer.section_size,
                state=answer.section_state.value,  # type: ignore[arg-type]
                last_update_nanos=answer.last_update,
            )
            if answer.expiration_time is not None:
                section.expiration_nanos = answer.expiration_time
            return pb.ExecuteResponse(section=section)
    return pb.ExecuteResponse(done=True)


def answer_of(message: pb.ExecuteResponse) -> Answer | bytes:
    kind = message.WhichOneof("kind")
    match kind:
        case "section_id":
            return message.section_id
        case "read":
            return list(message.read.chunks)
        case "iterate":
            return list(message.iterate.section_ids)
        case "status":
            s = message.status
            return CheckpointDescriptor(
                attributes_of(s.attributes), s.memory_used, s.number_of_sections
            )
        case "section":
            d = message.section
            return SectionDescriptor(
                section_id=d.section_id,
                expiration_time=_opt(d, "expiration_nanos"),
                section_size=d.section_size,
                section_state=SectionState(d.state),
                last_update=d.last_update_nanos,
            )
    return None
