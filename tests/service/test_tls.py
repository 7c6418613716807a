"""A single node with TLS for its clients (--tls-cert/--tls-key) and with
client certificates required (--client-ca), through the Python client.
Certificates are made at run time (tests/certs.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from cps.client import CreationAttributes, Session
from cps.client.errors import TryAgainError
from cps.v1 import checkpoint_service_pb2 as pb
from cps.v1 import library_service_pb2 as lpb
from cps.v1 import library_service_pb2_grpc as lpb_grpc
from cps.v1 import types_pb2 as t
from tests.certs import Authority
from tests.support import Client, attributes, running_node, seed_error, sid


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
        with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as refused:
            Client(channel)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


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


def test_sessions_and_library_handles_answer_only_to_their_owner(tmp_path: Path) -> None:
    servers, clients = Authority(tmp_path, "servers"), Authority(tmp_path, "clients")
    node_pair = servers.issue("node")
    owner, other = clients.issue("app-1"), clients.issue("app-2")
    flags = ("--tls-cert", str(node_pair.cert), "--tls-key", str(node_pair.key))
    with running_node(*flags, "--client-ca", str(clients.path)) as node:
        target = f"127.0.0.1:{node.port}"
        with (
            grpc.secure_channel(target, _credentials(servers, owner.read())) as mine,
            grpc.secure_channel(target, _credentials(servers, other.read())) as theirs,
        ):
            a = Client(mine)
            handle = a.open("owned", attributes(max_sections=2))
            a.create_section(handle, b"s", b"a's state")
            library = lpb_grpc.LibraryCheckpointServiceStub(mine)
            library_handle = library.LibraryInitialize(
                lpb.LibraryInitializeRequest()
            ).library_handle
            b = Client(theirs)
            intruder = b.stub
            refused: list[Callable[[], object]] = [
                lambda: intruder.CheckpointRead(
                    pb.CheckpointReadRequest(
                        checkpoint_handle=handle,
                        io_vector=[t.IOVectorElement(section_id=sid(b"s"), data_size=9)],
                    )
                ),
                lambda: intruder.SectionOverwrite(
                    pb.SectionOverwriteRequest(
                        checkpoint_handle=handle, section_id=sid(b"s"), data_buffer=b"b was here"
                    )
                ),
                lambda: intruder.CheckpointClose(
                    pb.CheckpointCloseRequest(checkpoint_handle=handle)
                ),
                lambda: intruder.CheckpointOpen(
                    pb.CheckpointOpenRequest(
                        service_handle=a.session,
                        checkpoint_name="owned",
                        checkpoint_open_flags=[t.OPEN_FLAG_READ],
                    )
                ),
                lambda: intruder.Finalize(pb.FinalizeRequest(service_handle=a.session)),
                lambda: next(
                    iter(intruder.Callbacks(pb.CallbacksRequest(service_handle=a.session)))
                ),
            ]
            # The seed's errors for a handle that is not there: another
            # identity's handles look exactly like that.
            expected = ["CL_CKPT_ERR_INVALID_HANDLE"] * 3 + ["CL_CKPT_ERR_BAD_HANDLE"] * 3
            for call, reason in zip(refused, expected, strict=True):
                with pytest.raises(grpc.RpcError) as error:
                    call()
                assert seed_error(error.value)[1] == reason
            their_library = lpb_grpc.LibraryCheckpointServiceStub(theirs)
            with pytest.raises(grpc.RpcError) as error:
                their_library.LibraryCkptCreate(
                    lpb.LibraryCkptCreateRequest(library_handle=library_handle, checkpoint_name="x")
                )
            assert seed_error(error.value)[1] == "CL_ERR_INVALID_HANDLE"
            # The owner's session, handle and library handle are untouched.
            assert a.read(handle, b"s") == b"a's state"
            library.LibraryCkptCreate(
                lpb.LibraryCkptCreateRequest(library_handle=library_handle, checkpoint_name="x")
            )
