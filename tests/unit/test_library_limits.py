"""Library checkpoints against the node's limits (max_reserved_bytes and
max_checkpoints shared with the server checkpoints, max_library_handles) and
the reaping of idle library handles."""

from __future__ import annotations

from cps.server.core.errors import ErrorCode
from cps.server.core.library import LibraryManager
from cps.server.core.limits import Limits, Usage
from cps.server.core.replica import Ref, Replica
from cps.server.core.replicas import Replicas
from cps.server.core.types import NANOS_PER_SECOND

from .conftest import attributes, fails


class Server:
    """What the server checkpoints hold, as the node's Replicas would say."""

    def __init__(self, checkpoints: int = 0, reserved: int = 0) -> None:
        self.held = Usage(checkpoints, reserved)

    def usage(self) -> Usage:
        return self.held


def _library(limits: Limits, server: Server | None = None) -> tuple[LibraryManager, int]:
    library = LibraryManager(None, limits, (server or Server()).usage)
    return library, library.initialize()


def test_library_bytes_count_against_max_reserved_bytes() -> None:
    server = Server(reserved=1000)
    library, handle = _library(Limits(max_reserved_bytes=2000), server)
    library.create(handle, "lib")
    library.dataset_create(handle, "lib", 1, 0, 0)
    library.dataset_write(handle, "lib", 1, b"x" * 600)
    assert library.bytes == 600
    with fails(ErrorCode.NO_MEMORY) as refused:
        library.dataset_write(handle, "lib", 1, b"y" * 1001)  # 1000 + 1001 > 2000
    assert "max_reserved_bytes=2000" in refused.value.message
    # Nothing was written.
    assert library.dataset_read(handle, "lib", 1).data == b"x" * 600
    assert library.bytes == 600
    library.dataset_write(handle, "lib", 1, b"y" * 1000)  # exactly the limit
    # Elements count with their ids.
    library.element_create(handle, "lib", 1)
    library.dataset_write(handle, "lib", 1, b"y" * 900)
    with fails(ErrorCode.NO_MEMORY):
        library.element_write(handle, "lib", 1, b"id", b"z" * 99)
    assert library.dataset_read(handle, "lib", 1).elements == {}
    library.element_write(handle, "lib", 1, b"id", b"z" * 98)
    assert library.bytes == 1000
    # Rewriting an element counts only the difference; shrinking always works.
    library.element_write(handle, "lib", 1, b"id", b"z" * 8)
    assert library.bytes == 910
    # The server checkpoints grew meanwhile (a limit lowered at restart):
    # what holds no more bytes still goes through.
    server.held = Usage(0, 1990)
    library.dataset_write(handle, "lib", 1, b"short")
    with fails(ErrorCode.NO_MEMORY):
        library.dataset_write(handle, "lib", 1, b"longer than that")
    # Deleting gives the bytes back.
    library.dataset_delete(handle, "lib", 1)
    assert library.bytes == 0
    library.dataset_create(handle, "lib", 2, 0, 0)
    library.dataset_write(handle, "lib", 2, b"abc")
    library.delete(handle, "lib")
    assert library.bytes == 0


def test_recount_after_loading() -> None:
    library, handle = _library(Limits())
    library.create(handle, "lib")
    library.dataset_create(handle, "lib", 1, 0, 0)
    library.element_create(handle, "lib", 1)
    library.dataset_write(handle, "lib", 1, b"1234")
    library.element_write(handle, "lib", 1, b"e", b"56")
    expected = library.bytes
    assert expected == 7
    library.bytes = 0  # as after the store loaded it behind the manager's back
    library.recount()
    assert library.bytes == expected


def test_server_checkpoints_see_the_library_bytes() -> None:
    library, handle = _library(Limits())
    replicas = Replicas(Limits(max_reserved_bytes=1000), library.usage)
    library.create(handle, "lib")
    library.dataset_create(handle, "lib", 1, 0, 0)
    library.dataset_write(handle, "lib", 1, b"x" * 700)
    with fails(ErrorCode.NO_MEMORY):
        replicas.admit(attributes(checkpoint_size=301))
    replicas.admit(attributes(checkpoint_size=300))


def test_library_checkpoints_count_against_max_checkpoints() -> None:
    server = Server(checkpoints=1)
    library, handle = _library(Limits(max_checkpoints=3), server)
    library.create(handle, "a")
    library.create(handle, "b")
    with fails(ErrorCode.NO_MEMORY):
        library.create(handle, "c")
    assert not library.exists(handle, "c")
    assert library.create(handle, "a") is False  # finding one is no new checkpoint
    library.delete(handle, "b")
    library.create(handle, "c")
    # And the server checkpoints count the library's.
    replicas = Replicas(Limits(max_checkpoints=3), library.usage)
    replicas.admit(attributes())  # 2 library + 0 server
    replicas.add(Replica(Ref("server", 1), attributes(), None, 0, None))
    with fails(ErrorCode.NO_MEMORY):
        replicas.admit(attributes())


def test_max_library_handles() -> None:
    library = LibraryManager(None, Limits(max_library_handles=2))
    first = library.initialize("a")
    library.initialize("b")
    with fails(ErrorCode.NO_MEMORY):
        library.initialize("c")
    library.finalize(first)
    library.initialize("c")


def test_idle_library_handles_are_reaped() -> None:
    now = [0]
    library = LibraryManager(None, Limits(library_handle_timeout_seconds=10.0), now=lambda: now[0])
    idle = library.initialize()
    busy = library.initialize()
    library.create(busy, "lib")
    now[0] = 9 * NANOS_PER_SECOND
    library.exists(busy, "lib")  # a call naming the handle is a use
    now[0] = 10 * NANOS_PER_SECOND
    assert library.reap_idle(now[0]) == []  # idle exactly the timeout: kept
    now[0] = 10 * NANOS_PER_SECOND + 1
    assert library.reap_idle(now[0]) == [idle]
    with fails(ErrorCode.LIB_INVALID_HANDLE):
        library.exists(idle, "lib")
    assert set(library.handles) == {busy}
    # What the reaped handle's client stored stays.
    now[0] = 30 * NANOS_PER_SECOND
    assert library.reap_idle(now[0]) == [busy]
    assert set(library.checkpoints) == {"lib"}
