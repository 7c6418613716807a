"""Open modes and attributes, close, delete (POSIX-like unlink), retention,
StatusGet."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from cps.server.core.errors import ErrorCode
from cps.server.core.types import (
    DEFAULT_SECTION_ID,
    CreationAttributes,
    CreationFlag,
    OpenFlag,
    ReadElement,
    WriteElement,
)

from .conftest import RW, RWC, FakeClock, Manager, S, attributes, fails, read_all

# -- open modes ---------------------------------------------------------------

WRITE_CALLS: dict[str, Callable[[Manager, int], object]] = {
    "write": lambda m, h: m.write(h, [WriteElement(b"s", b"x", 0)]),
    "overwrite": lambda m, h: m.overwrite(h, b"s", b"x"),
    "section_create": lambda m, h: m.section_create(h, b"t", None, b""),
    "section_delete": lambda m, h: m.section_delete(h, b"s"),
    "expiration_time_set": lambda m, h: m.section_expiration_time_set(h, b"s", None),
    "synchronize": lambda m, h: m.synchronize(h),
    "synchronize_async": lambda m, h: m.synchronize_async(h, 1),
}


@pytest.mark.parametrize("call", WRITE_CALLS.values(), ids=list(WRITE_CALLS.keys()))
def test_data_changes_need_write_mode(
    manager: Manager,
    session: int,
    handle: int,
    call: Callable[[Manager, int], object],
) -> None:
    manager.section_create(handle, b"s", None, b"data")
    reader = manager.open(session, "ckpt", None, OpenFlag.READ)
    with fails(ErrorCode.OP_NOT_PERMITTED):
        call(manager, reader)
    assert read_all(manager, handle, b"s") == b"data"
    call(manager, handle)  # the same call passes through a WRITE handle


def test_active_replica_set_needs_write_mode(manager: Manager, session: int) -> None:
    collocated = attributes(CreationFlag.WR_ACTIVE_REPLICA, CreationFlag.CHECKPOINT_COLLOCATED)
    reader = manager.open(session, "c", collocated, OpenFlag.READ | OpenFlag.CREATE)
    with fails(ErrorCode.OP_NOT_PERMITTED):
        manager.active_replica_set(reader)
    writer = manager.open(session, "c", None, OpenFlag.WRITE)
    manager.active_replica_set(writer)


def test_read_needs_read_mode(manager: Manager, session: int, handle: int) -> None:
    writer = manager.open(session, "ckpt", None, OpenFlag.WRITE)
    manager.section_create(writer, b"s", None, b"data")
    with fails(ErrorCode.OP_NOT_PERMITTED):
        manager.read(writer, [ReadElement(b"s", 0, 0)])
    assert read_all(manager, handle, b"s") == b"data"


# -- open arguments -------------------------------------------------------------


def test_create_without_attributes_is_invalid(manager: Manager, session: int) -> None:
    with fails(ErrorCode.INVALID_PARAM):
        manager.open(session, "ckpt", None, RWC)
    assert manager.checkpoints == {}


def test_attributes_without_create_are_invalid(manager: Manager, session: int, handle: int) -> None:
    with fails(ErrorCode.INVALID_PARAM):
        manager.open(session, "ckpt", attributes(), RW)


@pytest.mark.parametrize("checkpoint_size", [401, 10_000])
def test_checkpoint_size_above_sections_times_section_size_is_invalid(
    manager: Manager, session: int, checkpoint_size: int
) -> None:
    too_big = attributes(checkpoint_size=checkpoint_size, max_sections=4, max_section_size=100)
    with fails(ErrorCode.INVALID_PARAM):
        manager.open(session, "ckpt", too_big, RWC)
    manager.open(session, "ckpt", replace(too_big, checkpoint_size=400), RWC)


OTHER_SHAPES = {
    "creation_flags": attributes(CreationFlag.WR_ALL_REPLICAS),
    "checkpoint_size": attributes(checkpoint_size=999),
    "max_section_id_size": attributes(max_section_id_size=9),
    "max_sections": attributes(max_sections=11),
    "max_section_size": attributes(max_section_size=101),
}


@pytest.mark.parametrize("other", OTHER_SHAPES.values(), ids=list(OTHER_SHAPES.keys()))
def test_reopen_with_other_attributes_already_exists(
    manager: Manager, session: int, handle: int, other: CreationAttributes
) -> None:
    with fails(ErrorCode.ALREADY_EXIST):
        manager.open(session, "ckpt", other, RWC)


def test_reopen_with_other_retention_only_is_accepted(
    manager: Manager, session: int, handle: int
) -> None:
    again = manager.open(session, "ckpt", attributes(retention=5.0), RWC)
    manager.section_create(again, b"s", None, b"shared")
    assert read_all(manager, handle, b"s") == b"shared"


def test_open_missing_without_create_does_not_exist(manager: Manager, session: int) -> None:
    with fails(ErrorCode.NOT_EXIST):
        manager.open(session, "nope", None, RW)


def test_empty_open_flags_are_bad(manager: Manager, session: int, handle: int) -> None:
    with fails(ErrorCode.BAD_FLAG):
        manager.open(session, "ckpt", None, OpenFlag(0))


@pytest.mark.parametrize(
    "flags",
    [
        (),
        (CreationFlag.CHECKPOINT_COLLOCATED,),
        (CreationFlag.WR_ALL_REPLICAS, CreationFlag.WR_ACTIVE_REPLICA),
        (CreationFlag.WR_ACTIVE_REPLICA, CreationFlag.WR_ACTIVE_REPLICA_WEAK),
        (
            CreationFlag.WR_ALL_REPLICAS,
            CreationFlag.WR_ACTIVE_REPLICA,
            CreationFlag.WR_ACTIVE_REPLICA_WEAK,
        ),
    ],
    ids=["none", "collocated-only", "all+active", "active+weak", "all-three"],
)
def test_creation_flags_need_exactly_one_update_mode(
    manager: Manager, session: int, flags: tuple[CreationFlag, ...]
) -> None:
    bad = replace(attributes(), creation_flags=frozenset(flags))
    with fails(ErrorCode.BAD_FLAG):
        manager.open(session, "ckpt", bad, RWC)
    assert manager.checkpoints == {}


def test_single_section_checkpoint_has_default_section(manager: Manager, session: int) -> None:
    single = attributes(max_sections=1, checkpoint_size=100)
    h = manager.open(session, "one", single, RWC)
    assert read_all(manager, h, DEFAULT_SECTION_ID) == b""
    manager.overwrite(h, DEFAULT_SECTION_ID, b"hello")
    assert read_all(manager, h, DEFAULT_SECTION_ID) == b"hello"
    manager.write(h, [WriteElement(DEFAULT_SECTION_ID, b"J", 0)])
    assert read_all(manager, h, DEFAULT_SECTION_ID) == b"Jello"


def test_unknown_session_is_a_bad_handle(manager: Manager) -> None:
    with fails(ErrorCode.BAD_HANDLE):
        manager.open(12345, "ckpt", attributes(), RWC)
    with fails(ErrorCode.BAD_HANDLE):
        manager.delete(12345, "ckpt")


def test_closed_handle_is_invalid(manager: Manager, handle: int) -> None:
    manager.close(handle)
    with fails(ErrorCode.INVALID_HANDLE):
        manager.status_get(handle)
    with fails(ErrorCode.INVALID_HANDLE):
        manager.close(handle)


# -- delete: POSIX-like unlink ------------------------------------------------


def test_openers_keep_access_after_delete(manager: Manager, session: int, handle: int) -> None:
    manager.section_create(handle, b"s", None, b"old")
    manager.delete(session, "ckpt")
    assert read_all(manager, handle, b"s") == b"old"
    manager.write(handle, [WriteElement(b"s", b"new", 0)])
    assert read_all(manager, handle, b"s") == b"new"


def test_open_after_delete_does_not_exist(manager: Manager, session: int, handle: int) -> None:
    manager.delete(session, "ckpt")
    with fails(ErrorCode.NOT_EXIST):
        manager.open(session, "ckpt", None, RW)


def test_create_after_delete_makes_a_fresh_instance(
    manager: Manager, session: int, handle: int
) -> None:
    manager.section_create(handle, b"s", None, b"old")
    manager.delete(session, "ckpt")
    fresh = manager.open(session, "ckpt", attributes(), RWC)
    assert manager.status_get(fresh).number_of_sections == 0
    with fails(ErrorCode.NOT_EXIST):
        read_all(manager, fresh, b"s")
    manager.section_create(fresh, b"s", None, b"new")
    assert read_all(manager, handle, b"s") == b"old"
    assert read_all(manager, fresh, b"s") == b"new"


def test_last_close_frees_an_unlinked_instance(manager: Manager, session: int, handle: int) -> None:
    second = manager.open(session, "ckpt", None, RW)
    manager.delete(session, "ckpt")
    fresh = manager.open(session, "ckpt", attributes(), RWC)
    assert manager.reserved_bytes == 2000
    manager.close(handle)
    assert manager.reserved_bytes == 2000
    manager.close(second)
    assert manager.reserved_bytes == 1000
    assert manager.status_get(fresh).number_of_sections == 0
    manager.open(session, "ckpt", None, RW)  # the name still leads to the fresh one


def test_delete_without_openers_frees_at_once(
    manager: Manager, clock: FakeClock, session: int, handle: int
) -> None:
    manager.close(handle)  # retention timer (60 s) running
    manager.delete(session, "ckpt")
    assert manager.reserved_bytes == 0
    assert clock.pending() == []


def test_delete_of_a_missing_name_does_not_exist(manager: Manager, session: int) -> None:
    with fails(ErrorCode.NOT_EXIST):
        manager.delete(session, "nope")


# -- retention ------------------------------------------------------------------


def exists(manager: Manager, name: str = "ckpt") -> bool:
    return name in manager.checkpoints


def test_retention_timer_starts_at_last_close(
    manager: Manager, clock: FakeClock, session: int, handle: int
) -> None:
    second = manager.open(session, "ckpt", None, RW)
    manager.close(handle)
    clock.advance(120)
    assert exists(manager)
    manager.close(second)
    clock.advance(59.9)
    assert exists(manager)
    clock.advance(0.1)
    assert not exists(manager)
    assert manager.reserved_bytes == 0
    with fails(ErrorCode.NOT_EXIST):
        manager.open(session, "ckpt", None, RW)


def test_reopen_cancels_retention(
    manager: Manager, clock: FakeClock, session: int, handle: int
) -> None:
    manager.section_create(handle, b"s", None, b"kept")
    manager.close(handle)
    clock.advance(30)
    again = manager.open(session, "ckpt", None, RW)
    clock.advance(3600)
    assert read_all(manager, again, b"s") == b"kept"


def test_reopen_restarts_retention_from_the_next_close(
    manager: Manager, clock: FakeClock, session: int, handle: int
) -> None:
    manager.close(handle)  # would fire at 60
    clock.advance(30)
    again = manager.open(session, "ckpt", None, RW)
    clock.advance(20)
    manager.close(again)  # fires at 110
    clock.advance(59)
    assert exists(manager)
    clock.advance(1)
    assert not exists(manager)


def test_retention_zero_deletes_at_last_close(manager: Manager, session: int) -> None:
    h = manager.open(session, "ckpt", attributes(retention=0.0), RWC)
    manager.close(h)
    assert not exists(manager)
    assert manager.reserved_bytes == 0


def test_retention_forever_never_deletes(manager: Manager, clock: FakeClock, session: int) -> None:
    h = manager.open(session, "ckpt", attributes(retention=None), RWC)
    manager.close(h)
    clock.advance(10 * 365 * 86400)
    assert exists(manager)


def test_retention_set_after_unlink_is_a_bad_operation(
    manager: Manager, session: int, handle: int
) -> None:
    manager.delete(session, "ckpt")
    with fails(ErrorCode.BAD_OPERATION):
        manager.retention_duration_set(handle, round(10.0 * S))


def test_retention_set_changes_the_next_timer(
    manager: Manager, clock: FakeClock, session: int, handle: int
) -> None:
    manager.retention_duration_set(handle, round(5.0 * S))
    manager.close(handle)
    clock.advance(5)
    assert not exists(manager)


def test_retention_set_to_forever_keeps_the_checkpoint(
    manager: Manager, clock: FakeClock, session: int, handle: int
) -> None:
    manager.retention_duration_set(handle, None)
    manager.close(handle)
    clock.advance(3600)
    assert exists(manager)


# -- StatusGet --------------------------------------------------------------------


def test_status_get_reports_attributes_memory_and_sections(manager: Manager, handle: int) -> None:
    manager.section_create(handle, b"a", None, b"12345")
    manager.section_create(handle, b"b", None, b"")
    manager.write(handle, [WriteElement(b"b", b"xyz", 2)])
    manager.retention_duration_set(handle, round(7.0 * S))
    status = manager.status_get(handle)
    assert status.attributes == attributes(retention=7.0)
    assert status.memory_used == 10  # 5 + 2 zeros + 3
    assert status.number_of_sections == 2
