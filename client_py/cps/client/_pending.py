"""The queue of received callbacks and its selection object.

The selection object is the read end of a pipe that holds one byte exactly
while the queue has something to hand out (callbacks, or the sticky error of
a lost callback stream), so ``select``/``poll`` report it readable then and
only then. ``close`` closes the write end: the read end then reads end-of-file
and stays readable, which wakes every thread still waiting on it.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import deque
from typing import Generic, TypeVar

Item = TypeVar("Item")


class QueueClosed(Exception):
    """The queue was closed (its session finalized)."""


class PendingQueue(Generic[Item]):
    def __init__(self) -> None:
        self._items: deque[Item] = deque()
        self._failure: BaseException | None = None
        self._closed = False
        self._condition = threading.Condition()
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        os.set_blocking(write_end, False)
        self._read_end = read_end
        self._fds = {"read": read_end, "write": write_end}
        self._signalled = False
        # The read end outlives close() (see the module docstring) until the
        # queue is collected.
        weakref.finalize(self, _close_all, self._fds)

    def fileno(self) -> int:
        """The selection object: readable while ``take`` has something."""
        return self._read_end

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        with self._condition:
            return len(self._items)

    def put(self, item: Item) -> None:
        with self._condition:
            if self._closed:
                return
            self._items.append(item)
            self._signal()
            self._condition.notify_all()

    def fail(self, error: BaseException) -> None:
        """Once the items are taken, ``take`` raises ``error`` every time."""
        with self._condition:
            if self._closed:
                return
            self._failure = error
            self._signal()
            self._condition.notify_all()

    def take(self) -> Item | None:
        """The oldest item, or None if there is none. Raises the failure when
        no item is left, QueueClosed after close."""
        with self._condition:
            if self._closed:
                raise QueueClosed
            if self._items:
                item = self._items.popleft()
                if not self._items and self._failure is None:
                    self._unsignal()
                return item
            if self._failure is not None:
                raise self._failure
            return None

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until ``take`` has something: True, or False on close or
        timeout."""
        with self._condition:
            self._condition.wait_for(
                lambda: self._closed or self._items or self._failure is not None, timeout
            )
            return not self._closed and (bool(self._items) or self._failure is not None)

    def close(self) -> None:
        """Drop every item; ``take`` raises QueueClosed from now on."""
        with self._condition:
            if self._closed:
                return
            self._closed = True
            self._items.clear()
            os.close(self._fds.pop("write"))
            self._condition.notify_all()

    def _signal(self) -> None:
        if not self._signalled:
            os.write(self._fds["write"], b"\0")
            self._signalled = True

    def _unsignal(self) -> None:
        if self._signalled:
            try:
                while os.read(self._read_end, 64):
                    pass
            except BlockingIOError:
                pass
            self._signalled = False


def _close_all(fds: dict[str, int]) -> None:
    for fd in fds.values():
        os.close(fd)
    fds.clear()
