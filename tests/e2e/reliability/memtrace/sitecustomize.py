"""Loaded by every Python process whose PYTHONPATH starts with this directory (tests/e2e/reliability/memory_growth.py
sets it for the mesh it starts): in the control plane only, and only when SAILMESH_MEMTRACE_DIR is set, the first
SIGUSR2 starts tracemalloc (tracing from the start would slow the imports past the platform's readiness timeout;
only what is allocated after it is traced, which is what growth is made of) and writes `started`; every later one
writes a snapshot (after a full GC) to that directory as snap-<n>.pickle, with gc's live object counts by type
beside it (counts-<n>.json)."""

from __future__ import annotations

import os
import sys

_DIR = os.environ.get("SAILMESH_MEMTRACE_DIR", "")

if _DIR and "controlplane" in sys.orig_argv[:5]:
    import collections
    import gc
    import json
    import signal
    import tracemalloc

    _taken = [0]

    def _snapshot(_signum: int, _frame: object) -> None:
        if not tracemalloc.is_tracing():
            tracemalloc.start(int(os.environ.get("SAILMESH_MEMTRACE_FRAMES", "8")))
            with open(os.path.join(_DIR, "started"), "w", encoding="utf-8"):
                pass
            return
        gc.collect()
        n = _taken[0] = _taken[0] + 1
        snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        snap.dump(os.path.join(_DIR, f"snap-{n}.pickle.tmp"))
        counts = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
        with open(os.path.join(_DIR, f"counts-{n}.json"), "w", encoding="utf-8") as fh:
            json.dump(dict(counts.most_common(300)), fh)
        os.replace(os.path.join(_DIR, f"snap-{n}.pickle.tmp"), os.path.join(_DIR, f"snap-{n}.pickle"))

    signal.signal(signal.SIGUSR2, _snapshot)
