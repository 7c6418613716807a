"""Node-wide limits; each is a setting (config.py derives one per field)."""

from __future__ import annotations

from dataclasses import dataclass

# ClNameT holds at most 256 bytes including its terminating NUL.
MAX_NAME_LENGTH = 255


@dataclass(frozen=True, slots=True)
class Limits:
    max_sessions: int = 10_000
    max_handles_per_session: int = 10_000
    # Server checkpoints this node holds a replica of, and library checkpoints.
    max_checkpoints: int = 100_000
    # Sum of checkpoint_size over the server checkpoints this node holds a
    # replica of, plus the bytes library checkpoints hold (dataset data,
    # element ids and element data): the memory the node promises to hold.
    max_reserved_bytes: int = 2 * 1024**3
    max_sections_per_checkpoint: int = 1_000_000
    max_section_size: int = 64 * 1024**2
    max_section_id_size: int = 1024
    max_iovector_elements: int = 10_000
    max_iterations_per_handle: int = 1_000
    # Library handles open at once, and how long one may go unused before
    # the node finalizes it (a client that vanished without finalizing).
    max_library_handles: int = 10_000
    library_handle_timeout_seconds: float = 3600.0
    max_callback_queue: int = 10_000
    # Bytes of one CallbacksResponse: a notification listing more sections is
    # split over several callbacks, waiting callbacks over several messages,
    # so no message reaches a client's receive limit (4 MiB in gRPC).
    max_callback_message_bytes: int = 1024**2
    # Bytes shipped to one peer and not acknowledged yet: past this the peer
    # is too far behind; it leaves the in-sync sets and is sent whole again.
    max_peer_queue_bytes: int = 256 * 1024**2
    # Service events (EventService.Watch) the node keeps: a subscriber
    # resumes from any of them, and one that falls further behind loses the
    # oldest (it is told how many).
    max_event_backlog: int = 10_000


@dataclass(frozen=True, slots=True)
class Usage:
    """What one kind of checkpoint holds against the shared limits."""

    checkpoints: int
    bytes: int
