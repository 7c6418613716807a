"""Placement of replicas over hosts (core.directory.place and reconcile;
docs/workers.md): the workers of one node share a host, and a checkpoint
never has two replicas on one host. A member without a host is a host of
its own, as every node was before workers."""

from __future__ import annotations

import json

from cps.server.cluster.records import MemberInfo, member_of, member_value
from cps.server.core.directory import Member, Record, place, reconcile, rendezvous
from tests.unit.conftest import attributes

# Two nodes of two workers, and a node of one process.
WORKERS = [Member(f"n{node}.w{worker}", 10 * node + worker) for node in (0, 1) for worker in (0, 1)]
SOLO = Member("n2", 20)
HOSTS = {member.name: member.name.split(".")[0] for member in WORKERS}
NAMES = [f"ckpt-{i}" for i in range(200)]


def _host(member: Member) -> str:
    return HOSTS.get(member.name, member.name)


def test_without_hosts_placement_is_rendezvous_as_before() -> None:
    members = [Member(f"n{i}", i) for i in range(5)]
    for name in NAMES:
        assert place(name, members, 2, {}) == rendezvous(name, members, 2)
        assert place(name, members, 9, {}) == rendezvous(name, members, 9)
    assert place("x", members, 0, {}) == []


def test_at_most_one_member_per_host_and_none_on_a_taken_host() -> None:
    everyone = [*WORKERS, SOLO]
    for name in NAMES:
        chosen = place(name, everyone, 3, HOSTS)
        assert sorted(map(_host, chosen)) == ["n0", "n1", "n2"]
        # The creator's host (n0) is taken: its sibling is never a backup.
        backups = place(name, [m for m in everyone if m.name != "n0.w0"], 2, HOSTS, ["n0"])
        assert sorted(map(_host, backups)) == ["n1", "n2"]


def test_fewer_hosts_than_wanted_gives_fewer_members() -> None:
    """As with fewer nodes than replicas before: one per host, no more."""
    for name in NAMES:
        chosen = place(name, WORKERS, 3, HOSTS)
        assert len(chosen) == 2 and {_host(m) for m in chosen} == {"n0", "n1"}
        assert place(name, WORKERS[1:], 2, HOSTS, ["n0"])[0].name.startswith("n1.")


def test_both_workers_of_a_host_get_a_share() -> None:
    """Rendezvous over members, then one per host: the backups of n0's
    checkpoints spread over both workers of n1."""
    backups = [place(name, WORKERS[2:], 1, HOSTS, ["n0"])[0].name for name in NAMES]
    assert 60 < backups.count("n1.w0") < 140


def _record(name: str, replicas: tuple[Member, ...]) -> Record:
    return Record(
        name=name,
        incarnation=1,
        attributes=attributes(),
        epoch=1,
        active=replicas[0],
        replicas=replicas,
        in_sync=replicas,
        version=1,
    )


def test_reconcile_replaces_a_lost_replica_on_another_host() -> None:
    live = {member.name: member for member in WORKERS}
    for name in NAMES[:50]:
        active, backup = WORKERS[0], WORKERS[2]  # n0.w0 and n1.w0
        record = _record(name, (active, backup))
        assert reconcile(record, live, 2, HOSTS) is None  # nothing to do
        # n1.w0 restarted (a new incarnation): its replica goes back on n1
        # (its new incarnation or its sibling), the only host that holds none.
        restarted = {**live, "n1.w0": Member("n1.w0", 99)}
        updated = reconcile(record, restarted, 2, HOSTS)
        assert updated is not None
        assert updated.replicas[0] == active and _host(updated.replicas[1]) == "n1"
        assert updated.replicas[1] != backup
        assert updated.in_sync == (active,)
        # Three wanted, two hosts: no third replica on a host that has one.
        assert reconcile(record, live, 3, HOSTS) is None


def test_reconcile_fails_over_to_the_other_host() -> None:
    live = {member.name: member for member in WORKERS if member.name != "n0.w0"}
    record = _record("c", (WORKERS[0], WORKERS[3]))
    updated = reconcile(record, live, 2, HOSTS)
    assert updated is not None
    assert updated.active == WORKERS[3] and updated.epoch == 2
    # The lost replica goes back on n0 (its live worker), not on n1.w0.
    assert updated.replicas == (WORKERS[3], WORKERS[1])


def test_reconcile_without_hosts_is_unchanged() -> None:
    members = [Member(f"n{i}", i) for i in range(4)]
    live = {m.name: m for m in members[1:]}
    record = _record("c", (members[0], members[1]))
    with_hosts = reconcile(record, live, 2, {})
    assert with_hosts == reconcile(record, live, 2)
    assert with_hosts is not None
    spare = [m for m in live.values() if m not in with_hosts.replicas[:1]]
    assert with_hosts.replicas[1:] == tuple(rendezvous("c", spare, 1))


def test_member_records_carry_a_host_and_old_ones_decode() -> None:
    info = MemberInfo(Member("n0.w1", 7), "127.0.0.1:5002", "0.1.0", "n0")
    assert member_of(member_value(info)) == info
    assert json.loads(member_value(info))["host"] == "n0"
    old = json.dumps({"node": "a", "incarnation": 3, "address": "a:1", "version": "0.0.9"})
    assert member_of(old.encode()) == MemberInfo(Member("a", 3), "a:1", "0.0.9", "a")
    assert MemberInfo(Member("b", 1), "b:1", "v").host == "b"
