"""Build the real kube-apiserver and etcd from the Go module proxy, cached outside the repo (test set-up only)."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from sailmesh.processes import die_with_parent

KUBE_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.16"
# etcd's server module replaces its sibling modules with relative paths; a scratch main module pins them instead.
ETCD_SIBLINGS = ("go.etcd.io/etcd/api/v3", "go.etcd.io/etcd/client/pkg/v3", "go.etcd.io/etcd/client/v3",
                 "go.etcd.io/etcd/pkg/v3")
_STAGING_RE = re.compile(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/", re.MULTILINE)


@dataclass(frozen=True)
class KubeBinaries:
    """Paths of the built binaries."""

    kube_apiserver: Path
    etcd: Path
    # Deployments -> Pods, EndpointSlices, service accounts, namespace deletion; None when not (yet) built
    kube_controller_manager: Path | None


def cache_dir() -> Path:
    """Where built binaries live: $SAILMESH_KUBE_CACHE or ~/.cache/sailmesh/kube/<kube>-etcd<etcd>."""
    root = os.environ.get("SAILMESH_KUBE_CACHE") or str(Path.home() / ".cache" / "sailmesh" / "kube")
    return Path(root) / f"{KUBE_VERSION}-etcd{ETCD_VERSION}"


def _targets() -> KubeBinaries:
    d = cache_dir() / "bin"
    return KubeBinaries(kube_apiserver=d / "kube-apiserver", etcd=d / "etcd",
                        kube_controller_manager=d / "kube-controller-manager")


def cached() -> KubeBinaries | None:
    """The cached binaries (the controller manager may be missing), or None without kube-apiserver and etcd
    (nothing is built here)."""
    t = _targets()
    if not (os.access(t.kube_apiserver, os.X_OK) and os.access(t.etcd, os.X_OK)):
        return None
    kcm = t.kube_controller_manager
    return t if kcm is not None and os.access(kcm, os.X_OK) else KubeBinaries(t.kube_apiserver, t.etcd, None)


def missing_reason() -> str:
    """Why the binaries are not available: the recorded build error, or how to build them."""
    err = cache_dir() / "build-error.txt"
    if err.exists():
        return f"kube-apiserver/etcd build failed (see {err}): " + err.read_text()[-400:]
    return (f"kube-apiserver/etcd {KUBE_VERSION}/{ETCD_VERSION} not built in {cache_dir()}; "
            "run `python -m sailmesh.testing.kube_build` (scripts/test does)")


def go_env() -> dict[str, str]:
    """The environment of every Go build here (helm_build.py's too)."""
    env = dict(os.environ)
    # Two shared cores: one package at a time, and no toolchain download.
    env.setdefault("GOFLAGS", "-p=1 -buildvcs=false -trimpath")
    env.setdefault("GOTOOLCHAIN", "local")
    env["CGO_ENABLED"] = "0"
    return env


def run_logged(cmd: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> None:
    """Run a Go command niced, its output appended to `log`; RuntimeError with the log's tail when it fails."""
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.run(["nice", "-n", "10", *cmd], cwd=cwd, env=env or go_env(), stdout=out,
                              stderr=subprocess.STDOUT,
                              preexec_fn=partial(die_with_parent, signal.SIGTERM))  # a timed-out build stops
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{tail}")


def _module_file(go: str, mod: str, version: str, work: Path, log: Path) -> str:
    out = subprocess.run([go, "mod", "download", "-json", f"{mod}@{version}"], cwd=work, env=go_env(),
                         capture_output=True, text=True, check=False)
    with log.open("a") as f:
        f.write(out.stdout + out.stderr)
    if out.returncode != 0:
        raise RuntimeError(f"go mod download {mod}@{version} failed: {out.stderr or out.stdout}")
    return Path(json.loads(out.stdout)["GoMod"]).read_text()


def _scratch(dir_: Path, name: str, requires: dict[str, str], replaces: dict[str, str], main_go: str) -> None:
    dir_.mkdir(parents=True, exist_ok=True)
    lines = [f"module {name}", "", "go 1.24.0", "", "require ("]
    lines += [f"\t{m} {v}" for m, v in sorted(requires.items())]
    lines += [")", "", "replace ("]
    lines += [f"\t{m} => {m} {v}" for m, v in sorted(replaces.items())]
    lines += [")", ""]
    (dir_ / "go.mod").write_text("\n".join(lines))
    (dir_ / "tools.go").write_text(main_go)


def staging_modules(gomod: str) -> list[str]:
    """The staging modules k8s.io/kubernetes' go.mod replaces with ./staging/... (pinned by version instead)."""
    return _STAGING_RE.findall(gomod)


def _build_kube(go: str, work: Path, out: Path, log: Path, cmd: str = "kube-apiserver") -> None:
    staging_version = "v0." + KUBE_VERSION.split(".", 1)[1]
    gomod = _module_file(go, "k8s.io/kubernetes", KUBE_VERSION, work, log)
    staging = {m: staging_version for m in staging_modules(gomod)}
    d = work / "kube"
    _scratch(d, "sailmesh.local/kubebuild", {"k8s.io/kubernetes": KUBE_VERSION}, staging,
             "//go:build tools\n\npackage tools\n\nimport (\n\t_ \"k8s.io/kubernetes/cmd/kube-apiserver\"\n"
             "\t_ \"k8s.io/kubernetes/cmd/kube-controller-manager\"\n)\n")
    run_logged([go, "mod", "tidy", "-e"], d, log)
    # what the release build stamps in (hack/lib/version.sh), so /version and kubectl's skew check see the release
    minor = KUBE_VERSION.split(".")[1]
    stamp = " ".join(f"-X k8s.io/{pkg}.{k}={v}" for pkg in ("component-base/version", "client-go/pkg/version")
                     for k, v in (("gitVersion", KUBE_VERSION), ("gitMajor", "1"), ("gitMinor", minor),
                                  ("gitTreeState", "clean")))
    run_logged([go, "build", f"-ldflags=-s -w {stamp}", "-o", str(out), f"k8s.io/kubernetes/cmd/{cmd}"], d, log)


def _build_kcm(go: str, work: Path, out: Path, log: Path) -> None:
    _build_kube(go, work, out, log, "kube-controller-manager")


def _build_etcd(go: str, work: Path, out: Path, log: Path) -> None:
    d = work / "etcd"
    _scratch(d, "sailmesh.local/etcdbuild", {"go.etcd.io/etcd/server/v3": ETCD_VERSION},
             {m: ETCD_VERSION for m in ETCD_SIBLINGS},
             "//go:build tools\n\npackage tools\n\nimport _ \"go.etcd.io/etcd/server/v3\"\n")
    run_logged([go, "mod", "tidy", "-e"], d, log)
    run_logged([go, "build", "-ldflags=-s -w", "-o", str(out), "go.etcd.io/etcd/server/v3"], d, log)


def build(force: bool = False) -> tuple[KubeBinaries, dict[str, float]]:
    """Build what is missing from the cache (a second run builds nothing); returns the paths and seconds per binary."""
    t = _targets()
    root = cache_dir()
    t.etcd.parent.mkdir(parents=True, exist_ok=True)
    log = root / "build.log"
    err = root / "build-error.txt"
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).exists():
        raise RuntimeError("no Go toolchain: kube-apiserver and etcd are built from Go modules")
    timings: dict[str, float] = {}
    jobs = ((t.etcd, _build_etcd, "etcd"), (t.kube_apiserver, _build_kube, "kube-apiserver"),
            (t.kube_controller_manager, _build_kcm, "kube-controller-manager"))
    for target, fn, name in jobs:
        assert target is not None
        if os.access(target, os.X_OK) and not force:
            continue
        started = time.monotonic()
        tmp = target.with_suffix(".partial")
        try:
            fn(go, root / "src", tmp, log)
        except RuntimeError as e:
            err.write_text(str(e))
            raise
        tmp.rename(target)
        timings[name] = round(time.monotonic() - started, 1)
    err.unlink(missing_ok=True)
    return t, timings


def main(argv: list[str] | None = None) -> int:
    """CLI: build (or, with --check, only report) the cached binaries."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--check", action="store_true", help="only say whether the binaries are cached")
    p.add_argument("--force", action="store_true", help="rebuild even when cached")
    a = p.parse_args(argv)
    if a.check:
        b = cached()
        print(f"cached: {b}" if b else missing_reason())
        return 0 if b else 1
    try:
        bins, timings = build(force=a.force)
    except RuntimeError as e:
        print(f"kube build failed: {e}", file=sys.stderr)
        return 1
    built = ", ".join(f"{k} {v}s" for k, v in timings.items()) or "nothing (cached)"
    print(f"kube binaries in {bins.kube_apiserver.parent}; built: {built}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
