"""`cpsctl` as a subprocess against a real `cps-server` process: every
command, as a table and as JSON, and its exit codes (0 done, 1 the seed's
error, 2 usage, 3 unreachable)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.certs import Authority
from tests.cli.support import as_json, cpsctl, dead_address, ok
from tests.processes import ServerProcess
from tests.support import Client, attributes


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess.start() as process:
        with grpc.insecure_channel(process.address) as channel:
            client = Client(channel)
            handle = client.open("cli-demo", attributes(max_sections=4, max_section_size=64))
            client.create_section(handle, b"greeting", b"hello")
            client.create_section(handle, b"binary", b"\x00\xff\x10")
            client.open("cli-other", attributes(max_sections=1))
        yield process


def test_nodes(server: ServerProcess) -> None:
    table = ok(server.address, "nodes")
    assert "SINGLE" in table and "SERVING" in table and server.address in table
    (node,) = as_json(server.address, "nodes")
    assert node["answering"] and node["role"] == "SINGLE" and node["state"] == "SERVING"
    assert node["address"] == server.address and node["replicas_held"] == 2


def test_ls(server: ServerProcess) -> None:
    table = ok(server.address, "ls")
    assert "cli-demo" in table and "cli-other" in table and "NAME" in table
    listed = as_json(server.address, "ls", "cli-d")
    assert [c["name"] for c in listed] == ["cli-demo"]
    (demo,) = listed
    assert demo["mode"] == "async" and demo["sections"] == 2 and demo["memory_used"] == 8
    assert demo["source"] == "active_replica" and demo["active"] == demo["in_sync"][0]
    assert as_json(server.address, "ls", "nothing-like-this") == []


def test_status(server: ServerProcess) -> None:
    table = ok(server.address, "status", "cli-demo")
    assert "2 of 4" in table and "REPLICA" in table
    info = as_json(server.address, "status", "cli-demo")
    assert info["name"] == "cli-demo" and info["max_sections"] == 4
    assert info["retention_seconds"] == "forever"
    (replica,) = info["replicas"]
    assert replica["active"] and replica["in_sync"] and replica["lag"] == 0


def test_sections(server: ServerProcess) -> None:
    table = ok(server.address, "sections", "cli-demo")
    assert "greeting" in table and "binary" in table and "VALID" in table
    sections = as_json(server.address, "sections", "cli-demo")
    assert [s["id_hex"] for s in sections] == [b"binary".hex(), b"greeting".hex()]
    assert [s["size"] for s in sections] == [3, 5]


def test_read_text_hex_and_raw(server: ServerProcess, tmp_path: Path) -> None:
    assert ok(server.address, "read", "cli-demo", "greeting") == "hello\n"
    assert ok(server.address, "read", "cli-demo", "binary") == "00ff10\n"
    assert ok(server.address, "read", "--hex", "cli-demo", "greeting") == b"hello".hex() + "\n"
    assert ok(server.address, "read", "--id-hex", "cli-demo", b"greeting".hex()) == "hello\n"
    target = tmp_path / "out.bin"
    ok(server.address, "read", "cli-demo", "binary", "--raw", str(target))
    assert target.read_bytes() == b"\x00\xff\x10"
    read = as_json(server.address, "read", "cli-demo", "binary")
    assert read == {
        "checkpoint": "cli-demo",
        "section": "binary",
        "section_hex": b"binary".hex(),
        "size": 3,
        "hex": "00ff10",
    }
    assert as_json(server.address, "read", "cli-demo", "greeting")["text"] == "hello"


def test_write_a_value_and_a_file(server: ServerProcess, tmp_path: Path) -> None:
    assert "wrote 5 bytes" in ok(server.address, "write", "cli-other", "", "first")
    assert ok(server.address, "read", "cli-other", "") == "first\n"
    source = tmp_path / "in.bin"
    source.write_bytes(b"\x01\x02")
    written = as_json(server.address, "write", "cli-other", "", "--file", str(source))
    assert written["written"] == 2
    assert ok(server.address, "read", "cli-other", "") == "0102\n"
    piped = cpsctl(server.address, "write", "cli-other", "", "--file", "-", stdin=b"piped")
    assert piped.returncode == 0, piped.stderr
    assert ok(server.address, "read", "cli-other", "") == "piped\n"


def test_the_seed_error_is_exit_code_1(server: ServerProcess) -> None:
    for args in (
        ("status", "nobody"),
        ("sections", "nobody"),
        ("read", "nobody", "s"),
        ("write", "nobody", "s", "v"),
    ):
        result = cpsctl(server.address, *args)
        assert result.returncode == 1, (args, result.stderr)
        assert "CL_CKPT_ERR_NOT_EXIST" in result.stderr, result.stderr
    missing_section = cpsctl(server.address, "write", "cli-demo", "absent", "v")
    assert missing_section.returncode == 1 and "CL_CKPT_ERR_NOT_EXIST" in missing_section.stderr


def test_bad_usage_is_exit_code_2(server: ServerProcess) -> None:
    for args in (
        (),
        ("no-such-command",),
        ("status",),
        ("write", "cli-other", ""),
        ("write", "cli-other", "", "v", "--file", "f"),
        ("read", "cli-demo", "s", "--hex", "--raw", "f"),
        ("read", "--id-hex", "cli-demo", "not hex"),
        ("--cert", "c.pem", "nodes"),
    ):
        result = cpsctl(server.address, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert result.stderr


def test_unreachable_is_exit_code_3_and_the_first_that_answers_is_used(
    server: ServerProcess,
) -> None:
    dead = dead_address()
    for command in (("nodes",), ("ls",), ("read", "cli-demo", "greeting")):
        result = cpsctl(dead, *command)
        assert result.returncode == 3, result.stderr
        assert "no endpoint answers" in result.stderr
    both = f"{dead},{server.address}"
    assert ok(both, "read", "cli-demo", "greeting") == "hello\n"
    assert f"answered: {server.address}" in ok(both, "nodes")


def test_health(server: ServerProcess) -> None:
    table = ok(server.address, "health")
    assert "SERVING" in table
    dead = dead_address()
    partly = cpsctl(f"{server.address},{dead}", "--json", "health")
    assert partly.returncode == 1
    rows = {row["endpoint"]: row["health"] for row in json.loads(partly.stdout)}
    assert rows == {server.address: "SERVING", dead: "UNREACHABLE"}
    assert cpsctl(dead, "health").returncode == 3


def test_tls_with_a_client_certificate(tmp_path: Path) -> None:
    servers, clients = Authority(tmp_path, "servers"), Authority(tmp_path, "clients")
    node, app = servers.issue("node"), clients.issue("app")
    flags = ("--tls-cert", str(node.cert), "--tls-key", str(node.key))
    with ServerProcess.start(*flags, "--client-ca", str(clients.path)) as process:
        tls = ("--cacert", str(servers.path), "--cert", str(app.cert), "--key", str(app.key))
        named = (*tls, "--server-name", "localhost")
        (me,) = as_json(process.address, *named, "nodes")
        assert me["state"] == "SERVING"
        assert as_json(process.address, *tls, "ls") == []
        health = cpsctl(process.address, *tls, "health")
        assert health.returncode == 0, health.stdout
        # Without a client certificate, or in plaintext, the handshake fails.
        assert cpsctl(process.address, "--cacert", str(servers.path), "ls").returncode == 3
        assert cpsctl(process.address, "ls").returncode == 3
