"""A synchronous write's wait for its in-sync backups: one future per
write, settled by the links' acknowledgements; a backup that has not
acknowledged within the timeout (or whose link dropped the write) leaves
the in-sync set before the write is answered.

One timer for all the writes waiting, not a task and a timer per write:
at 64 writes in flight the per-write task and ``asyncio.wait`` cost more
than the rest of the wait (bench/PROFILE.md).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from cps.server.core.directory import Member
from cps.server.core.replica import Ref

# Takes the late members out of the in-sync set; raises when it cannot
# (then the write's outcome is unknown to its caller).
DropLate = Callable[[Ref, list[Member], str], Awaitable[None]]
Spawn = Callable[[Awaitable[None]], None]


class _Write:
    __slots__ = ("deadline", "futures", "left", "outcome", "ref", "seq", "settled", "waits")

    def __init__(
        self,
        waits: WriteWaits,
        ref: Ref,
        seq: int,
        futures: dict[Member, asyncio.Future[None]],
        outcome: asyncio.Future[None],
        deadline: float,
    ) -> None:
        self.waits = waits
        self.ref = ref
        self.seq = seq
        self.futures = futures
        self.outcome = outcome
        self.deadline = deadline
        self.left = 0
        self.settled = False

    def one_done(self, _: asyncio.Future[None]) -> None:
        self.left -= 1
        if self.left == 0 and not self.settled:
            self.waits.settle(self)


class WriteWaits:
    def __init__(self, timeout: float, drop_late: DropLate, spawn: Spawn) -> None:
        self.timeout = timeout
        self.drop_late = drop_late
        self.spawn = spawn
        self._writes: deque[_Write] = deque()  # in order of their deadlines
        self._timer: asyncio.TimerHandle | None = None

    def wait(
        self, ref: Ref, seq: int, futures: dict[Member, asyncio.Future[None]]
    ) -> asyncio.Future[None]:
        """Done when every member's future is, or the late ones left the
        in-sync set."""
        loop = asyncio.get_running_loop()
        write = _Write(self, ref, seq, futures, loop.create_future(), loop.time() + self.timeout)
        for future in futures.values():
            if not future.done():
                write.left += 1
                future.add_done_callback(write.one_done)
        if write.left == 0:
            self.settle(write)
        else:
            self._writes.append(write)
            if self._timer is None:
                self._timer = loop.call_at(write.deadline, self._sweep)
        return write.outcome

    def settle(self, write: _Write) -> None:
        write.settled = True
        late = [
            member
            for member, future in write.futures.items()
            if not future.done() or future.cancelled() or future.exception() is not None
        ]
        for future in write.futures.values():
            future.cancel()  # no-op when done
        if not late:
            if not write.outcome.done():
                write.outcome.set_result(None)
            return
        self.spawn(self._drop(write, late))

    async def _drop(self, write: _Write, late: list[Member]) -> None:
        try:
            await self.drop_late(write.ref, late, f"no acknowledgement of seq {write.seq}")
        except asyncio.CancelledError:
            write.outcome.cancel()
            raise
        except Exception as error:  # the caller learns its outcome is unknown
            if not write.outcome.done():
                write.outcome.set_exception(error)
            return
        if not write.outcome.done():
            write.outcome.set_result(None)

    def _sweep(self) -> None:
        self._timer = None
        now = asyncio.get_running_loop().time()
        writes = self._writes
        while writes and (writes[0].settled or writes[0].deadline <= now):
            write = writes.popleft()
            if not write.settled:
                self.settle(write)
        if writes:
            self._timer = asyncio.get_running_loop().call_at(writes[0].deadline, self._sweep)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
