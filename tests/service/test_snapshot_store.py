"""Snapshots of a store (storage/snapshot.py): a copy takes what is
committed, while a write transaction is open on the store's own connection
(it neither waits for it nor sees it), and leaves nothing in the data
directory; restore refuses a foreign file and brings an older schema up to
date."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from cps.server.storage.snapshot import restore
from cps.server.storage.sqlite_store import FILE_NAME, SCHEMA_VERSION, SqliteStore, StoreError


def _insert(name: str) -> tuple[str, tuple[object, ...]]:
    return (
        "INSERT INTO library_checkpoint (name) VALUES (?)",
        (name,),
    )


def test_a_copy_holds_what_is_committed_and_waits_for_no_writer(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "data")
    try:
        store.apply([_insert("committed")])
        db = store.connection
        db.execute("BEGIN IMMEDIATE")  # a writer in the middle of its transaction
        db.execute(*_insert("in flight"))
        started = time.monotonic()
        copy = store.snapshot()
        took = time.monotonic() - started
        db.execute("COMMIT")
        with copy:
            data = copy.read()
        assert took < 2.0
        saved = tmp_path / "copy.db"
        saved.write_bytes(data)
        with sqlite3.connect(saved) as check:
            names = [row[0] for row in check.execute("SELECT name FROM library_checkpoint")]
            assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        check.close()
        assert names == ["committed"]
        # The copy had no name in the data directory, and left none.
        assert sorted(p.name for p in (tmp_path / "data").iterdir() if "snapshot" in p.name) == []
    finally:
        store.close()


def test_a_writer_commits_while_copies_are_taken(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "data")
    stop = threading.Event()
    copies: list[int] = []

    def copying() -> None:
        while not stop.is_set():
            with store.snapshot() as copy:
                copies.append(len(copy.read()))

    thread = threading.Thread(target=copying)
    thread.start()
    try:
        for i in range(200):
            store.apply([_insert(f"n{i}")])
    finally:
        stop.set()
        thread.join()
        store.close()
    assert copies


def test_restore_brings_a_schema_1_store_up_to_date(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as db:
        db.executescript(
            "CREATE TABLE checkpoint (name TEXT PRIMARY KEY, creation_flags TEXT NOT NULL, "
            "checkpoint_size INTEGER NOT NULL, max_section_id_size INTEGER NOT NULL, "
            "max_sections INTEGER NOT NULL, max_section_size INTEGER NOT NULL, retention REAL, "
            "has_active_replica INTEGER NOT NULL, generated_ids INTEGER NOT NULL);"
            "CREATE TABLE section (checkpoint TEXT NOT NULL, section_id BLOB NOT NULL, "
            "data BLOB NOT NULL, expiration REAL, state INTEGER NOT NULL, last_update REAL "
            "NOT NULL, PRIMARY KEY (checkpoint, section_id));"
            "CREATE TABLE library_checkpoint (name TEXT PRIMARY KEY);"
            "CREATE TABLE dataset (checkpoint TEXT NOT NULL, dataset_id INTEGER NOT NULL, "
            "group_id INTEGER NOT NULL, ordering INTEGER NOT NULL, data BLOB NOT NULL, "
            "elements_enabled INTEGER NOT NULL, PRIMARY KEY (checkpoint, dataset_id));"
            "CREATE TABLE element (checkpoint TEXT NOT NULL, dataset_id INTEGER NOT NULL, "
            "element_id BLOB NOT NULL, data BLOB NOT NULL, "
            "PRIMARY KEY (checkpoint, dataset_id, element_id));"
            "PRAGMA application_id=1129337649; PRAGMA user_version=1;"
        )
        db.execute("INSERT INTO library_checkpoint VALUES ('lib')")
    db.close()
    restored = restore(old, tmp_path / "data")
    assert restored.schema_version == 1 and restored.library_checkpoints == 1
    with sqlite3.connect(tmp_path / "data" / FILE_NAME) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


def test_restore_refuses_a_directory_a_node_holds(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "live")
    snapshot = tmp_path / "copy.db"
    try:
        with store.snapshot() as copy:
            snapshot.write_bytes(copy.read())
        (tmp_path / "live" / FILE_NAME).rename(tmp_path / "live" / "moved.sqlite3")
        with pytest.raises(StoreError, match="in use by another cps-server"):
            restore(snapshot, tmp_path / "live")
        assert not (tmp_path / "live" / FILE_NAME).exists()
    finally:
        store.close()
