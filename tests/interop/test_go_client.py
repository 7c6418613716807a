"""Build the Go interop client (clients/go) from protos/ alone with Debian's
toolchain and Go libraries (GOPATH mode: the Go module proxy is not reachable
here), then run it against a real `cps-server`.

The toolchain comes from scripts/install-toolchains.sh (CI runs it): a missing
tool fails these tests, it does not skip them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.foreign import ROOT, build_with_make, require_tools, run_client
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
