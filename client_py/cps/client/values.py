"""The seed's value types (chapter 3.2) as Python values: flags, enums,
dataclasses, and the FOREVER / NEVER constants that stand where the seed uses
a magic time (CL_TIME_END)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal, TypeAlias

# -- flags and enums -----------------------------------------------------------


class OpenFlags(enum.Flag):
    """ClCkptOpenFlagsT: combine with ``|``."""

    READ = enum.auto()  # CL_CKPT_CHECKPOINT_READ
    WRITE = enum.auto()  # CL_CKPT_CHECKPOINT_WRITE
    CREATE = enum.auto()  # CL_CKPT_CHECKPOINT_CREATE


class CreationFlags(enum.Flag):
    """ClCkptCreationFlagsT: exactly one WR_* update mode, optionally ``|
    CHECKPOINT_COLLOCATED`` (the server checks the combination)."""

    WR_ALL_REPLICAS = enum.auto()  # synchronous checkpoint
    WR_ACTIVE_REPLICA = enum.auto()  # asynchronous checkpoint
    WR_ACTIVE_REPLICA_WEAK = enum.auto()  # asynchronous, may leave sections corrupted
    CHECKPOINT_COLLOCATED = enum.auto()  # the application picks the active replica


class SectionsChosen(enum.Enum):
    """ClCkptSectionsChosenT: the filter of a section iteration."""

    FOREVER = enum.auto()  # sections that never expire
    LEQ_EXPIRATION_TIME = enum.auto()  # expire at or before the given time
    GEQ_EXPIRATION_TIME = enum.auto()  # expire at or after it (never-expiring included)
    CORRUPTED = enum.auto()
    ANY = enum.auto()


class SectionState(enum.Enum):
    """ClCkptSectionStateT."""

    VALID = enum.auto()
    CORRUPTED = enum.auto()


class SectionChange(enum.Enum):
    """What happened to a section, in an immediate-consumption notification."""

    CREATED = enum.auto()
    WRITTEN = enum.auto()
    OVERWRITTEN = enum.auto()
    DELETED = enum.auto()
    EXPIRED = enum.auto()


class DispatchFlags(enum.Enum):
    """ClDispatchFlagsT of clCkptDispatch."""

    ONE = enum.auto()  # run at most one pending callback
    ALL = enum.auto()  # run every callback pending when called
    BLOCKING = enum.auto()  # run callbacks as they come until the session is finalized


# -- times -----------------------------------------------------------------------


class Forever(enum.Enum):
    """The type of FOREVER."""

    FOREVER = "forever"


class Never(enum.Enum):
    """The type of NEVER."""

    NEVER = "never"


FOREVER: Final = Forever.FOREVER
"""A retention duration that never ends: the checkpoint is never deleted by the
retention timer."""

NEVER: Final = Never.NEVER
"""An expiration time that never comes (the seed's CL_TIME_END)."""

Duration: TypeAlias = float | timedelta
"""A length of time: seconds or a timedelta."""

RetentionDuration: TypeAlias = float | timedelta | Literal[Forever.FOREVER]
"""Seconds, a timedelta, or FOREVER."""

ExpirationTime: TypeAlias = datetime | float | Literal[Never.NEVER]
"""An absolute time: an aware datetime, epoch seconds, or NEVER."""

DEFAULT_SECTION_ID: Final = b""
"""CL_CKPT_DEFAULT_SECTION_ID: the only section of a checkpoint created with
``max_sections=1``."""


def as_timedelta(value: Duration) -> timedelta:
    return value if isinstance(value, timedelta) else timedelta(seconds=value)


def epoch_seconds(value: datetime | float) -> float:
    """Seconds since the epoch of an aware datetime (a naive one is refused:
    local time and UTC are both common guesses) or of a number of seconds."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{value!r} is naive: give a timezone (e.g. tzinfo=timezone.utc)")
        return value.timestamp()
    return float(value)


# -- attributes and descriptors ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Version:
    """ClVersionT."""

    release_code: str = "B"
    major: int = 1
    minor: int = 1

    def __str__(self) -> str:
        return f"{self.release_code}.{self.major}.{self.minor}"


CLIENT_VERSION: Final = Version("B", 1, 1)
"""The version this client asks for at Session.connect (release B, major 1)."""


@dataclass(frozen=True)
class CreationAttributes:
    """ClCkptCheckpointCreationAttributesT.

    ``checkpoint_size`` None means ``max_sections * max_section_size`` (the
    largest size the other attributes allow) and is filled in at construction;
    a ``retention_duration`` in seconds is kept as a timedelta, so attributes
    compare equal to those ``Checkpoint.status()`` returns.
    """

    creation_flags: CreationFlags = CreationFlags.WR_ACTIVE_REPLICA
    max_sections: int = 16
    max_section_size: int = 64 * 1024
    max_section_id_size: int = 64
    checkpoint_size: int | None = None
    retention_duration: RetentionDuration = FOREVER

    def __post_init__(self) -> None:
        if self.checkpoint_size is None:
            object.__setattr__(self, "checkpoint_size", self.max_sections * self.max_section_size)
        if self.retention_duration is not FOREVER:
            object.__setattr__(self, "retention_duration", as_timedelta(self.retention_duration))


@dataclass(frozen=True, slots=True)
class CheckpointStatus:
    """ClCkptCheckpointDescriptorT: what ``Checkpoint.status()`` returns."""

    attributes: CreationAttributes
    memory_used: int  # bytes of section data
    number_of_sections: int


@dataclass(frozen=True, slots=True)
class SectionDescriptor:
    """ClCkptSectionDescriptorT: what a section iteration yields."""

    section_id: bytes
    expiration_time: datetime | Literal[Never.NEVER]  # aware (UTC) or NEVER
    size: int
    state: SectionState
    last_update: datetime  # aware (UTC)


# -- iovectors and notifications ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WriteElement:
    """One element of a ``Checkpoint.write`` iovector."""

    section_id: bytes
    data: bytes
    offset: int = 0


@dataclass(frozen=True, slots=True)
class ReadElement:
    """One element of a ``Checkpoint.read_vector`` iovector; ``size`` None
    reads to the end of the section."""

    section_id: bytes
    offset: int = 0
    size: int | None = None


@dataclass(frozen=True, slots=True)
class ReadResult:
    """An element of a read iovector with its data (``read_size`` bytes)."""

    section_id: bytes
    offset: int
    data: bytes
    read_size: int


@dataclass(frozen=True, slots=True)
class ChangedSection:
    """One changed section of an immediate-consumption notification."""

    section_id: bytes
    change: SectionChange


WriteLike: TypeAlias = WriteElement | tuple[bytes, bytes] | tuple[bytes, bytes, int]
"""A write element or a tuple ``(section_id, data[, offset])``."""

ReadLike: TypeAlias = ReadElement | bytes
"""A read element, or a section id (read the whole section)."""


def write_element(value: WriteLike) -> WriteElement:
    return value if isinstance(value, WriteElement) else WriteElement(*value)


def read_element(value: ReadLike) -> ReadElement:
    return value if isinstance(value, ReadElement) else ReadElement(value)


__all__ = [
    "CLIENT_VERSION",
    "DEFAULT_SECTION_ID",
    "FOREVER",
    "NEVER",
    "ChangedSection",
    "CheckpointStatus",
    "CreationAttributes",
    "CreationFlags",
    "DispatchFlags",
    "Duration",
    "ExpirationTime",
    "Forever",
    "Never",
    "OpenFlags",
    "ReadElement",
    "ReadLike",
    "ReadResult",
    "RetentionDuration",
    "SectionChange",
    "SectionDescriptor",
    "SectionState",
    "SectionsChosen",
    "Version",
    "WriteElement",
    "WriteLike",
]


def split_targets(target: str) -> list[str]:
    """ "a:50051,b:50051" -> ["a:50051", "b:50051"]: the nodes to try, in order."""
    targets = [one.strip() for one in target.split(",") if one.strip()]
    if not targets:
        raise ValueError(f"no node address in {target!r}")
    return targets
