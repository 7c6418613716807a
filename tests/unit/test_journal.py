"""The journal's order promise on the storage thread: a callback registered
while a batch is being stored runs once that batch is stored, even when
nothing else changes after it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

from cps.server.storage.journal import Journal
from cps.server.storage.sqlite_store import SqliteStore, Statement


def test_a_callback_waits_for_the_batch_in_flight_and_then_runs(tmp_path: Path) -> None:
    async def scenario() -> list[str]:
        journal = Journal(SqliteStore.open(tmp_path))
        journal.slow_commit_seconds = 0.0  # every commit on the storage thread
        store_apply = journal.store.apply
        release = threading.Event()

        def held(statements: Sequence[Statement]) -> None:
            release.wait(10)
            store_apply(statements)

        journal.store.apply = held  # type: ignore[method-assign]
        ran: list[str] = []
        journal.mark(("checkpoint", "gone"))
        stored = journal.durable()
        assert stored is not None
        await asyncio.sleep(0)  # the batch goes to the storage thread
        journal.after_durable(lambda: ran.append("after"))
        assert ran == []  # it keeps its order behind the batch in flight
        release.set()
        await stored
        for _ in range(500):
            if ran:
                break
            await asyncio.sleep(0.01)
        await journal.close()
        return ran

    assert asyncio.run(scenario()) == ["after"]
