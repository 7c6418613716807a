"""Section iteration as an asynchronous iterator (AsyncCheckpoint.sections)."""

from __future__ import annotations

from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING

from cps.v1 import checkpoint_service_pb2 as pb

from . import _convert, _requests
from ._failover import IterationRef
from .errors import InvalidHandleError
from .values import SectionDescriptor, SectionsChosen

if TYPE_CHECKING:
    from .aio_checkpoint import AsyncCheckpoint


class AsyncSectionIterator:
    """``async for`` over the chosen sections. The node's iteration starts at
    ``async with`` or at the first ``__anext__`` (errors of
    clCkptSectionIterationInitialize surface there) and is finalized when the
    iterator is exhausted, ``aclose``-d, or its ``async with`` block is left.
    It follows a session that moves as ``SectionIterator`` does."""

    def __init__(
        self,
        checkpoint: AsyncCheckpoint,
        chosen: SectionsChosen,
        expiration_time: datetime | float | None,
    ) -> None:
        self._checkpoint = checkpoint
        self.ref = IterationRef(checkpoint.ref, chosen, expiration_time)
        self._done = False

    @property
    def handle(self) -> int | None:
        """The node's iteration handle, once started."""
        return self.ref.handle

    async def start(self) -> None:
        if self.ref.handle is None and not self._done:
            session = self._checkpoint.session
            ref = self.ref
            response, generation = await session._run(
                session._core.call_at(
                    lambda: _requests.iteration_initialize(
                        ref.checkpoint.handle, ref.chosen, ref.expiration_time
                    ),
                    session._core.deadline(),
                    checkpoint=ref.checkpoint,
                )
            )
            assert isinstance(response, pb.SectionIterationInitializeResponse)
            ref.handle, ref.generation = response.section_iteration_handle, generation

    def __aiter__(self) -> AsyncSectionIterator:
        return self

    async def __anext__(self) -> SectionDescriptor:
        await self.start()
        if self._done or self.ref.handle is None:
            raise StopAsyncIteration
        session = self._checkpoint.session
        response = await session._run(
            session._core.iteration_next(self.ref, session._core.deadline())
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
        if self.ref.handle is None:
            return
        session = self._checkpoint.session
        try:
            await session._run(session._core.iteration_finalize(self.ref, session._core.deadline()))
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
