"""Between the managers' state and the store's rows, both ways.

``statements_for`` turns a change-log key into the statements that make the
rows behind it equal the current state (present: written, absent: deleted),
so a batch of keys can be applied in any order. ``restore`` loads the rows
back at start-up.
"""

from __future__ import annotations

from collections.abc import Iterable

from cps.server.core.changelog import Key
from cps.server.core.library import Dataset, LibraryCheckpoint, LibraryManager
from cps.server.core.replica import Ref, Replica, Section
from cps.server.core.types import CreationAttributes, CreationFlag, Nanos, SectionState

from .sqlite_store import SqliteStore, Statement

_UPSERT_SECTION = (
    "INSERT INTO section VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (checkpoint, section_id) "
    "DO UPDATE SET data = excluded.data, expiration = excluded.expiration, "
    "state = excluded.state, last_update = excluded.last_update"
)
_UPSERT_DATASET = (
    "INSERT INTO dataset VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (checkpoint, dataset_id) "
    "DO UPDATE SET group_id = excluded.group_id, ordering = excluded.ordering, "
    "data = excluded.data, elements_enabled = excluded.elements_enabled"
)
_UPSERT_ELEMENT = (
    "INSERT INTO element VALUES (?, ?, ?, ?) ON CONFLICT (checkpoint, dataset_id, element_id) "
    "DO UPDATE SET data = excluded.data"
)


# The server checkpoint stored under each name (the live instance; an
# unlinked one is not stored: it is gone after a restart anyway).
ServerView = dict[str, Replica]


def statements_for(key: Key, server: ServerView, library: LibraryManager | None) -> list[Statement]:
    kind, name = key[0], str(key[1])
    if kind in ("checkpoint", "checkpoint-meta", "section"):
        replica = server.get(name)
        if kind == "checkpoint":
            return _whole_checkpoint(name, replica)
        if kind == "checkpoint-meta":
            return [] if replica is None else [_checkpoint_meta(replica)]
        section_id = key[2]
        assert isinstance(section_id, bytes)
        section = None if replica is None else replica.sections.get(section_id)
        if section is None:
            return [
                ("DELETE FROM section WHERE checkpoint = ? AND section_id = ?", (name, section_id))
            ]
        return [(_UPSERT_SECTION, _section_row(name, section))]
    assert library is not None
    library_checkpoint = library.checkpoints.get(name)
    if kind == "library":
        return _whole_library_checkpoint(name, library_checkpoint)
    dataset_id = key[2]
    assert isinstance(dataset_id, int)
    dataset = None if library_checkpoint is None else library_checkpoint.datasets.get(dataset_id)
    if kind == "dataset":
        return _whole_dataset(name, dataset_id, dataset)
    if kind == "dataset-data":
        return (
            [] if dataset is None else [(_UPSERT_DATASET, _dataset_row(name, dataset_id, dataset))]
        )
    element_id = key[3]
    assert isinstance(element_id, bytes)
    data = None if dataset is None else dataset.elements.get(element_id)
    if data is None:
        return [
            (
                "DELETE FROM element WHERE checkpoint = ? AND dataset_id = ? AND element_id = ?",
                (name, dataset_id, element_id),
            )
        ]
    return [(_UPSERT_ELEMENT, (name, dataset_id, element_id, data))]


def _whole_checkpoint(name: str, replica: Replica | None) -> list[Statement]:
    statements: list[Statement] = [
        ("DELETE FROM section WHERE checkpoint = ?", (name,)),
        ("DELETE FROM checkpoint WHERE name = ?", (name,)),
    ]
    if replica is None:
        return statements
    attributes = replica.attributes
    statements.append(
        (
            "INSERT INTO checkpoint VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                name,
                ",".join(sorted(flag.name for flag in attributes.creation_flags)),
                attributes.checkpoint_size,
                attributes.max_section_id_size,
                attributes.max_sections,
                attributes.max_section_size,
                replica.retention,
                int(replica.active is not None),
                replica.generated_ids,
            ),
        )
    )
    statements.extend(
        ("INSERT INTO section VALUES (?, ?, ?, ?, ?, ?)", _section_row(name, section))
        for section in replica.sections.values()
    )
    return statements


def _checkpoint_meta(replica: Replica) -> Statement:
    return (
        "UPDATE checkpoint SET retention = ?, has_active_replica = ?, generated_ids = ? "
        "WHERE name = ?",
        (
            replica.retention,
            int(replica.active is not None),
            replica.generated_ids,
            replica.ref.name,
        ),
    )


def _section_row(name: str, section: Section) -> tuple[object, ...]:
    return (
        name,
        section.section_id,
        bytes(section.data),
        section.expiration_time,
        section.state.value,
        section.last_update,
    )


def _whole_library_checkpoint(name: str, checkpoint: LibraryCheckpoint | None) -> list[Statement]:
    statements: list[Statement] = [
        ("DELETE FROM element WHERE checkpoint = ?", (name,)),
        ("DELETE FROM dataset WHERE checkpoint = ?", (name,)),
        ("DELETE FROM library_checkpoint WHERE name = ?", (name,)),
    ]
    if checkpoint is not None:
        statements.append(("INSERT INTO library_checkpoint VALUES (?)", (name,)))
        for dataset_id, dataset in checkpoint.datasets.items():
            statements.extend(_whole_dataset(name, dataset_id, dataset)[2:])
    return statements


def _whole_dataset(name: str, dataset_id: int, dataset: Dataset | None) -> list[Statement]:
    statements: list[Statement] = [
        ("DELETE FROM element WHERE checkpoint = ? AND dataset_id = ?", (name, dataset_id)),
        ("DELETE FROM dataset WHERE checkpoint = ? AND dataset_id = ?", (name, dataset_id)),
    ]
    if dataset is not None:
        statements.append((_UPSERT_DATASET, _dataset_row(name, dataset_id, dataset)))
        statements.extend(
            (_UPSERT_ELEMENT, (name, dataset_id, element_id, data))
            for element_id, data in dataset.elements.items()
        )
    return statements


def _dataset_row(name: str, dataset_id: int, dataset: Dataset) -> tuple[object, ...]:
    return (
        name,
        dataset_id,
        dataset.group_id,
        dataset.order,
        dataset.data,
        int(dataset.elements_enabled),
    )


def restore_library(
    store: SqliteStore, library: LibraryManager, names: set[str] | None = None
) -> None:
    """Load the stored library checkpoints (only ``names``, if given,
    replacing what memory holds of them), and count what the library holds
    again."""
    checkpoints = library.checkpoints
    if names is not None:
        for name in names:
            checkpoints.pop(name, None)
    for (name,) in store.load("library_checkpoint"):
        if names is None or name in names:
            checkpoints[name] = LibraryCheckpoint(name)
    for name, dataset_id, group_id, order, data, enabled in store.load("dataset"):
        if names is None or name in names:
            checkpoints[name].datasets[dataset_id] = Dataset(group_id, order, data, bool(enabled))
    for name, dataset_id, element_id, data in store.load("element", "element_id"):
        if names is None or name in names:
            checkpoints[name].datasets[dataset_id].elements[element_id] = data
    library.recount()  # what they hold counts against the node's limits


def load_replicas(
    store: SqliteStore, node: str, now: Nanos, names: set[str] | None = None
) -> list[Replica]:
    """The stored server checkpoints (only ``names``, if given), as replicas
    of this node with nobody holding them open since ``now``; their refs
    carry incarnation 0 until the directory gives them one."""
    replicas: dict[str, Replica] = {}
    for row in store.load("checkpoint"):
        name, flags, size, id_size, sections, section_size, retention, active, generated = row
        if names is not None and name not in names:
            continue
        attributes = CreationAttributes(
            creation_flags=frozenset(CreationFlag[flag] for flag in _split(flags)),
            checkpoint_size=size,
            max_section_id_size=id_size,
            max_sections=sections,
            max_section_size=section_size,
            retention_duration=retention,
        )
        replica = Replica(
            Ref(name, 0),
            attributes,
            retention,
            epoch=1 if active else 0,
            active=node if active else None,
            generated_ids=generated,
            last_close=now,
        )
        replicas[name] = replica
    for name, section_id, data, expiration, state, last_update in store.load("section"):
        holder = replicas.get(name)
        if holder is not None:
            holder.sections[section_id] = Section(
                section_id, data, expiration, last_update, SectionState(state)
            )
            holder.memory_used += len(data)
    return list(replicas.values())


def _split(flags: str) -> Iterable[str]:
    return [flag for flag in flags.split(",") if flag]
