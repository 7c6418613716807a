"""The store survives SIGKILL of the server; bad data directories fail loudly
at start-up and are left untouched."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cps.v1 import checkpoint_service_pb2 as cpb
from cps.v1 import library_service_pb2 as lpb
from cps.v1 import library_service_pb2_grpc as lpb_grpc
from cps.v1 import types_pb2 as t
from tests.processes import SERVER, ServerProcess
from tests.support import RW, Client, attributes, sid

WRITES = 200


def write_everything(address: str) -> None:
    """Acknowledged writes of both kinds; the caller kills the server next."""
    with grpc.insecure_channel(address) as channel:
        client = Client(channel)
        handle = client.open("kept", attributes(max_sections=4))
        client.create_section(handle, b"counter")
        for value in range(WRITES):
            client.stub.SectionOverwrite(
                cpb.SectionOverwriteRequest(
                    checkpoint_handle=handle,
                    section_id=sid(b"counter"),
                    data_buffer=value.to_bytes(4, "big"),
                )
            )
        library = lpb_grpc.LibraryCheckpointServiceStub(channel)
        lib = library.LibraryInitialize(lpb.LibraryInitializeRequest()).library_handle
        ds: dict[str, Any] = {
            "library_handle": lib,
            "checkpoint_name": "app-state",
            "dataset_id": 1,
        }
        library.LibraryCkptCreate(
            lpb.LibraryCkptCreateRequest(library_handle=lib, checkpoint_name="app-state")
        )
        library.LibraryCkptDataSetCreate(lpb.LibraryCkptDataSetCreateRequest(**ds))
        library.LibraryCkptElementCreate(lpb.LibraryCkptElementCreateRequest(**ds))
        for value in range(WRITES):
            library.LibraryCkptDataSetWrite(
                lpb.LibraryCkptDataSetWriteRequest(**ds, data=value.to_bytes(4, "big"))
            )
            library.LibraryCkptElementWrite(
                lpb.LibraryCkptElementWriteRequest(
                    **ds, element_id=value.to_bytes(4, "big"), data=b"e"
                )
            )


def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path)]
    with ServerProcess.start(*data) as first:
        write_everything(first.address)
        first.popen.kill()  # SIGKILL right after the last acknowledgement
        first.popen.wait(timeout=10)
    with ServerProcess.start(*data) as second, grpc.insecure_channel(second.address) as channel:
        client = Client(channel)
        handle = client.open("kept", flags=RW)  # no CREATE: it must be there
        assert client.read(handle, b"counter") == (WRITES - 1).to_bytes(4, "big")
        status = client.stub.CheckpointStatusGet(
            cpb.CheckpointStatusGetRequest(checkpoint_handle=handle)
        ).checkpoint_status
        assert status.checkpoint_creation_attributes == attributes(max_sections=4)
        library = lpb_grpc.LibraryCheckpointServiceStub(channel)
        lib = library.LibraryInitialize(lpb.LibraryInitializeRequest()).library_handle
        read = library.LibraryCkptDataSetRead(
            lpb.LibraryCkptDataSetReadRequest(
                library_handle=lib, checkpoint_name="app-state", dataset_id=1
            )
        )
        assert read.data == (WRITES - 1).to_bytes(4, "big")
        assert len(read.elements) == WRITES


def test_without_persistence_server_checkpoints_are_gone(tmp_path: Path) -> None:
    flags = ["--data-dir", str(tmp_path), "--no-persist-server-checkpoints"]
    with ServerProcess.start(*flags) as first, grpc.insecure_channel(first.address) as channel:
        Client(channel).open("volatile")
    with (
        ServerProcess.start(*flags) as second,
        grpc.insecure_channel(second.address) as channel,
        pytest.raises(grpc.RpcError),
    ):
        Client(channel).open("volatile", flags=RW)


def test_restart_starts_retention_of_stored_checkpoints(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path)]
    retention = t.RetentionDuration()
    retention.duration.FromMilliseconds(300)
    with ServerProcess.start(*data) as first, grpc.insecure_channel(first.address) as channel:
        Client(channel).open("short-lived", attributes(retention=retention))
        first.popen.kill()
        first.popen.wait(timeout=10)
    with ServerProcess.start(*data) as second, grpc.insecure_channel(second.address) as channel:
        time.sleep(1.0)  # nobody reopened it after the restart: retention ran out
        with pytest.raises(grpc.RpcError):
            Client(channel).open("short-lived", flags=RW)


def start_fails(data_dir: Path) -> str:
    """Start a server that must refuse to run; returns what it printed."""
    command = [SERVER, "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0, result.stderr
    return result.stderr


def test_corrupt_file_is_refused_and_kept(tmp_path: Path) -> None:
    store = tmp_path / "cps.sqlite3"
    store.write_bytes(b"this is not a database" * 100)
    message = start_fails(tmp_path)
    assert "not a CPS store" in message
    assert store.read_bytes() == b"this is not a database" * 100


def test_damaged_sqlite_file_is_refused(tmp_path: Path) -> None:
    with (
        ServerProcess.start("--data-dir", str(tmp_path)) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        Client(channel).open("soon-damaged")
    store = tmp_path / "cps.sqlite3"
    raw = bytearray(store.read_bytes())
    raw[100:4096] = b"\xff" * (4096 - 100)  # smash the first page after the header
    store.write_bytes(bytes(raw))
    message = start_fails(tmp_path)
    assert "cps.sqlite3" in message
    assert store.read_bytes() == bytes(raw)


def test_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "cps.sqlite3") as foreign:
        foreign.execute("CREATE TABLE invoices (id INTEGER)")
    assert "another application" in start_fails(tmp_path)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    with ServerProcess.start("--data-dir", str(tmp_path)):
        pass
    with sqlite3.connect(tmp_path / "cps.sqlite3") as store:
        store.execute("PRAGMA user_version=99")
    assert "newer CPS" in start_fails(tmp_path)


@contextlib.contextmanager
def read_only_directory() -> Iterator[Path]:
    """An empty directory this process cannot write to. Root ignores
    permission bits, so as root it is a read-only tmpfs mounted there."""
    parent = Path(tempfile.mkdtemp(prefix="cps-ro-"))
    target = parent / "data"
    target.mkdir()
    try:
        if os.geteuid() == 0:
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(target)], check=True
            )
            try:
                yield target
            finally:
                subprocess.run(["umount", str(target)], check=True)
        else:
            target.chmod(0o555)
            yield target
    finally:
        target.chmod(0o755)
        shutil.rmtree(parent)


def test_read_only_data_dir_is_refused() -> None:
    with read_only_directory() as read_only:
        message = start_fails(read_only)
        assert "not writable" in message
        assert list(read_only.iterdir()) == []


def test_a_second_node_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    with ServerProcess.start("--data-dir", str(tmp_path)):
        message = start_fails(tmp_path)
    assert "in use" in message or "locked" in message, message


def test_a_second_node_on_a_busy_address_is_refused(tmp_path: Path) -> None:
    with ServerProcess.start() as first:
        command = [SERVER, "--listen", first.address, "--data-dir", str(tmp_path)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on {first.address}" in result.stderr
    assert "Traceback" not in result.stderr
