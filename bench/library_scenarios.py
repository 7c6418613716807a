"""The library-checkpoint scenarios (issue 4): lib-write and lib-read.

Library checkpoints are always stored: a LibraryCkptDataSetWrite returns once
the SQLite transaction holding it has committed (group commit). One library
checkpoint holds a dataset per worker for each scenario, created by
LibrarySuite.prepare. Each run initializes one library handle per channel.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Collection, Sequence

from google.protobuf.message import Message
from grpc import aio

from bench.cps_scenarios import M, bounded
from bench.load import Call, channel_of, raw_unary
from bench.scenarios import PAYLOAD, Scenario, Suite, chosen
from cps.v1 import library_service_pb2 as lib

LIBRARY_SERVICE = "/cps.v1.LibraryCheckpointService/"
# Dataset ids: worker i writes dataset i and reads dataset READ_DATASET_BASE + i.
READ_DATASET_BASE = 100_000


async def lib_call(
    channel: aio.Channel, method: str, request: Message, response_type: type[M]
) -> M:
    """One typed library call, for setup and teardown."""
    raw = await raw_unary(channel, LIBRARY_SERVICE + method)(request.SerializeToString())
    return response_type.FromString(raw)


async def library_initialize(channel: aio.Channel) -> int:
    response = await lib_call(
        channel, "LibraryInitialize", lib.LibraryInitializeRequest(), lib.LibraryInitializeResponse
    )
    return response.library_handle


async def library_finalize(channel: aio.Channel, handle: int) -> None:
    await lib_call(
        channel,
        "LibraryFinalize",
        lib.LibraryFinalizeRequest(library_handle=handle),
        lib.LibraryFinalizeResponse,
    )


def write_dataset(worker: int) -> int:
    return worker


def read_dataset(worker: int) -> int:
    return READ_DATASET_BASE + worker


class LibraryScenario(Scenario):
    """A scenario run over one library handle per channel."""

    def __init__(self, checkpoint_name: str) -> None:
        self.checkpoint_name = checkpoint_name
        self._channels: list[aio.Channel] = []
        self._handles: list[int] = []

    async def start(self, channels: Sequence[aio.Channel], inflight: int) -> list[Call]:
        self._channels = list(channels)
        self._handles = [await library_initialize(channel) for channel in channels]
        return [self.worker_call(i) for i in range(inflight)]

    def fixed_call(self, worker: int, method: str, request: Message) -> Call:
        channel = self._channels[channel_of(worker, len(self._channels))]
        stub = raw_unary(channel, LIBRARY_SERVICE + method)
        return functools.partial(stub, request.SerializeToString())

    def handle(self, worker: int) -> int:
        return self._handles[channel_of(worker, len(self._channels))]

    def worker_call(self, worker: int) -> Call:
        raise NotImplementedError

    async def stop(self) -> None:
        for channel, handle in zip(self._channels, self._handles, strict=True):
            await library_finalize(channel, handle)
        self._channels, self._handles = [], []


class LibraryWrite(LibraryScenario):
    name = "lib-write"
    description = (
        "LibraryCkptDataSetWrite of 1 KiB to a per-worker dataset (durable: answered once "
        "the store has committed it)"
    )

    def worker_call(self, worker: int) -> Call:
        request = lib.LibraryCkptDataSetWriteRequest(
            library_handle=self.handle(worker),
            checkpoint_name=self.checkpoint_name,
            dataset_id=write_dataset(worker),
            data=PAYLOAD,
        )
        return self.fixed_call(worker, "LibraryCkptDataSetWrite", request)


class LibraryRead(LibraryScenario):
    name = "lib-read"
    description = "LibraryCkptDataSetRead of a per-worker dataset holding 1 KiB, no elements"

    def worker_call(self, worker: int) -> Call:
        request = lib.LibraryCkptDataSetReadRequest(
            library_handle=self.handle(worker),
            checkpoint_name=self.checkpoint_name,
            dataset_id=read_dataset(worker),
        )
        return self.fixed_call(worker, "LibraryCkptDataSetRead", request)


class LibrarySuite(Suite):
    def __init__(self, only: Collection[str] | None = None) -> None:
        """Both library scenarios, or those named in `only`."""
        self.checkpoint_name = f"cps-bench-lib-{os.getpid()}"
        all_scenarios: list[Scenario] = [
            LibraryWrite(self.checkpoint_name),
            LibraryRead(self.checkpoint_name),
        ]
        self.scenarios = chosen(all_scenarios, only)
        self._handle: int | None = None

    async def prepare(self, channel: aio.Channel, max_inflight: int) -> None:
        """Create the checkpoint and every worker's datasets, fill the read ones, check one."""
        handle = self._handle = await library_initialize(channel)
        name = self.checkpoint_name
        await lib_call(
            channel,
            "LibraryCkptCreate",
            lib.LibraryCkptCreateRequest(library_handle=handle, checkpoint_name=name),
            lib.LibraryCkptCreateResponse,
        )
        create = raw_unary(channel, LIBRARY_SERVICE + "LibraryCkptDataSetCreate")
        write = raw_unary(channel, LIBRARY_SERVICE + "LibraryCkptDataSetWrite")
        datasets = [f(w) for w in range(max_inflight) for f in (write_dataset, read_dataset)]
        await bounded(
            [
                functools.partial(
                    create,
                    lib.LibraryCkptDataSetCreateRequest(
                        library_handle=handle, checkpoint_name=name, dataset_id=dataset
                    ).SerializeToString(),
                )
                for dataset in datasets
            ]
        )
        await bounded(
            [
                functools.partial(
                    write,
                    lib.LibraryCkptDataSetWriteRequest(
                        library_handle=handle,
                        checkpoint_name=name,
                        dataset_id=dataset,
                        data=PAYLOAD,
                    ).SerializeToString(),
                )
                for dataset in datasets
            ]
        )
        response = await lib_call(
            channel,
            "LibraryCkptDataSetRead",
            lib.LibraryCkptDataSetReadRequest(
                library_handle=handle, checkpoint_name=name, dataset_id=read_dataset(0)
            ),
            lib.LibraryCkptDataSetReadResponse,
        )
        if response.data != PAYLOAD or response.elements:
            raise RuntimeError(
                f"LibraryCkptDataSetRead returned {response!r:.200}, not the data written"
            )

    async def finish(self, channel: aio.Channel) -> None:
        handle, self._handle = self._handle, None
        if handle is None:
            return
        await lib_call(
            channel,
            "LibraryCkptDelete",
            lib.LibraryCkptDeleteRequest(
                library_handle=handle, checkpoint_name=self.checkpoint_name
            ),
            lib.LibraryCkptDeleteResponse,
        )
        await library_finalize(channel, handle)
