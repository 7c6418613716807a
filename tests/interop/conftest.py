"""Fixtures shared by the interop tests: a real server, a server that breaks
the contract, and an address nobody listens on."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from cps.v1 import checkpoint_service_pb2 as pb
from cps.v1 import types_pb2 as t
from tests.processes import ServerProcess


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess.start() as process:
        yield process


@pytest.fixture(scope="module")
def lying_server() -> Iterator[str]:
    """A server that breaks the contract at the first call: Initialize answers
    version A.9 to a client that asked for B.1."""

    def initialize(request: pb.InitializeRequest, context: Any) -> pb.InitializeResponse:
        return pb.InitializeResponse(
            service_handle=1, version=t.Version(release_code="A", major_version=9)
        )

    fake = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.unary_unary_rpc_method_handler(
        initialize,
        request_deserializer=pb.InitializeRequest.FromString,
        response_serializer=pb.InitializeResponse.SerializeToString,
    )
    fake.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("cps.v1.CheckpointService", {"Initialize": handler}),)
    )
    port = fake.add_insecure_port("127.0.0.1:0")
    fake.start()
    yield f"127.0.0.1:{port}"
    fake.stop(None)


@pytest.fixture()
def dead_address() -> str:
    """A loopback address nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"
