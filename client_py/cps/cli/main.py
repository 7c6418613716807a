"""cpsctl: look at CPS nodes and checkpoints from a shell.

    cpsctl [--endpoints A,B,C] [TLS settings] [--json] COMMAND ...

Commands: ``nodes``, ``ls [PREFIX]``, ``status NAME``, ``sections NAME``,
``read NAME SECTION``, ``write NAME SECTION (VALUE | --file F)``, ``health``,
``snapshot save FILE``, ``snapshot restore FILE --data-dir DIR`` (snapshot.py),
``watch [NAME...]`` (watch.py).
Each talks to the first node of ``--endpoints`` that answers (``health``
asks every one). Tables for people; ``--json`` for scripts.

Exit codes: 0 done; 1 the service answered with an error (the seed's
error, e.g. CL_CKPT_ERR_NOT_EXIST for an unknown checkpoint; for
``health``: a node is not serving or not reachable); 2 bad usage; 3 no
endpoint could be reached (or the node went away mid-command).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import string
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import grpc
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from tabulate import tabulate

from cps.client._connect import channel_options, open_channel
from cps.v1 import admin_service_pb2 as admin
from cps.v1 import admin_service_pb2_grpc as admin_grpc
from cps.v1 import checkpoint_service_pb2 as ckpt
from cps.v1 import checkpoint_service_pb2_grpc as ckpt_grpc
from cps.v1 import types_pb2 as t

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

DEFAULT_ENDPOINTS = "127.0.0.1:50051"
_GONE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_MODES = {
    t.CREATION_FLAG_WR_ALL_REPLICAS: "sync",
    t.CREATION_FLAG_WR_ACTIVE_REPLICA: "async",
    t.CREATION_FLAG_WR_ACTIVE_REPLICA_WEAK: "weak",
}
_PRINTABLE = set(string.printable) - set("\x0b\x0c")


class Failure(Exception):
    """Ends the command with ``code`` and a message on stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# -- connecting ----------------------------------------------------------------------


@dataclass
class Target:
    endpoints: list[str]
    credentials: grpc.ChannelCredentials | None
    options: list[tuple[str, Any]]
    timeout: float

    def channel(self, endpoint: str) -> grpc.Channel:
        return open_channel(endpoint, self.options, self.credentials)

    def connect(self) -> tuple[str, grpc.Channel]:
        """The first endpoint that answers (a connection, TLS included)."""
        tried = []
        for endpoint in self.endpoints:
            channel = self.channel(endpoint)
            if _ready(channel, self.timeout):
                return endpoint, channel
            channel.close()
            tried.append(endpoint)
        raise Failure(EXIT_UNREACHABLE, f"no endpoint answers: {', '.join(tried)}")


def _ready(channel: grpc.Channel, timeout: float) -> bool:
    """Connected within ``timeout``; False at the first failure to connect
    (refused, no route, a TLS handshake refused), without waiting longer."""
    reached = threading.Event()
    state: list[grpc.ChannelConnectivity] = []
    ends = (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE)

    def seen(connectivity: grpc.ChannelConnectivity) -> None:
        if connectivity in ends or connectivity is grpc.ChannelConnectivity.SHUTDOWN:
            state.append(connectivity)
            reached.set()

    channel.subscribe(seen, try_to_connect=True)
    try:
        reached.wait(timeout)
    finally:
        channel.unsubscribe(seen)
    return bool(state) and state[0] is grpc.ChannelConnectivity.READY


def _target(args: argparse.Namespace) -> Target:
    endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    if not endpoints:
        raise Failure(EXIT_USAGE, "--endpoints names no node")
    credentials = None
    tls = args.cacert or args.cert or args.key
    if tls:
        if bool(args.cert) != bool(args.key):
            raise Failure(EXIT_USAGE, "--cert and --key go together")
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(args.cacert) if args.cacert else None,
            private_key=_read(args.key) if args.key else None,
            certificate_chain=_read(args.cert) if args.cert else None,
        )
    elif args.server_name:
        raise Failure(EXIT_USAGE, "--server-name needs TLS (--cacert)")
    extra: list[tuple[str, Any]] = []
    if args.server_name:
        extra.append(("grpc.ssl_target_name_override", args.server_name))
    return Target(endpoints, credentials, channel_options(extra), args.timeout)


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise Failure(EXIT_USAGE, f"cannot read {path}: {error.strerror}") from error


def _failure(error: grpc.RpcError, endpoint: str) -> Failure:
    """The seed's error as the service told it, or the node gone."""
    call: Any = error
    reason = ""
    status = rpc_status.from_call(call)
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
    code: grpc.StatusCode = call.code()
    if not reason and code in _GONE:
        return Failure(EXIT_UNREACHABLE, f"{endpoint}: {code.name}: {call.details()}")
    return Failure(EXIT_ERROR, f"{reason or code.name}: {call.details()}")


# -- values for people and for scripts ----------------------------------------------------


def _mode(attributes: t.CheckpointCreationAttributes) -> str:
    flags = set(attributes.creation_flags)
    mode = next((name for flag, name in _MODES.items() if flag in flags), "?")
    if t.CREATION_FLAG_CHECKPOINT_COLLOCATED in flags:
        mode += "+collocated"
    return mode


def _time(stamp: timestamp_pb2.Timestamp) -> str:
    return datetime.fromtimestamp(stamp.seconds + stamp.nanos / 1e9, UTC).isoformat()


def _retention(attributes: t.CheckpointCreationAttributes) -> str | float:
    retention = attributes.retention_duration
    if retention.WhichOneof("kind") != "duration":
        return "forever"
    return retention.duration.ToNanoseconds() / 1e9


def _show_id(section_id: bytes) -> str:
    """A section id for people: its text when printable, else 0x and hex."""
    if not section_id:
        return "(default)"
    try:
        text = section_id.decode()
    except UnicodeDecodeError:
        return "0x" + section_id.hex()
    return text if text.isprintable() else "0x" + section_id.hex()


def _text_of(data: bytes) -> str | None:
    """``data`` as text when it is UTF-8 made of printable characters."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return None
    return text if all(ch in _PRINTABLE or ch.isprintable() for ch in text) else None


def _node(node: admin.NodeInfo) -> dict[str, Any]:
    answering = node.answering
    return {
        "name": node.name,
        "incarnation": node.incarnation,
        "address": node.address,
        "state": admin.NodeState.Name(node.state).removeprefix("NODE_STATE_"),
        "role": admin.NodeRole.Name(node.role).removeprefix("NODE_ROLE_"),
        "version": node.version,
        "lease_id": node.lease_id,
        "lease_remaining_seconds": (
            node.lease_remaining.ToNanoseconds() / 1e9 if node.HasField("lease_remaining") else None
        ),
        "answering": answering,
        "directory_revision": node.directory_revision if answering else None,
        "replicas_held": node.replicas_held if answering else None,
        "active_replicas": node.active_replicas if answering else None,
        "sessions": node.sessions if answering else None,
    }


def _checkpoint(info: admin.CheckpointInfo) -> dict[str, Any]:
    attributes = info.checkpoint_creation_attributes
    replicas = []
    for replica in info.replicas:
        replicas.append(
            {
                "node": replica.node,
                "incarnation": replica.incarnation,
                "active": replica.active,
                "in_sync": replica.in_sync,
                "applied_seq": replica.applied_seq if replica.HasField("applied_seq") else None,
                "lag": replica.lag if replica.HasField("lag") else None,
            }
        )
    return {
        "name": info.checkpoint_name,
        "incarnation": info.incarnation,
        "mode": _mode(attributes),
        "creation_flags": [t.CreationFlag.Name(f) for f in attributes.creation_flags],
        "checkpoint_size": attributes.checkpoint_size,
        "max_sections": attributes.max_sections,
        "max_section_size": attributes.max_section_size,
        "max_section_id_size": attributes.max_section_id_size,
        "retention_seconds": _retention(attributes),
        "active": info.active_node or None,
        "epoch": info.epoch,
        "replicas": replicas,
        "in_sync": [r["node"] for r in replicas if r["in_sync"]],
        "sections": info.number_of_sections,
        "memory_used": info.memory_used,
        "open_handles": info.open_handles,
        "source": admin.DetailSource.Name(info.source).removeprefix("DETAIL_SOURCE_").lower(),
    }


def _section(descriptor: t.SectionDescriptor) -> dict[str, Any]:
    section_id = descriptor.section_id.id
    expiration = descriptor.expiration_time
    return {
        "id": _show_id(section_id),
        "id_hex": section_id.hex(),
        "size": descriptor.section_size,
        "state": t.SectionState.Name(descriptor.section_state).removeprefix("SECTION_STATE_"),
        "expires": "never" if expiration.WhichOneof("kind") != "at" else _time(expiration.at),
        "last_update": _time(descriptor.last_update),
    }


class Output:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def json(self, value: Any) -> None:
        print(json.dumps(value, indent=2, sort_keys=False))

    def table(self, rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> None:
        """``columns``: (heading, key) pairs of each row."""
        body = [[_cell(row.get(key)) for _, key in columns] for row in rows]
        print(tabulate(body, headers=[heading for heading, _ in columns], tablefmt="simple"))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


# -- commands ----------------------------------------------------------------------------


class Command:
    """One run: the target, the output, and the channel once connected."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.target = _target(args)
        self.out = Output(args.json)
        self.endpoint = ""
        self._channel: grpc.Channel | None = None

    @property
    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self.endpoint, self._channel = self.target.connect()
        return self._channel

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()

    def call(self, method: Callable[..., Any], request: Any) -> Any:
        try:
            return method(request, timeout=self.target.timeout)
        except grpc.RpcError as error:
            raise _failure(error, self.endpoint) from error

    @property
    def admin(self) -> admin_grpc.AdminServiceStub:
        return admin_grpc.AdminServiceStub(self.channel)


def cmd_nodes(run: Command) -> int:
    response = run.call(run.admin.ListNodes, admin.ListNodesRequest())
    nodes = [_node(node) for node in response.nodes]
    if run.out.as_json:
        run.out.json(nodes)
        return EXIT_OK
    for node in nodes:
        if node["answering"]:
            node["name"] = f"{node['name']} *"
        node["lease_id"] = f"{node['lease_id']:x}" if node["lease_id"] else None  # as etcdctl
    run.out.table(
        nodes,
        [
            ("NAME", "name"),
            ("ADDRESS", "address"),
            ("STATE", "state"),
            ("ROLE", "role"),
            ("VERSION", "version"),
            ("LEASE", "lease_id"),
            ("LEASE LEFT (s)", "lease_remaining_seconds"),
            ("REVISION", "directory_revision"),
            ("REPLICAS", "replicas_held"),
            ("ACTIVE", "active_replicas"),
            ("SESSIONS", "sessions"),
        ],
    )
    print(f"(* answered: {run.endpoint})")
    return EXIT_OK


def _all_checkpoints(run: Command, prefix: str) -> Iterator[admin.CheckpointInfo]:
    token = ""
    while True:
        request = admin.ListCheckpointsRequest(
            name_prefix=prefix, page_size=run.args.page_size, page_token=token
        )
        response = run.call(run.admin.ListCheckpoints, request)
        yield from response.checkpoints
        token = response.next_page_token
        if not token:
            return


def cmd_ls(run: Command) -> int:
    checkpoints = [_checkpoint(info) for info in _all_checkpoints(run, run.args.prefix)]
    if run.out.as_json:
        run.out.json(checkpoints)
        return EXIT_OK
    for row in checkpoints:
        row["backups"] = [r["node"] for r in row["replicas"] if not r["active"]]
    run.out.table(
        checkpoints,
        [
            ("NAME", "name"),
            ("MODE", "mode"),
            ("ACTIVE", "active"),
            ("BACKUPS", "backups"),
            ("IN SYNC", "in_sync"),
            ("EPOCH", "epoch"),
            ("SECTIONS", "sections"),
            ("BYTES", "memory_used"),
            ("FROM", "source"),
        ],
    )
    return EXIT_OK


def cmd_status(run: Command) -> int:
    request = admin.GetCheckpointRequest(checkpoint_name=run.args.name)
    info = _checkpoint(run.call(run.admin.GetCheckpoint, request).checkpoint)
    if run.out.as_json:
        run.out.json(info)
        return EXIT_OK
    fields = [
        ("name", info["name"]),
        ("mode", info["mode"]),
        ("active", info["active"] or "none (collocated: ActiveReplicaSet picks one)"),
        ("epoch", info["epoch"]),
        ("sections", f"{info['sections']} of {info['max_sections']}"),
        ("bytes", f"{info['memory_used']} (checkpoint_size {info['checkpoint_size']})"),
        ("max section size", info["max_section_size"]),
        ("retention", _cell(info["retention_seconds"])),
        ("open handles", info["open_handles"]),
        ("figures from", info["source"].replace("_", " ")),
    ]
    print(tabulate(fields, tablefmt="plain"))
    print()
    run.out.table(
        info["replicas"],
        [
            ("REPLICA", "node"),
            ("ACTIVE", "active"),
            ("IN SYNC", "in_sync"),
            ("APPLIED", "applied_seq"),
            ("LAG", "lag"),
        ],
    )
    return EXIT_OK


def cmd_sections(run: Command) -> int:
    sections: list[dict[str, Any]] = []
    token = ""
    while True:
        request = admin.ListSectionsRequest(
            checkpoint_name=run.args.name, page_size=run.args.page_size, page_token=token
        )
        response = run.call(run.admin.ListSections, request)
        sections += [_section(d) for d in response.sections]
        token = response.next_page_token
        if not token:
            break
    if run.out.as_json:
        run.out.json(sections)
        return EXIT_OK
    run.out.table(
        sections,
        [
            ("SECTION", "id"),
            ("SIZE", "size"),
            ("STATE", "state"),
            ("EXPIRES", "expires"),
            ("LAST UPDATE", "last_update"),
        ],
    )
    return EXIT_OK


def _section_id(args: argparse.Namespace) -> bytes:
    if not args.id_hex:
        return str(args.section).encode()
    try:
        return bytes.fromhex(args.section)
    except ValueError as error:
        raise Failure(EXIT_USAGE, f"--id-hex: {args.section!r} is not hex") from error


class _Opened:
    """A session and a checkpoint handle for one read or write, closed after."""

    def __init__(self, run: Command, name: str, flag: t.OpenFlag.ValueType) -> None:
        self.run = run
        self.stub = ckpt_grpc.CheckpointServiceStub(run.channel)
        version = t.Version(release_code="B", major_version=1, minor_version=1)
        self.session = run.call(
            self.stub.Initialize, ckpt.InitializeRequest(version=version)
        ).service_handle
        try:
            opened = run.call(
                self.stub.CheckpointOpen,
                ckpt.CheckpointOpenRequest(
                    service_handle=self.session, checkpoint_name=name, checkpoint_open_flags=[flag]
                ),
            )
        except Failure:
            self.finalize()
            raise
        self.handle: int = opened.checkpoint_handle

    def finalize(self) -> None:
        """Finalize closes the handle too; a failure here changes nothing done."""
        with contextlib.suppress(grpc.RpcError):
            self.stub.Finalize(
                ckpt.FinalizeRequest(service_handle=self.session), timeout=self.run.target.timeout
            )


def cmd_read(run: Command) -> int:
    section_id = _section_id(run.args)
    opened = _Opened(run, run.args.name, t.OPEN_FLAG_READ)
    try:
        element = t.IOVectorElement(section_id=t.SectionId(id=section_id))
        response = run.call(
            opened.stub.CheckpointRead,
            ckpt.CheckpointReadRequest(checkpoint_handle=opened.handle, io_vector=[element]),
        )
    finally:
        opened.finalize()
    data: bytes = response.io_vector[0].data_buffer
    if run.args.raw:
        if run.args.raw == "-":
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        else:
            Path(run.args.raw).write_bytes(data)
        if run.out.as_json:
            run.out.json({"checkpoint": run.args.name, "size": len(data), "file": run.args.raw})
        return EXIT_OK
    text = None if run.args.hex else _text_of(data)
    if run.out.as_json:
        value: dict[str, Any] = {
            "checkpoint": run.args.name,
            "section": _show_id(section_id),
            "section_hex": section_id.hex(),
            "size": len(data),
        }
        value["text" if text is not None else "hex"] = text if text is not None else data.hex()
        run.out.json(value)
    elif text is not None:
        print(text)
    else:
        print(data.hex())
    return EXIT_OK


def cmd_write(run: Command) -> int:
    args = run.args
    if (args.value is None) == (args.file is None):
        raise Failure(EXIT_USAGE, "write takes a VALUE or --file F (one of them)")
    if args.file is not None:
        data = sys.stdin.buffer.read() if args.file == "-" else _read(args.file)
    else:
        data = str(args.value).encode()
    section_id = _section_id(args)
    opened = _Opened(run, args.name, t.OPEN_FLAG_WRITE)
    try:
        run.call(
            opened.stub.SectionOverwrite,
            ckpt.SectionOverwriteRequest(
                checkpoint_handle=opened.handle,
                section_id=t.SectionId(id=section_id),
                data_buffer=data,
            ),
        )
    finally:
        opened.finalize()
    if run.out.as_json:
        run.out.json(
            {"checkpoint": args.name, "section": _show_id(section_id), "written": len(data)}
        )
    else:
        print(f"wrote {len(data)} bytes to {_show_id(section_id)} of {args.name}")
    return EXIT_OK


def cmd_health(run: Command) -> int:
    """Every endpoint's grpc.health.v1 status (like etcdctl endpoint health)."""
    rows = []
    for endpoint in run.target.endpoints:
        channel = run.target.channel(endpoint)
        started = time.monotonic()
        row: dict[str, Any] = {"endpoint": endpoint, "health": "UNREACHABLE", "error": None}
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""),
                timeout=run.target.timeout,
            )
            row["health"] = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        except grpc.RpcError as error:
            call: Any = error
            # The last part of grpc's "...: Connection refused".
            row["error"] = f"{call.code().name}: {str(call.details()).rsplit(': ', 1)[-1]}"
            if call.code() not in _GONE:
                row["health"] = "ERROR"
        finally:
            channel.close()
        row["took_ms"] = round((time.monotonic() - started) * 1000, 1)
        rows.append(row)
    if run.out.as_json:
        run.out.json(rows)
    else:
        run.out.table(
            rows,
            [
                ("ENDPOINT", "endpoint"),
                ("HEALTH", "health"),
                ("TOOK (ms)", "took_ms"),
                ("ERROR", "error"),
            ],
        )
    if all(row["health"] == "UNREACHABLE" for row in rows):
        return EXIT_UNREACHABLE
    return EXIT_OK if all(row["health"] == "SERVING" for row in rows) else EXIT_ERROR


# -- the command line --------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def parser() -> argparse.ArgumentParser:
    top = _Parser(
        prog="cpsctl",
        description="Look at CPS nodes and checkpoints.",
        epilog="exit codes: 0 done, 1 the service answered with an error (e.g. "
        "CL_CKPT_ERR_NOT_EXIST; health: a node not serving), 2 bad usage, "
        "3 no endpoint reachable",
    )
    top.add_argument(
        "--endpoints",
        default=os.environ.get("CPSCTL_ENDPOINTS", DEFAULT_ENDPOINTS),
        help="comma-separated node addresses; the first that answers is used "
        f"(default: $CPSCTL_ENDPOINTS or {DEFAULT_ENDPOINTS})",
    )
    top.add_argument("--cacert", help="CA certificate that signed the nodes' (turns on TLS)")
    top.add_argument("--cert", help="client certificate (nodes started with --client-ca)")
    top.add_argument("--key", help="the client certificate's private key")
    top.add_argument("--server-name", help="the name to check in the node's certificate")
    top.add_argument(
        "--timeout", type=float, default=5.0, help="seconds per connection and call (default 5)"
    )
    top.add_argument("--json", action="store_true", help="JSON on stdout, for scripts")
    commands = top.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, run: Callable[[Command], int], help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(run=run)
        # Also after the command (cpsctl ls --json); absent, the global one holds.
        sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON")
        return sub

    command("nodes", cmd_nodes, "the cluster's nodes as the answering node sees them")
    ls = command("ls", cmd_ls, "checkpoints, their replicas and where they are active")
    ls.add_argument("prefix", nargs="?", default="", metavar="PREFIX", help="names starting with")
    ls.add_argument("--page-size", type=int, default=500, help=argparse.SUPPRESS)
    status = command("status", cmd_status, "one checkpoint: attributes, replicas, lag")
    status.add_argument("name", metavar="NAME")
    sections = command("sections", cmd_sections, "the sections of one checkpoint")
    sections.add_argument("name", metavar="NAME")
    sections.add_argument("--page-size", type=int, default=500, help=argparse.SUPPRESS)
    read = command("read", cmd_read, "one section's data: text if it is UTF-8, else hex")
    read.add_argument("name", metavar="NAME")
    read.add_argument("section", metavar="SECTION", help='section id ("" for the default section)')
    read.add_argument("--id-hex", action="store_true", help="SECTION is given in hex")
    shown = read.add_mutually_exclusive_group()
    shown.add_argument("--hex", action="store_true", help="show the data in hex")
    shown.add_argument("--raw", metavar="FILE", help="write the bytes to FILE (- for stdout)")
    write = command("write", cmd_write, "overwrite one section (it must exist)")
    write.add_argument("name", metavar="NAME")
    write.add_argument("section", metavar="SECTION", help='section id ("" for the default section)')
    write.add_argument("value", nargs="?", metavar="VALUE", help="the new content, as UTF-8 text")
    write.add_argument("--file", metavar="F", help="the new content from a file (- for stdin)")
    write.add_argument("--id-hex", action="store_true", help="SECTION is given in hex")
    command("health", cmd_health, "grpc.health.v1 status of every endpoint")
    from . import snapshot, watch  # their own modules (they import this one)

    snapshot.register(command)
    watch.register(command)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        run = Command(args)
        try:
            code: int = args.run(run)
            return code
        finally:
            run.close()
    except Failure as failure:
        print(f"cpsctl: {failure}", file=sys.stderr)
        return failure.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
