"""Build the C++ interop client (clients/cpp) from protos/ alone with Debian's
toolchain, then run it against a real `cps-server`: the contract serves a
non-Python client, errors and the callback stream included.

The toolchain comes from scripts/install-toolchains.sh (CI runs it): a missing
tool fails these tests, it does not skip them."""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def cpp_client() -> list[str]:
    """The client binary, built once per session (make rebuilds only what changed)."""
    require_tools("make", "g++", "pkg-config", "protoc", "grpc_cpp_plugin")
    build_with_make(ROOT / "clients" / "cpp", "C++")
    return [str(ROOT / "build" / "clients" / "cpp" / "cps-cpp-client")]


@pytest.mark.timeout(900)
def test_cpp_client_against_server(cpp_client: list[str], server: ServerProcess) -> None:
    result = run_client(cpp_client, server.address)
    assert result.returncode == 0, f"C++ client failed:\n{result.stdout}{result.stderr}"
    assert result.stdout.startswith("cps-cpp-client: OK")


@pytest.mark.timeout(900)
def test_cpp_client_twice_on_one_server(cpp_client: list[str], server: ServerProcess) -> None:
    """The client cleans up (close, delete, finalize): a second run passes too."""
    result = run_client(cpp_client, server.address)
    assert result.returncode == 0, f"C++ client failed:\n{result.stdout}{result.stderr}"


@pytest.mark.timeout(900)
def test_cpp_client_fails_on_a_mismatch(cpp_client: list[str], lying_server: str) -> None:
    result = run_client(cpp_client, lying_server)
    assert result.returncode == 1, result
    assert "FAILED: Initialize answered version" in result.stderr


@pytest.mark.timeout(900)
def test_cpp_client_fails_without_server(cpp_client: list[str], dead_address: str) -> None:
    result = run_client(cpp_client, dead_address)
    assert result.returncode == 1, result
    assert "FAILED: Initialize failed: UNAVAILABLE" in result.stderr


@pytest.mark.timeout(900)
def test_cpp_client_over_mutual_tls(cpp_client: list[str], tls_server: TlsNode) -> None:
    """The whole session again, over TLS: the client verifies the node (as
    localhost) and presents a certificate of the node's client CA."""
    result = run_client(cpp_client, tls_server.address, tls_server.trusted())
    assert result.returncode == 0, f"C++ client failed:\n{result.stdout}{result.stderr}"
    assert result.stdout.startswith("cps-cpp-client: OK")


@pytest.mark.timeout(900)
@pytest.mark.parametrize("refusal", REFUSALS)
def test_cpp_client_fails_cleanly_against_tls(
    cpp_client: list[str], tls_server: TlsNode, refusal: str
) -> None:
    """No client certificate, a server it cannot verify: the handshake fails,
    the client exits 1 at once (the subprocess timeout bounds it)."""
    result = run_client(cpp_client, tls_server.address, tls_server.refused(refusal), timeout=30)
    assert result.returncode == 1, result
    assert "FAILED: Initialize failed: UNAVAILABLE" in result.stderr, result.stderr


@pytest.mark.timeout(900)
def test_cpp_client_refuses_a_client_certificate_without_tls(
    cpp_client: list[str], dead_address: str, tls_server: TlsNode
) -> None:
    """CPS_CLIENT_CERT without CPS_CA_CERT is a usage error (exit 2): it
    would be sent in plaintext otherwise, or not at all."""
    variables = tls_server.trusted()
    del variables["CPS_CA_CERT"]
    result = run_client(cpp_client, dead_address, variables, timeout=30)
    assert result.returncode == 2, result
    assert "need CPS_CA_CERT" in result.stderr, result.stderr
