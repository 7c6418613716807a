"""Initialize / Finalize, OpenAsync, immediate-consumption notifications and
the SessionEvents overflow policy."""

from __future__ import annotations

import pytest

from cps.server.core.errors import ErrorCode
from cps.server.core.events import (
    MESSAGE_OVERHEAD,
    Event,
    EventsLost,
    Notification,
    OpenCompleted,
    SessionEvents,
    SynchronizeCompleted,
    notification_bytes,
)
from cps.server.core.sessions import Version, VersionMismatch
from cps.server.core.types import Change, OpenFlag, WriteElement

from .conftest import RW, RWC, START, FakeClock, Manager, S, attributes, fails

SUPPORTED = Version("B", 1, 1)

# -- initialize / finalize --------------------------------------------------------


@pytest.mark.parametrize("version", [("B", 1, 1), ("B", 1, 0), ("B", 0, 9), ("B", 1, 7)])
def test_initialize_accepts_compatible_versions(
    manager: Manager, version: tuple[str, int, int]
) -> None:
    session, supported = manager.initialize(*version)
    assert supported == SUPPORTED
    assert session in manager.sessions


@pytest.mark.parametrize("version", [("A", 1, 1), ("C", 1, 1), ("B", 2, 0)])
def test_initialize_refuses_incompatible_versions(
    manager: Manager, version: tuple[str, int, int]
) -> None:
    with pytest.raises(VersionMismatch) as info:
        manager.initialize(*version)
    assert info.value.code is ErrorCode.VERSION_MISMATCH
    assert info.value.supported == SUPPORTED
    assert manager.sessions == {}


def test_finalize_closes_every_handle_of_the_session(
    manager: Manager, clock: FakeClock, session: int
) -> None:
    other, _ = manager.initialize("B", 1, 1)
    mine = [manager.open(session, name, attributes(retention=10.0), RWC) for name in "xy"]
    theirs = manager.open(other, "x", None, RW)
    manager.finalize(session)
    for h in mine:
        with fails(ErrorCode.INVALID_HANDLE):
            manager.status_get(h)
    with fails(ErrorCode.BAD_HANDLE):
        manager.open(session, "x", None, RW)
    clock.advance(10)
    assert set(manager.checkpoints) == {"x"}  # y's retention timer fired
    manager.status_get(theirs)


def test_finalize_of_an_unknown_session_is_a_bad_handle(manager: Manager) -> None:
    with fails(ErrorCode.BAD_HANDLE):
        manager.finalize(999)


# -- open_async -------------------------------------------------------------------


def test_open_async_reports_the_handle(manager: Manager, session: int) -> None:
    manager.open_async(session, 5, "ckpt", attributes(), RWC)
    [event] = manager.take_events(session)
    assert isinstance(event, OpenCompleted)
    assert (event.invocation, event.error) == (5, None)
    manager.section_create(event.handle, b"s", None, b"")


def test_open_async_reports_the_error(manager: Manager, session: int) -> None:
    manager.open_async(session, 6, "missing", None, RW)
    [event] = manager.take_events(session)
    assert isinstance(event, OpenCompleted)
    assert event.invocation == 6
    assert event.error is not None
    assert event.error.code is ErrorCode.NOT_EXIST


@pytest.mark.parametrize(
    "flags, code", [(OpenFlag(0), ErrorCode.BAD_FLAG), (RW, ErrorCode.INVALID_PARAM)]
)
def test_open_async_parameter_errors_fail_the_call(
    manager: Manager, session: int, flags: OpenFlag, code: ErrorCode
) -> None:
    """Seed 3.5.2 lists BAD_FLAG and INVALID_PARAM as the call's return values."""
    with fails(code):
        manager.open_async(session, 7, "ckpt", attributes(), flags)
    assert manager.take_events(session) == []


def test_open_async_with_an_unknown_session_is_a_bad_handle(manager: Manager) -> None:
    with fails(ErrorCode.BAD_HANDLE):
        manager.open_async(999, 1, "ckpt", attributes(), RWC)


# -- notifications ----------------------------------------------------------------


def notifications(events: list[Event]) -> list[tuple[int, list[tuple[bytes, Change]]]]:
    return [(e.handle, e.changes) for e in events if isinstance(e, Notification)]


def test_registered_handle_is_notified_of_every_change_in_order(
    manager: Manager, clock: FakeClock, session: int, handle: int
) -> None:
    manager.immediate_consumption_register(handle)
    manager.section_create(handle, b"a", None, b"")
    manager.section_create(handle, b"b", START + 5 * S, b"")
    manager.write(handle, [WriteElement(b"b", b"x", 0), WriteElement(b"a", b"y", 0)])
    manager.overwrite(handle, b"a", b"z")
    manager.section_delete(handle, b"a")
    clock.advance(5)
    assert notifications(manager.take_events(session)) == [
        (handle, [(b"a", Change.CREATED)]),
        (handle, [(b"b", Change.CREATED)]),
        (handle, [(b"b", Change.WRITTEN), (b"a", Change.WRITTEN)]),
        (handle, [(b"a", Change.OVERWRITTEN)]),
        (handle, [(b"a", Change.DELETED)]),
        (handle, [(b"b", Change.EXPIRED)]),
    ]


def test_only_registered_handles_are_notified(manager: Manager, session: int, handle: int) -> None:
    other, _ = manager.initialize("B", 1, 1)
    listener = manager.open(other, "ckpt", None, RW)
    manager.open(other, "ckpt", None, RW)  # not registered
    manager.immediate_consumption_register(listener)
    manager.section_create(handle, b"s", None, b"")
    assert manager.take_events(session) == []
    [event] = manager.take_events(other)
    assert event == Notification("ckpt", listener, [(b"s", Change.CREATED)])


def test_failed_changes_are_not_notified(manager: Manager, session: int, handle: int) -> None:
    manager.immediate_consumption_register(handle)
    with fails(ErrorCode.NOT_EXIST):
        manager.write(handle, [WriteElement(b"nope", b"x", 0)])
    assert manager.take_events(session) == []


def test_close_drops_the_pending_notifications_of_the_handle(
    manager: Manager, session: int, handle: int
) -> None:
    kept = manager.open(session, "ckpt", None, RW)
    for h in (handle, kept):
        manager.immediate_consumption_register(h)
    manager.section_create(handle, b"s", None, b"")
    manager.close(handle)
    assert notifications(manager.take_events(session)) == [(kept, [(b"s", Change.CREATED)])]


def test_close_drops_the_pending_open_completion_of_the_handle(
    manager: Manager, session: int
) -> None:
    manager.open_async(session, 1, "ckpt", attributes(), RWC)
    [event] = manager.session(session).events.queue
    assert isinstance(event, OpenCompleted)
    manager.close(event.handle)
    assert manager.take_events(session) == []


def test_close_drops_the_pending_synchronize_completion_of_the_handle(
    manager: Manager, session: int, handle: int
) -> None:
    """Seed 3.5.3: close "cancels all pending callbacks that refer directly or
    indirectly to the handle" - the SynchronizeAsync callback included."""
    manager.synchronize_async(handle, 9)
    manager.close(handle)
    assert manager.take_events(session) == []


def test_finalize_drops_every_pending_callback(manager: Manager, session: int, handle: int) -> None:
    manager.immediate_consumption_register(handle)
    manager.section_create(handle, b"s", None, b"")
    manager.synchronize_async(handle, 9)
    events = manager.session(session).events
    manager.finalize(session)
    assert list(events.queue) == []


# -- SessionEvents overflow policy -------------------------------------------------


def note(handle: int, *section_ids: bytes, change: Change = Change.WRITTEN) -> Notification:
    return Notification("ckpt", handle, [(s, change) for s in section_ids])


def test_below_the_depth_nothing_is_merged() -> None:
    events = SessionEvents(max_depth=3)
    events.push(note(1, b"a"))
    events.push(note(1, b"b"))
    assert events.take_all() == [note(1, b"a"), note(1, b"b")]


def test_overflow_merges_into_the_handles_waiting_notification() -> None:
    events = SessionEvents(max_depth=2)
    events.push(note(1, b"a"))
    events.push(note(2, b"x"))
    events.push(note(1, b"b", b"a"))
    assert events.take_all() == [note(1, b"a", b"b"), note(2, b"x")]


def test_overflow_merge_keeps_the_latest_change_kind() -> None:
    events = SessionEvents(max_depth=2)
    events.push(note(1, b"a", change=Change.CREATED))
    events.push(note(2, b"x"))
    events.push(note(1, b"a", change=Change.DELETED))
    assert events.take_all() == [note(1, b"a", change=Change.DELETED), note(2, b"x")]


def test_overflow_merge_keeps_the_last_word_on_each_section() -> None:
    """A merged change must not be delivered before an older change of the
    same section: the consumer must end up with the latest kind."""
    events = SessionEvents(max_depth=3)
    events.push(note(1, b"s", change=Change.CREATED))
    events.push(note(1, b"t"))
    events.push(note(1, b"s", change=Change.DELETED))
    events.push(note(1, b"s", change=Change.CREATED))  # full: merged
    last: dict[bytes, Change] = {}
    for event in events.take_all():
        assert isinstance(event, Notification)
        last.update(event.changes)
    assert last[b"s"] is Change.CREATED


def test_overflow_drops_the_oldest_notifications_with_one_events_lost() -> None:
    events = SessionEvents(max_depth=3)
    for h in range(1, 7):  # six handles: nothing to merge
        events.push(note(h, b"s"))
    taken = events.take_all()
    assert taken[0] == EventsLost(3)
    assert taken[1:] == [note(4, b"s"), note(5, b"s"), note(6, b"s")]


def test_a_change_is_never_merged_into_a_dropped_notification() -> None:
    events = SessionEvents(max_depth=2)
    events.push(note(1, b"a"))
    events.push(note(2, b"b"))
    events.push(note(3, b"c"))  # drops handle 1's notification
    events.push(note(1, b"d"))  # drops handle 2's; must not vanish itself
    assert events.take_all() == [EventsLost(2), note(3, b"c"), note(1, b"d")]


def test_a_change_is_never_merged_into_a_taken_notification() -> None:
    events = SessionEvents(max_depth=1)
    events.push(note(1, b"a"))
    assert events.take_all() == [note(1, b"a")]
    events.push(note(2, b"x"))
    events.push(note(1, b"b"))
    assert events.take_all() == [EventsLost(1), note(1, b"b")]


def test_overflow_never_drops_completions() -> None:
    events = SessionEvents(max_depth=2)
    events.push(OpenCompleted(1, 11, None))
    events.push(note(1, b"s"))
    events.push(SynchronizeCompleted(2, 22, None))
    events.push(OpenCompleted(3, 33, None))
    events.push(note(2, b"s"))
    events.push(note(3, b"s"))
    taken = events.take_all()
    assert [e for e in taken if not isinstance(e, Notification | EventsLost)] == [
        OpenCompleted(1, 11, None),
        SynchronizeCompleted(2, 22, None),
        OpenCompleted(3, 33, None),
    ]
    assert [e for e in taken if isinstance(e, EventsLost)] == [EventsLost(2)]
    assert notifications(taken) == [(3, [(b"s", Change.WRITTEN)])]


def test_a_closed_queue_takes_nothing() -> None:
    events = SessionEvents(max_depth=2)
    events.push(note(1, b"s"))
    events.close()
    events.push(OpenCompleted(1, 11, None))
    assert events.take_all() == []


def test_dropped_marker_stands_where_the_dropped_notification_stood() -> None:
    events = SessionEvents(max_depth=2)
    events.push(OpenCompleted(1, 11, None))
    events.push(note(1, b"a"))
    events.push(note(2, b"b"))  # full: drops note(1), the marker takes its place
    events.push(note(3, b"c"))  # full again: drops note(2), counted by the marker
    assert events.take_all() == [OpenCompleted(1, 11, None), EventsLost(2), note(3, b"c")]


def test_taken_events_are_numbered_and_kept_for_a_resumed_stream() -> None:
    events = SessionEvents(max_depth=2)
    for invocation in (1, 2, 3):
        events.push(SynchronizeCompleted(invocation, 7, None))
    taken = events.take_numbered()
    assert [number for number, _ in taken] == [1, 2, 3]
    # Only the last max_depth taken are kept.
    assert [number for number, _ in events.sent_after(0)] == [2, 3]
    assert [number for number, _ in events.sent_after(2)] == [3]
    events.drop_handle(7)  # closing the handle forgets them too
    assert events.sent_after(0) == []


def test_a_write_of_one_section_in_several_elements_notifies_it_once(
    manager: Manager, session: int
) -> None:
    handle = manager.open(session, "dedupe", attributes(), RWC)
    manager.section_create(handle, b"a", None, b"")
    manager.section_create(handle, b"b", None, b"")
    manager.immediate_consumption_register(handle)
    manager.take_events(session)
    manager.write(
        handle,
        [WriteElement(b"a", b"1", 0), WriteElement(b"b", b"2", 0), WriteElement(b"a", b"3", 1)],
    )
    assert notifications(manager.take_events(session)) == [
        (handle, [(b"a", Change.WRITTEN), (b"b", Change.WRITTEN)])
    ]


def test_a_notification_larger_than_a_message_is_taken_as_several() -> None:
    events = SessionEvents(max_depth=10, max_message_bytes=4096)
    ids = [b"%050d" % index for index in range(200)]  # ~13 KB of changes
    events.push(Notification("big", 7, [(section_id, Change.WRITTEN) for section_id in ids]))
    events.push(Notification("small", 8, [(b"a", Change.CREATED)]))
    taken = events.take_numbered()
    parts = [event for _, event in taken if isinstance(event, Notification)]
    assert len(parts) > 3 and parts[-1].checkpoint_name == "small"
    assert [section_id for part in parts[:-1] for section_id, _ in part.changes] == ids
    assert all(notification_bytes(part) <= 4096 - MESSAGE_OVERHEAD for part in parts)
    assert [number for number, _ in taken] == list(range(1, len(taken) + 1))
