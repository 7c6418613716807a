"""The request gate: a request that does not decode is refused with
INVALID_ARGUMENT and one warning line, never UNKNOWN and a traceback."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from cps.server.api.registration import Registrar
from cps.server.metrics import ServerMetrics
from tests.support import seed_error

# A string field (service = 1) whose bytes are not UTF-8: protobuf refuses it.
NOT_UTF8 = bytes([0x0A, 3, 0xFF, 0xFE, 0xFD])
TRUNCATED = bytes([0x0A, 0x7F, 0x61])


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    """A grpc.aio server with the gate and the health service (unary Check,
    server-streaming Watch), in its own thread and loop."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        servicer = health.aio.HealthServicer()
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(
            servicer, Registrar(server, ServerMetrics("test"))
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(None), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.mark.parametrize("raw", [NOT_UTF8, TRUNCATED])
def test_undecodable_unary_request_is_invalid_argument_with_one_warning(
    address: str, raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with grpc.insecure_channel(address) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        with pytest.raises(grpc.RpcError) as raised:
            check(raw, timeout=5)
        code, reason, _ = seed_error(raised.value)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert reason == "CL_CKPT_ERR_INVALID_PARAM"
        assert "does not decode" in (raised.value.details() or "")
        # A good request still works through the gate.
        ok = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert ok.status == health_pb2.HealthCheckResponse.SERVING
    refused = [r for r in caplog.records if r.getMessage() == "undecodable request refused"]
    assert len(refused) == 1 and refused[0].levelno == logging.WARNING
    assert not any(r.exc_info for r in caplog.records)
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)


def test_undecodable_streaming_request_is_invalid_argument(address: str) -> None:
    with grpc.insecure_channel(address) as channel:
        watch = channel.unary_stream("/grpc.health.v1.Health/Watch")
        with pytest.raises(grpc.RpcError) as raised:
            list(watch(NOT_UTF8, timeout=5))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # A good one streams as before.
        stream = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
        stream.cancel()
