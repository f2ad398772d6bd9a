"""The banners show a `sailmesh` command that works from the user's shell (issue 13: `sailmesh` was printed where
only `.venv/bin/sailmesh` ran)."""

from __future__ import annotations

import os
import sys

import pytest

from sailmesh.cli.common import sailmesh_command


def test_plain_sailmesh_when_path_finds_this_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    assert sailmesh_command() == "sailmesh"


def test_the_venv_entry_point_when_path_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    cmd = sailmesh_command()
    assert cmd != "sailmesh" and os.path.realpath(cmd) == os.path.realpath(
        os.path.join(os.path.dirname(sys.executable), "sailmesh"))
