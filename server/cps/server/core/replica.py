"""One replica of a checkpoint instance and how operations change it.

``apply`` trusts its operation: the active replica checked the seed's rules
when it evaluated the call (core/rules.py), so every replica applies the
same operations in the same order and holds the same state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import operations as op
from .types import (
    DEFAULT_SECTION_ID,
    Change,
    CreationAttributes,
    MaybeForever,
    Nanos,
    SectionDescriptor,
    SectionState,
)

Changes = list[tuple[bytes, Change]]


class Section:
    __slots__ = ("data", "expiration_time", "last_update", "section_id", "state")

    def __init__(
        self,
        section_id: bytes,
        data: bytes,
        expiration: MaybeForever,
        last_update: Nanos,
        state: SectionState = SectionState.VALID,
    ) -> None:
        self.section_id = section_id
        self.data = bytearray(data)
        self.expiration_time = expiration
        self.state = state
        self.last_update = last_update

    def descriptor(self) -> SectionDescriptor:
        return SectionDescriptor(
            section_id=self.section_id,
            expiration_time=self.expiration_time,
            section_size=len(self.data),
            section_state=self.state,
            last_update=self.last_update,
        )


@dataclass(frozen=True, slots=True)
class Ref:
    """Names one checkpoint instance everywhere: a name can be reused after
    a delete, an incarnation never is."""

    name: str
    incarnation: int


@dataclass(slots=True)
class OpenerCount:
    count: int
    watching: bool


@dataclass(slots=True)
class Replica:
    ref: Ref
    attributes: CreationAttributes
    retention: MaybeForever
    # The fence: operations of a lower epoch are refused (cluster/); the
    # active replica the epoch belongs to (None: a collocated checkpoint with
    # no active, until ActiveReplicaSet).
    epoch: int
    active: str | None
    sections: dict[bytes, Section] = field(default_factory=dict)
    memory_used: int = 0
    generated_ids: int = 0  # the last generated section id's number
    # Handles open on the checkpoint, per node that has some.
    openers: dict[str, OpenerCount] = field(default_factory=dict)
    # When the last handle anywhere closed (retention runs from there);
    # None while some handle is open.
    last_close: Nanos | None = None
    seq: int = 0  # operations applied

    @classmethod
    def create(cls, ref: Ref, operation: op.Create, *, epoch: int, active: str | None) -> Replica:
        attributes = operation.attributes
        replica = cls(ref, attributes, attributes.retention_duration, epoch, active)
        if attributes.max_sections == 1:
            replica.sections[DEFAULT_SECTION_ID] = Section(
                DEFAULT_SECTION_ID, b"", None, operation.at
            )
        replica.last_close = operation.at
        replica.seq = 1
        return replica

    @property
    def open_handles(self) -> int:
        return sum(opener.count for opener in self.openers.values())

    def watching_nodes(self) -> list[str]:
        return [node for node, opener in self.openers.items() if opener.watching]

    def apply(self, operation: op.Operation) -> Changes:
        """Change the state; returns the changed sections to report."""
        self.seq += 1
        match operation:
            case op.Write():
                return self._write(operation)
            case op.Overwrite(section_id, data, at):
                section = self.sections[section_id]
                self.memory_used += len(data) - len(section.data)
                section.data = bytearray(data)
                section.state = SectionState.VALID
                section.last_update = at
                return [(section_id, Change.OVERWRITTEN)]
            case op.SectionCreate(section_id, expiration, data, at, generated_ids):
                self.sections[section_id] = Section(section_id, data, expiration, at)
                self.memory_used += len(data)
                self.generated_ids = generated_ids
                return [(section_id, Change.CREATED)]
            case op.SectionDelete(section_id):
                return self._remove(section_id, Change.DELETED)
            case op.SectionExpire(section_id):
                return self._remove(section_id, Change.EXPIRED)
            case op.ExpirationSet(section_id, expiration):
                self.sections[section_id].expiration_time = expiration
                return []
            case op.RetentionSet(duration):
                self.retention = duration
                return []
            case op.Openers(node, count, watching, at):
                before = self.open_handles
                if count:
                    self.openers[node] = OpenerCount(count, watching)
                else:
                    self.openers.pop(node, None)
                after = self.open_handles
                if after == 0 and before > 0:
                    self.last_close = at
                elif after > 0:
                    self.last_close = None
                return []
            case op.Promote(epoch, active):
                self.epoch = epoch
                self.active = active
                return []
            case op.Corrupt(section_ids):
                for section_id in section_ids:
                    corrupted = self.sections.get(section_id)
                    if corrupted is not None:
                        corrupted.state = SectionState.CORRUPTED
                return []
            case op.Create():
                raise ValueError("Create starts a replica: use Replica.create")
        raise TypeError(f"not an operation: {operation!r}")

    def write_part(self, operation: op.Write) -> Changes:
        """Part of a weak write that travels element by element: applied
        without counting as an operation (the last part counts)."""
        return self._write(operation)

    def _write(self, operation: op.Write) -> Changes:
        changed: dict[bytes, Change] = {}  # one entry per section, first-write order
        for element in operation.elements:
            section = self.sections[element.section_id]
            data = section.data
            before = len(data)
            gap = element.offset - before
            if gap > 0:
                data.extend(bytes(gap))  # a hole reads as zeros, as in POSIX files
            data[element.offset : element.offset + len(element.data)] = element.data
            self.memory_used += len(data) - before
            section.last_update = operation.at
            changed[element.section_id] = Change.WRITTEN
        return list(changed.items())

    def _remove(self, section_id: bytes, change: Change) -> Changes:
        section = self.sections.pop(section_id)
        self.memory_used -= len(section.data)
        return [(section_id, change)]
