"""The Prometheus endpoint counts calls by method and seed error and reports
the node's gauges."""

from __future__ import annotations

import re
import urllib.request

import grpc
import pytest

from tests.support import Client, running_node


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_metrics_count_calls_and_report_gauges() -> None:
    with running_node("--metrics-listen", "127.0.0.1:0") as node:
        assert node.metrics_port
        before = scrape(node.metrics_port)
        with grpc.insecure_channel(f"127.0.0.1:{node.port}") as channel:
            client = Client(channel)
            handle = client.open("metered")
            client.create_section(handle, b"s", b"12345")
            with pytest.raises(grpc.RpcError):
                client.create_section(handle, b"s")  # CL_ERR_ALREADY_EXIST
            after = scrape(node.metrics_port)
        ok = 'cps_rpc_total{method="SectionCreate",code="OK"}'
        failed = 'cps_rpc_total{method="SectionCreate",code="CL_ERR_ALREADY_EXIST"}'
        assert after[ok] - before.get(ok, 0) == 1
        assert after[failed] - before.get(failed, 0) == 1
        count = 'cps_rpc_duration_seconds_count{method="SectionCreate"}'
        assert after[count] - before.get(count, 0) == 2
        assert after["cps_sessions"] == 1
        assert after["cps_checkpoints"] == 1
        assert after["cps_section_bytes"] == 5
        assert after["cps_storage_commits"] >= 2
        buckets = [
            v
            for k, v in after.items()
            if re.match(r"cps_rpc_duration_seconds_bucket\{method=\"SectionCreate\"", k)
        ]
        assert buckets == sorted(buckets)  # cumulative


def test_metrics_are_off_by_default() -> None:
    with running_node() as node:
        assert node.metrics_port == 0
