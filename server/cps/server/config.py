"""Command-line flags of cps-server; every limit is one."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from .core.limits import Limits

MiB = 1024 * 1024


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
    advertise: str
    etcd_endpoints: tuple[str, ...]
    cluster_name: str
    replicas: int
    lease_ttl_seconds: float
    replica_timeout_seconds: float
    limits: Limits


def default_data_dir() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local/state"
    )
    return Path(state) / "cps"


def _limit_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def parse(argv: Sequence[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="cps-server",
        description="CPS node: the OpenClovis checkpoint service over gRPC.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--listen", default="127.0.0.1:50051", help="HOST:PORT to serve on (port 0: any free)"
    )
    parser.add_argument(
        "--max-message-bytes",
        type=int,
        default=80 * MiB,
        help="largest gRPC message received or sent",
    )
    parser.add_argument(
        "--grace-seconds",
        type=float,
        default=10.0,
        help="on SIGTERM/SIGINT, how long in-flight calls may finish",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument(
        "--keepalive-seconds",
        type=float,
        default=30.0,
        help="interval of HTTP/2 keepalive pings to clients",
    )
    parser.add_argument(
        "--session-timeout-seconds",
        type=float,
        default=30.0,
        help="a session with no Callbacks stream and no calls for this long is finalized",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=default_data_dir(),
        help="where the node keeps its SQLite store",
    )
    parser.add_argument(
        "--persist-server-checkpoints",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep server checkpoints in the store too, so they survive a restart "
        "(the seed: with no peer for a backup, replicate in persistent memory)",
    )
    parser.add_argument(
        "--sync",
        choices=["full", "normal"],
        default="full",
        help="SQLite synchronous mode: full survives power loss, normal survives a "
        "crash of the server process only",
    )
    parser.add_argument(
        "--metrics-listen",
        default="",
        help="HOST:PORT of the Prometheus /metrics endpoint (empty: off)",
    )
    parser.add_argument(
        "--node-name",
        default="",
        help="this node's name in the cluster (default: the address it advertises)",
    )
    parser.add_argument(
        "--advertise",
        default="",
        help="HOST:PORT other nodes and clients reach this node at (default: the listen "
        "address with the port it bound)",
    )
    parser.add_argument(
        "--etcd-endpoints",
        default="",
        help="H1:P1,H2:P2,... of the etcd cluster that coordinates the CPS cluster "
        "(empty: a single node, nothing else needed)",
    )
    parser.add_argument("--cluster-name", default="cps", help="the CPS cluster to join")
    parser.add_argument(
        "--replicas", type=int, default=2, help="replicas of each checkpoint (the active included)"
    )
    parser.add_argument(
        "--lease-ttl",
        type=float,
        default=3.0,
        help="seconds: a node that stops renewing its lease this long is taken over",
    )
    parser.add_argument(
        "--replica-timeout-seconds",
        type=float,
        default=1.0,
        help="a replica that does not acknowledge a synchronous write this fast leaves "
        "the in-sync set",
    )
    defaults = Limits()
    for field in fields(Limits):
        parser.add_argument(
            _limit_flag(field.name),
            type=int,
            default=getattr(defaults, field.name),
            help=f"limit: {field.name.replace('_', ' ')}",
        )
    args = parser.parse_args(argv)
    limits = Limits(**{field.name: getattr(args, field.name) for field in fields(Limits)})
    for field in fields(Limits):
        if getattr(limits, field.name) < 1:
            parser.error(f"{_limit_flag(field.name)} must be at least 1")
    return Settings(
        listen=args.listen,
        max_message_bytes=args.max_message_bytes,
        grace_seconds=args.grace_seconds,
        log_level=args.log_level,
        keepalive_seconds=args.keepalive_seconds,
        session_timeout_seconds=args.session_timeout_seconds,
        data_dir=args.data_dir,
        persist_server_checkpoints=args.persist_server_checkpoints,
        sync=args.sync.upper(),
        metrics_listen=args.metrics_listen,
        node_name=args.node_name,
        advertise=args.advertise,
        etcd_endpoints=tuple(e for e in args.etcd_endpoints.split(",") if e),
        cluster_name=args.cluster_name,
        replicas=args.replicas,
        lease_ttl_seconds=args.lease_ttl,
        replica_timeout_seconds=args.replica_timeout_seconds,
        limits=limits,
    )
