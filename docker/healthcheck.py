#!/usr/bin/env python3
"""grpc.health.v1 check of a cps-server, for container health checks.

Installed in the image as `cps-healthcheck` (docker/Dockerfile: HEALTHCHECK).
Exits 0 when the service (by default "", the whole node) answers SERVING,
1 when it answers anything else (NOT_SERVING while a node catches up after a
(re)start, or drains on SIGTERM), 2 when the call fails (no answer, TLS
refused, timeout).

Every option has an environment variable, so that a compose file or a pod
spec can configure the image's HEALTHCHECK without replacing its command.
The names start with PROBE_, not CPS_: CPS_* belong to cps-server's flags.
  PROBE_ADDR         HOST:PORT of the node (127.0.0.1:50051)
  PROBE_SERVICE      service to check ("": the node serves clients)
  PROBE_CA           PEM file of the CA that signed the node's certificate:
                     TLS on (off when empty)
  PROBE_CERT, PROBE_KEY
                     a client certificate and its key, for a node started
                     with --client-ca
  PROBE_SERVER_NAME  name to match in the node's certificate (default: the
                     host of PROBE_ADDR)
  PROBE_TIMEOUT      seconds for the whole check (3)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING = 1


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="cps-healthcheck", description="grpc.health.v1 check of a cps-server"
    )
    parser.add_argument("--addr", default=_env("PROBE_ADDR", "127.0.0.1:50051"))
    parser.add_argument("--service", default=_env("PROBE_SERVICE"))
    parser.add_argument("--ca", default=_env("PROBE_CA"), help="CA file: TLS on")
    parser.add_argument("--cert", default=_env("PROBE_CERT"), help="client certificate")
    parser.add_argument("--key", default=_env("PROBE_KEY"), help="client key")
    parser.add_argument("--server-name", default=_env("PROBE_SERVER_NAME"))
    parser.add_argument("--timeout", type=float, default=float(_env("PROBE_TIMEOUT", "3")))
    args = parser.parse_args(argv)
    if bool(args.cert) != bool(args.key):
        parser.error("--cert and --key go together")
    if args.cert and not args.ca:
        parser.error("a client certificate needs --ca (TLS)")
    return args


def open_channel(args: argparse.Namespace) -> grpc.Channel:
    if not args.ca:
        return grpc.insecure_channel(args.addr)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(args.ca).read_bytes(),
        private_key=Path(args.key).read_bytes() if args.key else None,
        certificate_chain=Path(args.cert).read_bytes() if args.cert else None,
    )
    options = []
    if args.server_name:
        options.append(("grpc.ssl_target_name_override", args.server_name))
    return grpc.secure_channel(args.addr, credentials, options=options)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    try:
        with open_channel(args) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service=args.service)
            reply = stub.Check(request, timeout=args.timeout)
    except (grpc.RpcError, OSError) as error:
        detail = error.details() if isinstance(error, grpc.Call) else str(error)
        print(f"cps-healthcheck: {args.addr}: {detail}", file=sys.stderr)
        return 2
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{args.addr} {args.service or '(node)'}: {name}")
    return 0 if reply.status == SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
