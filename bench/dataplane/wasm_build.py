"""Build the bench-only Wasm metrics filter (bench/dataplane/wasm_stats, Rust) on demand, outside the repository.

`cargo build --release --target wasm32-wasip1` with CARGO_TARGET_DIR under ~/.cache/sailmesh (the .wasm is never
committed); crates come from crates.io through cargo. Says plainly what is missing: cargo, or the target
(`rustup target add wasm32-wasip1`).
"""

from __future__ import annotations

import functools
import os
import pathlib
import shutil
import subprocess

from bench.dataplane.errors import BenchError

CRATE = pathlib.Path(__file__).resolve().parent / "wasm_stats"
TARGET = "wasm32-wasip1"
TARGET_DIR = pathlib.Path(os.environ.get("SAILMESH_WASM_TARGET_DIR",
                                         pathlib.Path.home() / ".cache" / "sailmesh" / "wasm-target"))
ARTIFACT = "sailmesh_wasm_stats.wasm"


class ToolchainMissing(BenchError):
    """cargo or the wasm32-wasip1 target is not installed."""


def toolchain_problem() -> str | None:
    """Why the filter cannot be built here (None when cargo and the target are installed)."""
    if shutil.which("cargo") is None:
        return "cargo is not on PATH (install Rust with rustup, then `rustup target add wasm32-wasip1`)"
    if shutil.which("rustup") is not None:
        res = subprocess.run(["rustup", "target", "list", "--installed"], capture_output=True, text=True, timeout=60)
        if res.returncode == 0 and TARGET not in res.stdout.split():
            return f"the Rust target {TARGET} is not installed (`rustup target add {TARGET}`)"
        return None
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True, timeout=60)
    if sysroot.returncode != 0 or not (pathlib.Path(sysroot.stdout.strip()) / "lib" / "rustlib" / TARGET).is_dir():
        return f"the Rust target {TARGET} is not installed for this rustc"
    return None


@functools.cache
def wasm_path() -> pathlib.Path:
    """Build the filter (cargo does nothing when it is current) and return the .wasm's path."""
    problem = toolchain_problem()
    if problem is not None:
        raise ToolchainMissing(f"cannot build the Wasm filter: {problem}")
    env = dict(os.environ, CARGO_TARGET_DIR=str(TARGET_DIR))
    res = subprocess.run(["cargo", "build", "--release", "--target", TARGET, "--manifest-path",
                          str(CRATE / "Cargo.toml")], capture_output=True, text=True, env=env, timeout=900)
    if res.returncode != 0:
        raise BenchError(f"cargo build of {CRATE} failed: {res.stderr[-2000:]}")
    out = TARGET_DIR / TARGET / "release" / ARTIFACT
    if not out.is_file():
        raise BenchError(f"cargo build succeeded but {out} is missing")
    return out


if __name__ == "__main__":  # python -m bench.dataplane.wasm_build: build, print the path
    print(wasm_path())
