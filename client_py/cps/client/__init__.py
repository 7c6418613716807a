"""The Python client of CPS, the OpenClovis Checkpoint Service over gRPC.

The seed's API (chapters 3.4 and 3.5) in Python: a ``Session`` is
clCkptInitialize's service handle, with a selection object and ``dispatch``
that runs callbacks in the caller's thread; a ``Checkpoint`` is a checkpoint
handle; every failed call raises a ``CkptError`` subclass named after the
seed's error (``NoSpaceError`` for CL_CKPT_ERR_NO_SPACE, ...).

Example, the seed's asynchronous style::

    import select
    from cps.client import (
        Callbacks, CreationAttributes, DispatchFlags, FOREVER, Session, WriteElement,
    )

    def opened(invocation, checkpoint, error):
        if error is None:
            checkpoint.immediate_consumption_register(changed)
            checkpoint.section_create(b"state", b"v1")

    def changed(name, checkpoint, sections):
        print(name, [(s.section_id, s.change.name) for s in sections])

    with Session.connect("127.0.0.1:50051", Callbacks(open=opened)) as session:
        attributes = CreationAttributes(max_sections=4, max_section_size=1024,
                                        retention_duration=FOREVER)
        session.open_async(1, "demo", attributes)
        fd = session.selection_object()
        while select.select([fd], [], [], 1.0)[0]:
            session.dispatch(DispatchFlags.ALL)

And synchronously::

    with Session.connect("127.0.0.1:50051") as session:
        with session.open("sync-demo", CreationAttributes()) as checkpoint:
            section = checkpoint.section_create(initial_data=b"hello")  # b"1"
            checkpoint.write([WriteElement(section, b"J", 0), (section, b"!", 5)])
            assert checkpoint.read(section) == b"Jello!"
            with checkpoint.sections() as sections:
                print([s.section_id for s in sections])

Notes:

- ``dispatch(ONE | ALL | BLOCKING)`` runs ``Callbacks.open(invocation,
  checkpoint | None, error | None)``, ``Callbacks.synchronize(invocation,
  error | None)``, per-handle notification callbacks ``(name, checkpoint,
  [ChangedSection])`` and ``Callbacks.dropped(count)`` when the node had to
  drop notifications (re-read what you watch).
- The selection object is readable exactly while callbacks are pending.
- ``Session.connect("a:50051,b:50051,c:50051")`` follows the cluster: when
  its node dies, freezes or refuses, the session moves to another node of
  the list and opens its checkpoints, registrations and iterations again
  there; ``Callbacks.moved(node, lost)`` says so. Every call has a deadline
  (``timeout=``, 10 s by default). What an application sees during a
  failover: docs/clients/python.md.
- ``AsyncSession`` (with ``AsyncCallbacks`` and ``AsyncCheckpoint``) is the
  asyncio flavour over grpc.aio: the same calls as coroutines, callbacks run
  (and awaited if coroutine functions) in ``await session.dispatch(...)``.
- Durations are seconds or ``timedelta``, or ``FOREVER``; expiration times
  are aware ``datetime`` or epoch seconds, or ``NEVER``.
- ``Library`` is the library (file) based API of seed 3.3: datasets and
  elements stored durably by the node, with serializers and deserializers
  registered in the client (see ``cps.client.library``).
"""

from ._connect import DEFAULT_CHANNEL_OPTIONS
from ._failover import DEFAULT_TIMEOUT
from .aio_checkpoint import AsyncCheckpoint
from .aio_iteration import AsyncSectionIterator
from .aio_session import AsyncSession
from .callbacks import (
    AsyncCallbacks,
    Callbacks,
    DroppedCallback,
    MovedCallback,
    NotificationCallback,
    OpenCallback,
    SynchronizeCallback,
)
from .checkpoint import Checkpoint
from .errors import (
    AlreadyExistError,
    BadFlagError,
    BadHandleError,
    BadOperationError,
    CkptError,
    CkptTimeoutError,
    InternalError,
    InUseError,
    InvalidHandleError,
    InvalidParamError,
    LibraryInvalidHandleError,
    LibraryInvalidParameterError,
    LibraryNotExistError,
    NoActiveReplicaError,
    NoMemoryError,
    NoResourceError,
    NoSpaceError,
    NotExistError,
    NotInitializedError,
    NullPointerError,
    OpNotPermittedError,
    TryAgainError,
    VersionMismatchError,
)
from .iteration import SectionIterator
from .library import (
    DatasetDeserializer,
    DatasetSerializer,
    ElementDeserializer,
    ElementSerializer,
    Library,
)
from .session import Session
from .values import (
    CLIENT_VERSION,
    DEFAULT_SECTION_ID,
    FOREVER,
    NEVER,
    ChangedSection,
    CheckpointStatus,
    CreationAttributes,
    CreationFlags,
    DispatchFlags,
    Duration,
    ExpirationTime,
    OpenFlags,
    ReadElement,
    ReadResult,
    RetentionDuration,
    SectionChange,
    SectionDescriptor,
    SectionsChosen,
    SectionState,
    Version,
    WriteElement,
)

__all__ = [
    "CLIENT_VERSION",
    "DEFAULT_CHANNEL_OPTIONS",
    "DEFAULT_SECTION_ID",
    "DEFAULT_TIMEOUT",
    "FOREVER",
    "NEVER",
    "AlreadyExistError",
    "AsyncCallbacks",
    "AsyncCheckpoint",
    "AsyncSectionIterator",
    "AsyncSession",
    "BadFlagError",
    "BadHandleError",
    "BadOperationError",
    "Callbacks",
    "ChangedSection",
    "Checkpoint",
    "CheckpointStatus",
    "CkptError",
    "CkptTimeoutError",
    "CreationAttributes",
    "CreationFlags",
    "DatasetDeserializer",
    "DatasetSerializer",
    "DispatchFlags",
    "DroppedCallback",
    "Duration",
    "ElementDeserializer",
    "ElementSerializer",
    "ExpirationTime",
    "InUseError",
    "InternalError",
    "InvalidHandleError",
    "InvalidParamError",
    "Library",
    "LibraryInvalidHandleError",
    "LibraryInvalidParameterError",
    "LibraryNotExistError",
    "MovedCallback",
    "NoActiveReplicaError",
    "NoMemoryError",
    "NoResourceError",
    "NoSpaceError",
    "NotExistError",
    "NotInitializedError",
    "NotificationCallback",
    "NullPointerError",
    "OpNotPermittedError",
    "OpenCallback",
    "OpenFlags",
    "ReadElement",
    "ReadResult",
    "RetentionDuration",
    "SectionChange",
    "SectionDescriptor",
    "SectionIterator",
    "SectionState",
    "SectionsChosen",
    "Session",
    "SynchronizeCallback",
    "TryAgainError",
    "Version",
    "VersionMismatchError",
    "WriteElement",
]
