"""The test set-up's helm build (sailmesh/testing/helm_build.py) with a stand-in `go`: the binary lands in the cache
only once finished and runnable, an interrupted or failed build leaves nothing that looks finished, and a second
run builds nothing. (The real build: `python -m sailmesh.testing.helm_build`, run by scripts/test.)"""

from __future__ import annotations

import os
import pathlib
import stat

import pytest

from sailmesh.testing import helm_build

FAKE_GO = """#!/bin/sh
# a stand-in for `go install helm.sh/helm/v3/cmd/helm@VERSION`: writes $GOBIN/helm, then exits with $FAKE_GO_EXIT
echo "$@" >> "$FAKE_GO_CALLS"
printf '#!/bin/sh\\necho %s\\n' "$FAKE_HELM_SAYS" > "$GOBIN/helm"
chmod +x "$GOBIN/helm"
exit "$FAKE_GO_EXIT"
"""


@pytest.fixture
def fake_go(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    go = bin_dir / "go"
    go.write_text(FAKE_GO)
    go.chmod(go.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls"
    calls.touch()
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("SAILMESH_HELM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FAKE_GO_CALLS", str(calls))
    monkeypatch.setenv("FAKE_GO_EXIT", "0")
    monkeypatch.setenv("FAKE_HELM_SAYS", helm_build.HELM_VERSION)
    real_which = helm_build.shutil.which
    monkeypatch.setattr(helm_build.shutil, "which", lambda name: None if name == "helm" else real_which(name))
    return calls


def test_a_finished_build_is_renamed_into_the_cache_and_the_next_run_builds_nothing(
        fake_go: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, seconds = helm_build.build()
    assert path == helm_build.target() and seconds is not None
    assert helm_build.version_of(path) == helm_build.HELM_VERSION
    [call] = fake_go.read_text().splitlines()
    assert call.startswith("install ") and call.endswith(f"helm.sh/helm/v3/cmd/helm@{helm_build.HELM_VERSION}")
    assert f"internal/version.version={helm_build.HELM_VERSION}" in call
    assert helm_build.build() == (path, None)  # cached: go is not run again
    assert len(fake_go.read_text().splitlines()) == 1
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".partial")] == []
    assert helm_build.binary() == str(path)


@pytest.mark.parametrize(("exit_code", "says"), [("1", helm_build.HELM_VERSION), ("0", "v3.0.0")])
def test_a_failed_build_leaves_no_binary_that_looks_finished(
        fake_go: pathlib.Path, monkeypatch: pytest.MonkeyPatch, exit_code: str, says: str) -> None:
    """go failing after writing its output, or a binary that is not the release asked for: nothing in place."""
    monkeypatch.setenv("FAKE_GO_EXIT", exit_code)
    monkeypatch.setenv("FAKE_HELM_SAYS", says)
    (helm_build.cache_dir() / ".partial-killed").mkdir(parents=True)  # a run killed before: cleared
    (helm_build.cache_dir() / ".partial-killed" / "helm").write_text("half")
    with pytest.raises(RuntimeError):
        helm_build.build()
    assert not helm_build.target().exists()
    assert [p.name for p in helm_build.cache_dir().iterdir() if p.name.startswith(".partial")] == []
    assert helm_build.binary() is None
