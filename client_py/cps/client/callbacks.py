"""The application's callbacks (ClCkptCallbacksT and the notification
callback), run by ``Session.dispatch`` in the caller's thread."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from .errors import CkptError
from .values import ChangedSection

if TYPE_CHECKING:
    from .aio_checkpoint import AsyncCheckpoint
    from .checkpoint import Checkpoint

OpenCallback: TypeAlias = Callable[[int, "Checkpoint | None", CkptError | None], None]
"""ClCkptCheckpointOpenCallbackT: ``(invocation, checkpoint, error)``; exactly
one of ``checkpoint`` and ``error`` is None."""

SynchronizeCallback: TypeAlias = Callable[[int, CkptError | None], None]
"""ClCkptCheckpointSynchronizeCallbackT: ``(invocation, error)``."""

NotificationCallback: TypeAlias = Callable[[str, "Checkpoint", list[ChangedSection]], None]
"""ClCkptNotificationCallbackT: ``(checkpoint_name, checkpoint, changed_sections)``
for a checkpoint registered with ``Checkpoint.immediate_consumption_register``."""

DroppedCallback: TypeAlias = Callable[[int], None]
"""``(count)``: that many notifications were lost (the node's queue overflowed,
or a broken stream lost them): re-read the checkpoints you watch."""

MovedCallback: TypeAlias = Callable[[str, list[str]], None]
"""``(node, lost)``: the session moved to the node at that address (its node
died, froze or refused); notifications of changes made while it moved may be
missing (re-read what you watch), and ``lost`` names the checkpoints that
could not be opened again there (their handles now raise InvalidHandleError)."""


@dataclass(frozen=True, slots=True)
class Callbacks:
    """What ``Session.connect`` registers, as clCkptInitialize's callbacks.

    ``open`` is needed by ``Session.open_async`` and ``synchronize`` by
    ``Checkpoint.synchronize_async``. ``dropped`` and ``moved`` are this
    client's additions: notifications the node could not deliver (without it
    they are logged), and the session's move to another node.
    """

    open: OpenCallback | None = None
    synchronize: SynchronizeCallback | None = None
    dropped: DroppedCallback | None = None
    moved: MovedCallback | None = None


# -- asyncio ------------------------------------------------------------------------

AsyncOpenCallback: TypeAlias = Callable[
    [int, "AsyncCheckpoint | None", CkptError | None], Awaitable[None] | None
]
AsyncSynchronizeCallback: TypeAlias = Callable[[int, CkptError | None], Awaitable[None] | None]
AsyncNotificationCallback: TypeAlias = Callable[
    [str, "AsyncCheckpoint", list[ChangedSection]], Awaitable[None] | None
]
AsyncDroppedCallback: TypeAlias = Callable[[int], Awaitable[None] | None]
AsyncMovedCallback: TypeAlias = Callable[[str, list[str]], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class AsyncCallbacks:
    """The callbacks of an ``AsyncSession``: as ``Callbacks``, with
    ``AsyncCheckpoint`` objects; each may be a plain function or a coroutine
    function (awaited by ``AsyncSession.dispatch``)."""

    open: AsyncOpenCallback | None = None
    synchronize: AsyncSynchronizeCallback | None = None
    dropped: AsyncDroppedCallback | None = None
    moved: AsyncMovedCallback | None = None
