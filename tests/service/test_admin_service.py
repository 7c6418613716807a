"""AdminService (the management information model) on a real single node:
nodes, checkpoints (paginated, by prefix), one checkpoint's details,
sections, and sessions that only their owner sees."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from cps.server.node import Node
from cps.v1 import admin_service_pb2 as pb
from cps.v1 import admin_service_pb2_grpc as pb_grpc
from cps.v1 import types_pb2 as t
from tests.certs import Authority
from tests.support import RW, Client, attributes, running_node, seed_error

# node and channel: tests/conftest.py


@pytest.fixture()
def admin(channel: grpc.Channel) -> pb_grpc.AdminServiceStub:
    return pb_grpc.AdminServiceStub(channel)


def test_a_single_node_lists_itself(node: Node, admin: pb_grpc.AdminServiceStub) -> None:
    (me,) = admin.ListNodes(pb.ListNodesRequest()).nodes
    assert me.answering and me.name == node.me.name and me.incarnation == node.me.incarnation
    assert me.address == node.advertise
    assert me.state == pb.NODE_STATE_SERVING
    assert me.role == pb.NODE_ROLE_SINGLE
    assert me.lease_id == 0 and not me.HasField("lease_remaining")
    assert me.version


def test_checkpoints_by_prefix_a_page_at_a_time(
    channel: grpc.Channel, admin: pb_grpc.AdminServiceStub
) -> None:
    client = Client(channel)
    for index in range(5):
        client.open(f"page-{index}", attributes(max_sections=2))
    client.open("other", attributes(max_sections=2))
    names: list[str] = []
    token = ""
    pages = 0
    while True:
        response = admin.ListCheckpoints(
            pb.ListCheckpointsRequest(name_prefix="page-", page_size=2, page_token=token)
        )
        names += [c.checkpoint_name for c in response.checkpoints]
        pages += 1
        token = response.next_page_token
        if not token:
            break
    assert names == [f"page-{i}" for i in range(5)]
    assert pages == 3
    everything = admin.ListCheckpoints(pb.ListCheckpointsRequest()).checkpoints
    assert {"other", "page-0"} <= {c.checkpoint_name for c in everything}


def test_one_checkpoint_in_detail(channel: grpc.Channel, admin: pb_grpc.AdminServiceStub) -> None:
    client = Client(channel)
    handle = client.open("detail", attributes(max_sections=4, max_section_size=100))
    client.create_section(handle, b"a", b"12345")
    client.create_section(handle, b"b", b"123")
    info = admin.GetCheckpoint(pb.GetCheckpointRequest(checkpoint_name="detail")).checkpoint
    assert info.checkpoint_name == "detail"
    assert info.number_of_sections == 2 and info.memory_used == 8
    assert info.source == pb.DETAIL_SOURCE_ACTIVE_REPLICA
    assert info.checkpoint_creation_attributes.max_sections == 4
    assert list(info.checkpoint_creation_attributes.creation_flags) == [
        t.CREATION_FLAG_WR_ACTIVE_REPLICA
    ]
    assert info.open_handles == 1 and info.epoch == 1
    (replica,) = info.replicas
    assert replica.active and replica.in_sync and replica.node == info.active_node
    assert replica.lag == 0 and replica.applied_seq >= 3  # created, two sections


def test_an_unknown_checkpoint_is_not_found(admin: pb_grpc.AdminServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        admin.GetCheckpoint(pb.GetCheckpointRequest(checkpoint_name="nobody"))
    code, reason, _ = seed_error(caught.value)
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "CL_CKPT_ERR_NOT_EXIST")
    with pytest.raises(grpc.RpcError) as caught:
        admin.ListSections(pb.ListSectionsRequest(checkpoint_name="nobody"))
    code, reason, _ = seed_error(caught.value)
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "CL_CKPT_ERR_NOT_EXIST")


def test_sections_a_page_at_a_time(channel: grpc.Channel, admin: pb_grpc.AdminServiceStub) -> None:
    client = Client(channel)
    handle = client.open("many-sections", attributes(max_sections=8))
    for section in (b"c", b"a", b"\xff\x00", b"b"):
        client.create_section(handle, section, section * 2)
    seen: list[bytes] = []
    token = ""
    while True:
        response = admin.ListSections(
            pb.ListSectionsRequest(checkpoint_name="many-sections", page_size=3, page_token=token)
        )
        assert response.source == pb.DETAIL_SOURCE_ACTIVE_REPLICA
        seen += [d.section_id.id for d in response.sections]
        token = response.next_page_token
        if not token:
            break
    assert seen == [b"a", b"b", b"c", b"\xff\x00"]
    bad = pb.ListSectionsRequest(checkpoint_name="many-sections", page_token="not hex")
    with pytest.raises(grpc.RpcError) as caught:
        admin.ListSections(bad)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_sessions_with_their_handles(
    channel: grpc.Channel, admin: pb_grpc.AdminServiceStub
) -> None:
    client = Client(channel)
    handle = client.open("sessions-demo", attributes(max_sections=2))
    reader = client.open("sessions-demo", flags=RW)
    sessions = {s.service_handle: s for s in admin.ListSessions(pb.ListSessionsRequest()).sessions}
    mine = sessions[client.session]
    assert mine.identity == "" and mine.queue_depth == 0 and not mine.attached
    handles = {h.checkpoint_handle: h for h in mine.handles}
    assert set(handles) == {handle, reader}
    assert handles[handle].checkpoint_name == "sessions-demo"
    assert list(handles[reader].open_flags) == [t.OPEN_FLAG_READ, t.OPEN_FLAG_WRITE]


def test_a_caller_sees_only_its_own_sessions(tmp_path: Path) -> None:
    servers, clients = Authority(tmp_path, "servers"), Authority(tmp_path, "clients")
    pair = servers.issue("node")
    flags = ("--tls-cert", str(pair.cert), "--tls-key", str(pair.key))
    one, two = clients.issue("app-1"), clients.issue("app-2")
    with running_node(*flags, "--client-ca", str(clients.path)) as node:
        target = f"127.0.0.1:{node.port}"
        ca = servers.path.read_bytes()

        def credentials(app: tuple[bytes, bytes]) -> grpc.ChannelCredentials:
            return grpc.ssl_channel_credentials(ca, *app)

        with (
            grpc.secure_channel(target, credentials(one.read())) as first,
            grpc.secure_channel(target, credentials(two.read())) as second,
        ):
            a, b = Client(first), Client(second)
            a.open("owned-by-1", attributes(max_sections=2))
            seen_by_1 = pb_grpc.AdminServiceStub(first).ListSessions(pb.ListSessionsRequest())
            seen_by_2 = pb_grpc.AdminServiceStub(second).ListSessions(pb.ListSessionsRequest())
            assert [s.service_handle for s in seen_by_1.sessions] == [a.session]
            assert "app-1" in seen_by_1.sessions[0].identity
            assert [s.service_handle for s in seen_by_2.sessions] == [b.session]
            # Every authenticated caller sees the checkpoint list.
            listed = pb_grpc.AdminServiceStub(second).ListCheckpoints(pb.ListCheckpointsRequest())
            assert [c.checkpoint_name for c in listed.checkpoints] == ["owned-by-1"]


def test_with_an_authorization_table_a_caller_sees_what_it_may_read(tmp_path: Path) -> None:
    servers, clients = Authority(tmp_path, "servers"), Authority(tmp_path, "clients")
    pair = servers.issue("node")
    table = tmp_path / "auth.toml"
    table.write_text(
        '[roles.app]\nserver = [{ prefix = "app/", permission = "readwrite" }]\n'
        '[roles.all]\nserver = [{ prefix = "", permission = "readwrite" }]\n'
        '[identities]\n"CN=app-1" = ["app"]\n"CN=admin" = ["all"]\n'
    )
    flags = ("--tls-cert", str(pair.cert), "--tls-key", str(pair.key), "--auth-file", str(table))
    app, operator = clients.issue("app-1"), clients.issue("admin")
    with running_node(*flags, "--client-ca", str(clients.path)) as node:
        target = f"127.0.0.1:{node.port}"
        ca = servers.path.read_bytes()
        with (
            grpc.secure_channel(target, grpc.ssl_channel_credentials(ca, *app.read())) as mine,
            grpc.secure_channel(target, grpc.ssl_channel_credentials(ca, *operator.read())) as op,
        ):
            Client(op).open("other/x", attributes(max_sections=2))
            Client(mine).open("app/x", attributes(max_sections=2))
            as_app, as_operator = pb_grpc.AdminServiceStub(mine), pb_grpc.AdminServiceStub(op)
            listed = as_app.ListCheckpoints(pb.ListCheckpointsRequest()).checkpoints
            assert [c.checkpoint_name for c in listed] == ["app/x"]
            everything = as_operator.ListCheckpoints(pb.ListCheckpointsRequest()).checkpoints
            assert [c.checkpoint_name for c in everything] == ["app/x", "other/x"]
            with pytest.raises(grpc.RpcError) as caught:
                as_app.GetCheckpoint(pb.GetCheckpointRequest(checkpoint_name="other/x"))
            assert seed_error(caught.value)[1] == "CL_CKPT_ERR_OP_NOT_PERMITTED"
            assert len(as_app.ListNodes(pb.ListNodesRequest()).nodes) == 1
