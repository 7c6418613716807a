"""What the core tells the storage layer: which persisted things changed.

The core marks keys; the storage later reads the current state behind each
key (present: write it, absent: delete it), so repeated changes of one thing
between two commits cost one row write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

# ("checkpoint", name): the checkpoint of that name, all of it (created,
#     deleted, or replaced by a new instance);
# ("checkpoint-meta", name): its attributes-level state (retention, active
#     replica, id counter);
# ("section", name, section_id): one section of it;
# ("library", name): a library checkpoint, all of it;
# ("dataset", name, dataset_id): a dataset with all its elements;
# ("dataset-data", name, dataset_id): a dataset's own bytes;
# ("element", name, dataset_id, element_id): one element.
Key = tuple[object, ...]


class ChangeLog(Protocol):
    def mark(self, key: Key, *, synchronous: bool = False) -> None:
        """``synchronous``: the change belongs to a WR_ALL_REPLICAS checkpoint,
        so every replica must hold it before the call is acknowledged."""
        ...

    def after_durable(self, action: Callable[[], None]) -> None:
        """Run ``action`` once every change marked so far is stored, and after
        the actions given before it: callbacks reach clients in order, and
        never before the change they report could survive a crash."""
        ...


class NoChangeLog:
    """For a node that keeps nothing on disk."""

    def mark(self, key: Key, *, synchronous: bool = False) -> None:
        pass

    def after_durable(self, action: Callable[[], None]) -> None:
        action()
