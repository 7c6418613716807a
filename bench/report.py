"""The results as Markdown: machine, method, target ratios, one table per target."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.load import LoadResult

# The in-flight level at which the project's targets are defined.
TARGET_INFLIGHT = 64
# Other load on the machine (cores) past which a run is flagged as noisy.
NOISY_OTHER_CORES = 0.15


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

    def row(self, scenario: str, inflight: int) -> Row | None:
        for row in self.rows:
            if (
                row.scenario == scenario
                and row.result is not None
                and row.result.inflight == inflight
            ):
                return row
        return None


@dataclass(frozen=True)
class Ratio:
    label: str
    numerator: tuple[str, str]  # (target, scenario)
    denominator: tuple[str, str]
    # Items per op count in the numerator (section-writes/s for write32).
    numerator_items: bool = False
    minimum: float | None = None
    # Compare ops per server CPU-second instead of ops per second: much less
    # sensitive to other load on the machine, as long as the server is the
    # bottleneck.
    per_server_cpu: bool = False


RATIOS = [
    Ratio("CPS overwrite / bare", ("cps", "overwrite"), ("bare", "unary"), minimum=0.8),
    Ratio("CPS read / bare", ("cps", "read"), ("bare", "unary"), minimum=0.8),
    Ratio(
        "CPS write32 section-writes/s / CPS overwrite ops/s",
        ("cps", "write32"),
        ("cps", "overwrite"),
        numerator_items=True,
        minimum=10.0,
    ),
    Ratio(
        "CPS overwrite / bare, per server CPU-second",
        ("cps", "overwrite"),
        ("bare", "unary"),
        per_server_cpu=True,
    ),
    Ratio(
        "CPS read / bare, per server CPU-second",
        ("cps", "read"),
        ("bare", "unary"),
        per_server_cpu=True,
    ),
    Ratio("CPS overwrite / etcd put", ("cps", "overwrite"), ("etcd", "put")),
    Ratio("CPS read / etcd get", ("cps", "read"), ("etcd", "get")),
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


def ratio_lines(targets: dict[str, TargetResult], levels: Sequence[int]) -> list[str]:
    level = ratio_level(levels)
    lines = [
        f"| ratio (at {level} in-flight) | value | target | verdict |",
        "| --- | ---: | ---: | --- |",
    ]
    for ratio in RATIOS:
        top = _rate(targets, ratio.numerator, level, ratio.numerator_items, ratio.per_server_cpu)
        bottom = _rate(targets, ratio.denominator, level, False, ratio.per_server_cpu)
        wanted = f">= {ratio.minimum:g}" if ratio.minimum is not None else "(reference)"
        if top is None or bottom is None or bottom[0] == 0:
            shown, verdict = "n/a", "n/a (not measured)" if ratio.minimum is not None else ""
        else:
            value = top[0] / bottom[0]
            shown = f"{value:.2f}"
            verdict = ""
            if ratio.minimum is not None:
                verdict = "**met**" if value >= ratio.minimum else "**missed**"
            if top[1] or bottom[1]:
                verdict = (verdict + " (noisy: other load, see below)").strip()
        lines.append(f"| {ratio.label} | {shown} | {wanted} | {verdict} |")
    if level != TARGET_INFLIGHT:
        lines.append("")
        lines.append(
            f"Note: computed at {level} in-flight; the targets are defined at {TARGET_INFLIGHT}."
        )
    return lines


def _cores(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _per_op_us(result: LoadResult) -> str:
    """Server CPU time per op: what bounds ops/s once the server is saturated."""
    if result.cpu.server is None or result.ops_per_s == 0:
        return "-"
    return f"{result.cpu.server / result.ops_per_s * 1e6:.0f}"


def target_lines(target: TargetResult) -> list[str]:
    lines = [f"### {target.title}", ""]
    for scenario, description in target.descriptions.items():
        lines.append(f"- `{scenario}`: {description}")
    lines.append("")
    if target.error is not None:
        lines += ["Not (fully) run: " + _one_line(target.error), ""]
    if not target.rows:
        return lines
    lines += [
        "| scenario | in-flight | channels | ops/s | items/s | p50 ms | p99 ms "
        "| client cores | server cores | server CPU µs/op | other / steal cores | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in target.rows:
        res = row.result
        if res is None:
            lines.append(f"| {row.scenario} |" + " |" * 10 + f" {_one_line(row.error or '')} |")
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
            f"| {res.cpu.other:.2f} / {res.cpu.steal:.2f} "
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
    lines += ["", "## Targets", ""]
    lines += ratio_lines(targets, levels)
    lines += ["", "## Results", ""]
    for target in targets.values():
        lines += target_lines(target)
    return "\n".join(lines).rstrip() + "\n"
