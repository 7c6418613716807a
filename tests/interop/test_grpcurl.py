"""Drive a `cps-server` process with the real grpcurl binary (reflection only,
no .proto files given to grpcurl)."""

from __future__ import annotations

import base64
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.processes import ServerProcess

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
SERVICE = "cps.v1.CheckpointService"


def grpcurl(server: ServerProcess, *args: str, data: dict[str, Any] | None = None) -> str:
    command = [GRPCURL, "-plaintext"]
    if data is not None:
        command += ["-d", json.dumps(data)]
    command += [server.address, *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise AssertionError(f"{command} failed: {result.stderr}")
    return result.stdout


def call(server: ServerProcess, method: str, data: dict[str, Any]) -> dict[str, Any]:
    return json.loads(grpcurl(server, f"{SERVICE}/{method}", data=data))  # type: ignore[no-any-return]


def test_list_shows_every_service(server: ServerProcess) -> None:
    services = grpcurl(server, "list").split()
    assert SERVICE in services
    assert "grpc.health.v1.Health" in services


def test_describe_lists_every_rpc(server: ServerProcess) -> None:
    described = grpcurl(server, "describe", SERVICE)
    from cps.v1 import checkpoint_service_pb2

    methods = checkpoint_service_pb2.DESCRIPTOR.services_by_name["CheckpointService"].methods
    assert len(methods) == 22  # 19 of seed 3.5, Initialize, Finalize, Callbacks
    for method in methods:
        assert f"rpc {method.name} (" in described, method.name
    assert "stream .cps.v1.CallbacksResponse" in described


def test_health_check(server: ServerProcess) -> None:
    assert json.loads(grpcurl(server, "grpc.health.v1.Health/Check")) == {"status": "SERVING"}
    checked = grpcurl(server, "grpc.health.v1.Health/Check", data={"service": SERVICE})
    assert json.loads(checked) == {"status": "SERVING"}


def test_open_write_read(server: ServerProcess) -> None:
    session = call(server, "Initialize", {"version": {"release_code": "B", "major_version": 1}})
    handle = call(
        server,
        "CheckpointOpen",
        {
            "service_handle": session["service_handle"],
            "checkpoint_name": "grpcurl",
            "checkpoint_open_flags": ["OPEN_FLAG_READ", "OPEN_FLAG_WRITE", "OPEN_FLAG_CREATE"],
            "checkpoint_creation_attributes": {
                "creation_flags": ["CREATION_FLAG_WR_ACTIVE_REPLICA"],
                "checkpoint_size": 4096,
                "max_sections": 4,
                "max_section_size": 1024,
                "max_section_id_size": 16,
                "retention_duration": {"duration": "30s"},
            },
        },
    )["checkpoint_handle"]
    section = {"id": base64.b64encode(b"greeting").decode()}
    call(
        server,
        "SectionCreate",
        {"checkpoint_handle": handle, "section_creation_attributes": {"section_id": section}},
    )
    payload = base64.b64encode(b"hello from grpcurl").decode()
    call(
        server,
        "CheckpointWrite",
        {
            "checkpoint_handle": handle,
            "io_vector": [{"section_id": section, "data_buffer": payload}],
        },
    )
    read = call(
        server,
        "CheckpointRead",
        {"checkpoint_handle": handle, "io_vector": [{"section_id": section}]},
    )
    assert read["io_vector"][0]["data_buffer"] == payload
    assert read["io_vector"][0]["read_size"] == str(len(b"hello from grpcurl"))


def test_errors_show_seed_reason(server: ServerProcess) -> None:
    result = subprocess.run(
        [
            GRPCURL,
            "-plaintext",
            "-d",
            json.dumps({"checkpoint_handle": "42"}),
            server.address,
            f"{SERVICE}/CheckpointClose",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "NotFound" in result.stderr
    assert "CL_CKPT_ERR_INVALID_HANDLE" in result.stderr


def test_sigterm_stops_gracefully() -> None:
    with ServerProcess.start() as process:
        process.popen.send_signal(signal.SIGTERM)
        assert process.popen.wait(timeout=15) == 0
        assert '"msg": "stopped"' in process.log_text()


def test_the_admin_service_by_reflection(server: ServerProcess) -> None:
    admin = "cps.v1.AdminService"
    assert admin in grpcurl(server, "list").split()
    described = grpcurl(server, "describe", admin)
    for method in ("ListNodes", "ListCheckpoints", "GetCheckpoint", "ListSections", "ListSessions"):
        assert f"rpc {method} (" in described, method
    (node,) = json.loads(grpcurl(server, f"{admin}/ListNodes"))["nodes"]
    assert node["state"] == "NODE_STATE_SERVING" and node["role"] == "NODE_ROLE_SINGLE"
    asked = ["-d", '{"checkpoint_name": "absent"}', server.address, f"{admin}/GetCheckpoint"]
    missing = subprocess.run(
        [GRPCURL, "-plaintext", *asked],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert missing.returncode != 0 and "CL_CKPT_ERR_NOT_EXIST" in missing.stderr
