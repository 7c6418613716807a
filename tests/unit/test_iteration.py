"""SectionIterationInitialize / Next / Finalize and the five filters."""

from __future__ import annotations

import pytest

from cps.server.core.errors import ErrorCode
from cps.server.core.types import SectionsChosen, SectionState

from .conftest import START, FakeClock, Manager, S, fails

EARLY = START + 10 * S
LATE = START + 20 * S


@pytest.fixture
def sections(manager: Manager, handle: int) -> int:
    """Sections: "forever" (never expires), "early", "late" and "broken"
    (never expires, CORRUPTED). Returns the handle."""
    manager.section_create(handle, b"forever", None, b"f")
    manager.section_create(handle, b"early", EARLY, b"e")
    manager.section_create(handle, b"late", LATE, b"l")
    manager.section_create(handle, b"broken", None, b"b")
    # Only a partial replicated write could do this.
    manager.replica(handle).sections[b"broken"].state = SectionState.CORRUPTED
    return handle


def collect(manager: Manager, iteration: int) -> set[bytes]:
    found: set[bytes] = set()
    while (descriptor := manager.iteration_next(iteration)) is not None:
        assert descriptor.section_id not in found
        found.add(descriptor.section_id)
    return found


def chosen(
    manager: Manager, handle: int, which: SectionsChosen, time: float | None = None
) -> set[bytes]:
    iteration = manager.iteration_initialize(handle, which, time)
    found = collect(manager, iteration)
    manager.iteration_finalize(iteration)
    return found


def test_any_returns_every_section_in_creation_order(manager: Manager, sections: int) -> None:
    iteration = manager.iteration_initialize(sections, SectionsChosen.ANY, None)
    found = []
    while (descriptor := manager.iteration_next(iteration)) is not None:
        found.append(descriptor.section_id)
    assert found == [b"forever", b"early", b"late", b"broken"]


def test_forever_returns_the_never_expiring_sections(manager: Manager, sections: int) -> None:
    assert chosen(manager, sections, SectionsChosen.FOREVER) == {b"forever", b"broken"}


def test_leq_excludes_never_expiring_sections(manager: Manager, sections: int) -> None:
    leq = SectionsChosen.LEQ_EXPIRATION_TIME
    assert chosen(manager, sections, leq, EARLY) == {b"early"}
    assert chosen(manager, sections, leq, LATE) == {b"early", b"late"}
    assert chosen(manager, sections, leq, EARLY - 1) == set()


def test_geq_includes_never_expiring_sections(manager: Manager, sections: int) -> None:
    geq = SectionsChosen.GEQ_EXPIRATION_TIME
    assert chosen(manager, sections, geq, LATE) == {b"forever", b"broken", b"late"}
    assert chosen(manager, sections, geq, LATE + 1) == {b"forever", b"broken"}
    assert chosen(manager, sections, geq, EARLY) == {b"forever", b"broken", b"early", b"late"}


def test_corrupted_returns_the_corrupted_sections(manager: Manager, sections: int) -> None:
    assert chosen(manager, sections, SectionsChosen.CORRUPTED) == {b"broken"}


@pytest.mark.parametrize(
    "which", [SectionsChosen.LEQ_EXPIRATION_TIME, SectionsChosen.GEQ_EXPIRATION_TIME]
)
def test_expiration_filters_need_a_time(
    manager: Manager, sections: int, which: SectionsChosen
) -> None:
    with fails(ErrorCode.INVALID_PARAM):
        manager.iteration_initialize(sections, which, None)
    assert manager.handle(sections).iterations == set()


def test_next_returns_descriptors(manager: Manager, handle: int) -> None:
    manager.section_create(handle, b"s", EARLY, b"abc")
    iteration = manager.iteration_initialize(handle, SectionsChosen.ANY, None)
    descriptor = manager.iteration_next(iteration)
    assert descriptor is not None
    assert descriptor.section_id == b"s"
    assert descriptor.expiration_time == EARLY
    assert descriptor.section_size == 3
    assert descriptor.section_state is SectionState.VALID
    assert descriptor.last_update == START


def test_next_after_the_end_returns_none(manager: Manager, sections: int) -> None:
    iteration = manager.iteration_initialize(sections, SectionsChosen.CORRUPTED, None)
    assert manager.iteration_next(iteration) is not None
    assert manager.iteration_next(iteration) is None
    assert manager.iteration_next(iteration) is None


def test_a_section_deleted_after_initialize_is_skipped(manager: Manager, sections: int) -> None:
    iteration = manager.iteration_initialize(sections, SectionsChosen.ANY, None)
    manager.section_delete(sections, b"late")
    assert collect(manager, iteration) == {b"forever", b"early", b"broken"}


def test_a_section_expired_after_initialize_is_skipped(
    manager: Manager, clock: FakeClock, sections: int
) -> None:
    iteration = manager.iteration_initialize(sections, SectionsChosen.ANY, None)
    clock.advance_ns(EARLY - START)
    assert collect(manager, iteration) == {b"forever", b"late", b"broken"}


def test_iterations_die_with_their_handle(manager: Manager, session: int, sections: int) -> None:
    first = manager.iteration_initialize(sections, SectionsChosen.ANY, None)
    second = manager.iteration_initialize(sections, SectionsChosen.FOREVER, None)
    manager.close(sections)
    for iteration in (first, second):
        with fails(ErrorCode.INVALID_HANDLE):
            manager.iteration_next(iteration)
        with fails(ErrorCode.INVALID_HANDLE):
            manager.iteration_finalize(iteration)


def test_unknown_iteration_handle_is_invalid(manager: Manager, sections: int) -> None:
    with fails(ErrorCode.INVALID_HANDLE):
        manager.iteration_next(424242)
    iteration = manager.iteration_initialize(sections, SectionsChosen.ANY, None)
    manager.iteration_finalize(iteration)
    with fails(ErrorCode.INVALID_HANDLE):
        manager.iteration_next(iteration)
    with fails(ErrorCode.INVALID_HANDLE):
        manager.iteration_finalize(iteration)
