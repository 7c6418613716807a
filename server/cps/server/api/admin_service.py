"""AdminService servicer (the management information model): protobuf in,
the admin use case (service/admin.py), protobuf out. Read only."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from cps.server.core.authorization import Access, Authorization, Kind
from cps.server.core.errors import CkptError, ErrorCode
from cps.server.core.sessions import Session
from cps.server.core.types import OpenFlag
from cps.server.service.admin import Admin, CheckpointView, NodeView, Source
from cps.server.service.ports import Snapshots
from cps.server.status import to_status
from cps.v1 import admin_service_pb2 as pb
from cps.v1 import admin_service_pb2_grpc as pb_grpc
from cps.v1 import types_pb2 as t

from . import convert
from .calls import identity, seed_rpc

log = logging.getLogger("cps.api")

# Bytes of the store per SnapshotSaveResponse (well under grpc's 4 MiB).
SNAPSHOT_CHUNK = 256 * 1024

_SOURCES = {
    Source.ACTIVE_REPLICA: pb.DETAIL_SOURCE_ACTIVE_REPLICA,
    Source.BACKUP_REPLICA: pb.DETAIL_SOURCE_BACKUP_REPLICA,
    Source.RECORD: pb.DETAIL_SOURCE_RECORD,
}
_OPEN_FLAGS = (
    (OpenFlag.READ, t.OPEN_FLAG_READ),
    (OpenFlag.WRITE, t.OPEN_FLAG_WRITE),
    (OpenFlag.CREATE, t.OPEN_FLAG_CREATE),
)


class AdminService(pb_grpc.AdminServiceServicer):
    """What a caller sees: every caller the port lets in sees the nodes; with
    an authorization table (--auth-file) only the checkpoints it may read
    (listing hides the others, asking for one is OP_NOT_PERMITTED), without
    one every checkpoint; and only its own sessions. A snapshot of the store
    holds every checkpoint: with a table, only an identity that may read
    every name of both kinds may take one."""

    def __init__(
        self,
        admin: Admin,
        authorization: Authorization | None = None,
        snapshots: Snapshots | None = None,
    ) -> None:
        self.admin = admin
        self.authorization = authorization
        # The node's store (SnapshotSave); None: this node has none.
        self.snapshots = snapshots

    def _readable(self, who: str, name: str) -> bool:
        return self.authorization is None or self.authorization.allows(
            who, Kind.SERVER, name, Access.READ
        )

    def _check(self, who: str, name: str) -> None:
        if not name:
            raise CkptError(ErrorCode.INVALID_PARAM, "checkpoint_name is required")
        if self.authorization is not None:
            self.authorization.check(who, Kind.SERVER, name, Access.READ)

    @seed_rpc
    async def ListNodes(self, request: pb.ListNodesRequest, who: str) -> pb.ListNodesResponse:
        return pb.ListNodesResponse(nodes=[_node(view) for view in self.admin.nodes()])

    @seed_rpc
    async def ListCheckpoints(
        self, request: pb.ListCheckpointsRequest, who: str
    ) -> pb.ListCheckpointsResponse:
        views, token = self.admin.list_checkpoints(
            request.name_prefix,
            request.page_size,
            request.page_token,
            lambda name: self._readable(who, name),
        )
        return pb.ListCheckpointsResponse(
            checkpoints=[_checkpoint(view) for view in views], next_page_token=token
        )

    @seed_rpc
    async def GetCheckpoint(
        self, request: pb.GetCheckpointRequest, who: str
    ) -> pb.GetCheckpointResponse:
        self._check(who, request.checkpoint_name)
        view = await self.admin.checkpoint(request.checkpoint_name)
        return pb.GetCheckpointResponse(checkpoint=_checkpoint(view))

    @seed_rpc
    async def ListSections(
        self, request: pb.ListSectionsRequest, who: str
    ) -> pb.ListSectionsResponse:
        self._check(who, request.checkpoint_name)
        token: bytes | None = None
        if request.page_token:
            try:
                token = bytes.fromhex(request.page_token)
            except ValueError as error:
                raise CkptError(
                    ErrorCode.INVALID_PARAM, f"page_token {request.page_token!r} is not ours"
                ) from error
        sections, last, source = await self.admin.sections(
            request.checkpoint_name, request.page_size, token
        )
        return pb.ListSectionsResponse(
            sections=[convert.section_descriptor_message(d) for d in sections],
            next_page_token="" if last is None else last.hex(),
            source=_SOURCES[source],
        )

    @seed_rpc
    async def ListSessions(
        self, request: pb.ListSessionsRequest, who: str
    ) -> pb.ListSessionsResponse:
        return pb.ListSessionsResponse(
            sessions=[_session(session) for session in self.admin.sessions_of(who)]
        )

    async def SnapshotSave(
        self, request: pb.SnapshotSaveRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.SnapshotSaveResponse]:
        who = identity(context)
        try:
            if self.authorization is not None:
                for kind in (Kind.SERVER, Kind.LIBRARY):
                    # Only a grant on the prefix "" matches the name "".
                    self.authorization.check(who, kind, "", Access.READ)
            snapshots = self.snapshots
            if snapshots is None:
                raise CkptError(ErrorCode.NOT_EXIST, "this node keeps no store")
            try:
                copy = await asyncio.to_thread(snapshots.snapshot)
            except Exception as error:  # the disk, not the caller
                log.error("snapshot failed", exc_info=True)
                raise CkptError(ErrorCode.INTERNAL, f"no snapshot: {error}") from error
        except CkptError as error:
            await context.abort_with_status(to_status(error))
            return
        with copy:
            size = await asyncio.to_thread(lambda: copy.seek(0, 2))
            copy.seek(0)
            log.info("snapshot", extra={"bytes": size, "identity": who})
            yield pb.SnapshotSaveResponse(
                info=pb.SnapshotInfo(
                    size=size,
                    node=self.admin.me.name,
                    schema_version=snapshots.schema_version,
                    version=self.admin.version,
                )
            )
            digest = hashlib.sha256()
            while data := await asyncio.to_thread(copy.read, SNAPSHOT_CHUNK):
                digest.update(data)
                yield pb.SnapshotSaveResponse(data=data)
            yield pb.SnapshotSaveResponse(sha256=digest.digest())


def _node(view: NodeView) -> pb.NodeInfo:
    status = view.status
    if not view.clustered:
        role = pb.NODE_ROLE_SINGLE
    elif status.director:
        role = pb.NODE_ROLE_DIRECTOR
    else:
        role = pb.NODE_ROLE_MEMBER
    if view.serving is None:
        state = pb.NODE_STATE_LIVE
    else:
        state = pb.NODE_STATE_SERVING if view.serving else pb.NODE_STATE_NOT_SERVING
    message = pb.NodeInfo(
        name=status.member.name,
        incarnation=status.member.incarnation,
        address=status.address,
        state=state,
        role=role,
        lease_id=status.lease_id,
        version=status.version,
        answering=view.answering,
        directory_revision=view.revision,
        replicas_held=view.replicas_held,
        active_replicas=view.active_replicas,
        sessions=view.sessions,
    )
    if status.lease_remaining is not None:
        message.lease_remaining.FromNanoseconds(round(status.lease_remaining * 1e9))
    return message


def _checkpoint(view: CheckpointView) -> pb.CheckpointInfo:
    record = view.record
    replicas = []
    for replica in view.replicas:
        message = pb.ReplicaInfo(
            node=replica.member.name,
            incarnation=replica.member.incarnation,
            active=replica.active,
            in_sync=replica.in_sync,
        )
        if replica.applied_seq is not None:
            message.applied_seq = replica.applied_seq
        if replica.lag is not None:
            message.lag = replica.lag
        replicas.append(message)
    return pb.CheckpointInfo(
        checkpoint_name=record.name,
        incarnation=record.incarnation,
        checkpoint_creation_attributes=convert.creation_attributes_message(record.attributes),
        number_of_sections=view.number_of_sections,
        memory_used=view.memory_used,
        active_node="" if record.active is None else record.active.name,
        replicas=replicas,
        epoch=record.epoch,
        source=_SOURCES[view.source],
        open_handles=view.open_handles,
    )


def _session(session: Session) -> pb.SessionInfo:
    return pb.SessionInfo(
        service_handle=session.session_id,
        identity=session.owner,
        handles=[
            pb.HandleInfo(
                checkpoint_handle=handle.handle_id,
                checkpoint_name=handle.ref.name,
                open_flags=[value for flag, value in _OPEN_FLAGS if handle.flags & flag],
                registered=handle.notify,
            )
            for handle in sorted(session.handles.values(), key=lambda h: h.handle_id)
        ],
        queue_depth=len(session.events.queue),
        attached=session.attached,
    )
