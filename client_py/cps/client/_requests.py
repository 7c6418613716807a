"""The request of each seed call, shared by the threaded and asyncio clients:
``Call(method, request)`` names the RPC of CheckpointService and carries its
request message."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cps.v1 import checkpoint_service_pb2 as pb
from cps.v1 import types_pb2 as t

from . import _convert
from .values import (
    CreationAttributes,
    ExpirationTime,
    OpenFlags,
    ReadElement,
    ReadResult,
    RetentionDuration,
    SectionsChosen,
    Version,
    WriteElement,
)


@dataclass(frozen=True, slots=True)
class Call:
    method: str  # the RPC's name in CheckpointService
    request: Any  # its request message


def initialize(version: Version) -> Call:
    return Call("Initialize", pb.InitializeRequest(version=_convert.version_message(version)))


def finalize(session: int) -> Call:
    return Call("Finalize", pb.FinalizeRequest(service_handle=session))


def default_open_flags(attributes: CreationAttributes | None, flags: OpenFlags | None) -> OpenFlags:
    """``flags``, or READ | WRITE plus CREATE when there are attributes."""
    if flags is not None:
        return flags
    default = OpenFlags.READ | OpenFlags.WRITE
    return default if attributes is None else default | OpenFlags.CREATE


def checkpoint_open(
    session: int, name: str, attributes: CreationAttributes | None, flags: OpenFlags
) -> Call:
    request = pb.CheckpointOpenRequest(
        service_handle=session,
        checkpoint_name=name,
        checkpoint_open_flags=_convert.open_flags(flags),
    )
    if attributes is not None:
        request.checkpoint_creation_attributes.CopyFrom(_convert.attributes_message(attributes))
    return Call("CheckpointOpen", request)


def checkpoint_open_async(
    session: int,
    invocation: int,
    name: str,
    attributes: CreationAttributes | None,
    flags: OpenFlags,
) -> Call:
    request = pb.CheckpointOpenAsyncRequest(
        service_handle=session,
        invocation=invocation,
        checkpoint_name=name,
        checkpoint_open_flags=_convert.open_flags(flags),
    )
    if attributes is not None:
        request.checkpoint_creation_attributes.CopyFrom(_convert.attributes_message(attributes))
    return Call("CheckpointOpenAsync", request)


def checkpoint_delete(session: int, name: str) -> Call:
    return Call(
        "CheckpointDelete", pb.CheckpointDeleteRequest(service_handle=session, checkpoint_name=name)
    )


def checkpoint_close(handle: int) -> Call:
    return Call("CheckpointClose", pb.CheckpointCloseRequest(checkpoint_handle=handle))


def retention_duration_set(handle: int, duration: RetentionDuration) -> Call:
    return Call(
        "CheckpointRetentionDurationSet",
        pb.CheckpointRetentionDurationSetRequest(
            checkpoint_handle=handle, retention_duration=_convert.retention_message(duration)
        ),
    )


def active_replica_set(handle: int) -> Call:
    return Call("ActiveReplicaSet", pb.ActiveReplicaSetRequest(checkpoint_handle=handle))


def status(handle: int) -> Call:
    return Call("CheckpointStatusGet", pb.CheckpointStatusGetRequest(checkpoint_handle=handle))


def section_create(
    handle: int, section_id: bytes | None, initial_data: bytes, expiration_time: ExpirationTime
) -> Call:
    attributes = t.SectionCreationAttributes(
        expiration_time=_convert.expiration_message(expiration_time)
    )
    if section_id is not None:
        attributes.section_id.id = section_id
    return Call(
        "SectionCreate",
        pb.SectionCreateRequest(
            checkpoint_handle=handle,
            section_creation_attributes=attributes,
            initial_data=initial_data,
        ),
    )


def section_delete(handle: int, section_id: bytes) -> Call:
    return Call(
        "SectionDelete",
        pb.SectionDeleteRequest(checkpoint_handle=handle, section_id=t.SectionId(id=section_id)),
    )


def section_expiration_time_set(
    handle: int, section_id: bytes, expiration_time: ExpirationTime
) -> Call:
    return Call(
        "SectionExpirationTimeSet",
        pb.SectionExpirationTimeSetRequest(
            checkpoint_handle=handle,
            section_id=t.SectionId(id=section_id),
            expiration_time=_convert.expiration_message(expiration_time),
        ),
    )


def iteration_initialize(
    handle: int, chosen: SectionsChosen, expiration_time: datetime | float | None
) -> Call:
    request = pb.SectionIterationInitializeRequest(
        checkpoint_handle=handle, sections_chosen=_convert.sections_chosen(chosen)
    )
    if expiration_time is not None:
        request.expiration_time.CopyFrom(_convert.timestamp(expiration_time))
    return Call("SectionIterationInitialize", request)


def iteration_next(iteration: int) -> Call:
    return Call(
        "SectionIterationNext",
        pb.SectionIterationNextRequest(section_iteration_handle=iteration),
    )


def iteration_finalize(iteration: int) -> Call:
    return Call(
        "SectionIterationFinalize",
        pb.SectionIterationFinalizeRequest(section_iteration_handle=iteration),
    )


def write(handle: int, elements: Iterable[WriteElement]) -> Call:
    return Call(
        "CheckpointWrite",
        pb.CheckpointWriteRequest(
            checkpoint_handle=handle, io_vector=_convert.write_vector(elements)
        ),
    )


def overwrite(handle: int, section_id: bytes, data: bytes) -> Call:
    return Call(
        "SectionOverwrite",
        pb.SectionOverwriteRequest(
            checkpoint_handle=handle, section_id=t.SectionId(id=section_id), data_buffer=data
        ),
    )


def read(handle: int, elements: Iterable[ReadElement]) -> Call:
    return Call(
        "CheckpointRead",
        pb.CheckpointReadRequest(
            checkpoint_handle=handle, io_vector=_convert.read_vector(elements)
        ),
    )


def read_results(
    wanted: Sequence[ReadElement], response: pb.CheckpointReadResponse
) -> list[ReadResult]:
    return [
        ReadResult(
            section_id=element.section_id,
            offset=element.offset,
            data=got.data_buffer,
            read_size=got.read_size,
        )
        for element, got in zip(wanted, response.io_vector, strict=True)
    ]


def synchronize(handle: int) -> Call:
    return Call("CheckpointSynchronize", pb.CheckpointSynchronizeRequest(checkpoint_handle=handle))


def synchronize_async(handle: int, invocation: int) -> Call:
    return Call(
        "CheckpointSynchronizeAsync",
        pb.CheckpointSynchronizeAsyncRequest(checkpoint_handle=handle, invocation=invocation),
    )


def immediate_consumption_register(handle: int) -> Call:
    return Call(
        "ImmediateConsumptionRegister",
        pb.ImmediateConsumptionRegisterRequest(checkpoint_handle=handle),
    )
