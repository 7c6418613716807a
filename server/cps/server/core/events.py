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
    handle: int
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
        # The newest waiting notification of each handle: merging under
        # pressure is O(1), so a stalled consumer never slows a writer.
        self._latest: dict[int, Notification] = {}

    def push(self, event: Event) -> None:
        if self.closed:
            return
        if isinstance(event, Notification):
            if len(self.queue) >= self.max_depth:
                waiting = self._latest.get(event.handle)
                if waiting is not None:
                    for section_id, change in event.changes:
                        _record(waiting.changes, section_id, change)
                    return
                self._drop_oldest_notification()
            self._latest[event.handle] = event
        self.queue.append(event)
        if self.on_ready is not None:
            self.on_ready()

    def _drop_oldest_notification(self) -> None:
        for index, waiting in enumerate(self.queue):
            if isinstance(waiting, Notification):
                del self.queue[index]
                if self._latest.get(waiting.handle) is waiting:
                    del self._latest[waiting.handle]
                break
        else:
            return  # only completions wait: they are never dropped
        if self.queue and isinstance(self.queue[0], EventsLost):
            self.queue[0].count += 1
        else:
            self.queue.appendleft(EventsLost(1))

    def take_all(self) -> list[Event]:
        events = list(self.queue)
        self.queue.clear()
        self._latest.clear()
        return events

    def drop_handle(self, handle: int) -> None:
        """Cancel the pending callbacks of a closed handle."""
        self.queue = deque(e for e in self.queue if isinstance(e, EventsLost) or e.handle != handle)
        self._latest.pop(handle, None)

    def close(self) -> None:
        self.closed = True
        self.queue.clear()
        self._latest.clear()
        if self.on_ready is not None:
            self.on_ready()


def _record(changes: list[tuple[bytes, Change]], section_id: bytes, change: Change) -> None:
    """Keep one entry per section, in first-change order, with its latest kind."""
    for index, (known, _) in enumerate(changes):
        if known == section_id:
            changes[index] = (section_id, change)
            return
    changes.append((section_id, change))
