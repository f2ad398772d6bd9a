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


def test_the_entry_point_is_relative_to_the_users_shell_not_the_scripts_directory(
        monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    """scripts/demo changes to the checkout before it runs sailmesh; the banner's path must work from where the user
    typed ./scripts/demo (SAILMESH_SHELL_CWD): from another directory it is absolute."""
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("SAILMESH_SHELL_CWD", str(tmp_path))
    venv_bin = os.path.dirname(sys.executable)
    monkeypatch.chdir(os.path.dirname(os.path.dirname(venv_bin)))
    cmd = sailmesh_command()
    assert os.path.isabs(cmd) or os.path.realpath(os.path.join(str(tmp_path), cmd)) == os.path.realpath(
        os.path.join(venv_bin, "sailmesh"))
