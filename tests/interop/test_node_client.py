"""Run the Node.js interop client (clients/node: @grpc/grpc-js, stubs loaded
from protos/ at run time by @grpc/proto-loader) against a real `cps-server`,
and check that `make stubs` generates the C++, Go and TypeScript stubs.

node and clients/node/node_modules come from scripts/install-toolchains.sh (CI
runs it): a missing one fails these tests, it does not skip them."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from cps.v1 import checkpoint_service_pb2 as pb
from tests.interop.foreign import REFUSALS, ROOT, TlsNode, run_client
from tests.processes import ServerProcess

SOURCE = ROOT / "clients" / "node"


@pytest.fixture(scope="session")
def node_client() -> list[str]:
    """The command that runs the client."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node missing: run `bash scripts/install-toolchains.sh`")
    if not (SOURCE / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("clients/node/node_modules missing: run `bash scripts/install-toolchains.sh`")
    return [node, str(SOURCE / "client.js")]


def test_node_client_against_server(node_client: list[str], server: ServerProcess) -> None:
    result = run_client(node_client, server.address)
    assert result.returncode == 0, f"Node client failed:\n{result.stdout}{result.stderr}"
    assert result.stdout.startswith("cps-node-client: OK")


def test_node_client_fails_on_a_mismatch(node_client: list[str], lying_server: str) -> None:
    result = run_client(node_client, lying_server)
    assert result.returncode == 1, result
    assert "FAILED: Initialize answered version" in result.stderr


def test_node_client_fails_without_server(node_client: list[str], dead_address: str) -> None:
    result = run_client(node_client, dead_address)
    assert result.returncode == 1, result
    assert "FAILED: Initialize failed: UNAVAILABLE" in result.stderr


def test_node_client_over_mutual_tls(node_client: list[str], tls_server: TlsNode) -> None:
    """The whole session again, over TLS: the client verifies the node (as
    localhost) and presents a certificate of the node's client CA."""
    result = run_client(node_client, tls_server.address, tls_server.trusted())
    assert result.returncode == 0, f"Node client failed:\n{result.stdout}{result.stderr}"
    assert result.stdout.startswith("cps-node-client: OK")


@pytest.mark.parametrize("refusal", REFUSALS)
def test_node_client_fails_cleanly_against_tls(
    node_client: list[str], tls_server: TlsNode, refusal: str
) -> None:
    """No client certificate, a server it cannot verify: the handshake fails,
    the client exits 1 at once (the subprocess timeout bounds it)."""
    result = run_client(node_client, tls_server.address, tls_server.refused(refusal), timeout=30)
    assert result.returncode == 1, result
    assert "FAILED: Initialize failed: UNAVAILABLE" in result.stderr, result.stderr


def test_node_client_refuses_a_client_certificate_without_tls(
    node_client: list[str], dead_address: str, tls_server: TlsNode
) -> None:
    """CPS_CLIENT_CERT without CPS_CA_CERT is a usage error (exit 2): it
    would be sent in plaintext otherwise, or not at all."""
    variables = tls_server.trusted()
    del variables["CPS_CA_CERT"]
    result = run_client(node_client, dead_address, variables, timeout=30)
    assert result.returncode == 2, result
    assert "need CPS_CA_CERT" in result.stderr, result.stderr


@pytest.mark.timeout(900)
def test_make_stubs_generates_every_language(node_client: list[str]) -> None:
    """`make stubs`: C++ and Go sources and TypeScript types of every RPC."""
    result = subprocess.run(
        ["make", "-C", str(ROOT), "stubs"], capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, f"make stubs failed:\n{result.stdout}{result.stderr}"
    stubs = ROOT / "build" / "stubs"
    cpp = (stubs / "cpp" / "cps" / "v1" / "checkpoint_service.grpc.pb.h").read_text()
    go = (stubs / "go" / "src" / "cps" / "v1" / "checkpoint_service_grpc.pb.go").read_text()
    typescript = (stubs / "node" / "cps" / "v1" / "CheckpointService.ts").read_text()
    methods = pb.DESCRIPTOR.services_by_name["CheckpointService"].methods
    for method in methods:
        assert f" {method.name}(::grpc::ClientContext* context" in cpp, method.name
        assert f"\t{method.name}(ctx context.Context" in go, method.name
        camel = method.name[0].lower() + method.name[1:]
        assert f"  {camel}(" in typescript, method.name
