"""Library (file) based checkpointing (seed 3.1 and 3.3) in Python.

The node stores bytes durably per (checkpoint, dataset) and per (checkpoint,
dataset, element); the serializers and deserializers are Python callables
registered here, in the client, as in the seed's ``ClCkptSerializeT`` /
``ClCkptDeserializeT``, with the cookie passed through:

- dataset serializer ``(dataset_id, cookie) -> bytes``; deserializer
  ``(dataset_id, data, cookie) -> None``;
- element serializer ``(dataset_id, element_id, cookie) -> bytes``;
  deserializer ``(dataset_id, element_id, data, cookie) -> None``.

Registrations live in this process: after a restart the application calls
``dataset_create`` / ``element_create`` again with its callables (the node
answers ``False``: the stored dataset is found, not recreated), then
``dataset_read`` gets its state back. As in the seed there is no way to read
one element: ``dataset_read`` runs the dataset deserializer on the dataset's
bytes, then the element deserializer on every element, in element-id order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from cps.v1 import library_service_pb2 as pb
from cps.v1 import library_service_pb2_grpc as pb_grpc

from ._connect import channel_options, first_serving, open_channel
from .errors import LibraryNotExistError, from_rpc_error

DatasetSerializer = Callable[[int, Any], bytes]
DatasetDeserializer = Callable[[int, bytes, Any], None]
ElementSerializer = Callable[[int, bytes, Any], bytes]
ElementDeserializer = Callable[[int, bytes, bytes, Any], None]


@dataclass(frozen=True, slots=True)
class _DatasetCodec:
    serializer: DatasetSerializer
    deserializer: DatasetDeserializer


@dataclass(frozen=True, slots=True)
class _ElementCodec:
    serializer: ElementSerializer
    deserializer: ElementDeserializer


class Library:
    """clCkptLibraryInitialize: a library handle on one node; a context
    manager that finalizes it."""

    def __init__(self, channel: grpc.Channel, *, _owns_channel: bool = False) -> None:
        self._channel = channel
        self._owns_channel = _owns_channel
        self._stub = pb_grpc.LibraryCheckpointServiceStub(channel)
        self._datasets: dict[tuple[str, int], _DatasetCodec] = {}
        self._elements: dict[tuple[str, int], _ElementCodec] = {}
        response = self._call("LibraryInitialize", pb.LibraryInitializeRequest())
        self.handle: int = response.library_handle

    @classmethod
    def connect(cls, target: str, options: Sequence[tuple[str, Any]] = ()) -> Library:
        """``target``: "host:port", or a list "a:50051,b:50051" of which the
        first node that serves is used."""
        opened = channel_options(options)
        return first_serving(
            target,
            lambda one: open_channel(one, opened, None),
            lambda channel: cls(channel, _owns_channel=True),
        )

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self._stub, method)(request)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error

    def finalize(self) -> None:
        """clCkptLibraryFinalize; the stored data stays."""
        try:
            self._call("LibraryFinalize", pb.LibraryFinalizeRequest(library_handle=self.handle))
        finally:
            if self._owns_channel:
                self._channel.close()

    close = finalize

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finalize()

    # -- checkpoints -----------------------------------------------------------

    def checkpoint_create(self, name: str) -> bool:
        """Create, or find the stored checkpoint; True if it was created."""
        request = pb.LibraryCkptCreateRequest(library_handle=self.handle, checkpoint_name=name)
        return bool(self._call("LibraryCkptCreate", request).created)

    def checkpoint_delete(self, name: str) -> None:
        request = pb.LibraryCkptDeleteRequest(library_handle=self.handle, checkpoint_name=name)
        self._call("LibraryCkptDelete", request)
        for registry in (self._datasets, self._elements):
            for key in [key for key in registry if key[0] == name]:
                del registry[key]

    def checkpoint_exists(self, name: str) -> bool:
        request = pb.LibraryDoesCkptExistRequest(library_handle=self.handle, checkpoint_name=name)
        return bool(self._call("LibraryDoesCkptExist", request).exists)

    # -- datasets --------------------------------------------------------------

    def dataset_create(
        self,
        name: str,
        dataset_id: int,
        serializer: DatasetSerializer,
        deserializer: DatasetDeserializer,
        *,
        group_id: int = 0,
        order: int = 0,
    ) -> bool:
        """Create, or find the stored dataset, and register its callables
        here; True if it was created."""
        request = pb.LibraryCkptDataSetCreateRequest(
            library_handle=self.handle,
            checkpoint_name=name,
            dataset_id=dataset_id,
            group_id=group_id,
            order=order,
        )
        created = bool(self._call("LibraryCkptDataSetCreate", request).created)
        self._datasets[(name, dataset_id)] = _DatasetCodec(serializer, deserializer)
        return created

    def dataset_delete(self, name: str, dataset_id: int) -> None:
        request = pb.LibraryCkptDataSetDeleteRequest(
            library_handle=self.handle, checkpoint_name=name, dataset_id=dataset_id
        )
        self._call("LibraryCkptDataSetDelete", request)
        self._datasets.pop((name, dataset_id), None)
        self._elements.pop((name, dataset_id), None)

    def dataset_exists(self, name: str, dataset_id: int) -> bool:
        request = pb.LibraryDoesDatasetExistRequest(
            library_handle=self.handle, checkpoint_name=name, dataset_id=dataset_id
        )
        return bool(self._call("LibraryDoesDatasetExist", request).exists)

    def dataset_write(self, name: str, dataset_id: int, cookie: Any = None) -> None:
        """Run the dataset's serializer here and store what it returns."""
        data = self._dataset_codec(name, dataset_id).serializer(dataset_id, cookie)
        request = pb.LibraryCkptDataSetWriteRequest(
            library_handle=self.handle, checkpoint_name=name, dataset_id=dataset_id, data=data
        )
        self._call("LibraryCkptDataSetWrite", request)

    def dataset_read(self, name: str, dataset_id: int, cookie: Any = None) -> None:
        """Fetch the stored bytes and run the dataset's deserializer, then the
        element deserializer on every element."""
        codec = self._dataset_codec(name, dataset_id)
        request = pb.LibraryCkptDataSetReadRequest(
            library_handle=self.handle, checkpoint_name=name, dataset_id=dataset_id
        )
        response = self._call("LibraryCkptDataSetRead", request)
        codec.deserializer(dataset_id, response.data, cookie)
        if response.elements:
            elements = self._element_codec(name, dataset_id)
            for element in response.elements:
                elements.deserializer(dataset_id, element.element_id, element.data, cookie)

    def _dataset_codec(self, name: str, dataset_id: int) -> _DatasetCodec:
        codec = self._datasets.get((name, dataset_id))
        if codec is None:
            raise LibraryNotExistError(
                f"no serializer registered in this client for dataset {dataset_id} of "
                f"{name!r}: call dataset_create with its callables first"
            )
        return codec

    # -- elements --------------------------------------------------------------

    def element_create(
        self,
        name: str,
        dataset_id: int,
        serializer: ElementSerializer,
        deserializer: ElementDeserializer,
    ) -> None:
        """Enable elements in the dataset and register their callables here."""
        request = pb.LibraryCkptElementCreateRequest(
            library_handle=self.handle, checkpoint_name=name, dataset_id=dataset_id
        )
        self._call("LibraryCkptElementCreate", request)
        self._elements[(name, dataset_id)] = _ElementCodec(serializer, deserializer)

    def element_write(
        self, name: str, dataset_id: int, element_id: bytes, cookie: Any = None
    ) -> None:
        """Run the element serializer here and store what it returns."""
        codec = self._element_codec(name, dataset_id)
        data = codec.serializer(dataset_id, element_id, cookie)
        request = pb.LibraryCkptElementWriteRequest(
            library_handle=self.handle,
            checkpoint_name=name,
            dataset_id=dataset_id,
            element_id=element_id,
            data=data,
        )
        self._call("LibraryCkptElementWrite", request)

    def _element_codec(self, name: str, dataset_id: int) -> _ElementCodec:
        codec = self._elements.get((name, dataset_id))
        if codec is None:
            raise LibraryNotExistError(
                f"no element serializer registered in this client for dataset {dataset_id} "
                f"of {name!r}: call element_create with its callables first"
            )
        return codec
