"""Session callback streams: notifications, ordering, fan-out, back-pressure,
Close/Finalize cancellation, and reaping of a killed client."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from cps.server.node import Node
from cps.v1 import checkpoint_service_pb2 as pb
from cps.v1 import checkpoint_service_pb2_grpc as pb_grpc
from cps.v1 import types_pb2 as t
from tests.support import RW, Client, attributes, running_node, seed_error, sid

Change = tuple[bytes, int]


def register(client: Client, handle: int) -> None:
    client.stub.ImmediateConsumptionRegister(
        pb.ImmediateConsumptionRegisterRequest(checkpoint_handle=handle)
    )


def collect(stream: Iterator[pb.CallbacksResponse], count: int) -> list[pb.Callback]:
    """Read callbacks until ``count`` have arrived."""
    received: list[pb.Callback] = []
    for message in stream:
        received.extend(message.callbacks)
        if len(received) >= count:
            break
    return received


def changes(callbacks: list[pb.Callback]) -> list[Change]:
    return [
        (changed.section_id.id, changed.change)
        for callback in callbacks
        for changed in callback.notification.changed_sections
    ]


def test_every_kind_of_change_notifies_with_its_sections(client: Client) -> None:
    stream = client.stub.Callbacks(pb.CallbacksRequest(service_handle=client.session))
    handle = client.open("changes")
    register(client, handle)
    soon = t.ExpirationTime()
    soon.at.FromNanoseconds(time.time_ns() + 100_000_000)
    client.create_section(handle, b"a", b"1")
    client.create_section(handle, b"b", b"2", expiration_time=soon)
    client.stub.CheckpointWrite(
        pb.CheckpointWriteRequest(
            checkpoint_handle=handle,
            io_vector=[
                t.IOVectorElement(section_id=sid(b"a"), data_buffer=b"x"),
                t.IOVectorElement(section_id=sid(b"b"), data_buffer=b"y"),
            ],
        )
    )
    client.stub.SectionOverwrite(
        pb.SectionOverwriteRequest(checkpoint_handle=handle, section_id=sid(b"a"), data_buffer=b"")
    )
    client.stub.SectionDelete(
        pb.SectionDeleteRequest(checkpoint_handle=handle, section_id=sid(b"a"))
    )
    received = collect(stream, 6)  # the expiry of "b" comes last, about 100 ms later
    stream.cancel()
    notification = received[0].notification
    assert (notification.checkpoint_name, notification.checkpoint_handle) == ("changes", handle)
    assert changes(received) == [
        (b"a", t.SECTION_CHANGE_CREATED),
        (b"b", t.SECTION_CHANGE_CREATED),
        (b"a", t.SECTION_CHANGE_WRITTEN),
        (b"b", t.SECTION_CHANGE_WRITTEN),
        (b"a", t.SECTION_CHANGE_OVERWRITTEN),
        (b"a", t.SECTION_CHANGE_DELETED),
        (b"b", t.SECTION_CHANGE_EXPIRED),
    ]
    sequences = [callback.sequence for callback in received]
    assert sequences == list(range(1, len(received) + 1))


def test_unregistered_handles_get_nothing(client: Client, channel: grpc.Channel) -> None:
    watcher = Client(channel)
    stream = watcher.stub.Callbacks(pb.CallbacksRequest(service_handle=watcher.session))
    watched = watcher.open("quiet-and-loud")
    writer = client.open("quiet-and-loud")
    client.create_section(writer, b"before")  # not registered yet: no event
    register(watcher, watched)
    client.create_section(writer, b"after")
    received = collect(stream, 1)
    stream.cancel()
    assert changes(received) == [(b"after", t.SECTION_CHANGE_CREATED)]


def test_concurrent_writers_are_seen_in_one_order_by_everyone(channel: grpc.Channel) -> None:
    watchers = [Client(channel) for _ in range(2)]
    streams = []
    for watcher in watchers:
        streams.append(watcher.stub.Callbacks(pb.CallbacksRequest(service_handle=watcher.session)))
        register(watcher, watcher.open("ordered"))
    writers, rounds = 4, 25

    def write(index: int) -> None:
        writer = Client(channel)
        handle = writer.open("ordered", flags=RW)
        for round_ in range(rounds):
            section = f"w{index}-{round_}".encode()
            writer.create_section(handle, section)
            writer.stub.SectionOverwrite(
                pb.SectionOverwriteRequest(
                    checkpoint_handle=handle, section_id=sid(section), data_buffer=b"v"
                )
            )
            writer.stub.SectionDelete(
                pb.SectionDeleteRequest(checkpoint_handle=handle, section_id=sid(section))
            )

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = writers * rounds * 3
    seen = []
    for stream in streams:
        got: list[Change] = []
        for message in stream:
            got.extend(changes(list(message.callbacks)))
            if len(got) >= total:
                break
        stream.cancel()
        seen.append(got)
    assert len(seen[0]) == total
    assert seen[0] == seen[1]  # one apply order, seen identically by every subscriber
    for index in range(writers):
        for round_ in range(rounds):
            section = f"w{index}-{round_}".encode()
            assert [kind for sec, kind in seen[0] if sec == section] == [
                t.SECTION_CHANGE_CREATED,
                t.SECTION_CHANGE_OVERWRITTEN,
                t.SECTION_CHANGE_DELETED,
            ]


def test_hundred_subscribers_each_get_every_change(node: Node) -> None:
    subscribers, writes = 100, 20

    async def run() -> list[int]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{node.port}") as channel:
            stub = pb_grpc.CheckpointServiceStub(channel)
            version = t.Version(release_code="B", major_version=1)

            async def subscriber(ready: asyncio.Event) -> int:
                session = await stub.Initialize(pb.InitializeRequest(version=version))
                opened = await stub.CheckpointOpen(
                    pb.CheckpointOpenRequest(
                        service_handle=session.service_handle,
                        checkpoint_name="fan-out",
                        checkpoint_open_flags=RW,
                    )
                )
                await stub.ImmediateConsumptionRegister(
                    pb.ImmediateConsumptionRegisterRequest(
                        checkpoint_handle=opened.checkpoint_handle
                    )
                )
                call = stub.Callbacks(pb.CallbacksRequest(service_handle=session.service_handle))
                ready.set()
                count = 0
                async for message in call:
                    count += sum(len(c.notification.changed_sections) for c in message.callbacks)
                    if count >= writes:
                        break
                call.cancel()
                return count

            session = await stub.Initialize(pb.InitializeRequest(version=version))
            request = pb.CheckpointOpenRequest(
                service_handle=session.service_handle,
                checkpoint_name="fan-out",
                checkpoint_open_flags=(*RW, t.OPEN_FLAG_CREATE),
                checkpoint_creation_attributes=attributes(max_sections=1),
            )
            writer = (await stub.CheckpointOpen(request)).checkpoint_handle
            readies = [asyncio.Event() for _ in range(subscribers)]
            tasks = [asyncio.create_task(subscriber(ready)) for ready in readies]
            await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 30)
            for value in range(writes):
                await stub.SectionOverwrite(
                    pb.SectionOverwriteRequest(
                        checkpoint_handle=writer, section_id=sid(b""), data_buffer=bytes([value])
                    )
                )
            return list(await asyncio.wait_for(asyncio.gather(*tasks), 60))

    assert asyncio.run(run()) == [20] * subscribers


def test_stalled_subscriber_is_bounded_and_told_what_it_lost() -> None:
    depth, watched_handles, writes = 8, 16, 3000
    # No BDP probing: the stalled client's receive window stays at 64 KiB, so
    # the server really meets a full window (instead of buffering megabytes).
    small_window = [("grpc.http2.bdp_probe", 0)]
    with running_node("--max-callback-queue", str(depth)) as node:
        address = f"127.0.0.1:{node.port}"
        with (
            grpc.insecure_channel(address, options=small_window) as stalled_channel,
            grpc.insecure_channel(address) as live_channel,
        ):
            stalled, live, writer = (
                Client(stalled_channel),
                Client(live_channel),
                Client(live_channel),
            )
            handle = writer.open("pressure", attributes(max_sections=1))
            stalled_stream = stalled.stub.Callbacks(
                pb.CallbacksRequest(service_handle=stalled.session)
            )
            for _ in range(watched_handles):  # more handles than queue slots
                register(stalled, stalled.open("pressure", flags=RW))
            register(live, live.open("pressure", flags=RW))
            live_stream = live.stub.Callbacks(pb.CallbacksRequest(service_handle=live.session))
            received: list[Change] = []

            def drain() -> None:
                for message in live_stream:
                    received.extend(changes(list(message.callbacks)))
                    if len(received) >= writes:
                        return

            reader = threading.Thread(target=drain)
            reader.start()
            for value in range(writes):
                writer.stub.SectionOverwrite(
                    pb.SectionOverwriteRequest(
                        checkpoint_handle=handle,
                        section_id=sid(b""),
                        data_buffer=bytes([value % 256]),
                    )
                )
            reader.join(timeout=60)
            live_stream.cancel()
            assert len(received) == writes  # the live subscriber lost nothing
            queue = node.sessions.sessions[stalled.session].events.queue
            assert len(queue) <= depth + 1  # bounded, plus one "dropped" marker
            # The stalled one reads at last: somewhere it is told what it lost.
            dropped = 0
            for message in stalled_stream:
                for callback in message.callbacks:
                    if callback.WhichOneof("kind") == "dropped":
                        dropped += callback.dropped.count
                if dropped:
                    break
            stalled_stream.cancel()
            assert dropped > 0


def test_close_cancels_pending_callbacks_of_that_handle(
    client: Client, channel: grpc.Channel
) -> None:
    other = Client(channel)
    closing = client.open("cancel-on-close")
    staying = client.open("cancel-on-close", flags=RW)
    register(client, closing)
    register(client, staying)
    writer = other.open("cancel-on-close", flags=RW)
    other.create_section(writer, b"s")  # queued for both handles, no stream yet
    client.stub.CheckpointClose(pb.CheckpointCloseRequest(checkpoint_handle=closing))
    stream = client.stub.Callbacks(pb.CallbacksRequest(service_handle=client.session))
    received = collect(stream, 1)
    stream.cancel()
    assert [c.notification.checkpoint_handle for c in received] == [staying]


def test_finalize_ends_the_stream_and_closes_handles(client: Client) -> None:
    handle = client.open("finalized")
    stream = client.stub.Callbacks(pb.CallbacksRequest(service_handle=client.session))
    client.stub.Finalize(pb.FinalizeRequest(service_handle=client.session))
    assert list(stream) == []  # ended by the server, not by an error
    with pytest.raises(grpc.RpcError) as caught:
        client.stub.CheckpointClose(pb.CheckpointCloseRequest(checkpoint_handle=handle))
    assert seed_error(caught.value)[1] == "CL_CKPT_ERR_INVALID_HANDLE"


def test_a_new_stream_takes_over_and_the_old_one_is_aborted(client: Client) -> None:
    first = client.stub.Callbacks(pb.CallbacksRequest(service_handle=client.session))
    handle = client.open("two")
    client.stub.CheckpointSynchronizeAsync(
        pb.CheckpointSynchronizeAsyncRequest(checkpoint_handle=handle, invocation=1)
    )
    assert collect(first, 1)[0].synchronize.invocation == 1  # first is attached now
    second = client.stub.Callbacks(
        pb.CallbacksRequest(service_handle=client.session, resume_after_sequence=1)
    )
    client.stub.CheckpointSynchronizeAsync(
        pb.CheckpointSynchronizeAsyncRequest(checkpoint_handle=handle, invocation=2)
    )
    got = collect(second, 1)
    assert [(c.sequence, c.synchronize.invocation) for c in got] == [(2, 2)]
    # The old stream may still carry what was sent before the takeover (here
    # callback 2 can race it); then it ends, aborted.
    with pytest.raises(grpc.RpcError) as caught:
        for _ in first:
            pass
    code, reason, _ = seed_error(caught.value)
    assert (code, reason) == (grpc.StatusCode.ABORTED, "CL_CKPT_ERR_INUSE")
    second.cancel()


def test_a_resumed_stream_gets_again_what_was_in_flight(client: Client) -> None:
    handle = client.open("resume")
    for invocation in (1, 2, 3):
        client.stub.CheckpointSynchronizeAsync(
            pb.CheckpointSynchronizeAsyncRequest(checkpoint_handle=handle, invocation=invocation)
        )
    first = client.stub.Callbacks(pb.CallbacksRequest(service_handle=client.session))
    assert [c.sequence for c in collect(first, 3)] == [1, 2, 3]
    first.cancel()  # say the client processed only callback 1 before the break
    resumed = client.stub.Callbacks(
        pb.CallbacksRequest(service_handle=client.session, resume_after_sequence=1)
    )
    client.stub.CheckpointSynchronizeAsync(
        pb.CheckpointSynchronizeAsyncRequest(checkpoint_handle=handle, invocation=4)
    )
    got = collect(resumed, 3)
    resumed.cancel()
    assert [(c.sequence, c.synchronize.invocation) for c in got] == [(2, 2), (3, 3), (4, 4)]


KILLED_CLIENT = textwrap.dedent(
    """
    import sys, grpc
    from cps.v1 import checkpoint_service_pb2 as pb, checkpoint_service_pb2_grpc as rpc
    from tests.support import Client, attributes
    from cps.v1 import types_pb2 as t
    channel = grpc.insecure_channel(sys.argv[1])
    client = Client(channel)
    retention = t.RetentionDuration()
    retention.duration.FromMilliseconds(300)
    client.open("orphan", attributes(retention=retention))
    stream = client.stub.Callbacks(pb.CallbacksRequest(service_handle=client.session))
    print(client.session, flush=True)
    for _ in stream:
        pass
    """
)


def test_killed_client_is_reaped_and_retention_starts() -> None:
    with running_node("--session-timeout-seconds", "1") as node:
        address = f"127.0.0.1:{node.port}"
        child = subprocess.Popen(
            [sys.executable, "-c", KILLED_CLIENT, address],
            stdout=subprocess.PIPE,
            text=True,
            cwd=os.getcwd(),
        )
        try:
            assert child.stdout is not None
            orphan_session = int(child.stdout.readline())
            assert node.directory.lookup("orphan") is not None
            child.kill()
            child.wait(timeout=10)
        finally:
            if child.poll() is None:
                child.kill()
        assert node.directory.lookup("orphan") is not None  # not before the reap
        deadline = time.monotonic() + 10
        while node.directory.lookup("orphan") is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert orphan_session not in node.sessions.sessions
        with grpc.insecure_channel(address) as channel:
            with pytest.raises(grpc.RpcError) as caught:
                Client(channel).open("orphan", flags=RW)
            assert seed_error(caught.value)[1] == "CL_CKPT_ERR_NOT_EXIST"


def test_no_callbacks_message_exceeds_its_bound_and_a_resume_gets_everything() -> None:
    """One write's notification larger than the bound is split over several
    callbacks, a backlog over several messages; a resume replays in bounded
    messages too. Lifting the bound sends everything in one large message."""
    bound, sections, overwrites = 16 * 1024, 300, 60
    with (
        running_node("--max-callback-message-bytes", str(bound)) as node,
        grpc.insecure_channel(f"127.0.0.1:{node.port}") as channel,
    ):
        client = Client(channel)
        handle = client.open("bounded", attributes(max_sections=sections, max_section_id_size=64))
        ids = [b"%060d" % index for index in range(sections)]
        for section_id in ids:
            client.create_section(handle, section_id, b"")
        register(client, handle)
        client.stub.CheckpointWrite(  # one notification of ~23 KB
            pb.CheckpointWriteRequest(
                checkpoint_handle=handle,
                io_vector=[
                    t.IOVectorElement(section_id=sid(section_id), data_buffer=b"x")
                    for section_id in ids
                ],
            )
        )
        for index in range(overwrites):  # a backlog of small ones
            client.stub.SectionOverwrite(
                pb.SectionOverwriteRequest(
                    checkpoint_handle=handle, section_id=sid(ids[index]), data_buffer=b"y"
                )
            )
        expected = [(section_id, t.SECTION_CHANGE_WRITTEN) for section_id in ids] + [
            (ids[index], t.SECTION_CHANGE_OVERWRITTEN) for index in range(overwrites)
        ]

        def receive(resume_after: int) -> tuple[list[pb.Callback], list[int]]:
            stream = client.stub.Callbacks(
                pb.CallbacksRequest(
                    service_handle=client.session, resume_after_sequence=resume_after
                )
            )
            received: list[pb.Callback] = []
            sizes: list[int] = []
            for message in stream:
                sizes.append(message.ByteSize())
                received.extend(message.callbacks)
                if len(changes(received)) >= len(expected):
                    break
            stream.cancel()
            return received, sizes

        received, sizes = receive(0)
        assert changes(received) == expected
        assert len(sizes) > 1 and max(sizes) <= bound, sizes
        sequences = [callback.sequence for callback in received]
        assert sequences == list(range(1, len(received) + 1))
        replayed, sizes = receive(0)  # everything was sent: all of it again
        assert changes(replayed) == expected
        assert max(sizes) <= bound, sizes
