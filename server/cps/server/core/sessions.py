"""Sessions, checkpoint handles and section iterations of one node.

They are node-local: a client's session lives on the node it talks to, and
its handles name checkpoint instances (Ref) whose replicas may live
elsewhere. Ids come from a CSPRNG, so one client cannot predict another's.
A session belongs to the identity that initialized it; with authentication
off every identity is "".
"""

from __future__ import annotations

import secrets
from collections.abc import Container
from dataclasses import dataclass

from .errors import CkptError, ErrorCode
from .events import Event, SessionEvents
from .limits import MAX_NAME_LENGTH, Limits
from .replica import Ref
from .types import OpenFlag

# The service version this server implements (ClVersionT).
RELEASE_CODE = "B"
MAJOR_VERSION = 1
MINOR_VERSION = 1


@dataclass(frozen=True, slots=True)
class Version:
    release_code: str
    major_version: int
    minor_version: int


SUPPORTED = Version(RELEASE_CODE, MAJOR_VERSION, MINOR_VERSION)


class VersionMismatch(CkptError):
    """Initialize with an incompatible version; carries the supported one."""

    def __init__(self, supported: Version) -> None:
        super().__init__(
            ErrorCode.VERSION_MISMATCH,
            f"this server supports version {supported.release_code}."
            f"{supported.major_version}.{supported.minor_version}",
        )
        self.supported = supported


class Session:
    __slots__ = ("events", "handles", "idle_sweeps", "owner", "session_id", "touched")

    def __init__(
        self, session_id: int, owner: str, max_queue: int, max_message_bytes: int = 1024**2
    ) -> None:
        self.session_id = session_id
        self.owner = owner
        self.handles: dict[int, Handle] = {}
        self.events = SessionEvents(max_queue, max_message_bytes)
        # Liveness: set by every call that names the session or one of its
        # handles; the idle sweep reads and clears it.
        self.touched = True
        self.idle_sweeps = 0

    @property
    def attached(self) -> bool:
        """A Callbacks stream is draining this session's events."""
        return self.events.on_ready is not None


class Handle:
    __slots__ = ("flags", "handle_id", "iterations", "notify", "ref", "session")

    def __init__(self, handle_id: int, session: Session, ref: Ref, flags: OpenFlag) -> None:
        self.handle_id = handle_id
        self.session = session
        self.ref = ref
        self.flags = flags
        self.iterations: set[int] = set()
        self.notify = False  # registered for immediate consumption

    def require(self, flag: OpenFlag, what: str) -> Ref:
        if not self.flags & flag:
            raise CkptError(
                ErrorCode.OP_NOT_PERMITTED,
                f"{what} needs a handle opened with {flag.name}",
            )
        return self.ref


class Iteration:
    __slots__ = ("handle", "iteration_id", "pending")

    def __init__(self, iteration_id: int, handle: Handle, pending: list[bytes]) -> None:
        self.iteration_id = iteration_id
        self.handle = handle
        self.pending = pending  # chosen at initialize, popped from the end


def new_id(taken: Container[int]) -> int:
    """A random 63-bit id (fits int64 and uint64 alike), never 0."""
    while True:
        candidate = secrets.randbits(63)
        if candidate and candidate not in taken:
            return candidate


class Sessions:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.sessions: dict[int, Session] = {}
        self.handles: dict[int, Handle] = {}
        self.iterations: dict[int, Iteration] = {}
        self._by_ref: dict[Ref, set[Handle]] = {}

    # -- sessions ------------------------------------------------------------

    def initialize(self, release_code: str, major: int, owner: str = "") -> Session:
        if release_code != RELEASE_CODE or major > MAJOR_VERSION:
            raise VersionMismatch(SUPPORTED)
        if len(self.sessions) >= self.limits.max_sessions:
            raise CkptError(
                ErrorCode.NO_RESOURCE, f"the node has max_sessions={self.limits.max_sessions}"
            )
        session = Session(
            new_id(self.sessions),
            owner,
            self.limits.max_callback_queue,
            self.limits.max_callback_message_bytes,
        )
        self.sessions[session.session_id] = session
        return session

    def session(self, session_id: int, who: str = "") -> Session:
        session = self.sessions.get(session_id)
        if session is None or session.owner != who:
            # Another identity's session is as unknown as a closed one.
            raise CkptError(ErrorCode.BAD_HANDLE, f"service handle {session_id} is not initialized")
        session.touched = True
        return session

    def remove_session(self, session: Session) -> None:
        """After its handles were closed (see the service's finalize)."""
        session.events.close()
        self.sessions.pop(session.session_id, None)

    def idle_sessions(self) -> list[Session]:
        """Sessions neither attached to a Callbacks stream nor used during two
        sweeps in a row (a client that vanished). Run every session_timeout/2."""
        idle = []
        for session in list(self.sessions.values()):
            if session.attached or session.touched:
                session.touched = False
                session.idle_sweeps = 0
                continue
            session.idle_sweeps += 1
            if session.idle_sweeps >= 2:
                idle.append(session)
        return idle

    # -- handles ---------------------------------------------------------------

    def add_handle(self, session: Session, ref: Ref, flags: OpenFlag) -> Handle:
        self.check_handle_room(session)
        handle = Handle(new_id(self.handles), session, ref, flags)
        self.handles[handle.handle_id] = handle
        session.handles[handle.handle_id] = handle
        self._by_ref.setdefault(ref, set()).add(handle)
        return handle

    def check_handle_room(self, session: Session) -> None:
        if len(session.handles) >= self.limits.max_handles_per_session:
            raise CkptError(
                ErrorCode.NO_RESOURCE,
                f"session has max_handles_per_session={self.limits.max_handles_per_session}",
            )

    def handle(self, handle_id: int, who: str = "") -> Handle:
        handle = self.handles.get(handle_id)
        if handle is None or handle.session.owner != who:
            raise CkptError(ErrorCode.INVALID_HANDLE, f"checkpoint handle {handle_id} is not open")
        handle.session.touched = True
        return handle

    def remove_handle(self, handle: Handle) -> None:
        for iteration_id in list(handle.iterations):
            self.iterations.pop(iteration_id, None)
        handle.iterations.clear()
        self.handles.pop(handle.handle_id, None)
        handle.session.handles.pop(handle.handle_id, None)
        handle.session.events.drop_handle(handle.handle_id)
        openers = self._by_ref.get(handle.ref)
        if openers is not None:
            openers.discard(handle)
            if not openers:
                del self._by_ref[handle.ref]

    def handles_of(self, ref: Ref) -> set[Handle]:
        return self._by_ref.get(ref, set())

    def refs(self) -> list[Ref]:
        """Every checkpoint instance this node has handles on."""
        return list(self._by_ref)

    def opener_count(self, ref: Ref) -> tuple[int, bool]:
        """This node's handles on ``ref``, and whether one of them is
        registered for immediate consumption."""
        handles = self._by_ref.get(ref, ())
        return len(handles), any(handle.notify for handle in handles)

    # -- iterations --------------------------------------------------------------

    def add_iteration(self, handle: Handle, pending: list[bytes]) -> Iteration:
        if len(handle.iterations) >= self.limits.max_iterations_per_handle:
            raise CkptError(
                ErrorCode.NO_RESOURCE,
                f"handle has max_iterations_per_handle={self.limits.max_iterations_per_handle}",
            )
        pending.reverse()  # popped from the end
        iteration = Iteration(new_id(self.iterations), handle, pending)
        self.iterations[iteration.iteration_id] = iteration
        handle.iterations.add(iteration.iteration_id)
        return iteration

    def iteration(self, iteration_id: int, who: str = "") -> Iteration:
        iteration = self.iterations.get(iteration_id)
        if iteration is None or iteration.handle.session.owner != who:
            raise CkptError(
                ErrorCode.INVALID_HANDLE, f"section iteration handle {iteration_id} is not open"
            )
        iteration.handle.session.touched = True
        return iteration

    def remove_iteration(self, iteration: Iteration) -> None:
        self.iterations.pop(iteration.iteration_id, None)
        iteration.handle.iterations.discard(iteration.iteration_id)

    # -- callbacks ---------------------------------------------------------------

    def push(self, session: Session, event: Event) -> None:
        """Queue a callback unless its session or handle closed meanwhile
        (Close and Finalize cancel pending callbacks)."""
        if self.sessions.get(session.session_id) is not session:
            return
        handle = getattr(event, "handle", 0)
        if handle and handle not in session.handles:
            return
        session.events.push(event)


def check_name(name: str) -> None:
    if not name:
        raise CkptError(ErrorCode.INVALID_PARAM, "the checkpoint name is empty")
    if len(name.encode()) > MAX_NAME_LENGTH:
        raise CkptError(
            ErrorCode.INVALID_PARAM, f"the checkpoint name exceeds {MAX_NAME_LENGTH} bytes"
        )
