"""Scenarios: what the workers call. The common interface and the two references
(the bare server and etcd); the CPS scenarios are in bench.cps_scenarios.
"""

from __future__ import annotations

import contextlib
import functools
import os
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence

from grpc import aio

from bench.load import Call, channel_of, raw_unary
from bench.targets import BARE_METHOD, ETCD_RANGE_METHOD
from cps.server.cluster.etcdpb import rpc_pb2 as etcd

PAYLOAD_SIZE = 1024
# Random, so nothing on the way can shrink it.
PAYLOAD = os.urandom(PAYLOAD_SIZE)


class Scenario(ABC):
    """One kind of call, run at several in-flight levels."""

    name: str
    # What one call does, for the report.
    description: str
    # Units of work per call (write32: 32 section writes), with their name.
    items_per_op: int = 1
    item_unit: str | None = None
    # The node it calls, on a target of several (an index into Server.addresses).
    node: int = 0
    # It runs at the in-flight levels from this one up only.
    min_inflight: int = 1

    @abstractmethod
    async def start(self, channels: Sequence[aio.Channel], inflight: int) -> list[Call]:
        """Set up one run; return one call per worker (worker i on channel_of(i))."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Undo what start set up, after the timed window."""


class Suite(ABC):
    """The scenarios of one target and the fixtures they share."""

    scenarios: list[Scenario]

    async def prepare(self, channel: aio.Channel, max_inflight: int) -> None:  # noqa: B027
        """Create the fixtures every scenario needs, for up to `max_inflight` workers."""

    async def finish(self, channel: aio.Channel) -> None:  # noqa: B027
        """Remove the fixtures (best effort; the server is stopped next anyway)."""


class CompositeSuite(Suite):
    """The scenarios of several suites run against one server, in order."""

    def __init__(self, *suites: Suite) -> None:
        self.suites = suites
        self.scenarios = [scenario for suite in suites for scenario in suite.scenarios]

    async def prepare(self, channel: aio.Channel, max_inflight: int) -> None:
        for suite in self.suites:
            await suite.prepare(channel, max_inflight)

    async def finish(self, channel: aio.Channel) -> None:
        for suite in self.suites:
            with contextlib.suppress(Exception):
                await suite.finish(channel)


def chosen(scenarios: Sequence[Scenario], only: Collection[str] | None) -> list[Scenario]:
    """The scenarios named in `only` (all when None), in their own order."""
    if only is not None:
        unknown = set(only) - {s.name for s in scenarios}
        if unknown:
            raise ValueError(f"unknown scenarios {sorted(unknown)}")
    return [s for s in scenarios if only is None or s.name in only]


def _fixed_calls(
    channels: Sequence[aio.Channel], method: str, requests: Sequence[bytes]
) -> list[Call]:
    """Worker i sends requests[i] again and again on its channel."""
    stubs = [raw_unary(c, method) for c in channels]
    return [
        functools.partial(stubs[channel_of(i, len(channels))], request)
        for i, request in enumerate(requests)
    ]


# --- bare -----------------------------------------------------------------


class BareUnary(Scenario):
    name = "unary"
    description = "unary call with a 1 KiB request, empty response, handler does nothing"

    async def start(self, channels: Sequence[aio.Channel], inflight: int) -> list[Call]:
        return _fixed_calls(channels, BARE_METHOD, [PAYLOAD] * inflight)


class BareSuite(Suite):
    def __init__(self) -> None:
        self.scenarios = [BareUnary()]


# --- etcd -----------------------------------------------------------------

ETCD_PUT_METHOD = "/etcdserverpb.KV/Put"


def _etcd_key(kind: str, worker: int) -> bytes:
    return f"bench/{kind}/{worker}".encode()


class EtcdPut(Scenario):
    name = "put"
    description = "Put of a 1 KiB value on a per-worker key"

    async def start(self, channels: Sequence[aio.Channel], inflight: int) -> list[Call]:
        requests = [
            etcd.PutRequest(key=_etcd_key("put", i), value=PAYLOAD).SerializeToString()
            for i in range(inflight)
        ]
        return _fixed_calls(channels, ETCD_PUT_METHOD, requests)


class EtcdGet(Scenario):
    name = "get"
    description = "Range (linearizable, the default) of one per-worker 1 KiB key"

    async def start(self, channels: Sequence[aio.Channel], inflight: int) -> list[Call]:
        requests = [
            etcd.RangeRequest(key=_etcd_key("get", i)).SerializeToString() for i in range(inflight)
        ]
        return _fixed_calls(channels, ETCD_RANGE_METHOD, requests)


class EtcdSuite(Suite):
    def __init__(self, only: Collection[str] | None = None) -> None:
        """put and get, or those named in `only`."""
        self.scenarios = chosen([EtcdPut(), EtcdGet()], only)

    async def prepare(self, channel: aio.Channel, max_inflight: int) -> None:
        if not any(s.name == "get" for s in self.scenarios):
            return
        put = raw_unary(channel, ETCD_PUT_METHOD)
        for i in range(max_inflight):
            request = etcd.PutRequest(key=_etcd_key("get", i), value=PAYLOAD)
            await put(request.SerializeToString())
        get = raw_unary(channel, ETCD_RANGE_METHOD)
        raw = await get(etcd.RangeRequest(key=_etcd_key("get", 0)).SerializeToString())
        response = etcd.RangeResponse.FromString(raw)
        if len(response.kvs) != 1 or response.kvs[0].value != PAYLOAD:
            raise RuntimeError(f"etcd Range returned {response!r:.200}, not the value put")
