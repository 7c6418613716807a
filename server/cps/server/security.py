"""Credentials of a node from its settings (docs/security.md): the TLS of
its gRPC port, of its calls to other nodes and of its calls to etcd, and
the secret its peers share. Files are read once, at start."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

from .config import Settings

log = logging.getLogger("cps.security")


def _read(path: Path | None) -> bytes | None:
    return None if path is None else path.read_bytes()


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS of the gRPC port (None: plaintext). With a client CA every caller
    must show a certificate: clients one of the client CA, the other nodes
    one of the peer CA (in a cluster)."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    pair = (settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())
    roots: list[bytes] = []
    if settings.client_ca is not None:
        roots.append(settings.client_ca.read_bytes())
        if settings.etcd_endpoints and settings.peer_ca is not None:
            roots.append(settings.peer_ca.read_bytes())
    return grpc.ssl_server_credentials(
        [pair],
        root_certificates=b"\n".join(roots) if roots else None,
        require_client_auth=bool(roots),
    )


@dataclass(frozen=True)
class PeerCredentials:
    """How this node calls other nodes, and how it knows their calls."""

    channel: grpc.ChannelCredentials | None  # None: plaintext
    secret: bytes | None  # sent with every call and required of every caller
    peer_ca: bytes | None  # a caller's certificate must be signed by it (mutual TLS)


def peer_credentials(settings: Settings) -> PeerCredentials:
    secret = _read(settings.cluster_secret_file)
    if secret is not None:
        secret = secret.strip()
    tls = settings.tls_cert is not None
    channel = None
    if tls:
        channel = grpc.ssl_channel_credentials(
            root_certificates=_read(settings.peer_ca),
            private_key=_read(settings.peer_key),
            certificate_chain=_read(settings.peer_cert),
        )
    else:
        log.warning(
            "TLS IS OFF: clients and the other nodes talk to this node in plaintext; "
            "only the cluster secret keeps strangers off the node-to-node service. "
            "Set tls_cert, tls_key, client_ca and the peer_* settings beyond a test bed "
            "(docs/security.md)"
        )
    # Peers are known by certificate only when the port requires one.
    by_certificate = tls and settings.client_ca is not None
    return PeerCredentials(channel, secret, _read(settings.peer_ca) if by_certificate else None)


def etcd_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """TLS to etcd when a CA for it is given (None: plaintext)."""
    if settings.etcd_ca is None and settings.etcd_cert is None:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read(settings.etcd_ca),
        private_key=_read(settings.etcd_key),
        certificate_chain=_read(settings.etcd_cert),
    )
