"""CheckpointWrite, SectionOverwrite, CheckpointRead (iovectors), Synchronize,
ActiveReplicaSet and the collocated checkpoint's missing active replica."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cps.server.core.errors import ErrorCode
from cps.server.core.events import SynchronizeCompleted
from cps.server.core.types import (
    CreationFlag,
    ReadElement,
    SectionsChosen,
    SectionState,
    WriteElement,
)

from .conftest import RWC, Manager, attributes, fails, read_all


@pytest.fixture
def abc(manager: Manager, handle: int) -> int:
    """Sections a="aaaa", b="bbbb", c="" in the default checkpoint; the handle."""
    manager.section_create(handle, b"a", None, b"aaaa")
    manager.section_create(handle, b"b", None, b"bbbb")
    manager.section_create(handle, b"c", None, b"")
    return handle


def contents(manager: Manager, handle: int) -> dict[bytes, bytes]:
    return {s: read_all(manager, handle, s) for s in (b"a", b"b", b"c")}


# -- write ----------------------------------------------------------------------


def test_write_updates_several_sections_and_offsets(manager: Manager, abc: int) -> None:
    manager.write(
        abc,
        [
            WriteElement(b"a", b"XY", 1),
            WriteElement(b"b", b"Z", 0),
            WriteElement(b"a", b"W", 3),
        ],
    )
    assert contents(manager, abc) == {b"a": b"aXYW", b"b": b"Zbbb", b"c": b""}


def test_write_grows_sections(manager: Manager, abc: int) -> None:
    manager.write(abc, [WriteElement(b"a", b"XYZ", 3), WriteElement(b"c", b"new", 0)])
    assert contents(manager, abc)[b"a"] == b"aaaXYZ"
    assert contents(manager, abc)[b"c"] == b"new"
    assert manager.status_get(abc).memory_used == 6 + 4 + 3


def test_a_hole_past_the_end_reads_as_zeros(manager: Manager, abc: int) -> None:
    manager.write(abc, [WriteElement(b"a", b"end", 7)])
    assert read_all(manager, abc, b"a") == b"aaaa\0\0\0end"
    assert manager.status_get(abc).memory_used == 10 + 4


FAILING_ELEMENTS: dict[str, tuple[WriteElement, ErrorCode]] = {
    "missing-section": (WriteElement(b"nope", b"x", 0), ErrorCode.NOT_EXIST),
    "past-max-section-size": (WriteElement(b"c", b"xx", 99), ErrorCode.INVALID_PARAM),
    "beyond-checkpoint-size": (WriteElement(b"c", bytes(100), 0), ErrorCode.NO_SPACE),
}


@pytest.mark.parametrize("bad, code", FAILING_ELEMENTS.values(), ids=list(FAILING_ELEMENTS.keys()))
def test_write_is_all_or_nothing(
    manager: Manager, session: int, bad: WriteElement, code: ErrorCode
) -> None:
    h = manager.open(session, "small", attributes(checkpoint_size=100), RWC)
    manager.section_create(h, b"a", None, b"aaaa")
    manager.section_create(h, b"c", None, b"")
    before = {s: read_all(manager, h, s) for s in (b"a", b"c")}
    elements = [
        WriteElement(b"a", b"XY", 0),  # changes in place
        WriteElement(b"c", bytes(10), 0),  # grows c
        bad,
        WriteElement(b"a", b"Z", 10),  # would never be reached
    ]
    with fails(code) as error:
        manager.write(h, elements)
    assert error.value.vector_index == 2
    assert {s: read_all(manager, h, s) for s in (b"a", b"c")} == before
    assert manager.status_get(h).memory_used == 4


def test_write_counts_growth_of_earlier_elements_against_checkpoint_size(
    manager: Manager, session: int
) -> None:
    h = manager.open(session, "small", attributes(checkpoint_size=150), RWC)
    manager.section_create(h, b"a", None, b"")
    manager.section_create(h, b"b", None, b"")
    with fails(ErrorCode.NO_SPACE) as error:
        manager.write(h, [WriteElement(b"a", bytes(80), 0), WriteElement(b"b", bytes(80), 0)])
    assert error.value.vector_index == 1
    assert manager.status_get(h).memory_used == 0


def test_empty_iovector_is_invalid(manager: Manager, abc: int) -> None:
    with fails(ErrorCode.INVALID_PARAM):
        manager.write(abc, [])
    with fails(ErrorCode.INVALID_PARAM):
        manager.read(abc, [])


# -- overwrite --------------------------------------------------------------------


def test_overwrite_sets_the_new_size(manager: Manager, abc: int) -> None:
    manager.overwrite(abc, b"a", b"longer data")
    assert read_all(manager, abc, b"a") == b"longer data"
    manager.overwrite(abc, b"a", b"s")
    assert read_all(manager, abc, b"a") == b"s"
    manager.overwrite(abc, b"b", b"")
    assert read_all(manager, abc, b"b") == b""
    assert manager.status_get(abc).memory_used == 1


def test_overwrite_makes_a_corrupted_section_valid(manager: Manager, abc: int) -> None:
    section = manager.replica(abc).sections[b"a"]
    section.state = SectionState.CORRUPTED
    manager.overwrite(abc, b"a", b"repaired")
    assert section.state is SectionState.VALID
    iteration = manager.iteration_initialize(abc, SectionsChosen.CORRUPTED, None)
    assert manager.iteration_next(iteration) is None


def test_overwrite_errors(manager: Manager, session: int) -> None:
    h = manager.open(session, "small", attributes(checkpoint_size=150), RWC)
    manager.section_create(h, b"a", None, bytes(100))
    manager.section_create(h, b"b", None, b"")
    with fails(ErrorCode.NOT_EXIST):
        manager.overwrite(h, b"nope", b"x")
    with fails(ErrorCode.INVALID_PARAM):
        manager.overwrite(h, b"b", bytes(101))
    with fails(ErrorCode.NO_SPACE):
        manager.overwrite(h, b"b", bytes(51))
    assert read_all(manager, h, b"b") == b""


# -- read -------------------------------------------------------------------------


def test_read_with_offsets_and_sizes(manager: Manager, abc: int) -> None:
    manager.overwrite(abc, b"a", b"0123456789")
    got = manager.read(
        abc,
        [
            ReadElement(b"a", 2, 3),
            ReadElement(b"a", 4, 0),  # size 0: to the end
            ReadElement(b"b", 0, 0),
            ReadElement(b"a", 10, 0),  # at the end: nothing
            ReadElement(b"a", 8, 5),  # short read at the end
        ],
    )
    assert got == [b"234", b"456789", b"bbbb", b"", b"89"]


def test_read_past_the_end_is_invalid(manager: Manager, abc: int) -> None:
    with fails(ErrorCode.INVALID_PARAM) as error:
        manager.read(abc, [ReadElement(b"a", 0, 0), ReadElement(b"b", 5, 1)])
    assert error.value.vector_index == 1


def test_read_above_max_section_size_is_invalid(manager: Manager, abc: int) -> None:
    with fails(ErrorCode.INVALID_PARAM) as error:
        manager.read(abc, [ReadElement(b"a", 0, 100), ReadElement(b"b", 0, 101)])
    assert error.value.vector_index == 1


def test_read_of_a_missing_section_does_not_exist(manager: Manager, abc: int) -> None:
    with fails(ErrorCode.NOT_EXIST) as error:
        manager.read(abc, [ReadElement(b"a", 0, 0), ReadElement(b"nope", 0, 0)])
    assert error.value.vector_index == 1


# -- synchronize ------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode", [CreationFlag.WR_ACTIVE_REPLICA, CreationFlag.WR_ACTIVE_REPLICA_WEAK]
)
def test_synchronize_asynchronous_checkpoints(
    manager: Manager, session: int, mode: CreationFlag
) -> None:
    h = manager.open(session, "async", attributes(mode), RWC)
    manager.synchronize(h)
    manager.synchronize_async(h, 77)
    assert manager.take_events(session) == [SynchronizeCompleted(77, h, None)]


def test_synchronize_refused_on_synchronous_checkpoints(manager: Manager, session: int) -> None:
    h = manager.open(session, "sync", attributes(CreationFlag.WR_ALL_REPLICAS), RWC)
    with fails(ErrorCode.BAD_OPERATION):
        manager.synchronize(h)
    with fails(ErrorCode.BAD_OPERATION):
        manager.synchronize_async(h, 77)
    assert manager.take_events(session) == []


# -- active replica -----------------------------------------------------------------

COLLOCATED = attributes(CreationFlag.WR_ACTIVE_REPLICA, CreationFlag.CHECKPOINT_COLLOCATED)


@pytest.mark.parametrize(
    "mode",
    [
        CreationFlag.WR_ALL_REPLICAS,
        CreationFlag.WR_ACTIVE_REPLICA,
        CreationFlag.WR_ACTIVE_REPLICA_WEAK,
    ],
)
def test_active_replica_set_refused_unless_collocated(
    manager: Manager, session: int, mode: CreationFlag
) -> None:
    h = manager.open(session, "c", attributes(mode), RWC)
    with fails(ErrorCode.BAD_OPERATION):
        manager.active_replica_set(h)


def test_active_replica_set_refused_after_unlink(manager: Manager, session: int) -> None:
    h = manager.open(session, "c", COLLOCATED, RWC)
    manager.delete(session, "c")
    with fails(ErrorCode.BAD_OPERATION):
        manager.active_replica_set(h)


NEEDS_ACTIVE_REPLICA: dict[str, Callable[[Manager, int], object]] = {
    "status_get": lambda m, h: m.status_get(h),
    "section_create": lambda m, h: m.section_create(h, b"new", None, b""),
    "write": lambda m, h: m.write(h, [WriteElement(b"s", b"x", 0)]),
    "overwrite": lambda m, h: m.overwrite(h, b"s", b"x"),
    "read": lambda m, h: m.read(h, [ReadElement(b"s", 0, 0)]),
    "iteration_initialize": lambda m, h: m.iteration_initialize(h, SectionsChosen.ANY, None),
}


@pytest.mark.parametrize(
    "call", NEEDS_ACTIVE_REPLICA.values(), ids=list(NEEDS_ACTIVE_REPLICA.keys())
)
def test_collocated_checkpoint_has_no_active_replica_until_set(
    manager: Manager, session: int, call: Callable[[Manager, int], object]
) -> None:
    h = manager.open(session, "c", COLLOCATED, RWC)
    with fails(ErrorCode.NOT_EXIST) as error:
        call(manager, h)
    assert error.value.metadata["cause"] == "no_active_replica"
    manager.active_replica_set(h)
    manager.section_create(h, b"s", None, b"")
    call(manager, h)


def test_synchronous_collocated_checkpoint_has_an_active_replica_at_once(
    manager: Manager, session: int
) -> None:
    """Seed 2.2.2: the local replica is the active one for every checkpoint
    but an asynchronous collocated one."""
    sync_collocated = attributes(CreationFlag.WR_ALL_REPLICAS, CreationFlag.CHECKPOINT_COLLOCATED)
    h = manager.open(session, "c", sync_collocated, RWC)
    manager.section_create(h, b"s", None, b"data")
    assert manager.status_get(h).number_of_sections == 1


def test_active_replica_set_refused_on_synchronous_collocated_checkpoints(
    manager: Manager, session: int
) -> None:
    """SAF AIS (saCkptActiveReplicaSet): BAD_OPERATION unless the checkpoint
    is an asynchronous collocated one."""
    sync_collocated = attributes(CreationFlag.WR_ALL_REPLICAS, CreationFlag.CHECKPOINT_COLLOCATED)
    h = manager.open(session, "c", sync_collocated, RWC)
    with fails(ErrorCode.BAD_OPERATION):
        manager.active_replica_set(h)
