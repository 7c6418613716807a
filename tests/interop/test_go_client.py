"""Build the Go interop client (clients/go) from protos/ alone with Debian's
toolchain and Go libraries (GOPATH mode: the Go module proxy is not reachable
here), then run it against a real `cps-server`.

The toolchain comes from scripts/install-toolchains.sh (CI runs it): a missing
tool fails these tests, it does not skip them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.foreign import (
    REFUSALS,
    ROOT,
    TlsNode,
    build_with_make,
    require_tools,
    run_client,
)
from tests.processes import ServerProcess

DEBIAN_GRPC = Path("/usr/share/gocode/src/google.golang.org/grpc")


@pytest.fixture(scope="session")
def go_client() -> list[str]:
    """The client binary, built once per session (make rebuilds only what changed)."""
    require_tools("make", "go", "protoc", "protoc-gen-go", "protoc-gen-go-grpc")
    if not DEBIAN_GRPC.is_dir():
        pytest.fail(f"missing {DEBIAN_GRPC}: run `bash scripts/install-toolchains.sh`")
    build_with_make(ROOT / "clients" / "go", "Go")
    return [str(ROOT / "build" / "clients" / "go" / "cps-go-client")]


@pytest.mark.timeout(900)
def test_go_client_against_server(go_client: list[str], server: ServerProcess) -> None:
    result = run_client(go_client, server.address)
    assert result.returncode == 0, f"Go client failed:\n{result.stdout}{result.stderr}"
    assert result.stdout.startswith("cps-go-client: OK")


@pytest.mark.timeout(900)
def test_go_client_fails_on_a_mismatch(go_client: list[str], lying_server: str) -> None:
    result = run_client(go_client, lying_server)
    assert result.returncode == 1, result
    assert "FAILED: Initialize answered version" in result.stderr


@pytest.mark.timeout(900)
def test_go_client_fails_without_server(go_client: list[str], dead_address: str) -> None:
    result = run_client(go_client, dead_address)
    assert result.returncode == 1, result
    assert "FAILED: Initialize: rpc error: code = Unavailable" in result.stderr


@pytest.mark.timeout(900)
def test_go_client_over_mutual_tls(go_client: list[str], tls_server: TlsNode) -> None:
    """The whole session again, over TLS: the client verifies the node (as
    localhost) and presents a certificate of the node's client CA."""
    result = run_client(go_client, tls_server.address, tls_server.trusted())
    assert result.returncode == 0, f"Go client failed:\n{result.stdout}{result.stderr}"
    assert result.stdout.startswith("cps-go-client: OK")


@pytest.mark.timeout(900)
@pytest.mark.parametrize("refusal", REFUSALS)
def test_go_client_fails_cleanly_against_tls(
    go_client: list[str], tls_server: TlsNode, refusal: str
) -> None:
    """No client certificate, a server it cannot verify: the handshake fails,
    the client exits 1 at once (the subprocess timeout bounds it)."""
    result = run_client(go_client, tls_server.address, tls_server.refused(refusal), timeout=30)
    assert result.returncode == 1, result
    assert "FAILED: Initialize: rpc error: code = Unavailable" in result.stderr, result.stderr


@pytest.mark.timeout(900)
def test_go_client_refuses_a_client_certificate_without_tls(
    go_client: list[str], dead_address: str, tls_server: TlsNode
) -> None:
    """CPS_CLIENT_CERT without CPS_CA_CERT is a usage error (exit 2): it
    would be sent in plaintext otherwise, or not at all."""
    variables = tls_server.trusted()
    del variables["CPS_CA_CERT"]
    result = run_client(go_client, dead_address, variables, timeout=30)
    assert result.returncode == 2, result
    assert "need CPS_CA_CERT" in result.stderr, result.stderr
