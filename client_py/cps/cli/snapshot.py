"""``cpsctl snapshot save FILE`` and ``cpsctl snapshot restore FILE --data-dir
DIR``, in the manner of etcd's ``etcdctl snapshot save`` and ``etcdutl
snapshot restore``.

``save`` streams a consistent copy of a live node's store
(AdminService.SnapshotSave) into ``FILE.part``, checks its size and SHA-256
against what the node sent, and only then renames it to ``FILE``. ``restore``
is offline: no node is asked; it checks the file with the store's own
validation and writes it into a NEW data directory (never over a store), for
a node started with ``--data-dir DIR``. That needs the server's storage code
(cps.server.storage.snapshot): cpsctl and cps-server ship in one
distribution, so it is there.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from tqdm import tqdm

from cps.v1 import admin_service_pb2 as admin

from .main import EXIT_ERROR, EXIT_OK, EXIT_USAGE, Command, Failure, _failure

Register = Callable[[str, Callable[[Command], int], str], argparse.ArgumentParser]


def _bar(total: int, shown: bool) -> tqdm[Any]:
    """A progress bar on stderr, for people only."""
    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc="snapshot",
        disable=not shown,
        file=sys.stderr,
        leave=False,
    )


def cmd_save(run: Command) -> int:
    target = Path(run.args.file)
    part = target.with_name(target.name + ".part")
    if target.is_dir():
        raise Failure(EXIT_USAGE, f"{target} is a directory")
    stub = run.admin  # connects: no endpoint answering is exit 3
    shown = not run.out.as_json and sys.stdout.isatty() and sys.stderr.isatty()
    info: admin.SnapshotInfo | None = None
    sent_digest = b""
    digest = hashlib.sha256()
    written = 0
    try:
        file = part.open("wb")
    except OSError as error:
        raise Failure(EXIT_ERROR, f"cannot write {part}: {error.strerror}") from error
    done = False
    try:
        with file, contextlib.ExitStack() as stack:
            # No deadline: a large store takes as long as it takes.
            stream = stub.SnapshotSave(admin.SnapshotSaveRequest())
            stack.callback(stream.cancel)
            bar: tqdm[Any] | None = None
            try:
                for message in stream:
                    part_name = message.WhichOneof("part")
                    if part_name == "info":
                        info = message.info
                        bar = stack.enter_context(_bar(info.size, shown))
                    elif part_name == "data":
                        file.write(message.data)
                        digest.update(message.data)
                        written += len(message.data)
                        if bar is not None:
                            bar.update(len(message.data))
                    elif part_name == "sha256":
                        sent_digest = message.sha256
            except grpc.RpcError as error:
                raise _failure(error, run.endpoint) from error
            except OSError as error:
                raise Failure(EXIT_ERROR, f"cannot write {part}: {error.strerror}") from error
            file.flush()
            os.fsync(file.fileno())
        if info is None or not sent_digest:
            raise Failure(EXIT_ERROR, f"{run.endpoint} ended the snapshot before it was whole")
        if written != info.size:
            raise Failure(
                EXIT_ERROR, f"snapshot is {written} bytes, the node announced {info.size}"
            )
        if digest.digest() != sent_digest:
            raise Failure(EXIT_ERROR, "snapshot checksum does not match what the node sent")
        os.replace(part, target)
        done = True
    finally:
        if not done:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
    result = {
        "file": str(target),
        "size": written,
        "sha256": digest.hexdigest(),
        "node": info.node,
        "endpoint": run.endpoint,
        "schema_version": info.schema_version,
        "version": info.version,
    }
    if run.out.as_json:
        run.out.json(result)
    else:
        print(
            f"saved {target}: {written} bytes, sha256 {result['sha256']}, "
            f"from node {info.node} ({run.endpoint}, cps {info.version}, schema "
            f"{info.schema_version})"
        )
    return EXIT_OK


def cmd_restore(run: Command) -> int:
    # The server's storage code, here only (restore needs no connection).
    from cps.server.storage.snapshot import restore
    from cps.server.storage.sqlite_store import StoreError

    source, data_dir = Path(run.args.file), Path(run.args.data_dir)
    try:
        restored = restore(source, data_dir)
    except StoreError as error:
        raise Failure(EXIT_ERROR, f"nothing restored: {error}") from error
    result = {
        "file": str(source),
        "data_dir": str(data_dir),
        "store": str(restored.path),
        "schema_version": restored.schema_version,
        "server_checkpoints": restored.server_checkpoints,
        "library_checkpoints": restored.library_checkpoints,
        "sections": restored.sections,
        "bytes": restored.bytes,
    }
    if run.out.as_json:
        run.out.json(result)
    else:
        print(
            f"restored {source} into {data_dir}: {restored.server_checkpoints} server "
            f"checkpoints ({restored.sections} sections, {restored.bytes} bytes), "
            f"{restored.library_checkpoints} library checkpoints; start a node with "
            f"--data-dir {data_dir}"
        )
    return EXIT_OK


def _usage(run: Command) -> int:
    raise Failure(EXIT_USAGE, "snapshot takes save FILE or restore FILE --data-dir DIR")


def register(command: Register) -> None:
    """Add ``snapshot save`` and ``snapshot restore`` to cpsctl's parser."""
    snapshot = command(
        "snapshot", _usage, "save a node's store to a file; restore one into a new data directory"
    )
    actions = snapshot.add_subparsers(dest="action", metavar="ACTION")
    json_help = argparse.SUPPRESS
    save = actions.add_parser(
        "save",
        help="a consistent copy of the answering node's store into FILE",
        description="Stream a consistent copy of the first answering node's store into "
        "FILE (through FILE.part, renamed once its size and SHA-256 check out); "
        "a progress bar on a terminal.",
    )
    save.add_argument("file", metavar="FILE")
    save.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=json_help)
    save.set_defaults(run=cmd_save)
    restore = actions.add_parser(
        "restore",
        help="offline: FILE into a new data directory DIR",
        description="Offline, no node asked: check that FILE is a CPS store this "
        "version reads and write it into DIR, which must not hold a store; then start "
        "a node with --data-dir DIR.",
    )
    restore.add_argument("file", metavar="FILE")
    restore.add_argument("--data-dir", required=True, metavar="DIR", help="the new data directory")
    restore.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=json_help)
    restore.set_defaults(run=cmd_restore)
