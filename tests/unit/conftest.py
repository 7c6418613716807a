"""Shared fixtures and helpers for the core's unit tests.

The core is driven through a FakeClock: time only moves when a test calls
``advance``, which fires the due timers in time order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from cps.server.core.errors import CkptError, ErrorCode
from cps.server.core.manager import Limits, ReplicaManager
from cps.server.core.types import (
    CreationAttributes,
    CreationFlag,
    MaybeForever,
    OpenFlag,
    ReadElement,
)

START = 1_700_000_000.0
RW = OpenFlag.READ | OpenFlag.WRITE
RWC = RW | OpenFlag.CREATE


class FakeTimer:
    def __init__(self, when: float, order: int, callback: Callable[[], None]) -> None:
        self.when = when
        self.order = order
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """now() is a settable float; timers fire only inside advance()."""

    def __init__(self, start: float = START) -> None:
        self.time = start
        self.timers: list[FakeTimer] = []
        self._order = 0

    def now(self) -> float:
        return self.time

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        self._order += 1
        timer = FakeTimer(self.time + max(0.0, delay), self._order, callback)
        self.timers.append(timer)
        return timer

    def pending(self) -> list[FakeTimer]:
        return [t for t in self.timers if not t.cancelled]

    def advance(self, seconds: float) -> None:
        """Move time forward, firing every due timer in (time, creation) order,
        including timers armed by the callbacks themselves."""
        target = self.time + seconds
        while True:
            due = [t for t in self.pending() if t.when <= target]
            if not due:
                break
            timer = min(due, key=lambda t: (t.when, t.order))
            self.timers.remove(timer)
            self.time = max(self.time, timer.when)
            timer.callback()
        self.time = target


def attributes(
    *flags: CreationFlag,
    checkpoint_size: int = 1000,
    max_section_id_size: int = 8,
    max_sections: int = 10,
    max_section_size: int = 100,
    retention: MaybeForever = 60.0,
) -> CreationAttributes:
    """Creation attributes; WR_ACTIVE_REPLICA when no flag is given."""
    return CreationAttributes(
        creation_flags=frozenset(flags or {CreationFlag.WR_ACTIVE_REPLICA}),
        checkpoint_size=checkpoint_size,
        max_section_id_size=max_section_id_size,
        max_sections=max_sections,
        max_section_size=max_section_size,
        retention_duration=retention,
    )


@contextmanager
def fails(code: ErrorCode) -> Iterator[pytest.ExceptionInfo[CkptError]]:
    """Expect the block to raise CkptError with exactly this code."""
    with pytest.raises(CkptError) as info:
        yield info
    assert info.value.code is code, f"expected {code}, got {info.value}"


def read_all(manager: ReplicaManager, handle: int, section_id: bytes) -> bytes:
    """The whole content of one section."""
    return manager.read(handle, [ReadElement(section_id, 0, 0)])[0]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def manager(clock: FakeClock) -> ReplicaManager:
    return ReplicaManager(clock, Limits())


@pytest.fixture
def session(manager: ReplicaManager) -> int:
    session_id, _ = manager.initialize("B", 1, 1)
    return session_id


@pytest.fixture
def handle(manager: ReplicaManager, session: int) -> int:
    """A READ|WRITE handle on checkpoint "ckpt" (default attributes)."""
    return manager.open(session, "ckpt", attributes(), RWC)
