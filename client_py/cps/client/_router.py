"""A session's checkpoint objects and what each received callback means,
shared by the threaded and asyncio clients.

``Router.route`` turns a queued item (a received ``cps.v1.Callback``, or a
``Moved`` marker) into an event naming the checkpoint object it concerns
(created for a successful asynchronous open), or None when it concerns a
handle closed since (its callbacks are cancelled).

Each object stands for a ``CheckpointRef`` whose node handle changes when
the session moves; the router knows every handle a ref ever had (handles are
unpredictable ids, so an old one never names another checkpoint), so a
notification queued before a move still finds its object.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from cps.v1 import checkpoint_service_pb2 as pb
from cps.v1 import types_pb2 as t

from . import _convert
from ._failover import CheckpointRef
from .errors import CkptError, TryAgainError, error_for
from .values import ChangedSection, OpenFlags


class HasRef(Protocol):
    @property
    def ref(self) -> CheckpointRef: ...


Handle = TypeVar("Handle", bound=HasRef)


@dataclass(frozen=True, slots=True)
class Received:
    """A callback as the stream received it, with the generation of the link
    (the session's node) it came from."""

    generation: int
    callback: pb.Callback


@dataclass(frozen=True, slots=True)
class Moved:
    """Queued when the session moved to another node: ``node`` is its
    address, ``lost`` the checkpoints that could not be opened again there."""

    node: str
    lost: list[str] = field(default_factory=list)


QueueItem = Received | Moved | pb.Callback


@dataclass(frozen=True, slots=True)
class Opened(Generic[Handle]):
    invocation: int
    checkpoint: Handle | None
    error: CkptError | None


@dataclass(frozen=True, slots=True)
class Synchronized:
    invocation: int
    error: CkptError | None


@dataclass(frozen=True, slots=True)
class Notified(Generic[Handle]):
    name: str
    checkpoint: Handle
    sections: list[ChangedSection]


@dataclass(frozen=True, slots=True)
class Dropped:
    count: int


Event = Opened[Handle] | Synchronized | Notified[Handle] | Dropped | Moved

_LOST_ANSWER = (
    "the session moved to another node before this node answered; the outcome is "
    "unknown: call again"
)


class Router(Generic[Handle]):
    def __init__(self, make: Callable[[CheckpointRef], Handle]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._objects: dict[CheckpointRef, Handle] = {}  # in opening order
        self._by_handle: dict[int, CheckpointRef] = {}
        self._opening: dict[int, deque[tuple[str, OpenFlags]]] = {}
        self._unanswered_opens: Counter[int] = Counter()
        self._unanswered_syncs: Counter[int] = Counter()

    def adopt(self, handle: int, name: str, flags: OpenFlags, generation: int) -> Handle:
        """The object of a newly opened handle (of the link ``generation``)."""
        ref = CheckpointRef(name, flags, handle, generation)
        checkpoint = self._make(ref)
        with self._lock:
            self._objects[ref] = checkpoint
            self._by_handle[handle] = ref
        return checkpoint

    def remap(self, ref: CheckpointRef, handle: int) -> None:
        """``ref`` now has ``handle`` too (its session moved)."""
        with self._lock:
            if ref in self._objects:
                self._by_handle[handle] = ref

    def refs(self) -> list[CheckpointRef]:
        """The open checkpoints, in the order they were opened."""
        with self._lock:
            return list(self._objects)

    def forget(self, checkpoint: Handle) -> None:
        ref = checkpoint.ref
        with self._lock:
            if self._objects.get(ref) is checkpoint:
                del self._objects[ref]
                for handle in [h for h, r in self._by_handle.items() if r is ref]:
                    del self._by_handle[handle]

    def forget_all(self) -> list[Handle]:
        with self._lock:
            checkpoints = list(self._objects.values())
            self._objects.clear()
            self._by_handle.clear()
            self._opening.clear()
            self._unanswered_opens.clear()
            self._unanswered_syncs.clear()
        return checkpoints

    # -- asynchronous calls ------------------------------------------------------

    def expect_open(self, invocation: int, name: str, flags: OpenFlags) -> None:
        """Remember what an asynchronous open asked for (its callback carries
        only the invocation); call before the request, since another thread
        may dispatch the callback before the call returns."""
        with self._lock:
            self._opening.setdefault(invocation, deque()).append((name, flags))
            self._unanswered_opens[invocation] += 1

    def cancel_open(self, invocation: int, name: str, flags: OpenFlags) -> None:
        """The asynchronous open failed at the call: no callback will come."""
        with self._lock:
            waiting = self._opening.get(invocation)
            if waiting and (name, flags) in waiting:
                waiting.remove((name, flags))
                if not waiting:
                    del self._opening[invocation]
            if self._unanswered_opens[invocation] > 0:
                self._unanswered_opens[invocation] -= 1

    def open_unanswered(self, invocation: int) -> bool:
        with self._lock:
            return self._unanswered_opens[invocation] > 0

    def expect_synchronize(self, invocation: int) -> None:
        with self._lock:
            self._unanswered_syncs[invocation] += 1

    def cancel_synchronize(self, invocation: int) -> None:
        with self._lock:
            if self._unanswered_syncs[invocation] > 0:
                self._unanswered_syncs[invocation] -= 1

    def synchronize_unanswered(self, invocation: int) -> bool:
        with self._lock:
            return self._unanswered_syncs[invocation] > 0

    def received(self, callback: pb.Callback) -> None:
        """A callback arrived (before it is queued): its call is answered."""
        kind = callback.WhichOneof("kind")
        with self._lock:
            if kind == "open" and self._unanswered_opens[callback.open.invocation] > 0:
                self._unanswered_opens[callback.open.invocation] -= 1
            elif kind == "synchronize":
                invocation = callback.synchronize.invocation
                if self._unanswered_syncs[invocation] > 0:
                    self._unanswered_syncs[invocation] -= 1

    def unanswered(self) -> list[pb.Callback]:
        """An error callback (CL_ERR_TRY_AGAIN) for every asynchronous call
        still waiting for its answer, which went with the node the session
        left; they are answered now."""
        with self._lock:
            opens = list(self._unanswered_opens.elements())
            syncs = list(self._unanswered_syncs.elements())
            self._unanswered_opens.clear()
            self._unanswered_syncs.clear()
        reason = TryAgainError.reason or ""
        return [
            pb.Callback(
                open=t.CheckpointOpenCallback(
                    invocation=invocation, error_reason=reason, error_message=_LOST_ANSWER
                )
            )
            for invocation in opens
        ] + [
            pb.Callback(
                synchronize=t.CheckpointSynchronizeCallback(
                    invocation=invocation, error_reason=reason, error_message=_LOST_ANSWER
                )
            )
            for invocation in syncs
        ]

    def _opened(self, invocation: int) -> tuple[str, OpenFlags]:
        with self._lock:
            waiting = self._opening.get(invocation)
            if not waiting:
                return "", OpenFlags(0)
            entry = waiting.popleft()
            if not waiting:
                del self._opening[invocation]
            return entry

    # -- dispatch -------------------------------------------------------------------

    def route(self, item: QueueItem) -> Event[Handle] | None:
        if isinstance(item, Moved):
            return item
        generation, callback = (
            (item.generation, item.callback) if isinstance(item, Received) else (0, item)
        )
        kind = callback.WhichOneof("kind")
        if kind == "open":
            message = callback.open
            name, flags = self._opened(message.invocation)
            if message.error_reason:
                failure = error_for(message.error_reason, message.error_message)
                return Opened(message.invocation, None, failure)
            checkpoint = self.adopt(message.checkpoint_handle, name, flags, generation)
            return Opened(message.invocation, checkpoint, None)
        if kind == "synchronize":
            done = callback.synchronize
            error = error_for(done.error_reason, done.error_message) if done.error_reason else None
            return Synchronized(done.invocation, error)
        if kind == "notification":
            notification = callback.notification
            with self._lock:
                ref = self._by_handle.get(notification.checkpoint_handle)
                found = None if ref is None else self._objects.get(ref)
            if found is None:
                return None  # closed since: its pending callbacks are cancelled
            sections = _convert.changed_sections_of(notification)
            return Notified(notification.checkpoint_name, found, sections)
        if kind == "dropped":
            return Dropped(callback.dropped.count)
        return None
