"""A single node with TLS for its clients (--tls-cert/--tls-key) and with
client certificates required (--client-ca), through the Python client.
Certificates are made at run time (tests/certs.py)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from cps.client import CreationAttributes, Session
from cps.client.errors import TryAgainError
from tests.certs import Authority
from tests.support import running_node


def _credentials(ca: Authority, pair: tuple[bytes, bytes] | None = None) -> grpc.ChannelCredentials:
    key, cert = pair or (None, None)
    return grpc.ssl_channel_credentials(ca.path.read_bytes(), key, cert)


def test_a_tls_node_serves_the_python_client(tmp_path: Path) -> None:
    servers = Authority(tmp_path, "servers")
    node_pair = servers.issue("node")
    with running_node("--tls-cert", str(node_pair.cert), "--tls-key", str(node_pair.key)) as node:
        target = f"127.0.0.1:{node.port}"
        credentials = _credentials(servers)
        with Session.connect(target, credentials=credentials, timeout=10) as session:
            checkpoint = session.open("tls-demo", CreationAttributes(max_sections=2))
            section = checkpoint.section_create(b"s", b"over tls")
            assert checkpoint.read(section) == b"over tls"
        # A plaintext client does not get through.
        with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError):
            grpc.channel_ready_future(channel).result(timeout=2)
            raise AssertionError("a plaintext channel connected to a TLS port")


def test_client_certificates_are_required_with_a_client_ca(tmp_path: Path) -> None:
    servers, clients = Authority(tmp_path, "servers"), Authority(tmp_path, "clients")
    node_pair, app = servers.issue("node"), clients.issue("app")
    stranger = Authority(tmp_path, "stranger").issue("app")
    flags = ("--tls-cert", str(node_pair.cert), "--tls-key", str(node_pair.key))
    with running_node(*flags, "--client-ca", str(clients.path)) as node:
        target = f"127.0.0.1:{node.port}"
        with Session.connect(target, credentials=_credentials(servers, app.read()), timeout=10):
            pass
        for refused in (None, stranger.read()):
            # The handshake fails: the node is unreachable to this client.
            with pytest.raises(TryAgainError):
                Session.connect(target, credentials=_credentials(servers, refused), timeout=3)
