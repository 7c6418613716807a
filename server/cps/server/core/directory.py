"""What the cluster knows about each checkpoint instance and its replicas,
and the pure rules that decide placement and failover.

A Record is kept in etcd in cluster mode (cluster/directory.py), in memory
on a single node (cluster/solo.py); it changes only by compare-and-swap on
``version``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from .types import CreationAttributes


@dataclass(frozen=True, slots=True, order=True)
class Member:
    """A node as one run of its process: a node that restarts comes back
    as a new incarnation, which holds none of the old one's replicas."""

    name: str
    incarnation: int

    def __str__(self) -> str:
        return f"{self.name}#{self.incarnation:x}"


@dataclass(frozen=True, slots=True)
class Record:
    name: str
    # Unique per instance for the life of the cluster (etcd: the record's
    # create_revision): a name deleted and created again gets a new one.
    incarnation: int
    attributes: CreationAttributes
    # Rises by one whenever the active replica changes: with the
    # incarnation it is the fence every replica checks.
    epoch: int
    active: Member | None
    replicas: tuple[Member, ...]  # the active included
    in_sync: tuple[Member, ...]
    unlinked: bool = False
    version: int = 0  # the store's revision of this record, for compare-and-swap

    def backups(self) -> tuple[Member, ...]:
        return tuple(m for m in self.replicas if m != self.active)

    def holds(self, member: Member) -> bool:
        return member in self.replicas


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """A member of the cluster as this node sees it (for the admin service)."""

    member: Member
    address: str  # "" when the node does not know it (a single node's own)
    version: str
    director: bool  # makes the placement and failover decisions
    lease_id: int  # the etcd lease of its member key; 0 for a single node
    # This node only: seconds it may still act as an active replica without
    # renewing its lease (None: no lease to lose, or another member).
    lease_remaining: float | None = None


class NameTaken(Exception):
    """Directory.create lost the race: the name exists (``record``)."""

    def __init__(self, record: Record) -> None:
        super().__init__(record.name)
        self.record = record


def rendezvous(name: str, candidates: Iterable[Member], count: int) -> list[Member]:
    """``count`` members chosen for a checkpoint by highest random weight:
    the same on every node, and spread evenly; a member that goes away moves
    only its own share."""

    def weight(member: Member) -> bytes:
        return hashlib.blake2b(f"{name}\0{member.name}".encode(), digest_size=8).digest()

    return sorted(candidates, key=weight, reverse=True)[:count]


def place(
    name: str,
    candidates: Iterable[Member],
    count: int,
    hosts: Mapping[str, str],
    taken: Iterable[str] = (),
) -> list[Member]:
    """Up to ``count`` members for replicas of checkpoint ``name``, in
    rendezvous order, at most one per host and none on a host of ``taken``
    (the hosts that hold a replica already). ``hosts`` maps a member's name
    to its host; a member it does not name is a host of its own. Fewer
    hosts than wanted: fewer members (one per host), never two on one host.
    """
    used = set(taken)
    chosen: list[Member] = []
    if count <= 0:
        return chosen
    everyone = list(candidates)
    for member in rendezvous(name, everyone, len(everyone)):
        host = hosts.get(member.name, member.name)
        if host in used:
            continue
        chosen.append(member)
        used.add(host)
        if len(chosen) == count:
            break
    return chosen


def reconcile(
    record: Record,
    live: Mapping[str, Member],
    target_replicas: int,
    hosts: Mapping[str, str] | None = None,
) -> Record | None:
    """The record the director writes for the current membership, or None
    when it needs no change (or the checkpoint is lost: see ``lost``).

    A replica whose member is gone (dead, or restarted as a new incarnation)
    leaves ``replicas`` and ``in_sync``. When the active is gone, a
    non-collocated checkpoint gets the first surviving member of
    ``in_sync`` (deterministic) at epoch + 1; a collocated one gets no
    active (until an application calls ActiveReplicaSet). Missing replicas
    are added on live members that hold none, on hosts that hold none
    (``hosts``: member name -> host, see ``place``); they are not in sync
    until caught up.
    """

    def alive(member: Member) -> bool:
        return live.get(member.name) == member

    replicas = tuple(m for m in record.replicas if alive(m))
    in_sync = tuple(m for m in record.in_sync if alive(m))
    if not in_sync:
        return None  # nothing holds the data any more: see lost()
    active, epoch = record.active, record.epoch
    if active is not None and not alive(active):
        active = None if record.attributes.collocated else in_sync[0]
        epoch += 1
    missing = target_replicas - len(replicas)
    if missing > 0:
        hosts = hosts or {}
        spare = [m for m in live.values() if m not in replicas]
        taken = [hosts.get(m.name, m.name) for m in replicas]
        replicas += tuple(place(record.name, spare, missing, hosts, taken))
    updated = replace(record, active=active, epoch=epoch, replicas=replicas, in_sync=in_sync)
    return None if updated == record else updated


def lost(record: Record, live: Mapping[str, Member]) -> bool:
    """No live member holds an in-sync copy: the checkpoint's data is gone."""
    return not any(live.get(m.name) == m for m in record.in_sync)
