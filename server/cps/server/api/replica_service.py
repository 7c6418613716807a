"""ReplicaService servicer: standbys follow this node's store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from cps.server.storage.journal import Journal
from cps.server.storage.replication import Followers, to_messages
from cps.v1 import replica_service_pb2 as pb
from cps.v1 import replica_service_pb2_grpc as pb_grpc


class ReplicaService(pb_grpc.ReplicaServiceServicer):
    def __init__(self, journal: Journal, followers: Followers) -> None:
        self.journal = journal
        self.followers = followers

    async def Follow(
        self, request: pb.FollowRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.FollowResponse]:
        if self.journal.standby:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, "this node is a standby: follow its primary"
            )
            return
        # Snapshot and registration with no await between them: the follower
        # gets every batch committed after the snapshot's sequence.
        snapshot = to_messages(self.journal.batches, self.journal.snapshot(), snapshot=True)
        follower = self.followers.add(request.node_name, snapshot)
        try:
            while True:
                batch = await follower.queue.get()
                if batch is None:
                    await context.abort(grpc.StatusCode.ABORTED, "dropped: follow again")
                    return
                yield batch
        finally:
            self.followers.remove(follower)

    async def Acknowledge(
        self, request: pb.AcknowledgeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.AcknowledgeResponse:
        self.followers.acknowledge(request.node_name, request.sequence)
        return pb.AcknowledgeResponse()
