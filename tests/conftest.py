from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from cps.server.node import Node
from tests.support import Client, running_node


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    with running_node() as running:
        yield running


@pytest.fixture()
def channel(node: Node) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{node.port}") as opened:
        yield opened


@pytest.fixture()
def client(channel: grpc.Channel) -> Client:
    return Client(channel)
