"""SectionCreate, SectionDelete, SectionExpirationTimeSet and expiry."""

from __future__ import annotations

from cps.server.core.errors import ErrorCode
from cps.server.core.types import DEFAULT_SECTION_ID

from .conftest import RWC, START, FakeClock, Manager, S, attributes, fails, read_all


def section_ids(manager: Manager, handle: int) -> set[bytes]:
    return set(manager.replica(handle).sections)


def test_create_with_the_callers_id(manager: Manager, handle: int) -> None:
    assert manager.section_create(handle, b"mine", None, b"data") == b"mine"
    assert read_all(manager, handle, b"mine") == b"data"


def test_create_with_a_generated_id(manager: Manager, handle: int) -> None:
    first = manager.section_create(handle, None, None, b"one")
    second = manager.section_create(handle, None, None, b"two")
    assert first != second
    assert first and second
    assert read_all(manager, handle, first) == b"one"
    assert read_all(manager, handle, second) == b"two"


def test_create_beyond_max_sections_has_no_space(manager: Manager, session: int) -> None:
    h = manager.open(session, "c", attributes(max_sections=2, checkpoint_size=200), RWC)
    manager.section_create(h, b"a", None, b"")
    manager.section_create(h, None, None, b"")
    with fails(ErrorCode.NO_SPACE):
        manager.section_create(h, b"c", None, b"")
    with fails(ErrorCode.NO_SPACE):
        manager.section_create(h, None, None, b"")
    assert manager.status_get(h).number_of_sections == 2


def test_create_of_an_existing_id_already_exists(manager: Manager, handle: int) -> None:
    manager.section_create(handle, b"s", None, b"first")
    with fails(ErrorCode.ALREADY_EXIST):
        manager.section_create(handle, b"s", None, b"second")
    assert read_all(manager, handle, b"s") == b"first"


def test_id_longer_than_max_section_id_size_is_invalid(manager: Manager, handle: int) -> None:
    with fails(ErrorCode.INVALID_PARAM):
        manager.section_create(handle, b"123456789", None, b"")
    manager.section_create(handle, b"12345678", None, b"")  # exactly 8 bytes


def test_initial_data_above_max_section_size_is_invalid(manager: Manager, handle: int) -> None:
    with fails(ErrorCode.INVALID_PARAM):
        manager.section_create(handle, b"s", None, bytes(101))
    assert section_ids(manager, handle) == set()
    manager.section_create(handle, b"s", None, bytes(100))


def test_create_in_a_single_section_checkpoint_already_exists(
    manager: Manager, session: int
) -> None:
    h = manager.open(session, "one", attributes(max_sections=1, checkpoint_size=100), RWC)
    with fails(ErrorCode.ALREADY_EXIST):
        manager.section_create(h, b"s", None, b"")
    with fails(ErrorCode.ALREADY_EXIST):
        manager.section_create(h, None, None, b"")


def test_initial_data_beyond_checkpoint_size_has_no_space(manager: Manager, session: int) -> None:
    h = manager.open(session, "c", attributes(checkpoint_size=150), RWC)
    manager.section_create(h, b"a", None, bytes(100))
    with fails(ErrorCode.NO_SPACE):
        manager.section_create(h, b"b", None, bytes(51))
    manager.section_create(h, b"b", None, bytes(50))
    assert manager.status_get(h).memory_used == 150


def test_delete_removes_the_section_and_its_bytes(manager: Manager, handle: int) -> None:
    manager.section_create(handle, b"a", None, b"12345")
    manager.section_create(handle, b"b", None, b"67")
    manager.section_delete(handle, b"a")
    with fails(ErrorCode.NOT_EXIST):
        read_all(manager, handle, b"a")
    status = manager.status_get(handle)
    assert (status.number_of_sections, status.memory_used) == (1, 2)


def test_the_default_section_cannot_be_deleted(manager: Manager, session: int) -> None:
    h = manager.open(session, "one", attributes(max_sections=1, checkpoint_size=100), RWC)
    with fails(ErrorCode.INVALID_PARAM):
        manager.section_delete(h, DEFAULT_SECTION_ID)
    assert read_all(manager, h, DEFAULT_SECTION_ID) == b""


def test_delete_of_a_missing_section_does_not_exist(manager: Manager, handle: int) -> None:
    with fails(ErrorCode.NOT_EXIST):
        manager.section_delete(handle, b"nope")


def test_the_default_section_gets_no_expiration_time(manager: Manager, session: int) -> None:
    h = manager.open(session, "one", attributes(max_sections=1, checkpoint_size=100), RWC)
    with fails(ErrorCode.INVALID_PARAM):
        manager.section_expiration_time_set(h, DEFAULT_SECTION_ID, START + 10 * S)


def test_expiration_time_set_of_a_missing_section_does_not_exist(
    manager: Manager, handle: int
) -> None:
    with fails(ErrorCode.NOT_EXIST):
        manager.section_expiration_time_set(handle, b"nope", START + 10 * S)


# -- expiry ---------------------------------------------------------------------


def test_a_section_expires_at_its_expiration_time(
    manager: Manager, clock: FakeClock, handle: int
) -> None:
    manager.section_create(handle, b"short", START + 10 * S, b"12345")
    manager.section_create(handle, b"forever", None, b"")
    clock.advance(9.9)
    assert section_ids(manager, handle) == {b"short", b"forever"}
    clock.advance(0.1)
    assert section_ids(manager, handle) == {b"forever"}
    assert manager.status_get(handle).memory_used == 0


def test_expiration_time_set_postpones_expiry(
    manager: Manager, clock: FakeClock, handle: int
) -> None:
    manager.section_create(handle, b"s", START + 10 * S, b"")
    manager.section_expiration_time_set(handle, b"s", START + 30 * S)
    clock.advance(29)
    assert b"s" in section_ids(manager, handle)
    clock.advance(1)
    assert b"s" not in section_ids(manager, handle)


def test_expiration_time_set_brings_expiry_forward(
    manager: Manager, clock: FakeClock, handle: int
) -> None:
    manager.section_create(handle, b"s", START + 100 * S, b"")
    manager.section_expiration_time_set(handle, b"s", START + 5 * S)
    clock.advance(5)
    assert b"s" not in section_ids(manager, handle)


def test_expiration_time_set_to_never_stops_expiry(
    manager: Manager, clock: FakeClock, handle: int
) -> None:
    manager.section_create(handle, b"s", START + 10 * S, b"")
    manager.section_expiration_time_set(handle, b"s", None)
    clock.advance(3600)
    assert b"s" in section_ids(manager, handle)


def test_expiration_time_set_makes_a_forever_section_expire(
    manager: Manager, clock: FakeClock, handle: int
) -> None:
    manager.section_create(handle, b"s", None, b"")
    manager.section_expiration_time_set(handle, b"s", START + 10 * S)
    clock.advance(10)
    assert b"s" not in section_ids(manager, handle)


def test_an_old_timer_does_not_expire_a_recreated_section(
    manager: Manager, clock: FakeClock, handle: int
) -> None:
    manager.section_create(handle, b"s", START + 10 * S, b"old")
    manager.section_delete(handle, b"s")
    manager.section_create(handle, b"s", None, b"new")
    clock.advance(20)
    assert read_all(manager, handle, b"s") == b"new"


# -- generated ids ----------------------------------------------------------------


def test_a_generated_id_is_not_reused_after_delete(manager: Manager, handle: int) -> None:
    first = manager.section_create(handle, None, None, b"")
    manager.section_delete(handle, first)
    second = manager.section_create(handle, None, None, b"")
    assert second != first


def test_a_generated_id_is_not_reused_after_expiry(
    manager: Manager, clock: FakeClock, handle: int
) -> None:
    first = manager.section_create(handle, None, START + 1 * S, b"")
    clock.advance(1)
    assert manager.section_create(handle, None, None, b"") != first


def test_generated_ids_skip_ids_the_application_chose(manager: Manager, handle: int) -> None:
    chosen = {str(n).encode() for n in range(1, 6)}
    for section_id in chosen:
        manager.section_create(handle, section_id, None, b"")
    generated = {manager.section_create(handle, None, None, b"") for _ in range(5)}
    assert generated.isdisjoint(chosen)
    assert len(generated) == 5
    assert len(section_ids(manager, handle)) == 10


def test_an_explicit_empty_id_is_invalid(manager: Manager, handle: int) -> None:
    with fails(ErrorCode.INVALID_PARAM):
        manager.section_create(handle, DEFAULT_SECTION_ID, None, b"")


def test_a_generated_id_longer_than_max_section_id_size_has_no_space(
    manager: Manager, session: int
) -> None:
    h = manager.open(session, "c", attributes(max_section_id_size=1, max_sections=20), RWC)
    generated = [manager.section_create(h, None, None, b"") for _ in range(9)]
    assert all(len(section_id) == 1 for section_id in generated)
    with fails(ErrorCode.NO_SPACE):
        manager.section_create(h, None, None, b"")
    manager.section_create(h, b"x", None, b"")
