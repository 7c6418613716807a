"""Following the cluster, without I/O: shared by Session and AsyncSession.

A seed call is a *plan*: a generator that yields effects and gets their
results back (or their ``CkptError`` thrown in):

- ``Attempt(call, timeout, generation)``: one RPC on the session's current
  link (``generation`` says which one it was built for; a shell refuses to
  send it on another, with ``StaleLink``);
- ``Sleep(seconds)``: back off;
- ``Move(generation, deadline)``: leave the link of that generation and
  re-establish the session on a node of the list (nothing if it was done
  already).

Each shell (threads in session.py, asyncio in aio_session.py) only performs
effects. Everything else is decided here: what an error means
(``classify``), which calls are retried and where (``Core.call_at``), what a
move re-establishes and in which order (``Core.reestablish``), and how
application-visible objects follow (``CheckpointRef``/``IterationRef``: the
object keeps its identity, its node handle is swapped).
"""

from __future__ import annotations

import contextlib
import enum
import threading
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar

import grpc

from cps.v1 import checkpoint_service_pb2 as pb

from . import _convert, _requests
from ._requests import Call
from .errors import (
    UNKNOWN_OUTCOME,
    BadHandleError,
    CkptError,
    CkptTimeoutError,
    InvalidHandleError,
    TryAgainError,
)
from .values import OpenFlags, SectionsChosen, Version

if TYPE_CHECKING:
    from ._router import Moved, Router

T = TypeVar("T")

DEFAULT_TIMEOUT: Final = 10.0
"""Seconds: the default deadline of every call (``timeout=`` of connect)."""
PROBE_AFTER: Final = 1.0
"""A call unanswered this long has its node probed (grpc.health.v1 Check)..."""
PROBE_TIMEOUT: Final = 3.0
"""...and a node that does not answer the probe this long is frozen or gone."""
BUSY_MOVE_AFTER: Final = 3.0
"""A node that keeps answering CL_ERR_TRY_AGAIN this long: try another one."""
FIRST_BACKOFF: Final = 0.05
MAX_BACKOFF: Final = 1.0
NEW_LINK: Final = -1
"""The generation of an Attempt made on the link being established."""

IDEMPOTENT: Final = frozenset(
    {
        # Doing these twice leaves the same state as doing them once.
        "CheckpointRead",
        "CheckpointStatusGet",
        "SectionOverwrite",
        "CheckpointWrite",
        "CheckpointSynchronize",
        "CheckpointRetentionDurationSet",
        "SectionExpirationTimeSet",
        "ImmediateConsumptionRegister",
        # Node-local things that died with the node: done again on the new one.
        "Initialize",
        "CheckpointOpen",
        "CheckpointClose",
        "SectionIterationInitialize",
        "SectionIterationFinalize",
        # A moved iteration starts again and skips what it returned (by id).
        "SectionIterationNext",
    }
)
"""Calls retried on another node even when the first node may have applied
them. Not these: SectionCreate (a generated id would make a second section;
a given one would fail ALREADY_EXIST), SectionDelete and CheckpointDelete
(NOT_EXIST the second time), ActiveReplicaSet (names the caller's node).
The asynchronous calls complete through a callback instead (see
``Router.unanswered``)."""


# -- what an error means ---------------------------------------------------------


class StaleLink(CkptError):
    """The session moved after the call was built: it was not sent."""


class NotConnected(TryAgainError):
    """The session has no working link (its node was left): not sent."""


class NodeFrozen(CkptTimeoutError):
    """The call's node stopped answering (its health check timed out while
    the call waited): the call may or may not have been applied."""


class Verdict(enum.Enum):
    RAISE = "raise"  # a seed error or a local one: the application's
    REBUILD = "rebuild"  # not sent; build it again for the new link
    BUSY = "busy"  # the node answered CL_ERR_TRY_AGAIN: nothing was done
    UNREACHABLE = "unreachable"  # not sent, or the node lost the session: move
    BROKEN = "broken"  # the node failed mid-call: maybe applied; move
    EXPIRED = "expired"  # the call's deadline passed


def classify(error: CkptError) -> Verdict:
    if isinstance(error, StaleLink):
        return Verdict.REBUILD
    if isinstance(error, NotConnected):
        return Verdict.UNREACHABLE
    if isinstance(error, NodeFrozen):
        return Verdict.BROKEN
    if error.from_node:
        if isinstance(error, TryAgainError):
            return Verdict.BUSY
        if isinstance(error, BadHandleError):
            return Verdict.UNREACHABLE  # the node no longer knows the session
        return Verdict.RAISE
    if error.code == grpc.StatusCode.UNAVAILABLE:
        if "failed to connect" in error.message.lower():
            return Verdict.UNREACHABLE  # the connection was never made
        return Verdict.BROKEN  # lost after the request may have gone
    if error.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Verdict.EXPIRED
    if error.code == grpc.StatusCode.CANCELLED:
        return Verdict.BROKEN  # the link was closed under the call (a move)
    return Verdict.RAISE


def unknown_outcome(error: CkptError, method: str) -> CkptTimeoutError:
    """The seed's timeout error for a call that may have been applied."""
    result = CkptTimeoutError(
        f"{method}: the node stopped answering before the call completed; it may or "
        f"may not have been applied, read it back ({error.message})",
        metadata={"cause": UNKNOWN_OUTCOME},
    )
    result.__cause__ = error
    return result


# -- effects -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attempt:
    call: Call
    timeout: float | None  # seconds left of the call's deadline
    generation: int  # the link it was built for (NEW_LINK: the one being made)


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class Move:
    generation: int  # the link to leave
    deadline: float | None  # time.monotonic() by which to be done


Effect = Attempt | Sleep | Move
Plan = Generator[Effect, Any, T]


# -- what the application holds ----------------------------------------------------------


@dataclass(eq=False)
class CheckpointRef:
    """What a Checkpoint object stands for on whichever node serves the
    session: the handle there (valid for ``generation``) and what is needed
    to open it again."""

    name: str
    flags: OpenFlags
    handle: int
    generation: int
    registered: bool = False  # immediate consumption
    closed: bool = False
    lost: CkptError | None = None  # could not be opened again after a move


@dataclass(eq=False)
class IterationRef:
    checkpoint: CheckpointRef
    chosen: SectionsChosen
    expiration_time: datetime | float | None
    handle: int | None = None  # None: not started
    generation: int = NEW_LINK
    returned: set[bytes] = field(default_factory=set)
    resumed: bool = False  # started again after a move: skip what was returned
    lost: CkptError | None = None


@dataclass(frozen=True, slots=True)
class Reestablished:
    session: int
    version: Version
    reopened: list[tuple[CheckpointRef, int]]
    lost: list[tuple[CheckpointRef, CkptError]]


def reopen_flags(flags: OpenFlags) -> OpenFlags:
    """Opening again never creates: a checkpoint deleted or lost meanwhile
    must not come back empty under the application's handle."""
    return flags & ~OpenFlags.CREATE


def deadline_of(timeout: float | None, now: float | None = None) -> float | None:
    if timeout is None:
        return None
    return (time.monotonic() if now is None else now) + timeout


def remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return max(deadline - time.monotonic(), 0.0)


def _no_time_for(deadline: float | None, delay: float) -> bool:
    return deadline is not None and time.monotonic() + delay >= deadline


class Core:
    """The session's state shared by its shell, the plans that run its calls,
    and the plan of a move."""

    def __init__(
        self,
        router: Router[Any],
        version: Version,
        timeout: float | None,
        targets: list[str] | None,
    ) -> None:
        self.router = router
        self.asked_version = version
        self.version = version
        self.timeout = timeout
        self.targets = targets  # None: the caller's channel, no failover
        self.generation = 0  # of the current link; 0: none yet
        self.session_handle = 0
        self.target: str | None = None
        self._lock = threading.Lock()

    @property
    def failover(self) -> bool:
        return self.targets is not None

    def deadline(self, timeout: float | None = None) -> float | None:
        return deadline_of(self.timeout if timeout is None else timeout)

    def rotation(self) -> list[str | None]:
        """The nodes to try for a move: those after the current one, then it."""
        if self.targets is None:
            return [None]
        if self.target not in self.targets:
            return list(self.targets)
        at = self.targets.index(self.target) + 1
        return [*self.targets[at:], *self.targets[:at]]

    # -- a call ---------------------------------------------------------------------

    def call(
        self,
        build: Callable[[], Call],
        deadline: float | None,
        *,
        checkpoint: CheckpointRef | None = None,
        iteration: IterationRef | None = None,
        wanted: Callable[[], bool] | None = None,
    ) -> Plan[Any]:
        response, _ = yield from self.call_at(
            build, deadline, checkpoint=checkpoint, iteration=iteration, wanted=wanted
        )
        return response

    def call_at(
        self,
        build: Callable[[], Call],
        deadline: float | None,
        *,
        checkpoint: CheckpointRef | None = None,
        iteration: IterationRef | None = None,
        wanted: Callable[[], bool] | None = None,
    ) -> Plan[tuple[Any, int]]:
        """The response of ``build()`` and the generation of the link that
        gave it. ``checkpoint``/``iteration``: opened again first if the
        session moved since. ``wanted``: checked before every try; False
        ends the call with None (what it was for went with the old node)."""
        backoff = FIRST_BACKOFF
        busy_since: float | None = None
        while True:
            generation = self.generation
            if wanted is not None and not wanted():
                return None, generation
            method = "?"
            try:
                if checkpoint is not None:
                    yield from self._ensure_checkpoint(checkpoint, deadline)
                if iteration is not None:
                    yield from self._ensure_iteration(iteration, deadline)
                call = build()
                method = call.method
                response = yield Attempt(call, remaining(deadline), generation)
                return response, generation
            except CkptError as error:
                verdict = classify(error)
                if verdict is Verdict.RAISE:
                    raise
                if verdict is Verdict.REBUILD:
                    continue
                if verdict is Verdict.EXPIRED:
                    if method in IDEMPOTENT:
                        raise
                    raise unknown_outcome(error, method) from error
                if verdict is Verdict.BROKEN and method not in IDEMPOTENT:
                    if self.failover:
                        # For the next call; this one's outcome stays unknown.
                        with contextlib.suppress(CkptError):
                            yield Move(generation, deadline)
                    if wanted is not None and not wanted():
                        return None, generation
                    raise unknown_outcome(error, method) from error
                if not self.failover and verdict is not Verdict.BUSY:
                    raise  # one node: nowhere to go
                if verdict is Verdict.BUSY:
                    now = time.monotonic()
                    busy_since = now if busy_since is None else busy_since
                    if not self.failover or now - busy_since < BUSY_MOVE_AFTER:
                        if _no_time_for(deadline, backoff):
                            raise
                        yield Sleep(backoff)
                        backoff = min(backoff * 2, MAX_BACKOFF)
                        continue
                    busy_since = None
                try:
                    yield Move(generation, deadline)
                except CkptError as move_error:
                    if _no_time_for(deadline, backoff):
                        raise move_error from error
                    yield Sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)

    def _ensure_checkpoint(self, ref: CheckpointRef, deadline: float | None) -> Plan[None]:
        if ref.closed:
            raise InvalidHandleError(f"checkpoint {ref.name!r}: the handle is closed")
        if ref.lost is not None:
            raise lost_error(ref.name, ref.lost)
        generation = self.generation
        if ref.generation == generation:
            return
        try:
            handle = yield from self._reopen(ref, self.session_handle, generation, deadline)
        except CkptError as error:
            if error.from_node and classify(error) is Verdict.RAISE:
                ref.lost = error
                raise lost_error(ref.name, error) from error
            raise
        with self._lock:
            if self.generation == generation:
                ref.handle, ref.generation = handle, generation
                self.router.remap(ref, handle)

    def _reopen(
        self, ref: CheckpointRef, session: int, generation: int, deadline: float | None
    ) -> Plan[int]:
        flags = reopen_flags(ref.flags)
        opened: pb.CheckpointOpenResponse = yield from self._busy_retried(
            _requests.checkpoint_open(session, ref.name, None, flags), generation, deadline
        )
        handle = opened.checkpoint_handle
        if ref.registered:
            yield from self._busy_retried(
                _requests.immediate_consumption_register(handle), generation, deadline
            )
        return handle

    def _ensure_iteration(self, it: IterationRef, deadline: float | None) -> Plan[None]:
        if it.lost is not None:
            raise it.lost
        if it.handle is None or it.generation == self.generation:
            return
        yield from self._ensure_checkpoint(it.checkpoint, deadline)
        generation = self.generation
        try:
            response: pb.SectionIterationInitializeResponse = yield from self._busy_retried(
                _requests.iteration_initialize(it.checkpoint.handle, it.chosen, it.expiration_time),
                generation,
                deadline,
            )
        except CkptError as error:
            if error.from_node and classify(error) is Verdict.RAISE:
                it.lost = error
            raise
        it.handle, it.generation, it.resumed = (
            response.section_iteration_handle,
            generation,
            True,
        )

    def _busy_retried(self, call: Call, generation: int, deadline: float | None) -> Plan[Any]:
        """One Attempt, tried again while the node answers CL_ERR_TRY_AGAIN."""
        backoff = FIRST_BACKOFF
        while True:
            try:
                return (yield Attempt(call, remaining(deadline), generation))
            except CkptError as error:
                if classify(error) is not Verdict.BUSY or _no_time_for(deadline, backoff):
                    raise
            yield Sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    # -- iterations -------------------------------------------------------------------

    def iteration_next(
        self, it: IterationRef, deadline: float | None
    ) -> Plan[pb.SectionIterationNextResponse]:
        """The next section not yet returned (a moved iteration skips, by id,
        what it returned before the move)."""
        while True:
            response: pb.SectionIterationNextResponse = yield from self.call(
                lambda: _requests.iteration_next(_started(it)), deadline, iteration=it
            )
            if response.no_more_sections:
                return response
            section = response.section_descriptor.section_id.id
            if it.resumed and section in it.returned:
                continue
            it.returned.add(section)
            return response

    def iteration_finalize(self, it: IterationRef, deadline: float | None) -> Plan[None]:
        """Finalize the node's iteration, unless it went with a moved session."""
        if it.handle is None:
            return
        yield from self.call(
            lambda: _requests.iteration_finalize(_started(it)),
            deadline,
            wanted=lambda: it.lost is None and it.generation == self.generation,
        )

    # -- a move ---------------------------------------------------------------------------

    def reestablish(
        self, deadline: float | None, refs: Iterable[CheckpointRef]
    ) -> Plan[Reestablished]:
        """On a new link: Initialize, then open every open checkpoint again
        by name (without CREATE) and register it again for immediate
        consumption, in the order they were opened. A checkpoint the node
        refuses with a seed error (deleted, lost) is ``lost``; anything else
        fails the move to that node."""
        initialized: pb.InitializeResponse = yield Attempt(
            _requests.initialize(self.asked_version), remaining(deadline), NEW_LINK
        )
        session = initialized.service_handle
        reopened: list[tuple[CheckpointRef, int]] = []
        lost: list[tuple[CheckpointRef, CkptError]] = []
        for ref in refs:
            if ref.closed or ref.lost is not None:
                continue
            try:
                handle = yield from self._reopen(ref, session, NEW_LINK, deadline)
            except CkptError as error:
                if not error.from_node or classify(error) is not Verdict.RAISE:
                    raise
                lost.append((ref, error))
                continue
            reopened.append((ref, handle))
        return Reestablished(session, _convert.version_of(initialized.version), reopened, lost)

    def commit(self, result: Reestablished, target: str | None) -> list[pb.Callback | Moved]:
        """Make the new link current: swap every reopened handle, and return
        what to queue for dispatch: an error callback (CL_ERR_TRY_AGAIN) for
        each asynchronous call whose answer went with the old node, and a
        ``Moved`` marker (not on the first connect)."""
        from ._router import Moved

        with self._lock:
            self.generation += 1
            first = self.generation == 1
            self.session_handle = result.session
            self.version = result.version
            self.target = target
            for ref, handle in result.reopened:
                ref.handle, ref.generation = handle, self.generation
                self.router.remap(ref, handle)
            for ref, error in result.lost:
                ref.lost = error
        queued: list[pb.Callback | Moved] = []
        if not first:
            queued.extend(self.router.unanswered())
            queued.append(Moved(target or "", [ref.name for ref, _ in result.lost]))
        return queued


def _started(it: IterationRef) -> int:
    assert it.handle is not None
    return it.handle


def lost_error(name: str, cause: CkptError) -> InvalidHandleError:
    return InvalidHandleError(
        f"checkpoint {name!r} could not be opened again after the session moved to "
        f"another node ({cause}); the handle is no longer usable"
    )
