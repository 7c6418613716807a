"""The keys of a cluster in etcd and their values (JSON, so that `etcdctl
get --prefix /cps/` is readable by people).

| key                              | value                     | lease          |
|----------------------------------|---------------------------|----------------|
| /cps/<c>/members/<node>          | address, host, ...        | the node's     |
| /cps/<c>/director                | node, incarnation         | the director's |
| /cps/<c>/ckpt/<name>             | a live checkpoint         | none           |
| /cps/<c>/unlinked/<incarnation>  | an unlinked checkpoint    | none           |

A live record's incarnation is its key's create_revision (a name deleted
and created again gets a new one); its version is the key's mod_revision,
compared by every change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cps.server.core.directory import Member, Record
from cps.server.core.types import CreationAttributes, CreationFlag


@dataclass(frozen=True, slots=True)
class Keys:
    cluster: str

    @property
    def root(self) -> bytes:
        return f"/cps/{self.cluster}/".encode()

    @property
    def members(self) -> bytes:
        return self.root + b"members/"

    @property
    def director(self) -> bytes:
        return self.root + b"director"

    @property
    def checkpoints(self) -> bytes:
        return self.root + b"ckpt/"

    @property
    def unlinked_prefix(self) -> bytes:
        return self.root + b"unlinked/"

    def member(self, name: str) -> bytes:
        return self.members + name.encode()

    def checkpoint(self, name: str) -> bytes:
        return self.checkpoints + name.encode()

    def unlinked(self, incarnation: int) -> bytes:
        return self.unlinked_prefix + str(incarnation).encode()

    def of(self, record: Record) -> bytes:
        return (
            self.unlinked(record.incarnation) if record.unlinked else self.checkpoint(record.name)
        )


@dataclass(frozen=True, slots=True)
class MemberInfo:
    member: Member
    address: str
    version: str
    # Members of one host (the workers of one node: docs/workers.md) never
    # hold two replicas of one checkpoint. A node of one process is a host
    # of its own: its host is its name.
    host: str = ""

    def __post_init__(self) -> None:
        if not self.host:
            object.__setattr__(self, "host", self.member.name)


def member_value(info: MemberInfo) -> bytes:
    return json.dumps(
        {
            "node": info.member.name,
            "incarnation": info.member.incarnation,
            "address": info.address,
            "version": info.version,
            "host": info.host,
        }
    ).encode()


def member_of(value: bytes) -> MemberInfo:
    """A member's record; one written before hosts existed has none: its
    host is its name."""
    data = json.loads(value)
    return MemberInfo(
        Member(data["node"], int(data["incarnation"])),
        data["address"],
        data["version"],
        data.get("host") or data["node"],
    )


def _member_json(member: Member | None) -> Any:
    return None if member is None else {"node": member.name, "incarnation": member.incarnation}


def _member(data: Any) -> Member | None:
    return None if data is None else Member(data["node"], int(data["incarnation"]))


def _members(data: Any) -> tuple[Member, ...]:
    return tuple(Member(m["node"], int(m["incarnation"])) for m in data)


def record_value(record: Record) -> bytes:
    attributes = record.attributes
    value = {
        "name": record.name,
        "attributes": {
            "creation_flags": sorted(flag.name for flag in attributes.creation_flags),
            "checkpoint_size": attributes.checkpoint_size,
            "max_section_id_size": attributes.max_section_id_size,
            "max_sections": attributes.max_sections,
            "max_section_size": attributes.max_section_size,
            "retention_ns": attributes.retention_duration,
        },
        "epoch": record.epoch,
        "active": _member_json(record.active),
        "replicas": [_member_json(m) for m in record.replicas],
        "in_sync": [_member_json(m) for m in record.in_sync],
        "unlinked": record.unlinked,
    }
    if record.unlinked:  # a live record's incarnation is its key's create_revision
        value["incarnation"] = record.incarnation
    return json.dumps(value, sort_keys=True).encode()


def record_of(value: bytes, *, create_revision: int, mod_revision: int, live: bool) -> Record:
    """``live``: read under ckpt/ (the incarnation is the create_revision)."""
    data = json.loads(value)
    attributes = data["attributes"]
    return Record(
        name=data["name"],
        incarnation=create_revision if live else int(data["incarnation"]),
        attributes=CreationAttributes(
            creation_flags=frozenset(CreationFlag[f] for f in attributes["creation_flags"]),
            checkpoint_size=attributes["checkpoint_size"],
            max_section_id_size=attributes["max_section_id_size"],
            max_sections=attributes["max_sections"],
            max_section_size=attributes["max_section_size"],
            retention_duration=attributes["retention_ns"],
        ),
        epoch=data["epoch"],
        active=_member(data["active"]),
        replicas=_members(data["replicas"]),
        in_sync=_members(data["in_sync"]),
        unlinked=not live,
        version=mod_revision,
    )
