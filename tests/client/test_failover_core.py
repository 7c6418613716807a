"""The failover core without I/O: what an error means, and the answers of
asynchronous calls lost with a node."""

from __future__ import annotations

import grpc

from cps.client import CLIENT_VERSION, OpenFlags, TryAgainError
from cps.client._failover import (
    Attempt,
    CheckpointRef,
    Core,
    NodeFrozen,
    NotConnected,
    StaleLink,
    Verdict,
    classify,
    reopen_flags,
)
from cps.client._requests import Call
from cps.client._router import Moved, Opened, Received, Router
from cps.client.errors import (
    UNKNOWN_OUTCOME,
    CkptError,
    CkptTimeoutError,
    NoSpaceError,
    error_for,
)
from cps.v1 import checkpoint_service_pb2 as pb
from cps.v1 import types_pb2 as t


class Held:
    def __init__(self, ref: CheckpointRef) -> None:
        self.ref = ref


def test_what_an_error_means() -> None:
    from_node = error_for("CL_ERR_TRY_AGAIN", "moving", code=grpc.StatusCode.UNAVAILABLE)
    from_node.from_node = True
    assert classify(from_node) is Verdict.BUSY
    refused = TryAgainError("failed to connect to all addresses; Connection refused")
    assert classify(refused) is Verdict.UNREACHABLE
    broken = TryAgainError("Stream removed (Socket closed)")
    assert classify(broken) is Verdict.BROKEN
    assert classify(NodeFrozen("frozen")) is Verdict.BROKEN
    assert classify(NotConnected("left")) is Verdict.UNREACHABLE
    assert classify(StaleLink("moved")) is Verdict.REBUILD
    assert classify(CkptTimeoutError("deadline")) is Verdict.EXPIRED
    no_space: CkptError = NoSpaceError("full")
    no_space.from_node = True
    assert classify(no_space) is Verdict.RAISE
    assert reopen_flags(OpenFlags.READ | OpenFlags.WRITE | OpenFlags.CREATE) == (
        OpenFlags.READ | OpenFlags.WRITE
    )


def test_a_non_idempotent_call_broken_mid_way_is_an_unknown_outcome() -> None:
    core = Core(Router(Held), CLIENT_VERSION, 5.0, None)  # no failover
    plan = core.call(lambda: Call("SectionCreate", None), core.deadline())
    effect = next(plan)
    assert isinstance(effect, Attempt)
    try:
        plan.throw(TryAgainError("Socket closed"))
    except CkptTimeoutError as error:
        assert error.metadata["cause"] == UNKNOWN_OUTCOME
    else:
        raise AssertionError("retried")


def test_lost_asynchronous_answers_become_try_again_callbacks() -> None:
    router: Router[Held] = Router(Held)
    router.expect_open(7, "a", OpenFlags.READ)
    router.expect_synchronize(8)
    router.expect_synchronize(9)
    router.received(pb.Callback(synchronize=t.CheckpointSynchronizeCallback(invocation=9)))
    lost = router.unanswered()
    assert [c.WhichOneof("kind") for c in lost] == ["open", "synchronize"]
    assert lost[0].open.error_reason == "CL_ERR_TRY_AGAIN"
    assert lost[1].synchronize.error_reason == "CL_ERR_TRY_AGAIN"
    assert lost[1].synchronize.invocation == 8
    assert router.unanswered() == []
    event = router.route(Received(1, lost[0]))
    assert isinstance(event, Opened)
    assert isinstance(event.error, TryAgainError) and event.checkpoint is None
    assert router.route(Moved("b:1")) == Moved("b:1")
