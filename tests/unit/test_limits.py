"""Server-wide limits (Limits): sessions, handles, checkpoints, reserved
bytes, iovector length."""

from __future__ import annotations

from cps.server.core.errors import ErrorCode
from cps.server.core.limits import Limits
from cps.server.core.types import ReadElement, WriteElement

from .conftest import RW, RWC, MakeManager, attributes, fails


def test_max_sessions(make_manager: MakeManager) -> None:
    manager = make_manager(Limits(max_sessions=2))
    first, _ = manager.initialize("B", 1, 1)
    manager.initialize("B", 1, 1)
    with fails(ErrorCode.NO_RESOURCE):
        manager.initialize("B", 1, 1)
    manager.finalize(first)
    manager.initialize("B", 1, 1)


def test_max_handles_per_session(make_manager: MakeManager) -> None:
    manager = make_manager(Limits(max_handles_per_session=2))
    session, _ = manager.initialize("B", 1, 1)
    first = manager.open(session, "ckpt", attributes(), RWC)
    manager.open(session, "ckpt", None, RW)
    with fails(ErrorCode.NO_RESOURCE):
        manager.open(session, "ckpt", None, RW)
    with fails(ErrorCode.NO_RESOURCE):
        manager.open(session, "other", attributes(), RWC)
    assert set(manager.checkpoints) == {"ckpt"}
    other, _ = manager.initialize("B", 1, 1)
    manager.open(other, "ckpt", None, RW)  # the limit is per session
    manager.close(first)
    manager.open(session, "ckpt", None, RW)


def test_max_checkpoints(make_manager: MakeManager) -> None:
    manager = make_manager(Limits(max_checkpoints=2))
    session, _ = manager.initialize("B", 1, 1)
    manager.open(session, "a", attributes(), RWC)
    manager.open(session, "b", attributes(), RWC)
    with fails(ErrorCode.NO_MEMORY):
        manager.open(session, "c", attributes(), RWC)
    manager.open(session, "a", attributes(), RWC)  # reopening creates nothing
    manager.delete(session, "a")  # still open: the instance still counts
    with fails(ErrorCode.NO_MEMORY):
        manager.open(session, "c", attributes(), RWC)


def test_max_checkpoints_frees_a_slot_when_a_checkpoint_goes(make_manager: MakeManager) -> None:
    manager = make_manager(Limits(max_checkpoints=1))
    session, _ = manager.initialize("B", 1, 1)
    h = manager.open(session, "a", attributes(retention=0.0), RWC)
    manager.close(h)
    manager.open(session, "b", attributes(), RWC)


def test_max_reserved_bytes(make_manager: MakeManager) -> None:
    manager = make_manager(Limits(max_reserved_bytes=2500))
    session, _ = manager.initialize("B", 1, 1)
    manager.open(session, "a", attributes(checkpoint_size=1000), RWC)
    b = manager.open(session, "b", attributes(checkpoint_size=1000), RWC)
    with fails(ErrorCode.NO_MEMORY):
        manager.open(session, "c", attributes(checkpoint_size=501), RWC)
    assert manager.reserved_bytes == 2000
    assert set(manager.checkpoints) == {"a", "b"}
    manager.open(session, "c", attributes(checkpoint_size=500), RWC)
    assert manager.reserved_bytes == 2500
    manager.delete(session, "b")
    manager.close(b)
    assert manager.reserved_bytes == 1500
    manager.open(session, "d", attributes(checkpoint_size=1000), RWC)


def test_a_checkpoint_larger_than_the_node_is_no_memory(make_manager: MakeManager) -> None:
    manager = make_manager(Limits(max_reserved_bytes=500))
    session, _ = manager.initialize("B", 1, 1)
    with fails(ErrorCode.NO_MEMORY):
        manager.open(session, "a", attributes(checkpoint_size=501), RWC)
    assert manager.reserved_bytes == 0


def test_max_iovector_elements(make_manager: MakeManager) -> None:
    manager = make_manager(Limits(max_iovector_elements=3))
    session, _ = manager.initialize("B", 1, 1)
    h = manager.open(session, "a", attributes(), RWC)
    manager.section_create(h, b"s", None, b"")
    writes = [WriteElement(b"s", b"x", i) for i in range(4)]
    reads = [ReadElement(b"s", 0, 0)] * 4
    with fails(ErrorCode.INVALID_PARAM):
        manager.write(h, writes)
    with fails(ErrorCode.INVALID_PARAM):
        manager.read(h, reads)
    assert manager.status_get(h).memory_used == 0
    manager.write(h, writes[:3])
    assert manager.read(h, reads[:3]) == [b"xxx"] * 3
