"""Peers only, and TLS across the cluster (docs/security.md): the
node-to-node service refuses anyone without the cluster secret or a peer
certificate; a TLS cluster over a TLS etcd serves clients that show a
certificate of the client CA, its nodes reach each other by mutual TLS, and
a client certificate is not a peer's. Certificates are made at run time."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cps.peer.v1 import peer_pb2, peer_pb2_grpc
from cps.server.cluster.etcd import Etcd
from cps.server.cluster.peer_server import SECRET_HEADER
from tests.certs import Authority, Pair
from tests.cluster.harness import CpsCluster, EtcdCluster, cps_cluster, free_ports
from tests.cluster.helpers import ASYNC, SYNC, client, create, overwrite, read_value
from tests.support import RW, Client, attributes

SERVER = str(Path(sys.executable).parent / "cps-server")
GRPCURL = str(Path(sys.executable).parent / "grpcurl")


def _incarnation(endpoints: list[str], cluster: CpsCluster, name: str) -> int:
    async def read() -> int:
        async with await Etcd.connect(endpoints) as etcd:
            kv = await etcd.get(f"/cps/{cluster.name}/ckpt/{name}".encode())
            assert kv is not None
            return int(kv.create_revision)

    return asyncio.run(read())


def _seal(channel: grpc.Channel, name: str, incarnation: int, **kw: object) -> None:
    peer_pb2_grpc.PeerServiceStub(channel).Seal(
        peer_pb2.SealRequest(
            ref=peer_pb2.Ref(name=name, incarnation=incarnation),
            epoch=1_000_000,
            active=peer_pb2.Member(name="intruder", incarnation=1),
        ),
        timeout=5,
        **kw,
    )


def test_the_peer_service_refuses_callers_without_the_cluster_secret(
    etcd_cluster: EtcdCluster,
) -> None:
    with cps_cluster(etcd_cluster.endpoints, 2, ("--lease-ttl", "2")) as cluster:
        a, b = cluster.nodes
        create(a.address, "guarded", SYNC)
        with client(a.address) as setup:
            handle = setup.open("guarded", flags=RW)
            setup.create_section(handle, b"s", b"before")
        incarnation = _incarnation(etcd_cluster.endpoints, cluster, "guarded")
        for node in (a, b):
            with grpc.insecure_channel(node.address) as channel:
                for metadata in ((), ((SECRET_HEADER, "not-the-secret"),)):
                    with pytest.raises(grpc.RpcError) as refused:
                        _seal(channel, "guarded", incarnation, metadata=metadata)
                    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
                    stream = peer_pb2_grpc.PeerServiceStub(channel).Fetch(
                        peer_pb2.FetchRequest(
                            ref=peer_pb2.Ref(name="guarded", incarnation=incarnation), epoch=1
                        ),
                        timeout=5,
                        metadata=metadata,
                    )
                    with pytest.raises(grpc.RpcError) as fetched:
                        list(stream)
                    assert fetched.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # Nothing was sealed: the active still takes synchronous writes, and
        # its backup still follows.
        with client(b.address) as later:
            overwrite(later, later.open("guarded", flags=RW), b"s", b"after")
        assert read_value(a.address, "guarded", b"s") == b"after"


def test_a_cluster_node_without_peer_authentication_refuses_to_start(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    command = [
        SERVER,
        "--listen",
        f"127.0.0.1:{port}",
        "--data-dir",
        str(tmp_path),
        "--etcd-endpoints",
        "127.0.0.1:1",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert "--cluster-secret-file" in result.stderr


# --- a TLS cluster ------------------------------------------------------------


class Pki:
    """Three authorities, as an operator would keep them apart: one for the
    nodes (their serving and peer certificates), one for clients, one for etcd."""

    def __init__(self, folder: Path) -> None:
        self.nodes = Authority(folder, "nodes")
        self.clients = Authority(folder, "clients")
        self.etcd = Authority(folder, "etcd")
        self.node = self.nodes.issue("cps-node")
        self.client = self.clients.issue("app-1")
        self.etcd_server = self.etcd.issue("etcd-0")
        self.etcd_client = self.etcd.issue("cps-node")

    def client_credentials(self, pair: Pair | None) -> grpc.ChannelCredentials:
        key, cert = pair.read() if pair is not None else (None, None)
        return grpc.ssl_channel_credentials(
            self.nodes.path.read_bytes(), private_key=key, certificate_chain=cert
        )


class TlsEtcd:
    """One etcd member that speaks only TLS and requires client certificates."""

    def __init__(self, pki: Pki, folder: Path) -> None:
        client_port, peer_port = free_ports(2)
        self.endpoint = f"127.0.0.1:{client_port}"
        peer = f"http://127.0.0.1:{peer_port}"
        self.log = folder / "etcd.log"
        with self.log.open("wb") as log:
            self.popen = subprocess.Popen(
                [
                    "etcd",
                    "--name=e0",
                    f"--data-dir={folder / 'etcd'}",
                    f"--listen-client-urls=https://{self.endpoint}",
                    f"--advertise-client-urls=https://{self.endpoint}",
                    f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster=e0={peer}",
                    f"--cert-file={pki.etcd_server.cert}",
                    f"--key-file={pki.etcd_server.key}",
                    f"--trusted-ca-file={pki.etcd.path}",
                    "--client-cert-auth",
                    "--logger=zap",
                    "--log-outputs=stderr",
                    "--log-level=warn",
                ],
                stdout=log,
                stderr=log,
            )

    def stop(self) -> None:
        self.popen.kill()
        self.popen.wait(10)


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pki, CpsCluster]]:
    folder = tmp_path_factory.mktemp("tls")
    pki = Pki(folder)
    etcd = TlsEtcd(pki, folder)
    flags = [
        "--lease-ttl",
        "2",
        *("--tls-cert", str(pki.node.cert), "--tls-key", str(pki.node.key)),
        *("--client-ca", str(pki.clients.path)),
        *("--peer-cert", str(pki.node.cert), "--peer-key", str(pki.node.key)),
        *("--peer-ca", str(pki.nodes.path)),
        *("--etcd-cert", str(pki.etcd_client.cert), "--etcd-key", str(pki.etcd_client.key)),
        *("--etcd-ca", str(pki.etcd.path)),
    ]
    cluster = CpsCluster(
        [etcd.endpoint],
        3,
        flags,
        secret=False,  # peers known by certificate alone
        credentials=pki.client_credentials(pki.client),
    )
    try:
        with cluster:
            yield pki, cluster
    finally:
        etcd.stop()


def test_a_tls_cluster_over_tls_etcd_serves_certified_clients_through_every_node(
    tls_cluster: tuple[Pki, CpsCluster],
) -> None:
    pki, cluster = tls_cluster
    a, b, c = cluster.nodes
    credentials = pki.client_credentials(pki.client)
    with grpc.secure_channel(a.address, credentials) as channel:
        Client(channel).open("over-tls", attributes(flags=ASYNC, max_sections=4))
    # Written through another node (forwarded over mutual TLS), read from a third.
    with grpc.secure_channel(b.address, credentials) as channel:
        writer = Client(channel)
        handle = writer.open("over-tls", flags=RW)
        writer.create_section(handle, b"s", b"secret state")
    with grpc.secure_channel(c.address, credentials) as channel:
        reader = Client(channel)
        handle = reader.open("over-tls", flags=RW)
        assert reader.read(handle, b"s") == b"secret state"


def test_a_tls_cluster_refuses_clients_without_a_certificate_and_plaintext(
    tls_cluster: tuple[Pki, CpsCluster],
) -> None:
    pki, cluster = tls_cluster
    node = cluster.nodes[0]
    stranger = Authority(node.cluster.folder, "stranger").issue("app-x")
    for credentials in (pki.client_credentials(None), pki.client_credentials(stranger)):
        with (
            grpc.secure_channel(node.address, credentials) as channel,
            pytest.raises(grpc.RpcError) as refused,
        ):
            Client(channel).open("anything", flags=RW)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # the handshake failed
    with grpc.insecure_channel(node.address) as channel, pytest.raises(grpc.RpcError):
        Client(channel).open("anything", flags=RW)


def test_a_client_certificate_is_not_a_peers(tls_cluster: tuple[Pki, CpsCluster]) -> None:
    pki, cluster = tls_cluster
    node = cluster.nodes[0]
    with grpc.secure_channel(node.address, pki.client_credentials(pki.client)) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            _seal(channel, "over-tls", 1)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # The nodes' certificate passes the gate (sealing a checkpoint the node
    # does not hold answers that it holds nothing).
    with grpc.secure_channel(node.address, pki.client_credentials(pki.node)) as channel:
        _seal(channel, "no-such-checkpoint", 1)
