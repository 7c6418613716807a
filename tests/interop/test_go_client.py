"""Build the Go interop client (clients/go) from protos/ alone with Debian's
toolchain and Go libraries (GOPATH mode: the Go module proxy is not reachable
here), then run it against a real `cps-server`.

The toolchain comes from scripts/install-toolchains.sh (CI runs it): a missing
tool fails these tests, it does not skip them."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from cps.v1 import checkpoint_service_pb2 as pb
from cps.v1 import types_pb2 as t
from tests.processes import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "clients" / "go"
TOOLS = ("make", "go", "protoc", "protoc-gen-go", "protoc-gen-go-grpc")
DEBIAN_GRPC = Path("/usr/share/gocode/src/google.golang.org/grpc")


@pytest.fixture(scope="session")
def go_client() -> Path:
    """The client binary, built once per session (make rebuilds only what changed)."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not DEBIAN_GRPC.is_dir():
        missing.append(str(DEBIAN_GRPC))
    if missing:
        pytest.fail(f"missing {missing}: run `bash scripts/install-toolchains.sh`")
    build = subprocess.run(["make", "-C", str(SOURCE)], capture_output=True, text=True, timeout=900)
    if build.returncode != 0:
        output = build.stdout[-4000:] + build.stderr[-4000:]
        pytest.fail(f"building the Go client failed:\n{output}")
    return ROOT / "build" / "clients" / "go" / "cps-go-client"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess.start() as process:
        yield process


def run(client: Path, address: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(client), address], capture_output=True, text=True, timeout=60)


@pytest.mark.timeout(900)
def test_go_client_against_server(go_client: Path, server: ServerProcess) -> None:
    result = run(go_client, server.address)
    assert result.returncode == 0, f"Go client failed:\n{result.stdout}{result.stderr}"
    assert result.stdout.startswith("cps-go-client: OK")


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


def free_address() -> str:
    """A loopback address nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


@pytest.mark.timeout(900)
def test_go_client_fails_on_a_mismatch(go_client: Path, lying_server: str) -> None:
    result = run(go_client, lying_server)
    assert result.returncode == 1, result
    assert "FAILED: Initialize answered version" in result.stderr


@pytest.mark.timeout(900)
def test_go_client_fails_without_server(go_client: Path) -> None:
    result = run(go_client, free_address())
    assert result.returncode == 1, result
    assert "FAILED: Initialize: rpc error: code = Unavailable" in result.stderr
