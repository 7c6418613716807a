"""A `cps-server` as a real child process on a loopback port."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

SERVER = str(Path(sys.executable).parent / "cps-server")


class ServerProcess:
    def __init__(self, popen: subprocess.Popen[bytes], log_path: Path, port: int) -> None:
        self.popen = popen
        self.log_path = log_path
        self.port = port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log_path.read_text()

    @classmethod
    @contextlib.contextmanager
    def start(cls, *flags: str, timeout: float = 20.0) -> Iterator[ServerProcess]:
        """Start on a free port (read back from the "serving" log line); on
        exit stop it (SIGTERM, then SIGKILL) if it still runs."""
        with tempfile.TemporaryDirectory() as folder:
            log_path = Path(folder) / "server.log"
            with log_path.open("wb") as log:
                data = ["--data-dir", str(Path(folder) / "data")]
                popen = subprocess.Popen(
                    [SERVER, "--listen", "127.0.0.1:0", *data, *flags], stderr=log, stdout=log
                )
            try:
                port = _wait_for_port(popen, log_path, timeout)
                yield cls(popen, log_path, port)
            finally:
                if popen.poll() is None:
                    popen.terminate()
                    try:
                        popen.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        popen.kill()
                        popen.wait()


def _wait_for_port(popen: subprocess.Popen[bytes], log_path: Path, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log_path.read_text().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("msg") == "serving":
                    return int(entry["port"])
        if popen.poll() is not None:
            raise RuntimeError(f"cps-server exited with {popen.returncode}: {log_path.read_text()}")
        time.sleep(0.05)
    raise TimeoutError(f"cps-server did not start: {log_path.read_text()}")
