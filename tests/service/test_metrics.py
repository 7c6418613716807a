"""The metrics endpoint of a real node: the gRPC server metrics of every
service with their codes and the seed error's name, process metrics, build
info and the node's gauges on /metrics; /healthz and /readyz from the same
state as grpc.health.v1; 404 elsewhere."""

from __future__ import annotations

import asyncio
import http.client
import time
from collections.abc import Callable, Coroutine
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from cps.server.config import version
from cps.server.metrics import HANDLING_BUCKETS
from cps.server.node import Node
from cps.v1 import checkpoint_service_pb2 as pb
from tests.support import Client, running_node

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]


def get(port: int, path: str, method: str = "GET") -> tuple[int, str, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read().decode()
    finally:
        connection.close()


def scrape(port: int) -> tuple[dict[str, str], Samples]:
    """The type of each metric family and the value of each sample."""
    status, content_type, text = get(port, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    types: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return types, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def call(service: str, method: str, kind: str = "unary") -> dict[str, str]:
    return {"grpc_service": service, "grpc_method": method, "grpc_type": kind}


CPS = "cps.v1.CheckpointService"
HEALTH = "grpc.health.v1.Health"


def test_grpc_server_metrics_count_every_call_with_its_code_and_seed_error() -> None:
    with running_node("--metrics-listen", "127.0.0.1:0") as node:
        assert node.metrics_port
        _, before = scrape(node.metrics_port)
        with grpc.insecure_channel(f"127.0.0.1:{node.port}") as channel:
            client = Client(channel)
            handle = client.open("metered")
            client.create_section(handle, b"s", b"12345")
            with pytest.raises(grpc.RpcError):
                client.create_section(handle, b"s")  # CL_ERR_ALREADY_EXIST
            health = health_pb2_grpc.HealthStub(channel)
            health.Check(health_pb2.HealthCheckRequest(service=""))
            with pytest.raises(grpc.RpcError):
                health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
            types, after = scrape(node.metrics_port)

        def delta(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        create = call(CPS, "SectionCreate")
        assert delta("grpc_server_started_total", **create) == 2
        assert delta("grpc_server_handled_total", **create, grpc_code="OK") == 1
        assert delta("grpc_server_handled_total", **create, grpc_code="ALREADY_EXISTS") == 1
        assert delta("grpc_server_handling_seconds_count", **create) == 2
        seed = {"grpc_service": CPS, "grpc_method": "SectionCreate"}
        assert delta("cps_seed_errors_total", **seed, reason="CL_ERR_ALREADY_EXIST") == 1
        # Other services too, a failure without a seed error counted by its code alone.
        check = call(HEALTH, "Check")
        assert delta("grpc_server_handled_total", **check, grpc_code="OK") == 1
        assert delta("grpc_server_handled_total", **check, grpc_code="NOT_FOUND") == 1
        assert not any(
            name == "cps_seed_errors_total" and dict(labels)["grpc_service"] == HEALTH
            for name, labels in after
        )
        # The buckets go past the replica timeout and the lease TTL, cumulative.
        buckets = {
            dict(labels)["le"]: count
            for (name, labels), count in after.items()
            if name == "grpc_server_handling_seconds_bucket"
            and dict(labels)["grpc_method"] == "SectionCreate"
        }
        assert float(min(buckets, key=float)) == 0.0005
        assert max(HANDLING_BUCKETS) >= 30 and "30.0" in buckets
        ordered = [buckets[le] for le in sorted(buckets, key=float)]
        assert ordered == sorted(ordered) and ordered[-1] == 2
        assert types["grpc_server_started"] == "counter"
        assert types["grpc_server_handled"] == "counter"
        assert types["grpc_server_handling_seconds"] == "histogram"
        assert types["cps_seed_errors"] == "counter"
        # No private call metrics are left.
        assert not any(name.startswith("cps_rpc") for name, _ in after)


def test_refused_undecodable_requests_and_streams_are_counted() -> None:
    """The gate's refusals (it runs inside the metrics interceptor) and
    server streams, counted when they end."""
    with (
        running_node("--metrics-listen", "127.0.0.1:0") as node,
        grpc.insecure_channel(f"127.0.0.1:{node.port}") as channel,
    ):
        port = node.metrics_port
        check = channel.unary_unary(f"/{HEALTH}/Check")
        with pytest.raises(grpc.RpcError):
            check(bytes([0x0A, 3, 0xFF, 0xFE, 0xFD]), timeout=5)  # service: not UTF-8
        refused = call(HEALTH, "Check")
        samples = scrape(port)[1]
        assert value(samples, "grpc_server_handled_total", **refused, grpc_code="INVALID_ARGUMENT")
        seed = {"grpc_service": HEALTH, "grpc_method": "Check"}
        assert value(samples, "cps_seed_errors_total", **seed, reason="CL_CKPT_ERR_INVALID_PARAM")
        # A second Callbacks stream of the session takes over: the first ends
        # ABORTED with CL_CKPT_ERR_INUSE, the second CANCELLED by its client.
        client = Client(channel)
        request = pb.CallbacksRequest(service_handle=client.session)
        callbacks = call(CPS, "Callbacks", "server_stream")
        first = client.stub.Callbacks(request)
        until(lambda: value(scrape(port)[1], "grpc_server_started_total", **callbacks) == 1)
        second = client.stub.Callbacks(request)
        with pytest.raises(grpc.RpcError) as ended:
            next(first)
        assert ended.value.code() == grpc.StatusCode.ABORTED
        second.cancel()
        until(
            lambda: value(scrape(port)[1], "grpc_server_handling_seconds_count", **callbacks) == 2
        )
        samples = scrape(port)[1]
    assert value(samples, "grpc_server_handled_total", **callbacks, grpc_code="ABORTED") == 1
    assert value(samples, "grpc_server_handled_total", **callbacks, grpc_code="CANCELLED") == 1
    stream_seed = {"grpc_service": CPS, "grpc_method": "Callbacks"}
    assert value(samples, "cps_seed_errors_total", **stream_seed, reason="CL_CKPT_ERR_INUSE") == 1


def until(condition: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_node_gauges_process_metrics_and_build_info() -> None:
    with (
        running_node("--metrics-listen", "127.0.0.1:0") as node,
        grpc.insecure_channel(f"127.0.0.1:{node.port}") as channel,
    ):
        client = Client(channel)
        handle = client.open("held")
        client.create_section(handle, b"a", b"12345")
        client.create_section(handle, b"b", b"678")
        types, samples = scrape(node.metrics_port)
    assert value(samples, "cps_build_info", version=version()) == 1
    assert value(samples, "process_resident_memory_bytes") > 0
    assert value(samples, "process_cpu_seconds_total") > 0
    assert types["cps_storage_commits"] == "counter"
    assert value(samples, "cps_storage_commits_total") >= 2
    expected = {
        "cps_sessions": 1,
        "cps_checkpoint_handles": 1,
        "cps_checkpoints": 1,
        "cps_active_checkpoints": 1,
        "cps_sections": 2,
        "cps_section_bytes": 8,
        "cps_callback_queue_max": 0,
        "cps_callback_queue_events": 0,
        "cps_library_checkpoints": 0,
    }
    for name, expected_value in expected.items():
        assert types[name] == "gauge", name
        assert value(samples, name) == expected_value, name
    assert value(samples, "cps_reserved_bytes") > 0
    # A single node has no cluster metrics.
    assert "cps_peer_connected" not in types


def test_healthz_readyz_and_nothing_else() -> None:
    with running_node("--metrics-listen", "127.0.0.1:0") as node:
        port = node.metrics_port
        assert get(port, "/healthz")[:1] == (200,)
        assert get(port, "/readyz")[0] == 200  # a single node serves at once
        assert get(port, "/metrics?x=1")[0] == 200
        for path in ("/", "/metrics/", "/health", "/favicon.ico"):
            assert get(port, path)[0] == 404, path
        assert get(port, "/metrics", "POST")[0] == 405
        status, _, body = get(port, "/readyz", "HEAD")
        assert (status, body) == (200, "")
        # Whatever grpc.health.v1 says, /readyz says: a shutdown begins with
        # NOT_SERVING (Node.stop), the loop still answers.
        on_loop(node, node.health.enter_graceful_shutdown())
        assert get(port, "/readyz")[0] == 503
        assert get(port, "/healthz")[0] == 200
        with grpc.insecure_channel(f"127.0.0.1:{node.port}") as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING


def on_loop(node: Node, coroutine: Coroutine[Any, Any, None]) -> None:
    """Run on the node's loop (its session reaper's)."""
    reaper = node._reaper
    assert reaper is not None
    asyncio.run_coroutine_threadsafe(coroutine, reaper.get_loop()).result(5)


def test_metrics_are_off_by_default() -> None:
    with running_node() as node:
        assert node.metrics_port == 0
