"""Service notifications (the seed's chapter 5): the node's feed of what it
observes, kept in a bounded ring and read by subscribers from a position.

Pure: the API layer turns events into messages and waits for new ones
through ``listen``. A subscriber holds no queue of its own, only the
position it has read up to; events it has not read yet that fall out of the
ring are counted as lost when it next reads (drop-oldest), so a slow
subscriber never makes the node hold more than ``capacity`` events.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass


class EventKind(enum.Enum):
    NODE_JOINED = 1
    NODE_LEFT = 2
    LEASE_LOST = 3
    REPLICA_CREATED = 4
    REPLICA_CAUGHT_UP = 5
    REPLICA_LOST = 6
    ACTIVE_CHANGED = 7
    CHECKPOINT_CREATED = 8
    CHECKPOINT_UNLINKED = 9
    CHECKPOINT_DELETED = 10
    RETENTION_EXPIRED = 11
    SECTION_EXPIRED = 12
    LIMIT_REACHED = 13
    STORAGE_FAILED = 14


@dataclass(frozen=True, slots=True)
class NodeDetail:
    node: str
    incarnation: int


@dataclass(frozen=True, slots=True)
class ReplicaDetail:
    node: str
    incarnation: int
    checkpoint_incarnation: int
    why: str = ""


@dataclass(frozen=True, slots=True)
class ActiveDetail:
    old_node: str
    new_node: str
    new_incarnation: int
    epoch: int
    why: str
    checkpoint_incarnation: int


@dataclass(frozen=True, slots=True)
class SectionDetail:
    section_id: bytes


@dataclass(frozen=True, slots=True)
class LimitDetail:
    reason: str
    method: str


@dataclass(frozen=True, slots=True)
class StorageDetail:
    error: str
    checkpoint_names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CheckpointDetail:
    checkpoint_incarnation: int


Detail = (
    NodeDetail
    | ReplicaDetail
    | ActiveDetail
    | SectionDetail
    | LimitDetail
    | StorageDetail
    | CheckpointDetail
    | None
)


@dataclass(frozen=True, slots=True)
class ServiceEvent:
    position: int
    time: int  # wall-clock nanoseconds
    kind: EventKind
    checkpoint_name: str
    detail: Detail


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Empty sets match everything; with names, events without a checkpoint
    do not match."""

    names: frozenset[str] = frozenset()
    kinds: frozenset[EventKind] = frozenset()

    def matches(self, event: ServiceEvent) -> bool:
        if self.names and event.checkpoint_name not in self.names:
            return False
        return not self.kinds or event.kind in self.kinds


class EventLog:
    """The last ``capacity`` events of this node, numbered 1, 2, ..."""

    def __init__(self, capacity: int, now: Callable[[], int], incarnation: int) -> None:
        self.capacity = max(1, capacity)
        self.now = now
        self.incarnation = incarnation
        self.position = 0  # of the newest event
        self.ring: deque[ServiceEvent] = deque(maxlen=self.capacity)
        self._listeners: set[Callable[[], None]] = set()
        self.closed = False

    def close(self) -> None:
        """The node stops: subscribers end their streams."""
        self.closed = True
        for listener in list(self._listeners):
            listener()

    def emit(self, kind: EventKind, checkpoint_name: str = "", detail: Detail = None) -> None:
        self.position += 1
        self.ring.append(ServiceEvent(self.position, self.now(), kind, checkpoint_name, detail))
        for listener in list(self._listeners):
            listener()

    def listen(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` after each new event; returns the way to stop."""
        self._listeners.add(listener)
        return lambda: self._listeners.discard(listener)

    @property
    def oldest(self) -> int:
        """The position of the oldest event kept (position + 1 when none)."""
        return self.ring[0].position if self.ring else self.position + 1

    def start(self, after: int, incarnation: int = 0) -> int:
        """Where a subscriber starts reading (its cursor): after ``after``;
        at the oldest event kept for 0, a position past the newest, or a
        position of another incarnation (the node restarted)."""
        if after == 0 or after > self.position or incarnation not in (0, self.incarnation):
            return self.oldest - 1
        return after

    def read(
        self, cursor: int, matching: EventFilter, limit: int
    ) -> tuple[int, int, list[ServiceEvent]]:
        """Events after ``cursor`` that match, at most ``limit`` of them:
        (the new cursor, positions lost since ``cursor``, events)."""
        lost = 0
        oldest = self.oldest
        if cursor < oldest - 1:
            lost = oldest - 1 - cursor
            cursor = oldest - 1
        events: list[ServiceEvent] = []
        if cursor >= self.position:
            return cursor, lost, events
        start = cursor - oldest + 1  # index of the first unread event
        for index in range(start, len(self.ring)):
            event = self.ring[index]
            cursor = event.position
            if matching.matches(event):
                events.append(event)
                if len(events) >= limit:
                    break
        return cursor, lost, events


def kinds_of(values: Collection[int]) -> frozenset[EventKind]:
    return frozenset(EventKind(value) for value in values)
