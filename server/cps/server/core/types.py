"""Value types of the core: the seed's chapter 3.2 without protobuf.

Times are integer nanoseconds end to end: absolute times since the Unix
epoch, durations as lengths. ``None`` is the end of time (CL_TIME_END:
"forever", "never"). The model holds what a signed 64-bit count of
nanoseconds holds (to 2262-04-11 as an absolute time, about 292 years as a
duration); a value beyond that is refused where it enters (INVALID_PARAM),
so it can never break a later call.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

Nanos = int
MaybeForever = int | None  # nanoseconds, or None for the end of time

NANOS_PER_SECOND = 1_000_000_000
MAX_NANOS = 2**63 - 1


def seconds_to_nanos(seconds: float) -> Nanos:
    """For settings given in seconds (limits, flags); never for client data."""
    return round(seconds * NANOS_PER_SECOND)


class CreationFlag(enum.Enum):
    """ClCkptCreationFlagsT: one WR_* update mode, optionally COLLOCATED."""

    WR_ALL_REPLICAS = 1
    WR_ACTIVE_REPLICA = 2
    WR_ACTIVE_REPLICA_WEAK = 3
    CHECKPOINT_COLLOCATED = 4


UPDATE_MODES = frozenset(
    {
        CreationFlag.WR_ALL_REPLICAS,
        CreationFlag.WR_ACTIVE_REPLICA,
        CreationFlag.WR_ACTIVE_REPLICA_WEAK,
    }
)


class OpenFlag(enum.Flag):
    READ = enum.auto()
    WRITE = enum.auto()
    CREATE = enum.auto()


class SectionState(enum.Enum):
    VALID = 1
    CORRUPTED = 2


class SectionsChosen(enum.Enum):
    FOREVER = 1
    LEQ_EXPIRATION_TIME = 2
    GEQ_EXPIRATION_TIME = 3
    CORRUPTED = 4
    ANY = 5


class Change(enum.Enum):
    """What happened to a section (reported to immediate consumers)."""

    CREATED = 1
    WRITTEN = 2
    OVERWRITTEN = 3
    DELETED = 4
    EXPIRED = 5


@dataclass(frozen=True, slots=True)
class CreationAttributes:
    creation_flags: frozenset[CreationFlag]
    checkpoint_size: int
    max_section_id_size: int
    max_sections: int
    max_section_size: int
    retention_duration: MaybeForever

    @property
    def synchronous(self) -> bool:
        return CreationFlag.WR_ALL_REPLICAS in self.creation_flags

    @property
    def weak(self) -> bool:
        return CreationFlag.WR_ACTIVE_REPLICA_WEAK in self.creation_flags

    @property
    def collocated(self) -> bool:
        """Asynchronous collocated: the application picks the active replica
        (SAF: COLLOCATED has no effect on a synchronous checkpoint)."""
        return CreationFlag.CHECKPOINT_COLLOCATED in self.creation_flags and not self.synchronous

    def same_shape(self, other: CreationAttributes) -> bool:
        """Attributes that must match when an existing checkpoint is reopened
        with CREATE: everything but the retention duration."""
        return (
            self.creation_flags == other.creation_flags
            and self.checkpoint_size == other.checkpoint_size
            and self.max_section_id_size == other.max_section_id_size
            and self.max_sections == other.max_sections
            and self.max_section_size == other.max_section_size
        )


@dataclass(frozen=True, slots=True)
class CheckpointDescriptor:
    attributes: CreationAttributes
    memory_used: int
    number_of_sections: int


@dataclass(frozen=True, slots=True)
class SectionDescriptor:
    section_id: bytes
    expiration_time: MaybeForever
    section_size: int
    section_state: SectionState
    last_update: Nanos


@dataclass(frozen=True, slots=True)
class WriteElement:
    section_id: bytes
    data: bytes
    offset: int


@dataclass(frozen=True, slots=True)
class ReadElement:
    section_id: bytes
    offset: int
    size: int  # 0: to the end of the section


DEFAULT_SECTION_ID = b""


def show_id(section_id: bytes) -> str:
    """A section id for messages read by people in any language: quoted text
    when it is printable ASCII, else hex."""
    if not section_id:
        return "(default section)"
    if section_id.isascii() and section_id.decode().isprintable():
        return f'"{section_id.decode()}"'
    return "0x" + section_id.hex()
