"""A batch is split into messages under the size limit and comes back whole."""

from __future__ import annotations

import pytest

from cps.server.storage import replication
from cps.server.storage.replication import from_message, to_messages
from cps.server.storage.sqlite_store import Statement


def test_large_batch_is_split_and_reassembled_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    statements: list[Statement] = [
        ("INSERT INTO t VALUES (?, ?, ?, ?)", (index, b"x" * 400, None, 1.5)) for index in range(10)
    ]
    monkeypatch.setattr(replication, "MESSAGE_BYTES", 1000)
    messages = to_messages(7, statements, snapshot=True)
    assert len(messages) > 1
    assert [m.more for m in messages] == [True] * (len(messages) - 1) + [False]
    assert {m.sequence for m in messages} == {7} and all(m.snapshot for m in messages)
    again = [statement for m in messages for statement in from_message(m)]
    assert again == [(sql, list(parameters)) for sql, parameters in statements]


def test_small_batch_is_one_message() -> None:
    (message,) = to_messages(3, [("DELETE FROM t", ())])
    assert not message.more and not message.snapshot
    assert from_message(message) == [("DELETE FROM t", [])]
