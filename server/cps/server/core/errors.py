"""The seed's error codes and the one exception the core raises."""

from __future__ import annotations

import enum


class ErrorCode(enum.Enum):
    """A seed error; the value is the seed's name, sent as ErrorInfo.reason."""

    NULL_POINTER = "CL_ERR_NULL_POINTER"
    ALREADY_EXIST = "CL_ERR_ALREADY_EXIST"
    NO_MEMORY = "CL_ERR_NO_MEMORY"
    NO_RESOURCE = "CL_ERR_NO_RESOURCE"
    TIMEOUT = "CL_ERR_TIMEOUT"
    TRY_AGAIN = "CL_ERR_TRY_AGAIN"
    NOT_INITIALIZED = "CL_CKPT_ERR_NOT_INITIALIZED"
    BAD_FLAG = "CL_CKPT_ERR_BAD_FLAG"
    INVALID_PARAM = "CL_CKPT_ERR_INVALID_PARAM"
    VERSION_MISMATCH = "CL_CKPT_ERR_VERSION_MISMATCH"
    INVALID_HANDLE = "CL_CKPT_ERR_INVALID_HANDLE"
    BAD_HANDLE = "CL_CKPT_ERR_BAD_HANDLE"
    INUSE = "CL_CKPT_ERR_INUSE"
    BAD_OPERATION = "CL_CKPT_ERR_BAD_OPERATION"
    OP_NOT_PERMITTED = "CL_CKPT_ERR_OP_NOT_PERMITTED"
    NOT_EXIST = "CL_CKPT_ERR_NOT_EXIST"
    NO_SPACE = "CL_CKPT_ERR_NO_SPACE"
    INTERNAL = "CL_CKPT_INTERNAL_ERROR"
    # The library (file) based API of the seed (3.3) uses the generic names.
    LIB_INVALID_HANDLE = "CL_ERR_INVALID_HANDLE"
    LIB_NOT_EXIST = "CL_ERR_NOT_EXIST"
    LIB_INVALID_PARAMETER = "CL_ERR_INVALID_PARAMETER"


class CkptError(Exception):
    """A call failed with a seed error.

    ``vector_index`` is the seed's erroneousVectorIndex for iovector calls;
    ``metadata`` adds machine-readable detail (sent in ErrorInfo.metadata).
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        vector_index: int | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
        self.vector_index = vector_index
        self.metadata = metadata or {}


def no_active_replica(name: str) -> CkptError:
    """The seed's "no active replica exists" (a collocated checkpoint before
    ActiveReplicaSet)."""
    return CkptError(
        ErrorCode.NOT_EXIST,
        f"checkpoint {name!r} has no active replica (collocated: call ActiveReplicaSet)",
        metadata={"cause": "no_active_replica"},
    )


def not_active(name: str, node: str) -> CkptError:
    """This node is not (or no longer) the active replica of the checkpoint:
    the caller looks up the active again and retries."""
    return CkptError(
        ErrorCode.TRY_AGAIN,
        f"node {node} is not the active replica of checkpoint {name!r}",
        metadata={"cause": "not_active"},
    )


def unknown_outcome(name: str, why: str) -> CkptError:
    """The node cannot tell whether the change was applied (the seed's
    timeout: see docs/replication.md)."""
    return CkptError(
        ErrorCode.TIMEOUT,
        f"the outcome of the change of checkpoint {name!r} is unknown: {why}",
        metadata={"cause": "unknown_outcome"},
    )
