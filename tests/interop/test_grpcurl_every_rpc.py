"""grpcurl calls every RPC of both services, through reflection alone: a new
RPC without a call here fails the coverage check at the end."""

from __future__ import annotations

import base64
import json
import subprocess
from typing import Any

from cps.v1 import checkpoint_service_pb2, library_service_pb2
from tests.interop.test_grpcurl import GRPCURL, grpcurl
from tests.processes import ServerProcess

CKPT = "cps.v1.CheckpointService"
LIB = "cps.v1.LibraryCheckpointService"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Caller:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.called: set[str] = set()

    def __call__(self, service: str, method: str, data: dict[str, Any]) -> dict[str, Any]:
        self.called.add(f"{service}/{method}")
        return json.loads(grpcurl(self.server, f"{service}/{method}", data=data))  # type: ignore[no-any-return]


def attributes(*flags: str) -> dict[str, Any]:
    return {
        "creation_flags": list(flags) or ["CREATION_FLAG_WR_ACTIVE_REPLICA"],
        "checkpoint_size": 4096,
        "max_sections": 4,
        "max_section_size": 1024,
        "max_section_id_size": 8,
        "retention_duration": {"duration": "60s"},
    }


RWC = ["OPEN_FLAG_READ", "OPEN_FLAG_WRITE", "OPEN_FLAG_CREATE"]


def test_grpcurl_calls_every_rpc(server: ServerProcess) -> None:
    call = Caller(server)
    session = call(CKPT, "Initialize", {"version": {"release_code": "B", "major_version": 1}})
    sh = session["service_handle"]
    # The session's callback stream, read by a grpcurl of its own until Finalize ends it.
    stream = subprocess.Popen(
        [
            GRPCURL,
            "-plaintext",
            "-max-time",
            "30",
            "-d",
            json.dumps({"service_handle": sh}),
            server.address,
            f"{CKPT}/Callbacks",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    call.called.add(f"{CKPT}/Callbacks")
    open_request = {"service_handle": sh, "checkpoint_name": "every", "checkpoint_open_flags": RWC}
    ch = call(
        CKPT, "CheckpointOpen", {**open_request, "checkpoint_creation_attributes": attributes()}
    )["checkpoint_handle"]
    call(
        CKPT,
        "CheckpointOpenAsync",
        {**open_request, "invocation": "7", "checkpoint_creation_attributes": attributes()},
    )
    section = {"id": b64(b"s")}
    call(
        CKPT,
        "SectionCreate",
        {"checkpoint_handle": ch, "section_creation_attributes": {"section_id": section}},
    )
    call(
        CKPT,
        "SectionExpirationTimeSet",
        {"checkpoint_handle": ch, "section_id": section, "expiration_time": {"never": True}},
    )
    call(
        CKPT,
        "CheckpointWrite",
        {
            "checkpoint_handle": ch,
            "io_vector": [{"section_id": section, "data_buffer": b64(b"hello")}],
        },
    )
    call(
        CKPT,
        "SectionOverwrite",
        {"checkpoint_handle": ch, "section_id": section, "data_buffer": b64(b"world")},
    )
    read = call(
        CKPT, "CheckpointRead", {"checkpoint_handle": ch, "io_vector": [{"section_id": section}]}
    )
    assert read["io_vector"][0]["data_buffer"] == b64(b"world")
    status = call(CKPT, "CheckpointStatusGet", {"checkpoint_handle": ch})
    assert status["checkpoint_status"]["number_of_sections"] == 1
    ih = call(
        CKPT,
        "SectionIterationInitialize",
        {"checkpoint_handle": ch, "sections_chosen": "SECTIONS_CHOSEN_ANY"},
    )["section_iteration_handle"]
    step = call(CKPT, "SectionIterationNext", {"section_iteration_handle": ih})
    assert step["section_descriptor"]["section_id"] == section
    call(CKPT, "SectionIterationFinalize", {"section_iteration_handle": ih})
    call(
        CKPT,
        "CheckpointRetentionDurationSet",
        {"checkpoint_handle": ch, "retention_duration": {"forever": True}},
    )
    call(CKPT, "CheckpointSynchronize", {"checkpoint_handle": ch})
    call(CKPT, "CheckpointSynchronizeAsync", {"checkpoint_handle": ch, "invocation": "8"})
    call(CKPT, "ImmediateConsumptionRegister", {"checkpoint_handle": ch})
    call(CKPT, "SectionDelete", {"checkpoint_handle": ch, "section_id": section})
    collocated = call(
        CKPT,
        "CheckpointOpen",
        {
            **open_request,
            "checkpoint_name": "every-collocated",
            "checkpoint_creation_attributes": attributes(
                "CREATION_FLAG_WR_ACTIVE_REPLICA", "CREATION_FLAG_CHECKPOINT_COLLOCATED"
            ),
        },
    )["checkpoint_handle"]
    call(CKPT, "ActiveReplicaSet", {"checkpoint_handle": collocated})
    call(CKPT, "CheckpointClose", {"checkpoint_handle": ch})
    call(CKPT, "CheckpointDelete", {"service_handle": sh, "checkpoint_name": "every"})
    call(CKPT, "Finalize", {"service_handle": sh})
    output, errors = stream.communicate(timeout=30)
    assert stream.returncode == 0, errors
    assert '"invocation": "7"' in output and '"invocation": "8"' in output
    assert '"SECTION_CHANGE_DELETED"' in output  # notified before the handle closed

    lh = call(LIB, "LibraryInitialize", {})["library_handle"]
    name = {"library_handle": lh, "checkpoint_name": "every-lib"}
    ds = {**name, "dataset_id": 1}
    call(LIB, "LibraryCkptCreate", name)
    assert call(LIB, "LibraryDoesCkptExist", name)["exists"]
    call(LIB, "LibraryCkptDataSetCreate", {**ds, "group_id": 2, "order": 3})
    assert call(LIB, "LibraryDoesDatasetExist", ds)["exists"]
    call(LIB, "LibraryCkptDataSetWrite", {**ds, "data": b64(b"state")})
    call(LIB, "LibraryCkptElementCreate", ds)
    call(LIB, "LibraryCkptElementWrite", {**ds, "element_id": b64(b"e"), "data": b64(b"v")})
    dataset = call(LIB, "LibraryCkptDataSetRead", ds)
    assert dataset["data"] == b64(b"state") and dataset["elements"][0]["data"] == b64(b"v")
    call(LIB, "LibraryCkptDataSetDelete", ds)
    call(LIB, "LibraryCkptDelete", name)
    call(LIB, "LibraryFinalize", {"library_handle": lh})

    every = {
        f"{service.full_name}/{method.name}"
        for module in (checkpoint_service_pb2, library_service_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert call.called == every
