"""The wheel that `pip install .` (and the Docker image) builds ships every
module of the three source folders, stubs and typing markers included."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def source_files() -> set[str]:
    files = set()
    for folder in ("client_py", "server"):
        base = ROOT / folder
        for path in base.rglob("*"):
            shipped = path.suffix in (".py", ".pyi") or path.name == "py.typed"
            if shipped and "__pycache__" not in path.parts:
                files.add(path.relative_to(base).as_posix())
    return files


def test_wheel_ships_every_module(tmp_path: Path) -> None:
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("cps-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name for name in archive.namelist() if name.startswith("cps/")}
        entry_points = archive.read(
            next(n for n in archive.namelist() if n.endswith("entry_points.txt"))
        ).decode()
    missing = source_files() - shipped
    assert not missing, f"not in the wheel: {sorted(missing)}"
    assert "cps-server = cps.server.main:main" in entry_points
    assert "cpsctl = cps.cli.main:main" in entry_points
