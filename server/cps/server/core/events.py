"""Per-session callback queues (open/synchronize completions, notifications).

The core appends; the API layer drains through the session's stream. The
queue is bounded: see ``SessionEvents.push`` for what happens on overflow.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import CkptError
from .types import Change


@dataclass(slots=True)
class OpenCompleted:
    invocation: int
    handle: int
    error: CkptError | None
    checkpoint_name: str = ""


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

    def __init__(self, max_depth: int, max_message_bytes: int = 1024**2) -> None:
        self.max_depth = max_depth
        # No callback taken is (much) larger: see split_notification.
        self.max_message_bytes = max_message_bytes
        self.queue: deque[Event] = deque()
        self.sequence = 0  # of the last event taken
        # The last events taken, kept to be sent again to a stream that
        # resumes after a break: (sequence, event), oldest first.
        self.sent: deque[tuple[int, Event]] = deque(maxlen=max_depth)
        self.on_ready: Callable[[], None] | None = None
        self.closed = False
        # The newest waiting notification of each handle: merging under
        # pressure is O(1), so a stalled consumer never slows a writer.
        self._latest: dict[int, Notification] = {}
        self._lost: EventsLost | None = None  # the marker waiting in the queue

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
        if self._lost is not None:
            self._lost.count += 1
        else:  # the marker stands where the first dropped notification stood
            self._lost = EventsLost(1)
            self.queue.insert(index, self._lost)

    def take_all(self) -> list[Event]:
        return [event for _, event in self.take_numbered()]

    def take_numbered(self) -> list[tuple[int, Event]]:
        """Every waiting event with its sequence number (1, 2, ... per
        session), kept for a stream that resumes."""
        taken = []
        budget = self.max_message_bytes - MESSAGE_OVERHEAD
        for waiting in self.queue:
            for event in split_notification(waiting, budget):
                self.sequence += 1
                taken.append((self.sequence, event))
        self.queue.clear()
        self._latest.clear()
        self._lost = None
        self.sent.extend(taken)
        return taken

    def sent_after(self, sequence: int) -> list[tuple[int, Event]]:
        """The retained events taken after ``sequence``."""
        return [(number, event) for number, event in self.sent if number > sequence]

    def drop_handle(self, handle: int) -> None:
        """Cancel the pending callbacks of a closed handle."""
        self.queue = deque(e for e in self.queue if not _of_handle(e, handle))
        kept = [(n, e) for n, e in self.sent if not _of_handle(e, handle)]
        self.sent = deque(kept, maxlen=self.max_depth)
        self._latest.pop(handle, None)

    def close(self) -> None:
        self.closed = True
        self.queue.clear()
        self.sent.clear()
        self._latest.clear()
        self._lost = None
        if self.on_ready is not None:
            self.on_ready()


# Room kept in a message for its framing and a callback's other fields.
MESSAGE_OVERHEAD = 1024
CHANGE_OVERHEAD = 16  # a ChangedSection's tags, lengths and kind


def notification_bytes(event: Notification) -> int:
    """About the encoded size of a notification (never less)."""
    return len(event.checkpoint_name.encode()) + sum(
        len(section_id) + CHANGE_OVERHEAD for section_id, _ in event.changes
    )


def split_notification(event: Event, budget: int) -> list[Event]:
    """A notification too large for one message as several, each within
    ``budget`` bytes (one change per notification at least), in order; any
    other event as it is."""
    if not isinstance(event, Notification) or notification_bytes(event) <= budget:
        return [event]
    parts: list[Event] = []
    base = len(event.checkpoint_name.encode())
    changes: list[tuple[bytes, Change]] = []
    size = base
    for section_id, change in event.changes:
        cost = len(section_id) + CHANGE_OVERHEAD
        if changes and size + cost > budget:
            parts.append(Notification(event.checkpoint_name, event.handle, changes))
            changes, size = [], base
        changes.append((section_id, change))
        size += cost
    parts.append(Notification(event.checkpoint_name, event.handle, changes))
    return parts


def _of_handle(event: Event, handle: int) -> bool:
    return not isinstance(event, EventsLost) and event.handle == handle


def _record(changes: list[tuple[bytes, Change]], section_id: bytes, change: Change) -> None:
    """Keep one entry per section, in first-change order, with its latest kind."""
    for index, (known, _) in enumerate(changes):
        if known == section_id:
            changes[index] = (section_id, change)
            return
    changes.append((section_id, change))
