"""Replication of the store to standby nodes (the primary's side).

Every batch the primary commits is published to each follower, in order,
after a snapshot of the whole store. A batch that holds a change of a
synchronous checkpoint is acknowledged to clients only once every follower
has acknowledged it; a follower that does not within the timeout is dropped
(it is no longer a live replica) and must follow again, from a new snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from cps.v1 import replica_service_pb2 as pb

from .sqlite_store import Statement

log = logging.getLogger("cps.replication")

# Batches a follower may lag behind before it is dropped.
MAX_LAG = 10_000


# A batch is sent in messages of about this many bytes of parameters (a
# single larger statement goes alone), under the gRPC message size limit.
MESSAGE_BYTES = 4 * 1024 * 1024


def to_messages(
    sequence: int, statements: Sequence[Statement], *, snapshot: bool = False
) -> list[pb.FollowResponse]:
    """One batch as one or more messages; all but the last say ``more``."""
    messages: list[pb.FollowResponse] = []
    current: list[pb.ReplicationStatement] = []
    size = 0
    for sql, parameters in statements:
        statement = pb.ReplicationStatement(sql=sql, parameters=[_value(v) for v in parameters])
        weight = len(sql) + sum(len(v) for v in parameters if isinstance(v, bytes | str))
        if current and size + weight > MESSAGE_BYTES:
            messages.append(_message(sequence, snapshot, current, more=True))
            current, size = [], 0
        current.append(statement)
        size += weight
    messages.append(_message(sequence, snapshot, current, more=False))
    return messages


def _message(
    sequence: int, snapshot: bool, statements: list[pb.ReplicationStatement], *, more: bool
) -> pb.FollowResponse:
    return pb.FollowResponse(sequence=sequence, snapshot=snapshot, statements=statements, more=more)


def _value(value: Any) -> pb.ReplicationValue:
    if value is None:
        return pb.ReplicationValue(is_null=True)
    if isinstance(value, bool | int):
        return pb.ReplicationValue(integer=int(value))
    if isinstance(value, float):
        return pb.ReplicationValue(real=value)
    if isinstance(value, str):
        return pb.ReplicationValue(text=value)
    return pb.ReplicationValue(blob=bytes(value))


def from_message(message: pb.FollowResponse) -> list[Statement]:
    return [
        (statement.sql, [_python(value) for value in statement.parameters])
        for statement in message.statements
    ]


def _python(value: pb.ReplicationValue) -> Any:
    kind = value.WhichOneof("kind")
    return None if kind in (None, "is_null") else getattr(value, kind)


class Follower:
    def __init__(self, name: str) -> None:
        self.name = name
        self.queue: asyncio.Queue[pb.FollowResponse | None] = asyncio.Queue()
        self.acknowledged = 0
        self.dropped = False

    def drop(self, why: str) -> None:
        if not self.dropped:
            log.warning("follower dropped", extra={"follower": self.name, "why": why})
            self.dropped = True
            self.queue.put_nowait(None)  # ends its stream


class Followers:
    def __init__(self, ack_timeout: float) -> None:
        self.ack_timeout = ack_timeout
        self.members: dict[str, Follower] = {}
        self._changed = asyncio.Event()

    def add(self, name: str, snapshot: list[pb.FollowResponse]) -> Follower:
        previous = self.members.get(name)
        if previous is not None:
            previous.drop("followed again")
        follower = Follower(name)
        follower.acknowledged = snapshot[0].sequence - 1
        for message in snapshot:
            follower.queue.put_nowait(message)
        self.members[name] = follower
        log.info("follower joined", extra={"follower": name, "sequence": snapshot[0].sequence})
        return follower

    def remove(self, follower: Follower) -> None:
        if self.members.get(follower.name) is follower:
            del self.members[follower.name]
        follower.drop("stream ended")
        self._notify()

    def publish(self, sequence: int, statements: Sequence[Statement]) -> None:
        if not self.members:
            return
        messages = to_messages(sequence, statements)
        for follower in list(self.members.values()):
            if follower.queue.qsize() >= MAX_LAG:
                follower.drop(f"more than {MAX_LAG} messages behind")
                self.remove(follower)
            else:
                for message in messages:
                    follower.queue.put_nowait(message)

    def acknowledge(self, name: str, sequence: int) -> None:
        follower = self.members.get(name)
        if follower is not None and sequence > follower.acknowledged:
            follower.acknowledged = sequence
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_acknowledged(self, sequence: int) -> None:
        """Until every follower has acknowledged ``sequence``; those that do not
        within the timeout are dropped."""
        deadline = asyncio.get_running_loop().time() + self.ack_timeout
        while True:
            behind = [f for f in self.members.values() if f.acknowledged < sequence]
            if not behind:
                return
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                for follower in behind:
                    follower.drop(f"no acknowledgement of batch {sequence} in {self.ack_timeout}s")
                    self.remove(follower)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
