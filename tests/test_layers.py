"""The server's layers import one way (../shared/DESIGN.md, docs/design.md):

    api -> service -> core;  cluster -> core;  storage -> core;  node.py wires.

core is pure (no grpc, no I/O library); the service layer reaches the
cluster and the store only through its ports; etcd is imported by the
cluster layer alone (and only in cluster mode: node.py imports it lazily).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVER = Path(__file__).resolve().parents[1] / "server" / "cps" / "server"

# What each layer may import of cps.server (besides itself).
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "storage": {"core"},
    "service": {"core"},
    "cluster": {"core", "status", "failpoints"},
    "api": {"core", "service", "status", "metrics"},
    "status": {"core"},
    "metrics": set(),
    "node_metrics": {"*"},
    "failpoints": set(),
    "logs": set(),
    "config": {"core"},
    "security": {"config"},
    "main": {"config", "logs", "node", "storage", "workers"},
    # The supervisor of a node of several workers: it locks the node's data
    # directory as a store does, and starts the workers (main.py runs them).
    "workers": {"config", "logs", "storage"},
    "node": {"*"},
    "node_events": {"*"},
    "cluster_parts": {"*"},
    "__init__": set(),
}
# Third-party packages a layer must not touch.
FORBIDDEN: dict[str, set[str]] = {
    "core": {"grpc", "sqlite3", "google", "cps.v1", "cps.peer", "asyncio"},
    "service": {"grpc", "sqlite3", "google", "cps.v1", "cps.peer"},
    "storage": {"grpc", "cps.v1", "cps.peer"},
    "cluster": {"sqlite3", "cps.v1.checkpoint_service_pb2", "cps.v1.library_service_pb2"},
}
# The only layers that may import etcd (its client or its stubs): the
# cluster, and the composition of a cluster node (imported in cluster mode only).
ETCD_LAYERS = {"cluster", "cluster_parts"}


def _modules() -> list[Path]:
    return sorted(
        path
        for path in SERVER.rglob("*.py")
        if "etcdpb" not in path.parts and "__pycache__" not in path.parts
    )


def _layer(path: Path) -> str:
    relative = path.relative_to(SERVER)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names: list[str] = []
    package = ".".join(("cps", "server", *path.relative_to(SERVER).parent.parts))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names.append(module)
            names += [f"{module}.{alias.name}" for alias in node.names]
    return names


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SERVER)))
def test_imports_go_one_way(path: Path) -> None:
    layer = _layer(path)
    allowed = ALLOWED.get(layer)
    assert allowed is not None, f"{path}: unknown layer {layer!r}: add it to ALLOWED"
    relative = str(path.relative_to(SERVER))
    for name in _imports(path):
        if name.startswith("cps.server."):
            target = name.split(".")[2]
            if "*" not in allowed and target != layer:
                assert target in allowed, f"{relative} imports {name} ({layer} -> {target})"
        for forbidden in FORBIDDEN.get(layer, ()):
            assert not (name == forbidden or name.startswith(forbidden + ".")), (
                f"{relative} imports {name}: {layer} must not use {forbidden}"
            )
        if "etcdpb" in name or name.endswith(".etcd") or ".etcd." in name:
            assert layer in ETCD_LAYERS, f"{relative} imports {name}: only cluster/ may"


def test_every_layer_is_checked() -> None:
    layers = {_layer(path) for path in _modules()}
    assert layers <= set(ALLOWED), layers - set(ALLOWED)
