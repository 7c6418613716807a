"""The background thread that keeps a session's Callbacks stream attached.

It only moves received callbacks into the session's PendingQueue (which makes
the selection object readable); callbacks run in ``Session.dispatch``, in the
caller's thread.

- A broken transport (UNAVAILABLE) is retried with backoff until the session
  is finalized; the new stream resumes after the last callback received, so
  the node sends again what was lost in flight (and takes over from the old
  stream if it still counts it as attached).
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
from typing import Any

import grpc

from cps.v1 import checkpoint_service_pb2 as pb

from ._pending import PendingQueue
from .errors import BadHandleError, from_rpc_error

log = logging.getLogger("cps.client")

_RETRIED = (grpc.StatusCode.UNAVAILABLE,)
_FIRST_BACKOFF = 0.05
_MAX_BACKOFF = 2.0


class CallbackStream:
    def __init__(self, stub: Any, service_handle: int, queue: PendingQueue[pb.Callback]) -> None:
        self._stub = stub
        self._service_handle = service_handle
        self._queue = queue
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
                    log.warning("callbacks stream: %s; attaching again in %.2fs", error, backoff)
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, _MAX_BACKOFF)
                    continue
                self._queue.fail(error)
                return
            except Exception as unexpected:  # a bug: surface it in dispatch
                log.exception("callbacks stream failed")
                self._queue.fail(unexpected)
                return
            if not self._stopping.is_set():
                self._queue.fail(
                    BadHandleError("the node ended the session's callback stream: it is gone")
                )
            return

    def _receive(self, callback: pb.Callback) -> None:
        for received in self._gaps.check(callback):
            self._queue.put(received)


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
