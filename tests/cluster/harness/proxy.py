"""A TCP proxy on 127.0.0.1 whose link can be cut, for partition tests.

    with TcpProxy("127.0.0.1:2379") as proxy:   # listens on proxy.address
        ...                                     # point the node at proxy.address
        proxy.cut()                             # blackhole: bytes dropped, nothing answers
        proxy.cut("reset")                      # or: connections reset, new ones refused
        proxy.restore()

Putting one proxy in front of each etcd member and handing a node only the
proxies' addresses cuts that node's link to etcd and nothing else: the
members still see each other and every other client (an asymmetric
partition).

Modes of cut():
- "blackhole" (default, like a real partition): existing and new connections
  stay open (new ones are accepted) but every byte either way is read and
  dropped, so the client sees no answer and no error: its calls time out.
  On restore() the connections that were blackholed are closed (bytes were
  lost, so their streams are garbage); new connections are forwarded again.
- "reset": every open connection is closed with a TCP RST and every new one
  is accepted and reset at once, so the client sees errors immediately.

The proxy runs its own asyncio loop in a daemon thread; its methods may be
called from any thread, including the test's own event loop (they block for
the few milliseconds the proxy's loop takes to apply them).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Literal

CutMode = Literal["blackhole", "reset"]
_CHUNK = 65536


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, downstream: asyncio.StreamWriter) -> None:
        self.downstream = downstream
        self.upstream: asyncio.StreamWriter | None = None
        self.blackholed = False
        self.tasks: list[asyncio.Task[None]] = []

    def reset(self) -> None:
        for writer in (self.downstream, self.upstream):
            if writer is not None:
                _reset(writer)
        for task in self.tasks:
            task.cancel()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0), not a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class TcpProxy:
    def __init__(self, target: str, *, listen_host: str = "127.0.0.1", port: int = 0) -> None:
        self.target = target
        self._target_host, self._target_port = _split(target)
        self._listen_host = listen_host
        self._requested_port = port
        self._mode: CutMode | None = None
        self._links: set[_Link] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self.port = 0
        self.connections = 0  # accepted so far, for tests

    # --- control (any thread) ---------------------------------------------

    def start(self) -> TcpProxy:
        if self._thread.is_alive():
            return self
        self._thread.start()
        self._call(self._start())
        return self

    @property
    def address(self) -> str:
        return f"{self._listen_host}:{self.port}"

    @property
    def mode(self) -> CutMode | None:
        """None while forwarding, else the mode of the cut."""
        return self._mode

    def cut(self, mode: CutMode = "blackhole") -> None:
        if mode not in ("blackhole", "reset"):
            raise ValueError(f"unknown cut mode {mode!r}")
        self._call(self._cut(mode))

    def restore(self) -> None:
        self._call(self._restore())

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, coroutine: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    # --- the proxy's loop -------------------------------------------------

    async def _start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self._listen_host, self._requested_port
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _cut(self, mode: CutMode) -> None:
        self._mode = mode
        for link in list(self._links):
            if mode == "reset":
                self._drop(link)
            else:
                link.blackholed = True

    async def _restore(self) -> None:
        self._mode = None
        for link in list(self._links):
            if link.blackholed:
                self._drop(link)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            self._drop(link)

    def _drop(self, link: _Link) -> None:
        link.reset()
        self._links.discard(link)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self._mode == "reset":
            _reset(writer)
            return
        link = _Link(writer)
        self._links.add(link)
        try:
            if self._mode == "blackhole":
                link.blackholed = True
                await self._sink(reader)
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    self._target_host, self._target_port
                )
            except OSError:
                _reset(writer)
                return
            link.upstream = up_writer
            if link not in self._links:  # reset while connecting
                _reset(up_writer)
                return
            # Blackholed while connecting: the pumps drop the bytes.
            link.tasks = [
                asyncio.ensure_future(self._pump(reader, up_writer, link)),
                asyncio.ensure_future(self._pump(up_reader, writer, link)),
            ]
            await asyncio.gather(*link.tasks, return_exceptions=True)
        finally:
            if link in self._links:
                self._links.discard(link)
                for w in (link.downstream, link.upstream):
                    if w is not None:
                        w.transport.abort()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link
    ) -> None:
        try:
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    break
                if link.blackholed:
                    continue  # dropped, like packets lost in a partition
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        # One side ended: end the other (half-close is not needed by gRPC).
        if not link.blackholed:
            writer.transport.abort()

    @staticmethod
    async def _sink(reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError):
            while await reader.read(_CHUNK):
                pass
