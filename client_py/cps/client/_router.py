"""A session's checkpoint objects and what each received callback means,
shared by the threaded and asyncio clients.

``Router.route`` turns a ``cps.v1.Callback`` into an event naming the
checkpoint object it concerns (created for a successful asynchronous open),
or None when it concerns a handle closed since (its callbacks are cancelled).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from cps.v1 import checkpoint_service_pb2 as pb

from . import _convert
from .errors import CkptError, error_for
from .values import ChangedSection, OpenFlags


class HasHandle(Protocol):
    @property
    def handle(self) -> int: ...


Handle = TypeVar("Handle", bound=HasHandle)


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


Event = Opened[Handle] | Synchronized | Notified[Handle] | Dropped


class Router(Generic[Handle]):
    def __init__(self, make: Callable[[int, str, OpenFlags], Handle]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._checkpoints: dict[int, Handle] = {}
        self._opening: dict[int, deque[tuple[str, OpenFlags]]] = {}

    def adopt(self, handle: int, name: str, flags: OpenFlags) -> Handle:
        """The object of a newly opened handle."""
        checkpoint = self._make(handle, name, flags)
        with self._lock:
            self._checkpoints[handle] = checkpoint
        return checkpoint

    def forget(self, checkpoint: Handle) -> None:
        with self._lock:
            if self._checkpoints.get(checkpoint.handle) is checkpoint:
                del self._checkpoints[checkpoint.handle]

    def forget_all(self) -> list[Handle]:
        with self._lock:
            checkpoints = list(self._checkpoints.values())
            self._checkpoints.clear()
            self._opening.clear()
        return checkpoints

    def expect_open(self, invocation: int, name: str, flags: OpenFlags) -> None:
        """Remember what an asynchronous open asked for (its callback carries
        only the invocation); call before the request, since another thread
        may dispatch the callback before the call returns."""
        with self._lock:
            self._opening.setdefault(invocation, deque()).append((name, flags))

    def cancel_open(self, invocation: int, name: str, flags: OpenFlags) -> None:
        """The asynchronous open failed at the call: no callback will come."""
        with self._lock:
            waiting = self._opening.get(invocation)
            if waiting and (name, flags) in waiting:
                waiting.remove((name, flags))
                if not waiting:
                    del self._opening[invocation]

    def _opened(self, invocation: int) -> tuple[str, OpenFlags]:
        with self._lock:
            waiting = self._opening.get(invocation)
            if not waiting:
                return "", OpenFlags(0)
            entry = waiting.popleft()
            if not waiting:
                del self._opening[invocation]
            return entry

    def route(self, callback: pb.Callback) -> Event[Handle] | None:
        kind = callback.WhichOneof("kind")
        if kind == "open":
            message = callback.open
            name, flags = self._opened(message.invocation)
            if message.error_reason:
                failure = error_for(message.error_reason, message.error_message)
                return Opened(message.invocation, None, failure)
            checkpoint = self.adopt(message.checkpoint_handle, name, flags)
            return Opened(message.invocation, checkpoint, None)
        if kind == "synchronize":
            done = callback.synchronize
            error = error_for(done.error_reason, done.error_message) if done.error_reason else None
            return Synchronized(done.invocation, error)
        if kind == "notification":
            notification = callback.notification
            with self._lock:
                found = self._checkpoints.get(notification.checkpoint_handle)
            if found is None:
                return None  # closed since: its pending callbacks are cancelled
            sections = _convert.changed_sections_of(notification)
            return Notified(notification.checkpoint_name, found, sections)
        if kind == "dropped":
            return Dropped(callback.dropped.count)
        return None
