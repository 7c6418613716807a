"""A failing disk: the waiting calls fail with CL_CKPT_INTERNAL_ERROR, and the
change is stored by the next successful commit."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import grpc
import pytest

from cps.server.storage.sqlite_store import Statement
from cps.v1 import checkpoint_service_pb2 as pb
from tests.support import Client, running_node, seed_error, sid


def test_failed_commit_fails_the_call_and_is_retried() -> None:
    with running_node() as node, grpc.insecure_channel(f"127.0.0.1:{node.port}") as channel:
        client = Client(channel)
        handle = client.open("faulty")
        client.create_section(handle, b"a", b"before")
        store = node.journal.store
        real_apply = store.apply
        failures = [sqlite3.OperationalError("disk I/O error")]

        def apply_failing_once(statements: Sequence[Statement]) -> None:
            if failures:
                raise failures.pop()
            real_apply(statements)

        store.apply = apply_failing_once  # type: ignore[method-assign]
        overwrite = pb.SectionOverwriteRequest(
            checkpoint_handle=handle, section_id=sid(b"a"), data_buffer=b"during"
        )
        with pytest.raises(grpc.RpcError) as caught:
            client.stub.SectionOverwrite(overwrite)
        code, reason, _ = seed_error(caught.value)
        assert (code, reason) == (grpc.StatusCode.INTERNAL, "CL_CKPT_INTERNAL_ERROR")
        client.create_section(handle, b"b", b"after")  # this commit carries both
        rows = dict((section_id, data) for _, section_id, data, *_ in store.load("section"))
        assert rows == {b"a": b"during", b"b": b"after"}
