"""Stopping a mesh's processes from its state file alone (the supervisor may be gone): each is identified by pid,
start time and command line before it is signalled, and they stop in order — proxies drain, then apps, then the
control plane."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Sequence

from sailmesh.platform.state import ProcessRecord, pid_alive
from sailmesh.processes import proc_cmdline, proc_start_time

# Gateways and sidecars drain first (they still serve in-flight requests), then the apps, then the control plane.
STOP_ORDER: tuple[tuple[str, ...], ...] = (("gateway", "agent"), ("app",), ("controlplane",))


def stop_signal(role: str) -> int:
    """The signal that stops a process of `role` when the whole mesh stops: proxies get SIGINT, which drains their
    requests in flight without the minimum drain (no other proxy will route to them again), the rest SIGTERM."""
    return signal.SIGINT if role in STOP_ORDER[0] else signal.SIGTERM


def is_same_process(pid: int, start_time: int, cmdline: Sequence[str]) -> bool:
    """True when `pid` is still the process that was recorded (not exited, not a recycled pid)."""
    if pid <= 0 or not pid_alive(pid):
        return False
    if start_time and proc_start_time(pid) != start_time:
        return False
    return not cmdline or proc_cmdline(pid) == list(cmdline)


def is_recorded(rec: ProcessRecord) -> bool:
    """is_same_process for a state-file record."""
    return is_same_process(rec.pid, rec.start_time, rec.cmdline)


def _signal(rec: ProcessRecord, sig: int) -> None:
    """Signal the process, and its process group when it leads one (apps run in their own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(rec.pid) == rec.pid:
            os.killpg(rec.pid, sig)
        else:
            os.kill(rec.pid, sig)


def stop_recorded(records: Sequence[ProcessRecord], grace: float = 15.0,
                  say: Callable[[str], None] = print) -> tuple[list[ProcessRecord], list[ProcessRecord]]:
    """Stop every recorded process still running as recorded, in STOP_ORDER: stop_signal, then SIGKILL after
    `grace`.

    Returns (stopped, skipped): skipped are records whose pid now names another process (never signalled).
    """
    stopped: list[ProcessRecord] = []
    skipped: list[ProcessRecord] = []
    known = {r for roles in STOP_ORDER for r in roles}
    groups = [*STOP_ORDER, tuple({r.role for r in records} - known)]
    for roles in groups:
        group = []
        for rec in records:
            if rec.role not in roles:
                continue
            if is_recorded(rec):
                group.append(rec)
            elif pid_alive(rec.pid):
                skipped.append(rec)
        for rec in group:
            _signal(rec, stop_signal(rec.role))
        deadline = time.monotonic() + grace
        while any(is_recorded(r) for r in group) and time.monotonic() < deadline:
            time.sleep(0.05)
        for rec in group:
            if is_recorded(rec):
                say(f"  {rec.name} (pid {rec.pid}) did not stop within {grace:.0f}s: killing it")
                _signal(rec, signal.SIGKILL)
        while any(is_recorded(r) for r in group) and time.monotonic() < deadline + 5:
            time.sleep(0.05)
        for rec in group:
            say(f"  stopped {rec.role} {rec.name} (pid {rec.pid})")
        stopped += group
    return stopped, skipped
