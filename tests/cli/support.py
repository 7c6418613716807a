"""Running the installed `cpsctl` console script as a subprocess."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

CPSCTL = str(Path(sys.executable).parent / "cpsctl")


def cpsctl(
    endpoints: str, *args: str, timeout: float = 60, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    command = [CPSCTL, "--endpoints", endpoints, "--timeout", "3", *args]
    if stdin is None:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    raw = subprocess.run(command, capture_output=True, input=stdin, timeout=timeout)
    return subprocess.CompletedProcess(
        raw.args, raw.returncode, raw.stdout.decode(), raw.stderr.decode()
    )


def ok(endpoints: str, *args: str) -> str:
    result = cpsctl(endpoints, *args)
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def as_json(endpoints: str, *args: str) -> Any:
    return json.loads(ok(endpoints, "--json", *args))


def dead_address() -> str:
    """A loopback address nobody listens on (a port just freed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"
