"""Telling each checkpoint's active replica how many handles this node has
open on it (retention counts openers across the cluster).

Reports carry absolute counts and go one at a time per checkpoint, the
latest count each time, so reports that cross on the network cannot leave
a stale count behind; an open waits until a report that includes its
handle was applied by the active.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from cps.server.core.calls import Call, OpenersCall
from cps.server.core.errors import CkptError, ErrorCode
from cps.server.core.replica import Ref
from cps.server.core.sessions import Sessions

log = logging.getLogger("cps.openers")

Route = Callable[[Ref, Call], Awaitable[object]]

# After a failed report (the active was unreachable), when to try again.
RETRY_SECONDS = 0.5
# Errors that pass: the active is moving or cannot be reached for now.
_TRANSIENT = frozenset({ErrorCode.TRY_AGAIN, ErrorCode.TIMEOUT})


class _Reporting:
    __slots__ = ("running", "sent", "waiters", "wanted")

    def __init__(self) -> None:
        self.wanted = 0  # changes of the count so far
        self.sent = 0  # changes covered by the last applied report
        self.running = False
        self.waiters: list[tuple[int, asyncio.Future[None]]] = []


class OpenerReports:
    def __init__(
        self, node: str, sessions: Sessions, route: Route, exists: Callable[[Ref], bool]
    ) -> None:
        self.node = node
        self.sessions = sessions
        self.route = route
        self.exists = exists  # the instance still has a record
        self._states: dict[Ref, _Reporting] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Instances whose active missed this node's last count (no active
        # replica at the time): told again when their record changes.
        self.unreported: set[Ref] = set()

    async def report(self, ref: Ref) -> None:
        """Until the active applied a count that includes every change made
        here so far; raises the active's error."""
        state = self._states.setdefault(ref, _Reporting())
        state.wanted += 1
        future = asyncio.get_running_loop().create_future()
        state.waiters.append((state.wanted, future))
        self._start(ref, state)
        await future

    async def report_quietly(self, ref: Ref) -> None:
        """As report, but a failure only means "tell it later"."""
        try:
            await self.report(ref)
        except CkptError as error:
            log.info("openers report deferred", extra={"checkpoint": ref.name, "why": str(error)})
            self.report_later(ref)

    def report_later(self, ref: Ref) -> None:
        """Send the current count again soon (after a failure, or when the
        checkpoint has a new active that may not know it)."""
        state = self._states.setdefault(ref, _Reporting())
        state.wanted += 1
        self._start(ref, state)

    def _start(self, ref: Ref, state: _Reporting) -> None:
        if not state.running:
            state.running = True
            task = asyncio.ensure_future(self._run(ref, state))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, ref: Ref, state: _Reporting) -> None:
        try:
            while state.sent < state.wanted:
                covered = state.wanted
                count, watching = self.sessions.opener_count(ref)
                try:
                    await self.route(ref, OpenersCall(self.node, count, watching))
                except CkptError as error:
                    self._settle(state, covered, error)
                    if error.code in _TRANSIENT and self.exists(ref):
                        await asyncio.sleep(RETRY_SECONDS)  # the active may be moving
                        continue
                    if self.exists(ref):
                        self.unreported.add(ref)
                    break
                self.unreported.discard(ref)
                state.sent = covered
                self._settle(state, covered, None)
        finally:
            state.running = False
            if not state.waiters and state.sent >= state.wanted:
                self._states.pop(ref, None)

    def record_changed(self, ref: Ref) -> None:
        """The instance may have a new active: make sure it knows this node's
        count (an absolute count: telling it twice is harmless)."""
        if ref in self.unreported or self.sessions.handles_of(ref):
            self.report_later(ref)

    @staticmethod
    def _settle(state: _Reporting, covered: int, error: CkptError | None) -> None:
        keep = []
        for wanted, future in state.waiters:
            if wanted > covered:
                keep.append((wanted, future))
            elif not future.done():
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)
        state.waiters = keep
