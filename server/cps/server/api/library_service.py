"""LibraryCheckpointService servicer: protobuf in, core call, protobuf out.

Every change is acknowledged only once the storage has committed it.
"""

from __future__ import annotations

from typing import Any

from cps.server.core.authorization import Access, Authorization, Kind
from cps.server.core.library import LibraryManager
from cps.v1 import library_service_pb2 as pb
from cps.v1 import library_service_pb2_grpc as pb_grpc

from .calls import Durability, seed_call, seed_mutation

# What each call naming a library checkpoint needs of the authorization table.
_ACCESS: dict[type, Access] = {
    pb.LibraryCkptCreateRequest: Access.WRITE,
    pb.LibraryCkptDeleteRequest: Access.WRITE,
    pb.LibraryDoesCkptExistRequest: Access.READ,
    pb.LibraryCkptDataSetCreateRequest: Access.WRITE,
    pb.LibraryCkptDataSetDeleteRequest: Access.WRITE,
    pb.LibraryCkptDataSetWriteRequest: Access.WRITE,
    pb.LibraryCkptDataSetReadRequest: Access.READ,
    pb.LibraryDoesDatasetExistRequest: Access.READ,
    pb.LibraryCkptElementCreateRequest: Access.WRITE,
    pb.LibraryCkptElementWriteRequest: Access.WRITE,
}


class LibraryCheckpointService(pb_grpc.LibraryCheckpointServiceServicer):
    def __init__(
        self,
        library: LibraryManager,
        durability: Durability,
        authorization: Authorization | None = None,
    ) -> None:
        self.library = library
        self.durability = durability
        # --auth-file: who may read and write which names (None: anyone).
        self.authorization = authorization

    def authorize(self, request: Any, who: str) -> None:
        """A library handle answers only to the identity that initialized it;
        with an authorization table, the checkpoint name must be granted to
        the caller for what the call does."""
        handle = getattr(request, "library_handle", None)
        if handle is not None:
            self.library.check_owner(handle, who)
        name = getattr(request, "checkpoint_name", None)
        if self.authorization is not None and name is not None:
            # A call missing from _ACCESS needs both, rather than nothing.
            access = _ACCESS.get(type(request), Access.READ | Access.WRITE)
            self.authorization.check(who, Kind.LIBRARY, name, access)

    @seed_call
    def LibraryInitialize(
        self, request: pb.LibraryInitializeRequest, who: str
    ) -> pb.LibraryInitializeResponse:
        return pb.LibraryInitializeResponse(library_handle=self.library.initialize(who))

    @seed_call
    def LibraryFinalize(
        self, request: pb.LibraryFinalizeRequest, who: str
    ) -> pb.LibraryFinalizeResponse:
        self.library.finalize(request.library_handle)
        return pb.LibraryFinalizeResponse()

    @seed_mutation
    def LibraryCkptCreate(
        self, request: pb.LibraryCkptCreateRequest, who: str
    ) -> pb.LibraryCkptCreateResponse:
        created = self.library.create(request.library_handle, request.checkpoint_name)
        return pb.LibraryCkptCreateResponse(created=created)

    @seed_mutation
    def LibraryCkptDelete(
        self, request: pb.LibraryCkptDeleteRequest, who: str
    ) -> pb.LibraryCkptDeleteResponse:
        self.library.delete(request.library_handle, request.checkpoint_name)
        return pb.LibraryCkptDeleteResponse()

    @seed_call
    def LibraryDoesCkptExist(
        self, request: pb.LibraryDoesCkptExistRequest, who: str
    ) -> pb.LibraryDoesCkptExistResponse:
        exists = self.library.exists(request.library_handle, request.checkpoint_name)
        return pb.LibraryDoesCkptExistResponse(exists=exists)

    @seed_mutation
    def LibraryCkptDataSetCreate(
        self, request: pb.LibraryCkptDataSetCreateRequest, who: str
    ) -> pb.LibraryCkptDataSetCreateResponse:
        created = self.library.dataset_create(
            request.library_handle,
            request.checkpoint_name,
            request.dataset_id,
            request.group_id,
            request.order,
        )
        return pb.LibraryCkptDataSetCreateResponse(created=created)

    @seed_mutation
    def LibraryCkptDataSetDelete(
        self, request: pb.LibraryCkptDataSetDeleteRequest, who: str
    ) -> pb.LibraryCkptDataSetDeleteResponse:
        self.library.dataset_delete(
            request.library_handle, request.checkpoint_name, request.dataset_id
        )
        return pb.LibraryCkptDataSetDeleteResponse()

    @seed_mutation
    def LibraryCkptDataSetWrite(
        self, request: pb.LibraryCkptDataSetWriteRequest, who: str
    ) -> pb.LibraryCkptDataSetWriteResponse:
        self.library.dataset_write(
            request.library_handle, request.checkpoint_name, request.dataset_id, request.data
        )
        return pb.LibraryCkptDataSetWriteResponse()

    @seed_call
    def LibraryCkptDataSetRead(
        self, request: pb.LibraryCkptDataSetReadRequest, who: str
    ) -> pb.LibraryCkptDataSetReadResponse:
        dataset = self.library.dataset_read(
            request.library_handle, request.checkpoint_name, request.dataset_id
        )
        return pb.LibraryCkptDataSetReadResponse(
            data=dataset.data,
            group_id=dataset.group_id,
            order=dataset.order,
            elements=[
                pb.LibraryElement(element_id=element_id, data=data)
                for element_id, data in sorted(dataset.elements.items())
            ],
        )

    @seed_call
    def LibraryDoesDatasetExist(
        self, request: pb.LibraryDoesDatasetExistRequest, who: str
    ) -> pb.LibraryDoesDatasetExistResponse:
        exists = self.library.dataset_exists(
            request.library_handle, request.checkpoint_name, request.dataset_id
        )
        return pb.LibraryDoesDatasetExistResponse(exists=exists)

    @seed_mutation
    def LibraryCkptElementCreate(
        self, request: pb.LibraryCkptElementCreateRequest, who: str
    ) -> pb.LibraryCkptElementCreateResponse:
        self.library.element_create(
            request.library_handle, request.checkpoint_name, request.dataset_id
        )
        return pb.LibraryCkptElementCreateResponse()

    @seed_mutation
    def LibraryCkptElementWrite(
        self, request: pb.LibraryCkptElementWriteRequest, who: str
    ) -> pb.LibraryCkptElementWriteResponse:
        self.library.element_write(
            request.library_handle,
            request.checkpoint_name,
            request.dataset_id,
            request.element_id,
            request.data,
        )
        return pb.LibraryCkptElementWriteResponse()
