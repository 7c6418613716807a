"""The real clock: time.time_ns() and the running asyncio loop's timers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from cps.server.core.clock import Timer
from cps.server.core.types import NANOS_PER_SECOND, Nanos


class LoopClock:
    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop

    def now(self) -> Nanos:
        return time.time_ns()

    def call_later(self, delay: Nanos, callback: Callable[[], None]) -> Timer:
        loop = self._loop or asyncio.get_running_loop()
        # Past the loop's float range a timer would never fire anyway.
        return loop.call_later(min(max(0, delay), 2**53) / NANOS_PER_SECOND, callback)
