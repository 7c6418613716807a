"""The authorization table (--auth-file): which identity may read or write
which checkpoint names, in the manner of etcd's roles.

A role grants read, write or readwrite on checkpoint-name prefixes, for
server checkpoints and library checkpoints separately; an identity (the
subject of a client certificate, e.g. "CN=app-1") has roles. What no role
of the identity grants is refused: an identity that is not in the table may
do nothing. docs/security.md has the model and an example.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import CkptError, ErrorCode


class Access(enum.Flag):
    READ = enum.auto()
    WRITE = enum.auto()


class Kind(enum.Enum):
    SERVER = "server"
    LIBRARY = "library"


PERMISSIONS = {"read": Access.READ, "write": Access.WRITE, "readwrite": Access.READ | Access.WRITE}


@dataclass(frozen=True, slots=True)
class Grant:
    prefix: str  # "" matches every name
    access: Access

    def allows(self, name: str, access: Access) -> bool:
        return access in self.access and name.startswith(self.prefix)


class TableError(ValueError):
    """The table is invalid; each problem names the key it is about."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(problems))


@dataclass(frozen=True, slots=True)
class Authorization:
    # (identity, kind) -> what the identity's roles grant on that kind.
    grants: Mapping[tuple[str, Kind], tuple[Grant, ...]]
    roles: tuple[str, ...] = ()
    identities: tuple[str, ...] = ()

    def allows(self, who: str, kind: Kind, name: str, access: Access) -> bool:
        grants = self.grants.get((who, kind), ())
        return all(
            any(grant.allows(name, needed) for grant in grants)
            for needed in (Access.READ, Access.WRITE)
            if needed in access
        )

    def check(self, who: str, kind: Kind, name: str, access: Access) -> None:
        """Nothing if ``who`` may have ``access`` to the checkpoint ``name``,
        else the seed's CL_CKPT_ERR_OP_NOT_PERMITTED (before anything is done)."""
        if self.allows(who, kind, name, access):
            return
        verb = " and ".join(str(flag.name).lower() for flag in Access if flag in access)
        raise CkptError(
            ErrorCode.OP_NOT_PERMITTED,
            f"identity {who!r} may not {verb} {kind.value} checkpoint {name!r} "
            "(the node's authorization table)",
            metadata={"cause": "not_authorized"},
        )


def _key(parts: list[str]) -> str:
    """A key path as TOML would write it."""
    out: list[str] = []
    for part in parts:
        if part.startswith("["):
            out[-1] += part
        elif part.replace("-", "").replace("_", "").isalnum():
            out.append(part)
        else:
            out.append('"' + part.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return ".".join(out)


def parse_table(data: Mapping[str, object]) -> Authorization:
    """The authorization of a TOML document (already decoded); TableError
    lists every problem."""
    problems: list[str] = []
    for key in data:
        if key not in ("roles", "identities"):
            problems.append(f"unknown key {_key([key])!r} (expected roles and identities)")
    roles = _roles(data.get("roles", {}), problems)
    bound = _identities(data.get("identities", {}), roles, problems)
    if problems:
        raise TableError(problems)
    grants: dict[tuple[str, Kind], tuple[Grant, ...]] = {}
    for identity, names in bound.items():
        for kind in Kind:
            grants[(identity, kind)] = tuple(
                grant for name in names for grant in roles[name].get(kind, ())
            )
    return Authorization(grants, tuple(roles), tuple(bound))


def _roles(value: object, problems: list[str]) -> dict[str, dict[Kind, list[Grant]]]:
    if not isinstance(value, dict):
        problems.append("roles must be a table: [roles.NAME]")
        return {}
    roles: dict[str, dict[Kind, list[Grant]]] = {}
    kinds = {kind.value: kind for kind in Kind}
    for name, role in value.items():
        roles[name] = {}
        if not isinstance(role, dict):
            problems.append(f"{_key(['roles', name])} must be a table: [roles.{name}]")
            continue
        for kind_name, entries in role.items():
            where = ["roles", name, kind_name]
            kind = kinds.get(kind_name)
            if kind is None:
                problems.append(f"unknown key {_key(where)!r} (expected server and library)")
                continue
            if not isinstance(entries, list):
                problems.append(
                    f"{_key(where)} must be a list of {{ prefix = ..., permission = ... }}"
                )
                continue
            grants = roles[name].setdefault(kind, [])
            for index, entry in enumerate(entries):
                grant = _grant(entry, _key([*where, f"[{index}]"]), problems)
                if grant is not None:
                    grants.append(grant)
    return roles


def _grant(entry: object, where: str, problems: list[str]) -> Grant | None:
    if not isinstance(entry, dict):
        problems.append(f"{where} must be a table {{ prefix = ..., permission = ... }}")
        return None
    found = len(problems)
    for key in entry:
        if key not in ("prefix", "permission"):
            problems.append(f"unknown key {key!r} in {where} (expected prefix and permission)")
    prefix = entry.get("prefix")
    if prefix is None:
        problems.append(f'{where} needs a prefix ("" for every name)')
    elif not isinstance(prefix, str):
        problems.append(f"{where}.prefix = {prefix!r}: expected a string")
    permission = entry.get("permission")
    access = PERMISSIONS.get(permission) if isinstance(permission, str) else None
    if permission is None:
        problems.append(f"{where} needs a permission (read, write or readwrite)")
    elif access is None:
        problems.append(f"{where}.permission = {permission!r}: expected read, write or readwrite")
    if len(problems) > found or not isinstance(prefix, str) or access is None:
        return None
    return Grant(prefix, access)


def _identities(
    value: object, roles: Mapping[str, object], problems: list[str]
) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        problems.append('identities must be a table: [identities] "CN=app-1" = ["role"]')
        return {}
    bound: dict[str, tuple[str, ...]] = {}
    for identity, names in value.items():
        where = _key(["identities", identity])
        if not identity:
            problems.append(f"{where}: an identity is a certificate subject, never empty")
            continue
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            problems.append(f"{where} must be a list of role names")
            continue
        for name in names:
            if name not in roles:
                known = ", ".join(sorted(roles)) or "none"
                problems.append(f"{where}: unknown role {name!r} (roles: {known})")
        bound[identity] = tuple(names)
    return bound
