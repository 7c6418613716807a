"""Snapshots of a node's store, in the manner of etcd's: ``take`` copies the
live store as of one moment (AdminService.SnapshotSave streams the copy),
``restore`` turns a copy into a NEW data directory, offline, and never
touches a store that is already there (``cpsctl snapshot restore``).

``take`` reads through a connection of its own, on the caller's thread,
never the journal's (journal.py: the store's connection is the storage
thread's alone): ``VACUUM INTO`` copies what one read transaction sees, and
in WAL mode a reader holds up no writer, so commits go on meanwhile.
``restore`` checks the copy with the store's own validation
(``SqliteStore.open``: not SQLite, another application's file, a newer
schema, corruption) on a staging copy before anything reaches the data
directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .sqlite_store import (
    APPLICATION_ID,
    FILE_NAME,
    LOCK_NAME,
    SCHEMA_VERSION,
    SQLITE_HEADER,
    SqliteStore,
    StoreError,
    lock_data_dir,
)

# Where a copy is made, beside the store (same file system, its space).
_PREFIX = ".snapshot-"


def take(store: Path) -> BinaryIO:
    """A consistent copy of the store file ``store``, as an open file at its
    start; the file has no name any more (it goes when it is closed)."""
    fd, name = tempfile.mkstemp(prefix=_PREFIX, suffix=".tmp", dir=store.parent)
    os.close(fd)
    copy = Path(name)
    try:
        copy.unlink()  # VACUUM INTO wants a new file
        source = sqlite3.connect(f"file:{store}?mode=ro", uri=True, isolation_level=None)
        try:
            source.execute("VACUUM INTO ?", (str(copy),))
        finally:
            source.close()
        file = copy.open("rb")
    except sqlite3.Error as error:
        raise StoreError(f"cannot copy {store}: {error}") from error
    finally:
        with contextlib.suppress(FileNotFoundError):
            copy.unlink()
    return file


@dataclass(frozen=True, slots=True)
class Restored:
    """What a restored store holds."""

    path: Path
    schema_version: int  # of the snapshot (the store is now SCHEMA_VERSION)
    server_checkpoints: int
    library_checkpoints: int
    sections: int
    bytes: int


def inspect(snapshot: Path) -> int:
    """The schema version of ``snapshot`` if it is a CPS store this version
    reads, else StoreError saying what it is; reads only."""
    try:
        with snapshot.open("rb") as file:
            header = file.read(len(SQLITE_HEADER))
    except OSError as error:
        raise StoreError(f"cannot read {snapshot}: {error.strerror}") from error
    if header != SQLITE_HEADER:
        raise StoreError(f"{snapshot} is not a CPS snapshot (not an SQLite file)")
    try:
        db = sqlite3.connect(f"file:{snapshot}?mode=ro", uri=True, isolation_level=None)
        try:
            application_id = db.execute("PRAGMA application_id").fetchone()[0]
            version = db.execute("PRAGMA user_version").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error as error:
        raise StoreError(f"{snapshot} is not a usable CPS snapshot: {error}") from error
    if application_id != APPLICATION_ID:
        raise StoreError(f"{snapshot} is an SQLite file of another application, not CPS")
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{snapshot} was written by a newer CPS (schema {version}; this version "
            f"reads up to {SCHEMA_VERSION}): restore it with that version"
        )
    return int(version)


def restore(snapshot: Path, data_dir: Path) -> Restored:
    """Make ``data_dir`` a node's data directory holding ``snapshot``.

    Refuses (StoreError, nothing written) a snapshot that is not a sound CPS
    store of a schema this version reads, a ``data_dir`` that already holds
    a store, and one a running node has. An older schema is brought up to
    date, as a node would on start."""
    version = inspect(snapshot)
    if (data_dir / FILE_NAME).exists():
        raise StoreError(
            f"{data_dir} already holds a store ({FILE_NAME}); restore into a new directory"
        )
    if data_dir.exists() and not data_dir.is_dir():
        raise StoreError(f"{data_dir} is not a directory")
    created = not data_dir.exists()
    had_lock = (data_dir / LOCK_NAME).exists()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StoreError(f"cannot create data directory {data_dir}: {error}") from error
    done = False
    try:
        lock = lock_data_dir(data_dir)  # a node started on it meanwhile: refused
        try:
            result = _restore_locked(snapshot, data_dir, version)
            done = True
            return result
        finally:
            os.close(lock)
    finally:
        if not done:
            if not had_lock:
                with contextlib.suppress(FileNotFoundError):
                    (data_dir / LOCK_NAME).unlink()
            if created:
                with contextlib.suppress(OSError):
                    data_dir.rmdir()


def _restore_locked(snapshot: Path, data_dir: Path, version: int) -> Restored:
    staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=data_dir))
    try:
        try:
            shutil.copyfile(snapshot, staging / FILE_NAME)
        except OSError as error:
            raise StoreError(f"cannot copy {snapshot}: {error.strerror}") from error
        store = SqliteStore.open(staging)  # the node's own checks, and migration
        try:
            db = store.connection
            try:
                problems = [row[0] for row in db.execute("PRAGMA integrity_check").fetchall()]
                if problems != ["ok"]:
                    raise StoreError(f"{snapshot} is corrupt ({problems[0]})")
                counts = db.execute(
                    "SELECT (SELECT count(*) FROM checkpoint), "
                    "(SELECT count(*) FROM library_checkpoint), "
                    "(SELECT count(*) FROM section), "
                    "(SELECT coalesce(sum(length(data)), 0) FROM section)"
                ).fetchone()
                # One file, no WAL beside it: what the rename below moves is all.
                db.execute("PRAGMA journal_mode=DELETE")
            except sqlite3.Error as error:
                raise StoreError(f"{snapshot} is not a usable CPS snapshot: {error}") from error
        finally:
            store.close()
        target = data_dir / FILE_NAME
        if target.exists():
            raise StoreError(f"{data_dir} already holds a store ({FILE_NAME})")
        os.rename(staging / FILE_NAME, target)
        _sync_dir(data_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    server, library, sections, data = (int(n) for n in counts)
    return Restored(target, version, server, library, sections, data)


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
