"""A failing disk: the waiting calls fail with CL_CKPT_INTERNAL_ERROR and
nothing they asked for is written, in memory or on disk."""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
from collections.abc import Sequence

import grpc
import pytest

from cps.server.storage.sqlite_store import Statement
from cps.v1 import checkpoint_service_pb2 as pb
from tests.support import RW, Client, running_node, seed_error, sid

# Where the commit runs: the event loop's thread (cheap commits) or the
# storage thread (slow ones, e.g. an fsync): both must keep the promises.
PLACES = {"on the loop": float("inf"), "on the storage thread": 0.0}


@pytest.fixture(params=list(PLACES))
def slow_commit_seconds(request: pytest.FixtureRequest) -> float:
    return PLACES[request.param]


def test_failed_commit_fails_the_call_and_writes_nothing(slow_commit_seconds: float) -> None:
    with running_node() as node, grpc.insecure_channel(f"127.0.0.1:{node.port}") as channel:
        node.journal.slow_commit_seconds = slow_commit_seconds
        client = Client(channel)
        handle = client.open("faulty")
        client.create_section(handle, b"a", b"before")
        store = node.journal.store
        real_apply = store.apply
        failures = [sqlite3.OperationalError("disk I/O error")] * 2

        def apply_failing(statements: Sequence[Statement]) -> None:
            if failures:
                raise failures.pop()
            real_apply(statements)

        store.apply = apply_failing  # type: ignore[method-assign]
        overwrite = pb.SectionOverwriteRequest(
            checkpoint_handle=handle, section_id=sid(b"a"), data_buffer=b"during"
        )
        with pytest.raises(grpc.RpcError) as caught:
            client.stub.SectionOverwrite(overwrite)
        code, reason, _ = seed_error(caught.value)
        assert (code, reason) == (grpc.StatusCode.INTERNAL, "CL_CKPT_INTERNAL_ERROR")
        with pytest.raises(grpc.RpcError) as caught:
            client.create_section(handle, b"lost", b"x")  # a full disk, say
        assert seed_error(caught.value)[1] == "CL_CKPT_INTERNAL_ERROR"
        assert client.read(handle, b"a") == b"before"
        with pytest.raises(grpc.RpcError) as caught:
            client.read(handle, b"lost")
        assert seed_error(caught.value)[1] == "CL_CKPT_ERR_NOT_EXIST"
        client.create_section(handle, b"b", b"after")  # the disk works again
        rows = dict((section_id, data) for _, section_id, data, *_ in store.load("section"))
        assert rows == {b"a": b"before", b"b": b"after"}


def test_notifications_wait_for_the_commit_of_their_change(slow_commit_seconds: float) -> None:
    with running_node() as node, grpc.insecure_channel(f"127.0.0.1:{node.port}") as channel:
        node.journal.slow_commit_seconds = slow_commit_seconds
        writer, watcher = Client(channel), Client(channel)
        handle = writer.open("gated")
        writer.create_section(handle, b"s", b"0")
        watched = watcher.open("gated", flags=RW)
        watcher.stub.ImmediateConsumptionRegister(
            pb.ImmediateConsumptionRegisterRequest(checkpoint_handle=watched)
        )
        stream = watcher.stub.Callbacks(pb.CallbacksRequest(service_handle=watcher.session))
        arrived: queue.Queue[pb.Callback] = queue.Queue()

        def read_stream() -> None:
            with contextlib.suppress(grpc.RpcError):
                for message in stream:
                    for callback in message.callbacks:
                        arrived.put(callback)

        threading.Thread(target=read_stream, daemon=True).start()
        store = node.journal.store
        real_apply = store.apply
        release = threading.Event()

        def slow_disk(statements: Sequence[Statement]) -> None:
            release.wait(10)
            real_apply(statements)

        store.apply = slow_disk  # type: ignore[method-assign]
        overwrite = threading.Thread(
            target=writer.stub.SectionOverwrite,
            args=(
                pb.SectionOverwriteRequest(
                    checkpoint_handle=handle, section_id=sid(b"s"), data_buffer=b"1"
                ),
            ),
        )
        overwrite.start()
        with pytest.raises(queue.Empty):
            arrived.get(timeout=0.5)  # applied in memory, not yet stored: not told
        release.set()
        callback = arrived.get(timeout=5)
        assert callback.notification.changed_sections[0].section_id.id == b"s"
        overwrite.join(timeout=5)
        stream.cancel()
