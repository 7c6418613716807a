"""Library (file) based checkpoints (seed 3.3): datasets and elements.

The state lives in memory and every change is marked in the change log, which
the storage layer commits before the call is acknowledged. Serializers run in
the client; here a dataset and an element are bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .changelog import ChangeLog, NoChangeLog
from .errors import CkptError, ErrorCode
from .limits import MAX_NAME_LENGTH
from .sessions import new_id


@dataclass(slots=True)
class Dataset:
    group_id: int
    order: int
    data: bytes = b""
    # clCkptLibraryCkptElementCreate was called: elements may be written.
    elements_enabled: bool = False
    elements: dict[bytes, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class LibraryCheckpoint:
    name: str
    datasets: dict[int, Dataset] = field(default_factory=dict)


class LibraryManager:
    def __init__(self, changelog: ChangeLog | None = None, max_value_bytes: int = 64 << 20):
        self.changelog = changelog or NoChangeLog()
        self.max_value_bytes = max_value_bytes
        # Each handle with the identity that initialized it.
        self.handles: dict[int, str] = {}
        self.checkpoints: dict[str, LibraryCheckpoint] = {}

    # -- handles -------------------------------------------------------------

    def initialize(self, owner: str = "") -> int:
        handle = new_id(self.handles)
        self.handles[handle] = owner
        return handle

    def finalize(self, handle: int) -> None:
        self._check_handle(handle)
        self.handles.pop(handle, None)

    def check_owner(self, handle: int, who: str) -> None:
        """Another identity's handle is as good as none (never "not yours":
        that would confirm it exists)."""
        if self.handles.get(handle, who) != who:
            raise CkptError(
                ErrorCode.LIB_INVALID_HANDLE, f"library handle {handle} is not initialized"
            )

    def _check_handle(self, handle: int) -> None:
        if handle not in self.handles:
            raise CkptError(
                ErrorCode.LIB_INVALID_HANDLE, f"library handle {handle} is not initialized"
            )

    # -- checkpoints ---------------------------------------------------------

    def create(self, handle: int, name: str) -> bool:
        """Create, or find the stored checkpoint: True if it was created."""
        self._check_handle(handle)
        _check_name(name)
        if name in self.checkpoints:
            return False
        self.checkpoints[name] = LibraryCheckpoint(name)
        self.changelog.mark(("library", name))
        return True

    def delete(self, handle: int, name: str) -> None:
        self._checkpoint(handle, name)
        del self.checkpoints[name]
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
        self._dataset(checkpoint, dataset_id)
        del checkpoint.datasets[dataset_id]
        self.changelog.mark(("dataset", name, dataset_id))

    def dataset_exists(self, handle: int, name: str, dataset_id: int) -> bool:
        checkpoint = self._checkpoint(handle, name)
        return dataset_id in checkpoint.datasets

    def dataset_write(self, handle: int, name: str, dataset_id: int, data: bytes) -> None:
        dataset = self._dataset(self._checkpoint(handle, name), dataset_id)
        self._check_size(data)
        dataset.data = data
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
        if len(data) > self.max_value_bytes:
            raise CkptError(
                ErrorCode.NO_MEMORY,
                f"{len(data)} bytes exceed this node's limit of {self.max_value_bytes}",
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
        dataset.elements[element_id] = data
        self.changelog.mark(("element", name, dataset_id, element_id))


def _check_name(name: str) -> None:
    if not name:
        raise CkptError(ErrorCode.NULL_POINTER, "the checkpoint name is empty")
    if len(name.encode()) > MAX_NAME_LENGTH:
        raise CkptError(
            ErrorCode.LIB_INVALID_PARAMETER,
            f"the checkpoint name exceeds {MAX_NAME_LENGTH} bytes",
        )
