"""The README's cluster quick start: `make cluster` (scripts/local-cluster.sh)
brings up 3 nodes and a 3-member etcd on this machine that work as one
cluster, and stops them all on SIGTERM (Ctrl-C in a terminal)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.cluster.harness import free_ports
from tests.cluster.harness.cps_cluster import health_of
from tests.cluster.helpers import ASYNC, client, create, read_value, wait_for
from tests.support import RW

ROOT = Path(__file__).resolve().parents[2]


def test_the_local_cluster_script_starts_a_working_cluster_and_stops_it(tmp_path: Path) -> None:
    # Three consecutive free ports for the nodes, and a base for etcd whose
    # ports (base, base+1, base+10000, ...) are unlikely to be taken.
    while True:
        (base,) = free_ports(1)
        if base < 60000 and all(_free(base + i) for i in (1, 2)):
            break
    nodes = {base, base + 1, base + 2}
    while True:
        (etcd_base,) = free_ports(1)
        etcd_base = 20000 + etcd_base % 5000
        etcd_ports = {etcd_base + m * 10000 + offset for m in range(3) for offset in (0, 1)}
        if not etcd_ports & nodes and all(_free(port) for port in etcd_ports):
            break
    env = {
        **os.environ,
        "CPS_BASE_PORT": str(base),
        "ETCD_BASE_PORT": str(etcd_base),
        "CLUSTER_DIR": str(tmp_path),
        "BIN": str(Path(sys.executable).parent),
    }
    script = subprocess.Popen(
        ["bash", str(ROOT / "scripts" / "local-cluster.sh")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        addresses = [f"127.0.0.1:{base + i}" for i in range(3)]
        wait_for(lambda: all(health_of(a) == 1 for a in addresses), 30, "3 nodes SERVING")
        create(addresses[0], "quickstart", ASYNC)
        with client(addresses[1]) as writer:
            handle = writer.open("quickstart", flags=RW)
            writer.create_section(handle, b"s", b"hello")
        assert read_value(addresses[2], "quickstart", b"s") == b"hello"
        # A node killed (to watch a failover) leaves the others running.
        node = subprocess.run(
            ["pgrep", "-P", str(script.pid), "-f", "--", f"--listen {addresses[0]} "],
            capture_output=True,
            text=True,
            check=True,
        )
        os.kill(int(node.stdout.split()[0]), signal.SIGKILL)
        wait_for(lambda: read_value(addresses[1], "quickstart", b"s") == b"hello", 20, "failover")
        assert script.poll() is None
    finally:
        script.send_signal(signal.SIGTERM)
        output, _ = script.communicate(timeout=30)
    assert script.returncode == 0, output.decode()
    assert b"stopped" in output


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
