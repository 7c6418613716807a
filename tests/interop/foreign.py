"""Building and running the non-Python interop clients of clients/."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


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


def run_client(command: list[str], address: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*command, address], capture_output=True, text=True, timeout=60)
