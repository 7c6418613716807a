"""Every setting of cps-server, declared once.

Each setting comes from, first found wins: a command-line flag, an
environment variable ``CPS_<NAME>``, a TOML file (``--config FILE`` or
``CPS_CONFIG``), its default. Every field of ``Limits`` is a setting of its
own, derived from the dataclass. ``python -m cps.server.config --markdown``
prints the table of docs/configuration.md.
"""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import math
import os
import re
import socket
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from .core.authorization import Authorization, TableError, parse_table
from .core.limits import Limits

MiB = 1024 * 1024
ENV_PREFIX = "CPS_"
CONFIG_ENV = "CPS_CONFIG"
# gRPC message sizes are C ints.
MAX_GRPC_MESSAGE = 2**31 - 1


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """What makes a process one worker of a node of several (``--workers``
    N > 1). Set by the supervisor (cps.server.workers), never by a flag."""

    index: int
    # The node's name: the host label of each of its workers' members, so
    # that placement never puts two replicas of a checkpoint on one node.
    host: str
    # This worker's own address (the node's port + 1 + index), beside the
    # node's address it shares with its siblings.
    listen: str


@dataclass(frozen=True, slots=True)
class Settings:
    listen: str
    max_message_bytes: int
    grace_seconds: float
    log_level: str
    keepalive_seconds: float
    session_timeout_seconds: float
    data_dir: Path
    persist_server_checkpoints: bool
    sync: str
    metrics_listen: str
    node_name: str
    replica_timeout_seconds: float
    limits: Limits
    advertise: str
    etcd_endpoints: tuple[str, ...]
    cluster_name: str
    replicas: int
    lease_ttl_seconds: int
    workers: int
    tls_cert: Path | None
    tls_key: Path | None
    client_ca: Path | None
    peer_cert: Path | None
    peer_key: Path | None
    peer_ca: Path | None
    etcd_cert: Path | None
    etcd_key: Path | None
    etcd_ca: Path | None
    cluster_secret_file: Path | None
    auth_file: Path | None
    # The table of auth_file, read and checked once at start (None: no file).
    authorization: Authorization | None = None
    # Set in a worker process of a node of several (None: the node is one process).
    worker: WorkerRole | None = None


class ConfigError(ValueError):
    """One or more settings are invalid; each problem names the setting, where
    its value came from and the value."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    state = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local/state")
    return Path(state) / "cps"


# --- the declaration -------------------------------------------------------

Kind = Literal["str", "choice", "int", "float", "bool", "path", "optional_path", "list"]
# A check returns what is wrong with a converted value, or None.
Check = Callable[[Any], "str | None"]


@dataclass(frozen=True, slots=True)
class Group:
    key: str
    table: str  # TOML table of the group's settings; "" is the top level
    title: str


GROUPS = (
    Group("server", "", "server"),
    Group("storage", "storage", "storage"),
    Group("cluster", "cluster", "cluster"),
    Group("tls", "tls", "TLS and security"),
    Group("limits", "limits", "limits"),
)
_GROUP = {group.key: group for group in GROUPS}


@dataclass(frozen=True, slots=True)
class Option:
    name: str
    kind: Kind
    default: Any
    help: str
    group: str
    flag: str = ""  # default: --name-with-dashes
    metavar: str = ""
    choices: tuple[str, ...] = ()
    check: Check | None = None
    # Shown in --help and the doc instead of the default when the default
    # depends on the machine or on another setting.
    shown_default: str = ""
    # The default computed from the environment at parse time.
    default_factory: Callable[[Mapping[str, str]], Any] | None = None

    @property
    def cli(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def table(self) -> str:
        return _GROUP[self.group].table

    @property
    def toml_key(self) -> str:
        return f"{self.table}.{self.name}" if self.table else self.name

    @property
    def type_text(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "list":
            return f"list of {self.metavar}"
        if self.kind == "int":
            return "integer (bytes)" if self.metavar == "BYTES" else "integer"
        if self.kind == "float":
            return "seconds" if self.metavar == "SECONDS" else "number"
        if self.kind == "str":
            return "HOST:PORT" if self.metavar == "HOST:PORT" else "string"
        return {"optional_path": "path (optional)"}.get(self.kind, self.kind)

    def default_text(self) -> str:
        if self.shown_default:
            return self.shown_default
        value = self.default
        if isinstance(value, bool):
            return "true" if value else "false"
        if value is None:
            return "unset"
        if value in ("", ()):
            return '""'
        if isinstance(value, int) and value >= MiB and value % MiB == 0:
            return f"{value} ({value // MiB} MiB)"
        return str(value)


# --- checks ----------------------------------------------------------------

_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_PORT = re.compile(r"[0-9]+")


def _check_host(host: str) -> None:
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv4 address") from None
        return
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{host!r} is not a host name, an IPv4 address or an [IPv6] address")


def split_address(text: str) -> tuple[str, int]:
    """HOST and PORT of HOST:PORT, where HOST is a name, an IPv4 address or
    an IPv6 address in brackets; ValueError says what is wrong."""
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError("no ] closing the IPv6 address")
        host, rest = text[1:close], text[close + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
        if not rest:
            raise ValueError("no port: expected [IPv6]:PORT")
        if not rest.startswith(":"):
            raise ValueError("expected :PORT after ]")
        port_text = rest[1:]
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon:
            raise ValueError("no port: expected HOST:PORT")
        if ":" in host:
            raise ValueError("an IPv6 address goes in brackets: [ADDRESS]:PORT")
        if not host:
            raise ValueError("no host: expected HOST:PORT")
        _check_host(host)
    if not _PORT.fullmatch(port_text):
        raise ValueError(f"port {port_text!r} is not a number")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port {port} is out of range 0-65535")
    return host, port


def join_address(host: str, port: int) -> str:
    """HOST:PORT, the host in brackets when it is an IPv6 address (as
    split_address returns it, without them)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def advertise_of(listen: str, port: int) -> str:
    """The address a node advertises when --advertise is empty: the host of
    ``listen`` (this machine's name for a wildcard host) and ``port``, the
    port it got."""
    host = listen.rpartition(":")[0]
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = socket.gethostname()
    return f"{host}:{port}"


def _address(*, optional: bool = False, port_zero: bool = True) -> Check:
    def check(value: str) -> str | None:
        if optional and value == "":
            return None
        try:
            _, port = split_address(value)
        except ValueError as error:
            return str(error)
        if port == 0 and not port_zero:
            return "port 0 is not a port others can connect to"
        return None

    return check


def _endpoints(value: tuple[str, ...]) -> str | None:
    for endpoint in value:
        if not endpoint:
            return "an empty endpoint (a stray comma?)"
        if "://" in endpoint:
            return f"{endpoint!r}: HOST:PORT without a scheme (TLS comes from etcd_cert/etcd_ca)"
        problem = _address(port_zero=False)(endpoint)
        if problem:
            return f"{endpoint!r}: {problem}"
    return None


def _at_least(minimum: int, maximum: int | None = None) -> Check:
    def check(value: int) -> str | None:
        if value < minimum:
            return f"must be at least {minimum}"
        if maximum is not None and value > maximum:
            return f"must be at most {maximum}"
        return None

    return check


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _not_negative(value: float) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def _cluster_name(value: str) -> str | None:
    if re.fullmatch(r"[a-z0-9-]+", value):
        return None
    return "only lower-case letters, digits and - (at least one)"


def _readable_file(value: Path | None) -> str | None:
    if value is None:
        return None
    if not value.exists():
        return "no such file"
    if not value.is_file():
        return "not a regular file"
    if not os.access(value, os.R_OK):
        return "not readable"
    return None


def _path(name: str, meaning: str) -> Option:
    return Option(name, "optional_path", None, meaning, "tls", metavar="PATH", check=_readable_file)


# --- the settings ----------------------------------------------------------

OPTIONS: tuple[Option, ...] = (
    Option(
        "listen",
        "str",
        "127.0.0.1:50051",
        "gRPC address to serve on (port 0: any free port)",
        "server",
        metavar="HOST:PORT",
        check=_address(),
    ),
    Option(
        "max_message_bytes",
        "int",
        80 * MiB,
        "largest gRPC message received or sent",
        "server",
        metavar="BYTES",
        check=_at_least(1, MAX_GRPC_MESSAGE),
    ),
    Option(
        "grace_seconds",
        "float",
        10.0,
        "on SIGTERM/SIGINT, how long in-flight calls may finish",
        "server",
        metavar="SECONDS",
        check=_not_negative,
    ),
    Option(
        "log_level",
        "choice",
        "info",
        "log threshold; debug adds every failed call",
        "server",
        choices=("debug", "info", "warning"),
    ),
    Option(
        "keepalive_seconds",
        "float",
        30.0,
        "interval of HTTP/2 keepalive pings to clients",
        "server",
        metavar="SECONDS",
        check=_positive,
    ),
    Option(
        "session_timeout_seconds",
        "float",
        30.0,
        "a session with no Callbacks stream and no calls for this long is finalized",
        "server",
        metavar="SECONDS",
        check=_positive,
    ),
    Option(
        "metrics_listen",
        "str",
        "",
        "HOST:PORT of the HTTP endpoint of /metrics (Prometheus), /healthz and /readyz "
        "(empty: off); a loopback host unless the scraper or prober is elsewhere",
        "server",
        metavar="HOST:PORT",
        check=_address(optional=True),
    ),
    Option(
        "workers",
        "int",
        1,
        "worker processes of this node, one per core (more than 1 needs etcd_endpoints "
        "and a fixed port: worker i also listens on port + 1 + i; docs/workers.md)",
        "server",
        metavar="N",
        check=_at_least(1),
    ),
    Option(
        "data_dir",
        "path",
        None,
        "where the node keeps its SQLite store",
        "storage",
        metavar="PATH",
        shown_default="$XDG_STATE_HOME/cps, else ~/.local/state/cps",
        default_factory=default_data_dir,
    ),
    Option(
        "persist_server_checkpoints",
        "bool",
        True,
        "keep server checkpoints in the store too, so they survive a restart "
        "(the seed: with no peer for a backup, replicate in persistent memory)",
        "storage",
    ),
    Option(
        "sync",
        "choice",
        "full",
        "SQLite synchronous mode: full survives power loss, normal survives a "
        "crash of the server process only",
        "storage",
        choices=("full", "normal"),
    ),
    Option(
        "node_name",
        "str",
        "",
        "this node's name in the cluster",
        "cluster",
        metavar="NAME",
        shown_default="the address it advertises",
    ),
    Option(
        "advertise",
        "str",
        "",
        "HOST:PORT at which other nodes and clients reach this node (empty: derived from listen)",
        "cluster",
        metavar="HOST:PORT",
        check=_address(optional=True, port_zero=False),
    ),
    Option(
        "etcd_endpoints",
        "list",
        (),
        "etcd endpoints, comma-separated in a flag or variable, a list in the file "
        "(empty: a single node)",
        "cluster",
        metavar="HOST:PORT",
        check=_endpoints,
    ),
    Option(
        "cluster_name",
        "str",
        "cps",
        "name of the cluster this node belongs to (a-z, 0-9, -)",
        "cluster",
        metavar="NAME",
        check=_cluster_name,
    ),
    Option(
        "replicas",
        "int",
        2,
        "replicas of each checkpoint in the cluster, the active one included",
        "cluster",
        metavar="N",
        check=_at_least(1),
    ),
    Option(
        "lease_ttl_seconds",
        "int",
        3,
        "TTL of this node's etcd lease, whole seconds (etcd's unit): a node that "
        "stops renewing it this long is taken over",
        "cluster",
        flag="--lease-ttl",
        metavar="SECONDS",
        check=_at_least(1),
    ),
    Option(
        "replica_timeout_seconds",
        "float",
        1.0,
        "a replica that does not acknowledge a synchronous write this fast leaves the "
        "in-sync set (so the write is acknowledged without it)",
        "cluster",
        metavar="SECONDS",
        check=_positive,
    ),
    _path("tls_cert", "PEM certificate of the gRPC port; with tls_key, clients use TLS"),
    _path("tls_key", "PEM private key of tls_cert"),
    _path("client_ca", "PEM CA bundle client certificates must chain to (mutual TLS)"),
    _path("peer_cert", "PEM certificate this node shows other nodes"),
    _path("peer_key", "PEM private key of peer_cert"),
    _path("peer_ca", "PEM CA bundle the certificates of other nodes must chain to"),
    _path("etcd_cert", "PEM client certificate for etcd"),
    _path("etcd_key", "PEM private key of etcd_cert"),
    _path("etcd_ca", "PEM CA bundle etcd's certificate must chain to"),
    _path("cluster_secret_file", "file holding the secret the nodes of the cluster share"),
    _path(
        "auth_file",
        "TOML authorization table: which client identity may read or write which "
        "checkpoint names (needs client_ca; docs/security.md)",
    ),
)

# Help of the current limits; a new field of Limits gets a generic one
# (or the "help" of its field metadata) and is a setting all the same.
_LIMIT_HELP = {
    "max_sessions": "sessions open at once",
    "max_handles_per_session": "checkpoint handles open in one session",
    "max_checkpoints": "live checkpoints, server (replicas held) and library",
    "max_reserved_bytes": "sum of checkpoint_size over live server checkpoints plus the "
    "bytes library checkpoints hold: the memory the node promises to hold",
    "max_sections_per_checkpoint": "largest max_sections a checkpoint may be created with",
    "max_section_size": "largest max_section_size a checkpoint may be created with",
    "max_section_id_size": "largest max_section_id_size a checkpoint may be created with",
    "max_iovector_elements": "elements of one read or write call",
    "max_iterations_per_handle": "section iterations open on one handle",
    "max_library_handles": "library handles open at once (LibraryInitialize beyond it: "
    "CL_ERR_NO_MEMORY)",
    "library_handle_timeout_seconds": "a library handle no call names for this long is "
    "finalized (its client vanished); checked every session_timeout_seconds/2",
    "max_peer_queue_bytes": "bytes shipped to one peer and not acknowledged yet; beyond "
    "it the peer leaves the in-sync sets and is sent whole again",
    "max_callback_queue": "callbacks waiting for one session's stream; beyond it "
    "notifications are merged, then dropped (EventsLost)",
    "max_event_backlog": "service events the node keeps (EventService.Watch): a watcher "
    "resumes from any of them; one further behind loses the oldest and is told how many",
    "max_callback_message_bytes": "bytes of one Callbacks stream message: a larger "
    "notification is split over several callbacks, waiting callbacks over several "
    "messages (keep it below the clients' receive limit, 4 MiB in gRPC)",
}
# Limits that make no sense below a floor (default floor: 1).
_LIMIT_MINIMUM = {"max_callback_message_bytes": 16 * 1024}
_KINDS: dict[str, Kind] = {"int": "int", "float": "float", "bool": "bool", "str": "str"}


def _limit_metavar(name: str, kind: Kind) -> str:
    if kind == "float":
        return "SECONDS" if name.endswith("_seconds") else "NUMBER"
    if kind != "int":
        return ""
    return "BYTES" if name.endswith(("_bytes", "_size")) else "N"


def _limit_check(name: str, kind: Kind) -> Check | None:
    if kind == "int":
        return _at_least(_LIMIT_MINIMUM.get(name, 1))
    return _positive if kind == "float" else None


def _limit_options() -> tuple[Option, ...]:
    defaults = Limits()
    options = []
    for field in fields(Limits):
        annotation = field.type if isinstance(field.type, str) else field.type.__name__
        kind = _KINDS.get(annotation)
        if kind is None:
            raise TypeError(f"Limits.{field.name}: no setting kind for type {annotation}")
        helps = field.metadata.get("help") or _LIMIT_HELP.get(field.name)
        options.append(
            Option(
                field.name,
                kind,
                getattr(defaults, field.name),
                "limit: " + (helps or field.name.replace("_", " ")),
                "limits",
                metavar=_limit_metavar(field.name, kind),
                check=_limit_check(field.name, kind),
            )
        )
    return tuple(options)


LIMIT_OPTIONS = _limit_options()
ALL_OPTIONS = OPTIONS + LIMIT_OPTIONS
_BY_TOML = {(option.table, option.name): option for option in ALL_OPTIONS}
_BY_NAME = {option.name: option for option in ALL_OPTIONS}
_TABLES = {group.table for group in GROUPS if group.table}
# A certificate needs its key and the other way round.
_PAIRS = (("tls_cert", "tls_key"), ("peer_cert", "peer_key"), ("etcd_cert", "etcd_key"))


# --- conversion ------------------------------------------------------------

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def _from_text(option: Option, text: str) -> Any:
    """The value of a flag or an environment variable."""
    kind = option.kind
    if kind == "str":
        return text
    if kind == "choice":
        value = text.strip().lower()
        if value not in option.choices:
            raise ValueError("expected one of " + ", ".join(option.choices))
        return value
    if kind == "int":
        try:
            return int(text.strip())
        except ValueError:
            raise ValueError("expected an integer") from None
    if kind == "float":
        try:
            return _finite(float(text.strip()))
        except ValueError:
            raise ValueError("expected a number") from None
    if kind == "bool":
        value = text.strip().lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise ValueError("expected true/false, 1/0 or yes/no")
    if kind == "list":
        return () if not text.strip() else tuple(item.strip() for item in text.split(","))
    return _path_value(option, text, None)


def _path_value(option: Option, text: str, base: Path | None) -> Path | None:
    if text == "":
        if option.kind == "optional_path":
            return None
        raise ValueError("expected a path")
    path = Path(text).expanduser()
    return base / path if base is not None and not path.is_absolute() else path


def _from_toml(option: Option, value: object, base: Path) -> Any:
    """The value of a key of the TOML file; relative paths are relative to
    the file's folder."""
    kind = option.kind
    if kind in ("str", "choice", "path", "optional_path"):
        if not isinstance(value, str):
            raise ValueError("expected a string")
        if kind in ("path", "optional_path"):
            return _path_value(option, value, base)
        return _from_text(option, value)
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("expected an integer")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("expected a number")
        return _finite(float(value))
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("expected a list of strings")
    return tuple(value)


# --- the file --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _File:
    path: Path
    values: dict[str, object]


def _load_file(flag: str | None, environ: Mapping[str, str], problems: list[str]) -> _File | None:
    if flag is not None:
        text, source = flag, "flag --config"
    else:
        text, source = environ.get(CONFIG_ENV, ""), f"env {CONFIG_ENV}"
    if not text:
        return None
    path = Path(text).expanduser()
    try:
        with path.open("rb") as stream:
            data = tomllib.load(stream)
    except OSError as error:
        problems.append(f"config = {text!r} (from {source}): cannot read: {error.strerror}")
        return None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        problems.append(f"config file {path} (from {source}): not valid TOML: {error}")
        return None
    values: dict[str, object] = {}
    for key, value in data.items():
        if key in _TABLES:
            if not isinstance(value, dict):
                problems.append(f"config file {path}: {key} must be a table, [{key}]")
                continue
            items = [(key, name, item) for name, item in value.items()]
        else:
            items = [("", key, value)]
        for table, name, item in items:
            option = _BY_TOML.get((table, name))
            if option is None:
                problems.append(f"config file {path}: {_unknown(table, name)}")
            else:
                values[option.name] = item
    return _File(path, values)


def _unknown(table: str, name: str) -> str:
    key = f"{table}.{name}" if table else name
    message = f"unknown key {key!r}"
    known = _BY_NAME.get(name)
    if known is not None:
        return f"{message}: {name} belongs at {known.toml_key}"
    close = difflib.get_close_matches(key, [option.toml_key for option in ALL_OPTIONS], n=1)
    return f"{message}; did you mean {close[0]!r}?" if close else message


# --- parsing ---------------------------------------------------------------


def version() -> str:
    try:
        return metadata.version("cps")
    except metadata.PackageNotFoundError:
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cps-server",
        description="CPS node: the OpenClovis checkpoint service over gRPC.",
        epilog="Each setting comes from its flag, else its environment variable, else the "
        f"config file (--config or {CONFIG_ENV}), else its default. "
        "See docs/configuration.md.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"TOML file of settings [env {CONFIG_ENV}]",
    )
    groups = {group.key: parser.add_argument_group(group.title) for group in GROUPS}
    for option in ALL_OPTIONS:
        where = f"[default: {option.default_text()}; env {option.env}; file {option.toml_key}]"
        text = f"{option.help} {where}".replace("%", "%%")
        group = groups[option.group]
        if option.kind == "bool":
            group.add_argument(
                option.cli, dest=option.name, action=argparse.BooleanOptionalAction, help=text
            )
        else:
            group.add_argument(
                option.cli,
                dest=option.name,
                metavar=option.metavar or "{" + ",".join(option.choices) + "}",
                help=text,
            )
    parser.set_defaults(**{option.name: None for option in ALL_OPTIONS})
    return parser


def parse(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """The settings of argv (default: sys.argv[1:]) and environ (default:
    os.environ). --help and --version exit 0, an unknown flag exits 2
    (argparse); an invalid setting raises ConfigError naming each problem."""
    env = os.environ if environ is None else environ
    args = _parser().parse_args(argv)
    problems: list[str] = []
    file = _load_file(args.config, env, problems)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for option in ALL_OPTIONS:
        given = getattr(args, option.name)
        raw: object
        try:
            if given is not None:
                raw, source = given, f"flag {option.cli}"
                value = given if option.kind == "bool" else _from_text(option, given)
            elif option.env in env:
                raw, source = env[option.env], f"env {option.env}"
                value = _from_text(option, env[option.env])
            elif file is not None and option.name in file.values:
                raw = file.values[option.name]
                source = f"file {file.path}, key {option.toml_key}"
                value = _from_toml(option, raw, file.path.parent)
            else:
                source = "default"
                factory = option.default_factory
                value = option.default if factory is None else factory(env)
                raw = value
        except ValueError as error:
            problems.append(f"{option.name} = {raw!r} (from {source}): {error}")
            continue
        problem = option.check(value) if option.check is not None else None
        if problem is not None:
            if isinstance(value, Path) and str(value) != raw:
                problem += f" ({value})"  # the path as resolved
            problems.append(f"{option.name} = {raw!r} (from {source}): {problem}")
            continue
        values[option.name] = value
        sources[option.name] = source
    problems += _cross_checks(values, sources)
    authorization = None
    if values.get("auth_file") is not None:
        authorization = _authorization(values["auth_file"], sources["auth_file"], problems)
    if problems:
        raise ConfigError(problems)
    limits = Limits(**{option.name: values.pop(option.name) for option in LIMIT_OPTIONS})
    values["sync"] = values["sync"].upper()
    return Settings(**values, limits=limits, authorization=authorization)


def load_authorization(path: Path) -> Authorization:
    """The authorization table of the TOML file ``path``; ValueError (a
    TableError when the file is TOML) says what is wrong."""
    try:
        with path.open("rb") as stream:
            data = tomllib.load(stream)
    except OSError as error:
        raise ValueError(f"cannot read: {error.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"not valid TOML: {error}") from None
    return parse_table(data)


def _authorization(path: Path, source: str, problems: list[str]) -> Authorization | None:
    where = f"auth_file = {str(path)!r} (from {source})"
    try:
        return load_authorization(path)
    except TableError as error:
        problems.extend(f"{where}: {problem}" for problem in error.problems)
    except ValueError as error:
        problems.append(f"{where}: {error}")
    return None


def _cross_checks(values: Mapping[str, Any], sources: Mapping[str, str]) -> list[str]:
    problems = []

    def needs(name: str, other: str) -> None:
        value = values.get(name)
        if value is not None and other in values and values[other] is None:
            wanted = _BY_NAME[other]
            problems.append(
                f"{name} = {str(value)!r} (from {sources[name]}) needs {other} too "
                f"({wanted.cli}, {wanted.env} or {wanted.toml_key} in the file)"
            )

    for cert, key in _PAIRS:
        needs(cert, key)
        needs(key, cert)
    needs("client_ca", "tls_cert")
    # Identities are client certificate subjects: without client
    # certificates every caller would be the same anonymous identity.
    needs("auth_file", "client_ca")
    if values.get("etcd_endpoints"):
        problems += _peer_checks(values)
    workers = values.get("workers", 1)
    if workers > 1:
        problems += _worker_checks(values, sources)
    return problems


def _worker_checks(values: Mapping[str, Any], sources: Mapping[str, str]) -> list[str]:
    """A node of several workers (docs/workers.md): a cluster node (the
    workers share the directory etcd holds) with room for the workers' own
    ports after its own."""
    workers = values["workers"]
    given = f"workers = {workers} (from {sources['workers']})"
    problems = []
    if not values.get("etcd_endpoints"):
        problems.append(
            f"{given} needs etcd_endpoints: a node without etcd keeps its directory of "
            "checkpoints in the memory of its one process, so it runs a single worker; "
            "workers share the directory a cluster keeps in etcd (--etcd-endpoints)"
        )
    ports = (("listen", workers), ("advertise", workers), ("metrics_listen", workers - 1))
    for name, after in ports:
        value = values.get(name)
        if not value:
            continue
        _, port = split_address(value)
        if port == 0 and name == "listen":
            problems.append(
                f"{given} needs a fixed port in listen = {value!r} (from {sources[name]}): "
                "worker i also listens on that port + 1 + i"
            )
        elif port + after > 65535:
            problems.append(
                f"{given}: {name} = {value!r} (from {sources[name]}) leaves no room for the "
                f"workers' ports (up to {port} + {after}, past 65535)"
            )
    return problems


def _peer_checks(values: Mapping[str, Any]) -> list[str]:
    """A cluster node serves node-to-node calls only to peers: by
    certificate (mutual TLS, the port requiring client certificates) or by
    the cluster secret (docs/security.md)."""
    tls = values.get("tls_cert") is not None
    problems = []
    if tls and values.get("peer_ca") is None:
        problems.append(
            "tls_cert in a cluster needs peer_ca too: the CA that signed the other nodes' "
            "certificates (--peer-ca)"
        )
    if tls and values.get("client_ca") is not None and values.get("peer_cert") is None:
        problems.append(
            "client_ca in a cluster needs peer_cert and peer_key: the port requires a "
            "certificate of every caller, the other nodes included (--peer-cert, --peer-key)"
        )
    if values.get("cluster_secret_file") is None:
        if not (tls and values.get("client_ca") is not None):
            problems.append(
                "a cluster node needs a way to know its peers: mutual TLS (tls_cert, "
                "client_ca, peer_cert, peer_key, peer_ca) or a shared secret "
                "(--cluster-secret-file)"
            )
        elif _same_bytes(values.get("client_ca"), values.get("peer_ca")):
            problems.append(
                "client_ca and peer_ca are the same CA, so any client certificate would "
                "pass as a peer: give the nodes a shared secret too (--cluster-secret-file)"
            )
    return problems


def _same_bytes(first: Path | None, second: Path | None) -> bool:
    if first is None or second is None:
        return False
    try:
        return first.read_bytes().strip() == second.read_bytes().strip()
    except OSError:
        return False


# --- the doc ---------------------------------------------------------------

BEGIN = "<!-- BEGIN settings: generated by `python -m cps.server.config --markdown` -->"
END = "<!-- END settings -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown() -> str:
    """The table of every setting, as in docs/configuration.md."""
    lines = [
        "| name | flag | env | TOML key | type | default | meaning |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for group in GROUPS:
        for option in ALL_OPTIONS:
            if option.group != group.key:
                continue
            flag = f"`{option.cli}`"
            if option.kind == "bool":
                flag += f" / `--no-{option.cli[2:]}`"
            cells = [
                f"`{option.name}`",
                flag,
                f"`{option.env}`",
                f"`{option.toml_key}`",
                option.type_text,
                f"`{option.default_text()}`",
                option.help,
            ]
            lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def update_doc(text: str) -> str:
    """text with the part between BEGIN and END replaced by markdown()."""
    head, begin, rest = text.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"no {BEGIN} ... {END} in the document")
    return f"{head}{BEGIN}\n{markdown()}{END}{tail}"


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cps.server.config")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--markdown", action="store_true", help="print the settings table")
    action.add_argument(
        "--update", metavar="FILE", type=Path, help="rewrite the settings table of FILE"
    )
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown())
    else:
        path: Path = args.update
        path.write_text(update_doc(path.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
