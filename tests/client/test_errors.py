"""Typed exceptions: the mapping from docs/errors.md, and real failures."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import grpc
import pytest

from cps.client import (
    AlreadyExistError,
    BadFlagError,
    BadOperationError,
    CkptError,
    CreationAttributes,
    CreationFlags,
    InvalidHandleError,
    InvalidParamError,
    NoActiveReplicaError,
    NoSpaceError,
    NotExistError,
    OpenFlags,
    OpNotPermittedError,
    ReadElement,
    Session,
    TryAgainError,
    Version,
    VersionMismatchError,
    WriteElement,
)
from cps.client.errors import ERRORS_BY_REASON, error_for

ERRORS_DOC = Path(__file__).parents[2] / "docs" / "errors.md"


def documented_errors() -> list[tuple[str, str]]:
    """(seed name, gRPC code name) of each row of the table in docs/errors.md."""
    rows = re.findall(r"^\| `(CL_[A-Z_]+)` \| ([A-Z_]+) \|", ERRORS_DOC.read_text(), re.MULTILINE)
    assert len(rows) >= 18, rows
    return rows


@pytest.mark.parametrize(("reason", "code"), documented_errors())
def test_every_documented_error_has_its_own_class(reason: str, code: str) -> None:
    cls = ERRORS_BY_REASON[reason]
    assert cls is not CkptError
    error = error_for(reason, "text")
    assert type(error) is cls
    assert (error.reason, error.code, error.message) == (reason, grpc.StatusCode[code], "text")


def test_classes_are_distinct_and_named_after_the_seed() -> None:
    assert len(set(ERRORS_BY_REASON.values())) == len(ERRORS_BY_REASON)
    assert NoSpaceError.reason == "CL_CKPT_ERR_NO_SPACE"
    assert AlreadyExistError.reason == "CL_ERR_ALREADY_EXIST"
    assert OpNotPermittedError.reason == "CL_CKPT_ERR_OP_NOT_PERMITTED"


def test_unknown_reason_keeps_its_name_and_no_active_replica_is_a_not_exist() -> None:
    unknown = error_for("CL_CKPT_ERR_FROM_THE_FUTURE", "later")
    assert type(unknown) is CkptError
    assert unknown.reason == "CL_CKPT_ERR_FROM_THE_FUTURE"
    plain = error_for("CL_CKPT_ERR_NOT_EXIST", "gone")
    assert type(plain) is NotExistError
    replica = error_for("CL_CKPT_ERR_NOT_EXIST", "x", metadata={"cause": "no_active_replica"})
    assert type(replica) is NoActiveReplicaError
    assert isinstance(replica, NotExistError)
    assert replica.metadata["cause"] == "no_active_replica"


def test_open_of_a_missing_checkpoint(session: Session, name: str) -> None:
    with pytest.raises(NotExistError) as caught:
        session.open(name)
    error = caught.value
    assert not isinstance(error, grpc.RpcError)
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "CL_CKPT_ERR_NOT_EXIST"
    assert name in error.message
    assert error.vector_index is None


def test_section_errors(session: Session, name: str) -> None:
    with session.open(name, CreationAttributes(max_sections=2, max_section_size=8)) as checkpoint:
        checkpoint.section_create(b"a")
        with pytest.raises(AlreadyExistError):
            checkpoint.section_create(b"a")
        checkpoint.section_create(b"b")
        with pytest.raises(NoSpaceError) as caught:
            checkpoint.section_create(b"c")
        assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_failing_write_has_the_vector_index_and_writes_nothing(session: Session, name: str) -> None:
    attributes = CreationAttributes(max_sections=4, max_section_size=8)
    with session.open(name, attributes) as checkpoint:
        checkpoint.section_create(b"a", b"aaaa")
        with pytest.raises(NotExistError) as missing:
            checkpoint.write([(b"a", b"X"), (b"a", b"Y", 1), WriteElement(b"nope", b"Z")])
        assert missing.value.vector_index == 2
        assert missing.value.metadata["erroneous_vector_index"] == "2"
        with pytest.raises(InvalidParamError) as too_far:
            checkpoint.write([(b"a", b"X"), (b"a", b"Y", 8)])
        assert too_far.value.vector_index == 1
        assert checkpoint.read(b"a") == b"aaaa"
        with pytest.raises(InvalidParamError) as read_past:
            checkpoint.read_vector([b"a", ReadElement(b"a", offset=5)])
        assert read_past.value.vector_index == 1


def test_flags_permissions_and_operations(session: Session, name: str) -> None:
    both_modes = CreationFlags.WR_ALL_REPLICAS | CreationFlags.WR_ACTIVE_REPLICA
    with pytest.raises(BadFlagError):
        session.open(name, CreationAttributes(creation_flags=both_modes))
    with pytest.raises(BadFlagError):
        session.open(name, CreationAttributes(), OpenFlags(0))
    synchronous = CreationAttributes(creation_flags=CreationFlags.WR_ALL_REPLICAS)
    with session.open(name, synchronous) as writer:
        with pytest.raises(BadOperationError):
            writer.synchronize()
        with session.open(name, flags=OpenFlags.READ) as reader:
            with pytest.raises(OpNotPermittedError) as caught:
                reader.section_create(b"a")
            assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED


def test_no_active_replica(session: Session, name: str) -> None:
    collocated = CreationFlags.WR_ACTIVE_REPLICA | CreationFlags.CHECKPOINT_COLLOCATED
    with session.open(name, CreationAttributes(creation_flags=collocated)) as checkpoint:
        with pytest.raises(NoActiveReplicaError) as caught:
            checkpoint.status()
        assert caught.value.reason == "CL_CKPT_ERR_NOT_EXIST"
        checkpoint.active_replica_set()
        assert checkpoint.status().number_of_sections == 0


def test_closed_handle_is_invalid(session: Session, name: str) -> None:
    checkpoint = session.open(name, CreationAttributes())
    checkpoint.close()
    with pytest.raises(InvalidHandleError) as caught:
        checkpoint.status()
    assert caught.value.code == grpc.StatusCode.NOT_FOUND


def test_version_mismatch_says_what_the_node_supports(address: str) -> None:
    with pytest.raises(VersionMismatchError) as caught:
        Session.connect(address, version=Version("B", 9, 0))
    assert caught.value.supported == Version("B", 1, 1)
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_unreachable_node_is_try_again() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TryAgainError) as caught:
        Session.connect(f"127.0.0.1:{port}", timeout=5)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.reason == "CL_ERR_TRY_AGAIN"
