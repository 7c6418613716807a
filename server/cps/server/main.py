"""Entry point of the `cps-server` console script."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence

from . import config, logs, workers
from .node import serve
from .storage.sqlite_store import StoreError


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        settings = config.parse(args)
        assignment = workers.assignment_of(os.environ)
    except config.ConfigError as error:
        for problem in error.problems:
            print(f"cps-server: {problem}", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"cps-server: {error}", file=sys.stderr)
        return 2
    if assignment is not None:
        return _worker(settings, assignment)
    if settings.workers > 1:  # a supervisor (docs/workers.md)
        logs.configure(settings.log_level, {"supervisor": True})
        return workers.Supervisor(settings, args).run()
    logs.configure(settings.log_level)
    try:
        asyncio.run(serve(settings))
    except (OSError, StoreError) as error:
        print(f"cps-server: {error}", file=sys.stderr)
        return 1
    return 0


def _worker(settings: config.Settings, assignment: workers.Assignment) -> int:
    """One worker of a node of several, started by its supervisor."""
    logs.configure(settings.log_level, {"worker": assignment.index})
    if not workers.die_with(assignment.supervisor):
        # Its supervisor is gone, or this process was never its worker (the
        # variable set by hand): its status pipe is not ours to write.
        print(
            f"cps-server: {workers.WORKER_ENV} names supervisor {assignment.supervisor}, "
            "which is not this process's parent",
            file=sys.stderr,
        )
        return 1
    status = workers.StatusPipe(assignment.status_fd)
    try:
        asyncio.run(serve(workers.worker_settings(settings, assignment.index), status.ready))
    except (OSError, StoreError) as error:
        if not status.error(str(error)):  # it had started: its own line
            print(f"cps-server: worker {assignment.index}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
