"""The replicas this node holds, active or backup, and the memory they
reserve against the node's limits."""

from __future__ import annotations

from collections.abc import Callable

from .errors import CkptError, ErrorCode
from .limits import Limits, Usage
from .replica import Ref, Replica
from .types import CreationAttributes


def _no_usage() -> Usage:
    return Usage(0, 0)


class Replicas:
    def __init__(self, limits: Limits, library_usage: Callable[[], Usage] = _no_usage) -> None:
        self.limits = limits
        self.by_ref: dict[Ref, Replica] = {}
        self.reserved_bytes = 0
        # What library checkpoints hold: they count against the same limits.
        self.library_usage = library_usage

    def usage(self) -> Usage:
        return Usage(len(self.by_ref), self.reserved_bytes)

    def get(self, ref: Ref) -> Replica:
        replica = self.by_ref.get(ref)
        if replica is None:
            raise CkptError(
                ErrorCode.NOT_EXIST, f"this node holds no replica of checkpoint {ref.name!r}"
            )
        return replica

    def find(self, ref: Ref) -> Replica | None:
        return self.by_ref.get(ref)

    def admit(self, attributes: CreationAttributes) -> None:
        """Room for one more checkpoint of these attributes, or NO_MEMORY."""
        limits = self.limits
        library = self.library_usage()
        if len(self.by_ref) + library.checkpoints >= limits.max_checkpoints:
            raise CkptError(
                ErrorCode.NO_MEMORY,
                f"the node has max_checkpoints={limits.max_checkpoints} "
                f"({library.checkpoints} of them library checkpoints)",
            )
        held = self.reserved_bytes + library.bytes
        if held + attributes.checkpoint_size > limits.max_reserved_bytes:
            raise CkptError(
                ErrorCode.NO_MEMORY,
                f"the node cannot reserve {attributes.checkpoint_size} more bytes "
                f"({self.reserved_bytes} reserved by server checkpoints and {library.bytes} "
                f"held by library checkpoints, of {limits.max_reserved_bytes})",
            )

    def add(self, replica: Replica) -> None:
        previous = self.by_ref.pop(replica.ref, None)
        if previous is not None:
            self.reserved_bytes -= previous.attributes.checkpoint_size
        self.by_ref[replica.ref] = replica
        self.reserved_bytes += replica.attributes.checkpoint_size

    def pop(self, ref: Ref) -> Replica | None:
        replica = self.by_ref.pop(ref, None)
        if replica is not None:
            self.reserved_bytes -= replica.attributes.checkpoint_size
        return replica

    def section_bytes(self) -> int:
        return sum(replica.memory_used for replica in self.by_ref.values())
