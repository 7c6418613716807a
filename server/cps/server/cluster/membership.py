"""This node's membership of the cluster: its key under a lease kept alive,
the deadline past which it may no longer act as an active replica, and
the live members (filled in by the directory's watch).

The node keeps its incarnation for the life of its process: a lease that
expired (the node was paused or cut off from etcd) is granted again and
the key written again with the same incarnation, so the replicas this
process still holds stay known; the director has meanwhile moved away
whatever it had to. A restarted process is a new incarnation and holds
nothing of the old one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from cps.server.core.directory import Member
from cps.server.core.errors import CkptError, ErrorCode

from .etcd import Etcd, EtcdError, KeepAlive
from .records import Keys, MemberInfo, member_value

log = logging.getLogger("cps.membership")


class Membership:
    def __init__(
        self,
        etcd: Etcd,
        keys: Keys,
        me: Member,
        address: str,
        version: str,
        ttl_seconds: int,
        host: str = "",
    ) -> None:
        self.etcd = etcd
        self.keys = keys
        self.me = me
        self.address = address
        self.version = version
        # The workers of one node share a host (docs/workers.md); a node of
        # one process is a host of its own.
        self.host = host or me.name
        self.ttl = ttl_seconds
        # Stop acting as active this long before the lease can expire at
        # etcd (clock rates differ a little between machines).
        self.margin = max(0.1, ttl_seconds * 0.1)
        self.lease_id = 0
        self.infos: dict[str, MemberInfo] = {}
        self._keepalive: KeepAlive | None = None
        self._task: asyncio.Task[None] | None = None
        self.on_lease_lost: Callable[[], None] = lambda: None
        self.on_lease_back: Callable[[], None] = lambda: None

    # -- service.ports.Lease -------------------------------------------------

    def check(self) -> None:
        if not self.valid():
            raise CkptError(
                ErrorCode.TRY_AGAIN,
                f"node {self.me.name} lost its lease on the cluster: try another node",
                metadata={"cause": "lease_lost"},
            )

    def valid(self) -> bool:
        keepalive = self._keepalive
        return (
            keepalive is not None
            and not keepalive.expired.is_set()
            and time.monotonic() < keepalive.deadline - self.margin
        )

    def remaining(self) -> float | None:
        """Seconds this node may still act as an active replica (0 past its
        deadline; None before it first joined)."""
        keepalive = self._keepalive
        if keepalive is None:
            return None
        if keepalive.expired.is_set():
            return 0.0
        return max(0.0, keepalive.deadline - self.margin - time.monotonic())

    # -- the member key --------------------------------------------------------------

    async def join(self) -> None:
        """Take a lease and write this node's key; then keep both alive."""
        await self._register()
        self._task = asyncio.create_task(self._keep())

    async def _register(self) -> None:
        lease = await self.etcd.grant_lease(self.ttl)
        self.lease_id = lease.id
        info = MemberInfo(self.me, self.address, self.version, self.host)
        await self.etcd.put(self.keys.member(self.me.name), member_value(info), lease=lease.id)
        self._keepalive = self.etcd.keep_alive(lease)
        log.info(
            "joined the cluster",
            extra={"member": str(self.me), "address": self.address, "lease": self.lease_id},
        )

    async def _keep(self) -> None:
        while True:
            assert self._keepalive is not None
            await self._keepalive.expired.wait()
            log.warning("lease lost", extra={"member": str(self.me), "lease": self.lease_id})
            self.on_lease_lost()
            while True:
                try:
                    await self._keepalive.stop()
                    await self._register()
                    break
                except EtcdError as error:
                    log.warning("cannot join again yet", extra={"why": str(error)})
                    await asyncio.sleep(min(1.0, self.ttl / 3))
            self.on_lease_back()

    async def leave(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._keepalive is not None:
            await self._keepalive.stop()
        if self.lease_id:
            try:
                await self.etcd.revoke(self.lease_id)  # others take over at once
            except EtcdError as error:
                log.warning("lease not revoked", extra={"why": str(error)})

    # -- the live members ------------------------------------------------------------

    @property
    def live(self) -> Mapping[str, Member]:
        return {name: info.member for name, info in self.infos.items()}

    @property
    def hosts(self) -> Mapping[str, str]:
        """The host of each live member, by name (this node's own included)."""
        hosts = {name: info.host for name, info in self.infos.items()}
        hosts[self.me.name] = self.host
        return hosts

    def address_of(self, member: Member) -> str | None:
        info = self.infos.get(member.name)
        if info is None or info.member != member:
            return None
        return info.address
