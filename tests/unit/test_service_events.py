"""The node's event feed (core/service_events.py): a bounded ring read from
a position; a reader that falls behind loses the oldest and is told how
many; filters; where a subscriber starts."""

from __future__ import annotations

from cps.server.core.service_events import (
    CheckpointDetail,
    EventFilter,
    EventKind,
    EventLog,
    NodeDetail,
)

ALL = EventFilter()


def log_of(capacity: int) -> EventLog:
    return EventLog(capacity, lambda: 1_000, incarnation=7)


def test_positions_and_reads() -> None:
    log = log_of(10)
    for index in range(3):
        log.emit(EventKind.CHECKPOINT_CREATED, f"c{index}", CheckpointDetail(index))
    cursor, lost, events = log.read(0, ALL, 100)
    assert (cursor, lost) == (3, 0)
    assert [e.position for e in events] == [1, 2, 3]
    assert log.read(cursor, ALL, 100) == (3, 0, [])
    cursor, lost, events = log.read(1, ALL, 1)
    assert (cursor, lost, [e.position for e in events]) == (2, 0, [2])


def test_a_reader_behind_the_ring_loses_the_oldest_and_is_told() -> None:
    log = log_of(5)
    for index in range(12):
        log.emit(EventKind.CHECKPOINT_CREATED, f"c{index}")
    assert len(log.ring) == 5 and log.oldest == 8
    cursor, lost, events = log.read(2, ALL, 100)
    assert lost == 5  # positions 3..7
    assert [e.position for e in events] == [8, 9, 10, 11, 12]
    assert cursor == 12


def test_filters() -> None:
    log = log_of(10)
    log.emit(EventKind.NODE_LEFT, "", NodeDetail("n2", 1))
    log.emit(EventKind.CHECKPOINT_CREATED, "a")
    log.emit(EventKind.CHECKPOINT_DELETED, "a")
    log.emit(EventKind.CHECKPOINT_CREATED, "b")
    names = EventFilter(frozenset({"a"}))
    assert [e.position for e in log.read(0, names, 10)[2]] == [2, 3]
    kinds = EventFilter(kinds=frozenset({EventKind.CHECKPOINT_CREATED}))
    assert [e.position for e in log.read(0, kinds, 10)[2]] == [2, 4]
    both = EventFilter(frozenset({"b"}), frozenset({EventKind.CHECKPOINT_CREATED}))
    cursor, _, events = log.read(0, both, 10)
    assert [e.position for e in events] == [4] and cursor == 4


def test_where_a_subscriber_starts() -> None:
    log = log_of(3)
    for _ in range(5):
        log.emit(EventKind.CHECKPOINT_CREATED, "x")
    assert log.start(0) == 2  # the oldest kept, nothing lost
    assert log.start(4) == 4 and log.start(4, 7) == 4
    assert log.start(4, 8) == 2  # another run of the node
    assert log.start(99) == 2  # past the newest: not ours
    assert log.start(1) == 1  # read() reports the loss


def test_listeners_and_close() -> None:
    log = log_of(3)
    calls: list[int] = []
    stop = log.listen(lambda: calls.append(log.position))
    log.emit(EventKind.CHECKPOINT_CREATED, "x")
    stop()
    log.emit(EventKind.CHECKPOINT_CREATED, "y")
    assert calls == [1]
    log.listen(lambda: calls.append(-1))
    log.close()
    assert log.closed and calls == [1, -1]
