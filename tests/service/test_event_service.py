"""EventService (service notifications) on a real single node: events of
creation, unlink, deletion, expiry, retention and limits; resuming after a
position; filters; a slow subscriber that stays bounded and is told what it
lost."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import pytest

from cps.server.node import Node
from cps.server.storage.sqlite_store import Statement
from cps.v1 import checkpoint_service_pb2 as cpb
from cps.v1 import event_service_pb2 as pb
from cps.v1 import event_service_pb2_grpc as pb_grpc
from cps.v1 import types_pb2 as t
from tests.certs import Authority
from tests.support import Client, attributes, running_node, sid

BACKLOG = 50


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    with running_node("--max-event-backlog", str(BACKLOG), "--max-sessions", "100") as running:
        yield running


# channel: tests/conftest.py (on this module's node)


@pytest.fixture()
def events(channel: grpc.Channel) -> pb_grpc.EventServiceStub:
    return pb_grpc.EventServiceStub(channel)


def collect(
    stub: pb_grpc.EventServiceStub,
    request: pb.WatchRequest,
    until: int,
    timeout: float = 5.0,
) -> tuple[list[pb.WatchResponse], list[pb.ServiceEvent]]:
    """Messages and events of a Watch until ``until`` events came (or the
    timeout: the stream is cancelled either way)."""
    messages: list[pb.WatchResponse] = []
    got: list[pb.ServiceEvent] = []
    stream = stub.Watch(request)
    timer = threading.Timer(timeout, stream.cancel)
    timer.start()
    try:
        for message in stream:
            messages.append(message)
            got.extend(message.events)
            if len(got) >= until:
                break
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.CANCELLED, error
    finally:
        timer.cancel()
        stream.cancel()
    return messages, got


def newest(node: Node) -> int:
    return node.events.position


def test_create_unlink_delete_are_reported(
    node: Node, channel: grpc.Channel, events: pb_grpc.EventServiceStub
) -> None:
    start = newest(node)
    client = Client(channel)
    handle = client.open("ev-life")
    client.stub.CheckpointDelete(
        cpb.CheckpointDeleteRequest(service_handle=client.session, checkpoint_name="ev-life")
    )
    client.stub.CheckpointClose(cpb.CheckpointCloseRequest(checkpoint_handle=handle))
    messages, got = collect(
        events, pb.WatchRequest(after_position=start, checkpoint_names=["ev-life"]), 3
    )
    assert messages[0].node == node.me.name
    assert messages[0].incarnation == node.me.incarnation
    assert [e.kind for e in got] == [
        pb.EVENT_KIND_CHECKPOINT_CREATED,
        pb.EVENT_KIND_CHECKPOINT_UNLINKED,
        pb.EVENT_KIND_CHECKPOINT_DELETED,
    ]
    assert all(e.checkpoint_name == "ev-life" for e in got)
    assert all(e.position > start for e in got)
    assert [e.position for e in got] == sorted(e.position for e in got)
    incarnations = {e.checkpoint_event.checkpoint_incarnation for e in got}
    assert len(incarnations) == 1 and 0 not in incarnations
    assert abs(got[0].time.ToNanoseconds() - time.time_ns()) < 60 * 10**9


def test_section_expiry_and_retention_are_reported(
    node: Node, channel: grpc.Channel, events: pb_grpc.EventServiceStub
) -> None:
    start = newest(node)
    client = Client(channel)
    retention = t.RetentionDuration()
    retention.duration.FromMilliseconds(300)
    handle = client.open("ev-expiry", attributes(retention=retention))
    soon = t.ExpirationTime()
    soon.at.FromNanoseconds(time.time_ns() + 100_000_000)
    client.create_section(handle, b"brief", b"x", expiration_time=soon)
    time.sleep(0.4)
    client.stub.CheckpointClose(cpb.CheckpointCloseRequest(checkpoint_handle=handle))
    _, got = collect(
        events, pb.WatchRequest(after_position=start, checkpoint_names=["ev-expiry"]), 4
    )
    kinds = [e.kind for e in got]
    assert kinds == [
        pb.EVENT_KIND_CHECKPOINT_CREATED,
        pb.EVENT_KIND_SECTION_EXPIRED,
        pb.EVENT_KIND_RETENTION_EXPIRED,
        pb.EVENT_KIND_CHECKPOINT_DELETED,
    ], got
    assert got[1].section_event.section_id == b"brief"


def test_limits_reached_are_reported(
    node: Node, channel: grpc.Channel, events: pb_grpc.EventServiceStub
) -> None:
    start = newest(node)
    client = Client(channel)
    handle = client.open("ev-full", attributes(max_sections=2))
    client.create_section(handle, b"one")
    client.create_section(handle, b"two")
    with pytest.raises(grpc.RpcError) as refused:
        client.create_section(handle, b"three")
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    _, got = collect(
        events, pb.WatchRequest(after_position=start, kinds=[pb.EVENT_KIND_LIMIT_REACHED]), 1
    )
    (limit,) = got
    assert limit.limit_event.reason == "CL_CKPT_ERR_NO_SPACE"
    assert limit.limit_event.method == "/cps.v1.CheckpointService/SectionCreate"


def test_live_events_arrive_while_watching(
    node: Node, channel: grpc.Channel, events: pb_grpc.EventServiceStub
) -> None:
    got: list[pb.ServiceEvent] = []
    done = threading.Event()
    watching = threading.Event()

    def watch() -> None:
        stream = events.Watch(pb.WatchRequest(checkpoint_names=["ev-live"]))
        timer = threading.Timer(5, stream.cancel)
        timer.start()
        try:
            for message in stream:
                watching.set()  # the first message comes at once
                got.extend(message.events)
                if got:
                    break
        except grpc.RpcError:
            pass
        finally:
            timer.cancel()
            stream.cancel()
            done.set()

    threading.Thread(target=watch, daemon=True).start()
    assert watching.wait(5)
    Client(channel).open("ev-live")
    assert done.wait(6)
    assert [e.kind for e in got] == [pb.EVENT_KIND_CHECKPOINT_CREATED]


def test_resume_after_a_position(
    node: Node, channel: grpc.Channel, events: pb_grpc.EventServiceStub
) -> None:
    client = Client(channel)
    start = newest(node)
    for index in range(3):
        client.open(f"ev-resume-{index}")
    _, first = collect(events, pb.WatchRequest(after_position=start), 3)
    names = [e.checkpoint_name for e in first]
    assert names == ["ev-resume-0", "ev-resume-1", "ev-resume-2"]
    # Resuming after the second event gives the third and nothing before it.
    messages, again = collect(
        events,
        pb.WatchRequest(after_position=first[1].position, incarnation=node.me.incarnation),
        1,
    )
    assert [e.position for e in again] == [first[2].position]
    assert messages[0].lost == 0
    # A position of another run of the node: from the oldest event kept.
    messages, other = collect(events, pb.WatchRequest(after_position=start, incarnation=1), 1)
    assert messages[0].incarnation == node.me.incarnation
    assert other[0].position == node.events.oldest


def test_a_resume_from_a_position_no_longer_kept_says_how_many_were_lost(
    node: Node, channel: grpc.Channel, events: pb_grpc.EventServiceStub
) -> None:
    client = Client(channel)
    start = newest(node)
    for index in range(BACKLOG + 10):
        client.open(f"ev-flood-{index}")
    assert len(node.events.ring) == BACKLOG  # the node holds no more
    messages, got = collect(events, pb.WatchRequest(after_position=start), BACKLOG)
    assert messages[0].lost == 10
    assert got[0].position == start + 11
    assert got[0].checkpoint_name == "ev-flood-10"


def test_a_slow_subscriber_stays_bounded_and_learns_what_it_lost(
    node: Node, channel: grpc.Channel, events: pb_grpc.EventServiceStub
) -> None:
    """The subscriber reads nothing while the node reports far more than it
    keeps; the node holds no more for it, and every position the subscriber
    then misses is counted in ``lost`` (none silently)."""
    client = Client(channel)
    client.open("ev-slow-first")
    # A receive window that does not grow (no BDP probing): the node's
    # writes wait once 64 KiB are in flight.
    slow = grpc.insecure_channel(f"127.0.0.1:{node.port}", options=[("grpc.http2.bdp_probe", 0)])
    stream = pb_grpc.EventServiceStub(slow).Watch(pb.WatchRequest(after_position=newest(node) - 1))
    timer = threading.Timer(20, stream.cancel)
    timer.start()
    try:
        first = next(stream)
        expected = first.events[-1].position
        name = "ev-slow-" + "x" * 200  # large events: flow control stalls the stream
        for index in range(BACKLOG * 20):
            client.open(f"{name}-{index}")
        client.open("ev-slow-last")
        last = newest(node)
        assert len(node.events.ring) == BACKLOG
        lost = 0
        for message in stream:
            lost += message.lost
            expected += message.lost
            for event in message.events:
                assert event.position == expected + 1
                expected = event.position
            if expected == last:
                break
        assert expected == last
        assert lost > 0
    finally:
        timer.cancel()
        stream.cancel()
        slow.close()


def test_filters_by_kind_and_name(
    node: Node, channel: grpc.Channel, events: pb_grpc.EventServiceStub
) -> None:
    client = Client(channel)
    start = newest(node)
    client.open("ev-filter-a")
    handle = client.open("ev-filter-b")
    client.stub.CheckpointDelete(
        cpb.CheckpointDeleteRequest(service_handle=client.session, checkpoint_name="ev-filter-b")
    )
    client.stub.CheckpointClose(cpb.CheckpointCloseRequest(checkpoint_handle=handle))
    _, got = collect(
        events,
        pb.WatchRequest(
            after_position=start,
            checkpoint_names=["ev-filter-b"],
            kinds=[pb.EVENT_KIND_CHECKPOINT_DELETED, pb.EVENT_KIND_CHECKPOINT_CREATED],
        ),
        2,
    )
    assert [(e.kind, e.checkpoint_name) for e in got] == [
        (pb.EVENT_KIND_CHECKPOINT_CREATED, "ev-filter-b"),
        (pb.EVENT_KIND_CHECKPOINT_DELETED, "ev-filter-b"),
    ]


def test_an_unknown_kind_is_refused(events: pb_grpc.EventServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        next(events.Watch(pb.WatchRequest(kinds=[99])))  # type: ignore[list-item]
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_the_service_is_visible_through_reflection(node: Node) -> None:
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    with grpc.insecure_channel(f"127.0.0.1:{node.port}") as channel:
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert "cps.v1.EventService" in services


def test_a_failed_commit_is_reported() -> None:
    with running_node() as node, grpc.insecure_channel(f"127.0.0.1:{node.port}") as channel:
        client = Client(channel)
        handle = client.open("ev-disk")
        client.create_section(handle, b"a", b"before")
        start = newest(node)
        store = node.journal.store
        real_apply = store.apply
        failures = [sqlite3.OperationalError("disk I/O error")]

        def apply_failing(statements: Sequence[Statement]) -> None:
            if failures:
                raise failures.pop()
            real_apply(statements)

        store.apply = apply_failing  # type: ignore[method-assign]
        with pytest.raises(grpc.RpcError):
            client.stub.SectionOverwrite(
                cpb.SectionOverwriteRequest(
                    checkpoint_handle=handle, section_id=sid(b"a"), data_buffer=b"during"
                )
            )
        _, got = collect(
            pb_grpc.EventServiceStub(channel),
            pb.WatchRequest(after_position=start, kinds=[pb.EVENT_KIND_STORAGE_FAILED]),
            1,
        )
        (failed,) = got
        assert "disk I/O error" in failed.storage_event.error
        assert list(failed.storage_event.checkpoint_names) == ["ev-disk"]


TABLE = """
[roles.app]
server = [{ prefix = "app/", permission = "readwrite" }]

[roles.other]
server = [{ prefix = "other/", permission = "readwrite" }]

[roles.reader]
server = [{ prefix = "app/", permission = "read" }]

[identities]
"CN=app" = ["app"]
"CN=other" = ["other"]
"CN=reader" = ["reader"]
"""


def test_with_an_authorization_table_a_caller_sees_only_what_it_may_read(
    tmp_path: Path,
) -> None:
    servers, clients = Authority(tmp_path, "servers"), Authority(tmp_path, "clients")
    node_pair = servers.issue("node")
    pairs = {name: clients.issue(name) for name in ("app", "other", "reader")}
    table = tmp_path / "auth.toml"
    table.write_text(TABLE)
    flags = ("--tls-cert", str(node_pair.cert), "--tls-key", str(node_pair.key))
    with running_node(*flags, "--client-ca", str(clients.path), "--auth-file", str(table)) as node:

        def channel(name: str) -> grpc.Channel:
            credentials = grpc.ssl_channel_credentials(
                servers.path.read_bytes(), *pairs[name].read()
            )
            return grpc.secure_channel(f"127.0.0.1:{node.port}", credentials)

        with channel("app") as app, channel("other") as other, channel("reader") as reader:
            Client(other).open("other/hidden")
            Client(app).open("app/shown")
            _, got = collect(pb_grpc.EventServiceStub(reader), pb.WatchRequest(), 2, timeout=2)
    assert [e.checkpoint_name for e in got] == ["app/shown"]
