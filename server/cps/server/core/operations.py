"""Operations: a seed call evaluated by the active replica, with every id,
time and decision fixed, so that applying it gives the same state on every
replica (core/replica.py). They are what a node stores, and what travels to
the other replicas (cluster/codec.py)."""

from __future__ import annotations

from dataclasses import dataclass

from .types import CreationAttributes, MaybeForever, Nanos, WriteElement


@dataclass(frozen=True, slots=True)
class Create:
    """The first operation of every checkpoint instance."""

    attributes: CreationAttributes
    at: Nanos


@dataclass(frozen=True, slots=True)
class SectionCreate:
    section_id: bytes
    expiration: MaybeForever
    data: bytes
    at: Nanos
    # The id counter after this operation (it moves when the id is generated).
    generated_ids: int


@dataclass(frozen=True, slots=True)
class SectionDelete:
    section_id: bytes


@dataclass(frozen=True, slots=True)
class SectionExpire:
    """The active's expiry timer fired for this section."""

    section_id: bytes


@dataclass(frozen=True, slots=True)
class ExpirationSet:
    section_id: bytes
    expiration: MaybeForever


@dataclass(frozen=True, slots=True)
class Write:
    elements: tuple[WriteElement, ...]
    at: Nanos


@dataclass(frozen=True, slots=True)
class Overwrite:
    section_id: bytes
    data: bytes
    at: Nanos


@dataclass(frozen=True, slots=True)
class RetentionSet:
    duration: MaybeForever


@dataclass(frozen=True, slots=True)
class Openers:
    """How many handles one node has open on the checkpoint (an absolute
    count, so sending it again is harmless), and whether any of them is
    registered for immediate consumption."""

    node: str
    count: int
    watching: bool
    at: Nanos


@dataclass(frozen=True, slots=True)
class Promote:
    """A new active replica at a higher epoch (the fence of the checkpoint);
    ``active`` None: a collocated checkpoint whose active is gone."""

    epoch: int
    active: str | None


@dataclass(frozen=True, slots=True)
class Corrupt:
    """Sections whose last write may have been interrupted (a
    WR_ACTIVE_REPLICA_WEAK write that reached this replica in part)."""

    section_ids: tuple[bytes, ...]


Operation = (
    Create
    | SectionCreate
    | SectionDelete
    | SectionExpire
    | ExpirationSet
    | Write
    | Overwrite
    | RetentionSet
    | Openers
    | Promote
    | Corrupt
)
