"""A checkpoint handle of an AsyncSession: Checkpoint's methods as coroutines."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

from cps.v1 import checkpoint_service_pb2 as pb

from . import _convert, _requests
from ._closing import close_on_exit_async
from ._failover import CheckpointRef
from .aio_iteration import AsyncSectionIterator
from .callbacks import AsyncNotificationCallback
from .errors import NotInitializedError
from .values import (
    DEFAULT_SECTION_ID,
    NEVER,
    CheckpointStatus,
    Duration,
    ExpirationTime,
    OpenFlags,
    ReadElement,
    ReadLike,
    ReadResult,
    RetentionDuration,
    SectionsChosen,
    WriteLike,
    read_element,
    write_element,
)

if TYPE_CHECKING:
    from .aio_session import AsyncSession


class AsyncCheckpoint:
    """An open checkpoint of an ``AsyncSession``; ``async with`` closes it.
    The methods are those of ``Checkpoint``, awaited (and it follows its
    session to another node the same way)."""

    def __init__(self, session: AsyncSession, ref: CheckpointRef) -> None:
        self.session = session
        self.ref = ref
        self._notification: AsyncNotificationCallback | None = None

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<AsyncCheckpoint {self.name!r} handle={self.handle} {state}>"

    @property
    def handle(self) -> int:
        """The checkpoint handle on the node that serves the session now."""
        return self.ref.handle

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def flags(self) -> OpenFlags:
        return self.ref.flags

    @property
    def closed(self) -> bool:
        return self.ref.closed

    async def _call(
        self, build: Callable[[int], _requests.Call], timeout: Duration | None = None
    ) -> Any:
        ref = self.ref
        return await self.session._call(lambda: build(ref.handle), timeout, checkpoint=ref)

    @property
    def notification_callback(self) -> AsyncNotificationCallback | None:
        return self._notification

    async def close(self) -> None:
        """clCkptCheckpointClose (a closed handle: nothing)."""
        if self.ref.closed:
            return
        ref, core = self.ref, self.session._core
        await self.session._call(
            lambda: _requests.checkpoint_close(ref.handle),
            wanted=lambda: ref.lost is None and ref.generation == core.generation,
        )
        self._mark_closed()

    def _mark_closed(self) -> None:
        self.ref.closed = True
        self._notification = None
        self.session._router.forget(self)

    async def __aenter__(self) -> AsyncCheckpoint:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await close_on_exit_async(exc, self.close, f"closing {self!r}")

    async def retention_duration_set(self, duration: RetentionDuration) -> None:
        await self._call(lambda handle: _requests.retention_duration_set(handle, duration))

    async def active_replica_set(self) -> None:
        await self._call(_requests.active_replica_set)

    async def status(self) -> CheckpointStatus:
        response: pb.CheckpointStatusGetResponse = await self._call(_requests.status)
        return _convert.status_of(response.checkpoint_status)

    async def section_create(
        self,
        section_id: bytes | None = None,
        initial_data: bytes = b"",
        *,
        expiration_time: ExpirationTime = NEVER,
    ) -> bytes:
        response: pb.SectionCreateResponse = await self._call(
            lambda handle: _requests.section_create(
                handle, section_id, initial_data, expiration_time
            )
        )
        return response.section_id.id

    async def section_delete(self, section_id: bytes) -> None:
        await self._call(lambda handle: _requests.section_delete(handle, section_id))

    async def section_expiration_time_set(
        self, section_id: bytes, expiration_time: ExpirationTime
    ) -> None:
        await self._call(
            lambda handle: _requests.section_expiration_time_set(
                handle, section_id, expiration_time
            )
        )

    def sections(
        self,
        chosen: SectionsChosen = SectionsChosen.ANY,
        expiration_time: datetime | float | None = None,
    ) -> AsyncSectionIterator:
        """``async for section in checkpoint.sections(): ...`` (see
        AsyncSectionIterator for when the node's iteration starts and ends)."""
        return AsyncSectionIterator(self, chosen, expiration_time)

    async def write(self, elements: Iterable[WriteLike]) -> None:
        vector = [write_element(e) for e in elements]
        await self._call(lambda handle: _requests.write(handle, vector))

    async def overwrite(self, section_id: bytes, data: bytes) -> None:
        await self._call(lambda handle: _requests.overwrite(handle, section_id, data))

    async def read(
        self, section_id: bytes = DEFAULT_SECTION_ID, offset: int = 0, size: int | None = None
    ) -> bytes:
        return (await self.read_vector([ReadElement(section_id, offset, size)]))[0].data

    async def read_vector(self, elements: Iterable[ReadLike]) -> list[ReadResult]:
        wanted = [read_element(e) for e in elements]
        response: pb.CheckpointReadResponse = await self._call(
            lambda handle: _requests.read(handle, wanted)
        )
        return _requests.read_results(wanted, response)

    async def synchronize(self, timeout: Duration | None = None) -> None:
        await self._call(_requests.synchronize, timeout)

    async def synchronize_async(self, invocation: int) -> None:
        if self.session.callbacks.synchronize is None:
            raise NotInitializedError(
                "synchronize_async needs AsyncCallbacks(synchronize=...) at AsyncSession.connect"
            )
        router = self.session._router
        router.expect_synchronize(invocation)
        try:
            ref = self.ref
            await self.session._call(
                lambda: _requests.synchronize_async(ref.handle, invocation),
                checkpoint=ref,
                wanted=lambda: router.synchronize_unanswered(invocation),
            )
        except BaseException:
            router.cancel_synchronize(invocation)
            raise

    async def immediate_consumption_register(self, callback: AsyncNotificationCallback) -> None:
        previous = self._notification, self.ref.registered
        self._notification = callback
        self.ref.registered = True  # registered again wherever the session moves
        try:
            await self._call(_requests.immediate_consumption_register)
        except BaseException:
            self._notification, self.ref.registered = previous
            raise
