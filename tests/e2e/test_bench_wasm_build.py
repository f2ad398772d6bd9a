"""The Wasm filter of bench/dataplane/wasm_stats builds with cargo outside the repository (skipped where cargo or the
wasm32-wasip1 target is missing: a benchmark's tool, not the product)."""

from __future__ import annotations

import pytest

from bench.dataplane import wasm_build


@pytest.mark.skipif(wasm_build.toolchain_problem() is not None, reason="no cargo or no wasm32-wasip1 target")
def test_the_filter_builds() -> None:
    """cargo builds the crate outside the repository (a few seconds cold, nothing when current)."""
    path = wasm_build.wasm_path()
    assert wasm_build.TARGET_DIR in path.parents
    assert path.read_bytes()[:4] == b"\0asm"
