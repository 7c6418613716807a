"""A checkpoint handle of an AsyncSession: Checkpoint's methods as coroutines."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING

from cps.v1 import checkpoint_service_pb2 as pb

from . import _convert, _requests
from ._closing import close_on_exit_async
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
    The methods are those of ``Checkpoint``, awaited."""

    def __init__(self, session: AsyncSession, handle: int, name: str, flags: OpenFlags) -> None:
        self.session = session
        self.handle = handle
        self.name = name
        self.flags = flags
        self._closed = False
        self._notification: AsyncNotificationCallback | None = None

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<AsyncCheckpoint {self.name!r} handle={self.handle} {state}>"

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def notification_callback(self) -> AsyncNotificationCallback | None:
        return self._notification

    async def close(self) -> None:
        """clCkptCheckpointClose (a closed handle: nothing)."""
        if self._closed:
            return
        await self.session._call(_requests.checkpoint_close(self.handle))
        self._mark_closed()

    def _mark_closed(self) -> None:
        self._closed = True
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
        await self.session._call(_requests.retention_duration_set(self.handle, duration))

    async def active_replica_set(self) -> None:
        await self.session._call(_requests.active_replica_set(self.handle))

    async def status(self) -> CheckpointStatus:
        response: pb.CheckpointStatusGetResponse = await self.session._call(
            _requests.status(self.handle)
        )
        return _convert.status_of(response.checkpoint_status)

    async def section_create(
        self,
        section_id: bytes | None = None,
        initial_data: bytes = b"",
        *,
        expiration_time: ExpirationTime = NEVER,
    ) -> bytes:
        response: pb.SectionCreateResponse = await self.session._call(
            _requests.section_create(self.handle, section_id, initial_data, expiration_time)
        )
        return response.section_id.id

    async def section_delete(self, section_id: bytes) -> None:
        await self.session._call(_requests.section_delete(self.handle, section_id))

    async def section_expiration_time_set(
        self, section_id: bytes, expiration_time: ExpirationTime
    ) -> None:
        await self.session._call(
            _requests.section_expiration_time_set(self.handle, section_id, expiration_time)
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
        await self.session._call(_requests.write(self.handle, map(write_element, elements)))

    async def overwrite(self, section_id: bytes, data: bytes) -> None:
        await self.session._call(_requests.overwrite(self.handle, section_id, data))

    async def read(
        self, section_id: bytes = DEFAULT_SECTION_ID, offset: int = 0, size: int | None = None
    ) -> bytes:
        return (await self.read_vector([ReadElement(section_id, offset, size)]))[0].data

    async def read_vector(self, elements: Iterable[ReadLike]) -> list[ReadResult]:
        wanted = [read_element(e) for e in elements]
        response: pb.CheckpointReadResponse = await self.session._call(
            _requests.read(self.handle, wanted)
        )
        return _requests.read_results(wanted, response)

    async def synchronize(self, timeout: Duration | None = None) -> None:
        await self.session._call(_requests.synchronize(self.handle), timeout)

    async def synchronize_async(self, invocation: int) -> None:
        if self.session.callbacks.synchronize is None:
            raise NotInitializedError(
                "synchronize_async needs AsyncCallbacks(synchronize=...) at AsyncSession.connect"
            )
        await self.session._call(_requests.synchronize_async(self.handle, invocation))

    async def immediate_consumption_register(self, callback: AsyncNotificationCallback) -> None:
        previous = self._notification
        self._notification = callback
        try:
            await self.session._call(_requests.immediate_consumption_register(self.handle))
        except BaseException:
            self._notification = previous
            raise
