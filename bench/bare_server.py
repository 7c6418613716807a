"""The bare reference server: a grpc.aio server whose one unary method returns
an empty response without looking at the request. It is the ceiling of Python
gRPC on this machine. Run as `python -m bench.bare_server --listen HOST:PORT`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import grpc
from grpc import aio

SERVICE = "bench.Bare"
METHOD = "Call"


async def _call(request: bytes, context: aio.ServicerContext) -> bytes:
    return b""


async def serve(listen: str) -> None:
    server = aio.server()
    # No (de)serializers: the handler gets and returns raw bytes.
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {METHOD: grpc.unary_unary_rpc_method_handler(_call)}
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(listen)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True, help="HOST:PORT, e.g. 127.0.0.1:50061")
    args = parser.parse_args()
    asyncio.run(serve(args.listen))


if __name__ == "__main__":
    main()
