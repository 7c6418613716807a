"""Real processes for the cluster tests: an etcd cluster and a TCP proxy that cuts links."""

from tests.cluster.harness.cps_cluster import CpsCluster, CpsNode, cps_cluster
from tests.cluster.harness.etcd_cluster import (
    EtcdCluster,
    EtcdMember,
    free_port_blocks,
    free_ports,
)
from tests.cluster.harness.proxy import TcpProxy

__all__ = [
    "CpsCluster",
    "CpsNode",
    "EtcdCluster",
    "EtcdMember",
    "TcpProxy",
    "cps_cluster",
    "free_port_blocks",
    "free_ports",
]
