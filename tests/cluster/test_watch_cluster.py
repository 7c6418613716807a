"""`cpsctl watch` on the survivors of a real 3-node cluster (lease TTL 2 s,
3-member etcd) while the active of a checkpoint is killed with kill -9: the
output shows the node leaving and the checkpoint's active replica changing
to the backup at the next epoch, as a failover, and the dead node's replica
lost; the checkpoint's creation and its backup's placement show before. A
node paused past its lease reports LEASE_LOST in its own feed, and the
others see it leave and come back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cli.support import as_json
from tests.cli.test_cpsctl_watch import Watcher
from tests.cluster.harness import CpsCluster, EtcdCluster, cps_cluster
from tests.cluster.helpers import ASYNC, create

FLAGS = ("--lease-ttl", "2", "--replica-timeout-seconds", "0.5")


@pytest.fixture()
def cluster(etcd_cluster: EtcdCluster) -> Iterator[CpsCluster]:
    with cps_cluster(etcd_cluster.endpoints, 3, FLAGS) as running:
        yield running


@pytest.fixture()
def watchers() -> Iterator[list[Watcher]]:
    started: list[Watcher] = []
    yield started
    for watcher in started:
        watcher.stop()


def _json_until(watcher: Watcher, **wanted: Any) -> dict[str, Any]:
    """The first JSON line whose fields have the ``wanted`` values."""
    while True:
        line = watcher.until('"type"', timeout=30)
        value: dict[str, Any] = json.loads(line)
        if all(value.get(key) == expected for key, expected in wanted.items()):
            return value


def test_watch_on_a_survivor_shows_the_kill_of_an_active(
    cluster: CpsCluster, watchers: list[Watcher]
) -> None:
    a, b, c = cluster.nodes
    create(a.address, "watch-failover", ASYNC, max_sections=2)
    before = as_json(a.address, "status", "watch-failover")
    assert before["active"] == "n0" and before["epoch"] == 1
    backup = next(r["node"] for r in before["replicas"] if not r["active"])
    # One watcher per survivor: JSON on b, lines for people on c; each
    # reports what its own node saw of the cluster.
    as_lines = Watcher(c.address)
    as_objects = Watcher(b.address, "--json")
    watchers += [as_lines, as_objects]
    created = _json_until(as_objects, kind="CHECKPOINT_CREATED", checkpoint="watch-failover")
    assert created["position"] > 0
    placed = _json_until(
        as_objects, kind="REPLICA_CREATED", checkpoint="watch-failover", node=backup
    )
    assert placed["position"] > created["position"]
    as_lines.until("CHECKPOINT_CREATED watch-failover")

    a.kill()  # kill -9 of the active

    left = _json_until(as_objects, kind="NODE_LEFT", node="n0")
    changed = _json_until(as_objects, kind="ACTIVE_CHANGED", checkpoint="watch-failover")
    assert changed["old"] == "n0" and changed["new"] == backup
    assert changed["epoch"] == before["epoch"] + 1
    assert changed["why"] == "failover: n0 left"
    assert changed["position"] > left["position"]
    lost = _json_until(as_objects, kind="REPLICA_LOST", checkpoint="watch-failover", node="n0")
    assert lost["why"] == "node left"
    line = as_lines.until("ACTIVE_CHANGED watch-failover")
    assert f"old=n0 new={backup} epoch={before['epoch'] + 1}" in line
    assert 'why="failover: n0 left"' in line
    assert any("NODE_LEFT" in seen and "node=n0" in seen for seen in as_lines.seen)
    after = as_json(b.address, "status", "watch-failover")
    assert after["active"] == backup and after["epoch"] == changed["epoch"]
    for watcher in (as_lines, as_objects):
        assert watcher.stop() == 0


def test_a_paused_node_reports_its_lease_lost_and_the_others_see_it_leave_and_return(
    cluster: CpsCluster, watchers: list[Watcher]
) -> None:
    _a, b, c = cluster.nodes
    on_b = Watcher(b.address, "--json", "--kind", "node_left", "--kind", "node_joined")
    watchers.append(on_b)
    c.pause()  # SIGSTOP past the lease TTL
    left = _json_until(on_b, kind="NODE_LEFT", node="n2")
    c.cont()
    back = _json_until(on_b, kind="NODE_JOINED", node="n2")
    assert back["incarnation"] == left["incarnation"]  # the same run, a new lease
    c.wait_serving()
    on_c = Watcher(c.address, "--json", "--kind", "lease_lost")
    watchers.append(on_c)
    lost = _json_until(on_c, kind="LEASE_LOST", node="n2")
    assert lost["incarnation"] == left["incarnation"]
    assert on_c.stop() == 0 and on_b.stop() == 0
