"""The SQLite file of a node: schema, validation, load, and atomic batches.

One thread at a time touches the connection: the event loop's, or the
storage thread while it commits a slow batch (see journal.py).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

SCHEMA_VERSION = 2
# Schema 1 kept times as REAL seconds; 2 keeps exact integer nanoseconds.
APPLICATION_ID = 0x43505331  # "CPS1": tells our file from another SQLite file
FILE_NAME = "cps.sqlite3"
# Held (flock) for the life of the node: one node, one store.
LOCK_NAME = "cps.lock"
SQLITE_HEADER = b"SQLite format 3\x00"

Statement = tuple[str, Sequence[Any]]

_SCHEMA = """
CREATE TABLE checkpoint (
    name TEXT PRIMARY KEY,
    creation_flags TEXT NOT NULL,
    checkpoint_size INTEGER NOT NULL,
    max_section_id_size INTEGER NOT NULL,
    max_sections INTEGER NOT NULL,
    max_section_size INTEGER NOT NULL,
    retention INTEGER,
    has_active_replica INTEGER NOT NULL,
    generated_ids INTEGER NOT NULL
);
CREATE TABLE section (
    checkpoint TEXT NOT NULL,
    section_id BLOB NOT NULL,
    data BLOB NOT NULL,
    expiration INTEGER,
    state INTEGER NOT NULL,
    last_update INTEGER NOT NULL,
    PRIMARY KEY (checkpoint, section_id)
);
CREATE TABLE library_checkpoint (name TEXT PRIMARY KEY);
CREATE TABLE dataset (
    checkpoint TEXT NOT NULL,
    dataset_id INTEGER NOT NULL,
    group_id INTEGER NOT NULL,
    ordering INTEGER NOT NULL,
    data BLOB NOT NULL,
    elements_enabled INTEGER NOT NULL,
    PRIMARY KEY (checkpoint, dataset_id)
);
CREATE TABLE element (
    checkpoint TEXT NOT NULL,
    dataset_id INTEGER NOT NULL,
    element_id BLOB NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (checkpoint, dataset_id, element_id)
);
"""


class StoreError(Exception):
    """The data directory or file cannot be used; the message says why."""


class SqliteStore:
    schema_version = SCHEMA_VERSION

    def __init__(self, connection: sqlite3.Connection, path: Path, lock: int) -> None:
        self.connection = connection
        self.path = path
        self._lock = lock

    @classmethod
    def open(cls, data_dir: Path, synchronous: str = "FULL") -> SqliteStore:
        """Open or create the store, refusing anything that is not ours."""
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"cannot create data directory {data_dir}: {error}") from error
        if not data_dir.is_dir():
            raise StoreError(f"data directory {data_dir} is not a directory")
        if not os.access(data_dir, os.W_OK | os.X_OK):
            raise StoreError(f"data directory {data_dir} is not writable by this process")
        lock = lock_data_dir(data_dir)
        try:
            return cls._open_locked(data_dir, synchronous, lock)
        except BaseException:
            os.close(lock)
            raise

    @classmethod
    def _open_locked(cls, data_dir: Path, synchronous: str, lock: int) -> SqliteStore:
        path = data_dir / FILE_NAME
        if path.exists() and path.stat().st_size > 0:
            with path.open("rb") as file:
                if file.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                    raise StoreError(
                        f"{path} is not a CPS store (not an SQLite file); move it away"
                    )
        try:
            connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            store = cls(connection, path, lock)
            store._prepare(synchronous)
        except sqlite3.DatabaseError as error:
            raise StoreError(f"cannot use {path}: {error}") from error
        return store

    def _prepare(self, synchronous: str) -> None:
        db = self.connection
        application_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if application_id == 0 and tables == 0:
            self._create_schema()
        elif application_id != APPLICATION_ID:
            raise StoreError(f"{self.path} is an SQLite file of another application; move it away")
        elif version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer CPS (schema {version}; this server "
                f"knows {SCHEMA_VERSION}): upgrade the server, nothing was changed"
            )
        elif version < SCHEMA_VERSION:
            self._migrate(version)
        check = db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise StoreError(f"{self.path} is corrupt ({check}); restore it from a backup")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        if not os.access(self.path, os.W_OK):
            raise StoreError(f"{self.path} is not writable by this process")

    def _create_schema(self) -> None:
        db = self.connection
        db.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(f"PRAGMA application_id={APPLICATION_ID}")
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.execute("COMMIT")

    def _migrate(self, version: int) -> None:
        """Bring an older store up to this schema, in one transaction."""
        db = self.connection
        db.execute("BEGIN IMMEDIATE")
        try:
            if version == 1:
                # REAL seconds to INTEGER nanoseconds: rebuild the two tables
                # (a REAL column would turn nanoseconds back into floats).
                for table in ("checkpoint", "section"):
                    db.execute(f"ALTER TABLE {table} RENAME TO old_{table}")
                for statement in _SCHEMA.split(";"):
                    if "TABLE checkpoint " in statement or "TABLE section " in statement:
                        db.execute(statement)
                db.execute(
                    "INSERT INTO checkpoint SELECT name, creation_flags, checkpoint_size, "
                    "max_section_id_size, max_sections, max_section_size, "
                    "CAST(round(retention * 1e9) AS INTEGER), has_active_replica, "
                    "generated_ids FROM old_checkpoint"
                )
                db.execute(
                    "INSERT INTO section SELECT checkpoint, section_id, data, "
                    "CAST(round(expiration * 1e9) AS INTEGER), state, "
                    "CAST(round(last_update * 1e9) AS INTEGER) FROM old_section"
                )
                db.execute("DROP TABLE old_checkpoint")
                db.execute("DROP TABLE old_section")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def load(self, table: str, order_by: str = "rowid") -> list[tuple[Any, ...]]:
        return self.connection.execute(f"SELECT * FROM {table} ORDER BY {order_by}").fetchall()

    def apply(self, statements: Sequence[Statement]) -> None:
        """Run the statements as one transaction: all or nothing."""
        db = self.connection
        db.execute("BEGIN IMMEDIATE")
        try:
            for sql, parameters in statements:
                db.execute(sql, parameters)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def snapshot(self) -> BinaryIO:
        """A consistent copy of the file (service.ports.Snapshots), through a
        connection of its own, from any thread."""
        from .snapshot import take

        return take(self.path)

    def close(self) -> None:
        self.connection.close()
        os.close(self._lock)


def lock_data_dir(data_dir: Path) -> int:
    """Take the data directory for this process, or say who has it."""
    path = data_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as error:
        raise StoreError(f"cannot create {path}: {error}") from error
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreError(
            f"data directory {data_dir} is in use by another cps-server (pid {holder}); "
            "each node needs its own --data-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd
