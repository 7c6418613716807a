"""The asyncio flavour of Session, over grpc.aio.

Callbacks queue up as they arrive (a task keeps the stream attached) and run
in ``await session.dispatch(...)``, in the caller's task; there is no
selection object: the event loop is the selector, and ``dispatch(BLOCKING)``
awaits until the session is finalized. A callback may be a coroutine
function: dispatch awaits it.

The asyncio shell of the session: it performs the effects of the plans of
``_failover.Core`` (the same plans as the threaded Session) with awaits.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc

from cps.v1 import checkpoint_service_pb2 as pb
from cps.v1 import checkpoint_service_pb2_grpc as pb_grpc

from . import _requests
from ._aio_pending import AsyncPendingQueue
from ._aio_stream import AsyncCallbackStream
from ._closing import close_on_exit_async
from ._connect import alive_async, channel_options, open_aio_channel
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
    Reestablished,
    Sleep,
    StaleLink,
    remaining,
)
from ._pending import QueueClosed
from ._router import Dropped, Moved, Notified, Opened, QueueItem, Router, Synchronized
from .aio_checkpoint import AsyncCheckpoint
from .callbacks import AsyncCallbacks
from .errors import (
    BadHandleError,
    CkptError,
    NotInitializedError,
    TryAgainError,
    VersionMismatchError,
    from_rpc_error,
)
from .session import seconds
from .values import (
    CLIENT_VERSION,
    CreationAttributes,
    DispatchFlags,
    Duration,
    OpenFlags,
    Version,
    split_targets,
)

log = logging.getLogger("cps.client")

T = TypeVar("T")
_MAX_STREAM_BACKOFF = 2.0


class _AsyncLink:
    def __init__(self, target: str | None, channel: grpc.aio.Channel, owned: bool) -> None:
        self.target = target
        self.channel = channel
        self.owned = owned
        self.stub = pb_grpc.CheckpointServiceStub(channel)
        self.generation = NEW_LINK
        self.stream: AsyncCallbackStream | None = None
        self.closed = False

    async def close(self) -> None:
        self.closed = True
        if self.stream is not None:
            await self.stream.stop()
        if self.owned:
            await self.channel.close()


class AsyncSession:
    """One initialization of the Checkpoint Service, for asyncio code::

    async with await AsyncSession.connect("127.0.0.1:50051", callbacks) as session:
        async with await session.open("demo", CreationAttributes()) as checkpoint:
            ...

    ``connect`` follows the cluster over its list of nodes, as
    ``Session.connect``; ``initialize`` uses a channel the caller owns and
    never moves.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel | None,
        callbacks: AsyncCallbacks | None,
        timeout: Duration | None,
        owns_channel: bool,
        *,
        version: Version = CLIENT_VERSION,
        targets: list[str] | None = None,
        open_one: Callable[[str], grpc.aio.Channel] | None = None,
    ) -> None:
        """Use ``AsyncSession.connect`` or ``AsyncSession.initialize``."""
        self.callbacks = callbacks or AsyncCallbacks()
        self._given = channel
        self._owns_channel = owns_channel
        self._open = open_one
        self._finalized = False
        self._closing = asyncio.Event()
        self._move_lock = asyncio.Lock()
        me = weakref.ref(self)
        self._router: Router[AsyncCheckpoint] = Router(
            lambda ref: AsyncCheckpoint(_alive_ref(me), ref)
        )
        self._core = Core(self._router, version, seconds(timeout), targets)
        self._queue: AsyncPendingQueue[QueueItem] = AsyncPendingQueue()
        self._link: _AsyncLink | None = None

    @classmethod
    async def initialize(
        cls,
        channel: grpc.aio.Channel,
        callbacks: AsyncCallbacks | None = None,
        *,
        version: Version = CLIENT_VERSION,
        timeout: Duration | None = DEFAULT_TIMEOUT,
    ) -> AsyncSession:
        """clCkptInitialize over a grpc.aio channel the caller owns (no
        failover)."""
        session = cls(channel, callbacks, timeout, False, version=version)
        await session._move(0, session._core.deadline())
        return session

    @classmethod
    async def connect(
        cls,
        target: str,
        callbacks: AsyncCallbacks | None = None,
        *,
        version: Version = CLIENT_VERSION,
        timeout: Duration | None = DEFAULT_TIMEOUT,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> AsyncSession:
        """clCkptInitialize on the first node of ``target`` that serves, over
        channels of its own; the session follows the cluster over that list
        (as ``Session.connect``)."""
        opened = channel_options(options)
        session = cls(
            None,
            callbacks,
            timeout,
            True,
            version=version,
            targets=split_targets(target),
            open_one=lambda one: open_aio_channel(one, opened, credentials),
        )
        await session._move(0, session._core.deadline())
        return session

    def __repr__(self) -> str:
        state = "finalized" if self._finalized else "open"
        return f"<AsyncSession handle={self.handle} node={self.node} {state}>"

    @property
    def handle(self) -> int:
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

    @property
    def pending(self) -> int:
        """How many received callbacks wait for ``dispatch``."""
        return len(self._queue)

    # -- running plans ---------------------------------------------------------------

    async def _run(
        self, plan: Plan[T], attempt: Callable[[Attempt], Awaitable[Any]] | None = None
    ) -> T:
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
                    value = await perform(effect)
                elif isinstance(effect, Sleep):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._closing.wait(), effect.seconds)
                    if self._closing.is_set():
                        raise BadHandleError(f"session {self.handle} is finalized")
                elif isinstance(effect, Move):
                    await self._move(effect.generation, effect.deadline)
            except CkptError as error:
                failure = error

    async def _attempt(self, effect: Attempt) -> Any:
        link = self._link
        if link is None or effect.generation != link.generation:
            raise StaleLink("the session moved")
        return await self._attempt_on(link, effect)

    async def _attempt_on(self, link: _AsyncLink, effect: Attempt) -> Any:
        if link.closed:
            raise NotConnected(f"{effect.call.method}: not connected (the node was left)")
        try:
            call = getattr(link.stub, effect.call.method)(
                effect.call.request, timeout=effect.timeout
            )
        except (ValueError, RuntimeError) as closed:
            raise NotConnected(f"{effect.call.method}: not connected") from closed
        task: asyncio.Future[Any] = asyncio.ensure_future(call)
        probing = self._core.failover
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=PROBE_AFTER if probing else None)
                if done:
                    try:
                        return task.result()
                    except grpc.RpcError as error:
                        raise from_rpc_error(error) from error
                    except asyncio.CancelledError:
                        raise CkptError(
                            f"{effect.call.method}: cancelled (the node was left)",
                            code=grpc.StatusCode.CANCELLED,
                        ) from None
                if not await alive_async(link.channel):
                    raise NodeFrozen(
                        f"{effect.call.method}: the node {link.target} stopped answering"
                    )
        finally:
            if not task.done():
                call.cancel()
                task.cancel()

    async def _call(
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
        return await self._run(
            self._core.call(
                build, deadline, checkpoint=checkpoint, iteration=iteration, wanted=wanted
            )
        )

    # -- moving -------------------------------------------------------------------------

    async def _move(self, generation: int, deadline: float | None) -> None:
        """As ``Session._move``."""
        try:
            await asyncio.wait_for(self._move_lock.acquire(), remaining(deadline))
        except TimeoutError:
            raise TryAgainError("the session is still moving to another node") from None
        try:
            if self._core.generation != generation or self._finalized:
                return
            old = self._link
            if old is not None and not old.closed:
                log.warning("leaving node %s; the session moves", old.target)
                await old.close()
            last: CkptError | None = None
            for target in self._core.rotation():
                link = self._new_link(target)

                async def on_link(effect: Attempt, link: _AsyncLink = link) -> Any:
                    return await self._attempt_on(link, effect)

                try:
                    result = await self._run(
                        self._core.reestablish(deadline, self._router.refs()), on_link
                    )
                except VersionMismatchError:
                    await link.close()
                    if generation == 0:
                        raise
                    continue
                except CkptError as error:
                    await link.close()
                    last = error
                    if generation == 0 and error.from_node and not isinstance(error, TryAgainError):
                        raise
                    continue
                self._adopt(link, result)
                return
            raise last or TryAgainError("no node to move to")
        finally:
            self._move_lock.release()

    def _new_link(self, target: str | None) -> _AsyncLink:
        if target is None:
            assert self._given is not None
            return _AsyncLink(None, self._given, self._owns_channel)
        assert self._open is not None
        return _AsyncLink(target, self._open(target), True)

    def _adopt(self, link: _AsyncLink, result: Reestablished) -> None:
        link.generation = self._core.generation + 1
        self._link = link
        queued = self._core.commit(result, link.target)
        generation = self._core.generation
        if generation > 1:
            log.warning("the session moved to node %s", link.target)

        async def on_lost(error: CkptError) -> None:
            await self._stream_lost(generation)

        link.stream = AsyncCallbackStream(
            link.stub,
            result.session,
            self._queue,
            generation=generation,
            received=self._router.received,
            alive=lambda: alive_async(link.channel),
            on_lost=on_lost if self._core.failover else None,
        )
        for item in queued:
            self._queue.put(item)
        link.stream.start()

    async def _stream_lost(self, generation: int) -> None:
        backoff = FIRST_BACKOFF
        while not self._finalized and self._core.generation == generation:
            try:
                await self._move(
                    generation, self._core.deadline(self._core.timeout or DEFAULT_TIMEOUT)
                )
                return
            except CkptError as error:
                log.warning(
                    "the session could not move (%s); trying again in %.2fs", error, backoff
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), backoff)
            backoff = min(backoff * 2, _MAX_STREAM_BACKOFF)

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
        if self._finalized:
            raise BadHandleError(f"session {self.handle} is finalized")
        flags = _requests.default_open_flags(attributes, flags)
        core = self._core
        response, generation = await self._run(
            core.call_at(
                lambda: _requests.checkpoint_open(core.session_handle, name, attributes, flags),
                core.deadline(seconds(timeout)),
            )
        )
        assert isinstance(response, pb.CheckpointOpenResponse)
        return self._router.adopt(response.checkpoint_handle, name, flags, generation)

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
        core = self._core
        self._router.expect_open(invocation, name, flags)
        try:
            await self._call(
                lambda: _requests.checkpoint_open_async(
                    core.session_handle, invocation, name, attributes, flags
                ),
                wanted=lambda: self._router.open_unanswered(invocation),
            )
        except BaseException:
            self._router.cancel_open(invocation, name, flags)
            raise

    async def delete(self, name: str) -> None:
        """clCkptCheckpointDelete."""
        core = self._core
        await self._call(lambda: _requests.checkpoint_delete(core.session_handle, name))

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
                    item = self._queue.take()
                except QueueClosed:
                    break
                if item is not None:
                    await self._deliver(item)
                    count += 1
            return count
        count = 0
        for _ in range(1 if flags is DispatchFlags.ONE else max(len(self._queue), 1)):
            try:
                item = self._queue.take()
            except QueueClosed:
                raise BadHandleError(f"session {self.handle} is finalized") from None
            if item is None:
                break
            await self._deliver(item)
            count += 1
        return count

    async def _deliver(self, item: QueueItem) -> None:
        event = self._router.route(item)
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
        elif isinstance(event, Moved) and callbacks.moved is not None:
            result = callbacks.moved(event.node, event.lost)
        if inspect.isawaitable(result):
            await result

    # -- finalize -----------------------------------------------------------------------

    async def finalize(self) -> None:
        """clCkptFinalize (as ``Session.finalize``)."""
        if self._finalized:
            return
        self._finalized = True
        self._closing.set()
        link = self._link
        try:
            if link is not None and not link.closed:
                if link.stream is not None:
                    await link.stream.stop()
                effect = Attempt(
                    _requests.finalize(self._core.session_handle),
                    self._core.timeout,
                    link.generation,
                )
                await self._attempt_on(link, effect)
        finally:
            self._queue.close()
            for checkpoint in self._router.forget_all():
                checkpoint._mark_closed()
            if link is not None:
                await link.close()

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


def _alive_ref(me: weakref.ref[AsyncSession]) -> AsyncSession:
    session = me()
    assert session is not None
    return session
