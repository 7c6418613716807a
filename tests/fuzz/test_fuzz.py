"""Fuzz every RPC of the node's client services with seeded random and
adversarial requests, and check after every few calls that a canary
checkpoint written by another session is unchanged.

Fails on: any UNKNOWN or INTERNAL status (a server exception), a call that
outlives its deadline, a change to the canary, the server exiting, or its
memory growing past a bound. Bounded in requests and time so CI runs it.

    CPS_FUZZ_SEED=123 pytest tests/fuzz        # replay a run
    CPS_FUZZ_SECONDS=300 CPS_FUZZ_REQUESTS=100000 pytest tests/fuzz   # longer
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.protobuf.timestamp_pb2 import Timestamp

from cps.v1 import checkpoint_service_pb2 as pb
from cps.v1 import checkpoint_service_pb2_grpc as pb_grpc
from cps.v1 import library_service_pb2 as lib
from cps.v1 import library_service_pb2_grpc as lib_grpc
from cps.v1 import types_pb2 as t
from tests.processes import ServerProcess

from .generate import Generator, Pools

SERVICES = [
    service for module in (pb, lib) for service in module.DESCRIPTOR.services_by_name.values()
]
METHODS: list[MethodDescriptor] = [method for service in SERVICES for method in service.methods]

# Calls that end what others build (sessions, handles, checkpoints) come
# less often, so the state the other calls work on lives a while.
WEIGHTS = [
    0.2 if any(word in method.name for word in ("Finalize", "Close", "Delete")) else 1.0
    for method in METHODS
]

SEED = int(os.environ.get("CPS_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
REQUESTS = int(os.environ.get("CPS_FUZZ_REQUESTS", "8000"))
SECONDS = float(os.environ.get("CPS_FUZZ_SECONDS", "40"))
CANARY_EVERY = 50
DEADLINE = 10.0  # per call; generous for a loaded 2-core CI machine
# RSS may grow by this much after the warm-up (the fuzz's own checkpoints,
# SQLite's cache, allocator slack) and the peak may exceed the start by the
# second bound; a read or a message that allocates what was asked rather
# than what is held goes far beyond either.
GROWTH_BOUND = 96 * 1024**2
PEAK_BOUND = 192 * 1024**2
BAD_CODES = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED}
CANARY = f"fuzz-canary-{SEED}"
LIBRARY_CANARY = f"fuzz-canary-library-{SEED}"


def _memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in bytes."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return values


class Canary:
    """A checkpoint (sections of known bytes) and a library checkpoint,
    written by their own session before the fuzz starts; ``snapshot`` reads
    back everything a client can see of them."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.stub = pb_grpc.CheckpointServiceStub(channel)
        self.library = lib_grpc.LibraryCheckpointServiceStub(channel)
        version = t.Version(release_code="B", major_version=1)
        self.session = self.stub.Initialize(pb.InitializeRequest(version=version)).service_handle
        attributes = t.CheckpointCreationAttributes(
            creation_flags=[t.CREATION_FLAG_WR_ALL_REPLICAS],
            checkpoint_size=64 * 1024,
            max_sections=8,
            max_section_size=16 * 1024,
            max_section_id_size=16,
            retention_duration=t.RetentionDuration(forever=True),
        )
        self.handle = self.stub.CheckpointOpen(
            pb.CheckpointOpenRequest(
                service_handle=self.session,
                checkpoint_name=CANARY,
                checkpoint_open_flags=[t.OPEN_FLAG_READ, t.OPEN_FLAG_WRITE, t.OPEN_FLAG_CREATE],
                checkpoint_creation_attributes=attributes,
            ),
            timeout=DEADLINE,
        ).checkpoint_handle
        rng = random.Random(SEED)
        self.sections = [b"1", b"canary", bytes(range(16))]
        for index, section_id in enumerate(self.sections):
            self.stub.SectionCreate(
                pb.SectionCreateRequest(
                    checkpoint_handle=self.handle,
                    section_creation_attributes=t.SectionCreationAttributes(
                        section_id=t.SectionId(id=section_id),
                        expiration_time=(
                            t.ExpirationTime(at=Timestamp(seconds=4_000_000_000, nanos=7))
                            if index == 0
                            else t.ExpirationTime(never=True)
                        ),
                    ),
                    initial_data=rng.randbytes(1000 * (index + 1)),
                ),
                timeout=DEADLINE,
            )
        self.library_handle = self.library.LibraryInitialize(
            lib.LibraryInitializeRequest(), timeout=DEADLINE
        ).library_handle
        where = {"library_handle": self.library_handle, "checkpoint_name": LIBRARY_CANARY}
        self.library.LibraryCkptCreate(lib.LibraryCkptCreateRequest(**where), timeout=DEADLINE)
        self.library.LibraryCkptDataSetCreate(
            lib.LibraryCkptDataSetCreateRequest(**where, dataset_id=3, group_id=4, order=5),
            timeout=DEADLINE,
        )
        self.library.LibraryCkptDataSetWrite(
            lib.LibraryCkptDataSetWriteRequest(**where, dataset_id=3, data=rng.randbytes(777)),
            timeout=DEADLINE,
        )
        self.library.LibraryCkptElementCreate(
            lib.LibraryCkptElementCreateRequest(**where, dataset_id=3), timeout=DEADLINE
        )
        self.library.LibraryCkptElementWrite(
            lib.LibraryCkptElementWriteRequest(
                **where, dataset_id=3, element_id=b"e", data=rng.randbytes(55)
            ),
            timeout=DEADLINE,
        )
        self.where = where
        self.expected = self.snapshot()

    def snapshot(self) -> list[Message]:
        stub = self.stub
        seen: list[Message] = [
            stub.CheckpointStatusGet(
                pb.CheckpointStatusGetRequest(checkpoint_handle=self.handle), timeout=DEADLINE
            )
        ]
        iteration = stub.SectionIterationInitialize(
            pb.SectionIterationInitializeRequest(
                checkpoint_handle=self.handle, sections_chosen=t.SECTIONS_CHOSEN_ANY
            ),
            timeout=DEADLINE,
        ).section_iteration_handle
        while True:
            step = stub.SectionIterationNext(
                pb.SectionIterationNextRequest(section_iteration_handle=iteration),
                timeout=DEADLINE,
            )
            if step.no_more_sections:
                break
            seen.append(step)
        stub.SectionIterationFinalize(
            pb.SectionIterationFinalizeRequest(section_iteration_handle=iteration),
            timeout=DEADLINE,
        )
        seen.append(
            stub.CheckpointRead(
                pb.CheckpointReadRequest(
                    checkpoint_handle=self.handle,
                    io_vector=[
                        t.IOVectorElement(section_id=t.SectionId(id=section_id))
                        for section_id in self.sections
                    ],
                ),
                timeout=DEADLINE,
            )
        )
        seen.append(
            self.library.LibraryCkptDataSetRead(
                lib.LibraryCkptDataSetReadRequest(**self.where, dataset_id=3), timeout=DEADLINE
            )
        )
        return seen


@dataclass
class Outcome:
    method: str
    code: grpc.StatusCode
    details: str
    raw: bool


class Fuzzer:
    def __init__(self, channel: grpc.Channel, rng: random.Random, forbidden: set[str]) -> None:
        self.channel = channel
        self.rng = rng
        self.pools = Pools()
        self.generate = Generator(rng, self.pools, forbidden)
        self.codes: Counter[tuple[str, str]] = Counter()

    def call(self, method: MethodDescriptor) -> Outcome:
        path = f"/{method.containing_service.full_name}/{method.name}"
        request = self.generate.request(method.input_type)
        raw = self.rng.random() < 0.12
        payload = self.generate.mutated(request) if raw else request.SerializeToString()
        decode = GetMessageClass(method.output_type).FromString
        if method.server_streaming:
            return self._stream(method, path, payload, raw)
        callable_ = self.channel.unary_unary(path, response_deserializer=decode)
        try:
            response = callable_(payload, timeout=DEADLINE)
        except grpc.RpcError as error:
            return self._outcome(method, error.code(), error.details() or "", raw)
        self.pools.learn(response)
        return self._outcome(method, grpc.StatusCode.OK, "", raw)

    def _stream(
        self,
        method: MethodDescriptor,
        path: str,
        payload: bytes,
        raw: bool,
    ) -> Outcome:
        """A stream that is still open after a moment is fine (it waits for
        events): it is cancelled. One that ended must have ended cleanly."""
        callable_ = self.channel.unary_stream(path)
        call = callable_(payload, timeout=DEADLINE)
        ended = threading.Event()
        call.add_done_callback(lambda _: ended.set())
        if not ended.wait(0.05):
            call.cancel()
            return self._outcome(method, grpc.StatusCode.OK, "open", raw)
        return self._outcome(method, call.code(), call.details() or "", raw)

    def _outcome(
        self, method: MethodDescriptor, code: grpc.StatusCode, details: str, raw: bool
    ) -> Outcome:
        self.codes[(method.name, code.name)] += 1
        return Outcome(method.full_name, code, details, raw)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    # Smaller limits than the defaults so adversarial sizes meet them sooner.
    with ServerProcess.start(
        "--max-reserved-bytes", str(256 * 1024**2), "--max-section-size", str(4 * 1024**2)
    ) as process:
        yield process


def test_fuzz_every_rpc(server: ServerProcess) -> None:
    print(f"fuzz seed {SEED}: replay with CPS_FUZZ_SEED={SEED}")
    pid = server.popen.pid
    with (
        grpc.insecure_channel(server.address) as canary_channel,
        grpc.insecure_channel(server.address) as channel,
    ):
        canary = Canary(canary_channel)
        rng = random.Random(SEED)
        fuzzer = Fuzzer(channel, rng, {CANARY, LIBRARY_CANARY})
        started = time.monotonic()
        baseline: dict[str, int] | None = None
        done = 0
        for done in range(1, REQUESTS + 1):
            # Every method early on (coverage), then at random.
            method = METHODS[done - 1] if done <= len(METHODS) else rng.choices(METHODS, WEIGHTS)[0]
            before = time.monotonic()
            outcome = fuzzer.call(method)
            elapsed = time.monotonic() - before
            where = f"seed {SEED}, request {done}: {outcome.method} (raw: {outcome.raw})"
            assert outcome.code not in BAD_CODES, f"{where}: {outcome.code.name} {outcome.details}"
            assert elapsed < DEADLINE, f"{where}: took {elapsed:.1f} s"
            if done % CANARY_EVERY == 0:
                assert server.popen.poll() is None, f"{where}: the server exited"
                assert canary.snapshot() == canary.expected, f"{where}: the canary changed"
            if done == REQUESTS // 5:
                baseline = _memory(pid)
            if time.monotonic() - started > SECONDS:
                break
        assert canary.snapshot() == canary.expected, f"seed {SEED}: the canary changed"
        end = _memory(pid)
    assert server.popen.poll() is None, f"seed {SEED}: the server exited"
    called = {name for name, _ in fuzzer.codes}
    assert called == {method.name for method in METHODS}, f"seed {SEED}: not every RPC was called"
    if baseline is not None:
        growth = end["VmRSS"] - baseline["VmRSS"]
        assert growth < GROWTH_BOUND, f"seed {SEED}: RSS grew by {growth >> 20} MiB"
        peak = end["VmHWM"] - baseline["VmRSS"]
        assert peak < PEAK_BOUND, f"seed {SEED}: peak RSS {peak >> 20} MiB above the warm-up"
    log = server.log_text()
    assert "Traceback" not in log, f"seed {SEED}: the server logged a traceback"
    print(f"{done} requests in {time.monotonic() - started:.1f} s: {sorted(fuzzer.codes.items())}")
