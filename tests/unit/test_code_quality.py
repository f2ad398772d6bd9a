"""ruff, the import-layer contract (DESIGN.md) and mypy run as part of the test suite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from tests.conftest import ROOT


def _tool(name: str) -> str:
    found = os.path.join(os.path.dirname(sys.executable), name)
    return found if os.path.exists(found) else (shutil.which(name) or name)


def test_ruff_clean() -> None:
    r = subprocess.run([_tool("ruff"), "check", "sailmesh", "tests", "bench"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_import_layers() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([_tool("lint-imports")], cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_clean() -> None:
    """The type hints hold: mypy checks the package with the settings in pyproject.toml ([tool.mypy])."""
    r = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
