"""Section iteration (clCkptSectionIteration{Initialize,Next,Finalize}) as a
Python iterator."""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING

from cps.v1 import checkpoint_service_pb2 as pb

from . import _convert, _requests
from .errors import InvalidHandleError
from .values import SectionDescriptor

if TYPE_CHECKING:
    from .checkpoint import Checkpoint


class SectionIterator(Iterator[SectionDescriptor]):
    """The sections chosen when it was created, in creation order (see
    ``Checkpoint.sections``). The server's iteration is finalized when the
    iterator is exhausted, closed, or left as a context manager."""

    def __init__(self, checkpoint: Checkpoint, iteration_handle: int) -> None:
        self._checkpoint = checkpoint
        self.handle = iteration_handle
        self._done = False

    def __iter__(self) -> SectionIterator:
        return self

    def __next__(self) -> SectionDescriptor:
        if self._done:
            raise StopIteration
        response: pb.SectionIterationNextResponse = self._checkpoint.session._call(
            _requests.iteration_next(self.handle)
        )
        if response.no_more_sections:
            self.close()
            raise StopIteration
        return _convert.section_descriptor_of(response.section_descriptor)

    def close(self) -> None:
        """Finalize the iteration (again: nothing)."""
        if self._done:
            return
        self._done = True
        try:
            self._checkpoint.session._call(_requests.iteration_finalize(self.handle))
        except InvalidHandleError:
            if not self._checkpoint.closed:
                raise  # else closing the checkpoint finalized it

    def __enter__(self) -> SectionIterator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
