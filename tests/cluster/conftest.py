from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.harness import EtcdCluster


@pytest.fixture(scope="module")
def etcd_cluster() -> Iterator[EtcdCluster]:
    """A fresh 3-member etcd cluster on loopback ports for the module, SIGKILLed after it."""
    with EtcdCluster(size=3) as cluster:
        yield cluster
