"""The library API of the Python client: serializers run in the client, the
node stores their bytes, and an application killed together with the node
finds its state after both restart."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cps.client import Library, LibraryNotExistError
from tests.processes import ServerProcess


def test_serializers_run_here_with_the_cookie(address: str, name: str) -> None:
    calls: list[tuple[str, Any]] = []
    state = {"value": b"v1"}

    def serialize(dataset_id: int, cookie: Any) -> bytes:
        calls.append(("serialize", (dataset_id, cookie)))
        return state["value"]

    def deserialize(dataset_id: int, data: bytes, cookie: Any) -> None:
        calls.append(("deserialize", (dataset_id, data, cookie)))

    def serialize_element(dataset_id: int, element_id: bytes, cookie: Any) -> bytes:
        return b"element " + element_id

    def deserialize_element(dataset_id: int, element_id: bytes, data: bytes, cookie: Any) -> None:
        calls.append(("element", (element_id, data)))

    with Library.connect(address) as library:
        assert library.checkpoint_create(name)
        assert library.dataset_create(name, 5, serialize, deserialize)
        library.dataset_write(name, 5, cookie="w")
        library.element_create(name, 5, serialize_element, deserialize_element)
        library.element_write(name, 5, b"b")
        library.element_write(name, 5, b"a")
        state["value"] = b"v2"  # not written: the stored bytes stay v1
        library.dataset_read(name, 5, cookie="r")
    assert calls == [
        ("serialize", (5, "w")),
        ("deserialize", (5, b"v1", "r")),
        ("element", (b"a", b"element a")),
        ("element", (b"b", b"element b")),
    ]


def test_writing_a_dataset_needs_its_serializer_here(address: str, name: str) -> None:
    with Library.connect(address) as writer, Library.connect(address) as other:
        writer.checkpoint_create(name)
        writer.dataset_create(name, 1, lambda _, __: b"x", lambda *_: None)
        assert other.dataset_exists(name, 1)
        with pytest.raises(LibraryNotExistError, match="no serializer registered"):
            other.dataset_write(name, 1)


def test_app_killed_with_the_node_finds_its_state_after_both_restart(tmp_path: Path) -> None:
    data = ("--data-dir", str(tmp_path))
    versions = 30
    with ServerProcess.start(*data) as first:
        app = subprocess.Popen(
            [sys.executable, "-m", "tests.apps.library_app", first.address, "write", str(versions)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert app.stdout is not None
            last = ""
            for _ in range(versions):
                last = app.stdout.readline().strip()
            assert last == f"acknowledged {versions - 1}"
        finally:
            app.kill()  # SIGKILL the application and, at once, the node
            first.popen.kill()
            app.wait(timeout=10)
            first.popen.wait(timeout=10)
    with ServerProcess.start(*data) as second:
        result = subprocess.run(
            [sys.executable, "-m", "tests.apps.library_app", second.address, "read"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["state"] == {"version": versions - 1, "items": list(range((versions - 1) % 7))}
    assert found["events"] == versions
