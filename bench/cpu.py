"""CPU accounting from /proc: per process tree and for the whole machine."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[str, float] | None:
    """Name and own CPU seconds (all threads) of a process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    # Fields 14 and 15 of proc_pid_stat(5), utime and stime, are 11 and 12 here.
    return name, (int(fields[11]) + int(fields[12])) * _TICK_S


def _process_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads); 0 once it is gone."""
    stat = _stat(pid)
    return 0.0 if stat is None else stat[1]


def _children(pid: int) -> list[int]:
    children: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                children += [int(c) for c in (task / "children").read_text().split()]
    return children


def tree(pid: int) -> list[int]:
    """A process and its living descendants."""
    pids: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo += _children(current)
    return pids


def tree_seconds(pid: int) -> float:
    """CPU seconds of a process and its living descendants."""
    return sum(_process_seconds(p) for p in tree(pid))


def all_processes() -> dict[int, tuple[str, float]]:
    """Every living process: its name and own CPU seconds.

    Reaped children's time is left out: it lands on the parent when the child
    is reaped, with CPU the child may have used long before.
    """
    found: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                found[int(entry.name)] = (stat[0], stat[1])
    return found


def top_consumer(
    before: dict[int, tuple[str, float]],
    after: dict[int, tuple[str, float]],
    exclude: set[int],
) -> tuple[str, float] | None:
    """The living process (not excluded) that used the most CPU between two snapshots.

    A process that started in between counts with all its CPU time; one that
    ended in between is not seen.
    """
    best: tuple[str, float] | None = None
    for pid, (name, seconds) in after.items():
        if pid in exclude:
            continue
        used = seconds - before[pid][1] if pid in before else seconds
        if best is None or used > best[1]:
            best = (f"{name}[{pid}]", used)
    return best


@dataclass(frozen=True)
class MachineCpu:
    """Cumulative CPU seconds of the whole machine, summed over its CPUs."""

    busy_s: float
    steal_s: float

    def __sub__(self, other: MachineCpu) -> MachineCpu:
        return MachineCpu(self.busy_s - other.busy_s, self.steal_s - other.steal_s)


def machine() -> MachineCpu:
    """Busy time (user, nice, system, irq, softirq) and steal time, from /proc/stat."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return MachineCpu(0.0, 0.0)
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in first[1:9])
    return MachineCpu((user + nice + system + irq + softirq) * _TICK_S, steal * _TICK_S)


def trees_seconds(pids: Sequence[int]) -> float:
    """CPU seconds of several processes and their living descendants."""
    return sum(tree_seconds(pid) for pid in pids)


@dataclass(frozen=True)
class Snapshot:
    """CPU counters at one instant: this process, the server's process trees (one,
    or every node of a cluster), the supporting processes' trees (the etcd members
    behind a cluster), the machine."""

    client_s: float
    server_s: float | None
    machine: MachineCpu
    processes: dict[int, tuple[str, float]]
    support_s: float | None = None

    @staticmethod
    def take(server_pids: Sequence[int], support_pids: Sequence[int] = ()) -> Snapshot:
        return Snapshot(
            client_s=time.process_time(),
            server_s=trees_seconds(server_pids) if server_pids else None,
            machine=machine(),
            processes=all_processes(),
            support_s=trees_seconds(support_pids) if support_pids else None,
        )


@dataclass(frozen=True)
class Usage:
    """CPU used during a window, in cores (1.0 = one core busy all along)."""

    client: float
    # The server's process trees together (every node of a cluster).
    server: float | None
    # Everything else on the machine, and the time stolen by the hypervisor.
    other: float
    steal: float
    # The other process that used the most, as "name[pid] cores", if notable.
    top_other: str | None
    # The supporting processes (the etcd behind a cluster), not counted in `other`.
    support: float | None = None


def _delta(before: float | None, after: float | None, seconds: float) -> float | None:
    return None if before is None or after is None else (after - before) / seconds


def usage(
    before: Snapshot,
    after: Snapshot,
    seconds: float,
    server_pids: Sequence[int],
    support_pids: Sequence[int] = (),
) -> Usage:
    client = (after.client_s - before.client_s) / seconds
    server = _delta(before.server_s, after.server_s, seconds)
    support = _delta(before.support_s, after.support_s, seconds)
    used = after.machine - before.machine
    other = used.busy_s / seconds - client - (server or 0.0) - (support or 0.0)
    ours = {os.getpid()}
    for pid in (*server_pids, *support_pids):
        ours.update(tree(pid))
    top = top_consumer(before.processes, after.processes, ours)
    top_other = None
    if top is not None and top[1] / seconds >= 0.05:
        top_other = f"{top[0]} {top[1] / seconds:.2f}"
    return Usage(client, server, max(0.0, other), used.steal_s / seconds, top_other, support)
