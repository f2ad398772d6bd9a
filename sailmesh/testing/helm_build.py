"""Build the real helm CLI from the Go module proxy (`go install helm.sh/helm/v3/cmd/helm@VERSION`), cached outside
the repo, for the Helm chart tests (test set-up only)."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sailmesh.testing.kube_build import go_env, run_logged

HELM_VERSION = "v3.22.0"
MODULE = "helm.sh/helm/v3"


def cache_dir() -> Path:
    """Where the binary lives: $SAILMESH_HELM_CACHE or ~/.cache/sailmesh/helm."""
    return Path(os.environ.get("SAILMESH_HELM_CACHE") or Path.home() / ".cache" / "sailmesh" / "helm")


def target() -> Path:
    return cache_dir() / "helm"


def binary() -> str | None:
    """A helm to run: PATH's, else the cached build; None without either."""
    found = shutil.which("helm")
    if found:
        return found
    t = target()
    return str(t) if os.access(t, os.X_OK) else None


def version_of(path: Path) -> str:
    """What `helm version --short` says (v3.22.0+g...), or "" when it does not run."""
    try:
        out = subprocess.run([str(path), "version", "--short"], capture_output=True, text=True, timeout=30,
                             check=False)
    except OSError:
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def build(force: bool = False) -> tuple[Path, float | None]:
    """Build helm into the cache unless it is there; the path and the seconds it took (None: cached).

    `go install` writes into a scratch folder beside the target and the finished binary is renamed into place only
    after it ran (`helm version`), so an interrupted build never leaves a binary that looks finished."""
    t = target()
    if os.access(t, os.X_OK) and version_of(t).startswith(HELM_VERSION) and not force:
        return t, None
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).exists():
        raise RuntimeError("no Go toolchain: helm is built from its Go module")
    t.parent.mkdir(parents=True, exist_ok=True)
    for stale in t.parent.glob(".partial-*"):  # an earlier run that was killed (its binary never counts)
        shutil.rmtree(stale, ignore_errors=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=".partial-", dir=t.parent) as scratch:
        env = {**go_env(), "GOBIN": scratch}
        # what helm's release build stamps in (its Makefile's LDFLAGS), so `helm version` names the release
        stamp = f"-X {MODULE}/internal/version.version={HELM_VERSION} -X {MODULE}/internal/version.gitTreeState=clean"
        run_logged([go, "install", f"-ldflags=-s -w {stamp}", f"{MODULE}/cmd/helm@{HELM_VERSION}"],
                   Path(scratch), t.parent / "build.log", env)
        built = Path(scratch) / "helm"
        if not version_of(built).startswith(HELM_VERSION):
            raise RuntimeError(f"the helm built in {scratch} does not run as {HELM_VERSION}")
        os.replace(built, t)
    return t, round(time.monotonic() - started, 1)


def main(argv: list[str] | None = None) -> int:
    """CLI: build (or, with --check, only report) the cached helm."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--check", action="store_true", help="only say whether helm is there")
    p.add_argument("--force", action="store_true", help="rebuild even when cached")
    a = p.parse_args(argv)
    # `timeout` (scripts/test) ends a long first build with SIGTERM: leave through the cleanups (scratch folder)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if a.check:
        found = binary()
        print(f"helm: {found}" if found else f"no helm on PATH nor in {target()}")
        return 0 if found else 1
    try:
        path, seconds = build(force=a.force)
    except RuntimeError as e:
        print(f"helm build failed: {e}", file=sys.stderr)
        return 1
    print(f"helm {HELM_VERSION} in {path}; " + (f"built in {seconds}s" if seconds is not None else "cached"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
