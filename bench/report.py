"""The results as Markdown: machine, method, targets, persistence, replication,
notifications, library, then one table per target."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

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
# A primary (as `cps`) with one standby following it.
CPS_PAIR = "cps-pair"
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


# The rows of the replication table: (target, scenario, label), the first the baseline.
REPLICATION_ROWS = (
    (CPS, "overwrite", f"`{CPS}` (one node)"),
    (CPS_PAIR, "overwrite", f"`{CPS_PAIR}` async (WR_ACTIVE_REPLICA)"),
    (CPS_PAIR, "overwrite-sync", f"`{CPS_PAIR}` sync (WR_ALL_REPLICAS)"),
)


def _standby_us_per_op(result: LoadResult) -> float | None:
    """The standby's CPU time per op: in the window, plus its catch-up after it."""
    if result.cpu.standby is None or not result.ops:
        return None
    used = result.cpu.standby * result.seconds + (result.standby_catch_up_cpu_s or 0.0)
    return used / result.ops * 1e6


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _times(value: float, base: float) -> str:
    return f"{value / base:.2f}" if base else "-"


def replication_lines(
    targets: dict[str, TargetResult], levels: Sequence[int], cores: int | None = None
) -> list[str]:
    pair = targets.get(CPS_PAIR)
    if pair is None:
        return [f"Not measured: needs `{CPS_PAIR}` (and `{CPS}` for the ratios)."]
    base = targets.get(CPS)
    shared = f"the machine's {cores} cores" if cores else "the machine's cores"
    lines = [
        f"`{CPS}` (one node, {base.config if base else 'not run'}) against `{CPS_PAIR}`: the "
        f"same server as a primary, with one standby following it (its own data dir and store, "
        f"under {pair.data_dir}), overwrite of 1 KiB on an asynchronous checkpoint "
        "(WR_ACTIVE_REPLICA: answered after the primary's commit, the standby follows) and on "
        "a synchronous one (WR_ALL_REPLICAS: answered once the standby acknowledged the batch "
        f"too). The client talks to the primary only. `vs {CPS}`: the pair's value / "
        f"`{CPS}`'s at the same in-flight (µs/op: the difference). Server µs/op = the "
        "primary's CPU time per op; standby cores = the standby's CPU seconds per wall second "
        "in the window (not counted in other cores); standby behind = how long it went on "
        "applying batches after the window (its backlog: an asynchronous write is answered "
        "before the standby has it); standby µs/op = its CPU time in the window and that "
        "catch-up, per op.",
        "",
        f"The primary, the standby and the client share {shared} (nothing is pinned): what "
        "the standby uses is taken from the primary and the client, so the pair's ops/s are "
        "bounded by the three processes together, not by the primary alone.",
        "",
        f"| in-flight | configuration | ops/s | vs `{CPS}` | p50 ms | vs `{CPS}` | p99 ms "
        f"| vs `{CPS}` | server µs/op (primary) | vs `{CPS}` | standby cores | standby µs/op "
        "| standby behind s | other cores |",
        "| ---: | --- |" + " ---: |" * 12,
    ]
    summary: list[str] = []
    for level in levels:
        if not any(row.result is not None and row.result.inflight == level for row in pair.rows):
            continue  # the pair ran at fewer levels (--quick)
        found: dict[tuple[str, str], LoadResult] = {}
        for name, scenario, label in REPLICATION_ROWS:
            target = targets.get(name)
            row = target.row(scenario, level) if target is not None else None
            if row is None or row.result is None or not row.usable:
                continue
            res = found[(name, scenario)] = row.result
            ref = found.get((CPS, "overwrite")) if name != CPS else None
            noisy = ref is not None and max(res.cpu.other, ref.cpu.other) > NOISY_OTHER_CORES
            mark = " (noisy)" if noisy else ""
            ops = p50 = p99 = per_op = "-"
            if ref is not None:
                ops = _times(res.ops_per_s, ref.ops_per_s) + mark
                p50 = _times(res.p50_ms, ref.p50_ms)
                p99 = _times(res.p99_ms, ref.p99_ms)
                ours, theirs = _us_per_op(res), _us_per_op(ref)
                if ours is not None and theirs is not None:
                    per_op = f"{ours - theirs:+.0f}"
            standby_per_op = _standby_us_per_op(res)
            lines.append(
                f"| {level} | {label} | {res.ops_per_s:,.0f} | {ops} | {res.p50_ms:.3f} | {p50} "
                f"| {res.p99_ms:.3f} | {p99} | {_per_op_us(res)} | {per_op} "
                f"| {_cores(res.cpu.standby)} "
                f"| {'-' if standby_per_op is None else f'{standby_per_op:.0f}'} "
                f"| {_seconds(res.standby_catch_up_s)} | {res.cpu.other:.2f} |"
            )
        asynchronous = found.get((CPS_PAIR, "overwrite"))
        synchronous = found.get((CPS_PAIR, "overwrite-sync"))
        if asynchronous is not None and synchronous is not None:
            summary.append(
                f"{level} in-flight: sync / async ops/s "
                f"{_times(synchronous.ops_per_s, asynchronous.ops_per_s)}, p50 "
                f"{synchronous.p50_ms - asynchronous.p50_ms:+.3f} ms"
            )
    if summary:
        lines += ["", "Synchronous against asynchronous on the pair: " + "; ".join(summary) + "."]
    if pair.error is not None:
        lines += ["", f"`{CPS_PAIR}`: {_one_line(pair.error)}"]
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
    standby = any(r.result is not None and r.result.cpu.standby is not None for r in target.rows)
    lines += [
        "| scenario | in-flight | channels | ops/s | items/s | p50 ms | p99 ms "
        "| client cores | server cores | server CPU µs/op "
        + ("| standby cores | standby behind s " if standby else "")
        + "| other / steal cores | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        + (" ---: | ---: |" if standby else "")
        + " --- |",
    ]
    for row in target.rows:
        res = row.result
        if res is None:
            empty = 12 if standby else 10
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
            + (
                f"| {_cores(res.cpu.standby)} | {_seconds(res.standby_catch_up_s)} "
                if standby
                else ""
            )
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
    lines += ["", "## Targets (issue 2)", ""]
    lines += ratio_lines(targets, levels)
    lines += ["", "## Cost of persistence", ""]
    lines += persistence_lines(targets, levels)
    lines += ["", "### On a real disk", ""]
    lines += disk_lines(targets, fsync_note)
    lines += ["", "## Cost of replication", ""]
    lines += replication_lines(targets, levels, cores)
    lines += ["", "## Notification latency (issue 3)", ""]
    lines += notify_lines(targets)
    lines += ["", "## Library checkpoints (issue 4)", ""]
    lines += library_lines(targets)
    lines += ["", "## Results", ""]
    for target in targets.values():
        lines += target_lines(target)
    return "\n".join(lines).rstrip() + "\n"
