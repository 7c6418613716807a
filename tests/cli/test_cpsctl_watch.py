"""`cpsctl watch` as a subprocess against a real `cps-server` process: the
node's service events, the notifications of a write made by another client
(decoded), --json, --since, Ctrl-C ending with 0, and exit 3 when the node
goes away."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from cps.v1 import checkpoint_service_pb2 as cpb
from tests.cli.support import CPSCTL, dead_address
from tests.processes import ServerProcess
from tests.support import Client, attributes, sid


class Watcher:
    """A running `cpsctl watch`, its stdout lines read by a thread."""

    def __init__(self, endpoints: str, *args: str) -> None:
        self.popen = subprocess.Popen(
            [CPSCTL, "--endpoints", endpoints, "--timeout", "3", "watch", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line.rstrip("\n"))

    def until(self, wanted: str, timeout: float = 15.0) -> str:
        """The first line (from now on) containing ``wanted``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line with {wanted!r} in {self.seen}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(line)
            if wanted in line:
                return line

    def stop(self, signum: int = signal.SIGINT) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signum)
        try:
            return self.popen.wait(timeout=15)
        finally:
            if self.popen.poll() is None:
                self.popen.kill()
                self.popen.wait()

    def stderr(self) -> str:
        assert self.popen.stderr is not None
        return self.popen.stderr.read()


@pytest.fixture()
def watchers() -> Iterator[list[Watcher]]:
    started: list[Watcher] = []
    yield started
    for watcher in started:
        watcher.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess.start() as process:
        yield process


def test_watch_prints_events_and_a_notification_of_another_clients_write(
    server: ServerProcess, watchers: list[Watcher]
) -> None:
    with grpc.insecure_channel(server.address) as channel:
        writer = Client(channel)
        handle = writer.open("watched", attributes(max_sections=4, max_section_size=64))
        writer.create_section(handle, b"greeting", b"hello")
        watcher = Watcher(server.address, "watched")
        watchers.append(watcher)
        line = watcher.until("CHECKPOINT_CREATED watched")
        assert line.split()[1].startswith("#")
        writer.stub.SectionOverwrite(
            cpb.SectionOverwriteRequest(
                checkpoint_handle=handle, section_id=sid(b"greeting"), data_buffer=b"bonjour"
            )
        )
        notification = watcher.until("NOTIFICATION watched")
        assert notification.endswith(" NOTIFICATION watched section=greeting OVERWRITTEN")
        writer.create_section(handle, b"\x00\xff", b"x")
        created = watcher.until("NOTIFICATION")
        assert created.endswith(" NOTIFICATION watched section=0x00ff CREATED")
        writer.stub.CheckpointClose(cpb.CheckpointCloseRequest(checkpoint_handle=handle))
    assert watcher.stop() == 0
    assert "watching" in watcher.stderr()


def test_watch_json_since_and_kinds(server: ServerProcess, watchers: list[Watcher]) -> None:
    with grpc.insecure_channel(server.address) as channel:
        writer = Client(channel)
        writer.open("json-a", attributes(max_sections=2))
        writer.open("json-b", attributes(max_sections=2))
    first = Watcher(server.address, "--json", "--kind", "checkpoint_created")
    watchers.append(first)
    created = json.loads(first.until('"json-a"'))
    assert created["type"] == "event" and created["kind"] == "CHECKPOINT_CREATED"
    assert created["checkpoint"] == "json-a" and created["position"] > 0
    assert first.stop() == 0
    # Resumed after json-a's position: json-b comes first.
    since = Watcher(
        server.address,
        "--json",
        "--since",
        str(created["position"]),
        "--kind",
        "CHECKPOINT_CREATED",
    )
    watchers.append(since)
    following = json.loads(since.until('"type"'))
    assert following["checkpoint"] == "json-b"
    assert following["position"] > created["position"]
    assert since.stop(signal.SIGTERM) == 0


def test_watch_of_an_unknown_checkpoint_exits_1(server: ServerProcess) -> None:
    done = subprocess.run(
        [CPSCTL, "--endpoints", server.address, "watch", "no-such-checkpoint"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1, done
    assert "CL_CKPT_ERR_NOT_EXIST" in done.stderr


def test_watch_usage_and_unreachable() -> None:
    bad = subprocess.run(
        [CPSCTL, "watch", "--kind", "nonsense"], capture_output=True, text=True, timeout=30
    )
    assert bad.returncode == 2, bad
    gone = subprocess.run(
        [CPSCTL, "--endpoints", dead_address(), "--timeout", "1", "watch"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert gone.returncode == 3, gone


def test_watch_exits_3_when_the_node_goes_away(watchers: list[Watcher]) -> None:
    with ServerProcess.start() as process:
        with grpc.insecure_channel(process.address) as channel:
            Client(channel).open("short-lived", attributes(max_sections=1))
        watcher = Watcher(process.address)
        watchers.append(watcher)
        watcher.until("CHECKPOINT_CREATED short-lived")
        process.popen.kill()  # kill -9
        process.popen.wait()
        assert watcher.popen.wait(timeout=20) == 3
        assert "resume with --since" in watcher.stderr()
