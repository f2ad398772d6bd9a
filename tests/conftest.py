"""Shared pytest setup: child processes find the package; paths to Istio's conformance data."""

from __future__ import annotations

import os
import pathlib
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
# ../shared next to the checkout (CI, /work/main); two levels up for git worktrees under /work/wt/.
SHARED = next((p for p in (ROOT.parent / "shared", ROOT.parent.parent / "shared") if p.is_dir()),
              ROOT.parent / "shared")
CONFORMANCE = SHARED / "conformance"

# Tests never talk to a mesh the user runs in ~/.sailmesh (`analyze`, `get`, ... find a running mesh there).
os.environ.setdefault("SAILMESH_STATE_DIR", tempfile.mkdtemp(prefix="sailmesh-tests-"))
# Child processes (agents, sample apps, the control plane) import sailmesh from this checkout.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)


@pytest.fixture(scope="session")
def conformance() -> pathlib.Path:
    """Istio's conformance data (../shared/conformance); tests that need it skip without it."""
    if not CONFORMANCE.is_dir():
        pytest.skip(f"Istio conformance data not found at {CONFORMANCE} (needs the ../shared folder)")
    return CONFORMANCE
