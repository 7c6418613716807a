"""Library (file) based checkpoints (seed 3.3): datasets and elements.

The state lives in memory and every change is marked in the change log, which
the storage layer commits before the call is acknowledged. Serializers run in
the client; here a dataset and an element are bytes.

Library checkpoints count against the node's limits with the server
checkpoints: each is one of max_checkpoints, and the bytes they hold (dataset
data, element ids and element data) add to the server checkpoints'
reservations under max_reserved_bytes. A library handle unused for
library_handle_timeout_seconds is finalized by the node's reaper.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .changelog import ChangeLog, NoChangeLog
from .errors import CkptError, ErrorCode
from .limits import MAX_NAME_LENGTH, Limits, Usage
from .sessions import new_id
from .types import NANOS_PER_SECOND, Nanos


@dataclass(slots=True)
class Dataset:
    group_id: int
    order: int
    data: bytes = b""
    # clCkptLibraryCkptElementCreate was called: elements may be written.
    elements_enabled: bool = False
    elements: dict[bytes, bytes] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Bytes held: the data, and each element's id and data."""
        return len(self.data) + sum(len(key) + len(value) for key, value in self.elements.items())


@dataclass(slots=True)
class LibraryCheckpoint:
    name: str
    datasets: dict[int, Dataset] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return sum(dataset.size for dataset in self.datasets.values())


@dataclass(slots=True)
class LibraryHandle:
    owner: str  # the identity that initialized it
    used: Nanos  # last call that named it


def _no_usage() -> Usage:
    return Usage(0, 0)


def _no_time() -> Nanos:
    return 0


class LibraryManager:
    def __init__(
        self,
        changelog: ChangeLog | None = None,
        limits: Limits | None = None,
        server_usage: Callable[[], Usage] = _no_usage,
        now: Callable[[], Nanos] = _no_time,
    ) -> None:
        """``server_usage``: what the server checkpoints hold (their count
        and reserved bytes), which shares the limits; ``now``: the clock of
        the handles' last use."""
        self.changelog = changelog or NoChangeLog()
        self.limits = limits or Limits()
        self.server_usage = server_usage
        self.now = now
        self.handles: dict[int, LibraryHandle] = {}
        self.checkpoints: dict[str, LibraryCheckpoint] = {}
        # Sum of the checkpoints' sizes; recount() after loading from the store.
        self.bytes = 0

    def usage(self) -> Usage:
        return Usage(len(self.checkpoints), self.bytes)

    def recount(self) -> None:
        """Recompute what the checkpoints hold (after they were loaded or
        reloaded from the store behind this manager's back)."""
        self.bytes = sum(checkpoint.size for checkpoint in self.checkpoints.values())

    # -- handles -------------------------------------------------------------

    def initialize(self, owner: str = "") -> int:
        if len(self.handles) >= self.limits.max_library_handles:
            raise CkptError(
                ErrorCode.NO_MEMORY,
                f"the node has max_library_handles={self.limits.max_library_handles}",
            )
        handle = new_id(self.handles)
        self.handles[handle] = LibraryHandle(owner, self.now())
        return handle

    def finalize(self, handle: int) -> None:
        self._check_handle(handle)
        self.handles.pop(handle, None)

    def check_owner(self, handle: int, who: str) -> None:
        """Another identity's handle is as good as none (never "not yours":
        that would confirm it exists)."""
        found = self.handles.get(handle)
        if found is not None and found.owner != who:
            raise CkptError(
                ErrorCode.LIB_INVALID_HANDLE, f"library handle {handle} is not initialized"
            )

    def _check_handle(self, handle: int) -> None:
        found = self.handles.get(handle)
        if found is None:
            raise CkptError(
                ErrorCode.LIB_INVALID_HANDLE, f"library handle {handle} is not initialized"
            )
        found.used = self.now()

    def reap_idle(self, now: Nanos) -> list[int]:
        """Finalize the handles unused for library_handle_timeout_seconds
        (their clients vanished); their ids."""
        timeout = round(self.limits.library_handle_timeout_seconds * NANOS_PER_SECOND)
        idle = [handle for handle, found in self.handles.items() if now - found.used > timeout]
        for handle in idle:
            del self.handles[handle]
        return idle

    # -- the node's limits ---------------------------------------------------

    def _admit_checkpoint(self) -> None:
        limit = self.limits.max_checkpoints
        if self.server_usage().checkpoints + len(self.checkpoints) >= limit:
            raise CkptError(ErrorCode.NO_MEMORY, f"the node has max_checkpoints={limit}")

    def _admit_bytes(self, more: int) -> None:
        """Room for ``more`` bytes beside the server checkpoints'
        reservations; a change that holds no more is always allowed."""
        if more <= 0:
            return
        limit = self.limits.max_reserved_bytes
        server = self.server_usage().bytes
        if server + self.bytes + more > limit:
            raise CkptError(
                ErrorCode.NO_MEMORY,
                f"the node cannot hold {more} more bytes (server checkpoints reserve "
                f"{server}, library checkpoints hold {self.bytes}, of max_reserved_bytes={limit})",
            )

    # -- checkpoints ---------------------------------------------------------

    def create(self, handle: int, name: str) -> bool:
        """Create, or find the stored checkpoint: True if it was created."""
        self._check_handle(handle)
        _check_name(name)
        if name in self.checkpoints:
            return False
        self._admit_checkpoint()
        self.checkpoints[name] = LibraryCheckpoint(name)
        self.changelog.mark(("library", name))
        return True

    def delete(self, handle: int, name: str) -> None:
        checkpoint = self._checkpoint(handle, name)
        del self.checkpoints[name]
        self.bytes -= checkpoint.size
        self.changelog.mark(("library", name))

    def exists(self, handle: int, name: str) -> bool:
        self._check_handle(handle)
        _check_name(name)
        return name in self.checkpoints

    def _checkpoint(self, handle: int, name: str) -> LibraryCheckpoint:
        self._check_handle(handle)
        _check_name(name)
        checkpoint = self.checkpoints.get(name)
        if checkpoint is None:
            raise CkptError(ErrorCode.LIB_NOT_EXIST, f"library checkpoint {name!r} does not exist")
        return checkpoint

    # -- datasets ------------------------------------------------------------

    def dataset_create(
        self, handle: int, name: str, dataset_id: int, group_id: int, order: int
    ) -> bool:
        """Create, or find the stored dataset: True if it was created."""
        checkpoint = self._checkpoint(handle, name)
        existing = checkpoint.datasets.get(dataset_id)
        if existing is not None:
            if (existing.group_id, existing.order) != (group_id, order):
                raise CkptError(
                    ErrorCode.LIB_INVALID_PARAMETER,
                    f"dataset {dataset_id} of {name!r} exists with group id "
                    f"{existing.group_id} and order {existing.order}",
                )
            return False
        checkpoint.datasets[dataset_id] = Dataset(group_id, order)
        self.changelog.mark(("dataset", name, dataset_id))
        return True

    def dataset_delete(self, handle: int, name: str, dataset_id: int) -> None:
        checkpoint = self._checkpoint(handle, name)
        dataset = self._dataset(checkpoint, dataset_id)
        del checkpoint.datasets[dataset_id]
        self.bytes -= dataset.size
        self.changelog.mark(("dataset", name, dataset_id))

    def dataset_exists(self, handle: int, name: str, dataset_id: int) -> bool:
        checkpoint = self._checkpoint(handle, name)
        return dataset_id in checkpoint.datasets

    def dataset_write(self, handle: int, name: str, dataset_id: int, data: bytes) -> None:
        dataset = self._dataset(self._checkpoint(handle, name), dataset_id)
        self._check_size(data)
        more = len(data) - len(dataset.data)
        self._admit_bytes(more)
        dataset.data = data
        self.bytes += more
        self.changelog.mark(("dataset-data", name, dataset_id))

    def dataset_read(self, handle: int, name: str, dataset_id: int) -> Dataset:
        return self._dataset(self._checkpoint(handle, name), dataset_id)

    def _dataset(self, checkpoint: LibraryCheckpoint, dataset_id: int) -> Dataset:
        dataset = checkpoint.datasets.get(dataset_id)
        if dataset is None:
            raise CkptError(
                ErrorCode.LIB_NOT_EXIST,
                f"dataset {dataset_id} does not exist in library checkpoint {checkpoint.name!r}",
            )
        return dataset

    def _check_size(self, data: bytes) -> None:
        limit = self.limits.max_section_size
        if len(data) > limit:
            raise CkptError(
                ErrorCode.NO_MEMORY,
                f"{len(data)} bytes exceed this node's limit of {limit} (max_section_size)",
            )

    # -- elements ------------------------------------------------------------

    def element_create(self, handle: int, name: str, dataset_id: int) -> None:
        dataset = self._dataset(self._checkpoint(handle, name), dataset_id)
        if not dataset.elements_enabled:
            dataset.elements_enabled = True
            self.changelog.mark(("dataset-data", name, dataset_id))

    def element_write(
        self, handle: int, name: str, dataset_id: int, element_id: bytes, data: bytes
    ) -> None:
        dataset = self._dataset(self._checkpoint(handle, name), dataset_id)
        if not dataset.elements_enabled:
            raise CkptError(
                ErrorCode.LIB_NOT_EXIST,
                f"dataset {dataset_id} of {name!r} has no elements: call ElementCreate first",
            )
        if not element_id:
            raise CkptError(ErrorCode.LIB_INVALID_PARAMETER, "the element id is empty")
        self._check_size(data)
        old = dataset.elements.get(element_id)
        more = len(data) - len(old) if old is not None else len(element_id) + len(data)
        self._admit_bytes(more)
        dataset.elements[element_id] = data
        self.bytes += more
        self.changelog.mark(("element", name, dataset_id, element_id))


def _check_name(name: str) -> None:
    if not name:
        raise CkptError(ErrorCode.NULL_POINTER, "the checkpoint name is empty")
    if len(name.encode()) > MAX_NAME_LENGTH:
        raise CkptError(
            ErrorCode.LIB_INVALID_PARAMETER,
            f"the checkpoint name exceeds {MAX_NAME_LENGTH} bytes",
        )
