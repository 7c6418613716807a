"""The asyncio counterpart of PendingQueue: received callbacks, a sticky
failure, and a close; one event loop, so no locks and no selection object."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

from ._pending import QueueClosed

Item = TypeVar("Item")


class AsyncPendingQueue(Generic[Item]):
    def __init__(self) -> None:
        self._items: deque[Item] = deque()
        self._failure: BaseException | None = None
        self._closed = False
        self._changed = asyncio.Event()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Item) -> None:
        if not self._closed:
            self._items.append(item)
            self._changed.set()

    def fail(self, error: BaseException) -> None:
        """Once the items are taken, ``take`` raises ``error`` every time."""
        if not self._closed:
            self._failure = error
            self._changed.set()

    def take(self) -> Item | None:
        """The oldest item, or None; raises the failure when no item is left,
        QueueClosed after close."""
        if self._closed:
            raise QueueClosed
        if self._items:
            return self._items.popleft()
        if self._failure is not None:
            raise self._failure
        return None

    async def wait(self) -> bool:
        """Wait until ``take`` has something: True, or False on close."""
        while not (self._closed or self._items or self._failure is not None):
            self._changed.clear()
            await self._changed.wait()
        return not self._closed

    def close(self) -> None:
        self._closed = True
        self._items.clear()
        self._changed.set()
