"""What a checkpoint handle asks of the checkpoint's active replica.

The node that holds the handle checks the handle (its session, its open
flags); the active replica evaluates the call against the checkpoint
(core/rules.py). The same values travel when the active replica is on
another node (cluster/codec.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from .types import MaybeForever, Nanos, ReadElement, SectionsChosen, WriteElement


@dataclass(frozen=True, slots=True)
class SectionCreateCall:
    section_id: bytes | None  # None: generate one
    expiration: MaybeForever
    data: bytes


@dataclass(frozen=True, slots=True)
class SectionDeleteCall:
    section_id: bytes


@dataclass(frozen=True, slots=True)
class ExpirationSetCall:
    section_id: bytes
    expiration: MaybeForever


@dataclass(frozen=True, slots=True)
class WriteCall:
    elements: tuple[WriteElement, ...]


@dataclass(frozen=True, slots=True)
class OverwriteCall:
    section_id: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class RetentionSetCall:
    duration: MaybeForever


@dataclass(frozen=True, slots=True)
class OpenersCall:
    """A node's count of open handles (and immediate-consumption interest)."""

    node: str
    count: int
    watching: bool


# -- queries: answered by the active replica, change nothing ---------------


@dataclass(frozen=True, slots=True)
class ReadCall:
    elements: tuple[ReadElement, ...]


@dataclass(frozen=True, slots=True)
class StatusCall:
    pass


@dataclass(frozen=True, slots=True)
class IterateCall:
    """The ids of the sections an iteration with this filter returns."""

    chosen: SectionsChosen
    expiration_time: Nanos | None


@dataclass(frozen=True, slots=True)
class DescribeCall:
    """The descriptor of one section, or None when it is gone."""

    section_id: bytes


@dataclass(frozen=True, slots=True)
class SynchronizeCall:
    """Wait until every in-sync replica holds every acknowledged change."""


@dataclass(frozen=True, slots=True)
class ActiveReplicaSetCall:
    """Make ``node`` the active replica of a collocated checkpoint."""

    node: str


MutatingCall = (
    SectionCreateCall
    | SectionDeleteCall
    | ExpirationSetCall
    | WriteCall
    | OverwriteCall
    | RetentionSetCall
    | OpenersCall
)
QueryCall = ReadCall | StatusCall | IterateCall | DescribeCall
Call = MutatingCall | QueryCall | SynchronizeCall | ActiveReplicaSetCall
