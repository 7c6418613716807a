"""CPS's own CPU per SectionOverwrite, without grpc: the method as the
server installs it (request gate, call metrics, the servicer, the core,
the commit) called in-process with a stand-in context, one call at a time
and 64 at once (their commits then share a batch). What is left of a
server's µs/op (bench.request_path) is grpc's and the event loop's.

Run: python -m bench.own_cost [--calls 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from typing import Any

import grpc

from cps.server import config
from cps.server.api.checkpoint_service import CheckpointService
from cps.server.api.registration import wrap
from cps.server.node import Node
from cps.v1 import checkpoint_service_pb2 as pb
from cps.v1 import types_pb2 as t


class _Context:
    """What the installed method asks of a grpc context on success."""

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    def code(self) -> None:
        return None

    def trailing_metadata(self) -> tuple[()]:
        return ()

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    async def abort_with_status(self, status: Any) -> None:
        raise RuntimeError(f"the call failed: {status.details}")


async def _measure(persist: bool, calls: int) -> None:
    with tempfile.TemporaryDirectory(dir="/dev/shm") as data_dir:
        options = ["--listen", "127.0.0.1:0", "--data-dir", data_dir, "--log-level", "warning"]
        if not persist:
            options.append("--no-persist-server-checkpoints")
        node = Node(config.parse(options))
        service = CheckpointService(node.checkpoints, node.settings.authorization)
        context: Any = _Context()
        method = wrap(
            node.metrics,
            "/cps.v1.CheckpointService/SectionOverwrite",
            grpc.unary_unary_rpc_method_handler(
                service.SectionOverwrite,
                pb.SectionOverwriteRequest.FromString,
                pb.SectionOverwriteResponse.SerializeToString,
            ),
        )
        version = t.Version(release_code="B", major_version=1)
        session = (
            await service.Initialize(pb.InitializeRequest(version=version), context)
        ).service_handle
        attributes = t.CheckpointCreationAttributes(
            creation_flags=[t.CREATION_FLAG_WR_ACTIVE_REPLICA],
            checkpoint_size=2048,
            max_sections=2,
            max_section_size=1024,
            max_section_id_size=8,
            retention_duration=t.RetentionDuration(forever=True),
        )
        opened = await service.CheckpointOpen(
            pb.CheckpointOpenRequest(
                service_handle=session,
                checkpoint_name="own-cost",
                checkpoint_open_flags=[t.OPEN_FLAG_READ, t.OPEN_FLAG_WRITE, t.OPEN_FLAG_CREATE],
                checkpoint_creation_attributes=attributes,
            ),
            context,
        )
        handle = opened.checkpoint_handle
        section = t.SectionId(id=b"s")
        await service.SectionCreate(
            pb.SectionCreateRequest(
                checkpoint_handle=handle,
                section_creation_attributes=t.SectionCreationAttributes(section_id=section),
            ),
            context,
        )
        raw = pb.SectionOverwriteRequest(
            checkpoint_handle=handle, section_id=section, data_buffer=b"y" * 1024
        ).SerializeToString()
        decode, behaviour = method.request_deserializer, method.unary_unary
        for together in (1, 64):
            commits = node.journal.batches
            began = time.process_time()
            for _ in range(calls // together):
                if together == 1:
                    await behaviour(decode(raw), context)
                else:
                    await asyncio.gather(
                        *(behaviour(decode(raw), context) for _ in range(together))
                    )
            used = time.process_time() - began
            label = "persistent" if persist else "in memory"
            print(
                f"{label:10} {together:2} at once: {used / calls * 1e6:5.1f} µs CPU per call, "
                f"{node.journal.batches - commits} commits",
                flush=True,
            )
        await node.journal.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20000)
    calls = parser.parse_args().calls
    for persist in (False, True):
        asyncio.run(_measure(persist, calls))


if __name__ == "__main__":
    main()
