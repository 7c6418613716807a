"""A small typed asyncio client of etcd's v3 gRPC API (KV, Lease, Watch, Status).

Imported only when the node runs with --etcd-endpoints. It speaks to etcd
through our own wire-compatible stubs (cps.server.cluster.etcdpb) over
grpc.aio, on the node's event loop. docs/etcd-client.md has the reasoning.

Endpoints and failover: one gRPC channel per endpoint; the client uses one
"current" endpoint and moves to the next one when a call fails with
UNAVAILABLE or times out. Every call carries etcd's "hasleader" metadata,
so a member cut from its quorum answers at once with "no leader" (instead
of holding the request until its own timeout) and the client moves on. A
call is retried on another endpoint within its deadline only when it cannot
have been applied (a read, or a write that never reached a member or was
refused before any proposal); a write whose outcome is unknown raises
EtcdUnavailable(outcome_unknown=True) and leaves the decision to the caller.

Errors: every grpc error is turned into an EtcdError subclass; no grpc
exception reaches the caller (the original one is kept as __cause__).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal, TypeVar

import grpc
from grpc import aio

from cps.server.cluster.etcdpb import kv_pb2, rpc_pb2, rpc_pb2_grpc

log = logging.getLogger(__name__)

_T = TypeVar("_T")

DEFAULT_CALL_TIMEOUT: Final = 2.0
DEFAULT_PAGE_SIZE: Final = 1000

# etcd's rpctypes.MetadataRequireLeaderKey / MetadataHasLeader: a member
# without a leader rejects the call at once with "etcdserver: no leader".
_REQUIRE_LEADER: Final = (("hasleader", "true"),)

_CHANNEL_OPTIONS: Final = (
    # Find a dead connection under an idle stream (a watch) in about 15 s.
    # etcd refuses pings more often than every 5 s (--grpc-keepalive-min-time).
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
    # Reconnect to a restarted member within about a second, and give up a
    # connection attempt that hangs (a blackholed member) after 3 s.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
    ("grpc.min_reconnect_backoff_ms", 3_000),
    # A Range page can be large (values up to etcd's 1.5 MiB request limit).
    ("grpc.max_receive_message_length", 128 * 1024 * 1024),
    # Connections of their own: two clients in one process are two nodes.
    ("grpc.use_local_subchannel_pool", 1),
)

# Details of UNAVAILABLE errors after which the request was certainly not
# applied: it never left the client, or a member rejected it up front.
_NOT_APPLIED: Final = (
    "failed to connect to all addresses",
    "Connection refused",
    "etcdserver: no leader",
    "etcdserver: too many requests",
    "etcdserver: not capable",
)

# Backoff between rounds over every endpoint, and between stream reopenings.
_BACKOFF_FIRST: Final = 0.05
_BACKOFF_MAX: Final = 1.0


# --- errors ---------------------------------------------------------------


class EtcdError(Exception):
    """Base of every error the client raises."""


class EtcdUnavailable(EtcdError):
    """No member could serve the call in time; trying again later may work.

    outcome_unknown: a write may or may not have been applied (the request
    may have reached etcd before the connection broke or the deadline hit).
    Never set for reads, nor for writes known not to have been applied.
    """

    def __init__(self, message: str, *, outcome_unknown: bool = False) -> None:
        super().__init__(message)
        self.outcome_unknown = outcome_unknown


class EtcdTimeout(EtcdUnavailable):
    """The call's deadline passed."""


class Compacted(EtcdError):
    """The requested revision was compacted; `revision` is the oldest one still
    available (0 when etcd did not say). List again, then watch from there."""

    def __init__(self, revision: int, message: str = "") -> None:
        super().__init__(message or f"revision compacted (oldest available: {revision})")
        self.revision = revision


class LeaseNotFound(EtcdError):
    """The lease does not exist (expired or revoked): from put or a txn that
    attaches a key to it, or from revoke."""


class EtcdRequestError(EtcdError):
    """etcd rejected the request itself (invalid, too large, not permitted, ...):
    trying again will not help."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details


class EtcdClosed(EtcdError):
    """The client was closed."""


def _map_error(error: aio.AioRpcError, what: str, address: str, *, write: bool) -> EtcdError:
    code = error.code()
    details = str(error.details() or "")
    where = f"etcd {what} via {address}: {details}"
    if code == grpc.StatusCode.UNAVAILABLE:
        applied_maybe = write and not any(marker in details for marker in _NOT_APPLIED)
        return EtcdUnavailable(where, outcome_unknown=applied_maybe)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED or (
        code == grpc.StatusCode.UNKNOWN and "context deadline exceeded" in details
    ):
        return EtcdTimeout(where, outcome_unknown=write)
    if code == grpc.StatusCode.CANCELLED:
        return EtcdUnavailable(where, outcome_unknown=write)
    if code == grpc.StatusCode.OUT_OF_RANGE and "compacted" in details:
        return Compacted(0, where)
    if code == grpc.StatusCode.NOT_FOUND and "lease not found" in details:
        return LeaseNotFound(where)
    return EtcdRequestError(code.name, where)


# --- values ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_pb(cls, kv: kv_pb2.KeyValue) -> KeyValue:
        return cls(
            key=kv.key,
            value=kv.value,
            create_revision=kv.create_revision,
            mod_revision=kv.mod_revision,
            version=kv.version,
            lease=kv.lease,
        )


class EventType(enum.Enum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    # PUT: the new key-value; DELETE: the key (value empty), mod_revision = the deletion's.
    kv: KeyValue
    # The key-value before the event, when the watch asked for prev_kv.
    prev_kv: KeyValue | None

    @property
    def revision(self) -> int:
        return self.kv.mod_revision

    @classmethod
    def from_pb(cls, event: kv_pb2.Event) -> Event:
        kind = EventType.DELETE if event.type == kv_pb2.Event.DELETE else EventType.PUT
        prev = KeyValue.from_pb(event.prev_kv) if event.HasField("prev_kv") else None
        return cls(type=kind, kv=KeyValue.from_pb(event.kv), prev_kv=prev)


@dataclass(frozen=True, slots=True)
class RangeResult:
    kvs: tuple[KeyValue, ...]
    more: bool
    count: int


@dataclass(frozen=True, slots=True)
class PutResult:
    prev_kv: KeyValue | None


@dataclass(frozen=True, slots=True)
class DeleteResult:
    deleted: int
    prev_kvs: tuple[KeyValue, ...]


OpResult = RangeResult | PutResult | DeleteResult


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    # The store revision after the transaction (unchanged when it wrote nothing).
    revision: int
    # One per op of the branch that ran (success ops if succeeded, else failure ops).
    responses: tuple[OpResult, ...]


@dataclass(frozen=True, slots=True)
class Lease:
    id: int
    # The TTL etcd granted, seconds (it may raise a requested TTL to its minimum).
    ttl: int
    # Monotonic time before which etcd cannot expire the lease without a
    # keepalive: when the grant was sent, plus ttl (see KeepAlive).
    deadline: float


@dataclass(frozen=True, slots=True)
class MemberStatus:
    endpoint: str
    member_id: int
    leader: int
    revision: int
    raft_term: int
    raft_index: int
    version: str
    db_size: int
    is_learner: bool
    errors: tuple[str, ...]


# --- transaction helpers --------------------------------------------------

CompareOp = Literal["==", "!=", "<", ">"]
Compare = rpc_pb2.Compare
Op = rpc_pb2.RequestOp

_RESULTS: Final = {
    "==": rpc_pb2.Compare.EQUAL,
    "!=": rpc_pb2.Compare.NOT_EQUAL,
    "<": rpc_pb2.Compare.LESS,
    ">": rpc_pb2.Compare.GREATER,
}


def _result(op: CompareOp) -> rpc_pb2.Compare.CompareResult.ValueType:
    try:
        return _RESULTS[op]
    except KeyError:
        raise ValueError(f"unknown comparison {op!r}") from None


def compare_value(key: bytes, op: CompareOp, value: bytes) -> Compare:
    """The key's value compared (bytewise) with `value`; false when the key is absent."""
    return rpc_pb2.Compare(key=key, target=rpc_pb2.Compare.VALUE, result=_result(op), value=value)


def compare_version(key: bytes, op: CompareOp, version: int) -> Compare:
    """The key's version (0: absent) compared with `version`."""
    return rpc_pb2.Compare(
        key=key, target=rpc_pb2.Compare.VERSION, result=_result(op), version=version
    )


def compare_create_revision(key: bytes, op: CompareOp, revision: int) -> Compare:
    """The key's create revision (0: absent) compared with `revision`."""
    return rpc_pb2.Compare(
        key=key, target=rpc_pb2.Compare.CREATE, result=_result(op), create_revision=revision
    )


def compare_mod_revision(key: bytes, op: CompareOp, revision: int) -> Compare:
    """The key's last modification revision (0: absent) compared with `revision`."""
    return rpc_pb2.Compare(
        key=key, target=rpc_pb2.Compare.MOD, result=_result(op), mod_revision=revision
    )


def compare_lease(key: bytes, op: CompareOp, lease_id: int) -> Compare:
    """The key's lease (0: none or absent) compared with `lease_id`."""
    return rpc_pb2.Compare(
        key=key, target=rpc_pb2.Compare.LEASE, result=_result(op), lease=lease_id
    )


def key_absent(key: bytes) -> Compare:
    """True when the key does not exist (create-if-absent)."""
    return compare_create_revision(key, "==", 0)


def op_put(key: bytes, value: bytes, lease: int = 0, *, prev_kv: bool = False) -> Op:
    return rpc_pb2.RequestOp(
        request_put=rpc_pb2.PutRequest(key=key, value=value, lease=lease, prev_kv=prev_kv)
    )


def op_delete(key: bytes, *, prefix: bool = False, prev_kv: bool = False) -> Op:
    range_end = prefix_end(key) if prefix else b""
    return rpc_pb2.RequestOp(
        request_delete_range=rpc_pb2.DeleteRangeRequest(
            key=key, range_end=range_end, prev_kv=prev_kv
        )
    )


def op_get(key: bytes, *, prefix: bool = False, limit: int = 0) -> Op:
    range_end = prefix_end(key) if prefix else b""
    return rpc_pb2.RequestOp(
        request_range=rpc_pb2.RangeRequest(key=key, range_end=range_end, limit=limit)
    )


def prefix_end(prefix: bytes) -> bytes:
    """The range end covering every key that starts with `prefix` (etcd's GetPrefixRangeEnd)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\x00"  # empty prefix, or only 0xff bytes: every key from `prefix` on


def _op_result(response: rpc_pb2.ResponseOp) -> OpResult:
    kind = response.WhichOneof("response")
    if kind == "response_range":
        r = response.response_range
        return RangeResult(tuple(KeyValue.from_pb(kv) for kv in r.kvs), r.more, r.count)
    if kind == "response_put":
        p = response.response_put
        return PutResult(KeyValue.from_pb(p.prev_kv) if p.HasField("prev_kv") else None)
    if kind == "response_delete_range":
        d = response.response_delete_range
        return DeleteResult(d.deleted, tuple(KeyValue.from_pb(kv) for kv in d.prev_kvs))
    raise EtcdRequestError("UNIMPLEMENTED", f"unexpected transaction response {kind!r}")


# --- endpoints ------------------------------------------------------------


def parse_endpoints(endpoints: Sequence[str] | str) -> list[str]:
    """host:port endpoints from a list and/or comma-separated strings, in order,
    without duplicates; an http:// or https:// scheme is dropped."""
    items = [endpoints] if isinstance(endpoints, str) else list(endpoints)
    result: list[str] = []
    for item in items:
        for raw in item.split(","):
            endpoint = raw.strip().removeprefix("http://").removeprefix("https://").rstrip("/")
            if not endpoint:
                continue
            if ":" not in endpoint:
                raise ValueError(f"etcd endpoint {raw!r} has no port")
            if endpoint not in result:
                result.append(endpoint)
    if not result:
        raise ValueError("no etcd endpoint given")
    return result


class _Endpoint:
    def __init__(self, address: str, credentials: grpc.ChannelCredentials | None) -> None:
        self.address = address
        if credentials is None:
            self.channel = aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
        else:
            self.channel = aio.secure_channel(address, credentials, options=_CHANNEL_OPTIONS)
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.lease = rpc_pb2_grpc.LeaseStub(self.channel)
        self.watch = rpc_pb2_grpc.WatchStub(self.channel)
        self.maintenance = rpc_pb2_grpc.MaintenanceStub(self.channel)

    def failing(self) -> bool:
        state = self.channel.get_state(try_to_connect=False)
        return bool(state == grpc.ChannelConnectivity.TRANSIENT_FAILURE)


# --- the client -----------------------------------------------------------


class Etcd:
    """An etcd client over several endpoints; see the module docstring.

    Create with `await Etcd.connect(...)`; close with `await close()` (or use
    `async with`). Keys and values are bytes. Every unary method takes an
    optional `timeout` (default: the client's call_timeout): the call returns
    or raises within it, failover to other endpoints included.
    """

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> None:
        if call_timeout <= 0:
            raise ValueError("call_timeout must be positive")
        raw = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if credentials is None and any("https://" in item for item in raw):
            raise ValueError(
                "https:// etcd endpoints need credentials (grpc.ssl_channel_credentials)"
            )
        self.call_timeout = call_timeout
        self.page_size = page_size
        self._endpoints = [_Endpoint(a, credentials) for a in parse_endpoints(endpoints)]
        self._current = 0
        self._closed = False

    @classmethod
    async def connect(
        cls,
        endpoints: Sequence[str] | str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        page_size: int = DEFAULT_PAGE_SIZE,
        check: bool = True,
    ) -> Etcd:
        """A client of `endpoints` ("host:port", a list or comma-separated).
        With check, one member must answer Status within call_timeout, else
        EtcdUnavailable is raised (and nothing is left open)."""
        client = cls(
            endpoints, credentials=credentials, call_timeout=call_timeout, page_size=page_size
        )
        if check:
            try:
                await client.status()
            except BaseException:
                await client.close()
                raise
        return client

    @property
    def endpoints(self) -> list[str]:
        return [e.address for e in self._endpoints]

    @property
    def current_endpoint(self) -> str:
        """The endpoint the next call goes to first."""
        return self._endpoints[self._current].address

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for endpoint in self._endpoints:
            with contextlib.suppress(Exception):
                await endpoint.channel.close()

    async def __aenter__(self) -> Etcd:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"Etcd({','.join(self.endpoints)}, current={self.current_endpoint})"

    # --- endpoint choice and the call wrapper -----------------------------

    def _pick(self) -> _Endpoint:
        """The current endpoint, or the next one whose channel is not failing."""
        if self._closed:
            raise EtcdClosed("etcd client closed")
        count = len(self._endpoints)
        for step in range(count):
            index = (self._current + step) % count
            if not self._endpoints[index].failing():
                self._current = index
                return self._endpoints[index]
        return self._endpoints[self._current]

    def _failed(self, endpoint: _Endpoint) -> None:
        """Move on from `endpoint` (unless a concurrent failure already did)."""
        if self._endpoints[self._current] is endpoint:
            self._current = (self._current + 1) % len(self._endpoints)
            log.info("etcd: %s failed, next endpoint %s", endpoint.address, self.current_endpoint)

    async def _call(
        self,
        what: str,
        invoke: Callable[[_Endpoint, float], Awaitable[_T]],
        *,
        write: bool,
        timeout: float | None,
    ) -> _T:
        budget = self.call_timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        failures = 0
        backoff = _BACKOFF_FIRST
        last: EtcdError | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if last is not None:
                    raise last
                raise EtcdTimeout(f"etcd {what}: no time left ({budget} s)")
            endpoint = self._pick()
            try:
                return await invoke(endpoint, remaining)
            except aio.AioRpcError as error:
                if self._closed:
                    raise EtcdClosed("etcd client closed") from error
                mapped = _map_error(error, what, endpoint.address, write=write)
                if not isinstance(mapped, EtcdUnavailable):
                    raise mapped from error
                self._failed(endpoint)
                if isinstance(mapped, EtcdTimeout) or mapped.outcome_unknown:
                    raise mapped from error
                mapped.__cause__ = error
                last = mapped
            failures += 1
            if failures % len(self._endpoints) == 0:
                # Every endpoint failed once: pause before the next round.
                await asyncio.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
                backoff = min(backoff * 2, _BACKOFF_MAX)

    # --- KV -----------------------------------------------------------------

    async def get(
        self, key: bytes, *, serializable: bool = False, timeout: float | None = None
    ) -> KeyValue | None:
        """The key's current key-value, or None (linearizable unless serializable)."""
        request = rpc_pb2.RangeRequest(key=key, serializable=serializable)
        response = await self._range(request, timeout)
        return KeyValue.from_pb(response.kvs[0]) if response.kvs else None

    async def get_prefix(
        self, prefix: bytes, *, page_size: int | None = None, timeout: float | None = None
    ) -> tuple[list[KeyValue], int]:
        """Every key-value under `prefix`, sorted by key, and the revision they
        were read at (one consistent snapshot: watch from revision + 1).

        Read in pages of page_size keys, each at the revision of the first
        page; each page is one call with its own timeout. A page too large for
        a gRPC message is read again in halves; when the snapshot revision is
        compacted between pages the listing starts again."""
        size = page_size or self.page_size
        range_end = prefix_end(prefix)
        while True:
            kvs: list[KeyValue] = []
            revision = 0
            start = prefix
            try:
                while True:
                    request = rpc_pb2.RangeRequest(
                        key=start, range_end=range_end, limit=size, revision=revision
                    )
                    try:
                        response = await self._range(request, timeout)
                    except EtcdRequestError as error:
                        if error.code != "RESOURCE_EXHAUSTED" or size == 1:
                            raise
                        size = max(1, size // 2)
                        continue
                    if revision == 0:
                        revision = response.header.revision
                    kvs.extend(KeyValue.from_pb(kv) for kv in response.kvs)
                    if not response.more or not response.kvs:
                        return kvs, revision
                    start = response.kvs[-1].key + b"\x00"
            except Compacted:
                if revision == 0:
                    raise
                log.info("etcd: revision %d compacted while listing %r, again", revision, prefix)

    async def _range(
        self, request: rpc_pb2.RangeRequest, timeout: float | None
    ) -> rpc_pb2.RangeResponse:
        async def invoke(endpoint: _Endpoint, remaining: float) -> rpc_pb2.RangeResponse:
            response: rpc_pb2.RangeResponse = await endpoint.kv.Range(
                request, timeout=remaining, metadata=_REQUIRE_LEADER
            )
            return response

        return await self._call("Range", invoke, write=False, timeout=timeout)

    async def put(
        self, key: bytes, value: bytes, lease: int = 0, *, timeout: float | None = None
    ) -> int:
        """Store value under key (attached to `lease` unless 0); the new revision."""
        request = rpc_pb2.PutRequest(key=key, value=value, lease=lease)

        async def invoke(endpoint: _Endpoint, remaining: float) -> rpc_pb2.PutResponse:
            response: rpc_pb2.PutResponse = await endpoint.kv.Put(
                request, timeout=remaining, metadata=_REQUIRE_LEADER
            )
            return response

        response = await self._call("Put", invoke, write=True, timeout=timeout)
        return response.header.revision

    async def delete(self, key: bytes, *, timeout: float | None = None) -> int:
        """Delete the key; how many keys were deleted (0 or 1)."""
        return await self._delete(rpc_pb2.DeleteRangeRequest(key=key), timeout)

    async def delete_prefix(self, prefix: bytes, *, timeout: float | None = None) -> int:
        """Delete every key under prefix; how many were deleted."""
        request = rpc_pb2.DeleteRangeRequest(key=prefix, range_end=prefix_end(prefix))
        return await self._delete(request, timeout)

    async def _delete(self, request: rpc_pb2.DeleteRangeRequest, timeout: float | None) -> int:
        async def invoke(endpoint: _Endpoint, remaining: float) -> rpc_pb2.DeleteRangeResponse:
            response: rpc_pb2.DeleteRangeResponse = await endpoint.kv.DeleteRange(
                request, timeout=remaining, metadata=_REQUIRE_LEADER
            )
            return response

        response = await self._call("DeleteRange", invoke, write=True, timeout=timeout)
        return response.deleted

    async def txn(
        self,
        compares: Sequence[Compare],
        success_ops: Sequence[Op] = (),
        failure_ops: Sequence[Op] = (),
        *,
        timeout: float | None = None,
    ) -> TxnResult:
        """If every compare holds, run success_ops, else failure_ops, atomically.

        A txn counts as a write: after a lost connection or a timeout it may
        have been applied (EtcdUnavailable.outcome_unknown); with compares
        on mod/create revisions, reading the keys again tells which."""
        request = rpc_pb2.TxnRequest(compare=compares, success=success_ops, failure=failure_ops)
        write = any(
            op.WhichOneof("request") != "request_range" for op in (*success_ops, *failure_ops)
        )

        async def invoke(endpoint: _Endpoint, remaining: float) -> rpc_pb2.TxnResponse:
            response: rpc_pb2.TxnResponse = await endpoint.kv.Txn(
                request, timeout=remaining, metadata=_REQUIRE_LEADER
            )
            return response

        response = await self._call("Txn", invoke, write=write, timeout=timeout)
        return TxnResult(
            succeeded=response.succeeded,
            revision=response.header.revision,
            responses=tuple(_op_result(r) for r in response.responses),
        )

    async def compact(
        self, revision: int, *, physical: bool = True, timeout: float | None = None
    ) -> None:
        """Drop the history before `revision` (watches from earlier get Compacted)."""
        request = rpc_pb2.CompactionRequest(revision=revision, physical=physical)

        async def invoke(endpoint: _Endpoint, remaining: float) -> None:
            await endpoint.kv.Compact(request, timeout=remaining, metadata=_REQUIRE_LEADER)

        # Compacting twice to the same revision is harmless: not a "write" here.
        await self._call("Compact", invoke, write=False, timeout=timeout)

    # --- Maintenance ------------------------------------------------------

    async def status(
        self, endpoint: str | None = None, *, timeout: float | None = None
    ) -> MemberStatus:
        """Status of the member at `endpoint` (one of ours), or of any member."""
        if endpoint is not None:
            targets = [e for e in self._endpoints if e.address == endpoint]
            if not targets:
                raise ValueError(f"{endpoint} is not one of {self.endpoints}")
            budget = self.call_timeout if timeout is None else timeout
            try:
                response: rpc_pb2.StatusResponse = await targets[0].maintenance.Status(
                    rpc_pb2.StatusRequest(), timeout=budget
                )
            except aio.AioRpcError as error:
                raise _map_error(error, "Status", endpoint, write=False) from error
            return _member_status(endpoint, response)

        async def invoke(target: _Endpoint, remaining: float) -> MemberStatus:
            response: rpc_pb2.StatusResponse = await target.maintenance.Status(
                rpc_pb2.StatusRequest(), timeout=remaining
            )
            return _member_status(target.address, response)

        return await self._call("Status", invoke, write=False, timeout=timeout)

    # --- Lease --------------------------------------------------------------

    async def grant(self, ttl_seconds: int, *, timeout: float | None = None) -> int:
        """A new lease of ttl_seconds (etcd may raise it to its minimum); its id."""
        return (await self.grant_lease(ttl_seconds, timeout=timeout)).id

    async def grant_lease(self, ttl_seconds: int, *, timeout: float | None = None) -> Lease:
        """A new lease with its granted TTL and first deadline (see KeepAlive)."""
        if ttl_seconds < 1:
            raise ValueError("a lease TTL is at least 1 s")
        request = rpc_pb2.LeaseGrantRequest(TTL=ttl_seconds)
        sent = 0.0

        async def invoke(endpoint: _Endpoint, remaining: float) -> rpc_pb2.LeaseGrantResponse:
            nonlocal sent
            sent = time.monotonic()
            response: rpc_pb2.LeaseGrantResponse = await endpoint.lease.LeaseGrant(
                request, timeout=remaining, metadata=_REQUIRE_LEADER
            )
            return response

        # A retried grant may leave an unused lease behind; it expires by itself.
        response = await self._call("LeaseGrant", invoke, write=False, timeout=timeout)
        if response.error:
            raise EtcdRequestError("LEASE_GRANT", response.error)
        return Lease(id=response.ID, ttl=response.TTL, deadline=_lease_deadline(sent, response.TTL))

    async def revoke(self, lease_id: int, *, timeout: float | None = None) -> bool:
        """Revoke the lease (its keys are deleted); False when it did not exist."""
        request = rpc_pb2.LeaseRevokeRequest(ID=lease_id)

        async def invoke(endpoint: _Endpoint, remaining: float) -> None:
            await endpoint.lease.LeaseRevoke(request, timeout=remaining, metadata=_REQUIRE_LEADER)

        try:
            # Revoking twice is harmless (the second finds nothing): not a "write" here.
            await self._call("LeaseRevoke", invoke, write=False, timeout=timeout)
        except LeaseNotFound:
            return False
        return True

    async def time_to_live(self, lease_id: int, *, timeout: float | None = None) -> int:
        """The lease's remaining TTL in seconds, as etcd rounds it; -1 when it is gone."""
        request = rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id)

        async def invoke(endpoint: _Endpoint, remaining: float) -> rpc_pb2.LeaseTimeToLiveResponse:
            response: rpc_pb2.LeaseTimeToLiveResponse = await endpoint.lease.LeaseTimeToLive(
                request, timeout=remaining, metadata=_REQUIRE_LEADER
            )
            return response

        try:
            response = await self._call("LeaseTimeToLive", invoke, write=False, timeout=timeout)
        except LeaseNotFound:
            return -1
        return response.TTL

    def keep_alive(
        self,
        lease: Lease,
        *,
        on_expired: Callable[[str], None] | None = None,
        interval: float | None = None,
    ) -> KeepAlive:
        """A started KeepAlive of `lease` (stop it with `await ka.stop()`)."""
        return KeepAlive(self, lease, on_expired=on_expired, interval=interval).start()

    # --- Watch --------------------------------------------------------------

    async def watch_prefix(
        self,
        prefix: bytes,
        start_revision: int = 0,
        *,
        prev_kv: bool = False,
        retry_timeout: float | None = None,
    ) -> AsyncIterator[list[Event]]:
        """Events on keys under `prefix` from start_revision on (0: from now), in
        revision order, one list per etcd watch response (the events of one
        revision are never split).

        When the stream breaks (member killed, connection lost, member without
        a leader) the watch is opened again on the next endpoint from the
        revision after the last one seen (or after the last progress
        notification), so no event is lost or repeated. Raises Compacted when
        that revision is no longer in etcd's history: list again with
        get_prefix and watch from its revision + 1. With retry_timeout, raises
        EtcdUnavailable when no stream could be opened for that long.
        Stop by leaving the `async for` (or aclose()).
        """
        range_end = prefix_end(prefix)
        next_revision = start_revision
        backoff = _BACKOFF_FIRST
        failing_since: float | None = None
        while True:
            endpoint = self._pick()
            call = endpoint.watch.Watch(metadata=_REQUIRE_LEADER)
            try:
                create = rpc_pb2.WatchCreateRequest(
                    key=prefix,
                    range_end=range_end,
                    start_revision=next_revision,
                    prev_kv=prev_kv,
                    progress_notify=True,
                )
                await _send(call, rpc_pb2.WatchRequest(create_request=create))
                created = False
                while True:
                    response = await call.read()
                    if response is aio.EOF:
                        raise _StreamBroken("watch stream ended")
                    if response.compact_revision:
                        raise Compacted(
                            int(response.compact_revision),
                            f"etcd watch of {prefix!r} from {next_revision}: compacted, "
                            f"oldest available revision {response.compact_revision}",
                        )
                    if response.canceled:
                        reason = str(response.cancel_reason)
                        if "no leader" in reason:
                            raise _StreamBroken(reason)
                        raise EtcdRequestError("CANCELLED", f"etcd watch cancelled: {reason}")
                    if response.created:
                        created = True
                        failing_since = None
                        backoff = _BACKOFF_FIRST
                        if next_revision == 0:
                            next_revision = int(response.header.revision) + 1
                        continue
                    if response.events:
                        events = [Event.from_pb(e) for e in response.events]
                        next_revision = events[-1].revision + 1
                        yield events
                    elif created and response.header.revision >= next_revision:
                        # A progress notification: nothing up to that revision is missing.
                        next_revision = int(response.header.revision) + 1
            except (aio.AioRpcError, _StreamBroken) as error:
                if self._closed:
                    raise EtcdClosed("etcd client closed") from error
                if isinstance(error, aio.AioRpcError):
                    mapped = _map_error(error, "Watch", endpoint.address, write=False)
                    if not isinstance(mapped, EtcdUnavailable):
                        raise mapped from error
                log.info(
                    "etcd: watch of %r via %s broke (%s); resuming from revision %d",
                    prefix,
                    endpoint.address,
                    error,
                    next_revision,
                )
                self._failed(endpoint)
                now = time.monotonic()
                failing_since = now if failing_since is None else failing_since
                if retry_timeout is not None and now - failing_since > retry_timeout:
                    raise EtcdUnavailable(
                        f"etcd watch of {prefix!r}: no stream for {retry_timeout} s"
                    ) from error
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
            finally:
                call.cancel()


class _StreamBroken(Exception):
    """A stream ended in a way worth reopening it."""


def _member_status(endpoint: str, response: rpc_pb2.StatusResponse) -> MemberStatus:
    return MemberStatus(
        endpoint=endpoint,
        member_id=response.header.member_id,
        leader=response.leader,
        revision=response.header.revision,
        raft_term=response.raftTerm,
        raft_index=response.raftIndex,
        version=response.version,
        db_size=response.dbSize,
        is_learner=response.isLearner,
        errors=tuple(response.errors),
    )


# The rate at which the client's monotonic clock may run slower than the
# etcd leader's (both are crystal clocks, which NTP slews by at most 500 ppm;
# this allows twice that). The deadline is shortened by this part of the TTL.
CLOCK_DRIFT: Final = 1e-3


def _lease_deadline(sent: float, ttl: int) -> float:
    return sent + ttl * (1.0 - CLOCK_DRIFT)


class KeepAlive:
    """Keeps a lease alive and tells, conservatively, until when it surely is.

    A task sends a LeaseKeepAlive request every `interval` (ttl / 3 by
    default) on a bidirectional stream, one request at a time; when no answer
    comes within the interval, or the stream breaks, it reopens the stream on
    the next endpoint and sends again at once.

    `deadline` (time.monotonic() seconds) is the moment the node must stop
    acting on the lease unless a newer keepalive is acknowledged first:

        deadline = (time the last acknowledged request was SENT) + ttl

    (minus a drift allowance, CLOCK_DRIFT x ttl). Why this is safe: etcd's
    leader renews a lease to "its own now + TTL" when it handles the request,
    which is after the request was sent; so etcd's expiry is at or after
    send time + TTL, however long the request and its answer travelled. A
    newly elected leader only extends leases (it renews them all to a full
    TTL), and etcd does not revoke a lease before its expiry. What remains
    is the rate of the two clocks, which the drift allowance covers; no
    wall clock and no clock sync between the machines is involved. The
    first deadline comes from the grant (`Lease.deadline`, from when the
    grant request was sent). A request that was sent but never answered
    proves nothing, so only acknowledged ones move the deadline.

    The lease is taken as lost, once and for good, when a keepalive answer
    says TTL <= 0 (etcd no longer has it) or when `deadline` passes without a
    newer acknowledgement (it may still exist in etcd, but the node can no
    longer know): `expired` is set, `reason` says which, and `on_expired` is
    called with the reason; the keepalive task ends. The caller then stops
    acting on the lease and, to go on, grants a new one. Acting safely also
    needs the caller's own margin: an action that starts before the
    deadline must finish (or be fenced) before it.
    """

    def __init__(
        self,
        etcd: Etcd,
        lease: Lease,
        *,
        on_expired: Callable[[str], None] | None = None,
        interval: float | None = None,
    ) -> None:
        if lease.ttl < 1:
            raise ValueError("a lease TTL is at least 1 s")
        self._etcd = etcd
        self.lease_id = lease.id
        self.ttl = lease.ttl
        self.interval = interval if interval is not None else lease.ttl / 3
        if self.interval <= 0:
            raise ValueError("interval must be positive")
        self._deadline = lease.deadline
        self._on_expired = on_expired
        self.expired = asyncio.Event()
        self.reason: str | None = None
        self.acknowledged = 0  # keepalive answers with TTL > 0, for tests and metrics
        self.reconnects = 0
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def deadline(self) -> float:
        """Monotonic time until which etcd cannot have expired the lease."""
        return self._deadline

    def remaining(self) -> float:
        """Seconds until `deadline` (negative once passed)."""
        return self._deadline - time.monotonic()

    def valid(self) -> bool:
        """Not expired and the deadline not passed: the node may still act."""
        return not self.expired.is_set() and time.monotonic() < self._deadline

    def start(self) -> KeepAlive:
        if not self._tasks:
            self._tasks = [
                asyncio.ensure_future(self._run()),
                asyncio.ensure_future(self._watchdog()),
            ]
        return self

    async def stop(self) -> None:
        """Stop sending keepalives (the lease is not revoked: it expires by itself)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_expired(self) -> str:
        """Until the lease is taken as lost; the reason."""
        await self.expired.wait()
        return self.reason or ""

    async def __aenter__(self) -> KeepAlive:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _expire(self, reason: str) -> None:
        if self.expired.is_set():
            return
        self.reason = reason
        self.expired.set()
        log.warning("etcd: lease %x lost: %s", self.lease_id, reason)
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        if self._on_expired is not None:
            try:
                self._on_expired(reason)
            except Exception:
                log.exception("etcd: lease expiry callback failed")

    async def _watchdog(self) -> None:
        while True:
            left = self._deadline - time.monotonic()
            if left <= 0:
                self._expire("deadline passed without an acknowledged keepalive")
                return
            await asyncio.sleep(left)

    async def _run(self) -> None:
        try:
            await self._keep_sending()
        except Exception:
            # Not expected; the watchdog still gives the lease up at its deadline.
            log.exception("etcd: keepalive of lease %x stopped", self.lease_id)

    async def _keep_sending(self) -> None:
        request = rpc_pb2.LeaseKeepAliveRequest(ID=self.lease_id)
        backoff = _BACKOFF_FIRST
        while True:
            try:
                endpoint = self._etcd._pick()
            except EtcdClosed:
                return  # the watchdog declares the lease lost at its deadline
            call = endpoint.lease.LeaseKeepAlive(metadata=_REQUIRE_LEADER)
            try:
                while True:
                    sent = time.monotonic()
                    response = await asyncio.wait_for(
                        _round_trip(call, request), timeout=self.interval
                    )
                    if response.TTL <= 0:
                        self._expire("etcd no longer has the lease (keepalive TTL <= 0)")
                        return
                    self._deadline = max(self._deadline, _lease_deadline(sent, response.TTL))
                    self.acknowledged += 1
                    backoff = _BACKOFF_FIRST
                    await asyncio.sleep(max(0.0, sent + self.interval - time.monotonic()))
            except (aio.AioRpcError, _StreamBroken, TimeoutError) as error:
                if self._etcd._closed:
                    return
                detail = error.details() if isinstance(error, aio.AioRpcError) else repr(error)
                log.info(
                    "etcd: keepalive of lease %x via %s failed (%s), %.2f s left",
                    self.lease_id,
                    endpoint.address,
                    detail,
                    self.remaining(),
                )
                self._etcd._failed(endpoint)
                self.reconnects += 1
                await asyncio.sleep(min(backoff, max(0.0, self.remaining() / 4)))
                backoff = min(backoff * 2, _BACKOFF_MAX)
            finally:
                call.cancel()


async def _send(call: Any, request: Any) -> None:
    """Write on a stream; a stream that already ended raises its AioRpcError
    (or _StreamBroken), not grpc's InvalidStateError."""
    try:
        await call.write(request)
    except asyncio.InvalidStateError:
        await call.read()  # raises the call's AioRpcError when it failed
        raise _StreamBroken("stream already finished") from None


async def _round_trip(call: Any, request: rpc_pb2.LeaseKeepAliveRequest) -> Any:
    await _send(call, request)
    response = await call.read()
    if response is aio.EOF:
        raise _StreamBroken("keepalive stream ended")
    return response


__all__ = [
    "CLOCK_DRIFT",
    "Compacted",
    "Compare",
    "CompareOp",
    "DeleteResult",
    "Etcd",
    "EtcdClosed",
    "EtcdError",
    "EtcdRequestError",
    "EtcdTimeout",
    "EtcdUnavailable",
    "Event",
    "EventType",
    "KeepAlive",
    "KeyValue",
    "Lease",
    "LeaseNotFound",
    "MemberStatus",
    "Op",
    "OpResult",
    "PutResult",
    "RangeResult",
    "TxnResult",
    "compare_create_revision",
    "compare_lease",
    "compare_mod_revision",
    "compare_value",
    "compare_version",
    "key_absent",
    "op_delete",
    "op_get",
    "op_put",
    "parse_endpoints",
    "prefix_end",
]
