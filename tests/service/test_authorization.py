"""The authorization table (--auth-file, docs/security.md) on a running node
with client certificates made at run time: opens, deletes and library calls
per identity and name prefix; a refusal changes nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cps.server.node import Node
from cps.v1 import checkpoint_service_pb2 as pb
from cps.v1 import library_service_pb2 as lpb
from cps.v1 import library_service_pb2_grpc as lpb_grpc
from cps.v1 import types_pb2 as t
from tests.certs import Authority, Pair
from tests.support import RW, RWC, Client, attributes, running_node, seed_error, sid

TABLE = """
[roles.app]
server = [{ prefix = "app/", permission = "readwrite" }]
library = [{ prefix = "app/", permission = "readwrite" }]

[roles.reader]
server = [{ prefix = "app/", permission = "read" }]
library = [{ prefix = "app/", permission = "read" }]

[identities]
"CN=app-1" = ["app"]
"CN=reader" = ["reader"]
"""

READ = (t.OPEN_FLAG_READ,)


class Running:
    def __init__(self, node: Node, servers: Authority, pairs: dict[str, Pair]) -> None:
        self.node = node
        self.servers = servers
        self.pairs = pairs

    def channel(self, name: str) -> grpc.Channel:
        credentials = grpc.ssl_channel_credentials(
            self.servers.path.read_bytes(), *self.pairs[name].read()
        )
        return grpc.secure_channel(f"127.0.0.1:{self.node.port}", credentials)

    def server_checkpoints(self) -> set[str]:
        return {ref.name for ref in self.node.replicas.by_ref}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    folder = tmp_path_factory.mktemp("authorization")
    servers, clients = Authority(folder, "servers"), Authority(folder, "clients")
    node_pair = servers.issue("node")
    pairs = {name: clients.issue(name) for name in ("app-1", "reader", "stranger")}
    table = folder / "auth.toml"
    table.write_text(TABLE)
    flags = ("--tls-cert", str(node_pair.cert), "--tls-key", str(node_pair.key))
    with running_node(*flags, "--client-ca", str(clients.path), "--auth-file", str(table)) as node:
        yield Running(node, servers, pairs)


def refused(call: Callable[[], object]) -> dict[str, str]:
    """The call fails with the seed's OP_NOT_PERMITTED for an unauthorized name."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    code, reason, metadata = seed_error(caught.value)
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "CL_CKPT_ERR_OP_NOT_PERMITTED")
    assert metadata.get("cause") == "not_authorized"
    return metadata


def test_opens_and_deletes_per_identity_and_prefix(running: Running) -> None:
    with (
        running.channel("app-1") as app_channel,
        running.channel("reader") as reader_channel,
        running.channel("stranger") as stranger_channel,
    ):
        app, reader, stranger = (
            Client(app_channel),
            Client(reader_channel),
            Client(stranger_channel),
        )
        handle = app.open("app/state", attributes(max_sections=4))
        app.create_section(handle, b"s", b"app-1's state")
        # Outside its prefix app-1 may do nothing, and nothing is created.
        refused(lambda: app.open("other/state", attributes()))
        refused(lambda: app.open("ap", flags=READ))
        assert "other/state" not in running.server_checkpoints()

        # The reader may open for READ and read...
        read_only = reader.open("app/state", flags=READ)
        assert reader.read(read_only, b"s") == b"app-1's state"
        # ...and not for WRITE or CREATE, nor delete; the handle it has cannot write.
        refused(lambda: reader.open("app/state", flags=RW))
        refused(lambda: reader.open("app/new", attributes(), flags=RWC))
        refused(
            lambda: reader.stub.CheckpointOpenAsync(
                pb.CheckpointOpenAsyncRequest(
                    service_handle=reader.session,
                    invocation=1,
                    checkpoint_name="app/state",
                    checkpoint_open_flags=RW,
                )
            )
        )
        refused(
            lambda: reader.stub.CheckpointDelete(
                pb.CheckpointDeleteRequest(
                    service_handle=reader.session, checkpoint_name="app/state"
                )
            )
        )
        with pytest.raises(grpc.RpcError) as caught:
            reader.stub.SectionOverwrite(
                pb.SectionOverwriteRequest(
                    checkpoint_handle=read_only, section_id=sid(b"s"), data_buffer=b"no"
                )
            )
        assert seed_error(caught.value)[1] == "CL_CKPT_ERR_OP_NOT_PERMITTED"
        assert "app/new" not in running.server_checkpoints()

        # An identity the table does not name may do nothing at all.
        refused(lambda: stranger.open("app/state", flags=READ))
        refused(
            lambda: stranger.stub.CheckpointDelete(
                pb.CheckpointDeleteRequest(
                    service_handle=stranger.session, checkpoint_name="app/state"
                )
            )
        )
        # The refusal says whom it refused (what to put in the table).
        with pytest.raises(grpc.RpcError) as caught:
            stranger.open("app/state", flags=READ)
        assert "'CN=stranger'" in str(caught.value.details())

        assert app.read(handle, b"s") == b"app-1's state"
        # The owner of the prefix may delete.
        app.stub.CheckpointClose(pb.CheckpointCloseRequest(checkpoint_handle=handle))
        app.stub.CheckpointDelete(
            pb.CheckpointDeleteRequest(service_handle=app.session, checkpoint_name="app/state")
        )


def _library(channel: grpc.Channel) -> tuple[lpb_grpc.LibraryCheckpointServiceStub, int]:
    stub = lpb_grpc.LibraryCheckpointServiceStub(channel)
    handle = stub.LibraryInitialize(lpb.LibraryInitializeRequest()).library_handle
    return stub, handle


def test_library_calls_per_identity_and_prefix(running: Running) -> None:
    with running.channel("app-1") as app_channel, running.channel("reader") as reader_channel:
        app, app_handle = _library(app_channel)
        reader, reader_handle = _library(reader_channel)
        mine: dict[str, Any] = {"library_handle": app_handle, "checkpoint_name": "app/lib"}
        assert app.LibraryCkptCreate(lpb.LibraryCkptCreateRequest(**mine)).created
        app.LibraryCkptDataSetCreate(lpb.LibraryCkptDataSetCreateRequest(**mine, dataset_id=1))
        app.LibraryCkptDataSetWrite(
            lpb.LibraryCkptDataSetWriteRequest(**mine, dataset_id=1, data=b"v1")
        )
        app.LibraryCkptElementCreate(lpb.LibraryCkptElementCreateRequest(**mine, dataset_id=1))
        app.LibraryCkptElementWrite(
            lpb.LibraryCkptElementWriteRequest(**mine, dataset_id=1, element_id=b"e", data=b"1")
        )
        # Outside its prefix: nothing is created.
        elsewhere: dict[str, Any] = {"library_handle": app_handle, "checkpoint_name": "other/lib"}
        refused(lambda: app.LibraryCkptCreate(lpb.LibraryCkptCreateRequest(**elsewhere)))
        refused(lambda: app.LibraryDoesCkptExist(lpb.LibraryDoesCkptExistRequest(**elsewhere)))
        assert "other/lib" not in running.node.library.checkpoints

        # The reader reads...
        theirs: dict[str, Any] = {"library_handle": reader_handle, "checkpoint_name": "app/lib"}
        assert reader.LibraryDoesCkptExist(lpb.LibraryDoesCkptExistRequest(**theirs)).exists
        assert reader.LibraryDoesDatasetExist(
            lpb.LibraryDoesDatasetExistRequest(**theirs, dataset_id=1)
        ).exists
        read = reader.LibraryCkptDataSetRead(
            lpb.LibraryCkptDataSetReadRequest(**theirs, dataset_id=1)
        )
        assert read.data == b"v1"
        # ...and every change is refused.
        writes: list[Callable[[], object]] = [
            lambda: reader.LibraryCkptCreate(
                lpb.LibraryCkptCreateRequest(library_handle=reader_handle, checkpoint_name="app/x")
            ),
            lambda: reader.LibraryCkptDelete(lpb.LibraryCkptDeleteRequest(**theirs)),
            lambda: reader.LibraryCkptDataSetCreate(
                lpb.LibraryCkptDataSetCreateRequest(**theirs, dataset_id=2)
            ),
            lambda: reader.LibraryCkptDataSetDelete(
                lpb.LibraryCkptDataSetDeleteRequest(**theirs, dataset_id=1)
            ),
            lambda: reader.LibraryCkptDataSetWrite(
                lpb.LibraryCkptDataSetWriteRequest(**theirs, dataset_id=1, data=b"reader")
            ),
            lambda: reader.LibraryCkptElementCreate(
                lpb.LibraryCkptElementCreateRequest(**theirs, dataset_id=1)
            ),
            lambda: reader.LibraryCkptElementWrite(
                lpb.LibraryCkptElementWriteRequest(
                    **theirs, dataset_id=1, element_id=b"e", data=b"reader"
                )
            ),
        ]
        for call in writes:
            refused(call)
        # Nothing changed.
        assert set(running.node.library.checkpoints) >= {"app/lib"}
        assert "app/x" not in running.node.library.checkpoints
        after = app.LibraryCkptDataSetRead(lpb.LibraryCkptDataSetReadRequest(**mine, dataset_id=1))
        assert after.data == b"v1"
        assert [(e.element_id, e.data) for e in after.elements] == [(b"e", b"1")]
        assert not app.LibraryDoesDatasetExist(
            lpb.LibraryDoesDatasetExistRequest(**mine, dataset_id=2)
        ).exists
        app.LibraryCkptDelete(lpb.LibraryCkptDeleteRequest(**mine))


def test_a_stranger_cannot_use_the_library(running: Running) -> None:
    with running.channel("stranger") as channel:
        stranger, handle = _library(channel)  # a handle is no access to any name
        where: dict[str, Any] = {"library_handle": handle, "checkpoint_name": "app/lib"}
        refused(lambda: stranger.LibraryDoesCkptExist(lpb.LibraryDoesCkptExistRequest(**where)))
        refused(lambda: stranger.LibraryCkptCreate(lpb.LibraryCkptCreateRequest(**where)))
        stranger.LibraryFinalize(lpb.LibraryFinalizeRequest(library_handle=handle))


def test_no_table_without_client_certificates(tmp_path: Path) -> None:
    """--auth-file needs --client-ca: the node does not start without it."""
    from cps.server.config import ConfigError, parse

    table = tmp_path / "auth.toml"
    table.write_text(TABLE)
    with pytest.raises(ConfigError, match="needs client_ca"):
        parse(["--auth-file", str(table)], {})
