"""CheckpointService servicer: protobuf in, use case, protobuf out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from cps.server.core.authorization import Access, Authorization, Kind
from cps.server.core.errors import CkptError, ErrorCode
from cps.server.core.events import Event
from cps.server.core.types import OpenFlag
from cps.server.service.checkpoints import Checkpoints
from cps.server.status import to_status
from cps.v1 import checkpoint_service_pb2 as pb
from cps.v1 import checkpoint_service_pb2_grpc as pb_grpc
from cps.v1 import types_pb2 as t

from . import convert
from .calls import identity, seed_rpc


def _callbacks(numbered: list[tuple[int, Event]], max_bytes: int) -> list[pb.CallbacksResponse]:
    """The callbacks in order, in as few messages as fit within ``max_bytes``
    each (a callback larger than that, which the core's splitting of
    notifications leaves only for a bound below one section id, goes alone)."""
    messages: list[pb.CallbacksResponse] = []
    batch: list[pb.Callback] = []
    size = 0
    for number, event in numbered:
        callback = convert.callback_message(number, event)
        length = callback.ByteSize()
        cost = 1 + _varint_bytes(length) + length  # tag, length, body
        if batch and size + cost > max_bytes:
            messages.append(pb.CallbacksResponse(callbacks=batch))
            batch, size = [], 0
        batch.append(callback)
        size += cost
    if batch:
        messages.append(pb.CallbacksResponse(callbacks=batch))
    return messages


def _varint_bytes(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


_EMPTY_OPEN_ASYNC = pb.CheckpointOpenAsyncResponse()
_EMPTY_CLOSE = pb.CheckpointCloseResponse()
_EMPTY_WRITE = pb.CheckpointWriteResponse()
_EMPTY_OVERWRITE = pb.SectionOverwriteResponse()


class CheckpointService(pb_grpc.CheckpointServiceServicer):
    def __init__(
        self, checkpoints: Checkpoints, authorization: Authorization | None = None
    ) -> None:
        self.checkpoints = checkpoints
        # --auth-file: who may open and delete which names (None: anyone).
        self.authorization = authorization

    def _authorize(self, who: str, name: str, access: Access) -> None:
        if self.authorization is not None:
            self.authorization.check(who, Kind.SERVER, name, access)

    def _authorize_open(self, who: str, name: str, flags: OpenFlag) -> None:
        """READ needs read; WRITE or CREATE needs write."""
        access = Access(0)
        if flags & OpenFlag.READ:
            access |= Access.READ
        if flags & (OpenFlag.WRITE | OpenFlag.CREATE):
            access |= Access.WRITE
        self._authorize(who, name, access)

    # -- sessions ----------------------------------------------------------

    @seed_rpc
    async def Initialize(self, request: pb.InitializeRequest, who: str) -> pb.InitializeResponse:
        convert.required(request, "version")
        version = request.version
        session_id, supported = self.checkpoints.initialize(
            version.release_code, version.major_version, who
        )
        return pb.InitializeResponse(
            service_handle=session_id,
            version=t.Version(
                release_code=supported.release_code,
                major_version=supported.major_version,
                minor_version=supported.minor_version,
            ),
        )

    @seed_rpc
    async def Finalize(self, request: pb.FinalizeRequest, who: str) -> pb.FinalizeResponse:
        await self.checkpoints.finalize(request.service_handle, who)
        return pb.FinalizeResponse()

    async def Callbacks(
        self, request: pb.CallbacksRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.CallbacksResponse]:
        try:
            session = self.checkpoints.sessions.session(request.service_handle, identity(context))
        except CkptError as error:
            await context.abort_with_status(to_status(error))
            return
        events = session.events
        # This stream takes over from any other of the session: a client that
        # reconnects is not locked out by a half-dead stream.
        ready = asyncio.Event()
        previous, events.on_ready = events.on_ready, ready.set
        if previous is not None:
            previous()  # wakes the old stream, which sees it was superseded
        try:
            limit = events.max_message_bytes
            for message in _callbacks(events.sent_after(request.resume_after_sequence), limit):
                yield message
            while not events.closed:
                if events.on_ready != ready.set:
                    superseded = CkptError(
                        ErrorCode.INUSE, "another Callbacks stream of this session took over"
                    )
                    await context.abort_with_status(to_status(superseded, grpc.StatusCode.ABORTED))
                    return
                if not events.queue:
                    ready.clear()
                    await ready.wait()
                    continue
                for message in _callbacks(events.take_numbered(), limit):
                    yield message
        finally:
            if events.on_ready == ready.set:
                events.on_ready = None

    # -- open / close / delete -------------------------------------------------

    @seed_rpc
    async def CheckpointOpen(
        self, request: pb.CheckpointOpenRequest, who: str
    ) -> pb.CheckpointOpenResponse:
        flags = convert.open_flags(request.checkpoint_open_flags)
        self._authorize_open(who, request.checkpoint_name, flags)
        handle = await self.checkpoints.open(
            request.service_handle,
            request.checkpoint_name,
            convert.creation_attributes(request),
            flags,
            who,
        )
        return pb.CheckpointOpenResponse(checkpoint_handle=handle)

    @seed_rpc
    async def CheckpointOpenAsync(
        self, request: pb.CheckpointOpenAsyncRequest, who: str
    ) -> pb.CheckpointOpenAsyncResponse:
        flags = convert.open_flags(request.checkpoint_open_flags)
        self._authorize_open(who, request.checkpoint_name, flags)
        await self.checkpoints.open_async(
            request.service_handle,
            request.invocation,
            request.checkpoint_name,
            convert.creation_attributes(request),
            flags,
            who,
        )
        return _EMPTY_OPEN_ASYNC

    @seed_rpc
    async def CheckpointClose(
        self, request: pb.CheckpointCloseRequest, who: str
    ) -> pb.CheckpointCloseResponse:
        await self.checkpoints.close(request.checkpoint_handle, who)
        return _EMPTY_CLOSE

    @seed_rpc
    async def CheckpointDelete(
        self, request: pb.CheckpointDeleteRequest, who: str
    ) -> pb.CheckpointDeleteResponse:
        self._authorize(who, request.checkpoint_name, Access.WRITE)
        await self.checkpoints.delete(request.service_handle, request.checkpoint_name, who)
        return pb.CheckpointDeleteResponse()

    @seed_rpc
    async def CheckpointRetentionDurationSet(
        self, request: pb.CheckpointRetentionDurationSetRequest, who: str
    ) -> pb.CheckpointRetentionDurationSetResponse:
        duration = convert.retention(
            request.retention_duration, request.HasField("retention_duration")
        )
        await self.checkpoints.retention_duration_set(request.checkpoint_handle, duration, who)
        return pb.CheckpointRetentionDurationSetResponse()

    @seed_rpc
    async def ActiveReplicaSet(
        self, request: pb.ActiveReplicaSetRequest, who: str
    ) -> pb.ActiveReplicaSetResponse:
        await self.checkpoints.active_replica_set(request.checkpoint_handle, who)
        return pb.ActiveReplicaSetResponse()

    @seed_rpc
    async def CheckpointStatusGet(
        self, request: pb.CheckpointStatusGetRequest, who: str
    ) -> pb.CheckpointStatusGetResponse:
        descriptor = await self.checkpoints.status_get(request.checkpoint_handle, who)
        return pb.CheckpointStatusGetResponse(
            checkpoint_status=convert.descriptor_message(descriptor)
        )

    # -- sections ------------------------------------------------------------

    @seed_rpc
    async def SectionCreate(
        self, request: pb.SectionCreateRequest, who: str
    ) -> pb.SectionCreateResponse:
        convert.required(request, "section_creation_attributes")
        attributes = request.section_creation_attributes
        section_id = attributes.section_id.id if attributes.HasField("section_id") else None
        expiration = convert.expiration(
            attributes.expiration_time,
            attributes.HasField("expiration_time"),
            default_never=True,
        )
        created = await self.checkpoints.section_create(
            request.checkpoint_handle, section_id, expiration, request.initial_data, who
        )
        return pb.SectionCreateResponse(section_id=t.SectionId(id=created))

    @seed_rpc
    async def SectionDelete(
        self, request: pb.SectionDeleteRequest, who: str
    ) -> pb.SectionDeleteResponse:
        await self.checkpoints.section_delete(
            request.checkpoint_handle, convert.section_id(request), who
        )
        return pb.SectionDeleteResponse()

    @seed_rpc
    async def SectionExpirationTimeSet(
        self, request: pb.SectionExpirationTimeSetRequest, who: str
    ) -> pb.SectionExpirationTimeSetResponse:
        section_id = convert.section_id(request)
        expiration = convert.expiration(
            request.expiration_time, request.HasField("expiration_time"), default_never=False
        )
        await self.checkpoints.section_expiration_time_set(
            request.checkpoint_handle, section_id, expiration, who
        )
        return pb.SectionExpirationTimeSetResponse()

    @seed_rpc
    async def SectionIterationInitialize(
        self, request: pb.SectionIterationInitializeRequest, who: str
    ) -> pb.SectionIterationInitializeResponse:
        time = (
            convert.time_of(request.expiration_time, "expiration_time")
            if request.HasField("expiration_time")
            else None
        )
        iteration = await self.checkpoints.iteration_initialize(
            request.checkpoint_handle, convert.sections_chosen(request.sections_chosen), time, who
        )
        return pb.SectionIterationInitializeResponse(section_iteration_handle=iteration)

    @seed_rpc
    async def SectionIterationNext(
        self, request: pb.SectionIterationNextRequest, who: str
    ) -> pb.SectionIterationNextResponse:
        descriptor = await self.checkpoints.iteration_next(request.section_iteration_handle, who)
        if descriptor is None:
            return pb.SectionIterationNextResponse(no_more_sections=True)
        return pb.SectionIterationNextResponse(
            section_descriptor=convert.section_descriptor_message(descriptor)
        )

    @seed_rpc
    async def SectionIterationFinalize(
        self, request: pb.SectionIterationFinalizeRequest, who: str
    ) -> pb.SectionIterationFinalizeResponse:
        self.checkpoints.iteration_finalize(request.section_iteration_handle, who)
        return pb.SectionIterationFinalizeResponse()

    # -- data ----------------------------------------------------------------

    @seed_rpc
    async def CheckpointWrite(
        self, request: pb.CheckpointWriteRequest, who: str
    ) -> pb.CheckpointWriteResponse:
        elements = convert.write_elements(request.io_vector)
        await self.checkpoints.write(request.checkpoint_handle, elements, who)
        return _EMPTY_WRITE

    @seed_rpc
    async def SectionOverwrite(
        self, request: pb.SectionOverwriteRequest, who: str
    ) -> pb.SectionOverwriteResponse:
        await self.checkpoints.overwrite(
            request.checkpoint_handle, convert.section_id(request), request.data_buffer, who
        )
        return _EMPTY_OVERWRITE

    @seed_rpc
    async def CheckpointRead(
        self, request: pb.CheckpointReadRequest, who: str
    ) -> pb.CheckpointReadResponse:
        vector = request.io_vector
        data = await self.checkpoints.read(
            request.checkpoint_handle, convert.read_elements(vector), who
        )
        response = pb.CheckpointReadResponse()
        response.io_vector.extend(vector)
        for element, chunk in zip(response.io_vector, data, strict=True):
            element.data_buffer = chunk
            element.read_size = len(chunk)
        return response

    @seed_rpc
    async def CheckpointSynchronize(
        self, request: pb.CheckpointSynchronizeRequest, who: str
    ) -> pb.CheckpointSynchronizeResponse:
        await self.checkpoints.synchronize(request.checkpoint_handle, who)
        return pb.CheckpointSynchronizeResponse()

    @seed_rpc
    async def CheckpointSynchronizeAsync(
        self, request: pb.CheckpointSynchronizeAsyncRequest, who: str
    ) -> pb.CheckpointSynchronizeAsyncResponse:
        await self.checkpoints.synchronize_async(request.checkpoint_handle, request.invocation, who)
        return pb.CheckpointSynchronizeAsyncResponse()

    @seed_rpc
    async def ImmediateConsumptionRegister(
        self, request: pb.ImmediateConsumptionRegisterRequest, who: str
    ) -> pb.ImmediateConsumptionRegisterResponse:
        await self.checkpoints.immediate_consumption_register(request.checkpoint_handle, who)
        return pb.ImmediateConsumptionRegisterResponse()
