"""AsyncSession (grpc.aio) against a real node; each test runs its own loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from cps.client import (
    AsyncCallbacks,
    AsyncCheckpoint,
    AsyncSession,
    BadHandleError,
    ChangedSection,
    CkptError,
    CreationAttributes,
    DispatchFlags,
    InvalidHandleError,
    NotExistError,
    SectionChange,
    Version,
    VersionMismatchError,
)
from cps.client._aio_pending import AsyncPendingQueue
from cps.client._pending import QueueClosed
from cps.v1 import checkpoint_service_pb2 as pb
from cps.v1 import checkpoint_service_pb2_grpc as pb_grpc
from tests.client.helpers import node_reason

Stub = pb_grpc.CheckpointServiceStub


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 30))


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    for _ in range(int(timeout / 0.01)):
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()


def node_next(stub: Stub, iteration: int) -> str:
    return node_reason(
        lambda: stub.SectionIterationNext(
            pb.SectionIterationNextRequest(section_iteration_handle=iteration)
        )
    )


def node_status(stub: Stub, handle: int) -> str:
    return node_reason(
        lambda: stub.CheckpointStatusGet(pb.CheckpointStatusGetRequest(checkpoint_handle=handle))
    )


def test_async_open_callback_and_notifications(address: str, name: str) -> None:
    opened: list[tuple[int, AsyncCheckpoint | None, CkptError | None]] = []
    notified: list[tuple[str, AsyncCheckpoint, list[ChangedSection]]] = []

    async def on_notification(
        checkpoint_name: str, checkpoint: AsyncCheckpoint, sections: list[ChangedSection]
    ) -> None:
        await asyncio.sleep(0)  # a coroutine callback is awaited
        notified.append((checkpoint_name, checkpoint, sections))

    async def on_open(
        invocation: int, checkpoint: AsyncCheckpoint | None, error: CkptError | None
    ) -> None:
        opened.append((invocation, checkpoint, error))
        if checkpoint is not None:
            await checkpoint.immediate_consumption_register(on_notification)

    async def scenario() -> None:
        session = await AsyncSession.connect(address, AsyncCallbacks(open=on_open), timeout=10)
        async with session:
            await session.open_async(9, name, CreationAttributes(max_sections=4))
            await session.open_async(10, name + "-missing")
            assert await until(lambda: session.pending == 2)
            assert await session.dispatch(DispatchFlags.ONE) == 1
            assert await session.dispatch(DispatchFlags.ALL) == 1
            [(nine, checkpoint, no_error), (ten, nothing, error)] = opened
            assert (nine, no_error, ten, nothing) == (9, None, 10, None)
            assert isinstance(error, NotExistError)
            assert checkpoint is not None and checkpoint.name == name
            await checkpoint.section_create(b"a", b"hello")
            await checkpoint.write([(b"a", b"J")])
            assert await until(lambda: session.pending == 2)
            assert await session.dispatch() == 2
            assert [(n, c) for n, c, _ in notified] == [(name, checkpoint)] * 2
            assert [s for _, _, s in notified] == [
                [ChangedSection(b"a", SectionChange.CREATED)],
                [ChangedSection(b"a", SectionChange.WRITTEN)],
            ]
            assert await checkpoint.read(b"a") == b"Jello"

    run(scenario)


def test_async_checkpoint_calls_and_context_managers(address: str, name: str, stub: Stub) -> None:
    async def scenario() -> None:
        async with await AsyncSession.connect(address, timeout=10) as session:
            async with await session.open(name, CreationAttributes()) as checkpoint:
                assert node_status(stub, checkpoint.handle) == ""
                for section in (b"a", b"b", b"c"):
                    await checkpoint.section_create(section, section * 2)
                results = await checkpoint.read_vector([b"a", b"c"])
                assert [(r.data, r.read_size) for r in results] == [(b"aa", 2), (b"cc", 2)]
                assert (await checkpoint.status()).number_of_sections == 3
                exhausted = checkpoint.sections()
                ids = [s.section_id async for s in exhausted]
                assert ids == [b"a", b"b", b"c"]
                assert exhausted.handle is not None
                assert node_next(stub, exhausted.handle) == "CL_CKPT_ERR_INVALID_HANDLE"
                async with checkpoint.sections() as iterator:
                    assert iterator.handle is not None
                    assert (await anext(iterator)).section_id == b"a"
                    assert node_next(stub, iterator.handle) == ""  # live: takes b"b"
                assert node_next(stub, iterator.handle) == "CL_CKPT_ERR_INVALID_HANDLE"
                await checkpoint.section_delete(b"b")
                with pytest.raises(NotExistError):
                    await checkpoint.read(b"b")
            assert node_status(stub, checkpoint.handle) == "CL_CKPT_ERR_INVALID_HANDLE"
            with pytest.raises(InvalidHandleError):
                await checkpoint.status()
            kept = await session.open(name + "-kept", CreationAttributes())
        assert kept.closed
        assert node_status(stub, kept.handle) == "CL_CKPT_ERR_INVALID_HANDLE"
        with pytest.raises(BadHandleError):
            await session.open(name)

    run(scenario)


def test_async_dispatch_blocking_returns_after_finalize(address: str, name: str) -> None:
    got: list[int] = []

    async def scenario() -> None:
        callbacks = AsyncCallbacks(
            open=lambda invocation, checkpoint, error: got.append(invocation)
        )
        session = await AsyncSession.connect(address, callbacks)
        blocking = asyncio.create_task(session.dispatch(DispatchFlags.BLOCKING))
        await session.open_async(3, name, CreationAttributes())
        assert await until(lambda: got == [3])
        assert not blocking.done()
        await session.finalize()
        assert await asyncio.wait_for(blocking, 5) == 1
        with pytest.raises(BadHandleError):
            await session.dispatch()

    run(scenario)


def test_async_version_mismatch(address: str) -> None:
    async def scenario() -> None:
        with pytest.raises(VersionMismatchError) as caught:
            await AsyncSession.connect(address, version=Version("B", 7, 0))
        assert caught.value.supported is not None and caught.value.supported.major == 1

    run(scenario)


def test_async_queue_is_sticky_and_closes() -> None:
    async def scenario() -> None:
        queue: AsyncPendingQueue[int] = AsyncPendingQueue()
        waiter = asyncio.create_task(queue.wait())
        await asyncio.sleep(0)
        assert not waiter.done()
        queue.put(1)
        assert await waiter is True
        queue.fail(BadHandleError("gone"))
        assert queue.take() == 1
        with pytest.raises(BadHandleError):
            queue.take()
        queue.close()
        assert await queue.wait() is False
        with pytest.raises(QueueClosed):
            queue.take()

    run(scenario)
