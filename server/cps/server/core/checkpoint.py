"""One checkpoint instance: its sections and the seed's data-access rules."""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence

from .changelog import ChangeLog, NoChangeLog
from .clock import Clock, Timer
from .errors import CkptError, ErrorCode, no_active_replica
from .types import (
    DEFAULT_SECTION_ID,
    CreationAttributes,
    MaybeForever,
    ReadElement,
    SectionDescriptor,
    SectionsChosen,
    SectionState,
    WriteElement,
    show_id,
)


class Change(enum.Enum):
    """What happened to a section (reported to immediate consumers)."""

    CREATED = 1
    WRITTEN = 2
    OVERWRITTEN = 3
    DELETED = 4
    EXPIRED = 5


# Called after every applied change with the checkpoint and its changed
# sections, in the order they were applied.
ChangeListener = Callable[["Checkpoint", list[tuple[bytes, Change]]], None]


class Section:
    __slots__ = ("data", "expiration_time", "expiry_timer", "last_update", "section_id", "state")

    def __init__(self, section_id: bytes, data: bytes, expiration: MaybeForever, now: float):
        self.section_id = section_id
        self.data = bytearray(data)
        self.expiration_time = expiration
        self.state = SectionState.VALID
        self.last_update = now
        self.expiry_timer: Timer | None = None

    def descriptor(self) -> SectionDescriptor:
        return SectionDescriptor(
            section_id=self.section_id,
            expiration_time=self.expiration_time,
            section_size=len(self.data),
            section_state=self.state,
            last_update=self.last_update,
        )


class Checkpoint:
    """A checkpoint instance. A name maps to at most one live instance; an
    unlinked instance lives on while handles still refer to it."""

    def __init__(
        self,
        name: str,
        attributes: CreationAttributes,
        clock: Clock,
        on_change: ChangeListener | None = None,
        changelog: ChangeLog | None = None,
    ) -> None:
        self.name = name
        self.changelog = changelog or NoChangeLog()
        self.attributes = attributes
        self.retention_duration = attributes.retention_duration
        self.synchronous = attributes.synchronous
        self.clock = clock
        self.on_change = on_change
        self.sections: dict[bytes, Section] = {}
        self.memory_used = 0
        self.unlinked = False
        # A collocated checkpoint has no active replica until ActiveReplicaSet.
        self.has_active_replica = not attributes.collocated
        self.generated_ids = 0  # the last generated section id's number
        if attributes.max_sections == 1:
            self.sections[DEFAULT_SECTION_ID] = Section(DEFAULT_SECTION_ID, b"", None, clock.now())

    # -- checkpoint-wide -------------------------------------------------

    def require_active_replica(self) -> None:
        if not self.has_active_replica:
            raise no_active_replica(self.name)

    def discard(self) -> None:
        """Free the instance: stop every section timer."""
        for section in self.sections.values():
            if section.expiry_timer is not None:
                section.expiry_timer.cancel()
        self.sections.clear()
        self.memory_used = 0

    def _notify(self, changes: list[tuple[bytes, Change]]) -> None:
        if not self.unlinked:  # an unlinked instance is gone after a restart anyway
            for section_id, _ in changes:
                self.changelog.mark(
                    ("section", self.name, section_id), synchronous=self.synchronous
                )
        if self.on_change is not None:
            self.on_change(self, changes)

    def _persist_meta(self) -> None:
        if not self.unlinked:
            self.changelog.mark(("checkpoint-meta", self.name), synchronous=self.synchronous)

    # -- sections --------------------------------------------------------

    def _section(self, section_id: bytes, index: int | None = None) -> Section:
        section = self.sections.get(section_id)
        if section is None:
            raise CkptError(
                ErrorCode.NOT_EXIST,
                f"section {show_id(section_id)} does not exist in checkpoint {self.name!r}",
                vector_index=index,
            )
        return section

    def _check_space(self, extra: int, index: int | None = None) -> None:
        if self.memory_used + extra > self.attributes.checkpoint_size:
            raise CkptError(
                ErrorCode.NO_SPACE,
                f"checkpoint {self.name!r} would hold {self.memory_used + extra} bytes, "
                f"more than its checkpoint_size {self.attributes.checkpoint_size}",
                vector_index=index,
            )

    def _next_generated_id(self) -> bytes:
        # Monotonic, so a generated id is never handed out twice; skip ids
        # the application chose itself.
        while True:
            self.generated_ids += 1
            candidate = str(self.generated_ids).encode()
            if candidate not in self.sections:
                break
        self._persist_meta()
        if len(candidate) > self.attributes.max_section_id_size:
            raise CkptError(
                ErrorCode.NO_SPACE,
                f"the next generated section id {show_id(candidate)} is longer than "
                f"max_section_id_size {self.attributes.max_section_id_size}",
            )
        return candidate

    def section_create(
        self, section_id: bytes | None, expiration: MaybeForever, initial_data: bytes
    ) -> bytes:
        attrs = self.attributes
        if attrs.max_sections == 1:
            raise CkptError(
                ErrorCode.ALREADY_EXIST,
                f"checkpoint {self.name!r} has only its default section (max_sections == 1)",
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
            if section_id in self.sections:
                raise CkptError(
                    ErrorCode.ALREADY_EXIST,
                    f"section {show_id(section_id)} already exists in checkpoint {self.name!r}",
                )
        if len(initial_data) > attrs.max_section_size:
            raise CkptError(
                ErrorCode.INVALID_PARAM,
                f"initial data of {len(initial_data)} bytes exceeds max_section_size "
                f"{attrs.max_section_size}",
            )
        if len(self.sections) >= attrs.max_sections:
            raise CkptError(
                ErrorCode.NO_SPACE,
                f"checkpoint {self.name!r} already has max_sections={attrs.max_sections} sections",
            )
        self._check_space(len(initial_data))
        if section_id is None:
            section_id = self._next_generated_id()
        section = Section(section_id, initial_data, expiration, self.clock.now())
        self.sections[section_id] = section
        self.memory_used += len(initial_data)
        self._arm_expiry(section)
        self._notify([(section_id, Change.CREATED)])
        return section_id

    def restore_section(
        self,
        section_id: bytes,
        data: bytes,
        expiration: MaybeForever,
        state: SectionState,
        last_update: float,
    ) -> None:
        """Put back a section read from storage (no notification, no mark)."""
        section = Section(section_id, data, expiration, last_update)
        section.state = state
        self.sections[section_id] = section
        self.memory_used += len(data)
        self._arm_expiry(section)

    def section_delete(self, section_id: bytes) -> None:
        if section_id == DEFAULT_SECTION_ID:
            raise CkptError(ErrorCode.INVALID_PARAM, "the default section cannot be deleted")
        self._remove(self._section(section_id), Change.DELETED)

    def _remove(self, section: Section, change: Change) -> None:
        if section.expiry_timer is not None:
            section.expiry_timer.cancel()
        del self.sections[section.section_id]
        self.memory_used -= len(section.data)
        self._notify([(section.section_id, change)])

    def section_expiration_time_set(self, section_id: bytes, expiration: MaybeForever) -> None:
        if section_id == DEFAULT_SECTION_ID:
            raise CkptError(
                ErrorCode.INVALID_PARAM, "the default section cannot be given an expiration time"
            )
        section = self._section(section_id)
        if section.expiry_timer is not None:
            section.expiry_timer.cancel()
            section.expiry_timer = None
        section.expiration_time = expiration
        self._arm_expiry(section)
        if not self.unlinked:
            self.changelog.mark(("section", self.name, section_id), synchronous=self.synchronous)

    def _arm_expiry(self, section: Section) -> None:
        if section.expiration_time is None:
            return
        delay = section.expiration_time - self.clock.now()
        section.expiry_timer = self.clock.call_later(delay, lambda: self._expire(section))

    def _expire(self, section: Section) -> None:
        # The timer may race with a delete or a new section of the same id.
        if self.sections.get(section.section_id) is section:
            section.expiry_timer = None
            self._remove(section, Change.EXPIRED)

    def chosen_sections(self, chosen: SectionsChosen, time: float | None) -> list[bytes]:
        """Ids of the sections an iteration with this filter returns."""
        if chosen is SectionsChosen.ANY:
            return list(self.sections)
        if chosen is SectionsChosen.FOREVER:
            return [s.section_id for s in self.sections.values() if s.expiration_time is None]
        if chosen is SectionsChosen.CORRUPTED:
            return [
                s.section_id for s in self.sections.values() if s.state is SectionState.CORRUPTED
            ]
        if time is None:
            raise CkptError(
                ErrorCode.INVALID_PARAM, f"the {chosen.name} filter needs an expiration time"
            )
        if chosen is SectionsChosen.LEQ_EXPIRATION_TIME:
            return [
                s.section_id
                for s in self.sections.values()
                if s.expiration_time is not None and s.expiration_time <= time
            ]
        # GEQ: a section that never expires expires after any time.
        return [
            s.section_id
            for s in self.sections.values()
            if s.expiration_time is None or s.expiration_time >= time
        ]

    # -- data ------------------------------------------------------------

    def write(self, elements: Sequence[WriteElement]) -> None:
        """Apply an iovector all-or-nothing: every element is checked before
        any byte is written."""
        attrs = self.attributes
        new_sizes: dict[bytes, int] = {}
        extra = 0
        for index, element in enumerate(elements):
            section = self._section(element.section_id, index)
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
                self._check_space(extra, index)
        now = self.clock.now()
        changed: dict[bytes, Change] = {}  # one entry per section, first-write order
        for element in elements:
            section = self.sections[element.section_id]
            data = section.data
            gap = element.offset - len(data)
            if gap > 0:
                data.extend(bytes(gap))  # a hole reads as zeros, as in POSIX files
            data[element.offset : element.offset + len(element.data)] = element.data
            section.last_update = now
            changed[element.section_id] = Change.WRITTEN
        self.memory_used += extra
        self._notify(list(changed.items()))

    def overwrite(self, section_id: bytes, data: bytes) -> None:
        section = self._section(section_id)
        if len(data) > self.attributes.max_section_size:
            raise CkptError(
                ErrorCode.INVALID_PARAM,
                f"{len(data)} bytes exceed max_section_size {self.attributes.max_section_size}",
            )
        self._check_space(len(data) - len(section.data))
        self.memory_used += len(data) - len(section.data)
        section.data = bytearray(data)
        section.state = SectionState.VALID
        section.last_update = self.clock.now()
        self._notify([(section_id, Change.OVERWRITTEN)])

    def read(self, elements: Sequence[ReadElement]) -> list[bytes]:
        max_size = self.attributes.max_section_size
        result: list[bytes] = []
        for index, element in enumerate(elements):
            section = self._section(element.section_id, index)
            if element.size > max_size:
                raise CkptError(
                    ErrorCode.INVALID_PARAM,
                    f"element {index} asks for {element.size} bytes, more than "
                    f"max_section_size {max_size}",
                    vector_index=index,
                )
            if element.offset > len(section.data):
                raise CkptError(
                    ErrorCode.INVALID_PARAM,
                    f"element {index} offset {element.offset} is past the end of section "
                    f"{show_id(element.section_id)} ({len(section.data)} bytes)",
                    vector_index=index,
                )
            end = len(section.data) if element.size == 0 else element.offset + element.size
            result.append(bytes(section.data[element.offset : end]))
        return result
