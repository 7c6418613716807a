"""One gRPC channel per peer address, shared by everything that talks to
that peer (replication stream, forwarded calls, seals and fetches)."""

from __future__ import annotations

from typing import Any

import grpc

from cps.peer.v1 import peer_pb2_grpc

# Notice a peer that stopped answering without closing the connection
# (paused, or cut off) within about two seconds.
_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.keepalive_time_ms", 1000),
    ("grpc.keepalive_timeout_ms", 1000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # Reconnect fast after a peer restarts.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.min_reconnect_backoff_ms", 100),
]


class Channels:
    def __init__(
        self,
        max_message_bytes: int,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.options = [
            *_OPTIONS,
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        self.credentials = credentials
        # Sent with every call (the cluster secret when TLS is off).
        self.metadata = metadata
        self._channels: dict[str, grpc.aio.Channel] = {}

    def stub(self, address: str) -> peer_pb2_grpc.PeerServiceStub:
        channel = self._channels.get(address)
        if channel is None:
            if self.credentials is None:
                channel = grpc.aio.insecure_channel(address, options=self.options)
            else:
                channel = grpc.aio.secure_channel(address, self.credentials, options=self.options)
            self._channels[address] = channel
        return peer_pb2_grpc.PeerServiceStub(channel)

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close(grace=None)
