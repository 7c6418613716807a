"""Callbacks through the selection object and dispatch, against a real node."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from cps.client import (
    BadFlagError,
    BadHandleError,
    BadOperationError,
    Callbacks,
    ChangedSection,
    Checkpoint,
    CkptError,
    CreationAttributes,
    CreationFlags,
    DispatchFlags,
    NotExistError,
    NotInitializedError,
    SectionChange,
    Session,
)
from cps.server.node import Node
from tests.client.helpers import readable, wait_until
from tests.support import running_node


@dataclass
class Recorder:
    """Everything the callbacks saw, with the thread they ran in."""

    opened: list[tuple[int, Checkpoint | None, CkptError | None]] = field(default_factory=list)
    synchronized: list[tuple[int, CkptError | None]] = field(default_factory=list)
    notified: list[tuple[str, Checkpoint, list[ChangedSection]]] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    threads: set[threading.Thread] = field(default_factory=set)

    def open(self, invocation: int, checkpoint: Checkpoint | None, error: CkptError | None) -> None:
        self.threads.add(threading.current_thread())
        self.opened.append((invocation, checkpoint, error))

    def synchronize(self, invocation: int, error: CkptError | None) -> None:
        self.threads.add(threading.current_thread())
        self.synchronized.append((invocation, error))

    def notify(self, name: str, checkpoint: Checkpoint, sections: list[ChangedSection]) -> None:
        self.threads.add(threading.current_thread())
        self.notified.append((name, checkpoint, sections))

    def drop(self, count: int) -> None:
        self.dropped.append(count)

    def callbacks(self) -> Callbacks:
        return Callbacks(open=self.open, synchronize=self.synchronize, dropped=self.drop)


@pytest.fixture()
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture()
def app(address: str, recorder: Recorder) -> Iterator[Session]:
    """A session initialized with every callback of the recorder."""
    with Session.connect(address, recorder.callbacks(), timeout=10) as session:
        yield session


def test_seed_style_application(
    app: Session, recorder: Recorder, session: Session, name: str
) -> None:
    """Initialize with callbacks, open asynchronously, wait on the selection
    object, dispatch, register for immediate consumption and see another
    process's write arrive as a notification."""
    fd = app.selection_object()
    assert not readable(fd)
    app.open_async(42, name, CreationAttributes(max_sections=4, max_section_size=64))
    assert readable(fd, timeout=5)
    assert app.dispatch(DispatchFlags.ONE) == 1
    assert not readable(fd)
    [(invocation, checkpoint, error)] = recorder.opened
    assert (invocation, error) == (42, None)
    assert checkpoint is not None and checkpoint.name == name
    assert recorder.threads == {threading.current_thread()}

    checkpoint.immediate_consumption_register(recorder.notify)
    checkpoint.section_create(b"mine")
    with session.open(name) as writer:  # another session: another process
        writer.section_create(b"theirs")
        writer.write([(b"mine", b"M"), (b"theirs", b"T", 3)])
    assert wait_until(lambda: app.pending == 3)
    assert readable(fd)
    assert app.dispatch(DispatchFlags.ALL) == 3
    assert not readable(fd)
    assert [(n, c) for n, c, _ in recorder.notified] == [(name, checkpoint)] * 3
    assert [sections for _, _, sections in recorder.notified] == [
        [ChangedSection(b"mine", SectionChange.CREATED)],
        [ChangedSection(b"theirs", SectionChange.CREATED)],
        [
            ChangedSection(b"mine", SectionChange.WRITTEN),
            ChangedSection(b"theirs", SectionChange.WRITTEN),
        ],
    ]
    assert recorder.threads == {threading.current_thread()}
    assert checkpoint.read(b"theirs") == b"\0\0\0T"


def test_open_async_outcome_errors_come_to_the_callback(
    app: Session, recorder: Recorder, name: str
) -> None:
    app.open_async(7, name)  # no CREATE: the checkpoint does not exist
    assert readable(app.selection_object(), timeout=5)
    app.dispatch()
    [(invocation, checkpoint, error)] = recorder.opened
    assert (invocation, checkpoint) == (7, None)
    assert isinstance(error, NotExistError)
    assert error.reason == "CL_CKPT_ERR_NOT_EXIST" and name in error.message


def test_open_async_parameter_errors_raise_at_the_call(
    app: Session, recorder: Recorder, name: str
) -> None:
    both = CreationFlags.WR_ALL_REPLICAS | CreationFlags.WR_ACTIVE_REPLICA_WEAK
    with pytest.raises(BadFlagError):
        app.open_async(1, name, CreationAttributes(creation_flags=both))
    app.open_async(2, name, CreationAttributes())
    assert readable(app.selection_object(), timeout=5)
    app.dispatch()
    assert [(invocation, error) for invocation, _, error in recorder.opened] == [(2, None)]


def test_async_calls_need_their_callback(session: Session, name: str) -> None:
    with pytest.raises(NotInitializedError):
        session.open_async(1, name, CreationAttributes())
    checkpoint = session.open(name, CreationAttributes())
    with pytest.raises(NotInitializedError):
        checkpoint.synchronize_async(1)
    assert session.pending == 0


def test_dispatch_one_runs_one_and_all_runs_the_rest(
    app: Session, recorder: Recorder, name: str
) -> None:
    for invocation in (1, 2, 3):
        app.open_async(invocation, name, CreationAttributes())
    assert wait_until(lambda: app.pending == 3)
    assert app.dispatch(DispatchFlags.ONE) == 1
    assert [i for i, _, _ in recorder.opened] == [1]
    assert readable(app.selection_object())  # two still pending
    assert app.dispatch(DispatchFlags.ALL) == 2
    assert [i for i, _, _ in recorder.opened] == [1, 2, 3]
    assert not readable(app.selection_object())
    assert app.dispatch(DispatchFlags.ALL) == 0
    assert app.dispatch(DispatchFlags.ONE) == 0
    handles = {c.handle for _, c, _ in recorder.opened if c is not None}
    assert len(handles) == 3


def test_synchronize_async(app: Session, recorder: Recorder, name: str) -> None:
    with app.open(name, CreationAttributes()) as checkpoint:
        checkpoint.synchronize_async(11)
        assert readable(app.selection_object(), timeout=5)
        app.dispatch()
        assert recorder.synchronized == [(11, None)]
    synchronous = CreationAttributes(creation_flags=CreationFlags.WR_ALL_REPLICAS)
    with app.open(name + "-sync", synchronous) as checkpoint, pytest.raises(BadOperationError):
        checkpoint.synchronize_async(12)
    assert recorder.synchronized == [(11, None)]


def test_closing_a_handle_cancels_its_pending_notifications(
    app: Session, recorder: Recorder, name: str
) -> None:
    checkpoint = app.open(name, CreationAttributes())
    checkpoint.immediate_consumption_register(recorder.notify)
    checkpoint.section_create(b"a")
    assert wait_until(lambda: app.pending == 1)
    checkpoint.close()
    assert app.dispatch() == 1  # taken, but not run: the handle is closed
    assert recorder.notified == []
    assert not readable(app.selection_object())


def test_dispatch_blocking_runs_callbacks_until_finalize(
    app: Session, recorder: Recorder, name: str
) -> None:
    result: list[int] = []
    opened = threading.Event()
    callbacks = app.callbacks

    def open_callback(
        invocation: int, checkpoint: Checkpoint | None, error: CkptError | None
    ) -> None:
        recorder.open(invocation, checkpoint, error)
        opened.set()

    app.callbacks = Callbacks(open=open_callback, synchronize=callbacks.synchronize)
    dispatcher = threading.Thread(
        target=lambda: result.append(app.dispatch(DispatchFlags.BLOCKING))
    )
    dispatcher.start()
    app.open_async(5, name, CreationAttributes())
    assert opened.wait(5)
    assert dispatcher.is_alive()  # still blocking after running the callback
    assert recorder.threads == {dispatcher}
    app.finalize()
    dispatcher.join(5)
    assert not dispatcher.is_alive()
    assert result == [1]
    with pytest.raises(BadHandleError):
        app.dispatch()
    with pytest.raises(BadHandleError):
        app.dispatch(DispatchFlags.BLOCKING)


def test_a_callback_can_finalize_and_end_blocking_dispatch(address: str, name: str) -> None:
    def finalize_on_open(
        invocation: int, checkpoint: Checkpoint | None, error: CkptError | None
    ) -> None:
        session.finalize()

    with Session.connect(address, Callbacks(open=finalize_on_open)) as session:
        session.open_async(1, name, CreationAttributes())
        assert session.dispatch(DispatchFlags.BLOCKING) == 1
        assert session.finalized


def test_finalize_wakes_a_thread_waiting_on_the_selection_object(app: Session) -> None:
    fd = app.selection_object()
    woke = threading.Event()

    def wait() -> None:
        if readable(fd, timeout=10):
            woke.set()

    waiter = threading.Thread(target=wait)
    waiter.start()
    assert not woke.wait(0.2)
    app.finalize()
    assert woke.wait(5)
    waiter.join(5)
    with pytest.raises(BadHandleError):
        app.selection_object()


@pytest.fixture(scope="module")
def tiny_queue_node() -> Iterator[Node]:
    """A node whose per-session callback queue holds one callback."""
    with running_node("--max-callback-queue", "1") as running:
        yield running


def test_dropped_notifications_are_reported(tiny_queue_node: Node, recorder: Recorder) -> None:
    address = f"127.0.0.1:{tiny_queue_node.port}"
    with Session.connect(address, recorder.callbacks()) as session:
        handles = [session.open("dropping", CreationAttributes())]
        handles += [session.open("dropping") for _ in range(2)]
        handles[0].section_create(b"s")
        for checkpoint in handles:
            checkpoint.immediate_consumption_register(recorder.notify)
        # One write notifies three handles at once: the queue of one keeps the
        # last notification and reports the two it dropped.
        handles[0].write([(b"s", b"x")])
        assert wait_until(lambda: session.pending == 2)
        assert session.dispatch() == 2
        assert recorder.dropped == [2]
        [(_, checkpoint, sections)] = recorder.notified
        assert checkpoint in handles
        assert sections == [ChangedSection(b"s", SectionChange.WRITTEN)]
