"""cps.server.cluster.etcd against a real 3-member etcd cluster on 127.0.0.1
(tests/cluster/harness): KV, transactions, leases and their deadline, watches
that resume across a killed member, failover of writes, compaction.

Each test uses its own key prefix; a test that kills a member restarts it and
waits until the cluster is healthy again before it ends. Timings measured
here are printed (pytest -s shows them)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack, ExitStack
from typing import Any, TypeVar

import pytest

from cps.server.cluster.etcd import (
    Compacted,
    Etcd,
    EtcdTimeout,
    EtcdUnavailable,
    Event,
    EventType,
    KeepAlive,
    LeaseNotFound,
    PutResult,
    RangeResult,
    compare_create_revision,
    compare_mod_revision,
    compare_value,
    compare_version,
    key_absent,
    op_delete,
    op_get,
    op_put,
    parse_endpoints,
    prefix_end,
)
from tests.cluster.harness import EtcdCluster, TcpProxy, free_ports

pytestmark = pytest.mark.timeout(60)

_T = TypeVar("_T")


def run(scenario: Coroutine[Any, Any, _T], timeout: float = 30.0) -> _T:
    return asyncio.run(asyncio.wait_for(scenario, timeout))


def unique_prefix(name: str) -> bytes:
    return f"/test/{name}/{uuid.uuid4().hex[:8]}/".encode()


async def eventually(condition: Callable[[], Awaitable[bool]], what: str, timeout: float) -> float:
    """Poll until condition() holds; the seconds it took."""
    start = time.monotonic()
    while not await condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


class Collector:
    """Runs a watch in a task and keeps every event with its arrival time."""

    def __init__(self, stream: AsyncIterator[list[Event]]) -> None:
        self.events: list[tuple[float, Event]] = []
        self.error: BaseException | None = None
        self._stream = stream
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            async for batch in self._stream:
                now = time.monotonic()
                self.events.extend((now, event) for event in batch)
        except Exception as error:
            self.error = error

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        async def enough() -> bool:
            if self.error is not None:
                raise self.error
            return len(self.events) >= count

        await eventually(enough, f"{count} watch events (have {len(self.events)})", timeout)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        aclose = getattr(self._stream, "aclose", None)
        if aclose is not None:
            await aclose()


def heal(cluster: EtcdCluster) -> None:
    """Restart every member that a test killed; wait until all serve."""
    for index, member in enumerate(cluster.members):
        if not member.running:
            cluster.restart(index, wait=False)
    cluster.wait_healthy(20)


# --- KV and transactions ----------------------------------------------------


def test_put_get_delete_and_paginated_prefix(etcd_cluster: EtcdCluster) -> None:
    prefix = unique_prefix("kv")

    async def scenario() -> None:
        async with await Etcd.connect(etcd_cluster.endpoints, call_timeout=3) as etcd:
            assert await etcd.get(prefix + b"missing") is None
            first = await etcd.put(prefix + b"a", b"1")
            second = await etcd.put(prefix + b"a", b"2")
            assert second > first
            kv = await etcd.get(prefix + b"a")
            assert kv is not None
            assert (kv.value, kv.version, kv.mod_revision) == (b"2", 2, second)
            assert kv.create_revision == first

            # 25 keys read in pages of 4, one snapshot: a put after the
            # listing is not in it and has a higher revision.
            keys = [prefix + b"many/%03d" % i for i in range(25)]
            for i, key in enumerate(keys):
                await etcd.put(key, b"v%d" % i)
            await etcd.put(prefix + b"other", b"x")  # outside prefix + b"many/"
            kvs, revision = await etcd.get_prefix(prefix + b"many/", page_size=4)
            assert [kv.key for kv in kvs] == keys
            assert [kv.value for kv in kvs] == [b"v%d" % i for i in range(25)]
            assert all(kv.mod_revision <= revision for kv in kvs)
            assert await etcd.put(prefix + b"many/zzz", b"late") > revision

            assert await etcd.delete(prefix + b"a") == 1
            assert await etcd.delete(prefix + b"a") == 0
            assert await etcd.get(prefix + b"a") is None
            assert await etcd.delete_prefix(prefix + b"many/") == 26
            assert (await etcd.get_prefix(prefix + b"many/"))[0] == []
            assert await etcd.get(prefix + b"other") is not None

    run(scenario())


def test_parse_endpoints() -> None:
    assert parse_endpoints("http://a:1, b:2,a:1") == ["a:1", "b:2"]
    assert parse_endpoints(["a:1,b:2", "c:3"]) == ["a:1", "b:2", "c:3"]
    with pytest.raises(ValueError):
        parse_endpoints(" , ")
    with pytest.raises(ValueError):
        parse_endpoints("hostonly")
    with pytest.raises(ValueError):
        Etcd("https://a:1")  # TLS without credentials


def test_prefix_end() -> None:
    assert prefix_end(b"a/") == b"a0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\x00"
    assert prefix_end(b"") == b"\x00"


def test_txn_compare_and_swap(etcd_cluster: EtcdCluster) -> None:
    key = unique_prefix("txn") + b"leader"

    async def scenario() -> None:
        async with await Etcd.connect(etcd_cluster.endpoints) as etcd:
            # Create if absent: the first wins, the second sees the winner.
            created = await etcd.txn([key_absent(key)], [op_put(key, b"node-1")], [op_get(key)])
            assert created.succeeded
            assert created.responses == (PutResult(prev_kv=None),)
            lost = await etcd.txn([key_absent(key)], [op_put(key, b"node-2")], [op_get(key)])
            assert not lost.succeeded
            assert lost.revision == created.revision  # nothing written
            (current,) = lost.responses
            assert isinstance(current, RangeResult)
            assert [kv.value for kv in current.kvs] == [b"node-1"]
            mod = current.kvs[0].mod_revision

            # Swap on the mod revision: succeeds once, then the revision is stale.
            swap = await etcd.txn([compare_mod_revision(key, "==", mod)], [op_put(key, b"node-3")])
            assert swap.succeeded and swap.revision > mod
            stale = await etcd.txn([compare_mod_revision(key, "==", mod)], [op_put(key, b"x")])
            assert not stale.succeeded and stale.responses == ()

            # The other comparisons and ops.
            assert (await etcd.txn([compare_value(key, "==", b"node-3")])).succeeded
            assert (await etcd.txn([compare_value(key, "!=", b"node-1")])).succeeded
            assert (await etcd.txn([compare_version(key, ">", 1)])).succeeded
            assert not (await etcd.txn([compare_version(key, "<", 2)])).succeeded
            assert (
                await etcd.txn([compare_create_revision(key, "==", created.revision)])
            ).succeeded
            gone = await etcd.txn(
                [compare_value(key, "==", b"node-3")], [op_delete(key, prev_kv=True)]
            )
            assert gone.succeeded
            (deleted,) = gone.responses
            assert getattr(deleted, "deleted", None) == 1
            assert await etcd.get(key) is None
            with pytest.raises(ValueError):
                compare_value(key, "<=", b"x")  # type: ignore[arg-type]

    run(scenario())


# --- leases -------------------------------------------------------------------


def test_keepalive_keeps_key_beyond_ttl_and_key_expires_once_stopped(
    etcd_cluster: EtcdCluster,
) -> None:
    key = unique_prefix("lease") + b"alive"
    ttl = 2

    async def scenario() -> None:
        async with await Etcd.connect(etcd_cluster.endpoints) as etcd:
            lease = await etcd.grant_lease(ttl)
            assert lease.ttl == ttl and lease.deadline > time.monotonic()
            await etcd.put(key, b"x", lease=lease.id)
            keepalive = etcd.keep_alive(lease)
            try:
                await asyncio.sleep(2.5 * ttl)
                assert await etcd.get(key) is not None
                assert keepalive.valid() and not keepalive.expired.is_set()
                assert keepalive.acknowledged >= 5  # one every ttl / 3
                assert 0 < keepalive.remaining() <= ttl
                assert await etcd.time_to_live(lease.id) >= 1
            finally:
                await keepalive.stop()
            stopped = time.monotonic()
            last_deadline = keepalive.deadline
            took = await eventually(lambda: _gone(etcd, key), "the key to expire", timeout=ttl + 3)
            gone_at = stopped + took
            print(f"\nkey expired {took:.2f} s after keepalive stopped; TTL {ttl} s")
            # Never before the deadline, and within TTL plus etcd's revoke
            # loop (every 500 ms) plus polling after the last keepalive.
            assert gone_at >= last_deadline
            assert took <= ttl + 1.2
            assert await etcd.time_to_live(lease.id) == -1
            assert not await etcd.revoke(lease.id)
            with pytest.raises(LeaseNotFound):
                await etcd.put(key, b"y", lease=lease.id)

    run(scenario())


async def _gone(etcd: Etcd, key: bytes) -> bool:
    return await etcd.get(key) is None


def test_revoke_deletes_keys_and_keepalive_sees_lease_gone(etcd_cluster: EtcdCluster) -> None:
    key = unique_prefix("revoke") + b"k"

    async def scenario() -> None:
        async with await Etcd.connect(etcd_cluster.endpoints) as etcd:
            lease = await etcd.grant_lease(5)
            await etcd.put(key, b"x", lease=lease.id)
            reasons: list[str] = []
            keepalive = etcd.keep_alive(lease, on_expired=reasons.append)
            try:
                await eventually(_acked(keepalive), "a keepalive answer", 5)
                assert await etcd.revoke(lease.id)
                assert await etcd.get(key) is None
                reason = await asyncio.wait_for(keepalive.wait_expired(), 5)
                assert "TTL <= 0" in reason and reasons == [reason]
                assert not keepalive.valid()
            finally:
                await keepalive.stop()

    run(scenario())


def _acked(keepalive: KeepAlive) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return keepalive.acknowledged > 0

    return check


def test_deadline_passes_before_etcd_expires_the_lease_when_the_link_is_cut(
    etcd_cluster: EtcdCluster,
) -> None:
    """The node reaches etcd only through proxies, one per member; cutting them
    (blackhole) isolates the node and nothing else. Its KeepAlive must give
    the lease up at its deadline, before etcd deletes the lease's key (which
    an observer with a direct link sees)."""
    prefix = unique_prefix("cut")
    key = prefix + b"owner"
    ttl = 2

    async def scenario(proxies: list[TcpProxy]) -> None:
        async with AsyncExitStack() as stack:
            node = await stack.enter_async_context(
                await Etcd.connect([p.address for p in proxies], call_timeout=1)
            )
            observer = await stack.enter_async_context(await Etcd.connect(etcd_cluster.endpoints))
            lease = await node.grant_lease(ttl)
            revision = await node.put(key, b"node", lease=lease.id)
            deletes = Collector(observer.watch_prefix(prefix, revision + 1))
            stack.push_async_callback(deletes.close)
            expired_at: list[float] = []
            keepalive = node.keep_alive(lease, on_expired=lambda _: expired_at.append(now()))
            stack.push_async_callback(keepalive.stop)
            await asyncio.sleep(1.0)
            assert keepalive.acknowledged >= 2

            cut_at = time.monotonic()
            for proxy in proxies:
                proxy.cut("blackhole")
            deadline_at_cut = keepalive.deadline
            reason = await asyncio.wait_for(keepalive.wait_expired(), ttl + 2)
            assert "deadline passed" in reason
            assert keepalive.deadline == deadline_at_cut  # nothing acknowledged after the cut
            with pytest.raises(EtcdUnavailable):
                await node.get(key)  # the node cannot reach etcd at all

            await deletes.wait_for(1, timeout=ttl + 3)
            deleted_at, event = deletes.events[0]
            assert event.type is EventType.DELETE and event.kv.key == key
            detected = expired_at[0]
            print(
                f"\nlink cut: lease given up {detected - cut_at:.2f} s after the cut, "
                f"{detected - keepalive.deadline:.3f} s after its deadline; "
                f"etcd's delete seen {deleted_at - keepalive.deadline:.2f} s after the deadline"
            )
            # Guaranteed: etcd expires the lease only after the deadline. The
            # node's own reaction time is scheduling (given up within 0.25 s).
            assert keepalive.deadline < deleted_at
            assert detected - keepalive.deadline < 0.25

            # Once restored, the node's client works again (a new connection).
            for proxy in proxies:
                proxy.restore()
            assert await node.get(key, timeout=5) is None

    with ExitStack() as stack:
        proxies = [
            stack.enter_context(TcpProxy(endpoint).start()) for endpoint in etcd_cluster.endpoints
        ]
        run(scenario(proxies))


def now() -> float:
    return time.monotonic()


def test_proxy_modes_seen_by_the_client(etcd_cluster: EtcdCluster) -> None:
    """Blackhole: calls time out (no error before the deadline). Reset: calls
    fail at once. Restore: calls work again."""
    key = unique_prefix("proxy") + b"k"

    async def scenario(proxy: TcpProxy) -> None:
        async with await Etcd.connect([proxy.address], call_timeout=0.5) as etcd:
            await etcd.put(key, b"x")
            proxy.cut("blackhole")
            start = time.monotonic()
            with pytest.raises(EtcdTimeout):
                await etcd.get(key)
            assert time.monotonic() - start >= 0.45
            proxy.restore()
            assert await etcd.get(key, timeout=5) is not None

            proxy.cut("reset")
            with pytest.raises(EtcdUnavailable) as raised:
                await etcd.put(key, b"y")
            assert not isinstance(raised.value, EtcdTimeout)
            proxy.restore()
            assert await etcd.put(key, b"z", timeout=5) > 0

    with TcpProxy(etcd_cluster.endpoints[0]) as proxy:
        run(scenario(proxy))


# --- watch --------------------------------------------------------------------


def test_watch_in_order_and_resumes_after_its_member_is_killed(
    etcd_cluster: EtcdCluster,
) -> None:
    prefix = unique_prefix("watch")

    async def scenario() -> None:
        async with AsyncExitStack() as stack:
            # The watch goes through a follower: killing it costs the writes
            # nothing (a killed leader would lose the writes in flight, see
            # the failover test), so every write below happens exactly once.
            endpoints = etcd_cluster.endpoints
            victim = (etcd_cluster.leader_index() + 1) % len(endpoints)
            watched = endpoints[victim]
            others = [e for e in endpoints if e != watched]
            watcher = await stack.enter_async_context(await Etcd.connect([watched, *others]))
            _, start = await watcher.get_prefix(prefix)
            assert watcher.current_endpoint == watched
            writer = await stack.enter_async_context(await Etcd.connect(others))
            events = Collector(watcher.watch_prefix(prefix, start + 1, prev_kv=True))
            stack.push_async_callback(events.close)

            expected: list[tuple[EventType, bytes, bytes]] = []
            for i in range(5):
                await writer.put(prefix + b"k%d" % i, b"v%d" % i)
                expected.append((EventType.PUT, prefix + b"k%d" % i, b"v%d" % i))
            await writer.put(prefix + b"k0", b"again")
            expected.append((EventType.PUT, prefix + b"k0", b"again"))
            await writer.delete(prefix + b"k1")
            expected.append((EventType.DELETE, prefix + b"k1", b""))
            await events.wait_for(len(expected))

            etcd_cluster.kill(victim)
            killed_at = time.monotonic()
            for i in range(5, 10):
                await writer.put(prefix + b"k%d" % i, b"v%d" % i)
                expected.append((EventType.PUT, prefix + b"k%d" % i, b"v%d" % i))
            await events.wait_for(len(expected))
            resumed = events.events[7][0] - killed_at
            print(f"\nwatch resumed on another member {resumed:.2f} s after its member was killed")
            assert watcher.current_endpoint != watched

            got = [(e.type, e.kv.key, e.kv.value) for _, e in events.events]
            assert got == expected  # in order, nothing lost, nothing twice
            revisions = [e.revision for _, e in events.events]
            assert revisions == sorted(set(revisions))
            again = events.events[5][1]
            assert again.prev_kv is not None and again.prev_kv.value == b"v0"
            deleted = events.events[6][1]
            assert deleted.prev_kv is not None and deleted.prev_kv.value == b"v1"

    try:
        run(scenario())
    finally:
        heal(etcd_cluster)


def test_watch_from_a_compacted_revision_raises_compacted(etcd_cluster: EtcdCluster) -> None:
    key = unique_prefix("compact") + b"k"

    async def scenario() -> None:
        async with await Etcd.connect(etcd_cluster.endpoints) as etcd:
            old = await etcd.put(key, b"1")
            await etcd.put(key, b"2")
            latest = await etcd.put(key, b"3")
            await etcd.compact(latest)
            with pytest.raises(Compacted) as raised:
                async for _ in etcd.watch_prefix(key, old):
                    pytest.fail("a compacted watch delivered events")
            assert raised.value.revision == latest
            # From the compaction revision on, the history is there.
            async for batch in etcd.watch_prefix(key, latest):
                assert [e.kv.value for e in batch] == [b"3"]
                break

    run(scenario())


# --- failover -------------------------------------------------------------------


def test_client_keeps_working_when_the_leader_it_uses_is_killed(
    etcd_cluster: EtcdCluster,
) -> None:
    """The client's current endpoint is the leader; SIGKILL it. Writes go on
    through the other members once they elected a new leader, and a lease
    kept alive through the killed member survives."""
    prefix = unique_prefix("failover")

    async def scenario() -> None:
        leader = etcd_cluster.leader_index()
        endpoints = etcd_cluster.endpoints
        ordered = [endpoints[leader]] + [e for i, e in enumerate(endpoints) if i != leader]
        # A write proposed through a follower just before it notices the dead
        # leader is lost with the leader and hangs until its deadline (etcd
        # answers only after its own request timeout, about 6 s): a short
        # call timeout bounds that wait.
        async with await Etcd.connect(ordered, call_timeout=1) as etcd:
            assert etcd.current_endpoint == endpoints[leader]
            lease = await etcd.grant_lease(2)
            keepalive = etcd.keep_alive(lease)
            try:
                await etcd.put(prefix + b"before", b"x", lease=lease.id)
                etcd_cluster.kill(leader)
                killed_at = time.monotonic()
                # The first write may have been in flight on the dead connection:
                # it says so (outcome_unknown); the caller tries again.
                attempts = 0
                while True:
                    attempts += 1
                    try:
                        await etcd.put(prefix + b"after", b"0")
                        break
                    except EtcdUnavailable as error:
                        assert error.outcome_unknown, error
                        assert attempts < 4, error
                first_write = time.monotonic() - killed_at
                for i in range(20):
                    await etcd.put(prefix + b"after", b"%d" % i)
                twenty = time.monotonic() - killed_at - first_write
                kvs, _ = await etcd.get_prefix(prefix)
                assert [kv.value for kv in kvs] == [b"19", b"x"]
                await asyncio.sleep(2.5)  # longer than the lease's TTL
                assert keepalive.valid() and keepalive.reconnects >= 1
                assert await etcd.get(prefix + b"before") is not None
                new_leader = etcd_cluster.leader_index()
                print(
                    f"\nleader killed: first write {first_write:.2f} s after the kill "
                    f"({attempts} attempt(s)), then 20 writes in {twenty:.2f} s; "
                    f"keepalive reconnected {keepalive.reconnects} time(s); "
                    f"new leader m{new_leader}"
                )
                assert new_leader != leader
            finally:
                await keepalive.stop()

    try:
        run(scenario())
    finally:
        heal(etcd_cluster)


def test_connect_fails_fast_without_etcd() -> None:
    (port,) = free_ports(1)

    async def scenario() -> None:
        start = time.monotonic()
        with pytest.raises(EtcdUnavailable):
            await Etcd.connect([f"127.0.0.1:{port}"], call_timeout=1)
        assert time.monotonic() - start < 1.5

    run(scenario())
