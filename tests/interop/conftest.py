"""Fixtures shared by the interop tests: a real server (plaintext, or TLS with
client certificates), a server that breaks the contract, and an address
nobody listens on."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from cps.v1 import checkpoint_service_pb2 as pb
from cps.v1 import types_pb2 as t
from tests.certs import Authority
from tests.interop.foreign import TlsNode
from tests.processes import ServerProcess


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess.start() as process:
        yield process


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsNode]:
    """A real server with TLS and client certificates required, certificates
    made now (tests/certs.py)."""
    folder = tmp_path_factory.mktemp("certs")
    servers, clients = Authority(folder, "servers"), Authority(folder, "clients")
    node = servers.issue("node")
    stranger = Authority(folder, "stranger")
    flags = ("--tls-cert", str(node.cert), "--tls-key", str(node.key))
    with ServerProcess.start(*flags, "--client-ca", str(clients.path)) as process:
        yield TlsNode(process.address, servers.path, clients.issue("app"), stranger.path)


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
