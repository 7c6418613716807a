"""``cpsctl watch [NAME...]``: a node's service events (EventService.Watch)
and, for each NAME, the checkpoint's immediate-consumption notifications,
decoded, one line each (``--json``: one JSON object per line), until Ctrl-C.

It watches the first endpoint of ``--endpoints`` that answers. Each node
has its own feed (in a cluster every node reports the cluster's events:
members, active replicas, replicas, checkpoints created and deleted; expiry,
limits and storage failures only where they happen). It does not move to
another node when that one goes away: positions are the node's own, so it
exits 3 and says the last position it printed; run it again on another node
(or, once the node is back, with ``--since``).

Exit codes: 0 ended by Ctrl-C (SIGINT) or SIGTERM; 1 the service refused
(e.g. NAME does not exist: CL_CKPT_ERR_NOT_EXIST); 2 bad usage; 3 no
endpoint reachable, or the node went away.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import grpc

from cps.v1 import checkpoint_service_pb2 as ckpt
from cps.v1 import checkpoint_service_pb2_grpc as ckpt_grpc
from cps.v1 import event_service_pb2 as ev
from cps.v1 import event_service_pb2_grpc as ev_grpc
from cps.v1 import types_pb2 as t

from .main import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Command,
    Failure,
    _failure,
    _show_id,
    _time,
)

Register = Callable[[str, Callable[[Command], int], str], argparse.ArgumentParser]
KINDS = [ev.EventKind.Name(v).removeprefix("EVENT_KIND_") for v in ev.EventKind.values() if v]


class _Printer:
    """Lines from the two streams, whole and flushed."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.lock = threading.Lock()
        self.position = 0

    def emit(self, text: str, value: dict[str, Any]) -> None:
        line = json.dumps(value) if self.as_json else text
        with self.lock:
            print(line, flush=True)


def event_fields(event: ev.ServiceEvent) -> dict[str, Any]:
    """One service event as a flat dict (the --json object)."""
    value: dict[str, Any] = {
        "type": "event",
        "position": event.position,
        "time": _time(event.time),
        "kind": ev.EventKind.Name(event.kind).removeprefix("EVENT_KIND_"),
        "checkpoint": event.checkpoint_name or None,
    }
    detail = event.WhichOneof("detail")
    if detail == "node_event":
        value |= {"node": event.node_event.node, "incarnation": event.node_event.incarnation}
    elif detail == "replica_event":
        r = event.replica_event
        value |= {"node": r.node, "incarnation": r.incarnation, "why": r.why or None}
    elif detail == "active_changed":
        a = event.active_changed
        value |= {
            "old": a.old_node or None,
            "new": a.new_node or None,
            "epoch": a.epoch,
            "why": a.why,
        }
    elif detail == "section_event":
        section = event.section_event.section_id
        value |= {"section": _show_id(section), "section_hex": section.hex()}
    elif detail == "limit_event":
        value |= {"reason": event.limit_event.reason, "method": event.limit_event.method}
    elif detail == "storage_event":
        s = event.storage_event
        value |= {"error": s.error, "checkpoints": list(s.checkpoint_names)}
    return value


_NOT_SHOWN = ("type", "position", "time", "kind", "checkpoint", "section_hex", "node_incarnation")


def event_line(value: dict[str, Any]) -> str:
    head = f"{value['time']} #{value['position']} {value['kind']}"
    if value["checkpoint"]:
        head += f" {value['checkpoint']}"
    rest = []
    for key, shown in value.items():
        if key in _NOT_SHOWN or shown is None or shown == []:
            continue
        if isinstance(shown, list):
            shown = ",".join(shown)
        elif key == "incarnation":
            shown = f"{shown:x}"  # as cpsctl nodes and the server's logs
        text = str(shown)
        rest.append(f"{key}={json.dumps(text) if ' ' in text else text}")
    return " ".join([head, *rest])


class _Watch:
    def __init__(self, run: Command) -> None:
        self.run = run
        self.out = _Printer(run.out.as_json)
        self.done = threading.Event()
        self.code = EXIT_OK
        self.message = ""
        self.stopping = False
        self.calls: list[Any] = []
        self.session = 0
        self.stub: ckpt_grpc.CheckpointServiceStub | None = None

    def fail(self, code: int, message: str) -> None:
        if not self.stopping and not self.done.is_set():
            self.code, self.message = code, message
        self.done.set()

    def gone(self, error: grpc.RpcError | None) -> None:
        """A stream ended: the node went away (or refused)."""
        if self.stopping:
            return
        endpoint = self.run.endpoint
        if error is None:
            self.fail(EXIT_UNREACHABLE, f"{endpoint}: the node ended the stream (stopping)")
            return
        failure = _failure(error, endpoint)
        code = error.code()
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
            self.fail(EXIT_UNREACHABLE, f"{endpoint}: the node went away ({code.name})")
        else:
            self.fail(failure.code, str(failure))

    def events(self, request: ev.WatchRequest) -> None:
        stub = ev_grpc.EventServiceStub(self.run.channel)
        call = stub.Watch(request)
        self.calls.append(call)
        try:
            first = True
            for message in call:
                if first:
                    first = False
                    if not self.out.as_json:
                        print(
                            f"cpsctl: watching {message.node} (incarnation "
                            f"{message.incarnation:x}) at {self.run.endpoint}",
                            file=sys.stderr,
                            flush=True,
                        )
                if message.lost:
                    self.out.emit(
                        f"LOST {message.lost} events (fell out of the node's backlog)",
                        {"type": "lost", "count": message.lost},
                    )
                for event in message.events:
                    value = event_fields(event)
                    value["node_incarnation"] = message.incarnation
                    self.out.position = event.position
                    self.out.emit(event_line(value), value)
            self.gone(None)
        except grpc.RpcError as error:
            self.gone(error)

    def open(self, names: list[str]) -> None:
        run = self.run
        self.stub = stub = ckpt_grpc.CheckpointServiceStub(run.channel)
        version = t.Version(release_code="B", major_version=1, minor_version=1)
        self.session = run.call(
            stub.Initialize, ckpt.InitializeRequest(version=version)
        ).service_handle
        for name in names:
            opened = run.call(
                stub.CheckpointOpen,
                ckpt.CheckpointOpenRequest(
                    service_handle=self.session,
                    checkpoint_name=name,
                    checkpoint_open_flags=[t.OPEN_FLAG_READ],
                ),
            )
            run.call(
                stub.ImmediateConsumptionRegister,
                ckpt.ImmediateConsumptionRegisterRequest(
                    checkpoint_handle=opened.checkpoint_handle
                ),
            )

    def callbacks(self) -> None:
        assert self.stub is not None
        call = self.stub.Callbacks(ckpt.CallbacksRequest(service_handle=self.session))
        self.calls.append(call)
        try:
            for message in call:
                for callback in message.callbacks:
                    kind = callback.WhichOneof("kind")
                    if kind == "dropped":
                        count = callback.dropped.count
                        self.out.emit(
                            f"DROPPED {count} notifications (re-read the checkpoints)",
                            {"type": "dropped", "count": count},
                        )
                    elif kind == "notification":
                        self._notification(callback.notification)
            self.gone(None)
        except grpc.RpcError as error:
            self.gone(error)

    def _notification(self, note: t.CheckpointNotificationCallback) -> None:
        received = datetime.now(UTC).isoformat()  # notifications carry no time
        for changed in note.changed_sections:
            section = changed.section_id.id
            change = t.SectionChange.Name(changed.change).removeprefix("SECTION_CHANGE_")
            value = {
                "type": "notification",
                "time": received,
                "checkpoint": note.checkpoint_name,
                "section": _show_id(section),
                "section_hex": section.hex(),
                "change": change,
            }
            self.out.emit(
                f"{received} NOTIFICATION {note.checkpoint_name} "
                f"section={_show_id(section)} {change}",
                value,
            )

    def stop(self) -> None:
        self.stopping = True
        for call in self.calls:
            call.cancel()
        if self.stub is not None and self.session:
            with contextlib.suppress(grpc.RpcError):
                self.stub.Finalize(
                    ckpt.FinalizeRequest(service_handle=self.session),
                    timeout=self.run.target.timeout,
                )


def cmd_watch(run: Command) -> int:
    args = run.args
    try:
        kinds = [ev.EventKind.Value("EVENT_KIND_" + k.upper()) for k in args.kind]
    except ValueError as error:
        raise Failure(EXIT_USAGE, f"--kind: one of {', '.join(KINDS)}") from error
    if args.since < 0:
        raise Failure(EXIT_USAGE, "--since: a position (0 or more)")
    watch = _Watch(run)
    run.channel  # noqa: B018  (connects: no endpoint answering is exit 3)
    if args.names:
        watch.open(args.names)
    request = ev.WatchRequest(after_position=args.since, incarnation=args.incarnation, kinds=kinds)
    if args.only_named:
        request.checkpoint_names.extend(args.names)
    # SIGTERM ends it as Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    threads = [threading.Thread(target=watch.events, args=(request,), daemon=True)]
    if args.names:
        threads.append(threading.Thread(target=watch.callbacks, daemon=True))
    for thread in threads:
        thread.start()
    try:
        while not watch.done.wait(0.2):
            pass
    except KeyboardInterrupt:
        watch.stop()
        return EXIT_OK
    finally:
        signal.signal(signal.SIGTERM, previous)
    watch.stop()
    message = watch.message
    if watch.code == EXIT_UNREACHABLE:
        message += f"; last position printed: {watch.out.position} (resume with --since)"
    raise Failure(watch.code or EXIT_ERROR, message)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def register(command: Register) -> None:
    """Add ``watch`` to cpsctl's parser."""
    watch = command(
        "watch",
        cmd_watch,
        "live service events of the answering node and, for each NAME, its "
        "immediate-consumption notifications (until Ctrl-C)",
    )
    watch.add_argument(
        "names", nargs="*", metavar="NAME", help="checkpoints to open (READ) and watch"
    )
    watch.add_argument(
        "--since",
        type=int,
        default=0,
        metavar="POSITION",
        help="resume after this position of the node's feed (default: from the "
        "oldest event the node keeps)",
    )
    watch.add_argument(
        "--incarnation",
        type=lambda v: int(v, 16),
        default=0,
        metavar="HEX",
        help="the node incarnation --since belongs to (a restarted node starts over)",
    )
    watch.add_argument(
        "--kind",
        action="append",
        default=[],
        metavar="KIND",
        help=f"only events of this kind (repeatable): {', '.join(KINDS)}",
    )
    watch.add_argument(
        "--only-named",
        action="store_true",
        help="only service events of the NAMEs (none without a checkpoint)",
    )
