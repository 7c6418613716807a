"""The CPS scenarios: open, overwrite, read and write32 on one node; overwrite
in each write mode on a cluster.

CpsSuite's scenarios share one checkpoint, created by CpsSuite.prepare with
1 KiB sections for every worker; ClusterSuite creates one per write mode,
through node 0 (so node 0 is their active replica). Each run opens one
session (Initialize + CheckpointOpen with READ|WRITE) per channel, on the
node the scenario calls; the workers of a channel share its checkpoint handle.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import Message
from grpc import aio

from bench.load import Call, channel_of, raw_unary
from bench.scenarios import PAYLOAD, PAYLOAD_SIZE, Scenario, Suite, chosen
from cps.v1 import checkpoint_service_pb2 as pb
from cps.v1 import types_pb2 as types

SERVICE = "/cps.v1.CheckpointService/"
VERSION = types.Version(release_code="B", major_version=1, minor_version=1)
WRITE32_ELEMENTS = 32
SECTION_ID_MAX = 32
# Concurrent calls while creating fixtures and closing handles.
SETUP_CONCURRENCY = 32
# The update modes (docs/replication.md): a write is answered once every
# in-sync replica applied it (synchronous), or once the active did, the
# backups following in order (asynchronous; weak: a write of several
# elements travels element by element).
SYNCHRONOUS = types.CREATION_FLAG_WR_ALL_REPLICAS
ASYNCHRONOUS = types.CREATION_FLAG_WR_ACTIVE_REPLICA
WEAK = types.CREATION_FLAG_WR_ACTIVE_REPLICA_WEAK

M = TypeVar("M", bound=Message)


async def cps_call(
    channel: aio.Channel, method: str, request: Message, response_type: type[M]
) -> M:
    """One typed CPS call, for setup and teardown (the hot path sends raw bytes)."""
    raw = await raw_unary(channel, SERVICE + method)(request.SerializeToString())
    return response_type.FromString(raw)


async def bounded(jobs: Sequence[Callable[[], Awaitable[object]]]) -> None:
    semaphore = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def one(job: Callable[[], Awaitable[object]]) -> None:
        async with semaphore:
            await job()

    await asyncio.gather(*(one(job) for job in jobs))


def _sid(kind: str, worker: int, index: int | None = None) -> types.SectionId:
    suffix = "" if index is None else f"-{index}"
    return types.SectionId(id=f"{kind}-{worker}{suffix}".encode())


def overwrite_sid(worker: int) -> types.SectionId:
    return _sid("ow", worker)


def read_sid(worker: int) -> types.SectionId:
    return _sid("rd", worker)


def write_sid(worker: int, element: int) -> types.SectionId:
    return _sid("wr", worker, element)


def bench_attributes(
    max_sections: int, update_mode: types.CreationFlag.ValueType = ASYNCHRONOUS
) -> types.CheckpointCreationAttributes:
    """A checkpoint of ``max_sections`` 1 KiB sections, kept forever; asynchronous
    unless another update mode is given."""
    return types.CheckpointCreationAttributes(
        creation_flags=[update_mode],
        checkpoint_size=max_sections * PAYLOAD_SIZE,
        max_section_id_size=SECTION_ID_MAX,
        max_sections=max_sections,
        max_section_size=PAYLOAD_SIZE,
        retention_duration=types.RetentionDuration(forever=True),
    )


def all_section_ids(max_inflight: int) -> list[types.SectionId]:
    ids: list[types.SectionId] = []
    for worker in range(max_inflight):
        ids += [overwrite_sid(worker), read_sid(worker)]
        ids += [write_sid(worker, j) for j in range(WRITE32_ELEMENTS)]
    return ids


@dataclass
class _Session:
    service_handle: int
    checkpoint_handle: int


async def initialize(channel: aio.Channel) -> int:
    response = await cps_call(
        channel, "Initialize", pb.InitializeRequest(version=VERSION), pb.InitializeResponse
    )
    return response.service_handle


async def open_read_write(channel: aio.Channel, service_handle: int, name: str) -> int:
    request = pb.CheckpointOpenRequest(
        service_handle=service_handle,
        checkpoint_name=name,
        checkpoint_open_flags=[types.OPEN_FLAG_READ, types.OPEN_FLAG_WRITE],
    )
    response = await cps_call(channel, "CheckpointOpen", request, pb.CheckpointOpenResponse)
    return response.checkpoint_handle


async def close_handles(channel: aio.Channel, handles: Sequence[int]) -> None:
    close = raw_unary(channel, SERVICE + "CheckpointClose")
    await bounded(
        [
            functools.partial(
                close, pb.CheckpointCloseRequest(checkpoint_handle=h).SerializeToString()
            )
            for h in handles
        ]
    )


class CpsScenario(Scenario):
    """A scenario run over one session per channel."""

    def __init__(self, checkpoint_name: str) -> None:
        self.checkpoint_name = checkpoint_name
        self._channels: list[aio.Channel] = []
        self._sessions: list[_Session] = []

    async def start(self, channels: Sequence[aio.Channel], inflight: int) -> list[Call]:
        self._channels = list(channels)
        self._sessions = []
        for channel in channels:
            service_handle = await initialize(channel)
            checkpoint_handle = await open_read_write(channel, service_handle, self.checkpoint_name)
            self._sessions.append(_Session(service_handle, checkpoint_handle))
        return [self.worker_call(i) for i in range(inflight)]

    def channel_and_session(self, worker: int) -> tuple[aio.Channel, _Session]:
        index = channel_of(worker, len(self._channels))
        return self._channels[index], self._sessions[index]

    def fixed_call(self, worker: int, method: str, request: Message) -> Call:
        channel, _ = self.channel_and_session(worker)
        return functools.partial(raw_unary(channel, SERVICE + method), request.SerializeToString())

    def worker_call(self, worker: int) -> Call:
        raise NotImplementedError

    async def stop(self) -> None:
        for channel, session in zip(self._channels, self._sessions, strict=True):
            await close_handles(channel, [session.checkpoint_handle])
            await cps_call(
                channel,
                "Finalize",
                pb.FinalizeRequest(service_handle=session.service_handle),
                pb.FinalizeResponse,
            )
        self._channels, self._sessions = [], []


class CpsOpen(CpsScenario):
    name = "open"
    description = (
        "CheckpointOpen (READ|WRITE) of the existing checkpoint, then CheckpointClose of the "
        "new handle: one op is the pair, timed together (items = RPCs)"
    )
    # Open alone, with the handles closed after the window, would pile up one
    # handle per op in the session (tens of thousands per run, past the
    # server's per-session limit); the pair keeps the server's state flat.
    items_per_op = 2
    item_unit = "RPCs"

    def worker_call(self, worker: int) -> Call:
        channel, session = self.channel_and_session(worker)
        open_ = raw_unary(channel, SERVICE + "CheckpointOpen")
        close = raw_unary(channel, SERVICE + "CheckpointClose")
        request = pb.CheckpointOpenRequest(
            service_handle=session.service_handle,
            checkpoint_name=self.checkpoint_name,
            checkpoint_open_flags=[types.OPEN_FLAG_READ, types.OPEN_FLAG_WRITE],
        ).SerializeToString()

        async def call() -> None:
            handle = pb.CheckpointOpenResponse.FromString(await open_(request)).checkpoint_handle
            await close(pb.CheckpointCloseRequest(checkpoint_handle=handle).SerializeToString())

        return call


class CpsOverwrite(CpsScenario):
    name = "overwrite"
    description = "SectionOverwrite of a per-worker section with 1 KiB"

    def worker_call(self, worker: int) -> Call:
        _, session = self.channel_and_session(worker)
        request = pb.SectionOverwriteRequest(
            checkpoint_handle=session.checkpoint_handle,
            section_id=overwrite_sid(worker),
            data_buffer=PAYLOAD,
        )
        return self.fixed_call(worker, "SectionOverwrite", request)


class CpsRead(CpsScenario):
    name = "read"
    description = "CheckpointRead of a per-worker 1 KiB section (one iovector element)"

    def worker_call(self, worker: int) -> Call:
        _, session = self.channel_and_session(worker)
        element = types.IOVectorElement(
            section_id=read_sid(worker), data_offset=0, data_size=PAYLOAD_SIZE
        )
        request = pb.CheckpointReadRequest(
            checkpoint_handle=session.checkpoint_handle, io_vector=[element]
        )
        return self.fixed_call(worker, "CheckpointRead", request)


class CpsWrite32(CpsScenario):
    name = "write32"
    description = (
        f"CheckpointWrite of {WRITE32_ELEMENTS} elements x 1 KiB, "
        f"each at offset 0 of its own per-worker section"
    )
    items_per_op = WRITE32_ELEMENTS
    item_unit = "section-writes"

    def worker_call(self, worker: int) -> Call:
        _, session = self.channel_and_session(worker)
        elements = [
            types.IOVectorElement(section_id=write_sid(worker, j), data_buffer=PAYLOAD)
            for j in range(WRITE32_ELEMENTS)
        ]
        request = pb.CheckpointWriteRequest(
            checkpoint_handle=session.checkpoint_handle, io_vector=elements
        )
        return self.fixed_call(worker, "CheckpointWrite", request)


async def create_checkpoint(
    channel: aio.Channel,
    service_handle: int,
    name: str,
    attributes: types.CheckpointCreationAttributes,
    sections: Sequence[types.SectionId],
) -> int:
    """Create a checkpoint and its 1 KiB sections; return the handle that created it."""
    request = pb.CheckpointOpenRequest(
        service_handle=service_handle,
        checkpoint_name=name,
        checkpoint_creation_attributes=attributes,
        checkpoint_open_flags=[
            types.OPEN_FLAG_READ,
            types.OPEN_FLAG_WRITE,
            types.OPEN_FLAG_CREATE,
        ],
    )
    opened = await cps_call(channel, "CheckpointOpen", request, pb.CheckpointOpenResponse)
    handle = opened.checkpoint_handle
    create = raw_unary(channel, SERVICE + "SectionCreate")
    await bounded(
        [
            functools.partial(
                create,
                pb.SectionCreateRequest(
                    checkpoint_handle=handle,
                    section_creation_attributes=types.SectionCreationAttributes(
                        section_id=section_id
                    ),
                    initial_data=PAYLOAD,
                ).SerializeToString(),
            )
            for section_id in sections
        ]
    )
    return handle


async def check_read(channel: aio.Channel, handle: int, section_id: types.SectionId) -> None:
    """Read a section back: it must hold the payload."""
    element = types.IOVectorElement(section_id=section_id, data_size=PAYLOAD_SIZE)
    request = pb.CheckpointReadRequest(checkpoint_handle=handle, io_vector=[element])
    response = await cps_call(channel, "CheckpointRead", request, pb.CheckpointReadResponse)
    if len(response.io_vector) != 1 or response.io_vector[0].data_buffer != PAYLOAD:
        raise RuntimeError(f"CheckpointRead returned {response!r:.200}, not the data written")


async def delete_checkpoints(
    channel: aio.Channel, service_handle: int, handles: dict[str, int]
) -> None:
    """Close the handles, delete their checkpoints (name -> handle), finalize."""
    await close_handles(channel, list(handles.values()))
    for name in handles:
        await cps_call(
            channel,
            "CheckpointDelete",
            pb.CheckpointDeleteRequest(service_handle=service_handle, checkpoint_name=name),
            pb.CheckpointDeleteResponse,
        )
    await cps_call(
        channel,
        "Finalize",
        pb.FinalizeRequest(service_handle=service_handle),
        pb.FinalizeResponse,
    )


class CpsSuite(Suite):
    def __init__(self, only: Collection[str] | None = None) -> None:
        """All the CPS scenarios, or those named in `only`."""
        self.checkpoint_name = f"cps-bench-{os.getpid()}"
        all_scenarios: list[Scenario] = [
            CpsOpen(self.checkpoint_name),
            CpsOverwrite(self.checkpoint_name),
            CpsRead(self.checkpoint_name),
            CpsWrite32(self.checkpoint_name),
        ]
        self.scenarios = chosen(all_scenarios, only)
        self._session: _Session | None = None

    async def prepare(self, channel: aio.Channel, max_inflight: int) -> None:
        """Create the checkpoint and every worker's 1 KiB sections, then check a read."""
        service_handle = await initialize(channel)
        sections = all_section_ids(max_inflight)
        attributes = bench_attributes(len(sections) + 1)
        handle = await create_checkpoint(
            channel, service_handle, self.checkpoint_name, attributes, sections
        )
        self._session = _Session(service_handle, handle)
        await check_read(channel, handle, read_sid(0))

    async def finish(self, channel: aio.Channel) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        await delete_checkpoints(
            channel, session.service_handle, {self.checkpoint_name: session.checkpoint_handle}
        )


# --- a cluster -------------------------------------------------------------

# The write modes of the cluster runs: (scenario suffix, creation flag, seed name).
CLUSTER_MODES: tuple[tuple[str, types.CreationFlag.ValueType, str], ...] = (
    ("sync", SYNCHRONOUS, "WR_ALL_REPLICAS"),
    ("async", ASYNCHRONOUS, "WR_ACTIVE_REPLICA"),
    ("weak", WEAK, "WR_ACTIVE_REPLICA_WEAK"),
)
# The node the forwarded run calls: not the active (node 0), a replica of
# every checkpoint with 3 replicas on 3 nodes.
FORWARDING_NODE = 1


class ClusterOverwrite(CpsOverwrite):
    """SectionOverwrite of 1 KiB on the checkpoint of one write mode, through a given node."""

    def __init__(self, checkpoint_name: str, mode: str, seed_name: str, node: int = 0) -> None:
        super().__init__(checkpoint_name)
        self.mode = mode
        self.node = node
        forwarded = node != 0
        self.name = f"overwrite-{mode}" + ("-fwd" if forwarded else "")
        self.description = (
            f"SectionOverwrite of a per-worker section with 1 KiB on a {seed_name} checkpoint, "
            + (
                f"through node {node} (not the active: each call is forwarded to node 0)"
                if forwarded
                else "through its active replica (node 0, which created it)"
            )
        )
        # The forwarded run is a spot check, at the busier levels only.
        self.min_inflight = 16 if forwarded else 1


class ClusterSuite(Suite):
    """overwrite-sync, overwrite-async and overwrite-weak through the active (node 0),
    overwrite-sync-fwd through node 1.

    Each checkpoint holds one overwrite section per worker only.
    """

    def __init__(self) -> None:
        base = f"cps-bench-{os.getpid()}"
        self.names = {mode: f"{base}-{mode}" for mode, _, _ in CLUSTER_MODES}
        self.scenarios = [
            ClusterOverwrite(self.names[mode], mode, seed_name)
            for mode, _, seed_name in CLUSTER_MODES
        ]
        sync_name = CLUSTER_MODES[0][2]
        self.scenarios.append(
            ClusterOverwrite(self.names["sync"], "sync", sync_name, node=FORWARDING_NODE)
        )
        self._service_handle: int | None = None
        self._handles: dict[str, int] = {}

    async def prepare(self, channel: aio.Channel, max_inflight: int) -> None:
        """Create the checkpoints with every worker's 1 KiB section, then check reads."""
        self._service_handle = await initialize(channel)
        sections = [overwrite_sid(worker) for worker in range(max_inflight)]
        for mode, flag, _ in CLUSTER_MODES:
            name = self.names[mode]
            attributes = bench_attributes(len(sections) + 1, flag)
            self._handles[name] = await create_checkpoint(
                channel, self._service_handle, name, attributes, sections
            )
            await check_read(channel, self._handles[name], overwrite_sid(0))

    async def finish(self, channel: aio.Channel) -> None:
        service_handle, self._service_handle = self._service_handle, None
        handles, self._handles = self._handles, {}
        if service_handle is not None:
            await delete_checkpoints(channel, service_handle, handles)
