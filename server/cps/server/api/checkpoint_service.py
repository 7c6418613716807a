"""CheckpointService servicer: protobuf in, core call, protobuf out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from cps.server.core.errors import CkptError, ErrorCode
from cps.server.core.events import Event
from cps.server.core.manager import ReplicaManager
from cps.v1 import checkpoint_service_pb2 as pb
from cps.v1 import checkpoint_service_pb2_grpc as pb_grpc
from cps.v1 import types_pb2 as t

from . import convert
from .calls import Durability, InMemory, seed_call, seed_mutation, seed_replicated
from .status import to_status


def _callbacks(numbered: list[tuple[int, Event]]) -> pb.CallbacksResponse:
    return pb.CallbacksResponse(
        callbacks=[convert.callback_message(number, event) for number, event in numbered]
    )


_EMPTY_OPEN_ASYNC = pb.CheckpointOpenAsyncResponse()
_EMPTY_CLOSE = pb.CheckpointCloseResponse()
_EMPTY_WRITE = pb.CheckpointWriteResponse()
_EMPTY_OVERWRITE = pb.SectionOverwriteResponse()


class CheckpointService(pb_grpc.CheckpointServiceServicer):
    def __init__(self, manager: ReplicaManager, durability: Durability | None = None) -> None:
        self.manager = manager
        self.durability = durability or InMemory()
        self._tasks: set[asyncio.Task[None]] = set()  # SynchronizeAsync completions

    # -- sessions ----------------------------------------------------------

    @seed_call
    def Initialize(self, request: pb.InitializeRequest) -> pb.InitializeResponse:
        version = request.version
        session_id, supported = self.manager.initialize(
            version.release_code, version.major_version, version.minor_version
        )
        return pb.InitializeResponse(
            service_handle=session_id,
            version=t.Version(
                release_code=supported.release_code,
                major_version=supported.major_version,
                minor_version=supported.minor_version,
            ),
        )

    @seed_call
    def Finalize(self, request: pb.FinalizeRequest) -> pb.FinalizeResponse:
        self.manager.finalize(request.service_handle)
        return pb.FinalizeResponse()

    async def Callbacks(
        self, request: pb.CallbacksRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.CallbacksResponse]:
        try:
            self.durability.check_serving()
            events = self.manager.session(request.service_handle).events
        except CkptError as error:
            await context.abort_with_status(to_status(error))
            return
        # This stream takes over from any other of the session: a client that
        # reconnects is not locked out by a half-dead stream.
        ready = asyncio.Event()
        previous, events.on_ready = events.on_ready, ready.set
        if previous is not None:
            previous()  # wakes the old stream, which sees it was superseded
        try:
            replay = events.sent_after(request.resume_after_sequence)
            if replay:
                yield _callbacks(replay)
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
                yield _callbacks(events.take_numbered())
        finally:
            if events.on_ready == ready.set:
                events.on_ready = None

    # -- open / close / delete -------------------------------------------------

    @seed_mutation
    def CheckpointOpen(self, request: pb.CheckpointOpenRequest) -> pb.CheckpointOpenResponse:
        handle = self.manager.open(
            request.service_handle,
            request.checkpoint_name,
            convert.creation_attributes(request),
            convert.open_flags(request.checkpoint_open_flags),
        )
        return pb.CheckpointOpenResponse(checkpoint_handle=handle)

    @seed_mutation
    def CheckpointOpenAsync(
        self, request: pb.CheckpointOpenAsyncRequest
    ) -> pb.CheckpointOpenAsyncResponse:
        self.manager.open_async(
            request.service_handle,
            request.invocation,
            request.checkpoint_name,
            convert.creation_attributes(request),
            convert.open_flags(request.checkpoint_open_flags),
        )
        return _EMPTY_OPEN_ASYNC

    @seed_call
    def CheckpointClose(self, request: pb.CheckpointCloseRequest) -> pb.CheckpointCloseResponse:
        self.manager.close(request.checkpoint_handle)
        return _EMPTY_CLOSE

    @seed_mutation
    def CheckpointDelete(self, request: pb.CheckpointDeleteRequest) -> pb.CheckpointDeleteResponse:
        self.manager.delete(request.service_handle, request.checkpoint_name)
        return pb.CheckpointDeleteResponse()

    @seed_mutation
    def CheckpointRetentionDurationSet(
        self, request: pb.CheckpointRetentionDurationSetRequest
    ) -> pb.CheckpointRetentionDurationSetResponse:
        duration = convert.retention(
            request.retention_duration, request.HasField("retention_duration")
        )
        self.manager.retention_duration_set(request.checkpoint_handle, duration)
        return pb.CheckpointRetentionDurationSetResponse()

    @seed_mutation
    def ActiveReplicaSet(self, request: pb.ActiveReplicaSetRequest) -> pb.ActiveReplicaSetResponse:
        self.manager.active_replica_set(request.checkpoint_handle)
        return pb.ActiveReplicaSetResponse()

    @seed_call
    def CheckpointStatusGet(
        self, request: pb.CheckpointStatusGetRequest
    ) -> pb.CheckpointStatusGetResponse:
        descriptor = self.manager.status_get(request.checkpoint_handle)
        return pb.CheckpointStatusGetResponse(
            checkpoint_status=convert.descriptor_message(descriptor)
        )

    # -- sections ------------------------------------------------------------

    @seed_mutation
    def SectionCreate(self, request: pb.SectionCreateRequest) -> pb.SectionCreateResponse:
        attributes = request.section_creation_attributes
        section_id = attributes.section_id.id if attributes.HasField("section_id") else None
        expiration = convert.expiration(
            attributes.expiration_time,
            attributes.HasField("expiration_time"),
            default_never=True,
        )
        created = self.manager.section_create(
            request.checkpoint_handle, section_id, expiration, request.initial_data
        )
        return pb.SectionCreateResponse(section_id=t.SectionId(id=created))

    @seed_mutation
    def SectionDelete(self, request: pb.SectionDeleteRequest) -> pb.SectionDeleteResponse:
        self.manager.section_delete(request.checkpoint_handle, request.section_id.id)
        return pb.SectionDeleteResponse()

    @seed_mutation
    def SectionExpirationTimeSet(
        self, request: pb.SectionExpirationTimeSetRequest
    ) -> pb.SectionExpirationTimeSetResponse:
        expiration = convert.expiration(
            request.expiration_time, request.HasField("expiration_time"), default_never=False
        )
        self.manager.section_expiration_time_set(
            request.checkpoint_handle, request.section_id.id, expiration
        )
        return pb.SectionExpirationTimeSetResponse()

    @seed_call
    def SectionIterationInitialize(
        self, request: pb.SectionIterationInitializeRequest
    ) -> pb.SectionIterationInitializeResponse:
        time = (
            convert.time_of(request.expiration_time)
            if request.HasField("expiration_time")
            else None
        )
        iteration = self.manager.iteration_initialize(
            request.checkpoint_handle, convert.sections_chosen(request.sections_chosen), time
        )
        return pb.SectionIterationInitializeResponse(section_iteration_handle=iteration)

    @seed_call
    def SectionIterationNext(
        self, request: pb.SectionIterationNextRequest
    ) -> pb.SectionIterationNextResponse:
        descriptor = self.manager.iteration_next(request.section_iteration_handle)
        if descriptor is None:
            return pb.SectionIterationNextResponse(no_more_sections=True)
        return pb.SectionIterationNextResponse(
            section_descriptor=convert.section_descriptor_message(descriptor)
        )

    @seed_call
    def SectionIterationFinalize(
        self, request: pb.SectionIterationFinalizeRequest
    ) -> pb.SectionIterationFinalizeResponse:
        self.manager.iteration_finalize(request.section_iteration_handle)
        return pb.SectionIterationFinalizeResponse()

    # -- data ----------------------------------------------------------------

    @seed_mutation
    def CheckpointWrite(self, request: pb.CheckpointWriteRequest) -> pb.CheckpointWriteResponse:
        self.manager.write(request.checkpoint_handle, convert.write_elements(request.io_vector))
        return _EMPTY_WRITE

    @seed_mutation
    def SectionOverwrite(self, request: pb.SectionOverwriteRequest) -> pb.SectionOverwriteResponse:
        self.manager.overwrite(
            request.checkpoint_handle, request.section_id.id, request.data_buffer
        )
        return _EMPTY_OVERWRITE

    @seed_call
    def CheckpointRead(self, request: pb.CheckpointReadRequest) -> pb.CheckpointReadResponse:
        vector = request.io_vector
        data = self.manager.read(request.checkpoint_handle, convert.read_elements(vector))
        response = pb.CheckpointReadResponse()
        response.io_vector.extend(vector)
        for element, chunk in zip(response.io_vector, data, strict=True):
            element.data_buffer = chunk
            element.read_size = len(chunk)
        return response

    @seed_replicated
    def CheckpointSynchronize(
        self, request: pb.CheckpointSynchronizeRequest
    ) -> pb.CheckpointSynchronizeResponse:
        self.manager.synchronize(request.checkpoint_handle)
        return pb.CheckpointSynchronizeResponse()

    @seed_call
    def CheckpointSynchronizeAsync(
        self, request: pb.CheckpointSynchronizeAsyncRequest
    ) -> pb.CheckpointSynchronizeAsyncResponse:
        self.manager.synchronize(request.checkpoint_handle)
        task = asyncio.get_running_loop().create_task(
            self._report_synchronized(request.checkpoint_handle, request.invocation)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return pb.CheckpointSynchronizeAsyncResponse()

    async def _report_synchronized(self, handle: int, invocation: int) -> None:
        await self.durability.replicated()
        self.manager.synchronized(handle, invocation)

    @seed_call
    def ImmediateConsumptionRegister(
        self, request: pb.ImmediateConsumptionRegisterRequest
    ) -> pb.ImmediateConsumptionRegisterResponse:
        self.manager.immediate_consumption_register(request.checkpoint_handle)
        return pb.ImmediateConsumptionRegisterResponse()
