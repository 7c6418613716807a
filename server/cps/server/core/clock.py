"""Time for the node: wall-clock reads and timers, injectable for tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from .types import NANOS_PER_SECOND, Nanos


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> Nanos:
        """Wall-clock nanoseconds since the epoch."""
        ...

    def call_later(self, delay: Nanos, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` on the node's loop after ``delay`` nanoseconds."""
        ...


class LoopClock:
    """The real clock: time.time_ns() and the running asyncio loop's timers."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop

    def now(self) -> Nanos:
        return time.time_ns()

    def call_later(self, delay: Nanos, callback: Callable[[], None]) -> Timer:
        loop = self._loop or asyncio.get_running_loop()
        # Past the loop's float range a timer would never fire anyway.
        return loop.call_later(min(max(0, delay), 2**53) / NANOS_PER_SECOND, callback)
