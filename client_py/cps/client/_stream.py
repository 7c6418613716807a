"""The background thread that keeps a session's Callbacks stream attached.

It only moves received callbacks into the session's PendingQueue (which makes
the selection object readable); callbacks run in ``Session.dispatch``, in the
caller's thread.

- A broken transport (UNAVAILABLE) is retried with backoff on the same node
  while it answers a health check; the new stream resumes after the last
  callback received, so the node sends again what was lost in flight (and
  takes over from the old stream if it still counts it as attached).
- With ``on_lost`` (a session that follows the cluster), a node that no
  longer answers, ends the stream, or no longer knows the session
  (BAD_HANDLE) is left: ``on_lost`` moves the session, in this thread, and
  starts the stream of the new node; this one ends.
- A gap in the callbacks' sequence numbers (what the node could not keep) is
  reported as a ``dropped`` callback of the missing count.
- Another stream taking over this session's callbacks (ABORTED, INUSE) ends
  this one: ``dispatch`` raises it.
- Any other end (the session is gone: node stopped, session reaped, handle
  unknown) is the queue's sticky failure: ``dispatch`` raises it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import grpc

from cps.v1 import checkpoint_service_pb2 as pb

from ._pending import PendingQueue
from ._router import QueueItem, Received
from .errors import BadHandleError, CkptError, from_rpc_error

log = logging.getLogger("cps.client")

_RETRIED = (grpc.StatusCode.UNAVAILABLE,)
_FIRST_BACKOFF = 0.05
_MAX_BACKOFF = 2.0


class CallbackStream:
    def __init__(
        self,
        stub: Any,
        service_handle: int,
        queue: PendingQueue[QueueItem],
        *,
        generation: int = 0,
        received: Callable[[pb.Callback], None] | None = None,
        alive: Callable[[], bool] | None = None,
        on_lost: Callable[[CkptError], None] | None = None,
    ) -> None:
        self._stub = stub
        self._service_handle = service_handle
        self._queue = queue
        self._generation = generation
        self._received = received
        self._alive = alive
        self._on_lost = on_lost
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._call: Any = None
        self._gaps = GapDetector()
        self._thread = threading.Thread(
            target=self._run, name=f"cps-callbacks-{service_handle}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop reading (the session is being finalized) and wait for the
        thread, unless called from it."""
        self._stopping.set()
        with self._lock:
            call = self._call
        if call is not None:
            call.cancel()
        if threading.current_thread() is not self._thread and self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        backoff = _FIRST_BACKOFF
        while not self._stopping.is_set():
            request = pb.CallbacksRequest(
                service_handle=self._service_handle, resume_after_sequence=self._gaps.last
            )
            call = self._stub.Callbacks(request)
            with self._lock:
                self._call = call
            if self._stopping.is_set():
                call.cancel()
            try:
                for response in call:
                    backoff = _FIRST_BACKOFF
                    for callback in response.callbacks:
                        self._receive(callback)
            except grpc.RpcError as rpc_error:
                if self._stopping.is_set():
                    return
                error = from_rpc_error(rpc_error)
                if error.code in _RETRIED:
                    if self._on_lost is not None and not (self._alive is None or self._alive()):
                        self._lose(error)
                        return
                    log.warning("callbacks stream: %s; attaching again in %.2fs", error, backoff)
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, _MAX_BACKOFF)
                    continue
                if self._on_lost is not None and isinstance(error, BadHandleError):
                    self._lose(error)  # the node no longer knows the session
                    return
                self._queue.fail(error)
                return
            except Exception as unexpected:  # a bug: surface it in dispatch
                log.exception("callbacks stream failed")
                self._queue.fail(unexpected)
                return
            if not self._stopping.is_set():
                ended = BadHandleError("the node ended the session's callback stream: it is gone")
                if self._on_lost is not None:
                    self._lose(ended)
                else:
                    self._queue.fail(ended)
            return

    def _lose(self, error: CkptError) -> None:
        assert self._on_lost is not None
        log.warning("callbacks stream: %s; the session moves to another node", error)
        self._on_lost(error)

    def _receive(self, callback: pb.Callback) -> None:
        with self._lock:  # nothing more once stopped (the session moved on)
            if self._stopping.is_set():
                return
            for received in self._gaps.check(callback):
                if self._received is not None:
                    self._received(received)
                self._queue.put(Received(self._generation, received))


class GapDetector:
    """Callbacks are numbered 1, 2, ... per session: a jump means callbacks
    were lost with a broken stream; report them as dropped."""

    def __init__(self) -> None:
        self.last = 0  # the sequence of the last callback received

    def check(self, callback: pb.Callback) -> list[pb.Callback]:
        """``callback``, preceded by a ``dropped`` one if callbacks are missing."""
        missing = callback.sequence - self.last - 1
        self.last = max(self.last, callback.sequence)
        if missing > 0:
            return [pb.Callback(dropped=pb.CallbacksDropped(count=missing)), callback]
        return [callback]
