"""A CPS session (clCkptInitialize ... clCkptFinalize): the service handle,
the selection object and dispatch, and the session-level seed functions."""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import grpc

from cps.v1 import checkpoint_service_pb2 as pb
from cps.v1 import checkpoint_service_pb2_grpc as pb_grpc

from . import _convert, _requests
from ._closing import close_on_exit
from ._connect import channel_options, first_serving, open_channel
from ._pending import PendingQueue, QueueClosed
from ._router import Dropped, Notified, Opened, Router, Synchronized
from ._rpc import invoke
from ._stream import CallbackStream
from .callbacks import Callbacks
from .checkpoint import Checkpoint
from .errors import BadHandleError, NotInitializedError
from .values import (
    CLIENT_VERSION,
    CreationAttributes,
    DispatchFlags,
    Duration,
    OpenFlags,
    Version,
)

log = logging.getLogger("cps.client")


class Session:
    """One initialization of the Checkpoint Service (ClCkptSvcHdlT).

    ``Session.connect(target, callbacks)`` opens a channel of its own;
    ``Session(channel, callbacks)`` uses one the caller owns. Either way a
    background thread keeps the session's callback stream attached (which also
    keeps the session alive on the node) and queues what arrives; callbacks
    run only in ``dispatch``, in the caller's thread.

    ``timeout`` is the default deadline of every call (None: none).
    A context manager: leaving the ``with`` block finalizes the session.
    """

    def __init__(
        self,
        channel: grpc.Channel,
        callbacks: Callbacks | None = None,
        *,
        version: Version = CLIENT_VERSION,
        timeout: Duration | None = None,
        _owns_channel: bool = False,
    ) -> None:
        self.callbacks = callbacks or Callbacks()
        self._channel = channel
        self._owns_channel = _owns_channel
        self._stub = pb_grpc.CheckpointServiceStub(channel)
        self._timeout = timeout
        self._lock = threading.Lock()
        self._finalized = False
        self._router: Router[Checkpoint] = Router(
            lambda handle, name, flags: Checkpoint(self, handle, name, flags)
        )
        response: pb.InitializeResponse = invoke(self._stub, _requests.initialize(version), timeout)
        self.handle: int = response.service_handle
        self.version: Version = _convert.version_of(response.version)
        self._queue: PendingQueue[pb.Callback] = PendingQueue()
        self._stream = CallbackStream(self._stub, self.handle, self._queue)
        self._stream.start()
        # Dropped without finalize: at least stop reading (the node reaps
        # sessions without a stream).
        self._stop_on_collect = weakref.finalize(self, self._stream.stop, 0)

    @classmethod
    def connect(
        cls,
        target: str,
        callbacks: Callbacks | None = None,
        *,
        version: Version = CLIENT_VERSION,
        timeout: Duration | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> Session:
        """clCkptInitialize on the node at ``target`` ("host:port"): a
        channel of its own (TLS with ``credentials``), closed at finalize.
        ``target`` may list nodes, "a:50051,b:50051": the first that serves
        is used (a standby or an unreachable node is skipped).
        Raises VersionMismatchError (with ``.supported``) if the node does
        not support ``version``."""
        opened = channel_options(options)
        return first_serving(
            target,
            lambda one: open_channel(one, opened, credentials),
            lambda channel: cls(
                channel, callbacks, version=version, timeout=timeout, _owns_channel=True
            ),
        )

    def __repr__(self) -> str:
        state = "finalized" if self._finalized else "open"
        return f"<Session handle={self.handle} {state}>"

    @property
    def finalized(self) -> bool:
        return self._finalized

    # -- calls ----------------------------------------------------------------

    def _call(self, call: _requests.Call, timeout: Duration | None = None) -> Any:
        if self._finalized:
            raise BadHandleError(f"session {self.handle} is finalized")
        return invoke(self._stub, call, self._timeout if timeout is None else timeout)

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
        flags = _requests.default_open_flags(attributes, flags)
        response: pb.CheckpointOpenResponse = self._call(
            _requests.checkpoint_open(self.handle, name, attributes, flags), timeout
        )
        return self._router.adopt(response.checkpoint_handle, name, flags)

    def open_async(
        self,
        invocation: int,
        name: str,
        attributes: CreationAttributes | None = None,
        flags: OpenFlags | None = None,
    ) -> None:
        """clCkptCheckpointOpenAsync: parameter errors raise here; the outcome
        comes to ``Callbacks.open(invocation, checkpoint, error)`` through
        ``dispatch``."""
        if self.callbacks.open is None:
            raise NotInitializedError("open_async needs Callbacks(open=...) at Session.connect")
        flags = _requests.default_open_flags(attributes, flags)
        call = _requests.checkpoint_open_async(self.handle, invocation, name, attributes, flags)
        self._router.expect_open(invocation, name, flags)
        try:
            self._call(call)
        except BaseException:
            self._router.cancel_open(invocation, name, flags)
            raise

    def delete(self, name: str) -> None:
        """clCkptCheckpointDelete: unlinks the name; openers keep their access."""
        self._call(_requests.checkpoint_delete(self.handle, name))

    # -- callbacks --------------------------------------------------------------------

    def selection_object(self) -> int:
        """clCkptSelectionObjectGet: a file descriptor readable exactly while
        callbacks wait for ``dispatch`` (for select/poll/selectors). Valid
        until ``finalize``, which leaves it readable (end of file) to wake any
        waiter."""
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
        stream's error if the node lost the session."""
        if flags is DispatchFlags.BLOCKING:
            return self._dispatch_blocking()
        count = 0
        for _ in range(1 if flags is DispatchFlags.ONE else max(len(self._queue), 1)):
            callback = self._take()
            if callback is None:
                break
            self._run(callback)
            count += 1
        return count

    def _take(self) -> pb.Callback | None:
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
                callback = self._queue.take()
            except QueueClosed:
                break
            if callback is not None:
                self._run(callback)
                count += 1
        return count

    def _run(self, callback: pb.Callback) -> None:
        event = self._router.route(callback)
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

    # -- finalize ---------------------------------------------------------------------------

    def finalize(self) -> None:
        """clCkptFinalize: closes every checkpoint of the session, cancels its
        pending callbacks, ends ``dispatch(BLOCKING)`` and closes an owned
        channel. Finalizing again does nothing."""
        with self._lock:
            if self._finalized:
                return
            self._finalized = True
        self._stop_on_collect.detach()
        try:
            self._stream.stop()
            invoke(self._stub, _requests.finalize(self.handle), self._timeout)
        finally:
            self._queue.close()
            for checkpoint in self._router.forget_all():
                checkpoint._mark_closed()
            if self._owns_channel:
                self._channel.close()

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
