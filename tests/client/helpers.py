"""Helpers of the client tests."""

from __future__ import annotations

import select
import time
from collections.abc import Callable

import grpc

from tests.support import seed_error


def readable(fd: int, timeout: float = 0.0) -> bool:
    """Whether select() reports ``fd`` readable within ``timeout`` seconds."""
    return bool(select.select([fd], [], [], timeout)[0])


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def node_reason(call: Callable[[], object]) -> str:
    """The seed error a raw stub call fails with ("" if it succeeds)."""
    try:
        call()
    except grpc.RpcError as error:
        return seed_error(error)[1]
    return ""
