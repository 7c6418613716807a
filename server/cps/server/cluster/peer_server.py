"""The PeerService servicer: what other nodes of the cluster ask of this
one. Served only to peers (see PeerGate); a node never does more for a
peer than the operations of the contract."""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from cps.peer.v1 import peer_pb2 as pb
from cps.peer.v1 import peer_pb2_grpc as pb_grpc
from cps.server.core.calls import Call
from cps.server.core.directory import Member
from cps.server.core.errors import CkptError, ErrorCode
from cps.server.core.replica import Ref
from cps.server.core.replicas import Replicas
from cps.server.core.rules import Answer
from cps.server.status import to_status

from . import codec
from .backup import Backups

log = logging.getLogger("cps.peer")

# grpc.aio.ServicerContext; grpc ships no type hints.
Context: TypeAlias = Any
# Runs a call on this node's active replica (service.active.ActiveReplicas.run).
Execute = Callable[[Ref, Call], Awaitable[Answer | bytes]]
SECRET_HEADER = "x-cps-cluster-secret"


class PeerGate:
    """Who may call the peer service (docs/security.md): with mutual TLS, a
    caller whose certificate the peer CA signed (the port already checked the
    chain against the client and peer CAs; this tells the two apart); with a
    cluster secret, a caller that sends it in every call's metadata. A node
    configured with both requires both."""

    def __init__(self, secret: bytes | None, peer_ca: bytes | None = None) -> None:
        self.secret = secret
        self.authorities = _certificates(peer_ca) if peer_ca else []

    async def check(self, context: Context) -> None:
        if self.authorities and not self._signed_by_peer_ca(context):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, "this certificate is not a peer's"
            )
        if self.secret is not None:
            given = dict(context.invocation_metadata() or ()).get(SECRET_HEADER, "")
            if not hmac.compare_digest(str(given).encode(), self.secret):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "not a peer of this cluster")

    def _signed_by_peer_ca(self, context: Context) -> bool:
        presented = (context.auth_context() or {}).get("x509_pem_cert") or []
        if not presented:
            return False
        try:
            leaf = x509.load_pem_x509_certificate(presented[0])
        except ValueError:
            return False
        for authority in self.authorities:
            try:
                leaf.verify_directly_issued_by(authority)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return True
        return False


def _certificates(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem)


class PeerService(pb_grpc.PeerServiceServicer):
    def __init__(
        self,
        me: Callable[[], Member],
        replicas: Replicas,
        backups: Backups,
        execute: Execute,
        stop_active: Callable[[Ref], None],
        gate: PeerGate,
    ) -> None:
        self.me = me
        self.replicas = replicas
        self.backups = backups
        self.execute = execute
        self.stop_active = stop_active
        self.gate = gate

    async def Replicate(
        self, request_iterator: AsyncIterator[pb.ReplicateRequest], context: Context
    ) -> AsyncIterator[pb.ReplicateResponse]:
        await self.gate.check(context)
        sender: Member | None = None
        async for request in request_iterator:
            kind = request.WhichOneof("kind")
            if kind == "hello":
                receiver = codec.member_of(request.hello.receiver)
                if receiver != self.me():
                    # A stream meant for an earlier run of this node.
                    await context.abort(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"this is {self.me()}, not {receiver}",
                    )
                sender = codec.member_of(request.hello.sender)
                continue
            if sender is None:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "hello first")
                return
            for answer in self.backups.apply(sender, request.batch):
                yield answer

    async def Execute(self, request: pb.ExecuteRequest, context: Context) -> pb.ExecuteResponse:
        await self.gate.check(context)
        try:
            call = codec.call_of(request.call)
            answer = await self.execute(codec.ref_of(request.ref), call)
        except CkptError as error:
            await context.abort_with_status(to_status(error))
            raise  # unreachable
        except (ValueError, TypeError) as error:
            bad = CkptError(ErrorCode.INVALID_PARAM, f"undecodable call: {error}")
            await context.abort_with_status(to_status(bad))
            raise  # unreachable
        return codec.answer_message(call, answer)

    async def Seal(self, request: pb.SealRequest, context: Context) -> pb.SealResponse:
        await self.gate.check(context)
        ref = codec.ref_of(request.ref)
        answer = self.backups.seal(ref, request.epoch)
        if answer.held and request.epoch > answer.epoch:
            # A new active: if this node still served as the active, it stops.
            self.stop_active(ref)
            log.info(
                "sealed by a new active",
                extra={"checkpoint": ref.name, "epoch": request.epoch, "seq": answer.seq},
            )
        return answer

    async def Fetch(
        self, request: pb.FetchRequest, context: Context
    ) -> AsyncIterator[pb.FetchResponse]:
        await self.gate.check(context)
        ref = codec.ref_of(request.ref)
        replica = self.replicas.find(ref)
        if replica is None:
            error = CkptError(ErrorCode.NOT_EXIST, f"no replica of {ref.name!r} here")
            await context.abort_with_status(to_status(error))
            return
        parts = list(codec.snapshot_parts(replica))  # all at once: one consistent state
        for part in parts:
            yield pb.FetchResponse(part=part)
