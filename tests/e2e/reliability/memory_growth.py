"""`python -m tests.e2e.reliability.memory_growth [--changes N] [--every S]`: where the control plane's memory goes
during the soak's workload (issue 13: 95 -> 103 MiB over a 30-minute soak, after warm-up).

The soak's mesh (client, web x2, real sidecars), steady traffic, and a VirtualService change every `--every` seconds,
with the control plane under tracemalloc from the first change (tests/e2e/reliability/memtrace/sitecustomize.py).
Snapshots (after a full GC) after the warm-up changes, in the middle and at the end; prints RSS, the traced total,
the allocation sites that grew most between them, and the object types whose live count grew. A leak per change
shows as a site (and a type) growing in proportion to the changes in both halves; an allocator or GC steady state
shows as RSS moving while the traced total and the counts stay flat."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pathlib
import signal
import tempfile
import time
import tracemalloc

from sailmesh.testing.waiting import wait_for
from tests.e2e.platform_support import recorded
from tests.e2e.reliability.support import MIB, Traffic, address, rss, start_mesh, virtual_service

HERE = pathlib.Path(__file__).parent


def _snap(pid: int, out: pathlib.Path, n: int) -> tracemalloc.Snapshot:
    os.kill(pid, signal.SIGUSR2)
    path = out / f"snap-{n}.pickle"
    wait_for(path.exists, timeout=120, what=f"snapshot {n}")
    return tracemalloc.Snapshot.load(str(path))


def _counts(out: pathlib.Path, n: int) -> dict[str, int]:
    with open(out / f"counts-{n}.json", encoding="utf-8") as fh:
        return dict(json.load(fh))


def _total(s: tracemalloc.Snapshot) -> int:
    return sum(st.size for st in s.statistics("filename"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--warmup", type=int, default=60, help="changes before the first snapshot")
    p.add_argument("--changes", type=int, default=300, help="changes between the first and the last snapshot")
    p.add_argument("--every", type=float, default=0.5, help="seconds between changes")
    p.add_argument("--top", type=int, default=15)
    a = p.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="memgrowth-"))
    out = tmp / "snaps"
    out.mkdir()
    os.environ["SAILMESH_MEMTRACE_DIR"] = str(out)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE / "memtrace"), os.environ.get("PYTHONPATH"))
                                               if p)
    mesh, vs = start_mesh(tmp)
    with mesh:
        cp = next(r["pid"] for r in recorded(mesh.state_dir).values() if r["role"] == "controlplane")
        traffic = Traffic(f"http://{address(mesh, 'client-0')}:15001").start()
        changes = 0
        points: list[tuple[str, int, float, tracemalloc.Snapshot, dict[str, int]]] = []
        try:
            traffic.wait_route("v1")
            os.kill(cp, signal.SIGUSR2)  # start tracing (the snapshots come after the warm-up changes)
            wait_for((out / "started").exists, timeout=60, what="tracemalloc to start")
            half = a.changes // 2
            for label, target in (("warm", a.warmup), ("middle", a.warmup + half), ("end", a.warmup + a.changes)):
                while changes < target:
                    changes += 1
                    vs.write_text(virtual_service(f"s{changes}"))
                    time.sleep(a.every)
                traffic.wait_route(f"s{changes}")
                n = len(points) + 1
                snap = _snap(cp, out, n)
                points.append((label, changes, time.monotonic(), snap, _counts(out, n)))
                print(f"{label}: {changes} changes, RSS {rss(cp) / MIB:.1f} MiB, traced {_total(snap) / MIB:.2f} MiB",
                      flush=True)
        finally:
            traffic.stop()
        print(f"traffic: {traffic.summary()}")
    for (l0, c0, _t0, s0, k0), (l1, c1, _t1, s1, k1) in itertools.pairwise(points):
        grown = c1 - c0
        print(f"\n{l0} -> {l1} ({grown} changes): traced {(_total(s1) - _total(s0)) / 1024:+.0f} KiB "
              f"({(_total(s1) - _total(s0)) / max(1, grown):+.0f} B per change)")
        for st in s1.compare_to(s0, "traceback")[:a.top]:
            if st.size_diff == 0:
                continue
            frames = [f"{f.filename.rsplit('/site-packages/', 1)[-1].rsplit('/wt-csr/', 1)[-1]}:{f.lineno}"
                      for f in st.traceback[-4:]]
            print(f"  {st.size_diff / 1024:+9.1f} KiB {st.count_diff:+7d} blocks  {' <- '.join(reversed(frames))}")
        types = sorted(((k1.get(t, 0) - k0.get(t, 0), t) for t in set(k0) | set(k1)), reverse=True)
        print("  live objects grown: " + ", ".join(f"{t} {d:+d}" for d, t in types[:12] if d))
    print(f"\nsnapshots in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
