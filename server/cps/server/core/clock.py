"""Time for the core and the use cases: wall-clock reads and timers, as a
protocol (service/clock.py has the real one; tests inject their own)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .types import Nanos


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> Nanos:
        """Wall-clock nanoseconds since the epoch."""
        ...

    def call_later(self, delay: Nanos, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` on the node's loop after ``delay`` nanoseconds."""
        ...
