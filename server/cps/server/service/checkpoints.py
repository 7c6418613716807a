"""The server-based checkpoint API (seed 3.4, 3.5) as use cases: one
method per seed call. Sessions and handles are this node's; a call on a
checkpoint runs on its active replica, here or on the node that holds it.

``who`` is the caller's identity: a session and its handles answer only
to the identity that initialized it ("" when authentication is off).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

from cps.server.core import calls as c
from cps.server.core.clock import Clock
from cps.server.core.directory import NameTaken, Record
from cps.server.core.errors import CkptError, ErrorCode
from cps.server.core.events import Notification, OpenCompleted, SynchronizeCompleted
from cps.server.core.limits import Limits
from cps.server.core.operations import Openers
from cps.server.core.replica import Changes, Ref
from cps.server.core.replicas import Replicas
from cps.server.core.rules import check_attributes, check_duration, check_iovector
from cps.server.core.sessions import SUPPORTED, Handle, Session, Sessions, Version, check_name
from cps.server.core.types import (
    CheckpointDescriptor,
    CreationAttributes,
    MaybeForever,
    Nanos,
    OpenFlag,
    ReadElement,
    SectionDescriptor,
    SectionsChosen,
    WriteElement,
)

from .active import ActiveReplicas, require_active
from .openers import OpenerReports
from .ports import Directory, Forwarder

log = logging.getLogger("cps.service")

# Errors of CheckpointOpenAsync returned by the call rather than the callback.
_CALL_ERRORS = frozenset(
    {ErrorCode.BAD_HANDLE, ErrorCode.BAD_FLAG, ErrorCode.INVALID_PARAM, ErrorCode.NULL_POINTER}
)


class Checkpoints:
    def __init__(
        self,
        sessions: Sessions,
        replicas: Replicas,
        active: ActiveReplicas,
        directory: Directory,
        forwarder: Forwarder,
        clock: Clock,
        limits: Limits,
        *,
        reroute_seconds: float = 6.0,
    ) -> None:
        self.sessions = sessions
        self.replicas = replicas
        self.active = active
        self.directory = directory
        self.forwarder = forwarder
        self.clock = clock
        self.limits = limits
        # How long a call keeps looking for a checkpoint's active replica
        # while it moves (a failover), before TRY_AGAIN.
        self.reroute_seconds = reroute_seconds
        self.me = directory.me
        # Raises TRY_AGAIN while the node cannot answer (joining a cluster).
        self.ready_check: Callable[[], None] = lambda: None
        self.openers = OpenerReports(
            self.me.name,
            sessions,
            self.route,
            lambda ref: directory.get(ref.incarnation) is not None,
        )
        self._tasks: set[asyncio.Task[None]] = set()
        # The last asynchronous completion of each session (kept in order).
        self._last_completion: dict[int, asyncio.Task[None]] = {}

    # -- routing -----------------------------------------------------------------

    async def route(self, ref: Ref, call: c.Call) -> object:
        """Run ``call`` on the active replica of ``ref``, wherever it is,
        following it while it moves."""
        self.ready_check()
        deadline: float | None = None
        pause = 0.02
        while True:
            record = require_active(self.directory.get(ref.incarnation), ref.name)
            try:
                if record.active == self.me:
                    return await self.active.run(ref, call)
                return await self.forwarder.call(record, call)
            except CkptError as error:
                if error.metadata.get("cause") != "not_active":
                    raise
                loop = asyncio.get_running_loop()
                if deadline is None:
                    deadline = loop.time() + self.reroute_seconds
                if loop.time() + pause > deadline:
                    raise CkptError(
                        ErrorCode.TRY_AGAIN,
                        f"the active replica of checkpoint {ref.name!r} is moving: try again",
                    ) from error
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.25)

    # -- sessions ------------------------------------------------------------------

    def initialize(self, release_code: str, major: int, who: str = "") -> tuple[int, Version]:
        session = self.sessions.initialize(release_code, major, who)
        return session.session_id, SUPPORTED

    async def finalize(self, session_id: int, who: str = "") -> None:
        await self._finalize(self.sessions.session(session_id, who))

    async def _finalize(self, session: Session) -> None:
        refs = {handle.ref for handle in session.handles.values()}
        for handle in list(session.handles.values()):
            self.sessions.remove_handle(handle)
        self.sessions.remove_session(session)
        await asyncio.gather(*(self.openers.report_quietly(ref) for ref in refs))

    async def reap_idle_sessions(self) -> list[int]:
        """Finalize the sessions of clients that vanished (their checkpoints
        close, so their retention timers start)."""
        idle = self.sessions.idle_sessions()
        for session in idle:
            await self._finalize(session)
        return [session.session_id for session in idle]

    # -- open / close / delete ---------------------------------------------------------

    def _check_open(
        self,
        session_id: int,
        name: str,
        attributes: CreationAttributes | None,
        flags: OpenFlag,
        who: str,
    ) -> Session:
        """The checks of an open that fail the call itself (also for OpenAsync)."""
        session = self.sessions.session(session_id, who)
        check_name(name)
        if not flags:
            raise CkptError(ErrorCode.BAD_FLAG, "open flags must include READ, WRITE or CREATE")
        creating = bool(flags & OpenFlag.CREATE)
        if creating and attributes is None:
            raise CkptError(ErrorCode.INVALID_PARAM, "CREATE needs creation attributes")
        if not creating and attributes is not None:
            raise CkptError(
                ErrorCode.INVALID_PARAM, "creation attributes are only allowed with CREATE"
            )
        if attributes is not None:
            check_attributes(attributes, self.limits)
        return session

    async def open(
        self,
        session_id: int,
        name: str,
        attributes: CreationAttributes | None,
        flags: OpenFlag,
        who: str = "",
    ) -> int:
        session = self._check_open(session_id, name, attributes, flags, who)
        return await self._open(session, name, attributes, flags)

    async def _open(
        self,
        session: Session,
        name: str,
        attributes: CreationAttributes | None,
        flags: OpenFlag,
    ) -> int:
        self.sessions.check_handle_room(session)
        self.ready_check()
        record = self.directory.lookup(name) or await self.directory.find(name)
        if record is None:
            if attributes is None:
                raise CkptError(ErrorCode.NOT_EXIST, f"checkpoint {name!r} does not exist")
            record, created = await self._create(name, attributes)
            if created:
                # The instance was created with this node's one opener.
                ref = _ref(record)
                handle = self.sessions.add_handle(session, ref, flags)
                if self.sessions.opener_count(ref) != (1, False):
                    self.openers.report_later(ref)  # another open raced this one
                return handle.handle_id
        if attributes is not None and not record.attributes.same_shape(attributes):
            raise CkptError(
                ErrorCode.ALREADY_EXIST,
                f"checkpoint {name!r} exists with other creation attributes",
            )
        ref = _ref(record)
        handle = self.sessions.add_handle(session, ref, flags)
        try:
            await self._tell_openers(ref)
        except CkptError:
            self.sessions.remove_handle(handle)
            self.openers.report_later(ref)
            raise
        return handle.handle_id

    async def _tell_openers(self, ref: Ref) -> None:
        """This node's new count to the active replica; with none (a
        collocated checkpoint before ActiveReplicaSet), to the next one."""
        record = self.directory.get(ref.incarnation)
        if record is not None and record.active is None:
            self.openers.report_later(ref)
            return
        await self.openers.report(ref)

    async def _create(self, name: str, attributes: CreationAttributes) -> tuple[Record, bool]:
        """Create the instance, active here, with one opener (the handle about
        to be added); or find the record of whoever created it first."""
        self.replicas.admit(attributes)
        try:
            record = await self.directory.create(name, attributes)
        except NameTaken as taken:
            return taken.record, False
        outcome = self.active.create(record, Openers(self.me.name, 1, False, self.clock.now()))
        try:
            await self.active.complete(outcome)
        except CkptError:
            # Not created as far as the caller knows: the instance goes again.
            self.active.drop(_ref(record))
            await self.directory.remove(record)
            raise
        return record, True

    async def open_async(
        self,
        session_id: int,
        invocation: int,
        name: str,
        attributes: CreationAttributes | None,
        flags: OpenFlag,
        who: str = "",
    ) -> None:
        """Parameter errors fail the call itself, as in the seed; what depends
        on the checkpoint (it exists, its attributes, space) arrives as the
        callback's error."""
        session = self._check_open(session_id, name, attributes, flags, who)

        async def complete() -> OpenCompleted:
            try:
                handle_id = await self._open(session, name, attributes, flags)
            except CkptError as error:
                return OpenCompleted(invocation, 0, error, name)
            return OpenCompleted(invocation, handle_id, None, name)

        self._in_order(session, complete())

    async def close(self, handle_id: int, who: str = "") -> None:
        handle = self.sessions.handle(handle_id, who)
        self.sessions.remove_handle(handle)
        # The handle is closed whatever the active answers: when it cannot be
        # told now, it is told again once it can (see OpenerReports).
        await self.openers.report_quietly(handle.ref)

    async def delete(self, session_id: int, name: str, who: str = "") -> None:
        self.sessions.session(session_id, who)
        check_name(name)
        self.ready_check()
        record = self.directory.lookup(name) or await self.directory.find(name)
        if record is None:
            raise CkptError(ErrorCode.NOT_EXIST, f"checkpoint {name!r} does not exist")
        if record.active is None:
            # No active replica to wait for its last close (a collocated
            # checkpoint before ActiveReplicaSet): every call on it fails
            # anyway, so it goes at once.
            await self.directory.remove(record)
            return
        await self.directory.unlink(record)
        await self.active.complete(self.active.unlinked(_ref(record)))

    async def retention_duration_set(
        self, handle_id: int, duration: MaybeForever, who: str = ""
    ) -> None:
        handle = self.sessions.handle(handle_id, who)
        record = self.directory.get(handle.ref.incarnation)
        if record is not None and record.unlinked:
            raise CkptError(
                ErrorCode.BAD_OPERATION, f"checkpoint {handle.ref.name!r} has been unlinked"
            )
        check_duration(duration, "retention duration")
        await self.route(handle.ref, c.RetentionSetCall(duration))

    async def active_replica_set(self, handle_id: int, who: str = "") -> None:
        handle = self.sessions.handle(handle_id, who)
        ref = handle.ref
        record = self.directory.get(ref.incarnation)
        if record is None or record.unlinked:
            raise CkptError(ErrorCode.BAD_OPERATION, f"checkpoint {ref.name!r} has been unlinked")
        if not record.attributes.collocated:
            raise CkptError(
                ErrorCode.BAD_OPERATION,
                f"checkpoint {ref.name!r} is not collocated: the service picks its active replica",
            )
        handle.require(OpenFlag.WRITE, "ActiveReplicaSet")
        if record.active == self.me:
            return
        await self.active.take_over(record)

    async def status_get(self, handle_id: int, who: str = "") -> CheckpointDescriptor:
        handle = self.sessions.handle(handle_id, who)
        return cast(CheckpointDescriptor, await self.route(handle.ref, c.StatusCall()))

    # -- sections --------------------------------------------------------------------

    def _writable(self, handle_id: int, who: str, what: str) -> Ref:
        return self.sessions.handle(handle_id, who).require(OpenFlag.WRITE, what)

    async def section_create(
        self,
        handle_id: int,
        section_id: bytes | None,
        expiration: MaybeForever,
        initial_data: bytes,
        who: str = "",
    ) -> bytes:
        ref = self._writable(handle_id, who, "SectionCreate")
        call = c.SectionCreateCall(section_id, expiration, initial_data)
        return cast(bytes, await self.route(ref, call))

    async def section_delete(self, handle_id: int, section_id: bytes, who: str = "") -> None:
        ref = self._writable(handle_id, who, "SectionDelete")
        await self.route(ref, c.SectionDeleteCall(section_id))

    async def section_expiration_time_set(
        self, handle_id: int, section_id: bytes, expiration: MaybeForever, who: str = ""
    ) -> None:
        ref = self._writable(handle_id, who, "SectionExpirationTimeSet")
        await self.route(ref, c.ExpirationSetCall(section_id, expiration))

    async def iteration_initialize(
        self, handle_id: int, chosen: SectionsChosen, expiration_time: Nanos | None, who: str = ""
    ) -> int:
        handle = self.sessions.handle(handle_id, who)
        if len(handle.iterations) >= self.limits.max_iterations_per_handle:
            raise CkptError(
                ErrorCode.NO_RESOURCE,
                f"handle has max_iterations_per_handle={self.limits.max_iterations_per_handle}",
            )
        ids = cast(
            list[bytes], await self.route(handle.ref, c.IterateCall(chosen, expiration_time))
        )
        return self.sessions.add_iteration(handle, ids).iteration_id

    async def iteration_next(self, iteration_id: int, who: str = "") -> SectionDescriptor | None:
        """The next chosen section that still exists, or None at the end."""
        iteration = self.sessions.iteration(iteration_id, who)
        ref = iteration.handle.ref
        require_active(self.directory.get(ref.incarnation), ref.name)
        while iteration.pending:
            section_id = iteration.pending[-1]
            descriptor = await self.route(ref, c.DescribeCall(section_id))
            if iteration.pending and iteration.pending[-1] == section_id:
                iteration.pending.pop()
            if descriptor is not None:
                return cast(SectionDescriptor, descriptor)
        return None

    def iteration_finalize(self, iteration_id: int, who: str = "") -> None:
        self.sessions.remove_iteration(self.sessions.iteration(iteration_id, who))

    # -- data ---------------------------------------------------------------------

    async def write(self, handle_id: int, elements: Sequence[WriteElement], who: str = "") -> None:
        ref = self._writable(handle_id, who, "CheckpointWrite")
        check_iovector(len(elements), self.limits)
        await self.route(ref, c.WriteCall(tuple(elements)))

    async def overwrite(
        self, handle_id: int, section_id: bytes, data: bytes, who: str = ""
    ) -> None:
        ref = self._writable(handle_id, who, "SectionOverwrite")
        await self.route(ref, c.OverwriteCall(section_id, data))

    async def read(
        self, handle_id: int, elements: Sequence[ReadElement], who: str = ""
    ) -> list[bytes]:
        ref = self.sessions.handle(handle_id, who).require(OpenFlag.READ, "CheckpointRead")
        check_iovector(len(elements), self.limits)
        return cast(list[bytes], await self.route(ref, c.ReadCall(tuple(elements))))

    async def synchronize(self, handle_id: int, who: str = "") -> None:
        ref = self._writable(handle_id, who, "CheckpointSynchronize")
        await self.route(ref, c.SynchronizeCall())

    async def synchronize_async(self, handle_id: int, invocation: int, who: str = "") -> None:
        """Checks fail the call; the completion (or the error of waiting for
        the replicas) arrives as a callback."""
        handle = self.sessions.handle(handle_id, who)
        ref = handle.require(OpenFlag.WRITE, "CheckpointSynchronizeAsync")
        record = require_active(self.directory.get(ref.incarnation), ref.name)
        if record.attributes.synchronous:
            raise CkptError(
                ErrorCode.BAD_OPERATION,
                f"checkpoint {ref.name!r} is synchronous (WR_ALL_REPLICAS): "
                "its replicas are always in step",
            )

        async def complete() -> SynchronizeCompleted:
            try:
                await self.route(ref, c.SynchronizeCall())
            except CkptError as error:
                return SynchronizeCompleted(invocation, handle_id, error)
            return SynchronizeCompleted(invocation, handle_id, None)

        self._in_order(handle.session, complete())

    async def immediate_consumption_register(self, handle_id: int, who: str = "") -> None:
        handle = self.sessions.handle(handle_id, who)
        if handle.notify:
            return
        handle.notify = True
        try:
            await self._tell_openers(handle.ref)
        except CkptError:
            handle.notify = False
            raise

    def deliver(self, ref: Ref, changes: Changes) -> None:
        """Notifications of a change to the handles here registered on it."""
        for handle in self.sessions.handles_of(ref):
            if handle.notify:
                self.sessions.push(
                    handle.session, Notification(ref.name, handle.handle_id, list(changes))
                )

    def handle(self, handle_id: int, who: str = "") -> Handle:
        return self.sessions.handle(handle_id, who)

    def _in_order(
        self, session: Session, work: Awaitable[OpenCompleted | SynchronizeCompleted]
    ) -> None:
        """Run an asynchronous call's work at once, but queue its completion
        after those of the session's earlier asynchronous calls."""
        previous = self._last_completion.get(session.session_id)

        async def run() -> None:
            event = await work
            if previous is not None:
                await previous
            self.sessions.push(session, event)

        task = asyncio.ensure_future(run())
        self._last_completion[session.session_id] = task
        self._tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._tasks.discard(finished)
            if self._last_completion.get(session.session_id) is finished:
                del self._last_completion[session.session_id]

        task.add_done_callback(done)

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _ref(record: Record) -> Ref:
    return Ref(record.name, record.incarnation)
