"""Shared test helpers: a real node on a loopback port, stubs, error checks."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from cps.server.config import parse
from cps.server.node import Node
from cps.v1 import checkpoint_service_pb2 as pb
from cps.v1 import checkpoint_service_pb2_grpc as pb_grpc
from cps.v1 import types_pb2 as t


@contextmanager
def running_node(*flags: str) -> Iterator[Node]:
    """A Node serving on 127.0.0.1 (a free port) in its own thread and loop,
    with a fresh data directory unless --data-dir is given."""
    with (
        tempfile.TemporaryDirectory() as data_dir,
        _running_node(["--data-dir", data_dir, *flags]) as node,
    ):
        yield node


@contextmanager
def _running_node(flags: list[str]) -> Iterator[Node]:
    settings = parse(["--listen", "127.0.0.1:0", "--grace-seconds", "1", *flags])
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Node] = {}

    async def start() -> None:
        node = Node(settings)
        await node.start()
        holder["node"] = node
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    started.wait(10)
    node = holder["node"]
    try:
        yield node
    finally:
        asyncio.run_coroutine_threadsafe(node.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def seed_error(error: grpc.RpcError) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    """The status code, ErrorInfo reason and metadata of a failed call."""
    status = rpc_status.from_call(error)
    assert status is not None, f"no rich status in {error!r}"
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            assert info.domain == "cps.v1"
            return error.code(), info.reason, dict(info.metadata)
    raise AssertionError(f"no ErrorInfo in {status}")


def attributes(
    *,
    flags: tuple[int, ...] = (t.CREATION_FLAG_WR_ACTIVE_REPLICA,),
    checkpoint_size: int | None = None,
    max_sections: int = 16,
    max_section_size: int = 4096,
    max_section_id_size: int = 32,
    retention: t.RetentionDuration | None = None,
) -> t.CheckpointCreationAttributes:
    return t.CheckpointCreationAttributes(
        creation_flags=flags,  # type: ignore[arg-type]
        checkpoint_size=max_sections * max_section_size
        if checkpoint_size is None
        else checkpoint_size,
        max_sections=max_sections,
        max_section_size=max_section_size,
        max_section_id_size=max_section_id_size,
        retention_duration=retention or t.RetentionDuration(forever=True),
    )


RW = (t.OPEN_FLAG_READ, t.OPEN_FLAG_WRITE)
RWC = (t.OPEN_FLAG_READ, t.OPEN_FLAG_WRITE, t.OPEN_FLAG_CREATE)


def sid(value: bytes) -> t.SectionId:
    return t.SectionId(id=value)


class Client:
    """A session over the generated stubs, with shorthand for the tests."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.stub = pb_grpc.CheckpointServiceStub(channel)
        response = self.stub.Initialize(
            pb.InitializeRequest(version=t.Version(release_code="B", major_version=1))
        )
        self.session = response.service_handle

    def open(
        self,
        name: str,
        attrs: t.CheckpointCreationAttributes | None = None,
        flags: tuple[int, ...] = RWC,
    ) -> int:
        if attrs is None and t.OPEN_FLAG_CREATE in flags:
            attrs = attributes()
        request = pb.CheckpointOpenRequest(
            service_handle=self.session,
            checkpoint_name=name,
            checkpoint_open_flags=flags,  # type: ignore[arg-type]
        )
        if attrs is not None:
            request.checkpoint_creation_attributes.CopyFrom(attrs)
        return self.stub.CheckpointOpen(request).checkpoint_handle  # type: ignore[no-any-return]

    def create_section(self, handle: int, section: bytes, data: bytes = b"", **kw: Any) -> bytes:
        response = self.stub.SectionCreate(
            pb.SectionCreateRequest(
                checkpoint_handle=handle,
                section_creation_attributes=t.SectionCreationAttributes(
                    section_id=sid(section), **kw
                ),
                initial_data=data,
            )
        )
        return response.section_id.id  # type: ignore[no-any-return]

    def read(self, handle: int, section: bytes, offset: int = 0, size: int = 0) -> bytes:
        response = self.stub.CheckpointRead(
            pb.CheckpointReadRequest(
                checkpoint_handle=handle,
                io_vector=[
                    t.IOVectorElement(section_id=sid(section), data_offset=offset, data_size=size)
                ],
            )
        )
        return response.io_vector[0].data_buffer  # type: ignore[no-any-return]
