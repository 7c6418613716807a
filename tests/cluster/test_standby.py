"""A primary and a standby as real processes on 127.0.0.1: the standby
follows the primary's store, refuses clients until it takes over, and takes
over when the primary is killed (SIGKILL) with every acknowledged
synchronous write, and every asynchronous one that Synchronize confirmed."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cps.client import CreationAttributes, CreationFlags, Library, Session
from cps.v1 import checkpoint_service_pb2 as pb
from cps.v1 import types_pb2 as t
from tests.processes import ServerProcess
from tests.support import RW, Client, attributes, seed_error, sid

SYNC = (t.CREATION_FLAG_WR_ALL_REPLICAS,)
SERVING = health_pb2.HealthCheckResponse.SERVING


def wait_for(condition: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="cps.v1.CheckpointService"), timeout=2
            )
        except grpc.RpcError:
            return -1
        return int(response.status)


class Pair:
    def __init__(self, stack: ExitStack, root: Path) -> None:
        self.stack = stack
        self.root = root
        self.primary = stack.enter_context(
            ServerProcess.start("--data-dir", str(root / "p"), "--node-name", "primary")
        )
        self.standby: ServerProcess | None = None

    def start_standby(self) -> ServerProcess:
        self.standby = self.stack.enter_context(
            ServerProcess.start(
                "--data-dir",
                str(self.root / "s"),
                "--node-name",
                "standby",
                "--standby-of",
                self.primary.address,
                "--failover-seconds",
                "1",
            )
        )
        standby = self.standby
        wait_for(lambda: '"msg": "following"' in standby.log_text(), "the standby to follow")
        return standby

    def kill_primary(self) -> None:
        self.primary.popen.kill()
        self.primary.popen.wait(timeout=10)


@pytest.fixture()
def pair(tmp_path: Path) -> Iterator[Pair]:
    with ExitStack() as stack:
        yield Pair(stack, tmp_path)


def test_standby_refuses_clients_until_it_takes_over(pair: Pair) -> None:
    standby = pair.start_standby()
    assert health(standby.address) == health_pb2.HealthCheckResponse.NOT_SERVING
    with grpc.insecure_channel(standby.address) as channel, pytest.raises(grpc.RpcError) as caught:
        Client(channel)
    code, reason, metadata = seed_error(caught.value)
    assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "CL_ERR_TRY_AGAIN")
    assert metadata["primary"] == pair.primary.address
    pair.kill_primary()
    wait_for(lambda: health(standby.address) == SERVING, "the standby to take over")


def test_no_acknowledged_synchronous_write_is_lost_when_the_primary_dies(pair: Pair) -> None:
    writers = 4
    with grpc.insecure_channel(pair.primary.address) as channel:
        owner = Client(channel)
        handle = owner.open("ha", attributes(flags=SYNC, max_sections=8))
        for index in range(writers):
            owner.create_section(handle, f"w{index}".encode(), (0).to_bytes(4, "big"))
    standby = pair.start_standby()  # joins late: gets the snapshot first
    acknowledged = [0] * writers
    stop = threading.Event()

    def write(index: int) -> None:
        with grpc.insecure_channel(pair.primary.address) as writer_channel:
            writer = Client(writer_channel)
            mine = writer.open("ha", flags=RW)
            value = 0
            while not stop.is_set():
                value += 1
                try:
                    writer.stub.SectionOverwrite(
                        pb.SectionOverwriteRequest(
                            checkpoint_handle=mine,
                            section_id=sid(f"w{index}".encode()),
                            data_buffer=value.to_bytes(4, "big"),
                        ),
                        timeout=5,
                    )
                except grpc.RpcError:
                    return  # the primary is gone
                acknowledged[index] = value

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    wait_for(lambda: min(acknowledged) >= 20, "writes under load")
    pair.kill_primary()  # SIGKILL under load
    stop.set()
    for thread in threads:
        thread.join(timeout=20)
    wait_for(lambda: health(standby.address) == SERVING, "the standby to take over")
    with grpc.insecure_channel(standby.address) as channel:
        survivor = Client(channel)
        handle = survivor.open("ha", flags=RW)
        for index in range(writers):
            stored = int.from_bytes(survivor.read(handle, f"w{index}".encode()), "big")
            # Every acknowledged write is there (one more may have been applied
            # everywhere but its acknowledgement lost with the primary).
            assert stored in (acknowledged[index], acknowledged[index] + 1), index


def test_synchronize_makes_asynchronous_writes_survive_the_primary(pair: Pair) -> None:
    standby = pair.start_standby()
    with grpc.insecure_channel(pair.primary.address) as channel:
        client = Client(channel)
        handle = client.open("async-ha", attributes(max_sections=4))
        client.create_section(handle, b"s", b"before")
        standby.popen.send_signal(signal.SIGSTOP)  # the standby falls behind
        try:
            client.stub.SectionOverwrite(  # asynchronous: acknowledged without it
                pb.SectionOverwriteRequest(
                    checkpoint_handle=handle, section_id=sid(b"s"), data_buffer=b"synchronized"
                )
            )
            synchronize = threading.Thread(
                target=client.stub.CheckpointSynchronize,
                args=(pb.CheckpointSynchronizeRequest(checkpoint_handle=handle),),
            )
            synchronize.start()
            time.sleep(0.5)
            assert synchronize.is_alive()  # waits for the standby to catch up
        finally:
            standby.popen.send_signal(signal.SIGCONT)
        synchronize.join(timeout=10)
        assert not synchronize.is_alive()
    pair.kill_primary()
    wait_for(lambda: health(standby.address) == SERVING, "the standby to take over")
    with grpc.insecure_channel(standby.address) as channel:
        survivor = Client(channel)
        assert survivor.read(survivor.open("async-ha", flags=RW), b"s") == b"synchronized"


def test_a_dead_standby_does_not_block_synchronous_writes(pair: Pair) -> None:
    standby = pair.start_standby()
    with grpc.insecure_channel(pair.primary.address) as channel:
        client = Client(channel)
        handle = client.open("lonely", attributes(flags=SYNC, max_sections=4))
        standby.popen.kill()
        standby.popen.wait(timeout=10)
        started = time.monotonic()
        client.create_section(handle, b"s", b"still acknowledged")
        client.create_section(handle, b"t", b"and again")
        assert time.monotonic() - started < 10
        assert client.read(handle, b"t") == b"and again"


def test_python_clients_given_both_nodes_reach_whichever_serves(pair: Pair) -> None:
    standby = pair.start_standby()
    both = f"{standby.address},{pair.primary.address}"  # the standby listed first
    with Session.connect(both) as session, Library.connect(both) as library:
        with session.open(
            "follow-me",
            CreationAttributes(max_sections=2, creation_flags=CreationFlags.WR_ALL_REPLICAS),
        ) as checkpoint:
            checkpoint.section_create(b"s", b"written on the primary")
        library.checkpoint_create("follow-me-too")
    pair.kill_primary()
    wait_for(lambda: health(standby.address) == SERVING, "the standby to take over")
    after = f"{pair.primary.address},{standby.address}"  # the dead one listed first
    with Session.connect(after) as session, session.open("follow-me") as checkpoint:
        assert checkpoint.read(b"s") == b"written on the primary"
    with Library.connect(after) as library:
        wait_for(lambda: library.checkpoint_exists("follow-me-too"), "asynchronous library data")


def test_a_batch_larger_than_a_message_reaches_the_standby_whole(pair: Pair) -> None:
    standby = pair.start_standby()
    big = [bytes([index]) * (5 * 1024 * 1024) for index in range(3)]  # one 15 MiB batch
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    with grpc.insecure_channel(pair.primary.address, options=options) as channel:
        client = Client(channel)
        attrs = attributes(flags=SYNC, max_sections=3, max_section_size=6 * 1024 * 1024)
        handle = client.open("big", attrs)
        for index in range(3):
            client.create_section(handle, b"s%d" % index)
        client.stub.CheckpointWrite(
            pb.CheckpointWriteRequest(
                checkpoint_handle=handle,
                io_vector=[
                    t.IOVectorElement(section_id=sid(b"s%d" % index), data_buffer=data)
                    for index, data in enumerate(big)
                ],
            )
        )
    pair.kill_primary()
    wait_for(lambda: health(standby.address) == SERVING, "the standby to take over")
    with grpc.insecure_channel(standby.address, options=options) as channel:
        survivor = Client(channel)
        handle = survivor.open("big", flags=RW)
        for index, data in enumerate(big):
            assert survivor.read(handle, b"s%d" % index) == data
