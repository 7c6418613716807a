"""Group commit: what changed, committed in batches, all or nothing.

Calls that change stored state say what they changed (server checkpoints:
``stored``; library checkpoints: ``mark``), then await ``durable()``.
Everything changed in one pass of the event loop forms one batch, so
concurrent writers share one transaction and one fsync.

Where the commit runs depends on what it costs (measured, a moving average):
a cheap one (tmpfs, ``--sync normal``: tens of µs) runs on the event loop's
thread, at the end of the loop pass that changed something, because handing
it to a thread and back costs more than the commit (two cross-CPU wake-ups,
bench/PROFILE.md). A slow one (an fsync on a real disk: hundreds of µs) runs
on the storage thread, and everything changed while it syncs forms the next
batch: that is what groups writes into one fsync under load.

A batch that fails to commit fails its callers, and the ones after it, and
the checkpoints they changed are loaded again from the store: an error
means nothing was written, in memory as on disk.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from cps.server.core import operations as op
from cps.server.core.changelog import Key
from cps.server.core.library import LibraryManager
from cps.server.core.replica import Changes, Ref, Replica

from .mapping import ServerView, statements_for
from .sqlite_store import SqliteStore, Statement

log = logging.getLogger("cps.storage")

# Told which checkpoints to load again after a failed commit:
# (server checkpoint names, library checkpoint names).
Rollback = Callable[[set[str], set[str]], None]


_SERVER_KEYS = frozenset({"checkpoint", "checkpoint-meta", "section"})


def _run(actions: list[Callable[[], None]]) -> None:
    for action in actions:
        try:
            action()
        except Exception:  # one failing callback must not stop the others
            log.exception("callback delivery failed")


# A commit slower than this (moving average) goes to the storage thread: about
# what the hand-off costs.
SLOW_COMMIT_SECONDS = 100e-6
# Weight of the last commit in the moving average of commit times.
COMMIT_AVERAGE_WEIGHT = 0.2


class StorageFailed(Exception):
    """A batch could not be committed; the calls waiting on it fail."""


class Journal:
    def __init__(self, store: SqliteStore, library: LibraryManager | None = None) -> None:
        self.store = store
        self.library = library
        self.server: ServerView = {}
        self.on_rollback: Rollback | None = None
        self.last_error = ""  # of the last failed commit, for on_rollback (service events)
        self._dirty: dict[Key, None] = {}
        self._waiters: list[asyncio.Future[None]] = []
        # Run after the commit of what is dirty now (or, when nothing is, after
        # the batch in flight), in order.
        self._after: list[Callable[[], None]] = []
        self._scheduled = False
        self._syncing = False  # a batch is being committed on the storage thread
        self.commit_seconds = 0.0  # moving average
        self.slow_commit_seconds = SLOW_COMMIT_SECONDS  # (tests force either place)
        # The connection is used by one thread at a time: this one, or the
        # loop's while nothing is syncing.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cps-sqlite")
        self.batches = 0  # committed

    # -- server checkpoints (service.ports.Persistence) ------------------------

    def stored(self, replica: Replica, operation: op.Operation, changes: Changes) -> None:
        name = replica.ref.name
        if isinstance(operation, op.Create):
            self.server[name] = replica
            self.mark(("checkpoint", name))
            return
        if self.server.get(name) is not replica:
            return  # an unlinked instance: not stored
        for section_id, _ in changes:
            self.mark(("section", name, section_id))
        match operation:
            case op.ExpirationSet(section_id):
                self.mark(("section", name, section_id))
            case op.Corrupt(section_ids):
                for section_id in section_ids:
                    self.mark(("section", name, section_id))
            case op.SectionCreate() | op.RetentionSet() | op.Promote():
                self.mark(("checkpoint-meta", name))

    def dropped(self, ref: Ref) -> None:
        replica = self.server.get(ref.name)
        if replica is not None and replica.ref == ref:
            del self.server[ref.name]
            self.mark(("checkpoint", ref.name))

    # -- library checkpoints (core.changelog.ChangeLog) --------------------------

    def mark(self, key: Key, *, synchronous: bool = False) -> None:
        self._dirty[key] = None
        if not self._scheduled and not self._syncing:
            # Commit even when no caller waits (timers expire sections and
            # checkpoints too), after the calls that are ready now: they
            # share the transaction.
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._commit)

    def after_durable(self, action: Callable[[], None]) -> None:
        if self._dirty or self._syncing:
            self._after.append(action)
        else:
            action()

    def durable(self) -> asyncio.Future[None] | None:
        """A future done when everything changed so far is committed, or None
        if nothing is waiting to be committed."""
        if not self._dirty:
            return None
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        return future

    def _commit(self, *, here: bool = False) -> None:
        """Commit what is dirty; ``here``: on this thread, whatever it costs."""
        self._scheduled = False
        if not self._dirty or self._syncing:
            return
        keys, self._dirty = list(self._dirty), {}
        waiters, self._waiters = self._waiters, []
        after, self._after = self._after, []
        try:
            statements = self._statements(keys)
        except Exception as error:
            self._done(keys, waiters, after, error)
            return
        if here or self.commit_seconds < self.slow_commit_seconds:
            self._done(keys, waiters, after, self._apply(statements))
            return
        self._syncing = True
        loop = asyncio.get_running_loop()
        running = loop.run_in_executor(self._executor, self._apply, statements)

        def synced(finished: asyncio.Future[Exception | None]) -> None:
            self._syncing = False
            error = finished.exception() or finished.result()
            self._done(keys, waiters, after, error)
            if self._dirty:  # changed while it synced: the next batch
                self._commit()
            else:
                # Callbacks that only waited for this batch (to keep their
                # order) may go now.
                later, self._after = self._after, []
                _run(later)

        running.add_done_callback(synced)

    def _apply(self, statements: list[Statement]) -> Exception | None:
        """Commit (in either thread) and time it; the error, if it failed."""
        began = time.perf_counter()
        try:
            self.store.apply(statements)
        except Exception as error:  # the disk, not the caller
            return error
        took = time.perf_counter() - began
        self.commit_seconds += COMMIT_AVERAGE_WEIGHT * (took - self.commit_seconds)
        return None

    def _done(
        self,
        keys: list[Key],
        waiters: list[asyncio.Future[None]],
        after: list[Callable[[], None]],
        error: BaseException | None,
    ) -> None:
        if error is not None:
            log.error("storage commit failed", exc_info=error)
            self._roll_back(keys, waiters, error)
            return
        self.batches += 1
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        _run(after)

    def _roll_back(
        self, keys: list[Key], waiters: list[asyncio.Future[None]], error: BaseException
    ) -> None:
        """Fail the batch and every change made after it (they were made on
        its state), and make memory equal the store again."""
        keys += list(self._dirty)
        self._dirty = {}
        failure = StorageFailed(
            f"the node could not store the change (nothing was written): {error}"
        )
        self.last_error = str(error)
        for waiter in waiters + self._waiters:
            if not waiter.done():
                waiter.set_exception(failure)
        self._waiters = []
        self._after = []  # they reported changes that are undone
        server = {str(key[1]) for key in keys if key[0] in _SERVER_KEYS}
        library = {str(key[1]) for key in keys if key[0] not in _SERVER_KEYS}
        if self.on_rollback is not None:
            self.on_rollback(server, library)

    def _statements(self, keys: list[Key]) -> list[Statement]:
        statements: list[Statement] = []
        for key in keys:
            statements.extend(statements_for(key, self.server, self.library))
        return statements

    async def close(self) -> None:
        while self._syncing:
            await asyncio.sleep(0.01)
        self._commit(here=True)  # what a timer changed last
        self._executor.shutdown(wait=True)
        self.store.close()
