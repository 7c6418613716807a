"""Per-session callback queues (open/synchronize completions, notifications).

The core appends; the API layer drains through the session's stream. The
queue is bounded: see ``SessionEvents.push`` for what happens on overflow.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .checkpoint import Change
from .errors import CkptError


@dataclass(slots=True)
class OpenCompleted:
    invocation: int
    handle: int
    error: CkptError | None


@dataclass(slots=True)
class SynchronizeCompleted:
    invocation: int
    error: CkptError | None


@dataclass(slots=True)
class Notification:
    checkpoint_name: str
    handle: int
    changes: list[tuple[bytes, Change]] = field(default_factory=list)


@dataclass(slots=True)
class EventsLost:
    """Stands in for events dropped because the consumer fell behind."""

    count: int


Event = OpenCompleted | SynchronizeCompleted | Notification | EventsLost


class SessionEvents:
    """A bounded FIFO of one session's callbacks.

    Overflow policy, cheapest loss first: a notification for a handle that
    already has one waiting is merged into it (the consumer sees every changed
    section, once, in first-change order); when the queue is still full, the
    oldest waiting notifications are dropped and one EventsLost says how many.
    Completions (open/synchronize) are never dropped: there is at most one per
    call the client made.
    """

    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth
        self.queue: deque[Event] = deque()
        self.sequence = 0  # of the last event taken
        self.on_ready: Callable[[], None] | None = None
        self.closed = False

    def push(self, event: Event) -> None:
        if self.closed:
            return
        if isinstance(event, Notification) and len(self.queue) >= self.max_depth:
            if self._merge(event):
                return
            self._drop_oldest_notification()
        self.queue.append(event)
        if self.on_ready is not None:
            self.on_ready()

    def _merge(self, event: Notification) -> bool:
        for waiting in self.queue:
            if isinstance(waiting, Notification) and waiting.handle == event.handle:
                for section_id, change in event.changes:
                    _record(waiting.changes, section_id, change)
                return True
        return False

    def _drop_oldest_notification(self) -> None:
        for index, waiting in enumerate(self.queue):
            if isinstance(waiting, Notification):
                del self.queue[index]
                break
        else:
            return  # only completions wait: let the queue exceed its depth
        if self.queue and isinstance(self.queue[0], EventsLost):
            self.queue[0].count += 1
        else:
            self.queue.appendleft(EventsLost(1))

    def take_all(self) -> list[Event]:
        events = list(self.queue)
        self.queue.clear()
        return events

    def drop_handle(self, handle: int) -> None:
        """Cancel the pending callbacks of a closed handle."""
        self.queue = deque(
            e
            for e in self.queue
            if not (isinstance(e, Notification | OpenCompleted) and e.handle == handle)
        )

    def close(self) -> None:
        self.closed = True
        self.queue.clear()
        if self.on_ready is not None:
            self.on_ready()


def _record(changes: list[tuple[bytes, Change]], section_id: bytes, change: Change) -> None:
    """Keep one entry per section, in first-change order, with its latest kind."""
    for index, (known, _) in enumerate(changes):
        if known == section_id:
            changes[index] = (section_id, change)
            return
    changes.append((section_id, change))
