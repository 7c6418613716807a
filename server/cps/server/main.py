"""Entry point of the `cps-server` console script."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from . import config, logs
from .node import serve
from .storage.sqlite_store import StoreError


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = config.parse(argv)
    except config.ConfigError as error:
        for problem in error.problems:
            print(f"cps-server: {problem}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    try:
        asyncio.run(serve(settings))
    except (OSError, StoreError) as error:
        print(f"cps-server: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
