"""The node's service-event feed wired to where events happen: the
directory's members and records (every node of a cluster sees every change),
the active's timers, the calls that hit a limit, the store's failed commits
and, in a cluster, this node's lease. Composition only (as node.py)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .core.directory import Record
from .core.errors import ErrorCode
from .core.service_events import (
    EventKind,
    EventLog,
    LimitDetail,
    NodeDetail,
    StorageDetail,
)
from .service.events import DirectoryEvents

if TYPE_CHECKING:
    from .node import Node

# The seed's "resources exhausted" errors.
LIMIT_REASONS = frozenset(
    code.value for code in (ErrorCode.NO_MEMORY, ErrorCode.NO_RESOURCE, ErrorCode.NO_SPACE)
)


def wire_events(node: Node) -> EventLog:
    """Call once the node's parts exist (and a single node's store is
    loaded: what it restores is not news)."""
    log = EventLog(node.settings.limits.max_event_backlog, time.time_ns, node.me.incarnation)
    derived = DirectoryEvents(log)
    node.active.events = log
    if node.cluster is not None:
        cluster = node.cluster
        directory = cluster.directory

        def record_changed(old: Record | None, new: Record | None) -> None:
            if directory.loaded.is_set():  # not the records found on joining
                derived.record_changed(old, new)

        directory.on_members.append(derived.members_changed)
        directory.on_record.append(record_changed)
        membership = cluster.membership
        previous = membership.on_lease_lost

        def lease_lost() -> None:
            previous()
            me = membership.me
            log.emit(EventKind.LEASE_LOST, "", NodeDetail(me.name, me.incarnation))

        membership.on_lease_lost = lease_lost
    else:
        derived.members_changed({node.me.name: node.me})
        node.solo.on_record.append(derived.record_changed)

    def seed_error(method: str, reason: str) -> None:
        if reason in LIMIT_REASONS:
            log.emit(EventKind.LIMIT_REACHED, "", LimitDetail(reason, method))

    node.metrics.on_seed_error = seed_error
    rollback = node.journal.on_rollback

    def rolled_back(server: set[str], library: set[str]) -> None:
        names = tuple(sorted(server | library))
        log.emit(
            EventKind.STORAGE_FAILED,
            "",
            StorageDetail(f"a commit to the store failed: {node.journal.last_error}", names),
        )
        if rollback is not None:
            rollback(server, library)

    node.journal.on_rollback = rolled_back
    return log
