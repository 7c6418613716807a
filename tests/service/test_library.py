"""LibraryCheckpointService (seed 3.3) over a real server: every function and
error, and concurrent writers."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from cps.server.node import Node
from cps.v1 import library_service_pb2 as pb
from cps.v1 import library_service_pb2_grpc as pb_grpc
from tests.support import seed_error


@pytest.fixture()
def library(channel: grpc.Channel) -> pb_grpc.LibraryCheckpointServiceStub:
    return pb_grpc.LibraryCheckpointServiceStub(channel)


@pytest.fixture()
def handle(library: pb_grpc.LibraryCheckpointServiceStub) -> int:
    return library.LibraryInitialize(pb.LibraryInitializeRequest()).library_handle  # type: ignore[no-any-return]


def fails(call: Callable[[], Any], code: grpc.StatusCode, reason: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert seed_error(caught.value)[:2] == (code, reason)


NOT_FOUND = grpc.StatusCode.NOT_FOUND


def test_checkpoint_lifecycle(library: pb_grpc.LibraryCheckpointServiceStub, handle: int) -> None:
    name: dict[str, Any] = {"library_handle": handle, "checkpoint_name": "life"}
    exists = library.LibraryDoesCkptExist(pb.LibraryDoesCkptExistRequest(**name))
    assert not exists.exists
    assert library.LibraryCkptCreate(pb.LibraryCkptCreateRequest(**name)).created
    assert not library.LibraryCkptCreate(pb.LibraryCkptCreateRequest(**name)).created
    assert library.LibraryDoesCkptExist(pb.LibraryDoesCkptExistRequest(**name)).exists
    library.LibraryCkptDelete(pb.LibraryCkptDeleteRequest(**name))
    assert not library.LibraryDoesCkptExist(pb.LibraryDoesCkptExistRequest(**name)).exists
    fails(
        lambda: library.LibraryCkptDelete(pb.LibraryCkptDeleteRequest(**name)),
        NOT_FOUND,
        "CL_ERR_NOT_EXIST",
    )
    fails(
        lambda: library.LibraryCkptCreate(pb.LibraryCkptCreateRequest(library_handle=handle)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "CL_ERR_NULL_POINTER",
    )


def test_datasets_and_elements(library: pb_grpc.LibraryCheckpointServiceStub, handle: int) -> None:
    name: dict[str, Any] = {"library_handle": handle, "checkpoint_name": "data"}
    library.LibraryCkptCreate(pb.LibraryCkptCreateRequest(**name))
    ds: dict[str, Any] = {**name, "dataset_id": 7}
    fails(
        lambda: library.LibraryCkptDataSetWrite(pb.LibraryCkptDataSetWriteRequest(**ds, data=b"x")),
        NOT_FOUND,
        "CL_ERR_NOT_EXIST",
    )
    created = library.LibraryCkptDataSetCreate(
        pb.LibraryCkptDataSetCreateRequest(**ds, group_id=2, order=3)
    )
    assert created.created
    again = library.LibraryCkptDataSetCreate(
        pb.LibraryCkptDataSetCreateRequest(**ds, group_id=2, order=3)
    )
    assert not again.created
    fails(
        lambda: library.LibraryCkptDataSetCreate(
            pb.LibraryCkptDataSetCreateRequest(**ds, group_id=9, order=3)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "CL_ERR_INVALID_PARAMETER",
    )
    assert library.LibraryDoesDatasetExist(pb.LibraryDoesDatasetExistRequest(**ds)).exists
    library.LibraryCkptDataSetWrite(pb.LibraryCkptDataSetWriteRequest(**ds, data=b"state-1"))
    library.LibraryCkptDataSetWrite(pb.LibraryCkptDataSetWriteRequest(**ds, data=b"state-2"))
    element = pb.LibraryCkptElementWriteRequest(**ds, element_id=b"e1", data=b"v")
    fails(lambda: library.LibraryCkptElementWrite(element), NOT_FOUND, "CL_ERR_NOT_EXIST")
    library.LibraryCkptElementCreate(pb.LibraryCkptElementCreateRequest(**ds))
    library.LibraryCkptElementWrite(element)
    library.LibraryCkptElementWrite(
        pb.LibraryCkptElementWriteRequest(**ds, element_id=b"e0", data=b"first")
    )
    fails(
        lambda: library.LibraryCkptElementWrite(
            pb.LibraryCkptElementWriteRequest(**ds, element_id=b"", data=b"v")
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "CL_ERR_INVALID_PARAMETER",
    )
    read = library.LibraryCkptDataSetRead(pb.LibraryCkptDataSetReadRequest(**ds))
    assert (read.data, read.group_id, read.order) == (b"state-2", 2, 3)
    assert [(e.element_id, e.data) for e in read.elements] == [(b"e0", b"first"), (b"e1", b"v")]
    library.LibraryCkptDataSetDelete(pb.LibraryCkptDataSetDeleteRequest(**ds))
    assert not library.LibraryDoesDatasetExist(pb.LibraryDoesDatasetExistRequest(**ds)).exists
    fails(
        lambda: library.LibraryCkptDataSetRead(pb.LibraryCkptDataSetReadRequest(**ds)),
        NOT_FOUND,
        "CL_ERR_NOT_EXIST",
    )
    fails(
        lambda: library.LibraryCkptDataSetDelete(pb.LibraryCkptDataSetDeleteRequest(**ds)),
        NOT_FOUND,
        "CL_ERR_NOT_EXIST",
    )


def test_finalized_or_unknown_handle_is_refused(
    library: pb_grpc.LibraryCheckpointServiceStub, handle: int
) -> None:
    library.LibraryFinalize(pb.LibraryFinalizeRequest(library_handle=handle))
    for call in (
        lambda: library.LibraryFinalize(pb.LibraryFinalizeRequest(library_handle=handle)),
        lambda: library.LibraryCkptCreate(
            pb.LibraryCkptCreateRequest(library_handle=handle, checkpoint_name="x")
        ),
        lambda: library.LibraryDoesCkptExist(
            pb.LibraryDoesCkptExistRequest(library_handle=handle, checkpoint_name="x")
        ),
        lambda: library.LibraryDoesDatasetExist(
            pb.LibraryDoesDatasetExistRequest(library_handle=handle, checkpoint_name="x")
        ),
    ):
        fails(call, NOT_FOUND, "CL_ERR_INVALID_HANDLE")


def test_concurrent_writers_from_several_clients(node: Node) -> None:
    clients, writes = 8, 40
    address = f"127.0.0.1:{node.port}"
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        try:
            with grpc.insecure_channel(address) as channel:
                stub = pb_grpc.LibraryCheckpointServiceStub(channel)
                handle = stub.LibraryInitialize(pb.LibraryInitializeRequest()).library_handle
                name: dict[str, Any] = {"library_handle": handle, "checkpoint_name": "shared"}
                stub.LibraryCkptCreate(pb.LibraryCkptCreateRequest(**name))
                ds: dict[str, Any] = {**name, "dataset_id": index}
                stub.LibraryCkptDataSetCreate(pb.LibraryCkptDataSetCreateRequest(**ds))
                stub.LibraryCkptElementCreate(pb.LibraryCkptElementCreateRequest(**ds))
                for value in range(writes):
                    stub.LibraryCkptDataSetWrite(
                        pb.LibraryCkptDataSetWriteRequest(**ds, data=f"{index}:{value}".encode())
                    )
                    stub.LibraryCkptElementWrite(
                        pb.LibraryCkptElementWriteRequest(
                            **ds, element_id=value.to_bytes(2, "big"), data=b"e"
                        )
                    )
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    datasets = node.library.checkpoints["shared"].datasets
    assert sorted(datasets) == list(range(clients))
    for index, dataset in datasets.items():
        assert dataset.data == f"{index}:{writes - 1}".encode()
        assert len(dataset.elements) == writes
    # Concurrent writers share commits (group commit), not one per write.
    assert node.journal.batches < clients * writes * 2
