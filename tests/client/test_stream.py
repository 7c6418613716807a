"""The callback stream and its selection object: losing the node (a real
child process), sequence gaps, and the pipe's readability."""

from __future__ import annotations

import signal
import time

import grpc
import pytest

from cps.client import (
    BadHandleError,
    Callbacks,
    CkptError,
    CreationAttributes,
    DispatchFlags,
    InvalidHandleError,
    Session,
    TryAgainError,
)
from cps.client._pending import PendingQueue, QueueClosed
from cps.client._router import QueueItem, Received
from cps.client._stream import CallbackStream
from cps.v1 import checkpoint_service_pb2 as pb
from cps.v1 import checkpoint_service_pb2_grpc as pb_grpc
from cps.v1 import types_pb2 as t
from tests.client.helpers import node_reason, readable, wait_until
from tests.processes import ServerProcess
from tests.support import running_node


def test_queue_selection_object_is_readable_exactly_while_items_wait() -> None:
    queue: PendingQueue[int] = PendingQueue()
    fd = queue.fileno()
    assert not readable(fd)
    queue.put(1)
    queue.put(2)
    assert readable(fd)
    assert queue.take() == 1
    assert readable(fd)
    assert queue.take() == 2
    assert not readable(fd)
    assert queue.take() is None
    queue.put(3)
    assert readable(fd)
    assert queue.take() == 3
    assert not readable(fd)


def test_queue_failure_is_sticky_after_the_items() -> None:
    queue: PendingQueue[int] = PendingQueue()
    queue.put(1)
    queue.fail(BadHandleError("gone"))
    assert queue.take() == 1
    for _ in range(2):
        assert readable(queue.fileno())
        with pytest.raises(BadHandleError):
            queue.take()
    queue.close()
    with pytest.raises(QueueClosed):
        queue.take()
    assert queue.wait(0) is False
    assert readable(queue.fileno())  # end of file: wakes whoever still waits


def test_a_sequence_gap_becomes_a_dropped_callback() -> None:
    queue: PendingQueue[QueueItem] = PendingQueue()
    stream = CallbackStream(stub=None, service_handle=1, queue=queue)
    for sequence in (1, 2, 5, 6):
        stream._receive(pb.Callback(sequence=sequence, dropped=pb.CallbacksDropped(count=0)))
    received = []
    while (item := queue.take()) is not None:
        assert isinstance(item, Received)
        received.append((item.callback.sequence, item.callback.dropped.count))
    assert received == [(1, 0), (2, 0), (0, 2), (5, 0), (6, 0)]


def test_a_stopped_node_ends_a_session_on_the_callers_channel_for_dispatch() -> None:
    """A session on the caller's channel never moves: the node's end is the
    session's (Session.connect would open it again on a node of its list)."""
    with (
        ServerProcess.start("--grace-seconds", "1") as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        session = Session(channel, Callbacks(), timeout=5)
        session.open("held", CreationAttributes())
        fd = session.selection_object()
        assert not readable(fd)
        server.popen.send_signal(signal.SIGTERM)
        server.popen.wait(15)
        assert readable(fd, timeout=10)
        for _ in range(2):  # sticky: every dispatch says so, fd stays readable
            with pytest.raises(BadHandleError):
                session.dispatch(DispatchFlags.ALL)
            assert readable(fd)
        with pytest.raises(BadHandleError):
            session.dispatch(DispatchFlags.BLOCKING)
        with pytest.raises(TryAgainError):
            session.finalize()  # the node is gone; the session is torn down anyway
        assert session.finalized
        with pytest.raises(BadHandleError):
            session.dispatch()


def test_a_restarted_node_no_longer_knows_a_session_on_the_callers_channel() -> None:
    """A killed node breaks the stream (retried); the node that comes back on
    the same port answers the re-attach with BAD_HANDLE, which dispatch
    raises (no failover on the caller's channel)."""
    with ServerProcess.start() as first:
        port = first.port
        channel = grpc.insecure_channel(first.address)
        session = Session(channel, timeout=5)
        fd = session.selection_object()
        first.popen.kill()
        first.popen.wait(15)
        assert not readable(fd, timeout=0.5)  # retrying, nothing to report yet
        with ServerProcess.start("--listen", f"127.0.0.1:{port}") as second:
            assert second.port == port
            assert readable(fd, timeout=15)
            with pytest.raises(BadHandleError) as caught:
                session.dispatch()
            assert isinstance(caught.value, CkptError)
            with pytest.raises(BadHandleError):
                session.finalize()
        channel.close()


def test_a_connected_session_comes_back_on_its_restarted_node() -> None:
    """Session.connect re-establishes its session when its (only) node
    restarts: the same Checkpoint object works again once the node is back
    (it keeps its checkpoints on disk), and dispatch reports the move."""
    moves: list[str] = []
    with ServerProcess.start() as first:
        port = first.port
        session = Session.connect(
            first.address, Callbacks(moved=lambda node, lost: moves.append(node)), timeout=5
        )
        checkpoint = session.open("comes-back", CreationAttributes(max_sections=2))
        section = checkpoint.section_create(b"s", b"v1")
        old_session, old_handle = session.handle, checkpoint.handle
        first.popen.kill()
        first.popen.wait(15)
        with ServerProcess.start("--listen", f"127.0.0.1:{port}") as second:
            assert second.port == port
            assert readable(session.selection_object(), timeout=20)
            assert session.dispatch() == 1
            assert moves == [second.address]
            assert session.handle != old_session
            # A new node process with another data dir: the checkpoint is gone,
            # so the handle is reported lost, not silently re-created.
            assert checkpoint.handle == old_handle
            with pytest.raises(InvalidHandleError):
                checkpoint.read(section)
            with session.open("after", CreationAttributes()) as again:
                assert again.status().number_of_sections == 0
            session.finalize()


def test_an_attached_session_outlives_the_idle_reaper() -> None:
    """The node reaps sessions with neither a stream nor calls; a Session's
    stream keeps it alive while a bare one (no stream) is reaped."""
    with running_node("--session-timeout-seconds", "0.2") as node:
        address = f"127.0.0.1:{node.port}"
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.CheckpointServiceStub(channel)
            bare = stub.Initialize(
                pb.InitializeRequest(version=t.Version(release_code="B", major_version=1))
            )

            def bare_is_gone() -> bool:
                request = pb.FinalizeRequest(service_handle=bare.service_handle)
                return node_reason(lambda: stub.Finalize(request)) == "CL_CKPT_ERR_BAD_HANDLE"

            with Session.connect(address, timeout=5) as session:
                checkpoint = session.open("kept-alive", CreationAttributes())
                assert wait_until(bare_is_gone, 5)
                time.sleep(0.5)  # several more sweeps, without a call on the session
                assert not readable(session.selection_object())
                assert checkpoint.status().number_of_sections == 0  # still open
