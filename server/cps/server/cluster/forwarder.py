"""Calls on a checkpoint whose active replica is another node."""

from __future__ import annotations

import grpc

from cps.peer.v1 import peer_pb2 as pb
from cps.server.core import calls as c
from cps.server.core.directory import Record
from cps.server.core.errors import not_active, unknown_outcome
from cps.server.core.replica import Ref
from cps.server.core.rules import Answer
from cps.server.status import seed_error_of

from . import codec
from .channels import Channels
from .replication import Membership

# Calls that may run twice: after a transport failure they are tried again
# wherever the active is by then; any other call's outcome is unknown.
_REPEATABLE = (
    c.ReadCall,
    c.StatusCall,
    c.IterateCall,
    c.DescribeCall,
    c.SynchronizeCall,
    c.OpenersCall,  # an absolute count
)


class Forwarder:
    def __init__(self, members: Membership, channels: Channels, timeout: float) -> None:
        self.members = members
        self.channels = channels
        self.timeout = timeout

    async def call(self, record: Record, call: c.Call) -> Answer | bytes:
        active = record.active
        address = None if active is None else self.members.address_of(active)
        if address is None:
            raise not_active(record.name, str(active))  # gone: wait for the next one
        request = pb.ExecuteRequest(
            ref=codec.ref_message(Ref(record.name, record.incarnation)),
            epoch=record.epoch,
            call=codec.call_message(call),
        )
        stub = self.channels.stub(address)
        try:
            response: pb.ExecuteResponse = await stub.Execute(
                request, timeout=self.timeout, metadata=self.channels.metadata or None
            )
        except grpc.aio.AioRpcError as error:
            seed = seed_error_of(error)
            if seed is not None:
                raise seed from None
            if isinstance(call, _REPEATABLE) or _never_sent(error):
                raise not_active(record.name, str(active)) from None
            raise unknown_outcome(
                record.name, f"its active replica {active} stopped answering ({error.code().name})"
            ) from None
        return codec.answer_of(response)


def _never_sent(error: grpc.aio.AioRpcError) -> bool:
    """The call did not reach the active: no connection could be made (grpc
    says so in the details), or the peer refused to talk to us."""
    if error.code() is grpc.StatusCode.UNAUTHENTICATED:
        return True
    details = (error.details() or "").lower()
    return error.code() is grpc.StatusCode.UNAVAILABLE and "failed to connect" in details
