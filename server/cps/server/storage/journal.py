"""Group commit: the change log the core writes to, committed in batches.

Calls that change persisted state mark keys, then await ``durable()``. One
batch is in flight at a time; everything marked while it commits forms the
next batch, so concurrent writers share one transaction and one fsync.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from cps.server.core.changelog import Key
from cps.server.core.errors import CkptError, ErrorCode
from cps.server.core.library import LibraryManager
from cps.server.core.manager import ReplicaManager

from .mapping import statements_for
from .replication import Followers
from .sqlite_store import SqliteStore, Statement

log = logging.getLogger("cps.storage")

# After a failed commit, when to try again if no new change comes first.
RETRY_SECONDS = 1.0


def _run(actions: list[Callable[[], None]]) -> None:
    for action in actions:
        try:
            action()
        except Exception:  # one failing callback must not stop the others
            log.exception("callback delivery failed")


class StorageFailed(Exception):
    """A batch could not be committed; the calls waiting on it fail."""


class Journal:
    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.replicas: ReplicaManager | None = None  # None: server checkpoints not kept
        self.library: LibraryManager | None = None
        self._dirty: dict[Key, None] = {}
        self._waiters: list[asyncio.Future[None]] = []
        # Run after the commit of what is dirty now (or, when nothing is, after
        # the batch in flight), in order.
        self._after: list[Callable[[], None]] = []
        self._flushing = False
        # The connection is used from this one thread only.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cps-sqlite")
        self.batches = 0  # committed; also the sequence of the last batch
        self.followers: Followers | None = None  # standbys, when any may follow
        self._synchronous = False  # a change of a WR_ALL_REPLICAS checkpoint is dirty
        self.standby_of: str | None = None  # the primary, while this node is a standby

    def mark(self, key: Key, *, synchronous: bool = False) -> None:
        self._dirty[key] = None
        self._synchronous |= synchronous
        if not self._flushing:
            # Commit even when no caller waits (timers expire sections and
            # checkpoints too); the task runs once the current call is done.
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())

    @property
    def standby(self) -> bool:
        return self.standby_of is not None

    def check_serving(self) -> None:
        """A standby serves no client: its store belongs to its primary."""
        if self.standby_of is not None:
            raise CkptError(
                ErrorCode.TRY_AGAIN,
                f"this node is a standby of {self.standby_of}: call the primary",
                metadata={"primary": self.standby_of},
            )

    def after_durable(self, action: Callable[[], None]) -> None:
        if self._dirty or self._flushing:
            self._after.append(action)
        else:
            action()

    def durable(self) -> asyncio.Future[None] | None:
        """A future done when everything marked so far is committed, or None
        if nothing is waiting to be committed."""
        if not self._dirty:
            return None
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        return future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._dirty:
                keys, self._dirty = list(self._dirty), {}
                waiters, self._waiters = self._waiters, []
                after, self._after = self._after, []
                synchronous, self._synchronous = self._synchronous, False
                try:
                    statements = self._statements(keys)
                    await loop.run_in_executor(self._executor, self.store.apply, statements)
                except Exception as error:  # the disk, not the caller: report, retry later
                    log.error("storage commit failed", exc_info=True)
                    failure = StorageFailed(f"the node could not store the change: {error}")
                    for waiter in waiters + self._waiters:
                        if not waiter.done():
                            waiter.set_exception(failure)
                    self._waiters = []
                    # Keep the keys and the callbacks: the next change retries
                    # them with its commit.
                    self._dirty = dict.fromkeys(keys) | self._dirty
                    self._after = after + self._after
                    self._synchronous |= synchronous
                    loop.call_later(RETRY_SECONDS, self._retry)
                    break
                self.batches += 1
                if self.followers is not None:
                    self.followers.publish(self.batches, statements)
                    if synchronous:  # every live replica holds it before the answer
                        await self.followers.wait_acknowledged(self.batches)
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
                _run(after)
            else:
                # Nothing left to commit: callbacks that only waited for the
                # batch in flight (to keep their order) may go now.
                after, self._after = self._after, []
                _run(after)
        finally:
            self._flushing = False

    async def apply_from_primary(self, statements: list[Statement]) -> None:
        """A standby applies a batch of its primary, on the store's thread."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.store.apply, statements)

    async def replicated(self) -> None:
        """Until every follower holds every batch committed so far
        (CheckpointSynchronize of an asynchronous checkpoint)."""
        if self.followers is not None:
            await self.followers.wait_acknowledged(self.batches)

    def snapshot(self) -> list[Statement]:
        """The whole store as statements, from the state in memory."""
        assert self.library is not None
        statements: list[Statement] = [
            (f"DELETE FROM {table}", ())
            for table in ("section", "checkpoint", "element", "dataset", "library_checkpoint")
        ]
        names = [] if self.replicas is None else list(self.replicas.checkpoints)
        for name in names:
            statements += statements_for(("checkpoint", name), self.replicas, self.library)
        for name in self.library.checkpoints:
            statements += statements_for(("library", name), self.replicas, self.library)
        return statements

    def _retry(self) -> None:
        if self._dirty and not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())

    def _statements(self, keys: list[Key]) -> list[Statement]:
        assert self.library is not None
        statements: list[Statement] = []
        for key in keys:
            statements.extend(statements_for(key, self.replicas, self.library))
        return statements

    async def close(self) -> None:
        while self._flushing:
            await asyncio.sleep(0.01)
        self._executor.shutdown(wait=True)
        self.store.close()
