"""Python values <-> cps.v1 protobuf messages."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

from google.protobuf import duration_pb2, timestamp_pb2

from cps.v1 import types_pb2 as t

from .values import (
    FOREVER,
    NEVER,
    ChangedSection,
    CheckpointStatus,
    CreationAttributes,
    CreationFlags,
    ExpirationTime,
    Never,
    OpenFlags,
    ReadElement,
    RetentionDuration,
    SectionChange,
    SectionDescriptor,
    SectionsChosen,
    SectionState,
    Version,
    WriteElement,
    as_timedelta,
    epoch_seconds,
)

_OPEN_FLAGS: Mapping[OpenFlags, t.OpenFlag.ValueType] = {
    OpenFlags.READ: t.OPEN_FLAG_READ,
    OpenFlags.WRITE: t.OPEN_FLAG_WRITE,
    OpenFlags.CREATE: t.OPEN_FLAG_CREATE,
}
_CREATION_FLAGS: Mapping[CreationFlags, t.CreationFlag.ValueType] = {
    CreationFlags.WR_ALL_REPLICAS: t.CREATION_FLAG_WR_ALL_REPLICAS,
    CreationFlags.WR_ACTIVE_REPLICA: t.CREATION_FLAG_WR_ACTIVE_REPLICA,
    CreationFlags.WR_ACTIVE_REPLICA_WEAK: t.CREATION_FLAG_WR_ACTIVE_REPLICA_WEAK,
    CreationFlags.CHECKPOINT_COLLOCATED: t.CREATION_FLAG_CHECKPOINT_COLLOCATED,
}
_CREATION_FLAGS_BACK = {value: flag for flag, value in _CREATION_FLAGS.items()}
_SECTIONS_CHOSEN: Mapping[SectionsChosen, t.SectionsChosen.ValueType] = {
    SectionsChosen.FOREVER: t.SECTIONS_CHOSEN_FOREVER,
    SectionsChosen.LEQ_EXPIRATION_TIME: t.SECTIONS_CHOSEN_LEQ_EXPIRATION_TIME,
    SectionsChosen.GEQ_EXPIRATION_TIME: t.SECTIONS_CHOSEN_GEQ_EXPIRATION_TIME,
    SectionsChosen.CORRUPTED: t.SECTIONS_CHOSEN_CORRUPTED,
    SectionsChosen.ANY: t.SECTIONS_CHOSEN_ANY,
}
_SECTION_STATES: Mapping[int, SectionState] = {
    t.SECTION_STATE_VALID: SectionState.VALID,
    t.SECTION_STATE_CORRUPTED: SectionState.CORRUPTED,
}
_CHANGES: Mapping[int, SectionChange] = {
    t.SECTION_CHANGE_CREATED: SectionChange.CREATED,
    t.SECTION_CHANGE_WRITTEN: SectionChange.WRITTEN,
    t.SECTION_CHANGE_OVERWRITTEN: SectionChange.OVERWRITTEN,
    t.SECTION_CHANGE_DELETED: SectionChange.DELETED,
    t.SECTION_CHANGE_EXPIRED: SectionChange.EXPIRED,
}


def version_message(version: Version) -> t.Version:
    return t.Version(
        release_code=version.release_code,
        major_version=version.major,
        minor_version=version.minor,
    )


def version_of(message: t.Version) -> Version:
    return Version(message.release_code, message.major_version, message.minor_version)


def open_flags(flags: OpenFlags) -> list[t.OpenFlag.ValueType]:
    return [value for flag, value in _OPEN_FLAGS.items() if flag in flags]


def creation_flags(flags: CreationFlags) -> list[t.CreationFlag.ValueType]:
    return [value for flag, value in _CREATION_FLAGS.items() if flag in flags]


def sections_chosen(chosen: SectionsChosen) -> t.SectionsChosen.ValueType:
    return _SECTIONS_CHOSEN[chosen]


def duration(value: timedelta | float) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromTimedelta(as_timedelta(value))
    return message


def timestamp(value: datetime | float) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    if isinstance(value, datetime):
        epoch_seconds(value)  # refuses a naive datetime
        message.FromDatetime(value)  # exact to the microsecond
    else:
        message.FromNanoseconds(round(value * 1e9))
    return message


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def datetime_of(message: timestamp_pb2.Timestamp) -> datetime:
    """Rounded to the nearest microsecond (the node keeps float seconds, so a
    time it echoes may be a few nanoseconds off)."""
    return _EPOCH + timedelta(seconds=message.seconds, microseconds=round(message.nanos / 1000))


def retention_message(value: RetentionDuration) -> t.RetentionDuration:
    if value is FOREVER:
        return t.RetentionDuration(forever=True)
    return t.RetentionDuration(duration=duration(value))


def retention_of(message: t.RetentionDuration) -> RetentionDuration:
    if message.WhichOneof("kind") == "duration":
        return message.duration.ToTimedelta()
    return FOREVER


def expiration_message(value: ExpirationTime) -> t.ExpirationTime:
    if value is NEVER:
        return t.ExpirationTime(never=True)
    return t.ExpirationTime(at=timestamp(value))


def expiration_of(message: t.ExpirationTime) -> datetime | Never:
    if message.WhichOneof("kind") == "at":
        return datetime_of(message.at)
    return NEVER


def attributes_message(attributes: CreationAttributes) -> t.CheckpointCreationAttributes:
    size = attributes.checkpoint_size
    return t.CheckpointCreationAttributes(
        creation_flags=creation_flags(attributes.creation_flags),
        checkpoint_size=attributes.max_sections * attributes.max_section_size
        if size is None
        else size,
        max_section_id_size=attributes.max_section_id_size,
        max_sections=attributes.max_sections,
        max_section_size=attributes.max_section_size,
        retention_duration=retention_message(attributes.retention_duration),
    )


def attributes_of(message: t.CheckpointCreationAttributes) -> CreationAttributes:
    flags = CreationFlags(0)
    for value in message.creation_flags:
        flags |= _CREATION_FLAGS_BACK.get(value, CreationFlags(0))
    return CreationAttributes(
        creation_flags=flags,
        max_sections=message.max_sections,
        max_section_size=message.max_section_size,
        max_section_id_size=message.max_section_id_size,
        checkpoint_size=message.checkpoint_size,
        retention_duration=retention_of(message.retention_duration),
    )


def status_of(message: t.CheckpointDescriptor) -> CheckpointStatus:
    return CheckpointStatus(
        attributes=attributes_of(message.checkpoint_creation_attributes),
        memory_used=message.memory_used,
        number_of_sections=message.number_of_sections,
    )


def section_descriptor_of(message: t.SectionDescriptor) -> SectionDescriptor:
    return SectionDescriptor(
        section_id=message.section_id.id,
        expiration_time=expiration_of(message.expiration_time),
        size=message.section_size,
        state=_SECTION_STATES.get(message.section_state, SectionState.VALID),
        last_update=datetime_of(message.last_update),
    )


def write_vector(elements: Iterable[WriteElement]) -> list[t.IOVectorElement]:
    return [
        t.IOVectorElement(
            section_id=t.SectionId(id=element.section_id),
            data_buffer=element.data,
            data_offset=element.offset,
        )
        for element in elements
    ]


def read_vector(elements: Iterable[ReadElement]) -> list[t.IOVectorElement]:
    return [
        t.IOVectorElement(
            section_id=t.SectionId(id=element.section_id),
            data_offset=element.offset,
            data_size=0 if element.size is None else element.size,  # 0: to the end
        )
        for element in elements
    ]


def changed_sections_of(message: t.CheckpointNotificationCallback) -> list[ChangedSection]:
    return [
        ChangedSection(changed.section_id.id, _CHANGES[changed.change])
        for changed in message.changed_sections
        if changed.change in _CHANGES
    ]
