"""Prometheus metrics: counters kept by the call path, gauges read from the
node's state when scraped, served as text on a small HTTP endpoint.

No dependency: the text exposition format is a few lines of code, and a
counter increment on the hot path is one dict operation.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable

log = logging.getLogger("cps.metrics")

# Latency buckets in seconds (upper bounds), for cps_rpc_duration_seconds.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

Gauge = tuple[str, str, Callable[[], float]]  # name, help, read


class Metrics:
    def __init__(self) -> None:
        # (method, seed error name or "OK") -> calls
        self.calls: defaultdict[tuple[str, str], int] = defaultdict(int)
        # method -> [count per bucket..., count above the last], sum of seconds
        self.latency: dict[str, list[int]] = {}
        self.latency_sum: defaultdict[str, float] = defaultdict(float)
        self.gauges: list[Gauge] = []

    def observe(self, method: str, outcome: str, seconds: float) -> None:
        self.calls[(method, outcome)] += 1
        counts = self.latency.get(method)
        if counts is None:
            counts = self.latency[method] = [0] * (len(BUCKETS) + 1)
        for index, bound in enumerate(BUCKETS):
            if seconds <= bound:
                counts[index] += 1
                break
        else:
            counts[-1] += 1
        self.latency_sum[method] += seconds

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self.gauges.append((name, help_text, read))

    def render(self) -> str:
        lines = [
            "# HELP cps_rpc_total Calls answered, by method and seed error (OK on success).",
            "# TYPE cps_rpc_total counter",
        ]
        lines += [
            f'cps_rpc_total{{method="{method}",code="{outcome}"}} {count}'
            for (method, outcome), count in sorted(self.calls.items())
        ]
        lines += [
            "# HELP cps_rpc_duration_seconds Time from request to answer, by method.",
            "# TYPE cps_rpc_duration_seconds histogram",
        ]
        for method, counts in sorted(self.latency.items()):
            lines += _histogram(method, counts, self.latency_sum[method])
        for name, help_text, read in self.gauges:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {read():g}"]
        return "\n".join(lines) + "\n"


def _histogram(method: str, counts: list[int], total: float) -> Iterable[str]:
    cumulative = 0
    for bound, count in zip(BUCKETS, counts, strict=False):
        cumulative += count
        yield f'cps_rpc_duration_seconds_bucket{{method="{method}",le="{bound}"}} {cumulative}'
    cumulative += counts[-1]
    yield f'cps_rpc_duration_seconds_bucket{{method="{method}",le="+Inf"}} {cumulative}'
    yield f'cps_rpc_duration_seconds_sum{{method="{method}"}} {total:.6f}'
    yield f'cps_rpc_duration_seconds_count{{method="{method}"}} {cumulative}'


# The node's one registry: the call decorators record into it.
METRICS = Metrics()


async def serve_metrics(metrics: Metrics, host: str, port: int) -> asyncio.Server:
    """Answer every HTTP GET with the exposition text (path /metrics or any)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            if request.startswith(b"GET "):
                body = metrics.render().encode()
                status = b"200 OK"
            else:
                body, status = b"only GET\n", b"405 Method Not Allowed"
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain; version=0.0.4\r\n"
                b"Content-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except ConnectionError:
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)
