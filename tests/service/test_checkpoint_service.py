"""CheckpointService over a real grpc server on a loopback port."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from cps.v1 import checkpoint_service_pb2 as pb
from cps.v1 import types_pb2 as t
from tests.support import RW, RWC, Client, attributes, seed_error, sid


def fails(call: Callable[[], Any], code: grpc.StatusCode, reason: str) -> dict[str, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    got_code, got_reason, metadata = seed_error(caught.value)
    assert (got_code, got_reason) == (code, reason), caught.value
    return metadata


INVALID = grpc.StatusCode.INVALID_ARGUMENT


def test_initialize_negotiates_version(client: Client) -> None:
    stub = client.stub
    ok = stub.Initialize(pb.InitializeRequest(version=t.Version(release_code="B", major_version=1)))
    assert ok.version == t.Version(release_code="B", major_version=1, minor_version=1)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Initialize(pb.InitializeRequest(version=t.Version(release_code="B", major_version=9)))
    assert seed_error(caught.value)[1] == "CL_CKPT_ERR_VERSION_MISMATCH"
    status = rpc_status.from_call(caught.value)
    assert status is not None
    supported = [t.Version() for d in status.details if d.Is(t.Version.DESCRIPTOR)]
    assert len(supported) == 1
    status.details[1].Unpack(supported[0])
    assert supported[0].major_version == 1


def test_open_write_read_round_trip(client: Client) -> None:
    handle = client.open("round-trip")
    client.create_section(handle, b"a", b"hello")
    client.stub.CheckpointWrite(
        pb.CheckpointWriteRequest(
            checkpoint_handle=handle,
            io_vector=[
                t.IOVectorElement(section_id=sid(b"a"), data_buffer=b"J", data_offset=0),
                t.IOVectorElement(section_id=sid(b"a"), data_buffer=b"!!", data_offset=5),
            ],
        )
    )
    response = client.stub.CheckpointRead(
        pb.CheckpointReadRequest(
            checkpoint_handle=handle,
            io_vector=[
                t.IOVectorElement(section_id=sid(b"a")),
                t.IOVectorElement(section_id=sid(b"a"), data_offset=1, data_size=3),
            ],
        )
    )
    assert [e.data_buffer for e in response.io_vector] == [b"Jello!!", b"ell"]
    assert [e.read_size for e in response.io_vector] == [7, 3]


def test_open_parameter_errors(client: Client) -> None:
    stub = client.stub
    base = {"service_handle": client.session, "checkpoint_name": "params"}
    fails(
        lambda: stub.CheckpointOpen(pb.CheckpointOpenRequest(**base, checkpoint_open_flags=RWC)),
        INVALID,
        "CL_CKPT_ERR_INVALID_PARAM",
    )
    fails(lambda: client.open("params", attributes(), RW), INVALID, "CL_CKPT_ERR_INVALID_PARAM")
    fails(
        lambda: client.open("params", attributes(checkpoint_size=10**9)),
        INVALID,
        "CL_CKPT_ERR_INVALID_PARAM",
    )
    fails(lambda: client.open("params", flags=(7,)), INVALID, "CL_CKPT_ERR_BAD_FLAG")
    both = (t.CREATION_FLAG_WR_ALL_REPLICAS, t.CREATION_FLAG_WR_ACTIVE_REPLICA)
    fails(lambda: client.open("params", attributes(flags=both)), INVALID, "CL_CKPT_ERR_BAD_FLAG")
    no_retention = attributes()
    no_retention.ClearField("retention_duration")
    fails(lambda: client.open("params", no_retention), INVALID, "CL_ERR_NULL_POINTER")
    fails(
        lambda: client.open("params-missing", flags=RW),
        grpc.StatusCode.NOT_FOUND,
        "CL_CKPT_ERR_NOT_EXIST",
    )


def test_reopen_with_other_attributes_is_refused_but_retention_may_differ(client: Client) -> None:
    client.open("reopen", attributes(max_sections=4))
    fails(
        lambda: client.open("reopen", attributes(max_sections=5)),
        grpc.StatusCode.ALREADY_EXISTS,
        "CL_ERR_ALREADY_EXIST",
    )
    other_retention = attributes(max_sections=4, retention=t.RetentionDuration(forever=False))
    other_retention.retention_duration.duration.FromSeconds(60)
    client.open("reopen", other_retention)


def test_modes_are_enforced(client: Client) -> None:
    writer = client.open("modes")
    client.create_section(writer, b"s", b"x")
    reader = client.open("modes", flags=(t.OPEN_FLAG_READ,))
    denied = grpc.StatusCode.PERMISSION_DENIED
    fails(
        lambda: client.stub.SectionOverwrite(
            pb.SectionOverwriteRequest(checkpoint_handle=reader, section_id=sid(b"s"))
        ),
        denied,
        "CL_CKPT_ERR_OP_NOT_PERMITTED",
    )
    fails(lambda: client.create_section(reader, b"t"), denied, "CL_CKPT_ERR_OP_NOT_PERMITTED")
    assert client.read(reader, b"s") == b"x"
    write_only = client.open("modes", flags=(t.OPEN_FLAG_WRITE,))
    fails(lambda: client.read(write_only, b"s"), denied, "CL_CKPT_ERR_OP_NOT_PERMITTED")


def test_delete_unlinks_and_last_close_frees(client: Client) -> None:
    stub = client.stub
    handle = client.open("unlink")
    client.create_section(handle, b"s", b"old")
    stub.CheckpointDelete(
        pb.CheckpointDeleteRequest(service_handle=client.session, checkpoint_name="unlink")
    )
    assert client.read(handle, b"s") == b"old"  # openers keep access
    fails(
        lambda: client.open("unlink", flags=RW), grpc.StatusCode.NOT_FOUND, "CL_CKPT_ERR_NOT_EXIST"
    )
    fresh = client.open("unlink")
    fails(lambda: client.read(fresh, b"s"), grpc.StatusCode.NOT_FOUND, "CL_CKPT_ERR_NOT_EXIST")
    retention = t.RetentionDuration(forever=True)
    fails(
        lambda: stub.CheckpointRetentionDurationSet(
            pb.CheckpointRetentionDurationSetRequest(
                checkpoint_handle=handle, retention_duration=retention
            )
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "CL_CKPT_ERR_BAD_OPERATION",
    )
    stub.CheckpointClose(pb.CheckpointCloseRequest(checkpoint_handle=handle))
    fails(
        lambda: client.read(handle, b"s"), grpc.StatusCode.NOT_FOUND, "CL_CKPT_ERR_INVALID_HANDLE"
    )


def test_retention_timer_deletes_after_last_close(client: Client) -> None:
    retention = t.RetentionDuration()
    retention.duration.FromMilliseconds(200)
    handle = client.open("retained", attributes(retention=retention))
    client.stub.CheckpointClose(pb.CheckpointCloseRequest(checkpoint_handle=handle))
    client.stub.CheckpointClose(
        pb.CheckpointCloseRequest(checkpoint_handle=client.open("retained", flags=RW))
    )
    time.sleep(0.5)
    fails(
        lambda: client.open("retained", flags=RW),
        grpc.StatusCode.NOT_FOUND,
        "CL_CKPT_ERR_NOT_EXIST",
    )


def test_status_get_reports_real_usage(client: Client) -> None:
    handle = client.open("status", attributes(max_sections=8))
    client.create_section(handle, b"a", b"12345")
    client.create_section(handle, b"b", b"678")
    status = client.stub.CheckpointStatusGet(
        pb.CheckpointStatusGetRequest(checkpoint_handle=handle)
    ).checkpoint_status
    assert status.memory_used == 8
    assert status.number_of_sections == 2
    assert status.checkpoint_creation_attributes == attributes(max_sections=8)


def test_sections_generated_ids_limits_and_default_section(client: Client) -> None:
    stub = client.stub
    handle = client.open("sections", attributes(max_sections=2, max_section_id_size=4))
    generated = stub.SectionCreate(
        pb.SectionCreateRequest(
            checkpoint_handle=handle,
            section_creation_attributes=t.SectionCreationAttributes(),  # no id: generated
            initial_data=b"g",
        )
    ).section_id.id
    assert generated and len(generated) <= 4
    fails(lambda: client.create_section(handle, b"toolong"), INVALID, "CL_CKPT_ERR_INVALID_PARAM")
    client.create_section(handle, b"x")
    fails(
        lambda: client.create_section(handle, b"y"),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "CL_CKPT_ERR_NO_SPACE",
    )
    fails(
        lambda: client.create_section(handle, b"x"),
        grpc.StatusCode.ALREADY_EXISTS,
        "CL_ERR_ALREADY_EXIST",
    )
    single = client.open("single", attributes(max_sections=1))
    stub.SectionOverwrite(
        pb.SectionOverwriteRequest(checkpoint_handle=single, section_id=sid(b""), data_buffer=b"d")
    )
    assert client.read(single, b"") == b"d"
    fails(
        lambda: stub.SectionDelete(
            pb.SectionDeleteRequest(checkpoint_handle=single, section_id=sid(b""))
        ),
        INVALID,
        "CL_CKPT_ERR_INVALID_PARAM",
    )


def test_section_expiry_deletes_section(client: Client) -> None:
    handle = client.open("expiry")
    soon = t.ExpirationTime()
    soon.at.FromNanoseconds(time.time_ns() + 200_000_000)
    client.create_section(handle, b"brief", b"x", expiration_time=soon)
    assert client.read(handle, b"brief") == b"x"
    time.sleep(0.5)
    fails(lambda: client.read(handle, b"brief"), grpc.StatusCode.NOT_FOUND, "CL_CKPT_ERR_NOT_EXIST")


def test_iteration_filters(client: Client) -> None:
    stub = client.stub
    handle = client.open("iterate")
    later = t.ExpirationTime()
    later.at.FromSeconds(int(time.time()) + 3600)
    client.create_section(handle, b"forever")
    client.create_section(handle, b"later", expiration_time=later)

    def ids(chosen: int, when: int | None = None) -> list[bytes]:
        request = pb.SectionIterationInitializeRequest(
            checkpoint_handle=handle,
            sections_chosen=chosen,  # type: ignore[arg-type]
        )
        if when is not None:
            request.expiration_time.FromSeconds(when)
        iteration = stub.SectionIterationInitialize(request).section_iteration_handle
        found = []
        while True:
            step = stub.SectionIterationNext(
                pb.SectionIterationNextRequest(section_iteration_handle=iteration)
            )
            if step.no_more_sections:
                break
            found.append(step.section_descriptor.section_id.id)
        stub.SectionIterationFinalize(
            pb.SectionIterationFinalizeRequest(section_iteration_handle=iteration)
        )
        return found

    now = int(time.time())
    assert ids(t.SECTIONS_CHOSEN_ANY) == [b"forever", b"later"]
    assert ids(t.SECTIONS_CHOSEN_FOREVER) == [b"forever"]
    assert ids(t.SECTIONS_CHOSEN_LEQ_EXPIRATION_TIME, now + 7200) == [b"later"]
    assert ids(t.SECTIONS_CHOSEN_GEQ_EXPIRATION_TIME, now + 7200) == [b"forever"]
    assert ids(t.SECTIONS_CHOSEN_CORRUPTED) == []
    fails(lambda: ids(t.SECTIONS_CHOSEN_LEQ_EXPIRATION_TIME), INVALID, "CL_CKPT_ERR_INVALID_PARAM")


def test_write_is_all_or_nothing_with_erroneous_index(client: Client) -> None:
    handle = client.open("atomic")
    client.create_section(handle, b"a", b"aaaa")
    request = pb.CheckpointWriteRequest(
        checkpoint_handle=handle,
        io_vector=[
            t.IOVectorElement(section_id=sid(b"a"), data_buffer=b"ZZ"),
            t.IOVectorElement(section_id=sid(b"missing"), data_buffer=b"x"),
        ],
    )
    with pytest.raises(grpc.RpcError) as caught:
        client.stub.CheckpointWrite(request)
    code, reason, metadata = seed_error(caught.value)
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "CL_CKPT_ERR_NOT_EXIST")
    assert metadata["erroneous_vector_index"] == "1"
    status = rpc_status.from_call(caught.value)
    assert status is not None
    index = t.IOVectorError()
    assert status.details[1].Unpack(index) and index.erroneous_vector_index == 1
    assert client.read(handle, b"a") == b"aaaa"


def test_read_past_end_fails(client: Client) -> None:
    handle = client.open("past-end")
    client.create_section(handle, b"a", b"abc")
    assert client.read(handle, b"a", offset=3) == b""
    metadata = fails(
        lambda: client.read(handle, b"a", offset=4), INVALID, "CL_CKPT_ERR_INVALID_PARAM"
    )
    assert metadata["erroneous_vector_index"] == "0"


def test_synchronize_and_active_replica_rules(client: Client) -> None:
    stub = client.stub
    sync_handle = client.open("sync", attributes(flags=(t.CREATION_FLAG_WR_ALL_REPLICAS,)))
    fails(
        lambda: stub.CheckpointSynchronize(
            pb.CheckpointSynchronizeRequest(checkpoint_handle=sync_handle)
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "CL_CKPT_ERR_BAD_OPERATION",
    )
    fails(
        lambda: stub.ActiveReplicaSet(pb.ActiveReplicaSetRequest(checkpoint_handle=sync_handle)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "CL_CKPT_ERR_BAD_OPERATION",
    )
    async_handle = client.open("async")
    stub.CheckpointSynchronize(pb.CheckpointSynchronizeRequest(checkpoint_handle=async_handle))
    collocated = client.open(
        "collocated",
        attributes(
            flags=(t.CREATION_FLAG_WR_ACTIVE_REPLICA, t.CREATION_FLAG_CHECKPOINT_COLLOCATED)
        ),
    )
    metadata = fails(
        lambda: stub.CheckpointStatusGet(
            pb.CheckpointStatusGetRequest(checkpoint_handle=collocated)
        ),
        grpc.StatusCode.NOT_FOUND,
        "CL_CKPT_ERR_NOT_EXIST",
    )
    assert metadata["cause"] == "no_active_replica"
    stub.ActiveReplicaSet(pb.ActiveReplicaSetRequest(checkpoint_handle=collocated))
    stub.CheckpointStatusGet(pb.CheckpointStatusGetRequest(checkpoint_handle=collocated))


def test_async_open_and_synchronize_arrive_on_the_callback_stream(client: Client) -> None:
    stub = client.stub
    stream = stub.Callbacks(pb.CallbacksRequest(service_handle=client.session))
    request = pb.CheckpointOpenAsyncRequest(
        service_handle=client.session,
        invocation=41,
        checkpoint_name="async-open",
        checkpoint_open_flags=RWC,
        checkpoint_creation_attributes=attributes(),
    )
    stub.CheckpointOpenAsync(request)
    missing = pb.CheckpointOpenAsyncRequest(
        service_handle=client.session,
        invocation=42,
        checkpoint_name="async-missing",
        checkpoint_open_flags=RW,
    )
    stub.CheckpointOpenAsync(missing)
    received: list[pb.Callback] = []
    for message in stream:
        received.extend(message.callbacks)
        if len(received) >= 2:
            break
    opened, failed = received[0].open, received[1].open
    assert (opened.invocation, opened.error_reason) == (41, "")
    assert (failed.invocation, failed.error_reason) == (42, "CL_CKPT_ERR_NOT_EXIST")
    assert [c.sequence for c in received] == [1, 2]
    stub.CheckpointSynchronizeAsync(
        pb.CheckpointSynchronizeAsyncRequest(
            checkpoint_handle=opened.checkpoint_handle, invocation=43
        )
    )
    sync = next(iter(stream)).callbacks[0].synchronize
    assert (sync.invocation, sync.error_reason) == (43, "")
    stream.cancel()


def test_unknown_handles(client: Client) -> None:
    fails(
        lambda: client.stub.CheckpointClose(pb.CheckpointCloseRequest(checkpoint_handle=12345)),
        grpc.StatusCode.NOT_FOUND,
        "CL_CKPT_ERR_INVALID_HANDLE",
    )
    fails(
        lambda: client.stub.Finalize(pb.FinalizeRequest(service_handle=12345)),
        grpc.StatusCode.NOT_FOUND,
        "CL_CKPT_ERR_BAD_HANDLE",
    )


def test_error_info_reason_matches_status_table() -> None:
    from cps.server.core.errors import ErrorCode
    from cps.server.status import STATUS_CODES

    assert set(STATUS_CODES) == set(ErrorCode)
    assert error_details_pb2.ErrorInfo.DESCRIPTOR.full_name == "google.rpc.ErrorInfo"


def test_a_read_allocates_what_the_section_holds_not_what_was_asked(client: Client) -> None:
    """A read of a 2 KiB section asking for 64 MiB (max_section_size) costs
    the node about 2 KiB, not 64 MiB (the node runs in this process, so
    tracemalloc sees its allocations)."""
    size = 64 * 1024**2
    handle = client.open(
        "read-what-is-held", attributes(max_sections=2, max_section_size=size, checkpoint_size=size)
    )
    client.create_section(handle, b"small", bytes(2048))
    tracemalloc.start()
    try:
        data = client.read(handle, b"small", 0, size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert data == bytes(2048)
    assert peak < 4 * 1024**2, f"peak {peak} bytes for a 2 KiB read"
