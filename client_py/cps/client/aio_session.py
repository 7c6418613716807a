"""The asyncio flavour of Session, over grpc.aio.

Callbacks queue up as they arrive (a task keeps the stream attached) and run
in ``await session.dispatch(...)``, in the caller's task; there is no
selection object: the event loop is the selector, and ``dispatch(BLOCKING)``
awaits until the session is finalized. A callback may be a coroutine
function: dispatch awaits it.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import grpc

from cps.v1 import checkpoint_service_pb2 as pb
from cps.v1 import checkpoint_service_pb2_grpc as pb_grpc

from . import _convert, _requests
from ._aio_pending import AsyncPendingQueue
from ._aio_stream import AsyncCallbackStream
from ._closing import close_on_exit_async
from ._connect import channel_options, first_serving_async, open_aio_channel
from ._pending import QueueClosed
from ._router import Dropped, Notified, Opened, Router, Synchronized
from ._rpc import invoke_async
from .aio_checkpoint import AsyncCheckpoint
from .callbacks import AsyncCallbacks
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


class AsyncSession:
    """One initialization of the Checkpoint Service, for asyncio code::

    async with await AsyncSession.connect("127.0.0.1:50051", callbacks) as session:
        async with await session.open("demo", CreationAttributes()) as checkpoint:
            ...
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        callbacks: AsyncCallbacks | None,
        timeout: Duration | None,
        owns_channel: bool,
    ) -> None:
        """Use ``AsyncSession.connect`` or ``AsyncSession.initialize``."""
        self.callbacks = callbacks or AsyncCallbacks()
        self._channel = channel
        self._owns_channel = owns_channel
        self._stub = pb_grpc.CheckpointServiceStub(channel)
        self._timeout = timeout
        self._finalized = False
        self._router: Router[AsyncCheckpoint] = Router(
            lambda handle, name, flags: AsyncCheckpoint(self, handle, name, flags)
        )
        self._queue: AsyncPendingQueue[pb.Callback] = AsyncPendingQueue()
        self.handle = 0
        self.version = CLIENT_VERSION
        self._stream: AsyncCallbackStream | None = None

    @classmethod
    async def initialize(
        cls,
        channel: grpc.aio.Channel,
        callbacks: AsyncCallbacks | None = None,
        *,
        version: Version = CLIENT_VERSION,
        timeout: Duration | None = None,
    ) -> AsyncSession:
        """clCkptInitialize over a grpc.aio channel the caller owns."""
        return await cls._start(cls(channel, callbacks, timeout, False), version)

    @classmethod
    async def connect(
        cls,
        target: str,
        callbacks: AsyncCallbacks | None = None,
        *,
        version: Version = CLIENT_VERSION,
        timeout: Duration | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> AsyncSession:
        """clCkptInitialize on the node at ``target`` over a channel of its
        own (as ``Session.connect``)."""
        opened = channel_options(options)
        return await first_serving_async(
            target,
            lambda one: open_aio_channel(one, opened, credentials),
            lambda channel: cls._start(cls(channel, callbacks, timeout, True), version),
        )

    @staticmethod
    async def _start(session: AsyncSession, version: Version) -> AsyncSession:
        response: pb.InitializeResponse = await invoke_async(
            session._stub, _requests.initialize(version), session._timeout
        )
        session.handle = response.service_handle
        session.version = _convert.version_of(response.version)
        session._stream = AsyncCallbackStream(session._stub, session.handle, session._queue)
        session._stream.start()
        return session

    def __repr__(self) -> str:
        state = "finalized" if self._finalized else "open"
        return f"<AsyncSession handle={self.handle} {state}>"

    @property
    def finalized(self) -> bool:
        return self._finalized

    @property
    def pending(self) -> int:
        """How many received callbacks wait for ``dispatch``."""
        return len(self._queue)

    async def _call(self, call: _requests.Call, timeout: Duration | None = None) -> Any:
        if self._finalized:
            raise BadHandleError(f"session {self.handle} is finalized")
        return await invoke_async(self._stub, call, self._timeout if timeout is None else timeout)

    # -- session-level calls ------------------------------------------------------

    async def open(
        self,
        name: str,
        attributes: CreationAttributes | None = None,
        flags: OpenFlags | None = None,
        *,
        timeout: Duration | None = None,
    ) -> AsyncCheckpoint:
        """clCkptCheckpointOpen (as ``Session.open``)."""
        flags = _requests.default_open_flags(attributes, flags)
        response: pb.CheckpointOpenResponse = await self._call(
            _requests.checkpoint_open(self.handle, name, attributes, flags), timeout
        )
        return self._router.adopt(response.checkpoint_handle, name, flags)

    async def open_async(
        self,
        invocation: int,
        name: str,
        attributes: CreationAttributes | None = None,
        flags: OpenFlags | None = None,
    ) -> None:
        """clCkptCheckpointOpenAsync (as ``Session.open_async``)."""
        if self.callbacks.open is None:
            raise NotInitializedError(
                "open_async needs AsyncCallbacks(open=...) at AsyncSession.connect"
            )
        flags = _requests.default_open_flags(attributes, flags)
        call = _requests.checkpoint_open_async(self.handle, invocation, name, attributes, flags)
        self._router.expect_open(invocation, name, flags)
        try:
            await self._call(call)
        except BaseException:
            self._router.cancel_open(invocation, name, flags)
            raise

    async def delete(self, name: str) -> None:
        """clCkptCheckpointDelete."""
        await self._call(_requests.checkpoint_delete(self.handle, name))

    # -- callbacks -------------------------------------------------------------------

    async def dispatch(self, flags: DispatchFlags = DispatchFlags.ALL) -> int:
        """clCkptDispatch, as ``Session.dispatch``: ONE, ALL (those pending
        now) or BLOCKING (until the session is finalized); returns how many
        callbacks it took."""
        if flags is DispatchFlags.BLOCKING:
            if self._finalized:
                raise BadHandleError(f"session {self.handle} is finalized")
            count = 0
            while await self._queue.wait():
                try:
                    callback = self._queue.take()
                except QueueClosed:
                    break
                if callback is not None:
                    await self._run(callback)
                    count += 1
            return count
        count = 0
        for _ in range(1 if flags is DispatchFlags.ONE else max(len(self._queue), 1)):
            try:
                callback = self._queue.take()
            except QueueClosed:
                raise BadHandleError(f"session {self.handle} is finalized") from None
            if callback is None:
                break
            await self._run(callback)
            count += 1
        return count

    async def _run(self, callback: pb.Callback) -> None:
        event = self._router.route(callback)
        callbacks = self.callbacks
        result: object = None
        if isinstance(event, Opened):
            if callbacks.open is not None:
                result = callbacks.open(event.invocation, event.checkpoint, event.error)
        elif isinstance(event, Synchronized):
            if callbacks.synchronize is not None:
                result = callbacks.synchronize(event.invocation, event.error)
        elif isinstance(event, Notified):
            notify = event.checkpoint.notification_callback
            if notify is not None:
                result = notify(event.name, event.checkpoint, event.sections)
        elif isinstance(event, Dropped):
            if callbacks.dropped is not None:
                result = callbacks.dropped(event.count)
            else:
                log.warning("the node dropped %d notifications", event.count)
        if inspect.isawaitable(result):
            await result

    # -- finalize -----------------------------------------------------------------------

    async def finalize(self) -> None:
        """clCkptFinalize (as ``Session.finalize``)."""
        if self._finalized:
            return
        self._finalized = True
        try:
            if self._stream is not None:
                await self._stream.stop()
            await invoke_async(self._stub, _requests.finalize(self.handle), self._timeout)
        finally:
            self._queue.close()
            for checkpoint in self._router.forget_all():
                checkpoint._mark_closed()
            if self._owns_channel:
                await self._channel.close()

    close = finalize

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await close_on_exit_async(exc, self.finalize, f"finalizing {self!r}")
