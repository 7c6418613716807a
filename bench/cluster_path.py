"""One replicated write mode on a 3-node cluster, for profiling: ops/s, each
node's CPU per write, and how well the links batch (items per batch, from
the active's metrics); optionally py-spy on every node (bench/PROFILE.md).

Run: python -m bench.cluster_path --mode sync --inflight 64 [--seconds 10]
     [--py-spy DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

from bench.cpu import tree_seconds
from bench.request_path import PY_SPY, drive, summarise
from cps.v1 import types_pb2 as t
from tests.cluster.harness import CpsCluster, EtcdCluster

MODES = {
    "sync": t.CREATION_FLAG_WR_ALL_REPLICAS,
    "async": t.CREATION_FLAG_WR_ACTIVE_REPLICA,
    "weak": t.CREATION_FLAG_WR_ACTIVE_REPLICA_WEAK,
}


def _batching(log: str) -> str:
    """Items per batch from a node's metrics (its port is in its log)."""
    port = None
    for line in log.splitlines():
        if "metrics serving" in line:
            port = json.loads(line)["port"]
    if port is None:
        return "metrics not found"
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    found = dict(re.findall(r"^cps_replication_(batches|items)_sent_total (\S+)", text, re.M))
    batches, items = float(found.get("batches", 0)), float(found.get("items", 0))
    return f"{batches:.0f} batches, {items:.0f} items, {items / max(batches, 1):.2f} per batch"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=list(MODES), default="sync")
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--py-spy", type=Path, help="record raw py-spy stacks of each node")
    args = parser.parse_args()
    options = ["--replicas", "3", "--metrics-listen", "127.0.0.1:0", "--log-level", "info"]
    with EtcdCluster(size=3) as etcd, CpsCluster(etcd.endpoints, 3, options) as cluster:
        pids = [node.pid for node in cluster.nodes]
        address, mode = cluster.nodes[0].address, MODES[args.mode]
        # The checkpoint and its sections, then a second of writes (every
        # replica in sync); one channel, as the figures in PROFILE.md.
        asyncio.run(drive(address, args.inflight, 1.0, create=True, mode=mode, channels_wanted=1))
        recorders = []
        if args.py_spy:
            args.py_spy.mkdir(parents=True, exist_ok=True)
            for index, pid in enumerate(pids):
                out = args.py_spy / f"n{index}-{args.mode}-{args.inflight}.txt"
                record = ["record", "-p", str(pid), "-d", str(int(args.seconds)), "-r", "200"]
                recorders.append(
                    subprocess.Popen(
                        [PY_SPY, *record, "-f", "raw", "-o", str(out), "--nonblocking"],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
        before = [tree_seconds(pid) for pid in pids]
        latencies = asyncio.run(
            drive(address, args.inflight, args.seconds, create=False, mode=mode, channels_wanted=1)
        )
        rate = len(latencies) / args.seconds
        used = [tree_seconds(pid) - start for pid, start in zip(pids, before, strict=True)]
        for recorder in recorders:
            recorder.wait(timeout=args.seconds + 30)
        writes = len(latencies)
        per_write = ", ".join(f"n{i} {cpu / writes * 1e6:.0f}" for i, cpu in enumerate(used))
        print(f"{args.mode} at {args.inflight} in flight: {rate:,.0f} writes/s")
        print(f"CPU µs per write: {per_write}")
        print(f"n0 (active) links: {_batching(cluster.nodes[0].log_text())}")
    if args.py_spy:
        for path in sorted(args.py_spy.glob("*.txt")):
            print(summarise(path))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
