"""Section iteration (clCkptSectionIteration{Initialize,Next,Finalize}) as a
Python iterator."""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING

from . import _convert
from ._failover import IterationRef
from .errors import InvalidHandleError
from .values import SectionDescriptor

if TYPE_CHECKING:
    from .checkpoint import Checkpoint


class SectionIterator(Iterator[SectionDescriptor]):
    """The sections chosen when it was created, in creation order (see
    ``Checkpoint.sections``). The server's iteration is finalized when the
    iterator is exhausted, closed, or left as a context manager.

    If the session moves to another node, the iteration starts again there
    with the same filter and skips the sections it already returned (by
    id): sections created since it started may then appear, and sections
    deleted since do not."""

    def __init__(self, checkpoint: Checkpoint, iteration: IterationRef) -> None:
        self._checkpoint = checkpoint
        self.ref = iteration
        self._done = False

    @property
    def handle(self) -> int:
        """The iteration handle on the node that serves the session now."""
        assert self.ref.handle is not None  # started by Checkpoint.sections
        return self.ref.handle

    def __iter__(self) -> SectionIterator:
        return self

    def __next__(self) -> SectionDescriptor:
        if self._done:
            raise StopIteration
        session = self._checkpoint.session
        response = session._run(session._core.iteration_next(self.ref, session._core.deadline()))
        if response.no_more_sections:
            self.close()
            raise StopIteration
        return _convert.section_descriptor_of(response.section_descriptor)

    def close(self) -> None:
        """Finalize the iteration (again: nothing)."""
        if self._done:
            return
        self._done = True
        session = self._checkpoint.session
        try:
            session._run(session._core.iteration_finalize(self.ref, session._core.deadline()))
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
