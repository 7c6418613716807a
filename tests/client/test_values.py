"""Value types and their protobuf form (no node needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from cps.client import (
    FOREVER,
    NEVER,
    CreationAttributes,
    CreationFlags,
    OpenFlags,
    ReadElement,
    WriteElement,
    _convert,
)
from cps.client.values import read_element, write_element
from cps.v1 import types_pb2 as t


def test_creation_attributes_defaults_fit_the_node_rules() -> None:
    attributes = CreationAttributes(max_sections=3, max_section_size=10)
    assert attributes.checkpoint_size == 30
    assert attributes.retention_duration is FOREVER
    assert attributes.creation_flags is CreationFlags.WR_ACTIVE_REPLICA
    message = _convert.attributes_message(attributes)
    assert list(message.creation_flags) == [t.CREATION_FLAG_WR_ACTIVE_REPLICA]
    assert message.retention_duration.forever
    assert _convert.attributes_of(message) == attributes


def test_retention_durations() -> None:
    assert CreationAttributes(retention_duration=1.5).retention_duration == timedelta(seconds=1.5)
    message = _convert.retention_message(timedelta(milliseconds=2500))
    assert (message.duration.seconds, message.duration.nanos) == (2, 500_000_000)
    assert _convert.retention_of(message) == timedelta(seconds=2.5)
    assert _convert.retention_of(_convert.retention_message(FOREVER)) is FOREVER


def test_expiration_times() -> None:
    at = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2)))
    message = _convert.expiration_message(at)
    assert message.WhichOneof("kind") == "at"
    back = _convert.expiration_of(message)
    assert isinstance(back, datetime)
    assert back == at and back.tzinfo is UTC
    from_seconds = _convert.expiration_message(at.timestamp())
    assert _convert.expiration_of(from_seconds) == at
    assert _convert.expiration_message(NEVER).never
    assert _convert.expiration_of(t.ExpirationTime(never=True)) is NEVER
    with pytest.raises(ValueError, match="naive"):
        _convert.expiration_message(datetime(2030, 1, 1))


def test_flags() -> None:
    assert _convert.open_flags(OpenFlags.READ | OpenFlags.CREATE) == [
        t.OPEN_FLAG_READ,
        t.OPEN_FLAG_CREATE,
    ]
    assert _convert.open_flags(OpenFlags(0)) == []
    both = CreationFlags.WR_ACTIVE_REPLICA_WEAK | CreationFlags.CHECKPOINT_COLLOCATED
    assert _convert.creation_flags(both) == [
        t.CREATION_FLAG_WR_ACTIVE_REPLICA_WEAK,
        t.CREATION_FLAG_CHECKPOINT_COLLOCATED,
    ]


def test_iovector_shorthands() -> None:
    assert write_element((b"s", b"data")) == WriteElement(b"s", b"data", 0)
    assert write_element((b"s", b"data", 3)) == WriteElement(b"s", b"data", 3)
    assert read_element(b"s") == ReadElement(b"s", 0, None)
    [whole, part] = _convert.read_vector([ReadElement(b"s"), ReadElement(b"s", 2, 5)])
    assert (whole.data_offset, whole.data_size) == (0, 0)
    assert (part.data_offset, part.data_size) == (2, 5)
