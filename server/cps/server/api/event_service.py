"""EventService servicer (service notifications): the node's event feed
(core/service_events.py) as a server stream, resumable from a position."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from cps.server.core.authorization import Access, Authorization, Kind
from cps.server.core.errors import CkptError, ErrorCode
from cps.server.core.service_events import (
    ActiveDetail,
    CheckpointDetail,
    EventFilter,
    EventKind,
    EventLog,
    LimitDetail,
    NodeDetail,
    ReplicaDetail,
    SectionDetail,
    ServiceEvent,
    StorageDetail,
)
from cps.server.status import to_status
from cps.v1 import event_service_pb2 as pb
from cps.v1 import event_service_pb2_grpc as pb_grpc

from .calls import identity

# Events of one message at most (a replay of a long backlog is several).
BATCH = 256


class EventService(pb_grpc.EventServiceServicer):
    def __init__(
        self, log: EventLog, node: str, authorization: Authorization | None = None
    ) -> None:
        self.log = log
        self.node = node
        self.authorization = authorization

    def _visible(self, who: str, event: ServiceEvent) -> bool:
        return (
            self.authorization is None
            or not event.checkpoint_name
            or self.authorization.allows(who, Kind.SERVER, event.checkpoint_name, Access.READ)
        )

    async def Watch(
        self, request: pb.WatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchResponse]:
        try:
            kinds = frozenset(EventKind(value) for value in request.kinds)
        except ValueError:
            error = CkptError(
                ErrorCode.INVALID_PARAM, f"unknown event kind in {list(request.kinds)}"
            )
            await context.abort_with_status(to_status(error))
            return
        who = identity(context)
        log = self.log
        matching = EventFilter(frozenset(request.checkpoint_names), kinds)
        cursor = log.start(request.after_position, request.incarnation)
        ready = asyncio.Event()
        stop = log.listen(ready.set)
        try:
            first = True
            while not log.closed:
                ready.clear()
                cursor, lost, events = log.read(cursor, matching, BATCH)
                events = [event for event in events if self._visible(who, event)]
                if events or lost or first:
                    # The first message (possibly empty) tells the caller the
                    # node's name and incarnation at once.
                    first = False
                    yield pb.WatchResponse(
                        node=self.node,
                        incarnation=log.incarnation,
                        lost=lost,
                        events=[_event(event) for event in events],
                    )
                if cursor < log.position:
                    continue  # more than one message's worth waiting
                await ready.wait()
        finally:
            stop()


def _event(event: ServiceEvent) -> pb.ServiceEvent:
    message = pb.ServiceEvent(
        position=event.position,
        kind=event.kind.value,  # type: ignore[arg-type]
        checkpoint_name=event.checkpoint_name,
    )
    message.time.FromNanoseconds(event.time)
    detail = event.detail
    match detail:
        case NodeDetail(node, incarnation):
            message.node_event.CopyFrom(pb.NodeEvent(node=node, incarnation=incarnation))
        case ReplicaDetail(node, incarnation, checkpoint_incarnation, why):
            message.replica_event.CopyFrom(
                pb.ReplicaEvent(
                    node=node,
                    incarnation=incarnation,
                    checkpoint_incarnation=checkpoint_incarnation,
                    why=why,
                )
            )
        case ActiveDetail():
            message.active_changed.CopyFrom(
                pb.ActiveChanged(
                    old_node=detail.old_node,
                    new_node=detail.new_node,
                    new_incarnation=detail.new_incarnation,
                    epoch=detail.epoch,
                    why=detail.why,
                    checkpoint_incarnation=detail.checkpoint_incarnation,
                )
            )
        case SectionDetail(section_id):
            message.section_event.CopyFrom(pb.SectionEvent(section_id=section_id))
        case LimitDetail(reason, method):
            message.limit_event.CopyFrom(pb.LimitEvent(reason=reason, method=method))
        case StorageDetail(error, names):
            message.storage_event.CopyFrom(pb.StorageEvent(error=error, checkpoint_names=names))
        case CheckpointDetail(checkpoint_incarnation):
            message.checkpoint_event.CopyFrom(
                pb.CheckpointEvent(checkpoint_incarnation=checkpoint_incarnation)
            )
    return message
