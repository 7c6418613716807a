"""Shared fixtures and helpers for the unit tests of the seed's rules.

The tests drive the use cases of one node (service/ over core/, a cluster of
one, nothing stored) through ``Manager``, which runs each call to completion
on a private event loop. Time is a FakeClock: it only moves when a test
calls ``advance``, which fires the due timers in time order.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from cps.server.cluster.solo import NoForwarder, NoReplication, SoloDirectory
from cps.server.core.directory import Member
from cps.server.core.errors import CkptError, ErrorCode
from cps.server.core.events import Event
from cps.server.core.limits import Limits
from cps.server.core.replica import Ref, Replica
from cps.server.core.replicas import Replicas
from cps.server.core.sessions import Session, Sessions
from cps.server.core.types import (
    CreationAttributes,
    CreationFlag,
    OpenFlag,
    ReadElement,
)
from cps.server.service.active import ActiveReplicas
from cps.server.service.checkpoints import Checkpoints
from cps.server.service.ports import ForeverLease, NoPersistence

S = 1_000_000_000  # nanoseconds per second
START = 1_700_000_000 * S
RW = OpenFlag.READ | OpenFlag.WRITE
RWC = RW | OpenFlag.CREATE


class FakeTimer:
    def __init__(self, when: int, order: int, callback: Callable[[], None]) -> None:
        self.when = when
        self.order = order
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """now() is a settable count of nanoseconds; timers fire only inside
    advance()."""

    def __init__(self, start: int = START) -> None:
        self.time = start
        self.timers: list[FakeTimer] = []
        self._order = 0
        self.after_advance: Callable[[], None] = lambda: None

    def now(self) -> int:
        return self.time

    def call_later(self, delay: int, callback: Callable[[], None]) -> FakeTimer:
        self._order += 1
        timer = FakeTimer(self.time + max(0, delay), self._order, callback)
        self.timers.append(timer)
        return timer

    def pending(self) -> list[FakeTimer]:
        return [t for t in self.timers if not t.cancelled]

    def advance(self, seconds: float) -> None:
        self.advance_ns(round(seconds * S))

    def advance_ns(self, nanos: int) -> None:
        """Move time forward, firing every due timer in (time, creation) order,
        including timers armed by the callbacks themselves (and the work
        they start)."""
        target = self.time + nanos
        while True:
            due = [t for t in self.pending() if t.when <= target]
            if not due:
                break
            timer = min(due, key=lambda t: (t.when, t.order))
            self.timers.remove(timer)
            self.time = max(self.time, timer.when)
            timer.callback()
            self.after_advance()
        self.time = target


class Manager:
    """One node's checkpoint use cases, called synchronously."""

    def __init__(self, clock: FakeClock, limits: Limits | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        limits = limits or Limits()
        me = Member("unit", 1)
        self.directory = SoloDirectory(me)
        self.replicas = Replicas(limits)
        self.core_sessions = Sessions(limits)
        self.active = ActiveReplicas(
            me,
            self.replicas,
            self.directory,
            NoReplication(),
            NoPersistence(),
            ForeverLease(),
            clock,
            lambda ref, changes: self.service.deliver(ref, changes),
        )
        self.service = Checkpoints(
            self.core_sessions,
            self.replicas,
            self.active,
            self.directory,
            NoForwarder(),
            clock,
            limits,
        )
        clock.after_advance = self.drain

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.service, name)
        if not inspect.iscoroutinefunction(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            result = self.loop.run_until_complete(method(*args, **kwargs))
            self.drain()
            return result

        return call

    def drain(self) -> None:
        """Run the work calls and timers started, until none is left."""
        for _ in range(100):
            pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
            if not pending:
                return
            self.loop.run_until_complete(asyncio.sleep(0))
        raise AssertionError("background work does not settle")

    def initialize(self, release: str, major: int, minor: int) -> tuple[int, Any]:
        return self.service.initialize(release, major)

    def session(self, session_id: int) -> Session:
        return self.core_sessions.session(session_id)

    @property
    def sessions(self) -> dict[int, Session]:
        return self.core_sessions.sessions

    @property
    def checkpoints(self) -> dict[str, Replica]:
        """The live (not unlinked) checkpoints by name."""
        return {
            name: self.replicas.get(Ref(record.name, record.incarnation))
            for name, record in self.directory.by_name.items()
        }

    @property
    def reserved_bytes(self) -> int:
        return self.replicas.reserved_bytes

    def replica(self, handle_id: int) -> Replica:
        return self.replicas.get(self.core_sessions.handle(handle_id).ref)

    def take_events(self, session_id: int) -> list[Event]:
        self.drain()
        return self.core_sessions.session(session_id).events.take_all()

    def close_loop(self) -> None:
        self.drain()
        self.loop.close()
        asyncio.set_event_loop(None)


def attributes(
    *flags: CreationFlag,
    checkpoint_size: int = 1000,
    max_section_id_size: int = 8,
    max_sections: int = 10,
    max_section_size: int = 100,
    retention: float | None = 60.0,
) -> CreationAttributes:
    """Creation attributes (retention in seconds); WR_ACTIVE_REPLICA when no
    flag is given."""
    return CreationAttributes(
        creation_flags=frozenset(flags or {CreationFlag.WR_ACTIVE_REPLICA}),
        checkpoint_size=checkpoint_size,
        max_section_id_size=max_section_id_size,
        max_sections=max_sections,
        max_section_size=max_section_size,
        retention_duration=None if retention is None else round(retention * S),
    )


MakeManager = Callable[..., "Manager"]


@contextmanager
def fails(code: ErrorCode) -> Iterator[pytest.ExceptionInfo[CkptError]]:
    """Expect the block to raise CkptError with exactly this code."""
    with pytest.raises(CkptError) as info:
        yield info
    assert info.value.code is code, f"expected {code}, got {info.value}"


def read_all(manager: Manager, handle: int, section_id: bytes) -> bytes:
    """The whole content of one section."""
    return manager.read(handle, [ReadElement(section_id, 0, 0)])[0]  # type: ignore[no-any-return]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_manager(clock: FakeClock) -> Iterator[MakeManager]:
    made: list[Manager] = []

    def make(limits: Limits | None = None) -> Manager:
        made.append(Manager(clock, limits))
        return made[-1]

    yield make
    for manager in made:
        manager.close_loop()


@pytest.fixture
def manager(make_manager: MakeManager) -> Manager:
    return make_manager()


@pytest.fixture
def session(manager: Manager) -> int:
    session_id, _ = manager.initialize("B", 1, 1)
    return session_id


@pytest.fixture
def handle(manager: Manager, session: int) -> int:
    """A READ|WRITE handle on checkpoint "ckpt" (default attributes)."""
    return manager.open(session, "ckpt", attributes(), RWC)  # type: ignore[no-any-return]
