"""Library checkpoints on a running node count against its limits with the
server checkpoints (max_reserved_bytes, max_checkpoints), library handles are
bounded (max_library_handles) and idle ones are reaped
(library_handle_timeout_seconds). Each test fails when its bound is lifted."""

from __future__ import annotations

import tempfile
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from cps.v1 import library_service_pb2 as lpb
from cps.v1 import library_service_pb2_grpc as lpb_grpc
from tests.support import Client, attributes, running_node, seed_error

KiB = 1024
EXHAUSTED = (grpc.StatusCode.RESOURCE_EXHAUSTED, "CL_ERR_NO_MEMORY")


def no_memory(call: Callable[[], object]) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert seed_error(caught.value)[:2] == EXHAUSTED


def gauges(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        name: float(value)
        for name, _, value in (line.rpartition(" ") for line in text.splitlines())
        if name and not name.startswith("#")
    }


class Library:
    def __init__(self, channel: grpc.Channel) -> None:
        self.stub = lpb_grpc.LibraryCheckpointServiceStub(channel)
        self.handle = self.stub.LibraryInitialize(lpb.LibraryInitializeRequest()).library_handle

    def where(self, name: str) -> dict[str, Any]:
        return {"library_handle": self.handle, "checkpoint_name": name}

    def create(self, name: str) -> None:
        self.stub.LibraryCkptCreate(lpb.LibraryCkptCreateRequest(**self.where(name)))

    def dataset(self, name: str, dataset_id: int, data: bytes = b"") -> None:
        self.stub.LibraryCkptDataSetCreate(
            lpb.LibraryCkptDataSetCreateRequest(**self.where(name), dataset_id=dataset_id)
        )
        if data:
            self.write(name, dataset_id, data)

    def write(self, name: str, dataset_id: int, data: bytes) -> None:
        self.stub.LibraryCkptDataSetWrite(
            lpb.LibraryCkptDataSetWriteRequest(**self.where(name), dataset_id=dataset_id, data=data)
        )

    def read(self, name: str, dataset_id: int) -> bytes:
        return self.stub.LibraryCkptDataSetRead(  # type: ignore[no-any-return]
            lpb.LibraryCkptDataSetReadRequest(**self.where(name), dataset_id=dataset_id)
        ).data

    def exists(self, name: str) -> bool:
        return self.stub.LibraryDoesCkptExist(  # type: ignore[no-any-return]
            lpb.LibraryDoesCkptExistRequest(**self.where(name))
        ).exists


def test_library_bytes_count_against_max_reserved_bytes() -> None:
    limit = ("--max-reserved-bytes", str(1024 * KiB), "--metrics-listen", "127.0.0.1:0")
    with tempfile.TemporaryDirectory() as data_dir:
        with (
            running_node("--data-dir", data_dir, *limit) as node,
            grpc.insecure_channel(f"127.0.0.1:{node.port}") as channel,
        ):
            library, client = Library(channel), Client(channel)
            library.create("lib")
            library.dataset("lib", 1, b"a" * (600 * KiB))
            library.dataset("lib", 2)
            # 600 KiB + 600 KiB > 1 MiB: refused, and nothing written.
            no_memory(lambda: library.write("lib", 2, b"b" * (600 * KiB)))
            assert library.read("lib", 2) == b""
            assert gauges(node.metrics_port)["cps_reserved_bytes"] == 600 * KiB
            # Server checkpoints reserve beside the library's bytes.
            no_memory(lambda: client.open("big", attributes(max_sections=125)))
            client.open("fits", attributes(max_sections=100))  # 400 KiB
            assert gauges(node.metrics_port)["cps_reserved_bytes"] == 1000 * KiB
            assert gauges(node.metrics_port)["cps_library_bytes"] == 600 * KiB
            # ...which the library's writes then see.
            no_memory(lambda: library.write("lib", 2, b"c" * (25 * KiB)))
            library.write("lib", 2, b"c" * (24 * KiB))
            library.write("lib", 1, b"shorter")  # holding less is always allowed
            library.write("lib", 2, b"c" * (100 * KiB))
        # A restarted node counts what its store holds.
        with running_node("--data-dir", data_dir, *limit) as node:
            assert node.library.bytes == 100 * KiB + len(b"shorter")
            with grpc.insecure_channel(f"127.0.0.1:{node.port}") as channel:
                library = Library(channel)
                no_memory(lambda: library.write("lib", 1, b"d" * (600 * KiB)))
                library.write("lib", 1, b"d" * (500 * KiB))


def test_library_checkpoints_count_against_max_checkpoints() -> None:
    with (
        running_node("--max-checkpoints", "2") as node,
        grpc.insecure_channel(f"127.0.0.1:{node.port}") as channel,
    ):
        library, client = Library(channel), Client(channel)
        library.create("a")
        library.create("b")
        no_memory(lambda: library.create("c"))
        assert not library.exists("c")
        no_memory(lambda: client.open("server", attributes()))
        library.stub.LibraryCkptDelete(lpb.LibraryCkptDeleteRequest(**library.where("b")))
        client.open("server", attributes())
        no_memory(lambda: library.create("b"))


def test_library_handles_are_bounded() -> None:
    with (
        running_node("--max-library-handles", "2") as node,
        grpc.insecure_channel(f"127.0.0.1:{node.port}") as channel,
    ):
        first = Library(channel)
        Library(channel)
        no_memory(lambda: Library(channel))
        first.stub.LibraryFinalize(lpb.LibraryFinalizeRequest(library_handle=first.handle))
        Library(channel)


def test_idle_library_handles_are_reaped() -> None:
    timeouts = ("--session-timeout-seconds", "0.2", "--library-handle-timeout-seconds", "0.5")
    with (
        running_node(*timeouts) as node,
        grpc.insecure_channel(f"127.0.0.1:{node.port}") as channel,
    ):
        idle, busy = Library(channel), Library(channel)
        busy.create("kept")
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            assert busy.exists("kept")  # each call is a use
            time.sleep(0.1)
        with pytest.raises(grpc.RpcError) as caught:
            idle.exists("kept")
        assert seed_error(caught.value)[:2] == (grpc.StatusCode.NOT_FOUND, "CL_ERR_INVALID_HANDLE")
        assert set(node.library.handles) == {busy.handle}
        assert busy.exists("kept")
