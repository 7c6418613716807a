"""A CPS session (clCkptInitialize ... clCkptFinalize): the service handle,
the selection object and dispatch, and the session-level seed functions.

The threaded shell of the session: it performs the effects of the plans of
``_failover.Core`` (RPCs, sleeps, moves to another node) with blocking
calls; every decision about retrying and moving is made there.
"""

from __future__ import annotations

import functools
import logging
import threading
import weakref
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc

from cps.v1 import checkpoint_service_pb2 as pb
from cps.v1 import checkpoint_service_pb2_grpc as pb_grpc

from . import _requests
from ._closing import close_on_exit
from ._connect import alive, channel_options, open_channel
from ._failover import (
    DEFAULT_TIMEOUT,
    FIRST_BACKOFF,
    NEW_LINK,
    PROBE_AFTER,
    Attempt,
    CheckpointRef,
    Core,
    IterationRef,
    Move,
    NodeFrozen,
    NotConnected,
    Plan,
    Sleep,
    StaleLink,
    remaining,
)
from ._pending import PendingQueue, QueueClosed
from ._router import Dropped, Moved, Notified, Opened, QueueItem, Router, Synchronized
from ._stream import CallbackStream
from .callbacks import Callbacks
from .checkpoint import Checkpoint
from .errors import (
    BadHandleError,
    CkptError,
    NotInitializedError,
    TryAgainError,
    VersionMismatchError,
    from_rpc_error,
)
from .values import (
    CLIENT_VERSION,
    CreationAttributes,
    DispatchFlags,
    Duration,
    OpenFlags,
    Version,
    as_timedelta,
    split_targets,
)

log = logging.getLogger("cps.client")

T = TypeVar("T")
_MAX_STREAM_BACKOFF = 2.0


def seconds(timeout: Duration | None) -> float | None:
    return None if timeout is None else as_timedelta(timeout).total_seconds()


class _Link:
    """The session on one node: its channel, and the callback stream."""

    def __init__(self, target: str | None, channel: grpc.Channel, owned: bool) -> None:
        self.target = target
        self.channel = channel
        self.owned = owned
        self.stub = pb_grpc.CheckpointServiceStub(channel)
        self.generation = NEW_LINK
        self.stream: CallbackStream | None = None
        self.closed = False

    def close(self) -> None:
        """Leave the node: stop the stream, close an owned channel."""
        self.closed = True
        if self.stream is not None:
            self.stream.stop(0)
        if self.owned:
            self.channel.close()


class Session:
    """One initialization of the Checkpoint Service (ClCkptSvcHdlT).

    ``Session.connect(targets, callbacks)`` opens channels of its own and
    follows the cluster: when its node dies, freezes or refuses, the session
    moves to another node of the list and re-establishes itself there (see
    docs/clients/python.md). ``Session(channel, callbacks)`` uses one channel
    the caller owns and never moves. Either way a background thread keeps the
    session's callback stream attached (which also keeps the session alive
    on the node) and queues what arrives; callbacks run only in
    ``dispatch``, in the caller's thread.

    ``timeout`` is the default deadline of every call, in seconds or a
    timedelta (None: none); a call given its own ``timeout`` uses that.
    A context manager: leaving the ``with`` block finalizes the session.
    """

    def __init__(
        self,
        channel: grpc.Channel | None,
        callbacks: Callbacks | None = None,
        *,
        version: Version = CLIENT_VERSION,
        timeout: Duration | None = DEFAULT_TIMEOUT,
        _owns_channel: bool = False,
        _targets: list[str] | None = None,
        _open: Callable[[str], grpc.Channel] | None = None,
    ) -> None:
        self.callbacks = callbacks or Callbacks()
        self._given = channel
        self._owns_channel = _owns_channel
        self._open = _open
        self._finalized = False
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._move_lock = threading.Lock()
        me = weakref.ref(self)
        self._router: Router[Checkpoint] = Router(lambda ref: Checkpoint(_alive_ref(me), ref))
        self._core = Core(self._router, version, seconds(timeout), _targets)
        self._queue: PendingQueue[QueueItem] = PendingQueue()
        self._link: _Link | None = None
        self._links: list[_Link] = []  # the current one, for the collector
        # Dropped without finalize: at least stop reading (the node reaps
        # sessions without a stream).
        self._stop_on_collect = weakref.finalize(self, _close_links, self._links)
        self._move(0, self._core.deadline())

    @classmethod
    def connect(
        cls,
        target: str,
        callbacks: Callbacks | None = None,
        *,
        version: Version = CLIENT_VERSION,
        timeout: Duration | None = DEFAULT_TIMEOUT,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> Session:
        """clCkptInitialize on the first node of ``target`` that serves
        ("host:port", or a list "a:50051,b:50051,c:50051"), over channels of
        its own (TLS with ``credentials``), closed at finalize. The session
        then follows the cluster over that list. ``timeout`` is the default
        deadline of every call (10 s; None: none), the first Initialize
        included. Raises VersionMismatchError (with ``.supported``) if the
        node does not support ``version``, TryAgainError if no node serves."""
        opened = channel_options(options)
        return cls(
            None,
            callbacks,
            version=version,
            timeout=timeout,
            _targets=split_targets(target),
            _open=lambda one: open_channel(one, opened, credentials),
        )

    def __repr__(self) -> str:
        state = "finalized" if self._finalized else "open"
        return f"<Session handle={self.handle} node={self.node} {state}>"

    @property
    def handle(self) -> int:
        """The service handle on the node that serves the session now."""
        return self._core.session_handle

    @property
    def version(self) -> Version:
        return self._core.version

    @property
    def node(self) -> str | None:
        """The address of the node that serves the session (None: the
        caller's channel)."""
        return self._core.target

    @property
    def finalized(self) -> bool:
        return self._finalized

    # -- running plans -----------------------------------------------------------

    def _run(self, plan: Plan[T], attempt: Callable[[Attempt], Any] | None = None) -> T:
        """Perform the effects of ``plan`` until it returns."""
        perform = self._attempt if attempt is None else attempt
        value: Any = None
        failure: CkptError | None = None
        while True:
            try:
                effect = plan.send(value) if failure is None else plan.throw(failure)
            except StopIteration as done:
                result: T = done.value
                return result
            value, failure = None, None
            try:
                if isinstance(effect, Attempt):
                    value = perform(effect)
                elif isinstance(effect, Sleep):
                    if self._closing.wait(effect.seconds):
                        raise BadHandleError(f"session {self.handle} is finalized")
                elif isinstance(effect, Move):
                    self._move(effect.generation, effect.deadline)
            except CkptError as error:
                failure = error

    def _attempt(self, effect: Attempt) -> Any:
        link = self._link
        if link is None or (effect.generation != link.generation):
            raise StaleLink("the session moved")
        return self._attempt_on(link, effect)

    def _attempt_on(self, link: _Link, effect: Attempt) -> Any:
        """One RPC on ``link``. While it waits, the node is probed every
        PROBE_AFTER seconds (when the session follows the cluster): a node
        that no longer answers fails the call with NodeFrozen."""
        if link.closed:
            raise NotConnected(f"{effect.call.method}: not connected (the node was left)")
        try:
            future = getattr(link.stub, effect.call.method).future(
                effect.call.request, timeout=effect.timeout
            )
        except ValueError as closed:  # closed meanwhile
            raise NotConnected(f"{effect.call.method}: not connected") from closed
        probing = self._core.failover
        while True:
            try:
                return future.result(timeout=PROBE_AFTER if probing else None)
            except grpc.FutureTimeoutError:
                if not alive(link.channel):
                    future.cancel()
                    raise NodeFrozen(
                        f"{effect.call.method}: the node {link.target} stopped answering"
                    ) from None
            except grpc.FutureCancelledError:
                raise CkptError(
                    f"{effect.call.method}: cancelled (the node was left)",
                    code=grpc.StatusCode.CANCELLED,
                ) from None
            except grpc.RpcError as error:
                raise from_rpc_error(error) from error

    def _call(
        self,
        call: _requests.Call | Callable[[], _requests.Call],
        timeout: Duration | None = None,
        *,
        checkpoint: CheckpointRef | None = None,
        iteration: IterationRef | None = None,
        wanted: Callable[[], bool] | None = None,
    ) -> Any:
        if self._finalized:
            raise BadHandleError(f"session {self.handle} is finalized")
        build = call if callable(call) else (lambda: call)
        deadline = self._core.deadline(seconds(timeout))
        return self._run(
            self._core.call(
                build, deadline, checkpoint=checkpoint, iteration=iteration, wanted=wanted
            )
        )

    # -- moving ------------------------------------------------------------------------

    def _move(self, generation: int, deadline: float | None) -> None:
        """Leave the link of ``generation`` (if still current) for the first
        node of the list that takes the session back; raises the last
        node's error if none does."""
        left = remaining(deadline)
        if not self._move_lock.acquire(timeout=-1 if left is None else left):
            raise TryAgainError("the session is still moving to another node")
        try:
            if self._core.generation != generation or self._finalized:
                return
            old = self._link
            if old is not None and not old.closed:
                log.warning("leaving node %s; the session moves", old.target)
                old.close()
            last: CkptError | None = None
            for target in self._core.rotation():
                link = self._new_link(target)
                try:
                    result = self._run(
                        self._core.reestablish(deadline, self._router.refs()),
                        functools.partial(self._attempt_on, link),
                    )
                except VersionMismatchError:
                    link.close()
                    if generation == 0:
                        raise
                    continue
                except CkptError as error:
                    link.close()
                    last = error
                    if generation == 0 and error.from_node and not isinstance(error, TryAgainError):
                        raise
                    continue
                self._adopt(link, result)
                return
            raise last or TryAgainError("no node to move to")
        finally:
            self._move_lock.release()

    def _new_link(self, target: str | None) -> _Link:
        if target is None:
            assert self._given is not None
            return _Link(None, self._given, self._owns_channel)
        assert self._open is not None
        return _Link(target, self._open(target), True)

    def _adopt(self, link: _Link, result: Any) -> None:
        link.generation = self._core.generation + 1
        self._link = link
        self._links[:] = [link]
        queued = self._core.commit(result, link.target)
        generation = self._core.generation
        if generation > 1:
            log.warning("the session moved to node %s", link.target)
        me = weakref.ref(self)
        link.stream = CallbackStream(
            link.stub,
            result.session,
            self._queue,
            generation=generation,
            received=self._router.received,
            alive=lambda: alive(link.channel),
            on_lost=(
                (lambda error: _stream_lost(me, generation, error)) if self._core.failover else None
            ),
        )
        for item in queued:
            self._queue.put(item)
        link.stream.start()

    def _stream_lost(self, generation: int) -> None:
        """The stream of ``generation`` lost its node: move, retrying with
        backoff until it works or the session is finalized."""
        backoff = FIRST_BACKOFF
        while not self._finalized and self._core.generation == generation:
            try:
                self._move(generation, self._core.deadline(self._core.timeout or DEFAULT_TIMEOUT))
                return
            except CkptError as error:
                log.warning(
                    "the session could not move (%s); trying again in %.2fs", error, backoff
                )
            if self._closing.wait(backoff):
                return
            backoff = min(backoff * 2, _MAX_STREAM_BACKOFF)

    # -- session-level calls ------------------------------------------------------------

    def open(
        self,
        name: str,
        attributes: CreationAttributes | None = None,
        flags: OpenFlags | None = None,
        *,
        timeout: Duration | None = None,
    ) -> Checkpoint:
        """clCkptCheckpointOpen. ``flags`` None means READ | WRITE, plus CREATE
        when ``attributes`` are given. ``timeout`` is the call's deadline
        (None: the session's)."""
        if self._finalized:
            raise BadHandleError(f"session {self.handle} is finalized")
        flags = _requests.default_open_flags(attributes, flags)
        core = self._core
        response, generation = self._run(
            core.call_at(
                lambda: _requests.checkpoint_open(core.session_handle, name, attributes, flags),
                core.deadline(seconds(timeout)),
            )
        )
        assert isinstance(response, pb.CheckpointOpenResponse)
        return self._router.adopt(response.checkpoint_handle, name, flags, generation)

    def open_async(
        self,
        invocation: int,
        name: str,
        attributes: CreationAttributes | None = None,
        flags: OpenFlags | None = None,
    ) -> None:
        """clCkptCheckpointOpenAsync: parameter errors raise here; the outcome
        comes to ``Callbacks.open(invocation, checkpoint, error)`` through
        ``dispatch`` (CL_ERR_TRY_AGAIN if the session moved to another node
        before the answer came)."""
        if self.callbacks.open is None:
            raise NotInitializedError("open_async needs Callbacks(open=...) at Session.connect")
        flags = _requests.default_open_flags(attributes, flags)
        core = self._core
        self._router.expect_open(invocation, name, flags)
        try:
            self._call(
                lambda: _requests.checkpoint_open_async(
                    core.session_handle, invocation, name, attributes, flags
                ),
                wanted=lambda: self._router.open_unanswered(invocation),
            )
        except BaseException:
            self._router.cancel_open(invocation, name, flags)
            raise

    def delete(self, name: str) -> None:
        """clCkptCheckpointDelete: unlinks the name; openers keep their access."""
        core = self._core
        self._call(lambda: _requests.checkpoint_delete(core.session_handle, name))

    # -- callbacks --------------------------------------------------------------------

    def selection_object(self) -> int:
        """clCkptSelectionObjectGet: a file descriptor readable exactly while
        callbacks wait for ``dispatch`` (for select/poll/selectors). Valid
        until ``finalize``, which leaves it readable (end of file) to wake any
        waiter. It stays the same when the session moves."""
        if self._finalized:
            raise BadHandleError(f"session {self.handle} is finalized")
        return self._queue.fileno()

    @property
    def pending(self) -> int:
        """How many received callbacks wait for ``dispatch``."""
        return len(self._queue)

    def fileno(self) -> int:
        """The selection object, so the session itself can be given to select."""
        return self.selection_object()

    def dispatch(self, flags: DispatchFlags = DispatchFlags.ALL) -> int:
        """clCkptDispatch: run pending callbacks in this thread and return how
        many it took from the queue (a notification for a handle closed since
        is taken but not run). ONE: at most one; ALL: those pending now;
        BLOCKING: wait for and run callbacks until the session is finalized
        (by another thread or a callback). An exception from a callback propagates (the callbacks
        after it stay pending). Raises BadHandleError once finalized, and the
        stream's error if the node lost the session (a session on the
        caller's channel only: one that follows the cluster moves instead)."""
        if flags is DispatchFlags.BLOCKING:
            return self._dispatch_blocking()
        count = 0
        for _ in range(1 if flags is DispatchFlags.ONE else max(len(self._queue), 1)):
            item = self._take()
            if item is None:
                break
            self._deliver(item)
            count += 1
        return count

    def _take(self) -> QueueItem | None:
        try:
            return self._queue.take()
        except QueueClosed:
            raise BadHandleError(f"session {self.handle} is finalized") from None

    def _dispatch_blocking(self) -> int:
        if self._finalized:
            raise BadHandleError(f"session {self.handle} is finalized")
        count = 0
        while self._queue.wait():
            try:
                item = self._queue.take()
            except QueueClosed:
                break
            if item is not None:
                self._deliver(item)
                count += 1
        return count

    def _deliver(self, item: QueueItem) -> None:
        event = self._router.route(item)
        callbacks = self.callbacks
        if isinstance(event, Opened):
            if callbacks.open is not None:
                callbacks.open(event.invocation, event.checkpoint, event.error)
        elif isinstance(event, Synchronized):
            if callbacks.synchronize is not None:
                callbacks.synchronize(event.invocation, event.error)
        elif isinstance(event, Notified):
            notify = event.checkpoint.notification_callback
            if notify is not None:
                notify(event.name, event.checkpoint, event.sections)
        elif isinstance(event, Dropped):
            if callbacks.dropped is not None:
                callbacks.dropped(event.count)
            else:
                log.warning("the node dropped %d notifications", event.count)
        elif isinstance(event, Moved) and callbacks.moved is not None:
            callbacks.moved(event.node, event.lost)

    # -- finalize ---------------------------------------------------------------------------

    def finalize(self) -> None:
        """clCkptFinalize: closes every checkpoint of the session, cancels its
        pending callbacks, ends ``dispatch(BLOCKING)`` and closes an owned
        channel. Finalizing again does nothing. The node is asked once (no
        move): if it cannot be reached the session is torn down anyway and
        the error raised."""
        with self._lock:
            if self._finalized:
                return
            self._finalized = True
        self._closing.set()
        self._stop_on_collect.detach()
        left = self._core.timeout
        moving = self._move_lock.acquire(timeout=-1 if left is None else left)
        link = self._link
        try:
            if link is not None and not link.closed:
                if link.stream is not None:
                    link.stream.stop()
                effect = Attempt(
                    _requests.finalize(self._core.session_handle),
                    self._core.timeout,
                    link.generation,
                )
                self._attempt_on(link, effect)
        finally:
            if moving:
                self._move_lock.release()
            self._queue.close()
            for checkpoint in self._router.forget_all():
                checkpoint._mark_closed()
            if link is not None:
                link.close()

    close = finalize

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        close_on_exit(exc, self.finalize, f"finalizing {self!r}")


def _alive_ref(me: weakref.ref[Session]) -> Session:
    session = me()
    assert session is not None
    return session


def _stream_lost(me: weakref.ref[Session], generation: int, error: CkptError) -> None:
    session = me()
    if session is not None:
        session._stream_lost(generation)


def _close_links(links: list[_Link]) -> None:
    for link in links:
        if link.stream is not None:
            link.stream.stop(0)
