"""Checkpoint handles against a real node: context managers, every per-handle
function, and the section iterator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cps.client import (
    DEFAULT_SECTION_ID,
    FOREVER,
    NEVER,
    BadHandleError,
    CheckpointStatus,
    CreationAttributes,
    CreationFlags,
    InvalidHandleError,
    NotExistError,
    OpenFlags,
    ReadElement,
    ReadResult,
    SectionsChosen,
    SectionState,
    Session,
    WriteElement,
)
from cps.v1 import checkpoint_service_pb2 as pb
from cps.v1 import checkpoint_service_pb2_grpc as pb_grpc
from tests.client.helpers import node_reason

Stub = pb_grpc.CheckpointServiceStub


def node_status(stub: Stub, handle: int) -> str:
    """ "" if the node knows the checkpoint handle, else its error."""
    return node_reason(
        lambda: stub.CheckpointStatusGet(pb.CheckpointStatusGetRequest(checkpoint_handle=handle))
    )


def node_next(stub: Stub, iteration: int) -> str:
    return node_reason(
        lambda: stub.SectionIterationNext(
            pb.SectionIterationNextRequest(section_iteration_handle=iteration)
        )
    )


def test_with_block_closes_the_handle_on_the_node(session: Session, name: str, stub: Stub) -> None:
    with session.open(name, CreationAttributes()) as checkpoint:
        assert node_status(stub, checkpoint.handle) == ""
        assert not checkpoint.closed
    assert checkpoint.closed
    assert node_status(stub, checkpoint.handle) == "CL_CKPT_ERR_INVALID_HANDLE"
    checkpoint.close()  # closing again does nothing


def test_with_block_closes_the_handle_when_the_body_fails(
    session: Session, name: str, stub: Stub
) -> None:
    with pytest.raises(KeyError), session.open(name, CreationAttributes()) as checkpoint:
        raise KeyError("body")
    assert node_status(stub, checkpoint.handle) == "CL_CKPT_ERR_INVALID_HANDLE"


def test_session_with_block_finalizes_and_closes_its_handles(address: str, stub: Stub) -> None:
    with Session.connect(address) as session:
        checkpoint = session.open("finalized-with-session", CreationAttributes())
        assert node_status(stub, checkpoint.handle) == ""
    assert session.finalized and checkpoint.closed
    assert node_status(stub, checkpoint.handle) == "CL_CKPT_ERR_INVALID_HANDLE"
    finalize_again = node_reason(
        lambda: stub.Finalize(pb.FinalizeRequest(service_handle=session.handle))
    )
    assert finalize_again == "CL_CKPT_ERR_BAD_HANDLE"
    with pytest.raises(BadHandleError):
        session.open("finalized-with-session")
    checkpoint.close()  # closed by finalize: nothing to do
    session.finalize()  # finalizing again does nothing


def test_status_and_retention(session: Session, name: str) -> None:
    attributes = CreationAttributes(
        max_sections=3, max_section_size=100, max_section_id_size=4, retention_duration=30
    )
    assert attributes.checkpoint_size == 300
    assert attributes.retention_duration == timedelta(seconds=30)
    with session.open(name, attributes) as checkpoint:
        checkpoint.section_create(b"a", b"12345")
        assert checkpoint.status() == CheckpointStatus(attributes, 5, 1)
        checkpoint.retention_duration_set(timedelta(minutes=2))
        assert checkpoint.status().attributes.retention_duration == timedelta(minutes=2)
        checkpoint.retention_duration_set(FOREVER)
        assert checkpoint.status().attributes.retention_duration is FOREVER


def test_zero_retention_deletes_at_last_close_and_delete_unlinks(
    session: Session, name: str
) -> None:
    with session.open(name, CreationAttributes(retention_duration=0)):
        pass
    with pytest.raises(NotExistError):
        session.open(name)
    with session.open(name, CreationAttributes()) as checkpoint:
        checkpoint.section_create(b"kept", b"data")
        session.delete(name)
        with pytest.raises(NotExistError):
            session.open(name)
        assert checkpoint.read(b"kept") == b"data"  # openers keep their access


def test_sections_data_and_generated_ids(session: Session, name: str) -> None:
    with session.open(name, CreationAttributes(max_sections=4, max_section_size=16)) as checkpoint:
        assert checkpoint.flags == OpenFlags.READ | OpenFlags.WRITE | OpenFlags.CREATE
        first = checkpoint.section_create(initial_data=b"hello")
        second = checkpoint.section_create()
        assert (first, second) == (b"1", b"2")
        checkpoint.write([WriteElement(first, b"J"), (second, b"xyz", 2)])
        assert checkpoint.read(first) == b"Jello"
        assert checkpoint.read(second) == b"\0\0xyz"  # a hole reads as zeros
        assert checkpoint.read(first, offset=1, size=3) == b"ell"
        results = checkpoint.read_vector([first, ReadElement(second, offset=3)])
        assert results == [ReadResult(first, 0, b"Jello", 5), ReadResult(second, 3, b"yz", 2)]
        checkpoint.overwrite(first, b"new")
        assert checkpoint.read(first) == b"new"
        checkpoint.section_delete(second)
        with pytest.raises(NotExistError):
            checkpoint.read(second)
        checkpoint.synchronize(timeout=5)


def test_default_section_of_a_one_section_checkpoint(session: Session, name: str) -> None:
    with session.open(name, CreationAttributes(max_sections=1, max_section_size=8)) as checkpoint:
        checkpoint.write([(DEFAULT_SECTION_ID, b"abc")])
        assert checkpoint.read() == b"abc"
        with session.open(name, flags=OpenFlags.READ) as reader:
            assert reader.read() == b"abc"


def test_sections_iterates_and_finalizes_when_exhausted(
    session: Session, name: str, stub: Stub
) -> None:
    soon = datetime.now(UTC) + timedelta(hours=1)
    with session.open(name, CreationAttributes()) as checkpoint:
        checkpoint.section_create(b"a", b"1")
        checkpoint.section_create(b"b", b"22", expiration_time=soon)
        checkpoint.section_create(b"c", b"333", expiration_time=soon.timestamp() + 60)
        iterator = checkpoint.sections()
        found = list(iterator)
        assert [(s.section_id, s.size) for s in found] == [(b"a", 1), (b"b", 2), (b"c", 3)]
        assert found[0].expiration_time is NEVER
        assert found[1].expiration_time == soon
        assert {s.state for s in found} == {SectionState.VALID}
        assert node_next(stub, iterator.handle) == "CL_CKPT_ERR_INVALID_HANDLE"
        assert list(iterator) == []

        forever = [s.section_id for s in checkpoint.sections(SectionsChosen.FOREVER)]
        assert forever == [b"a"]
        leq = checkpoint.sections(SectionsChosen.LEQ_EXPIRATION_TIME, soon)
        assert [s.section_id for s in leq] == [b"b"]
        checkpoint.section_expiration_time_set(b"b", NEVER)
        forever = [s.section_id for s in checkpoint.sections(SectionsChosen.FOREVER)]
        assert forever == [b"a", b"b"]


def test_sections_finalizes_when_left_early(session: Session, name: str, stub: Stub) -> None:
    with session.open(name, CreationAttributes()) as checkpoint:
        for section in (b"a", b"b", b"c"):
            checkpoint.section_create(section)
        with checkpoint.sections() as iterator:
            assert next(iterator).section_id == b"a"
            assert node_next(stub, iterator.handle) == ""  # still live: takes b"b"
        assert node_next(stub, iterator.handle) == "CL_CKPT_ERR_INVALID_HANDLE"
        with pytest.raises(StopIteration):
            next(iterator)


def test_closing_the_checkpoint_ends_its_iterations(session: Session, name: str) -> None:
    checkpoint = session.open(name, CreationAttributes())
    checkpoint.section_create(b"a")
    iterator = checkpoint.sections()
    checkpoint.close()
    with pytest.raises(InvalidHandleError):
        next(iterator)
    iterator.close()  # the node already finalized it with the handle


def test_collocated_needs_an_active_replica(session: Session, name: str) -> None:
    flags = CreationFlags.WR_ACTIVE_REPLICA_WEAK | CreationFlags.CHECKPOINT_COLLOCATED
    with session.open(name, CreationAttributes(creation_flags=flags)) as checkpoint:
        with pytest.raises(NotExistError):
            checkpoint.section_create(b"a")
        checkpoint.active_replica_set()
        assert checkpoint.section_create(b"a") == b"a"
        assert checkpoint.status().attributes.creation_flags == flags
