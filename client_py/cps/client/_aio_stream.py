"""The asyncio task that keeps a session's Callbacks stream attached; the
same policy as the threaded CallbackStream (see _stream.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from cps.v1 import checkpoint_service_pb2 as pb

from ._aio_pending import AsyncPendingQueue
from ._router import QueueItem, Received
from ._stream import GapDetector
from .errors import BadHandleError, CkptError, from_rpc_error

log = logging.getLogger("cps.client")

_RETRIED = (grpc.StatusCode.UNAVAILABLE,)
_FIRST_BACKOFF = 0.05
_MAX_BACKOFF = 2.0


class AsyncCallbackStream:
    def __init__(
        self,
        stub: Any,
        service_handle: int,
        queue: AsyncPendingQueue[QueueItem],
        *,
        generation: int = 0,
        received: Callable[[pb.Callback], None] | None = None,
        alive: Callable[[], Awaitable[bool]] | None = None,
        on_lost: Callable[[CkptError], Awaitable[None]] | None = None,
    ) -> None:
        self._stub = stub
        self._service_handle = service_handle
        self._queue = queue
        self._generation = generation
        self._received = received
        self._alive = alive
        self._on_lost = on_lost
        self._gaps = GapDetector()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._stopping = True
        task = self._task
        if task is None or task is asyncio.current_task():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        backoff = _FIRST_BACKOFF
        while not self._stopping:
            request = pb.CallbacksRequest(
                service_handle=self._service_handle, resume_after_sequence=self._gaps.last
            )
            call = self._stub.Callbacks(request)
            try:
                async for response in call:
                    backoff = _FIRST_BACKOFF
                    for callback in response.callbacks:
                        for received in self._gaps.check(callback):
                            if self._stopping:
                                break
                            if self._received is not None:
                                self._received(received)
                            self._queue.put(Received(self._generation, received))
            except grpc.RpcError as rpc_error:
                if self._stopping:
                    return
                error = from_rpc_error(rpc_error)
                if error.code in _RETRIED:
                    if self._on_lost is not None and not (
                        self._alive is None or await self._alive()
                    ):
                        await self._lose(error)
                        return
                    log.warning("callbacks stream: %s; attaching again in %.2fs", error, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, _MAX_BACKOFF)
                    continue
                if self._on_lost is not None and isinstance(error, BadHandleError):
                    await self._lose(error)  # the node no longer knows the session
                    return
                self._queue.fail(error)
                return
            except asyncio.CancelledError:
                call.cancel()
                raise
            except Exception as unexpected:  # a bug: surface it in dispatch
                log.exception("callbacks stream failed")
                self._queue.fail(unexpected)
                return
            if not self._stopping:
                ended = BadHandleError("the node ended the session's callback stream: it is gone")
                if self._on_lost is not None:
                    await self._lose(ended)
                else:
                    self._queue.fail(ended)
            return

    async def _lose(self, error: CkptError) -> None:
        assert self._on_lost is not None
        log.warning("callbacks stream: %s; the session moves to another node", error)
        await self._on_lost(error)
