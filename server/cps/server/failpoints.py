"""Failpoints: named places where a test makes the node fail on purpose,
as etcd's gofail does. Armed only through the environment of the process
(CPS_FAILPOINTS=name,name); a node started without it has none.

- exit-after-first-weak-part: the active exits as soon as a backup has
  acknowledged the first part of a WR_ACTIVE_REPLICA_WEAK write that
  travels in several parts (the "interrupted write" of the seed).
"""

from __future__ import annotations

import os

_ARMED = frozenset(name for name in os.environ.get("CPS_FAILPOINTS", "").split(",") if name)


def armed(name: str) -> bool:
    return name in _ARMED


def fail(name: str) -> None:
    """Exit at once, as a crash would (no cleanup, no flush)."""
    os._exit(70)
