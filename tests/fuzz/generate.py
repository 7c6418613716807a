"""Requests built from message descriptors: seeded random values, adversarial
ones, and handles, names and section ids the node handed out earlier (so
calls reach past the handle checks).

Nothing here knows the RPCs by name: a new RPC or field is fuzzed as soon as
it is in the contract.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
# Edges of every width; 2**64 - n is a "negative" int64 sent as uint64.
EDGES = (
    0,
    1,
    -1,
    2,
    7,
    255,
    256,
    4096,
    2**16,
    2**20,
    2**31 - 1,
    2**31,
    -(2**31),
    2**32 - 1,
    2**32,
    2**40,
    2**53 + 1,
    2**62,
    2**63 - 1,
    2**63,
    -(2**63),
    2**64 - 1,
    2**64 - 2,
    9_223_372_036,  # seconds of the largest int64 of nanoseconds
    253_402_300_800,  # year 10000
    315_576_000_000,  # protobuf's largest Timestamp/Duration seconds
    315_576_000_001,
    999_999_999,
    1_000_000_000,
)
SMALL = (0, 1, 2, 3, 4, 8, 16, 64, 1024, 4096, 65536)
TAME = (1, 1, 2, 3, 4, 8, 16, 64, 1024, 4096, 4096)
NAMES = ("fuzz-a", "fuzz-b", "fuzz-c", "fuzz-d")
STRINGS = ("", " ", "é", "\u0000", "x" * 255, "x" * 256, "名" * 90, "a/b", "..")

# Plausible values of fields a tame request sets (a wild one, sometimes).
HINTS = {"release_code": "B", "major_version": "1", "minor_version": "1"}

# Which pool a field draws from, by the field's name.
POOLS = {
    "service_handle": "service",
    "checkpoint_handle": "checkpoint",
    "section_iteration_handle": "iteration",
    "library_handle": "library",
}


@dataclass
class Pools:
    """What the node answered so far, to be named again in later requests."""

    handles: dict[str, list[int]] = field(
        default_factory=lambda: {pool: [] for pool in POOLS.values()}
    )
    section_ids: list[bytes] = field(default_factory=lambda: [b"", b"1", b"2", b"s"])
    element_ids: list[bytes] = field(default_factory=lambda: [b"e"])

    def add(self, kind: str, value: int) -> None:
        values = self.handles[kind]
        if value and value not in values:
            values.append(value)
            del values[:-64]  # the newest 64 of each kind

    def learn(self, response: Message) -> None:
        """Remember every handle and section id a response carries."""
        descriptor: Any
        for descriptor, value in response.ListFields():
            if descriptor.name in POOLS and isinstance(value, int):
                self.add(POOLS[descriptor.name], value)
            elif descriptor.type == FieldDescriptor.TYPE_MESSAGE:
                if descriptor.is_repeated:
                    for item in value:
                        self.learn(item)
                elif descriptor.message_type.name == "SectionId":
                    if value.id not in self.section_ids:
                        self.section_ids.append(value.id)
                        del self.section_ids[:-32]
                else:
                    self.learn(value)


class Generator:
    def __init__(self, rng: random.Random, pools: Pools, forbidden_names: set[str]) -> None:
        self.rng = rng
        self.pools = pools
        self.forbidden_names = forbidden_names  # the canary's: never named
        self.tame = False

    def request(self, descriptor: Descriptor) -> Message:
        """Half the requests are tame (plausible values, every message
        present: they reach deep into the node and build state), half wild."""
        self.tame = self.rng.random() < 0.5
        message: Message = GetMessageClass(descriptor)()
        self._fill(message, depth=0)
        return message

    def mutated(self, message: Message) -> bytes:
        """Raw bytes for the request: a valid encoding mangled, or noise."""
        rng = self.rng
        raw = bytearray(message.SerializeToString())
        choice = rng.randrange(5)
        if choice == 0 or not raw:
            return rng.randbytes(rng.randrange(1, 64))
        if choice == 1:
            return bytes(raw[: rng.randrange(len(raw))])  # truncated
        if choice == 2:  # a string field that is not UTF-8, or a bad tag
            return bytes([0x12, 3, 0xFF, 0xFE, 0xFD]) + bytes(raw)
        if choice == 3:  # a length that runs past the end
            return bytes(raw) + bytes([0x0A, 0xFF, 0xFF, 0xFF, 0x0F, 1])
        for _ in range(rng.randrange(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw)

    # -- fields ---------------------------------------------------------------

    def _fill(self, message: Message, depth: int) -> None:
        rng = self.rng
        descriptor = message.DESCRIPTOR
        chosen_oneofs = {
            oneof.name: rng.choice([*oneof.fields] if self.tame else [None, *oneof.fields])
            for oneof in descriptor.oneofs
        }
        fd: Any
        for fd in descriptor.fields:
            oneof = fd.containing_oneof
            if oneof is not None and chosen_oneofs[oneof.name] is not fd:
                continue
            if fd.is_repeated:
                count = rng.choice((0, 1, 1, 2, 3)) if depth < 3 else 0
                if self.tame:
                    count = rng.choice((1, 1, 2, 3))
                if rng.random() < 0.02:
                    count = rng.choice((40, 200))
                container = getattr(message, fd.name)
                for _ in range(count):
                    if fd.type == FieldDescriptor.TYPE_MESSAGE:
                        self._fill(container.add(), depth + 1)
                    else:
                        container.append(self._scalar(fd))
                continue
            if fd.type == FieldDescriptor.TYPE_MESSAGE:
                # A missing message, sometimes; an empty one, sometimes.
                roll = rng.random()
                if self.tame:
                    roll = 0.3 if fd.message_type.name not in ("Timestamp", "Duration") else roll
                if roll < 0.15 or depth > 4:
                    continue
                sub = getattr(message, fd.name)
                if fd.message_type.name == "SectionId":
                    sub.id = self._section_id()
                elif roll < 0.22:
                    sub.SetInParent()
                else:
                    self._fill(sub, depth + 1)
                continue
            if rng.random() < 0.1 and not self.tame:
                continue  # the default
            setattr(message, fd.name, self._scalar(fd))

    def _scalar(self, fd: Any) -> Any:  # a FieldDescriptor (upb's or Python's)
        rng = self.rng
        kind = fd.type
        if kind == FieldDescriptor.TYPE_BOOL:
            return self.tame or rng.random() < 0.7
        if kind == FieldDescriptor.TYPE_ENUM:
            values = [value.number for value in fd.enum_type.values]
            if self.tame:
                return rng.choice(values[1:] or values)  # not UNSPECIFIED
            return rng.choice(values) if rng.random() < 0.85 else rng.choice((-1, 99, 2**31 - 1))
        if kind == FieldDescriptor.TYPE_STRING:
            if fd.name.endswith("name"):
                return self._name()
            hint = HINTS.get(fd.name)
            if hint is not None and (self.tame or rng.random() < 0.5):
                return hint
            return rng.choice(STRINGS)
        if kind == FieldDescriptor.TYPE_BYTES:
            return self._bytes(fd)
        if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
            return rng.choice((0.0, -1.0, 1e300, float("inf"), float("nan")))
        low, high = INT_RANGES[kind]
        pool = POOLS.get(fd.name)
        handles = self.pools.handles[pool] if pool else []
        if handles and (self.tame or rng.random() < 0.7):
            return rng.choice(handles[-3:] if rng.random() < 0.7 else handles)
        roll = rng.random()
        if self.tame and fd.name in HINTS:
            value = int(HINTS[fd.name])
        elif self.tame:
            value = rng.choice(TAME)
        elif roll < 0.45:
            value = rng.choice(SMALL)
        elif roll < 0.9:
            value = rng.choice(EDGES)
        else:
            value = rng.randint(low, high)
        if not low <= value <= high:
            value = value % (high - low + 1) + low
        return value

    def _name(self) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.75 or self.tame:
            return rng.choice(NAMES)
        name = rng.choice(STRINGS) if roll < 0.95 else "n" * rng.choice((1000, 70_000))
        return "fuzz-x" if name in self.forbidden_names else name

    def _section_id(self) -> bytes:
        rng = self.rng
        roll = rng.random()
        if roll < 0.7 or (self.tame and roll < 0.9):
            return rng.choice(self.pools.section_ids)
        if roll < 0.9:
            return rng.randbytes(rng.choice((1, 4, 32, 33, 1025)))
        return b"\x00" * rng.choice((0, 2000, 70_000))

    def _bytes(self, fd: Any) -> bytes:
        rng = self.rng
        if fd.name == "element_id" and rng.random() < 0.6:
            return rng.choice(self.pools.element_ids)
        roll = rng.random()
        if roll < 0.3:
            return b""
        if roll < 0.9 or self.tame:
            return rng.randbytes(rng.choice((1, 7, 100, 4096)))
        if roll < 0.99:
            return rng.randbytes(rng.choice((65_536, 300_000)))
        return bytes(rng.choice((1 << 20, 3 << 20)))
