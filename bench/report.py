"""The results as Markdown: machine, method, targets, persistence, the cluster
(write modes, failover), notifications, library, then one table per target."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.failover import FailoverResult
from bench.load import LoadResult
from bench.notify import NotifyResult, Spread

# The in-flight level at which the project's targets are defined.
TARGET_INFLIGHT = 64
# Other load on the machine (cores) past which a run is flagged as noisy.
NOISY_OTHER_CORES = 0.15
# Issue 3: notification latency p99 below this, at this many subscribers.
NOTIFY_P99_MS = 10.0
NOTIFY_TARGET_SUBSCRIBERS = 100

# The CPS configurations. The issue-2 targets are evaluated on the in-memory
# one (the seed keeps server checkpoints in main memory) and shown for the
# persistent default too.
CPS_MEM = "cps-mem"
CPS = "cps"
CPS_DISK = "cps-disk"
CPS_DISK_NORMAL = "cps-disk-normal"
CPS_TARGETS = (CPS_MEM, CPS, CPS_DISK, CPS_DISK_NORMAL)
# A 3-member etcd (the cluster's reference), 3 CPS nodes over another one, and
# the failover rounds on such a cluster.
ETCD3 = "etcd-3"
CPS_CLUSTER = "cps-cluster"
CPS_FAILOVER = "cps-failover"
# Issue 8: synchronous 3-replica ops/s at least these times the 3-member etcd's
# puts/s and the single node's overwrites/s (at TARGET_INFLIGHT); failover
# under this many lease TTLs.
CLUSTER_VS_ETCD3 = 1.0
CLUSTER_VS_SINGLE = 0.6
FAILOVER_TTLS = 2.0
# The issue's figure for a 3-member etcd's puts/s at 64 in flight on a 2-core machine.
ISSUE_ETCD3_PUTS = 6900
# Issue 11: the persistent default's overwrites/s at least this times the
# bare server's calls/s (at TARGET_INFLIGHT), its p50 at 1 in flight at most
# etcd 1-member's; sync 3-replica ops/s at least the 3-member etcd's at
# these levels, its p50 at 1 in flight at most this times etcd-3's; async
# at least sync at every level.
PERSISTENT_VS_BARE = 0.85
CLUSTER_LEVELS = (16, 64)
CLUSTER_P50_VS_ETCD3 = 1.2
# Stands for each CPS configuration in a ratio.
ANY_CPS = "{cps}"


@dataclass(frozen=True)
class Row:
    scenario: str
    items_per_op: int
    item_unit: str | None
    result: LoadResult | None
    error: str | None = None

    @property
    def usable(self) -> bool:
        return self.result is not None and self.result.errors == 0 and self.result.ops > 0


@dataclass
class TargetResult:
    name: str
    title: str
    descriptions: dict[str, str] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    error: str | None = None
    # Where its data dir was (`path (fs type)`), None for a server without one.
    data_dir: str | None = None
    # How it was configured, e.g. "server checkpoints stored, --sync full".
    config: str | None = None
    notify: list[NotifyResult] = field(default_factory=list)
    notify_error: str | None = None
    # A cluster: node 0's command line, placeholders for ports, dirs and names.
    command: str | None = None

    def row(self, scenario: str, inflight: int) -> Row | None:
        for row in self.rows:
            if (
                row.scenario == scenario
                and row.result is not None
                and row.result.inflight == inflight
            ):
                return row
        return None

    @property
    def failed(self) -> bool:
        return (
            self.error is not None
            or self.notify_error is not None
            or any(row.result is None or row.result.errors for row in self.rows)
            or any(n.errors for n in self.notify)
        )


@dataclass(frozen=True)
class Ratio:
    label: str
    numerator: tuple[str, str]  # (target, scenario); target may be ANY_CPS
    denominator: tuple[str, str]
    # Items per op count in the numerator (section-writes/s for write32).
    numerator_items: bool = False
    minimum: float | None = None
    # Compare ops per server CPU-second instead of ops per second: much less
    # sensitive to other load on the machine, as long as the server is the
    # bottleneck.
    per_server_cpu: bool = False


CPS_RATIOS = [
    Ratio("overwrite / bare", (ANY_CPS, "overwrite"), ("bare", "unary"), minimum=0.8),
    Ratio("read / bare", (ANY_CPS, "read"), ("bare", "unary"), minimum=0.8),
    Ratio(
        "write32 section-writes/s / overwrite ops/s",
        (ANY_CPS, "write32"),
        (ANY_CPS, "overwrite"),
        numerator_items=True,
        minimum=10.0,
    ),
    Ratio(
        "overwrite / bare, per server CPU-second",
        (ANY_CPS, "overwrite"),
        ("bare", "unary"),
        per_server_cpu=True,
    ),
    Ratio(
        "read / bare, per server CPU-second",
        (ANY_CPS, "read"),
        ("bare", "unary"),
        per_server_cpu=True,
    ),
    Ratio("overwrite / etcd put", (ANY_CPS, "overwrite"), ("etcd", "put")),
    Ratio("read / etcd get", (ANY_CPS, "read"), ("etcd", "get")),
]
REFERENCE_RATIOS = [
    Ratio("etcd put / bare", ("etcd", "put"), ("bare", "unary")),
    Ratio("etcd get / bare", ("etcd", "get"), ("bare", "unary")),
]


def ratio_level(levels: Sequence[int]) -> int:
    return TARGET_INFLIGHT if TARGET_INFLIGHT in levels else max(levels)


def _rate(
    targets: dict[str, TargetResult],
    key: tuple[str, str],
    level: int,
    items: bool,
    per_server_cpu: bool,
) -> tuple[float, bool] | None:
    """The rate of a scenario at a level, and whether its run was noisy."""
    target = targets.get(key[0])
    row = target.row(key[1], level) if target is not None else None
    if row is None or row.result is None or not row.usable:
        return None
    res = row.result
    rate = res.ops_per_s * (row.items_per_op if items else 1)
    if per_server_cpu:
        if not res.cpu.server:
            return None
        return rate / res.cpu.server, False
    return rate, res.cpu.other > NOISY_OTHER_CORES


def _ratio(
    targets: dict[str, TargetResult], ratio: Ratio, level: int, cps: str
) -> tuple[float, bool] | None:
    """The ratio's value with ANY_CPS standing for `cps`, and whether it is noisy."""

    def resolve(key: tuple[str, str]) -> tuple[str, str]:
        return (cps, key[1]) if key[0] == ANY_CPS else key

    top = _rate(
        targets, resolve(ratio.numerator), level, ratio.numerator_items, ratio.per_server_cpu
    )
    bottom = _rate(targets, resolve(ratio.denominator), level, False, ratio.per_server_cpu)
    if top is None or bottom is None or bottom[0] == 0:
        return None
    return top[0] / bottom[0], top[1] or bottom[1]


def _ratio_cell(value: tuple[float, bool] | None, minimum: float | None) -> str:
    if value is None:
        return "n/a"
    text = f"{value[0]:.2f}"
    if minimum is not None:
        text += " **met**" if value[0] >= minimum else " **missed**"
    if value[1]:
        text += " (noisy)"
    return text


def ratio_lines(targets: dict[str, TargetResult], levels: Sequence[int]) -> list[str]:
    level = ratio_level(levels)
    configs = [
        (CPS_MEM, "server checkpoints in memory: **evaluated**"),
        (CPS, "persistent default: shown"),
    ]
    lines = [
        f"Issue 2, at {level} in-flight. A ratio marked (noisy) used a run that saw other load "
        f"> {NOISY_OTHER_CORES:g} cores (see the run's table); the per-server-CPU-second ratios "
        "are much less sensitive to it.",
        "",
        f"| ratio (at {level} in-flight) | target | "
        + " | ".join(f"`{name}` ({what})" for name, what in configs)
        + " |",
        "| --- | ---: |" + " ---: |" * len(configs),
    ]
    for ratio in CPS_RATIOS:
        wanted = f">= {ratio.minimum:g}" if ratio.minimum is not None else "(reference)"
        cells = [
            _ratio_cell(_ratio(targets, ratio, level, name), ratio.minimum) for name, _ in configs
        ]
        lines.append(f"| {ratio.label} | {wanted} | " + " | ".join(cells) + " |")
    lines += ["", "| reference ratio | value |", "| --- | ---: |"]
    for ratio in REFERENCE_RATIOS:
        cell = _ratio_cell(_ratio(targets, ratio, level, CPS), None)
        lines.append(f"| {ratio.label} | {cell} |")
    if level != TARGET_INFLIGHT:
        lines += [
            "",
            f"Note: computed at {level} in-flight; the targets are defined at {TARGET_INFLIGHT}.",
        ]
    return lines


def _us_per_op(result: LoadResult) -> float | None:
    if result.cpu.server is None or result.ops_per_s == 0:
        return None
    return result.cpu.server / result.ops_per_s * 1e6


def _per_op_us(result: LoadResult) -> str:
    """Server CPU time per op: what bounds ops/s once the server is saturated."""
    value = _us_per_op(result)
    return "-" if value is None else f"{value:.0f}"


PERSISTENCE_SCENARIOS = {
    "overwrite": "",
    "write32": " (op = 32 section writes)",
    "open": " (op = open + close)",
    "read": " (control: reads never wait for the store)",
}


def persistence_lines(targets: dict[str, TargetResult], levels: Sequence[int]) -> list[str]:
    mem, stored = targets.get(CPS_MEM), targets.get(CPS)
    if mem is None or stored is None:
        return [f"Not measured: needs both `{CPS_MEM}` and `{CPS}`."]
    lines = [
        f"`{CPS}` ({stored.config}) against `{CPS_MEM}` ({mem.config}), both with their data dir "
        f"under {stored.data_dir}. Server µs/op = server CPU time per op.",
        "",
        f"| scenario | in-flight | `{CPS_MEM}` ops/s | `{CPS}` ops/s | {CPS} / {CPS_MEM} "
        f"| `{CPS_MEM}` server µs/op | `{CPS}` server µs/op | difference µs/op "
        f"| `{CPS_MEM}` p99 ms | `{CPS}` p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for scenario, note in PERSISTENCE_SCENARIOS.items():
        for level in levels:
            a, b = mem.row(scenario, level), stored.row(scenario, level)
            if a is None or b is None or not a.usable or not b.usable:
                continue
            assert a.result is not None and b.result is not None
            ra, rb = a.result, b.result
            ratio = rb.ops_per_s / ra.ops_per_s if ra.ops_per_s else 0.0
            ua, ub = _us_per_op(ra), _us_per_op(rb)
            diff = "-" if ua is None or ub is None else f"{ub - ua:+.0f}"
            noisy = " (noisy)" if max(ra.cpu.other, rb.cpu.other) > NOISY_OTHER_CORES else ""
            lines.append(
                f"| {scenario}{note} | {level} | {ra.ops_per_s:,.0f} | {rb.ops_per_s:,.0f} "
                f"| {ratio:.2f}{noisy} | {_per_op_us(ra)} | {_per_op_us(rb)} | {diff} "
                f"| {ra.p99_ms:.3f} | {rb.p99_ms:.3f} |"
            )
    return lines


def _listing(
    targets: dict[str, TargetResult],
    scenarios: Sequence[str],
    names: Sequence[str],
    baseline: str = CPS,
) -> list[str]:
    """One line per (scenario, in-flight, target) measured, for side-by-side reading,
    with its ops/s relative to `baseline`'s at the same scenario and level."""
    lines = [
        "| scenario | in-flight | target | data dir | configuration | ops/s "
        f"| vs `{baseline}` | p50 ms | p99 ms | server µs/op | other cores |",
        "| --- | ---: | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    found = False
    for scenario in scenarios:
        levels = sorted(
            {
                row.result.inflight
                for name in names
                if name in targets
                for row in targets[name].rows
                if row.scenario == scenario and row.result is not None
            }
        )
        for level in levels:
            for name in names:
                target = targets.get(name)
                row = target.row(scenario, level) if target is not None else None
                if target is None or row is None or row.result is None:
                    continue
                res = row.result
                found = True
                errors = "" if not res.errors else f" ({res.errors} errors)"
                base = targets[baseline].row(scenario, level) if baseline in targets else None
                relative = "-"
                if base is not None and base.result is not None and base.result.ops_per_s:
                    relative = f"{res.ops_per_s / base.result.ops_per_s:.2f}"
                lines.append(
                    f"| {scenario} | {level} | `{name}` | {target.data_dir or '-'} "
                    f"| {target.config or '-'} | {res.ops_per_s:,.0f}{errors} | {relative} "
                    f"| {res.p50_ms:.3f} | {res.p99_ms:.3f} | {_per_op_us(res)} "
                    f"| {res.cpu.other:.2f} |"
                )
    return lines if found else ["Not measured."]


def disk_lines(targets: dict[str, TargetResult], fsync_note: str | None) -> list[str]:
    lines = [
        f"`{CPS_DISK}` and `{CPS_DISK_NORMAL}` keep their data dir on a real disk, not tmpfs: "
        "their commits pay for the fsync (`--sync full`: the WAL is synced at every commit; "
        "`--sync normal`: only at checkpoints of the WAL). Shown beside the tmpfs runs of the "
        "same scenario."
    ]
    if fsync_note:
        lines[0] += " " + fsync_note
    lines.append("")
    return lines + _listing(targets, ["overwrite", "lib-write"], CPS_TARGETS)


# The cluster's write modes: (scenario, label), the synchronous one first.
CLUSTER_ROWS = (
    ("overwrite-sync", "sync (WR_ALL_REPLICAS)"),
    ("overwrite-async", "async (WR_ACTIVE_REPLICA)"),
    ("overwrite-weak", "weak (WR_ACTIVE_REPLICA_WEAK)"),
    ("overwrite-sync-fwd", "sync, through a backup (forwarded)"),
)


def _usable(
    targets: dict[str, TargetResult], name: str, scenario: str, level: int
) -> LoadResult | None:
    target = targets.get(name)
    row = target.row(scenario, level) if target is not None else None
    return row.result if row is not None and row.usable else None


def _noisy(*results: LoadResult) -> bool:
    return any(r.cpu.other > NOISY_OTHER_CORES for r in results)


def _verdict(met: bool) -> str:
    return "**met**" if met else "**not met**"


def _fraction(
    top: LoadResult | None, bottom: LoadResult | None, minimum: float | None
) -> tuple[str, str]:
    """A ratio of ops/s as text, and its verdict against `minimum` ('-' without one)."""
    if top is None or bottom is None or not bottom.ops_per_s:
        return "n/a (not measured)", "**not met** (not measured)" if minimum is not None else "-"
    value = top.ops_per_s / bottom.ops_per_s
    text = f"{value:.2f} ({top.ops_per_s:,.0f} / {bottom.ops_per_s:,.0f} ops/s)"
    if _noisy(top, bottom):
        text += " (noisy)"
    return text, "-" if minimum is None else _verdict(value >= minimum)


def _p50_ratio(
    top: LoadResult | None, bottom: LoadResult | None, maximum: float
) -> tuple[str, str]:
    if top is None or bottom is None or not bottom.p50_ms:
        return "n/a (not measured)", "**not met** (not measured)"
    value = top.p50_ms / bottom.p50_ms
    text = f"{value:.2f} ({top.p50_ms:.3f} / {bottom.p50_ms:.3f} ms)"
    if _noisy(top, bottom):
        text += " (noisy)"
    return text, _verdict(value <= maximum)


def performance_target_lines(targets: dict[str, TargetResult], levels: Sequence[int]) -> list[str]:
    """Issue 11's targets, each from this run's figures."""
    lowest, top_level = min(levels), max(levels)
    lines = [
        "| issue 11 target | wanted | measured | verdict |",
        "| --- | ---: | ---: | --- |",
    ]
    text, verdict = _fraction(
        _usable(targets, CPS, "overwrite", top_level),
        _usable(targets, "bare", "unary", top_level),
        PERSISTENT_VS_BARE,
    )
    lines.append(
        f"| `{CPS}` (persistent default) overwrite / bare grpc.aio, {top_level} in flight "
        f"| >= {PERSISTENT_VS_BARE:.2f} | {text} | {verdict} |"
    )
    text, verdict = _p50_ratio(
        _usable(targets, CPS, "overwrite", lowest), _usable(targets, "etcd", "put", lowest), 1.0
    )
    lines.append(
        f"| `{CPS}` overwrite p50 / etcd 1-member put p50, {lowest} in flight "
        f"| <= 1.00 | {text} | {verdict} |"
    )
    for level in CLUSTER_LEVELS:
        if level not in levels:
            continue
        text, verdict = _fraction(
            _usable(targets, CPS_CLUSTER, "overwrite-sync", level),
            _usable(targets, ETCD3, "put", level),
            CLUSTER_VS_ETCD3,
        )
        lines.append(
            f"| sync 3-replica overwrite / `{ETCD3}` put, {level} in flight "
            f"| >= {CLUSTER_VS_ETCD3:.2f} | {text} | {verdict} |"
        )
    text, verdict = _p50_ratio(
        _usable(targets, CPS_CLUSTER, "overwrite-sync", lowest),
        _usable(targets, ETCD3, "put", lowest),
        CLUSTER_P50_VS_ETCD3,
    )
    lines.append(
        f"| sync 3-replica overwrite p50 / `{ETCD3}` put p50, {lowest} in flight "
        f"| <= {CLUSTER_P50_VS_ETCD3:.2f} | {text} | {verdict} |"
    )
    for level in levels:
        text, verdict = _fraction(
            _usable(targets, CPS_CLUSTER, "overwrite-async", level),
            _usable(targets, CPS_CLUSTER, "overwrite-sync", level),
            1.0,
        )
        lines.append(
            f"| async / sync 3-replica overwrite, {level} in flight | >= 1.00 | {text} "
            f"| {verdict} |"
        )
    lines += [
        "",
        "Workers (2 workers >= 1.6 x one): measured apart, `python -m bench.workers` "
        "(bench/WORKERS.md). Where a target is not met, bench/PROFILE.md says why.",
    ]
    return lines


def cluster_target_lines(
    targets: dict[str, TargetResult], level: int, failovers: Sequence[FailoverResult]
) -> list[str]:
    sync = _usable(targets, CPS_CLUSTER, "overwrite-sync", level)
    etcd3 = _usable(targets, ETCD3, "put", level)
    lines = [
        f"| issue 8 target (at {level} in-flight) | wanted | measured | verdict |",
        "| --- | ---: | ---: | --- |",
    ]
    text, verdict = _fraction(sync, etcd3, CLUSTER_VS_ETCD3)
    lines.append(
        f"| sync 3-replica overwrite / `{ETCD3}` put | >= {CLUSTER_VS_ETCD3:.2f} | {text} "
        f"| {verdict} |"
    )
    text, verdict = _fraction(sync, _usable(targets, CPS_MEM, "overwrite", level), None)
    text_mem, verdict_mem = _fraction(
        sync, _usable(targets, CPS_MEM, "overwrite", level), CLUSTER_VS_SINGLE
    )
    lines.append(
        f"| sync 3-replica overwrite / single node `{CPS_MEM}` overwrite (in memory, as the "
        f"cluster: **evaluated**) | >= {CLUSTER_VS_SINGLE:.2f} | {text_mem} | {verdict_mem} |"
    )
    text, _ = _fraction(sync, _usable(targets, CPS, "overwrite", level), None)
    lines.append(
        f"| sync 3-replica overwrite / single node `{CPS}` overwrite (stored, the default: "
        f"shown) | (>= {CLUSTER_VS_SINGLE:.2f}) | {text} | - |"
    )
    for failover in failovers:
        wanted = FAILOVER_TTLS * failover.ttl
        spread = failover.spread()
        all_valid = bool(failover.rounds) and all(r.valid for r in failover.rounds)
        if spread is None:
            measured, verdict = "n/a (no valid round)", "**not met** (not measured)"
        else:
            valid = len(failover.times)
            measured = (
                f"max {spread[2]:.2f} s (median {spread[1]:.2f}, {valid} of "
                f"{len(failover.rounds)} rounds valid)"
            )
            verdict = _verdict(spread[2] < wanted and all_valid and failover.error is None)
        lines.append(
            f"| failover, lease TTL {failover.ttl} s: kill -9 of the active to the first "
            f"write acknowledged by its successor, every round | < {wanted:g} s | {measured} "
            f"| {verdict} |"
        )
    if etcd3 is not None:
        lines += [
            "",
            f"For scale: the issue quotes about {ISSUE_ETCD3_PUTS:,} puts/s for a 3-member "
            f"etcd at 64 in flight on a 2-core machine; `{ETCD3}` here did "
            f"{etcd3.ops_per_s:,.0f}/s at {level} in flight (the verdicts above use this run's "
            "figure).",
        ]
    return lines


def cluster_lines(
    targets: dict[str, TargetResult],
    levels: Sequence[int],
    failovers: Sequence[FailoverResult],
    cores: int | None = None,
) -> list[str]:
    cluster = targets.get(CPS_CLUSTER)
    level = ratio_level(levels)
    shared = f"the machine's {cores} cores" if cores else "the machine's cores"
    lines = [
        f"`{CPS_CLUSTER}`: 3 CPS nodes over a 3-member etcd, every checkpoint with 3 replicas "
        "(active on node 0, a backup on each other node), 1 KiB SectionOverwrite in each "
        "write mode through the active, and synchronous through a backup (each call "
        f"forwarded to the active). Beside it, in the same run and with the same client code: "
        f"the single node `{CPS_MEM}` (server checkpoints in memory, as in a cluster), `{CPS}` "
        f"(stored, the default), and `{ETCD3}`, a 3-member etcd's 1 KiB puts to its leader. "
        f"`vs` columns: this row's ops/s / theirs at the same in-flight. Server µs/op = CPU "
        "of the target's server processes (the 3 CPS nodes together; etcd's 3 members for "
        f"`{ETCD3}`) per op; etcd cores = the cluster's etcd (not in other cores). Every "
        f"process shares {shared} (nothing is pinned): the 3 nodes and the client compete "
        "for them, so ops/s are bounded by all of them together.",
        "",
    ]
    lines += cluster_target_lines(targets, level, failovers)
    lines += [
        "",
        f"| in-flight | target | mode | ops/s | vs `{CPS_MEM}` | vs `{ETCD3}` | p50 ms | p99 ms "
        "| server µs/op | etcd cores | other cores |",
        "| ---: | --- | --- |" + " ---: |" * 8,
    ]
    found = False
    summary: list[str] = []
    for inflight in levels:
        single = _usable(targets, CPS_MEM, "overwrite", inflight)
        etcd3 = _usable(targets, ETCD3, "put", inflight)
        rows: list[tuple[str, str, LoadResult | None]] = [
            (f"`{CPS_MEM}`", "overwrite, one node", single),
            (
                f"`{CPS}`",
                "overwrite, one node, stored",
                _usable(targets, CPS, "overwrite", inflight),
            ),
            (f"`{ETCD3}`", "put", etcd3),
        ]
        rows += [
            (f"`{CPS_CLUSTER}`", label, _usable(targets, CPS_CLUSTER, scenario, inflight))
            for scenario, label in CLUSTER_ROWS
        ]
        if all(res is None for _, _, res in rows[3:]):
            continue
        for name, mode, res in rows:
            if res is None:
                continue
            found = True
            vs_single = "-" if single is None or res is single else _ops_ratio(res, single)
            vs_etcd = "-" if etcd3 is None or res is etcd3 else _ops_ratio(res, etcd3)
            lines.append(
                f"| {inflight} | {name} | {mode} | {res.ops_per_s:,.0f} | {vs_single} "
                f"| {vs_etcd} | {res.p50_ms:.3f} | {res.p99_ms:.3f} | {_per_op_us(res)} "
                f"| {_cores(res.cpu.support)} | {res.cpu.other:.2f} |"
            )
        summary.append(_mode_summary(targets, inflight))
    if not found:
        lines.append("| - | not measured | | | | | | | | | |")
    lines += ["", "Between the modes (ops/s of the cluster's rows at the same in-flight):", ""]
    lines += [f"- {line}" for line in summary if line] or ["- not measured"]
    if cluster is not None and cluster.error is not None:
        lines += ["", f"`{CPS_CLUSTER}`: {_one_line(cluster.error)}"]
    etcd3_target = targets.get(ETCD3)
    if etcd3_target is not None and etcd3_target.error is not None:
        lines += ["", f"`{ETCD3}`: {_one_line(etcd3_target.error)}"]
    return lines


def _ops_ratio(top: LoadResult, bottom: LoadResult) -> str:
    if not bottom.ops_per_s:
        return "-"
    text = f"{top.ops_per_s / bottom.ops_per_s:.2f}"
    return text + " (noisy)" if _noisy(top, bottom) else text


def _mode_summary(targets: dict[str, TargetResult], inflight: int) -> str:
    sync = _usable(targets, CPS_CLUSTER, "overwrite-sync", inflight)
    if sync is None or not sync.ops_per_s:
        return ""
    parts: list[str] = []
    for scenario, what in (("overwrite-async", "async"), ("overwrite-weak", "weak")):
        res = _usable(targets, CPS_CLUSTER, scenario, inflight)
        if res is not None:
            ratio = res.ops_per_s / sync.ops_per_s
            parts.append(
                f"{what} / sync {ratio:.2f} ({what} >= sync: {'yes' if ratio >= 1 else 'no'}; "
                f"p50 {res.p50_ms - sync.p50_ms:+.3f} ms)"
            )
    forwarded = _usable(targets, CPS_CLUSTER, "overwrite-sync-fwd", inflight)
    if forwarded is not None:
        parts.append(
            f"sync through a backup / through the active {forwarded.ops_per_s / sync.ops_per_s:.2f}"
            f" (p50 {forwarded.p50_ms - sync.p50_ms:+.3f} ms: the forwarding hop)"
        )
    return f"{inflight} in-flight: " + "; ".join(parts)


def _seconds_spread(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def failover_lines(failovers: Sequence[FailoverResult]) -> list[str]:
    if not failovers:
        return ["Not measured."]
    lines = [
        f"Kill -9 of the active of a synchronous checkpoint (3 replicas on 3 nodes) under a "
        "closed-loop writer through a surviving node; the time from the kill to the first "
        "write sent after it and acknowledged (by then by the successor). Record changed = "
        "when the checkpoint's record in etcd first named a new active (the lease expired, "
        "the director reassigned it). The writer sends its next write when the previous call "
        "ends: the table shows when the last failed call ended and when the first "
        "acknowledged write was sent (DEADLINE_EXCEEDED is CL_ERR_TIMEOUT, an unknown "
        "outcome: the active died mid-call; UNAVAILABLE is CL_ERR_TRY_AGAIN; "
        "docs/replication.md). Target: under "
        f"{FAILOVER_TTLS:g} x the lease TTL, in every round.",
        "",
        "| lease TTL | rounds valid | kill → first ack min / median / max s "
        f"| < {FAILOVER_TTLS:g} x TTL | kill → record changed min / median / max s |",
        "| ---: | ---: | ---: | --- | ---: |",
    ]
    for failover in failovers:
        valid = [r for r in failover.rounds if r.valid]
        changed = [r.record_changed_s for r in valid if r.record_changed_s is not None]
        spread = failover.spread()
        if spread is None:
            verdict = "**not met** (not measured)"
        else:
            verdict = _verdict(
                spread[2] < FAILOVER_TTLS * failover.ttl
                and len(valid) == len(failover.rounds)
                and failover.error is None
            )
        lines.append(
            f"| {failover.ttl} s | {len(valid)} / {len(failover.rounds)} "
            f"| {_seconds_spread(failover.times)} | {verdict} | {_seconds_spread(changed)} |"
        )
    lines += [
        "",
        "| lease TTL | round | killed (active) | director too | writer via | record changed s "
        "| failed calls after the kill (the last ended at s) | first acknowledged write sent "
        "s | first ack s | record after | note |",
        "| ---: | ---: | --- | --- | --- | ---: | --- | ---: | ---: | --- | --- |",
    ]
    for failover in failovers:
        for r in failover.rounds:
            errors = ", ".join(f"{code} x{n}" for code, n in sorted(r.errors.items())) or "none"
            if r.last_error_s is not None:
                errors += f" ({r.last_error_s:.2f})"
            lines.append(
                f"| {failover.ttl} s | {r.index + 1} | {r.killed} "
                f"| {'yes' if r.director_killed else 'no'} | {r.writer_via} "
                f"| {'-' if r.record_changed_s is None else f'{r.record_changed_s:.2f}'} "
                f"| {errors} | {_seconds(r.first_ack_sent_s)} | {_seconds(r.first_ack_s)} "
                f"| {r.record_after} | {_one_line(r.problem) if r.problem else 'valid'} |"
            )
    for failover in failovers:
        if failover.error is not None:
            lines += ["", f"Lease TTL {failover.ttl} s: {_one_line(failover.error)}"]
    commands = [f for f in failovers if f.command]
    if commands:
        lines += [
            "",
            f"Node command line (n0, lease TTL {commands[0].ttl} s): `{commands[0].command}`",
        ]
    return lines


def _spread(spread: Spread | None, with_max: bool = True) -> str:
    if spread is None:
        return "-"
    text = f"{spread.p50_ms:.2f} / {spread.p99_ms:.2f}"
    return text + f" / {spread.max_ms:.2f}" if with_max else text


def _notify_verdict(result: NotifyResult) -> str:
    if result.after_ack is None or result.after_send is None:
        return "n/a"
    if result.received < result.expected:
        return "**incomplete**"
    if result.after_send.p99_ms < NOTIFY_P99_MS:
        return "**met**"
    if result.after_ack.p99_ms < NOTIFY_P99_MS:
        return "**met** after ack only"
    return "**missed**"


def notify_lines(targets: dict[str, TargetResult]) -> list[str]:
    runs = [(t, n) for t in targets.values() for n in t.notify]
    errors = [t for t in targets.values() if t.notify_error is not None]
    if not runs and not errors:
        return ["Not measured."]
    lines = [
        f"Issue 3: p99 under {NOTIFY_P99_MS:g} ms at {NOTIFY_TARGET_SUBSCRIBERS} subscribers on "
        "one node. The verdict uses arrival - send (an upper bound of the latency from the "
        "change); `met after ack only` means only arrival - ack (a lower bound) is under it. "
        "Negative arrival - ack: the notification came before the write's acknowledgement.",
        "",
        "| target | subscribers (channels) | writes @ rate | received / expected (dropped) "
        "| arrival - ack p50 / p99 / max ms | arrival - send p50 / p99 / max ms "
        "| before ack | write ack p50 / p99 ms | send lag p99 ms | client / server cores "
        f"| server µs / notification | p99 < {NOTIFY_P99_MS:g} ms |",
        "| --- |" + " ---: |" * 10 + " --- |",
    ]
    for target, n in runs:
        server = "-" if n.cpu.server is None else f"{n.cpu.server:.2f}"
        per_notification = "-"
        if n.cpu.server is not None and n.received:
            per_notification = f"{n.cpu.server * n.seconds / n.received * 1e6:.0f}"
        errors_note = (
            "" if not n.errors else f"; {n.errors} errors: {_one_line(n.first_error or '')}"
        )
        lines.append(
            f"| `{target.name}` | {n.subscribers} ({n.channels}) | {n.writes:,} @ {n.rate:g}/s "
            f"| {n.received:,} / {n.expected:,} ({n.dropped}{errors_note}) "
            f"| {_spread(n.after_ack)} | {_spread(n.after_send)} | {n.before_ack:.0%} "
            f"| {_spread(n.ack, with_max=False)} "
            f"| {n.send_lag.p99_ms if n.send_lag else 0:.2f} "
            f"| {n.cpu.client:.2f} / {server} | {per_notification} | {_notify_verdict(n)} |"
        )
    for target in errors:
        lines += ["", f"`{target.name}`: not (fully) run: {_one_line(target.notify_error or '')}"]
    return lines


def library_lines(targets: dict[str, TargetResult]) -> list[str]:
    lines = [
        "Issue 4: durable dataset writes and reads (library checkpoints are always stored, "
        "whatever `--persist-server-checkpoints` says). Each worker writes or reads a dataset "
        "of its own.",
        "",
    ]
    return lines + _listing(targets, ["lib-write", "lib-read"], CPS_TARGETS)


def _cores(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def target_lines(target: TargetResult) -> list[str]:
    lines = [f"### {target.title}", ""]
    if target.data_dir is not None:
        lines.append(f"Data dir under {target.data_dir}; {target.config or 'default flags'}.")
        lines.append("")
    for scenario, description in target.descriptions.items():
        lines.append(f"- `{scenario}`: {description}")
    lines.append("")
    if target.error is not None:
        lines += ["Not (fully) run: " + _one_line(target.error), ""]
    if not target.rows:
        return lines
    support = any(r.result is not None and r.result.cpu.support is not None for r in target.rows)
    lines += [
        "| scenario | in-flight | channels | ops/s | items/s | p50 ms | p99 ms "
        "| client cores | server cores | server CPU µs/op "
        + ("| etcd cores " if support else "")
        + "| other / steal cores | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        + (" ---: |" if support else "")
        + " --- |",
    ]
    for row in target.rows:
        res = row.result
        if res is None:
            empty = 11 if support else 10
            lines.append(f"| {row.scenario} |" + " |" * empty + f" {_one_line(row.error or '')} |")
            continue
        items = (
            f"{res.ops_per_s * row.items_per_op:,.0f} {row.item_unit}"
            if row.item_unit is not None
            else ""
        )
        errors = "0" if res.errors == 0 else f"{res.errors}: {_one_line(res.first_error or '')}"
        lines.append(
            f"| {row.scenario} | {res.inflight} | {res.channels} | {res.ops_per_s:,.0f} "
            f"| {items} | {res.p50_ms:.3f} | {res.p99_ms:.3f} | {_cores(res.cpu.client)} "
            f"| {_cores(res.cpu.server)} | {_per_op_us(res)} "
            + (f"| {_cores(res.cpu.support)} " if support else "")
            + f"| {res.cpu.other:.2f} / {res.cpu.steal:.2f} "
            f"| {errors} |"
        )
    lines.append("")
    noisy = [
        f"{row.scenario}@{row.result.inflight}: {row.result.cpu.other:.2f} cores, "
        f"top process {row.result.cpu.top_other or 'none seen (short-lived processes or kernel)'}"
        for row in target.rows
        if row.result is not None and row.result.cpu.other > NOISY_OTHER_CORES
    ]
    if noisy:
        lines += ["Other load during: " + "; ".join(noisy) + ".", ""]
    return lines


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split()).replace("|", "\\|")
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def render(
    *,
    command: str,
    date: str,
    duration_s: float,
    machine: dict[str, str],
    method: list[str],
    levels: Sequence[int],
    targets: dict[str, TargetResult],
    fsync_note: str | None = None,
    cores: int | None = None,
    failovers: Sequence[FailoverResult] = (),
) -> str:
    lines = [
        "# CPS benchmark results",
        "",
        f"- Command: `{command}`",
        f"- Date: {date} (whole run {duration_s:.0f} s)",
        "",
        "## Machine",
        "",
    ]
    lines += [f"- {key}: {value}" for key, value in machine.items()]
    lines += ["", "## Method", ""]
    lines += [f"- {item}" for item in method]
    lines += ["", "## Targets (issue 11)", ""]
    lines += performance_target_lines(targets, levels)
    lines += ["", "## Targets (issue 2)", ""]
    lines += ratio_lines(targets, levels)
    lines += ["", "## Cost of persistence", ""]
    lines += persistence_lines(targets, levels)
    lines += ["", "### On a real disk", ""]
    lines += disk_lines(targets, fsync_note)
    lines += ["", "## Cluster (issue 8)", ""]
    lines += cluster_lines(targets, levels, failovers, cores)
    lines += ["", "### Failover", ""]
    lines += failover_lines(failovers)
    lines += ["", "## Notification latency (issue 3)", ""]
    lines += notify_lines(targets)
    lines += ["", "## Library checkpoints (issue 4)", ""]
    lines += library_lines(targets)
    lines += ["", "## Results", ""]
    for target in targets.values():
        lines += target_lines(target)
    return "\n".join(lines).rstrip() + "\n"
