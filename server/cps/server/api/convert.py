"""Protobuf <-> core value translation. Values protobuf can carry but the seed
cannot (unknown enum numbers, a missing required message) become seed errors
here; every rule about valid combinations lives in the core."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2

from cps.server.core import events
from cps.server.core.errors import CkptError, ErrorCode
from cps.server.core.rules import check_duration, check_time
from cps.server.core.types import (
    NANOS_PER_SECOND,
    Change,
    CheckpointDescriptor,
    CreationAttributes,
    CreationFlag,
    MaybeForever,
    OpenFlag,
    ReadElement,
    SectionDescriptor,
    SectionsChosen,
    WriteElement,
)
from cps.v1 import checkpoint_service_pb2 as pb
from cps.v1 import types_pb2 as t

_CREATION_FLAGS = {flag.value: flag for flag in CreationFlag}
_OPEN_FLAGS: dict[int, OpenFlag] = {
    t.OPEN_FLAG_READ: OpenFlag.READ,
    t.OPEN_FLAG_WRITE: OpenFlag.WRITE,
    t.OPEN_FLAG_CREATE: OpenFlag.CREATE,
}
_SECTIONS_CHOSEN = {chosen.value: chosen for chosen in SectionsChosen}
_CHANGES = {
    Change.CREATED: t.SECTION_CHANGE_CREATED,
    Change.WRITTEN: t.SECTION_CHANGE_WRITTEN,
    Change.OVERWRITTEN: t.SECTION_CHANGE_OVERWRITTEN,
    Change.DELETED: t.SECTION_CHANGE_DELETED,
    Change.EXPIRED: t.SECTION_CHANGE_EXPIRED,
}


def _missing(what: str) -> CkptError:
    return CkptError(ErrorCode.NULL_POINTER, f"{what} is required")


def open_flags(values: Iterable[int]) -> OpenFlag:
    flags = OpenFlag(0)
    for value in values:
        flag = _OPEN_FLAGS.get(value)
        if flag is None:
            raise CkptError(ErrorCode.BAD_FLAG, f"unknown open flag {value}")
        flags |= flag
    return flags


def creation_flags(values: Iterable[int]) -> frozenset[CreationFlag]:
    flags = set()
    for value in values:
        flag = _CREATION_FLAGS.get(value)
        if flag is None:
            raise CkptError(ErrorCode.BAD_FLAG, f"unknown creation flag {value}")
        flags.add(flag)
    return frozenset(flags)


def nanos_of(duration: duration_pb2.Duration, what: str) -> int:
    if not -999_999_999 <= duration.nanos <= 999_999_999:
        raise CkptError(ErrorCode.INVALID_PARAM, f"{what}: nanos {duration.nanos} out of range")
    return duration.seconds * NANOS_PER_SECOND + duration.nanos


def duration(value: int) -> duration_pb2.Duration:
    result = duration_pb2.Duration()
    result.FromNanoseconds(value)
    return result


def timestamp(value: int) -> timestamp_pb2.Timestamp:
    result = timestamp_pb2.Timestamp()
    result.FromNanoseconds(value)
    return result


def time_of(value: timestamp_pb2.Timestamp, what: str = "time") -> int:
    """A Timestamp as nanoseconds since the epoch, exactly; a time the model
    cannot hold is refused here, where it enters (INVALID_PARAM)."""
    if not 0 <= value.nanos <= 999_999_999:
        raise CkptError(ErrorCode.INVALID_PARAM, f"{what}: nanos {value.nanos} out of range")
    nanos = value.seconds * NANOS_PER_SECOND + value.nanos
    check_time(nanos, what)
    return nanos


def retention(message: t.RetentionDuration, present: bool) -> MaybeForever:
    kind = message.WhichOneof("kind") if present else None
    if kind is None:
        raise _missing("retention_duration (a duration or forever)")
    if kind == "forever":
        if not message.forever:
            raise CkptError(ErrorCode.INVALID_PARAM, "retention_duration.forever must be true")
        return None
    nanos = nanos_of(message.duration, "retention_duration")
    check_duration(nanos, "retention duration")
    return nanos


def retention_message(value: MaybeForever) -> t.RetentionDuration:
    if value is None:
        return t.RetentionDuration(forever=True)
    return t.RetentionDuration(duration=duration(value))


def expiration(message: t.ExpirationTime, present: bool, *, default_never: bool) -> MaybeForever:
    kind = message.WhichOneof("kind") if present else None
    if kind is None:
        if default_never:
            return None
        raise _missing("expiration_time (a time or never)")
    if kind == "never":
        if not message.never:
            raise CkptError(ErrorCode.INVALID_PARAM, "expiration_time.never must be true")
        return None
    return time_of(message.at, "expiration_time")


def expiration_message(value: MaybeForever) -> t.ExpirationTime:
    if value is None:
        return t.ExpirationTime(never=True)
    return t.ExpirationTime(at=timestamp(value))


def creation_attributes(
    request: pb.CheckpointOpenRequest | pb.CheckpointOpenAsyncRequest,
) -> CreationAttributes | None:
    if not request.HasField("checkpoint_creation_attributes"):
        return None
    message = request.checkpoint_creation_attributes
    return CreationAttributes(
        creation_flags=creation_flags(message.creation_flags),
        checkpoint_size=message.checkpoint_size,
        max_section_id_size=message.max_section_id_size,
        max_sections=message.max_sections,
        max_section_size=message.max_section_size,
        retention_duration=retention(
            message.retention_duration, message.HasField("retention_duration")
        ),
    )


def creation_attributes_message(attributes: CreationAttributes) -> t.CheckpointCreationAttributes:
    return t.CheckpointCreationAttributes(
        creation_flags=sorted(flag.value for flag in attributes.creation_flags),  # type: ignore[misc]
        checkpoint_size=attributes.checkpoint_size,
        max_section_id_size=attributes.max_section_id_size,
        max_sections=attributes.max_sections,
        max_section_size=attributes.max_section_size,
        retention_duration=retention_message(attributes.retention_duration),
    )


def descriptor_message(descriptor: CheckpointDescriptor) -> t.CheckpointDescriptor:
    return t.CheckpointDescriptor(
        checkpoint_creation_attributes=creation_attributes_message(descriptor.attributes),
        memory_used=descriptor.memory_used,
        number_of_sections=descriptor.number_of_sections,
    )


def section_descriptor_message(descriptor: SectionDescriptor) -> t.SectionDescriptor:
    return t.SectionDescriptor(
        section_id=t.SectionId(id=descriptor.section_id),
        expiration_time=expiration_message(descriptor.expiration_time),
        section_size=descriptor.section_size,
        section_state=descriptor.section_state.value,  # type: ignore[arg-type]
        last_update=timestamp(descriptor.last_update),
    )


def sections_chosen(value: int) -> SectionsChosen:
    chosen = _SECTIONS_CHOSEN.get(value)
    if chosen is None:
        raise CkptError(ErrorCode.INVALID_PARAM, f"sections_chosen {value} is not a filter")
    return chosen


def section_id(message: Any, field: str = "section_id") -> bytes:
    """A required SectionId (the default section's is present and empty)."""
    if not message.HasField(field):
        raise _missing(f"{field} (an empty id names the default section)")
    return getattr(message, field).id  # type: ignore[no-any-return]


def required(message: Any, field: str) -> None:
    if not message.HasField(field):
        raise _missing(field)


def write_elements(vector: Iterable[t.IOVectorElement]) -> list[WriteElement]:
    elements = []
    for index, element in enumerate(vector):
        if not element.HasField("section_id"):
            raise CkptError(
                ErrorCode.NULL_POINTER,
                f"element {index}: section_id is required (an empty id names the default section)",
                vector_index=index,
            )
        data = element.data_buffer
        if element.data_size not in (0, len(data)):
            raise CkptError(
                ErrorCode.INVALID_PARAM,
                f"element {index}: data_size {element.data_size} differs from the "
                f"{len(data)} bytes of data_buffer",
                vector_index=index,
            )
        elements.append(WriteElement(element.section_id.id, data, element.data_offset))
    return elements


def read_elements(vector: Iterable[t.IOVectorElement]) -> list[ReadElement]:
    elements = []
    for index, element in enumerate(vector):
        if not element.HasField("section_id"):
            raise CkptError(
                ErrorCode.NULL_POINTER,
                f"element {index}: section_id is required (an empty id names the default section)",
                vector_index=index,
            )
        elements.append(ReadElement(element.section_id.id, element.data_offset, element.data_size))
    return elements


def callback_message(sequence: int, event: events.Event) -> pb.Callback:
    if isinstance(event, events.Notification):
        return pb.Callback(
            sequence=sequence,
            notification=t.CheckpointNotificationCallback(
                checkpoint_name=event.checkpoint_name,
                checkpoint_handle=event.handle,
                changed_sections=[
                    t.ChangedSection(section_id=t.SectionId(id=section_id), change=_CHANGES[kind])
                    for section_id, kind in event.changes
                ],
            ),
        )
    if isinstance(event, events.OpenCompleted):
        return pb.Callback(
            sequence=sequence,
            open=t.CheckpointOpenCallback(
                invocation=event.invocation,
                checkpoint_name=event.checkpoint_name,
                checkpoint_handle=event.handle,
                error_reason=event.error.code.value if event.error else "",
                error_message=event.error.message if event.error else "",
            ),
        )
    if isinstance(event, events.SynchronizeCompleted):
        return pb.Callback(
            sequence=sequence,
            synchronize=t.CheckpointSynchronizeCallback(
                invocation=event.invocation,
                error_reason=event.error.code.value if event.error else "",
                error_message=event.error.message if event.error else "",
            ),
        )
    return pb.Callback(sequence=sequence, dropped=pb.CallbacksDropped(count=event.count))
