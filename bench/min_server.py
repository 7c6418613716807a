"""A CheckpointService whose SectionOverwrite only returns: the cost of a
protobuf unary call in grpc.aio, without any CPS code. Used by
bench/request_path.py to see how much of CPS's per-call cost is its own.
Run: python -m bench.min_server --listen HOST:PORT"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import grpc

from cps.v1 import checkpoint_service_pb2 as pb
from cps.v1 import checkpoint_service_pb2_grpc as rpc

_DONE = pb.SectionOverwriteResponse()


class Minimal(rpc.CheckpointServiceServicer):
    async def Initialize(self, request: Any, context: Any) -> pb.InitializeResponse:
        return pb.InitializeResponse(service_handle=1)

    async def CheckpointOpen(self, request: Any, context: Any) -> pb.CheckpointOpenResponse:
        return pb.CheckpointOpenResponse(checkpoint_handle=1)

    async def SectionCreate(self, request: Any, context: Any) -> pb.SectionCreateResponse:
        return pb.SectionCreateResponse()

    async def SectionOverwrite(self, request: Any, context: Any) -> pb.SectionOverwriteResponse:
        return _DONE


async def serve(listen: str) -> None:
    server = grpc.aio.server()
    # Only the four calls the benchmark makes are implemented.
    rpc.add_CheckpointServiceServicer_to_server(Minimal(), server)  # type: ignore[abstract]
    server.add_insecure_port(listen)
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True)
    asyncio.run(serve(parser.parse_args().listen))
