"""The Python client follows the cluster: real cps-server processes (3,
lease TTL 2 s) over the module's 3-member etcd, and the real client
(``Session.connect`` over the node list).

- kill -9 of the session's node: the same Checkpoint objects work
  afterwards (no reopen by the application), the immediate-consumption
  registration keeps delivering through dispatch, an iteration continues
  without repeating a section; the same for AsyncSession;
- a frozen (SIGSTOP) node: a call fails over within the default deadline;
- a non-idempotent call interrupted mid-way (its node frozen after the
  request left) gives the seed's timeout error (unknown_outcome), and is not
  silently done twice.

The session's node is the first of the list, where its checkpoints are
created: it is their active replica too, so every test also waits for the
server's failover of the checkpoint.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from cps.client import (
    AsyncCallbacks,
    AsyncCheckpoint,
    AsyncSession,
    Callbacks,
    ChangedSection,
    Checkpoint,
    CkptTimeoutError,
    CreationAttributes,
    CreationFlags,
    DispatchFlags,
    Session,
)
from cps.client._failover import DEFAULT_TIMEOUT
from cps.client.errors import UNKNOWN_OUTCOME
from tests.cluster.harness import CpsCluster, EtcdCluster, cps_cluster
from tests.cluster.helpers import assert_one_active_per_epoch, wait_for

FLAGS = ("--lease-ttl", "2", "--replica-timeout-seconds", "0.5")
# Generous for a loaded 2-core machine, yet far below a hang: the server's
# failover takes about 2-3 s with a TTL of 2 s.
TIMEOUT = 20.0
SYNC = CreationAttributes(
    creation_flags=CreationFlags.WR_ALL_REPLICAS, max_sections=8, max_section_size=64
)
# Notifications are checked on an asynchronous checkpoint: the node does not
# deliver them for WR_ALL_REPLICAS ones in a cluster (a server bug, reported).
ASYNC = CreationAttributes(
    creation_flags=CreationFlags.WR_ACTIVE_REPLICA, max_sections=8, max_section_size=64
)


@pytest.fixture()
def cluster(etcd_cluster: EtcdCluster) -> Iterator[CpsCluster]:
    with cps_cluster(etcd_cluster.endpoints, 3, FLAGS) as running:
        yield running


class Recorder:
    def __init__(self) -> None:
        self.moves: list[tuple[str, list[str]]] = []
        self.notified: list[tuple[str, list[ChangedSection]]] = []

    def moved(self, node: str, lost: list[str]) -> None:
        self.moves.append((node, lost))

    def notify(self, name: str, checkpoint: object, sections: list[ChangedSection]) -> None:
        self.notified.append((name, sections))

    def saw(self, section: bytes) -> bool:
        return any(s.section_id == section for _, sections in self.notified for s in sections)


def _dispatch_until(session: Session, condition: object, timeout: float, what: str) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        session.dispatch(DispatchFlags.ALL)
        time.sleep(0.05)


def test_a_session_follows_when_its_node_is_killed(cluster: CpsCluster) -> None:
    first, _, third = cluster.nodes
    recorder = Recorder()
    session = Session.connect(cluster.addresses, Callbacks(moved=recorder.moved), timeout=TIMEOUT)
    try:
        assert session.node == first.address
        checkpoint: Checkpoint = session.open("followed", ASYNC)
        for section in (b"a", b"b", b"c", b"d"):
            checkpoint.section_create(section, b"v1")
        checkpoint.immediate_consumption_register(recorder.notify)
        checkpoint.synchronize()  # asynchronous: the backups hold the sections
        sections = checkpoint.sections()
        assert next(sections).section_id == b"a"
        old_handle, old_session = checkpoint.handle, session.handle

        first.kill()
        started = time.monotonic()
        checkpoint.overwrite(b"a", b"after the move")  # no reopen by the application
        took = time.monotonic() - started
        assert checkpoint.read(b"a") == b"after the move"
        assert session.node in (cluster.nodes[1].address, third.address)
        assert (checkpoint.handle, session.handle) != (old_handle, old_session)
        assert took < TIMEOUT
        print(f"\nkill -9: the overwrite completed on the new node in {took:.2f}s")

        # The iteration goes on where it was, on the new node.
        assert [s.section_id for s in sections] == [b"b", b"c", b"d"]

        # The registration moved too: a change through another node is notified.
        with Session.connect(third.address, timeout=TIMEOUT) as other:
            other.open("followed").overwrite(b"c", b"from elsewhere")
        _dispatch_until(session, lambda: recorder.saw(b"c"), TIMEOUT, "the notification")
        assert recorder.moves and recorder.moves[0][0] == session.node
        assert recorder.moves[0][1] == []  # nothing lost
        assert checkpoint.read(b"c") == b"from elsewhere"
    finally:
        session.finalize()
    assert_one_active_per_epoch(cluster)


def test_an_async_session_follows_when_its_node_is_killed(cluster: CpsCluster) -> None:
    first = cluster.nodes[0]

    async def scenario() -> None:
        recorder = Recorder()
        session = await AsyncSession.connect(
            cluster.addresses, AsyncCallbacks(moved=recorder.moved), timeout=TIMEOUT
        )
        async with session:
            assert session.node == first.address
            checkpoint: AsyncCheckpoint = await session.open("followed-async", ASYNC)
            for section in (b"a", b"b", b"c"):
                await checkpoint.section_create(section, b"v1")
            await checkpoint.immediate_consumption_register(recorder.notify)
            await checkpoint.synchronize()
            sections = checkpoint.sections()
            assert (await sections.__anext__()).section_id == b"a"

            first.kill()
            await checkpoint.overwrite(b"b", b"after the move")
            assert await checkpoint.read(b"b") == b"after the move"
            assert session.node != first.address
            assert [s.section_id async for s in sections] == [b"b", b"c"]

            deadline = time.monotonic() + TIMEOUT
            while not recorder.saw(b"b"):  # our own overwrite, on the new node
                assert time.monotonic() < deadline, "no notification after the move"
                await session.dispatch(DispatchFlags.ALL)
                await asyncio.sleep(0.05)
            assert [node for node, _ in recorder.moves] == [session.node]

    asyncio.run(asyncio.wait_for(scenario(), 3 * TIMEOUT))


def test_a_frozen_node_makes_a_call_fail_over_within_the_default_deadline(
    cluster: CpsCluster,
) -> None:
    first = cluster.nodes[0]
    with Session.connect(cluster.addresses) as session:  # the default deadline
        checkpoint = session.open("frozen", SYNC)
        checkpoint.section_create(b"s", b"kept")
        first.pause()
        try:
            started = time.monotonic()
            assert checkpoint.read(b"s") == b"kept"
            took = time.monotonic() - started
            assert session.node != first.address
            assert took < DEFAULT_TIMEOUT, f"the read took {took:.1f}s"
            print(f"\nfrozen node: the read failed over in {took:.2f}s")
            checkpoint.overwrite(b"s", b"moved")
            assert checkpoint.read(b"s") == b"moved"
        finally:
            first.cont()


def test_an_interrupted_non_idempotent_call_is_a_timeout_not_a_retry(
    cluster: CpsCluster,
) -> None:
    first = cluster.nodes[0]
    with Session.connect(cluster.addresses) as session:
        checkpoint = session.open("interrupted", SYNC)
        checkpoint.section_create(b"before", b"x")
        first.pause()  # the request will leave, and nothing will answer it
        try:
            started = time.monotonic()
            with pytest.raises(CkptTimeoutError) as caught:
                checkpoint.section_create(None, b"once")  # a generated id: not idempotent
            took = time.monotonic() - started
        finally:
            first.cont()
        assert caught.value.metadata["cause"] == UNKNOWN_OUTCOME
        assert caught.value.reason == "CL_ERR_TIMEOUT"
        assert took < DEFAULT_TIMEOUT, f"the error took {took:.1f}s"
        print(f"\ninterrupted section_create: timeout error after {took:.2f}s")
        # The session moved meanwhile: the next call works at once.
        assert session.node != first.address
        assert checkpoint.read(b"before") == b"x"
        # The resumed node may still apply the request it had (the outcome
        # really is unknown), but the client did not send it twice.
        time.sleep(3)
        ids = [s.section_id for s in checkpoint.sections()]
        created = [i for i in ids if i != b"before" and checkpoint.read(i) == b"once"]
        assert len(created) <= 1, ids
    wait_for(lambda: first.health() is not None, TIMEOUT, "the resumed node answers")
