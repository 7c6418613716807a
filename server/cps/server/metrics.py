"""A node's Prometheus metrics (prometheus-client) and its small HTTP
endpoint: ``/metrics``, ``/healthz`` and ``/readyz``, nothing else.

Each node has a registry of its own (tests run several nodes in one
process): the gRPC server metrics, kept by the call interceptor
(api/call_metrics.py), the process and Python collectors, build info, and
the node's state, read when scraped (node_metrics.py).

The endpoint runs on the node's asyncio loop, not in prometheus-client's
thread server (``start_http_server``): that one answers every path with the
metrics, an answer from the loop is what proves the node alive
(``/healthz``), readiness is read from the loop's grpc.health.v1 servicer,
and the state the collectors read is only ever touched from the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder

log = logging.getLogger("cps.metrics")

# grpc_server_handling_seconds, in seconds: from half a millisecond (a read
# on the node) to well past a synchronous write that waits out the replica
# timeout (1 s by default) and a failover within the lease TTL (3 s), up to
# the forwarder's own limit (4 x replica timeout + 5 s) and beyond.
HANDLING_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
# unary, client_stream, server_stream, bidi_stream (the names of go-grpc-prometheus).
CALL_LABELS = ("grpc_service", "grpc_method", "grpc_type")


class ServerMetrics:
    """One node's registry and the metrics the call path updates."""

    def __init__(self, version: str) -> None:
        # Told (service/method path, seed reason) of each call that ends with
        # a seed error (the node's event feed reports the limits reached).
        self.on_seed_error: Callable[[str, str], None] | None = None
        self.registry = registry = CollectorRegistry(auto_describe=True)
        # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ...
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)  # python_info
        GCCollector(registry=registry)  # python_gc_*
        self.started = Counter(
            "grpc_server_started_total",
            "RPCs started on the server.",
            CALL_LABELS,
            registry=registry,
        )
        self.handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, whatever their status (grpc_code).",
            (*CALL_LABELS, "grpc_code"),
            registry=registry,
        )
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "Time from the start of an RPC to its end on the server (a stream: its whole life).",
            CALL_LABELS,
            buckets=HANDLING_BUCKETS,
            registry=registry,
        )
        self.seed_errors = Counter(
            "cps_seed_errors_total",
            "RPCs that ended with a seed error (ErrorInfo reason of domain cps.v1, "
            "e.g. CL_ERR_NOT_EXIST).",
            ("grpc_service", "grpc_method", "reason"),
            registry=registry,
        )
        build = Gauge(
            "cps_build_info",
            "Always 1; the version of the running cps-server.",
            ("version",),
            registry=registry,
        )
        build.labels(version).set(1)

    def render(self, accept: str) -> tuple[bytes, str]:
        """The exposition (OpenMetrics when the scraper asks for it) and its content type."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type


Ready = Callable[[], Awaitable[bool]]

_REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_TEXT = "text/plain; charset=utf-8"


async def serve_http(metrics: ServerMetrics, ready: Ready, host: str, port: int) -> asyncio.Server:
    """GET (or HEAD) /metrics, /healthz (200: the loop answers), /readyz
    (200 while grpc.health.v1 says SERVING for "", else 503); 404 elsewhere."""

    async def answer(method: str, path: str, accept: str) -> tuple[int, bytes, str]:
        if path == "/metrics":
            body, content_type = metrics.render(accept)
            return 200, body, content_type
        if path == "/healthz":
            return 200, b"ok\n", _TEXT
        if path == "/readyz":
            if await ready():
                return 200, b"serving\n", _TEXT
            return 503, b"not serving\n", _TEXT
        return 404, b"not found: /metrics, /healthz, /readyz\n", _TEXT

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, target = [*request_line.split(" "), "", ""][:2]
            headers = {}
            for line in header_lines:
                name, colon, value = line.partition(":")
                if colon:
                    headers[name.strip().lower()] = value.strip()
            extra = b""
            if method not in ("GET", "HEAD"):
                status, body, content_type = 405, b"only GET and HEAD\n", _TEXT
                extra = b"Allow: GET, HEAD\r\n"
            else:
                try:
                    status, body, content_type = await answer(
                        method, target.partition("?")[0], headers.get("accept", "")
                    )
                except Exception:
                    log.exception("metrics endpoint failed", extra={"path": target})
                    status, body, content_type = 500, b"internal error\n", _TEXT
            writer.write(
                f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                f"Content-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Connection: close\r\n".encode()
                + extra
                + b"\r\n"
                + (b"" if method == "HEAD" else body)
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except ConnectionError:
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)
