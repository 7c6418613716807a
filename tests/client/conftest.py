"""Fixtures: a real node (tests/conftest.py's module-scoped ``node``), a
session of the client on it, and the raw stubs to check the node's side."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import grpc
import pytest

from cps.client import Callbacks, Session
from cps.server.node import Node
from cps.v1 import checkpoint_service_pb2_grpc as pb_grpc

_names = itertools.count()


@pytest.fixture()
def address(node: Node) -> str:
    return f"127.0.0.1:{node.port}"


@pytest.fixture()
def session(address: str) -> Iterator[Session]:
    with Session.connect(address, Callbacks(), timeout=10) as opened:
        yield opened


@pytest.fixture()
def stub(address: str) -> Iterator[pb_grpc.CheckpointServiceStub]:
    """The generated stub, to look at the node's side of the client's handles."""
    with grpc.insecure_channel(address) as channel:
        yield pb_grpc.CheckpointServiceStub(channel)


@pytest.fixture()
def name(request: pytest.FixtureRequest) -> str:
    """A checkpoint name no other test uses."""
    return f"{request.node.name}-{next(_names)}"
