"""The replica manager of one node: sessions, handles, names and lifetimes.

Every public method is one seed call; each either completes or raises
CkptError leaving the state as it was.
"""

from __future__ import annotations

import random
from collections.abc import Container, Sequence
from dataclasses import dataclass, replace

from .changelog import ChangeLog, NoChangeLog
from .checkpoint import Change, Checkpoint
from .clock import Clock, Timer
from .errors import CkptError, ErrorCode
from .events import Event, Notification, OpenCompleted, SessionEvents, SynchronizeCompleted
from .types import (
    UPDATE_MODES,
    CheckpointDescriptor,
    CreationAttributes,
    MaybeForever,
    OpenFlag,
    ReadElement,
    SectionDescriptor,
    SectionsChosen,
    WriteElement,
)

# The service version this server implements (ClVersionT).
RELEASE_CODE = "B"
MAJOR_VERSION = 1
MINOR_VERSION = 1

# Errors of CheckpointOpenAsync returned by the call rather than the callback.
_CALL_ERRORS = frozenset(
    {ErrorCode.BAD_HANDLE, ErrorCode.BAD_FLAG, ErrorCode.INVALID_PARAM, ErrorCode.NULL_POINTER}
)

# ClNameT holds at most 256 bytes including its terminating NUL.
MAX_NAME_LENGTH = 255


@dataclass(frozen=True, slots=True)
class Limits:
    """Server-wide limits; each is a command-line flag."""

    max_sessions: int = 10_000
    max_handles_per_session: int = 10_000
    max_checkpoints: int = 100_000
    # Sum of checkpoint_size over live checkpoints: the memory the node
    # promises to hold.
    max_reserved_bytes: int = 2 * 1024**3
    max_sections_per_checkpoint: int = 1_000_000
    max_section_size: int = 64 * 1024**2
    max_section_id_size: int = 1024
    max_iovector_elements: int = 10_000
    max_iterations_per_handle: int = 1_000
    max_callback_queue: int = 10_000


class Session:
    __slots__ = ("events", "handles", "idle_sweeps", "session_id", "touched")

    def __init__(self, session_id: int, max_queue: int) -> None:
        self.session_id = session_id
        self.handles: dict[int, Handle] = {}
        self.events = SessionEvents(max_queue)
        # Liveness: set by every call that names the session or one of its
        # handles; the idle sweep reads and clears it.
        self.touched = True
        self.idle_sweeps = 0

    @property
    def attached(self) -> bool:
        """A Callbacks stream is draining this session's events."""
        return self.events.on_ready is not None


class Handle:
    __slots__ = ("checkpoint", "flags", "handle_id", "iterations", "notify", "session")

    def __init__(
        self, handle_id: int, session: Session, checkpoint: Checkpoint, flags: OpenFlag
    ) -> None:
        self.handle_id = handle_id
        self.session = session
        self.checkpoint = checkpoint
        self.flags = flags
        self.iterations: set[int] = set()
        self.notify = False  # registered for immediate consumption

    def require(self, flag: OpenFlag, what: str) -> Checkpoint:
        if not self.flags & flag:
            raise CkptError(
                ErrorCode.OP_NOT_PERMITTED,
                f"{what} needs a handle opened with {flag.name}",
            )
        return self.checkpoint


class Iteration:
    __slots__ = ("handle", "iteration_id", "pending")

    def __init__(self, iteration_id: int, handle: Handle, pending: list[bytes]) -> None:
        self.iteration_id = iteration_id
        self.handle = handle
        self.pending = pending  # chosen at initialize, returned in order


class ReplicaManager:
    def __init__(
        self, clock: Clock, limits: Limits | None = None, changelog: ChangeLog | None = None
    ) -> None:
        self.clock = clock
        self.limits = limits or Limits()
        self.changelog = changelog or NoChangeLog()
        self.sessions: dict[int, Session] = {}
        self.handles: dict[int, Handle] = {}
        self.iterations: dict[int, Iteration] = {}
        self.checkpoints: dict[str, Checkpoint] = {}  # live names only
        # Handles per checkpoint instance, unlinked ones included.
        self._openers: dict[Checkpoint, set[Handle]] = {}
        self._retention_timers: dict[Checkpoint, Timer] = {}
        self.reserved_bytes = 0
        self._random = random.Random()

    def _new_id(self, taken: Container[int]) -> int:
        # Random 63-bit ids: a stale or forged handle is very unlikely to name
        # a live object, unlike a counter that restarts with the server.
        while True:
            candidate = self._random.getrandbits(63) or 1
            if candidate not in taken:
                return candidate

    # -- sessions ----------------------------------------------------------

    def initialize(self, release_code: str, major: int, minor: int) -> tuple[int, Version]:
        supported = Version(RELEASE_CODE, MAJOR_VERSION, MINOR_VERSION)
        if release_code != RELEASE_CODE or major > MAJOR_VERSION:
            raise VersionMismatch(supported)
        if len(self.sessions) >= self.limits.max_sessions:
            raise CkptError(
                ErrorCode.NO_RESOURCE, f"the node has max_sessions={self.limits.max_sessions}"
            )
        session_id = self._new_id(self.sessions)
        self.sessions[session_id] = Session(session_id, self.limits.max_callback_queue)
        return session_id, supported

    def session(self, session_id: int) -> Session:
        session = self.sessions.get(session_id)
        if session is None:
            raise CkptError(ErrorCode.BAD_HANDLE, f"service handle {session_id} is not initialized")
        session.touched = True
        return session

    def sweep_idle_sessions(self) -> list[int]:
        """Finalize sessions that were neither attached to a Callbacks stream
        nor used during two sweeps in a row (a client that vanished: its
        checkpoints close, so their retention timers start). Returns the
        reaped session ids. Run it every session_timeout / 2."""
        reaped = []
        for session in list(self.sessions.values()):
            if session.attached or session.touched:
                session.touched = False
                session.idle_sweeps = 0
                continue
            session.idle_sweeps += 1
            if session.idle_sweeps >= 2:
                self.finalize(session.session_id)
                reaped.append(session.session_id)
        return reaped

    def finalize(self, session_id: int) -> None:
        session = self.session(session_id)
        for handle_id in list(session.handles):
            self.close(handle_id)
        session.events.close()
        del self.sessions[session_id]

    # -- open / close / delete ----------------------------------------------

    def open(
        self,
        session_id: int,
        name: str,
        attributes: CreationAttributes | None,
        flags: OpenFlag,
    ) -> int:
        session = self.session(session_id)
        _check_name(name)
        if not flags:
            raise CkptError(ErrorCode.BAD_FLAG, "open flags must include READ, WRITE or CREATE")
        creating = bool(flags & OpenFlag.CREATE)
        if creating and attributes is None:
            raise CkptError(ErrorCode.INVALID_PARAM, "CREATE needs creation attributes")
        if not creating and attributes is not None:
            raise CkptError(
                ErrorCode.INVALID_PARAM, "creation attributes are only allowed with CREATE"
            )
        if len(session.handles) >= self.limits.max_handles_per_session:
            raise CkptError(
                ErrorCode.NO_RESOURCE,
                f"session has max_handles_per_session={self.limits.max_handles_per_session}",
            )
        checkpoint = self.checkpoints.get(name)
        if attributes is not None:
            self._check_attributes(attributes)
            if checkpoint is not None and not checkpoint.attributes.same_shape(attributes):
                raise CkptError(
                    ErrorCode.ALREADY_EXIST,
                    f"checkpoint {name!r} exists with other creation attributes",
                )
        if checkpoint is None:
            if attributes is None:
                raise CkptError(ErrorCode.NOT_EXIST, f"checkpoint {name!r} does not exist")
            checkpoint = self._create(name, attributes)
        timer = self._retention_timers.pop(checkpoint, None)
        if timer is not None:
            timer.cancel()
        handle = Handle(self._new_id(self.handles), session, checkpoint, flags)
        self.handles[handle.handle_id] = handle
        session.handles[handle.handle_id] = handle
        self._openers[checkpoint].add(handle)
        return handle.handle_id

    def open_async(
        self,
        session_id: int,
        invocation: int,
        name: str,
        attributes: CreationAttributes | None,
        flags: OpenFlag,
    ) -> None:
        """Open, then report the outcome on the session's callback queue.

        As in the seed, parameter errors fail the call itself; what depends on
        the checkpoint (it exists, its attributes, space) arrives as the
        callback's error.
        """
        session = self.session(session_id)
        try:
            handle_id = self.open(session_id, name, attributes, flags)
        except CkptError as error:
            if error.code in _CALL_ERRORS:
                raise
            self._deliver([(session, OpenCompleted(invocation, 0, error, name))])
        else:
            self._deliver([(session, OpenCompleted(invocation, handle_id, None, name))])

    def _check_attributes(self, attributes: CreationAttributes) -> None:
        flags = attributes.creation_flags
        modes = flags & UPDATE_MODES
        if len(modes) != 1:
            raise CkptError(
                ErrorCode.BAD_FLAG,
                "creation flags need exactly one of WR_ALL_REPLICAS, WR_ACTIVE_REPLICA, "
                f"WR_ACTIVE_REPLICA_WEAK (got {sorted(f.name for f in modes)})",
            )
        limits = self.limits
        if attributes.max_sections < 1:
            raise CkptError(ErrorCode.INVALID_PARAM, "max_sections must be at least 1")
        if attributes.max_sections > 1 and attributes.max_section_id_size < 1:
            raise CkptError(
                ErrorCode.INVALID_PARAM,
                "max_section_id_size must be at least 1 when max_sections > 1",
            )
        if attributes.checkpoint_size > attributes.max_sections * attributes.max_section_size:
            raise CkptError(
                ErrorCode.INVALID_PARAM,
                f"checkpoint_size {attributes.checkpoint_size} > max_sections * "
                f"max_section_size ({attributes.max_sections} * {attributes.max_section_size})",
            )
        for value, limit, what in (
            (attributes.max_sections, limits.max_sections_per_checkpoint, "max_sections"),
            (attributes.max_section_size, limits.max_section_size, "max_section_size"),
            (attributes.max_section_id_size, limits.max_section_id_size, "max_section_id_size"),
            (attributes.checkpoint_size, limits.max_reserved_bytes, "checkpoint_size"),
        ):
            if value > limit:
                raise CkptError(
                    ErrorCode.NO_MEMORY, f"{what} {value} exceeds this node's limit {limit}"
                )
        if attributes.retention_duration is not None and attributes.retention_duration < 0:
            raise CkptError(ErrorCode.INVALID_PARAM, "retention duration must not be negative")

    def _create(self, name: str, attributes: CreationAttributes) -> Checkpoint:
        if len(self._openers) >= self.limits.max_checkpoints:
            raise CkptError(
                ErrorCode.NO_MEMORY, f"the node has max_checkpoints={self.limits.max_checkpoints}"
            )
        if self.reserved_bytes + attributes.checkpoint_size > self.limits.max_reserved_bytes:
            raise CkptError(
                ErrorCode.NO_MEMORY,
                f"the node cannot reserve {attributes.checkpoint_size} more bytes "
                f"({self.reserved_bytes} of {self.limits.max_reserved_bytes} reserved)",
            )
        checkpoint = self._register(name, attributes)
        self.changelog.mark(("checkpoint", name), synchronous=attributes.synchronous)
        return checkpoint

    def _register(self, name: str, attributes: CreationAttributes) -> Checkpoint:
        checkpoint = Checkpoint(name, attributes, self.clock, self._on_change, self.changelog)
        self.checkpoints[name] = checkpoint
        self._openers[checkpoint] = set()
        self.reserved_bytes += attributes.checkpoint_size
        return checkpoint

    def restore(
        self,
        name: str,
        attributes: CreationAttributes,
        has_active_replica: bool,
        generated_ids: int,
    ) -> Checkpoint:
        """Put back a checkpoint read from storage at start-up. Nobody has it
        open, as after the last close, so its retention timer starts (call
        after its sections are restored: see start_retention_of_restored)."""
        checkpoint = self._register(name, attributes)
        checkpoint.sections.clear()  # the stored sections include the default one
        checkpoint.has_active_replica = has_active_replica
        checkpoint.generated_ids = generated_ids
        return checkpoint

    def start_retention_of_restored(self, minimum: float = 0.0) -> None:
        """``minimum``: after a failover, give clients time to reopen."""
        for checkpoint in list(self.checkpoints.values()):
            if not self._openers[checkpoint]:
                self._start_retention(checkpoint, minimum)

    def _free(self, checkpoint: Checkpoint) -> None:
        if self.checkpoints.get(checkpoint.name) is checkpoint:
            del self.checkpoints[checkpoint.name]
            self.changelog.mark(("checkpoint", checkpoint.name), synchronous=checkpoint.synchronous)
        timer = self._retention_timers.pop(checkpoint, None)
        if timer is not None:
            timer.cancel()
        del self._openers[checkpoint]
        self.reserved_bytes -= checkpoint.attributes.checkpoint_size
        checkpoint.discard()

    def handle(self, handle_id: int) -> Handle:
        handle = self.handles.get(handle_id)
        if handle is None:
            raise CkptError(ErrorCode.INVALID_HANDLE, f"checkpoint handle {handle_id} is not open")
        handle.session.touched = True
        return handle

    def close(self, handle_id: int) -> None:
        handle = self.handle(handle_id)
        for iteration_id in list(handle.iterations):
            self.iteration_finalize(iteration_id)
        del self.handles[handle_id]
        del handle.session.handles[handle_id]
        handle.session.events.drop_handle(handle_id)
        checkpoint = handle.checkpoint
        openers = self._openers[checkpoint]
        openers.discard(handle)
        if openers:
            return
        if checkpoint.unlinked:
            self._free(checkpoint)
        else:
            self._start_retention(checkpoint)

    def _start_retention(self, checkpoint: Checkpoint, minimum: float = 0.0) -> None:
        duration = checkpoint.retention_duration
        if duration is None:
            return
        duration = max(duration, minimum)
        if duration <= 0:
            self._free(checkpoint)
            return

        def expire() -> None:
            self._retention_timers.pop(checkpoint, None)
            if not self._openers.get(checkpoint, True):
                self._free(checkpoint)

        self._retention_timers[checkpoint] = self.clock.call_later(duration, expire)

    def delete(self, session_id: int, name: str) -> None:
        self.session(session_id)
        _check_name(name)
        checkpoint = self.checkpoints.get(name)
        if checkpoint is None:
            raise CkptError(ErrorCode.NOT_EXIST, f"checkpoint {name!r} does not exist")
        del self.checkpoints[name]
        checkpoint.unlinked = True
        self.changelog.mark(("checkpoint", name), synchronous=checkpoint.synchronous)
        if not self._openers[checkpoint]:
            self._free(checkpoint)

    def retention_duration_set(self, handle_id: int, duration: MaybeForever) -> None:
        checkpoint = self.handle(handle_id).checkpoint
        if checkpoint.unlinked:
            raise CkptError(
                ErrorCode.BAD_OPERATION, f"checkpoint {checkpoint.name!r} has been unlinked"
            )
        if duration is not None and duration < 0:
            raise CkptError(ErrorCode.INVALID_PARAM, "retention duration must not be negative")
        checkpoint.retention_duration = duration
        self.changelog.mark(
            ("checkpoint-meta", checkpoint.name), synchronous=checkpoint.synchronous
        )

    def active_replica_set(self, handle_id: int) -> None:
        handle = self.handle(handle_id)
        checkpoint = handle.checkpoint
        if checkpoint.unlinked:
            raise CkptError(
                ErrorCode.BAD_OPERATION, f"checkpoint {checkpoint.name!r} has been unlinked"
            )
        if not checkpoint.attributes.collocated:
            raise CkptError(
                ErrorCode.BAD_OPERATION,
                f"checkpoint {checkpoint.name!r} is not collocated: the service picks "
                "its active replica",
            )
        handle.require(OpenFlag.WRITE, "ActiveReplicaSet")
        if not checkpoint.has_active_replica:
            checkpoint.has_active_replica = True
            self.changelog.mark(
                ("checkpoint-meta", checkpoint.name), synchronous=checkpoint.synchronous
            )

    def status_get(self, handle_id: int) -> CheckpointDescriptor:
        checkpoint = self.handle(handle_id).checkpoint
        checkpoint.require_active_replica()
        attributes = checkpoint.attributes
        if attributes.retention_duration != checkpoint.retention_duration:
            attributes = replace(attributes, retention_duration=checkpoint.retention_duration)
        return CheckpointDescriptor(
            attributes=attributes,
            memory_used=checkpoint.memory_used,
            number_of_sections=len(checkpoint.sections),
        )

    # -- sections ---------------------------------------------------------

    def _writable(self, handle_id: int, what: str) -> Checkpoint:
        checkpoint = self.handle(handle_id).require(OpenFlag.WRITE, what)
        checkpoint.require_active_replica()
        return checkpoint

    def section_create(
        self,
        handle_id: int,
        section_id: bytes | None,
        expiration: MaybeForever,
        initial_data: bytes,
    ) -> bytes:
        checkpoint = self._writable(handle_id, "SectionCreate")
        return checkpoint.section_create(section_id, expiration, initial_data)

    def section_delete(self, handle_id: int, section_id: bytes) -> None:
        self._writable(handle_id, "SectionDelete").section_delete(section_id)

    def section_expiration_time_set(
        self, handle_id: int, section_id: bytes, expiration: MaybeForever
    ) -> None:
        checkpoint = self._writable(handle_id, "SectionExpirationTimeSet")
        checkpoint.section_expiration_time_set(section_id, expiration)

    def iteration_initialize(
        self, handle_id: int, chosen: SectionsChosen, expiration_time: float | None
    ) -> int:
        handle = self.handle(handle_id)
        handle.checkpoint.require_active_replica()
        if len(handle.iterations) >= self.limits.max_iterations_per_handle:
            raise CkptError(
                ErrorCode.NO_RESOURCE,
                f"handle has max_iterations_per_handle={self.limits.max_iterations_per_handle}",
            )
        pending = handle.checkpoint.chosen_sections(chosen, expiration_time)
        pending.reverse()  # popped from the end
        iteration = Iteration(self._new_id(self.iterations), handle, pending)
        self.iterations[iteration.iteration_id] = iteration
        handle.iterations.add(iteration.iteration_id)
        return iteration.iteration_id

    def iteration_next(self, iteration_id: int) -> SectionDescriptor | None:
        """The next chosen section that still exists, or None at the end."""
        iteration = self._iteration(iteration_id)
        checkpoint = iteration.handle.checkpoint
        checkpoint.require_active_replica()
        while iteration.pending:
            section = checkpoint.sections.get(iteration.pending.pop())
            if section is not None:
                return section.descriptor()
        return None

    def iteration_finalize(self, iteration_id: int) -> None:
        iteration = self._iteration(iteration_id)
        del self.iterations[iteration_id]
        iteration.handle.iterations.discard(iteration_id)

    def _iteration(self, iteration_id: int) -> Iteration:
        iteration = self.iterations.get(iteration_id)
        if iteration is None:
            raise CkptError(
                ErrorCode.INVALID_HANDLE, f"section iteration handle {iteration_id} is not open"
            )
        iteration.handle.session.touched = True
        return iteration

    # -- data ---------------------------------------------------------------

    def write(self, handle_id: int, elements: Sequence[WriteElement]) -> None:
        checkpoint = self._writable(handle_id, "CheckpointWrite")
        self._check_iovector(len(elements))
        checkpoint.write(elements)

    def overwrite(self, handle_id: int, section_id: bytes, data: bytes) -> None:
        self._writable(handle_id, "SectionOverwrite").overwrite(section_id, data)

    def read(self, handle_id: int, elements: Sequence[ReadElement]) -> list[bytes]:
        checkpoint = self.handle(handle_id).require(OpenFlag.READ, "CheckpointRead")
        checkpoint.require_active_replica()
        self._check_iovector(len(elements))
        return checkpoint.read(elements)

    def _check_iovector(self, count: int) -> None:
        if count == 0:
            raise CkptError(ErrorCode.INVALID_PARAM, "the iovector is empty")
        if count > self.limits.max_iovector_elements:
            raise CkptError(
                ErrorCode.INVALID_PARAM,
                f"the iovector has {count} elements, more than this node's limit "
                f"{self.limits.max_iovector_elements}",
            )

    def synchronize(self, handle_id: int) -> None:
        """On a single node every replica is the active one: nothing to wait
        for once the checks pass."""
        checkpoint = self._writable(handle_id, "CheckpointSynchronize")
        if checkpoint.attributes.synchronous:
            raise CkptError(
                ErrorCode.BAD_OPERATION,
                f"checkpoint {checkpoint.name!r} is synchronous (WR_ALL_REPLICAS): "
                "its replicas are always in step",
            )

    def synchronize_async(self, handle_id: int, invocation: int) -> None:
        self.synchronize(handle_id)
        self.synchronized(handle_id, invocation)

    def synchronized(self, handle_id: int, invocation: int) -> None:
        """Report a SynchronizeAsync as done (once the replicas caught up)."""
        handle = self.handles.get(handle_id)
        if handle is not None:  # closed meanwhile: its callbacks are cancelled
            self._deliver([(handle.session, SynchronizeCompleted(invocation, handle_id, None))])

    def immediate_consumption_register(self, handle_id: int) -> None:
        self.handle(handle_id).notify = True

    def _on_change(self, checkpoint: Checkpoint, changes: list[tuple[bytes, Change]]) -> None:
        deliveries: list[tuple[Session, Event]] = [
            (handle.session, Notification(checkpoint.name, handle.handle_id, list(changes)))
            for handle in self._openers.get(checkpoint, ())
            if handle.notify
        ]
        if deliveries:
            self._deliver(deliveries)

    def _deliver(self, deliveries: list[tuple[Session, Event]]) -> None:
        """Queue callbacks once what they report is durable (at once on a node
        that stores nothing), skipping those of sessions or handles closed in
        the meantime (Close and Finalize cancel pending callbacks)."""

        def push() -> None:
            for session, event in deliveries:
                if self.sessions.get(session.session_id) is not session:
                    continue
                handle = getattr(event, "handle", 0)
                if handle and handle not in session.handles:
                    continue
                session.events.push(event)

        self.changelog.after_durable(push)

    def take_events(self, session_id: int) -> list[Event]:
        return self.session(session_id).events.take_all()


@dataclass(frozen=True, slots=True)
class Version:
    release_code: str
    major_version: int
    minor_version: int


class VersionMismatch(CkptError):
    """Initialize with an incompatible version; carries the supported one."""

    def __init__(self, supported: Version) -> None:
        super().__init__(
            ErrorCode.VERSION_MISMATCH,
            f"this server supports version {supported.release_code}."
            f"{supported.major_version}.{supported.minor_version}",
        )
        self.supported = supported


def _check_name(name: str) -> None:
    if not name:
        raise CkptError(ErrorCode.INVALID_PARAM, "the checkpoint name is empty")
    if len(name.encode()) > MAX_NAME_LENGTH:
        raise CkptError(
            ErrorCode.INVALID_PARAM, f"the checkpoint name exceeds {MAX_NAME_LENGTH} bytes"
        )
