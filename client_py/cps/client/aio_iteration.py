"""Section iteration as an asynchronous iterator (AsyncCheckpoint.sections)."""

from __future__ import annotations

from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING

from cps.v1 import checkpoint_service_pb2 as pb

from . import _convert, _requests
from .errors import InvalidHandleError
from .values import SectionDescriptor, SectionsChosen

if TYPE_CHECKING:
    from .aio_checkpoint import AsyncCheckpoint


class AsyncSectionIterator:
    """``async for`` over the chosen sections. The node's iteration starts at
    ``async with`` or at the first ``__anext__`` (errors of
    clCkptSectionIterationInitialize surface there) and is finalized when the
    iterator is exhausted, ``aclose``-d, or its ``async with`` block is left."""

    def __init__(
        self,
        checkpoint: AsyncCheckpoint,
        chosen: SectionsChosen,
        expiration_time: datetime | float | None,
    ) -> None:
        self._checkpoint = checkpoint
        self._chosen = chosen
        self._expiration_time = expiration_time
        self.handle: int | None = None  # the node's iteration handle, once started
        self._done = False

    async def start(self) -> None:
        if self.handle is None and not self._done:
            response: pb.SectionIterationInitializeResponse = await self._checkpoint.session._call(
                _requests.iteration_initialize(
                    self._checkpoint.handle, self._chosen, self._expiration_time
                )
            )
            self.handle = response.section_iteration_handle

    def __aiter__(self) -> AsyncSectionIterator:
        return self

    async def __anext__(self) -> SectionDescriptor:
        await self.start()
        if self._done or self.handle is None:
            raise StopAsyncIteration
        response: pb.SectionIterationNextResponse = await self._checkpoint.session._call(
            _requests.iteration_next(self.handle)
        )
        if response.no_more_sections:
            await self.aclose()
            raise StopAsyncIteration
        return _convert.section_descriptor_of(response.section_descriptor)

    async def aclose(self) -> None:
        """Finalize the node's iteration (again, or before it started: nothing)."""
        if self._done:
            return
        self._done = True
        if self.handle is None:
            return
        try:
            await self._checkpoint.session._call(_requests.iteration_finalize(self.handle))
        except InvalidHandleError:
            if not self._checkpoint.closed:
                raise  # else closing the checkpoint finalized it

    async def __aenter__(self) -> AsyncSectionIterator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
