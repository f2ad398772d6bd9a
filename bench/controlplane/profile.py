"""Sampling profile of the control plane with py-spy (raw collapsed stacks), summarised by function."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from collections import Counter
from dataclasses import dataclass

from bench.controlplane.errors import BenchError


@dataclass
class Profiler:
    proc: asyncio.subprocess.Process
    path: str


def py_spy() -> str:
    found = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(found):
        raise BenchError("py-spy is not installed (pip install 'sailmesh[bench]')")
    return found


async def start_profiler(pid: int, out_dir: str, name: str, rate: int = 200) -> Profiler:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"profile-{name}.txt")
    proc = await asyncio.create_subprocess_exec(
        py_spy(), "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "--output", path,
        "--nonblocking", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    return Profiler(proc, path)


async def stop_profiler(p: Profiler) -> dict[str, object]:
    if p.proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            p.proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(p.proc.wait(), 30)
        except TimeoutError:
            p.proc.kill()
            await p.proc.wait()
    return {"path": p.path, **summarise(p.path)} if os.path.exists(p.path) else {"path": p.path}


def summarise(path: str, top: int = 25) -> dict[str, object]:
    """Samples per function: inclusive (anywhere on the stack) and self (innermost frame)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = [_short(f) for f in stack.split(";")]
            for f in set(frames):
                inclusive[f] += n
            own[frames[-1]] += n
    return {"samples": total,
            "inclusive": [(f, round(100 * n / max(1, total), 1)) for f, n in inclusive.most_common(top)],
            "self": [(f, round(100 * n / max(1, total), 1)) for f, n in own.most_common(top)]}


def _short(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module.py)"
    name, _, where = frame.partition(" (")
    file = where.split(":")[0].rsplit("/", 1)[-1]
    return f"{name} ({file})" if file else name
