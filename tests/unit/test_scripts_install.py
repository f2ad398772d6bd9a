"""scripts/demo and scripts/test skip the editable install when the installed package is current (issue 13): a
stand-in .venv records every pip call; pyproject.toml's hash, the checkout and the pip spec decide."""

from __future__ import annotations

import os
import pathlib
import shutil
import stat
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]

FAKE_PYTHON = """#!/usr/bin/env bash
# stands in for .venv/bin/python: logs pip calls; an install creates the sailmesh entry point
here="$(cd "$(dirname "$0")" && pwd)"
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
  echo "pip $*" >> "$here/../../calls"
  printf '#!/usr/bin/env bash\\necho "sailmesh $*" >> "%s/../../calls"\\n' "$here" > "$here/sailmesh"
  chmod +x "$here/sailmesh"
fi
if [ "$1" = "-m" ] && [ "$2" = "pytest" ]; then
  echo "pytest" >> "$here/../../calls"
fi
exit 0
"""


def _checkout(tmp: pathlib.Path) -> pathlib.Path:
    repo = tmp / "repo"
    shutil.copytree(ROOT / "scripts", repo / "scripts")
    shutil.copy(ROOT / "pyproject.toml", repo / "pyproject.toml")
    py = repo / ".venv" / "bin" / "python"
    py.parent.mkdir(parents=True)
    py.write_text(FAKE_PYTHON)
    py.chmod(py.stat().st_mode | stat.S_IXUSR)
    return repo


def _run(repo: pathlib.Path, script: str) -> list[str]:
    calls = repo / "calls"
    calls.unlink(missing_ok=True)
    # no root, no apt-get: scripts/test's package installs are skipped
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    r = subprocess.run(["bash", str(repo / "scripts" / script)], cwd=str(repo.parent), env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return calls.read_text().splitlines()


def test_demo_installs_once_and_again_only_when_pyproject_changes(tmp_path: pathlib.Path) -> None:
    repo = _checkout(tmp_path)
    first = _run(repo, "demo")
    assert [c for c in first if c.startswith("pip")] == ["pip -m pip install -q --disable-pip-version-check -e ."]
    assert first[-1] == "sailmesh demo"
    assert _run(repo, "demo") == ["sailmesh demo"]  # current: no pip
    with open(repo / "pyproject.toml", "a", encoding="utf-8") as fh:
        fh.write("\n# changed\n")
    assert [c for c in _run(repo, "demo") if c.startswith("pip")]  # a new pyproject.toml installs again


def test_test_needs_the_test_extras_and_the_demo_accepts_them(tmp_path: pathlib.Path) -> None:
    repo = _checkout(tmp_path)
    assert _run(repo, "demo")[0].endswith("-e .")
    tests = _run(repo, "test")  # the demo's install lacks the test extras
    assert tests[0] == "pip -m pip install -q --disable-pip-version-check -e .[test]" and tests[-1] == "pytest"
    assert _run(repo, "test") == ["pytest"]
    assert _run(repo, "demo") == ["sailmesh demo"]  # the test install serves the demo too


def test_a_venv_without_sailmesh_installs_again(tmp_path: pathlib.Path) -> None:
    repo = _checkout(tmp_path)
    _run(repo, "demo")
    (repo / ".venv" / "bin" / "sailmesh").unlink()
    assert _run(repo, "demo")[0].startswith("pip")
