"""`cpsctl snapshot save` and `cpsctl snapshot restore` as subprocesses
against real `cps-server` processes: a restored node holds exactly what
the saved one held at save time; a damaged snapshot, a data directory that
holds a store, an unreachable node and a caller the authorization table
does not let read everything are refused with cpsctl's exit codes."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import grpc
import pytest

from cps.v1 import library_service_pb2 as lpb
from cps.v1 import library_service_pb2_grpc as lpb_grpc
from tests.certs import Authority
from tests.cli.support import as_json, cpsctl, dead_address, ok
from tests.processes import ServerProcess
from tests.support import Client, attributes


def _dataset(name: str, lib: int) -> dict[str, Any]:
    return {"library_handle": lib, "checkpoint_name": name, "dataset_id": 1}


def _write_library(address: str, name: str, data: bytes, *, create: bool) -> None:
    with grpc.insecure_channel(address) as channel:
        library = lpb_grpc.LibraryCheckpointServiceStub(channel)
        lib = library.LibraryInitialize(lpb.LibraryInitializeRequest()).library_handle
        ds = _dataset(name, lib)
        if create:
            library.LibraryCkptCreate(
                lpb.LibraryCkptCreateRequest(library_handle=lib, checkpoint_name=name)
            )
            library.LibraryCkptDataSetCreate(lpb.LibraryCkptDataSetCreateRequest(**ds))
        library.LibraryCkptDataSetWrite(lpb.LibraryCkptDataSetWriteRequest(**ds, data=data))
        library.LibraryFinalize(lpb.LibraryFinalizeRequest(library_handle=lib))


def _read_library(address: str, name: str) -> bytes | None:
    with grpc.insecure_channel(address) as channel:
        library = lpb_grpc.LibraryCheckpointServiceStub(channel)
        lib = library.LibraryInitialize(lpb.LibraryInitializeRequest()).library_handle
        try:
            exists = library.LibraryDoesCkptExist(
                lpb.LibraryDoesCkptExistRequest(library_handle=lib, checkpoint_name=name)
            )
            if not exists.exists:
                return None
            read = library.LibraryCkptDataSetRead(
                lpb.LibraryCkptDataSetReadRequest(**_dataset(name, lib))
            )
            return bytes(read.data)
        finally:
            library.LibraryFinalize(lpb.LibraryFinalizeRequest(library_handle=lib))


def _state(address: str) -> dict[str, Any]:
    """What a node holds: server checkpoints with their sections' text, and
    the library checkpoint "lib/app"."""
    server = {}
    for checkpoint in as_json(address, "ls"):
        name = checkpoint["name"]
        sections = as_json(address, "sections", name)
        server[name] = {
            s["id"]: as_json(address, "read", name, s["id_hex"], "--id-hex")["text"]
            for s in sections
        }
    return {"server": server, "library": _read_library(address, "lib/app")}


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A snapshot of a node with server and library checkpoints, and what the
    node held when it was taken (it was changed after)."""
    snapshot = tmp_path / "backup.db"
    with ServerProcess.start() as node:
        with grpc.insecure_channel(node.address) as channel:
            client = Client(channel)
            handle = client.open("orders", attributes(max_sections=4, max_section_size=64))
            client.create_section(handle, b"open", b"17")
            client.create_section(handle, b"closed", b"4")
            client.open("empty", attributes(max_sections=1))
        _write_library(node.address, "lib/app", b"v1", create=True)
        before = _state(node.address)
        saved = as_json(node.address, "snapshot", "save", str(snapshot))
        # Changed after the snapshot: none of this is in it.
        ok(node.address, "write", "orders", "open", "18")
        with grpc.insecure_channel(node.address) as channel:
            Client(channel).open("later", attributes(max_sections=1))
        _write_library(node.address, "lib/app", b"v2", create=False)
        assert _state(node.address) != before
    data = snapshot.read_bytes()
    assert saved["size"] == len(data) and saved["sha256"] == hashlib.sha256(data).hexdigest()
    assert saved["node"] == saved["endpoint"] == node.address
    assert saved["schema_version"] == 2 and saved["file"] == str(snapshot)
    assert not snapshot.with_name("backup.db.part").exists()
    return snapshot, before


def test_a_restored_node_holds_the_state_at_save_time(
    saved: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    snapshot, before = saved
    assert before["server"] == {"empty": {"(default)": ""}, "orders": {"open": "17", "closed": "4"}}
    assert before["library"] == b"v1"
    data_dir = tmp_path / "restored"
    restored = as_json(
        "127.0.0.1:1", "snapshot", "restore", str(snapshot), "--data-dir", str(data_dir)
    )
    assert restored["server_checkpoints"] == 2 and restored["library_checkpoints"] == 1
    assert restored["sections"] == 3 and restored["bytes"] == 3
    assert sorted(p.name for p in data_dir.iterdir()) == ["cps.lock", "cps.sqlite3"]
    with ServerProcess.start("--data-dir", str(data_dir)) as node:
        assert _state(node.address) == before


def test_the_table_for_people(saved: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    snapshot, _ = saved
    text = ok(
        "127.0.0.1:1", "snapshot", "restore", str(snapshot), "--data-dir", str(tmp_path / "d")
    )
    assert "2 server checkpoints" in text and f"--data-dir {tmp_path / 'd'}" in text
    with ServerProcess.start() as node:
        text = ok(node.address, "snapshot", "save", str(tmp_path / "s.db"))
    assert text.startswith(f"saved {tmp_path / 's.db'}: ") and "sha256 " in text
    assert f"from node {node.address}" in text
    assert "\r" not in text  # no progress bar: stdout is not a terminal


def _damaged(snapshot: Path, tmp_path: Path) -> list[Path]:
    data = snapshot.read_bytes()
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(data[: len(data) // 2])
    flipped = tmp_path / "flipped.db"
    middle = bytearray(data)
    for i in range(4096, len(middle) - 1024, 97):
        middle[i] ^= 0x5A
    flipped.write_bytes(bytes(middle))
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    text = tmp_path / "text.db"
    text.write_text("not a snapshot\n")
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE t (x)")
    db.close()
    newer = tmp_path / "newer.db"
    newer.write_bytes(data)
    with sqlite3.connect(newer) as db:
        db.execute("PRAGMA user_version=99")
    db.close()
    return [truncated, flipped, empty, text, foreign, newer, tmp_path / "missing.db"]


def test_a_damaged_or_foreign_snapshot_is_refused_and_nothing_is_written(
    saved: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    snapshot, _ = saved
    for bad in _damaged(snapshot, tmp_path):
        data_dir = tmp_path / f"into-{bad.stem}"
        result = cpsctl("127.0.0.1:1", "snapshot", "restore", str(bad), "--data-dir", str(data_dir))
        assert result.returncode == 1, (bad.name, result.stdout, result.stderr)
        assert "nothing restored" in result.stderr, result.stderr
        assert not data_dir.exists(), bad.name
        # Into an existing empty directory: it stays empty.
        data_dir.mkdir()
        again = cpsctl("127.0.0.1:1", "snapshot", "restore", str(bad), "--data-dir", str(data_dir))
        assert again.returncode == 1 and list(data_dir.iterdir()) == [], bad.name


def test_a_directory_that_holds_a_store_is_refused(
    saved: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    snapshot, _ = saved
    with ServerProcess.start("--data-dir", str(tmp_path / "live")) as node:
        with grpc.insecure_channel(node.address) as channel:
            Client(channel).open("mine", attributes(max_sections=1))
        # A running node's directory, and (below) the same after it stopped.
        result = cpsctl(
            "127.0.0.1:1",
            "snapshot",
            "restore",
            str(snapshot),
            "--data-dir",
            str(tmp_path / "live"),
        )
        assert result.returncode == 1 and "already holds a store" in result.stderr
    store = (tmp_path / "live" / "cps.sqlite3").read_bytes()
    result = cpsctl(
        "127.0.0.1:1", "snapshot", "restore", str(snapshot), "--data-dir", str(tmp_path / "live")
    )
    assert result.returncode == 1 and "already holds a store" in result.stderr
    assert (tmp_path / "live" / "cps.sqlite3").read_bytes() == store
    with ServerProcess.start("--data-dir", str(tmp_path / "live")) as node:
        assert [c["name"] for c in as_json(node.address, "ls")] == ["mine"]


def test_save_from_an_unreachable_node_is_exit_code_3(tmp_path: Path) -> None:
    target = tmp_path / "never.db"
    result = cpsctl(dead_address(), "snapshot", "save", str(target))
    assert result.returncode == 3 and "no endpoint answers" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_usage_is_exit_code_2(tmp_path: Path) -> None:
    assert cpsctl("127.0.0.1:1", "snapshot").returncode == 2
    assert cpsctl("127.0.0.1:1", "snapshot", "restore", "x.db").returncode == 2  # no --data-dir
    assert cpsctl("127.0.0.1:1", "snapshot", "save").returncode == 2


TABLE = """
[roles.admin]
server = [{ prefix = "", permission = "read" }]
library = [{ prefix = "", permission = "read" }]

[roles.app]
server = [{ prefix = "", permission = "readwrite" }]
library = [{ prefix = "app/", permission = "readwrite" }]

[identities]
"CN=admin" = ["admin"]
"CN=app" = ["app"]
"""


def test_with_an_authorization_table_only_a_reader_of_everything_saves(tmp_path: Path) -> None:
    servers, clients = Authority(tmp_path, "servers"), Authority(tmp_path, "clients")
    node_pair = servers.issue("node")
    table = tmp_path / "auth.toml"
    table.write_text(TABLE)
    flags = ("--tls-cert", str(node_pair.cert), "--tls-key", str(node_pair.key))
    auth = ("--client-ca", str(clients.path), "--auth-file", str(table))
    with ServerProcess.start(*flags, *auth) as node:
        for name, code in (("admin", 0), ("app", 1)):
            pair = clients.issue(name)
            tls = ("--cacert", str(servers.path), "--cert", str(pair.cert), "--key", str(pair.key))
            target = tmp_path / f"{name}.db"
            result = cpsctl(node.address, *tls, "--json", "snapshot", "save", str(target))
            assert result.returncode == code, (name, result.stdout, result.stderr)
            if code == 0:
                assert json.loads(result.stdout)["size"] == target.stat().st_size
            else:
                assert "CL_CKPT_ERR_OP_NOT_PERMITTED" in result.stderr
                assert not target.exists() and not target.with_name("app.db.part").exists()
