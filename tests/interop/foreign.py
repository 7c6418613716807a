"""Building and running the non-Python interop clients of clients/, in
plaintext or with TLS (the environment variables all three clients read)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.certs import Pair

ROOT = Path(__file__).resolve().parents[2]

# The TLS settings of every client of clients/: CA of the server (TLS on),
# client certificate and key, name to verify instead of the target's host.
TLS_VARIABLES = ("CPS_CA_CERT", "CPS_CLIENT_CERT", "CPS_CLIENT_KEY", "CPS_SERVER_NAME")

# How a client fails against a node with TLS and client certificates
# (TlsNode.refused): each must end the client with exit 1, not hang.
REFUSALS = ("no client certificate", "server CA unknown", "wrong server name")


def require_tools(*tools: str) -> None:
    """A missing toolchain fails the test (CI installs them), never skips it."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing {missing}: run `bash scripts/install-toolchains.sh`")


def build_with_make(source: Path, what: str) -> None:
    build = subprocess.run(
        ["make", "-C", str(source), f"-j{os.cpu_count() or 2}"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if build.returncode != 0:
        output = build.stdout[-4000:] + build.stderr[-4000:]
        pytest.fail(f"building the {what} client failed:\n{output}")


def run_client(
    command: list[str],
    address: str,
    tls: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run a client against ``address`` with the TLS variables of ``tls``
    only (none inherited: plaintext without them)."""
    environment = {name: value for name, value in os.environ.items() if name not in TLS_VARIABLES}
    environment.update(tls or {})
    return subprocess.run(
        [*command, address], capture_output=True, text=True, timeout=timeout, env=environment
    )


@dataclass(frozen=True)
class TlsNode:
    """A cps-server with TLS that requires client certificates
    (--tls-cert, --tls-key, --client-ca), and the files its clients use."""

    address: str
    server_ca: Path
    """Signed the node's certificate, valid for 127.0.0.1 and localhost."""
    client: Pair
    """Signed by the node's --client-ca."""
    stranger_ca: Path
    """Signed nothing the node shows."""

    def trusted(self) -> dict[str, str]:
        """The TLS variables of a client the node accepts: it verifies the node
        as ``localhost`` and presents its certificate."""
        return {
            "CPS_CA_CERT": str(self.server_ca),
            "CPS_CLIENT_CERT": str(self.client.cert),
            "CPS_CLIENT_KEY": str(self.client.key),
            "CPS_SERVER_NAME": "localhost",
        }

    def refused(self, refusal: str) -> dict[str, str]:
        """The trusted variables with one thing wrong (one of REFUSALS)."""
        variables = self.trusted()
        if refusal == "no client certificate":
            del variables["CPS_CLIENT_CERT"], variables["CPS_CLIENT_KEY"]
        elif refusal == "server CA unknown":
            variables["CPS_CA_CERT"] = str(self.stranger_ca)
        elif refusal == "wrong server name":
            variables["CPS_SERVER_NAME"] = "elsewhere.invalid"
        else:
            raise ValueError(refusal)
        return variables
