"""The seed's rules: a call checked against a replica becomes an operation.

``evaluate`` changes nothing: it raises CkptError, or returns the operation
that ``Replica.apply`` carries out on every replica. ``answer`` serves the
calls that only read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from . import calls as c
from . import operations as op
from .errors import CkptError, ErrorCode
from .limits import Limits
from .replica import Replica, Section
from .types import (
    DEFAULT_SECTION_ID,
    MAX_NANOS,
    UPDATE_MODES,
    CheckpointDescriptor,
    CreationAttributes,
    MaybeForever,
    Nanos,
    ReadElement,
    SectionDescriptor,
    SectionsChosen,
    SectionState,
    WriteElement,
    show_id,
)

# Read: the bytes per element; Iterate: section ids; Describe: None when gone.
Answer = list[bytes] | CheckpointDescriptor | SectionDescriptor | None


def evaluate(replica: Replica, call: c.MutatingCall, now: Nanos) -> op.Operation:
    match call:
        case c.WriteCall(elements):
            _check_write(replica, elements)
            return op.Write(elements, now)
        case c.OverwriteCall(section_id, data):
            _check_overwrite(replica, section_id, data)
            return op.Overwrite(section_id, data, now)
        case c.SectionCreateCall(section_id, expiration, data):
            return _section_create(replica, section_id, expiration, data, now)
        case c.SectionDeleteCall(section_id):
            if section_id == DEFAULT_SECTION_ID:
                raise CkptError(ErrorCode.INVALID_PARAM, "the default section cannot be deleted")
            _section(replica, section_id)
            return op.SectionDelete(section_id)
        case c.ExpirationSetCall(section_id, expiration):
            if section_id == DEFAULT_SECTION_ID:
                raise CkptError(
                    ErrorCode.INVALID_PARAM,
                    "the default section cannot be given an expiration time",
                )
            _section(replica, section_id)
            return op.ExpirationSet(section_id, expiration)
        case c.RetentionSetCall(duration):
            check_duration(duration, "retention duration")
            return op.RetentionSet(duration)
        case c.OpenersCall(node, count, watching):
            return op.Openers(node, count, watching, now)
    raise TypeError(f"not a mutating call: {call!r}")


def answer(replica: Replica, call: c.QueryCall) -> Answer:
    match call:
        case c.ReadCall(elements):
            return read(replica, elements)
        case c.StatusCall():
            return status(replica)
        case c.IterateCall(chosen, time):
            return chosen_sections(replica, chosen, time)
        case c.DescribeCall(section_id):
            section = replica.sections.get(section_id)
            return None if section is None else section.descriptor()
    raise TypeError(f"not a query: {call!r}")


def check_duration(duration: MaybeForever, what: str) -> None:
    if duration is not None and not 0 <= duration <= MAX_NANOS:
        raise CkptError(
            ErrorCode.INVALID_PARAM,
            f"{what} must be between 0 and {MAX_NANOS} ns (or forever)",
        )


def check_time(time: MaybeForever, what: str) -> None:
    if time is not None and not 0 <= time <= MAX_NANOS:
        raise CkptError(
            ErrorCode.INVALID_PARAM,
            f"{what} must be between 1970-01-01 and 2262-04-11 (or never)",
        )


# -- sections ------------------------------------------------------------------


def _section(replica: Replica, section_id: bytes, index: int | None = None) -> Section:
    section = replica.sections.get(section_id)
    if section is None:
        raise CkptError(
            ErrorCode.NOT_EXIST,
            f"section {show_id(section_id)} does not exist in checkpoint {replica.ref.name!r}",
            vector_index=index,
        )
    return section


def _check_space(replica: Replica, extra: int, index: int | None = None) -> None:
    size = replica.attributes.checkpoint_size
    if replica.memory_used + extra > size:
        raise CkptError(
            ErrorCode.NO_SPACE,
            f"checkpoint {replica.ref.name!r} would hold {replica.memory_used + extra} bytes, "
            f"more than its checkpoint_size {size}",
            vector_index=index,
        )


def _section_create(
    replica: Replica,
    section_id: bytes | None,
    expiration: MaybeForever,
    data: bytes,
    now: Nanos,
) -> op.SectionCreate:
    attrs = replica.attributes
    name = replica.ref.name
    check_time(expiration, "expiration time")
    if attrs.max_sections == 1:
        raise CkptError(
            ErrorCode.ALREADY_EXIST,
            f"checkpoint {name!r} has only its default section (max_sections == 1)",
        )
    if section_id is not None:
        if section_id == DEFAULT_SECTION_ID:
            raise CkptError(
                ErrorCode.INVALID_PARAM,
                "the empty section id is the default section's; give an id or none "
                "to have one generated",
            )
        if len(section_id) > attrs.max_section_id_size:
            raise CkptError(
                ErrorCode.INVALID_PARAM,
                f"section id of {len(section_id)} bytes exceeds max_section_id_size "
                f"{attrs.max_section_id_size}",
            )
        if section_id in replica.sections:
            raise CkptError(
                ErrorCode.ALREADY_EXIST,
                f"section {show_id(section_id)} already exists in checkpoint {name!r}",
            )
    if len(data) > attrs.max_section_size:
        raise CkptError(
            ErrorCode.INVALID_PARAM,
            f"initial data of {len(data)} bytes exceeds max_section_size {attrs.max_section_size}",
        )
    if len(replica.sections) >= attrs.max_sections:
        raise CkptError(
            ErrorCode.NO_SPACE,
            f"checkpoint {name!r} already has max_sections={attrs.max_sections} sections",
        )
    _check_space(replica, len(data))
    generated = replica.generated_ids
    if section_id is None:
        # Monotonic, so a generated id is never handed out twice; skip ids
        # the application chose itself.
        while True:
            generated += 1
            section_id = str(generated).encode()
            if section_id not in replica.sections:
                break
        if len(section_id) > attrs.max_section_id_size:
            raise CkptError(
                ErrorCode.NO_SPACE,
                f"the next generated section id {show_id(section_id)} is longer than "
                f"max_section_id_size {attrs.max_section_id_size}",
            )
    return op.SectionCreate(section_id, expiration, data, now, generated)


def chosen_sections(replica: Replica, chosen: SectionsChosen, time: Nanos | None) -> list[bytes]:
    """Ids of the sections an iteration with this filter returns, in
    creation order."""
    sections = replica.sections.values()
    if chosen is SectionsChosen.ANY:
        return list(replica.sections)
    if chosen is SectionsChosen.FOREVER:
        return [s.section_id for s in sections if s.expiration_time is None]
    if chosen is SectionsChosen.CORRUPTED:
        return [s.section_id for s in sections if s.state is SectionState.CORRUPTED]
    if time is None:
        raise CkptError(
            ErrorCode.INVALID_PARAM, f"the {chosen.name} filter needs an expiration time"
        )
    if chosen is SectionsChosen.LEQ_EXPIRATION_TIME:
        return [
            s.section_id
            for s in sections
            if s.expiration_time is not None and s.expiration_time <= time
        ]
    # GEQ: a section that never expires expires after any time.
    return [
        s.section_id for s in sections if s.expiration_time is None or s.expiration_time >= time
    ]


# -- data ------------------------------------------------------------------------


def _check_write(replica: Replica, elements: Sequence[WriteElement]) -> None:
    """Every element is checked before any byte is written: all or nothing."""
    attrs = replica.attributes
    new_sizes: dict[bytes, int] = {}
    extra = 0
    for index, element in enumerate(elements):
        section = _section(replica, element.section_id, index)
        end = element.offset + len(element.data)
        if end > attrs.max_section_size:
            raise CkptError(
                ErrorCode.INVALID_PARAM,
                f"element {index} ends at byte {end}, past max_section_size "
                f"{attrs.max_section_size}",
                vector_index=index,
            )
        size = new_sizes.get(element.section_id, len(section.data))
        if end > size:
            extra += end - size
            new_sizes[element.section_id] = end
            _check_space(replica, extra, index)


def _check_overwrite(replica: Replica, section_id: bytes, data: bytes) -> None:
    section = _section(replica, section_id)
    limit = replica.attributes.max_section_size
    if len(data) > limit:
        raise CkptError(
            ErrorCode.INVALID_PARAM, f"{len(data)} bytes exceed max_section_size {limit}"
        )
    _check_space(replica, len(data) - len(section.data))


def read(replica: Replica, elements: Sequence[ReadElement]) -> list[bytes]:
    """Each element's bytes; a read allocates what the section holds, never
    what was asked for."""
    max_size = replica.attributes.max_section_size
    result: list[bytes] = []
    for index, element in enumerate(elements):
        section = _section(replica, element.section_id, index)
        if element.size > max_size:
            raise CkptError(
                ErrorCode.INVALID_PARAM,
                f"element {index} asks for {element.size} bytes, more than "
                f"max_section_size {max_size}",
                vector_index=index,
            )
        held = len(section.data)
        if element.offset > held:
            raise CkptError(
                ErrorCode.INVALID_PARAM,
                f"element {index} offset {element.offset} is past the end of section "
                f"{show_id(element.section_id)} ({held} bytes)",
                vector_index=index,
            )
        end = held if element.size == 0 else min(held, element.offset + element.size)
        result.append(bytes(memoryview(section.data)[element.offset : end]))
    return result


def status(replica: Replica) -> CheckpointDescriptor:
    attributes = replica.attributes
    if attributes.retention_duration != replica.retention:
        attributes = replace(attributes, retention_duration=replica.retention)
    return CheckpointDescriptor(
        attributes=attributes,
        memory_used=replica.memory_used,
        number_of_sections=len(replica.sections),
    )


def check_attributes(attributes: CreationAttributes, limits: Limits) -> None:
    """Creation attributes the seed accepts and this node can hold."""
    modes = attributes.creation_flags & UPDATE_MODES
    if len(modes) != 1:
        raise CkptError(
            ErrorCode.BAD_FLAG,
            "creation flags need exactly one of WR_ALL_REPLICAS, WR_ACTIVE_REPLICA, "
            f"WR_ACTIVE_REPLICA_WEAK (got {sorted(f.name for f in modes)})",
        )
    if attributes.max_sections < 1:
        raise CkptError(ErrorCode.INVALID_PARAM, "max_sections must be at least 1")
    if attributes.max_sections > 1 and attributes.max_section_id_size < 1:
        raise CkptError(
            ErrorCode.INVALID_PARAM,
            "max_section_id_size must be at least 1 when max_sections > 1",
        )
    if attributes.checkpoint_size > attributes.max_sections * attributes.max_section_size:
        raise CkptError(
            ErrorCode.INVALID_PARAM,
            f"checkpoint_size {attributes.checkpoint_size} > max_sections * "
            f"max_section_size ({attributes.max_sections} * {attributes.max_section_size})",
        )
    for value, limit, what in (
        (attributes.max_sections, limits.max_sections_per_checkpoint, "max_sections"),
        (attributes.max_section_size, limits.max_section_size, "max_section_size"),
        (attributes.max_section_id_size, limits.max_section_id_size, "max_section_id_size"),
        (attributes.checkpoint_size, limits.max_reserved_bytes, "checkpoint_size"),
    ):
        if value > limit:
            raise CkptError(
                ErrorCode.NO_MEMORY, f"{what} {value} exceeds this node's limit {limit}"
            )
    check_duration(attributes.retention_duration, "retention duration")


def check_iovector(count: int, limits: Limits) -> None:
    if count == 0:
        raise CkptError(ErrorCode.INVALID_PARAM, "the iovector is empty")
    if count > limits.max_iovector_elements:
        raise CkptError(
            ErrorCode.INVALID_PARAM,
            f"the iovector has {count} elements, more than this node's limit "
            f"{limits.max_iovector_elements}",
        )
