"""`python -m bench.controlplane.trace ARGS`: `sailmesh controlplane ARGS` that timestamps every stage of each push.

The benchmark runs this instead of `python -m sailmesh controlplane` with `--trace`. It wraps (in this process
only, nothing in sailmesh changes) the steps between a change and the proxies' ACKs and writes, on exit, one JSON
document to $SAILMESH_BENCH_TRACE: per push the monotonic times of

  trigger   the HTTP apply handler entered (VirtualService) or the workload file re-read began (endpoints)
  submit    the first change of the push reached the debouncer
  push      the debouncer called the push; built: snapshot built; updated: the source advanced
  fanout    AdsServer.push queued the push on every connection
  respond   each connection's respond() for the pushed type began; sending/sent: its write began/returned
  acks      each ACK of the pushed version the server read

plus every cyclic GC pause and every FileStore re-apply (start, end), to see what else held the event loop.
CLOCK_MONOTONIC is system-wide, so the clients' ACK times (another process) are on the same clock.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

ENV = "SAILMESH_BENCH_TRACE"

_pushes: dict[float, dict[str, Any]] = {}  # by the push's start time (PendingPush.started = AdsServer.push's now)
_stages: dict[str, float] = {}  # stages of the push being prepared
_gc: list[tuple[float, float, int]] = []  # start, end, generation collected
_filestore: list[tuple[float, float]] = []
_workload_reads: list[tuple[float, float]] = []
_gc_start = 0.0


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    global _gc_start
    if phase == "start":
        _gc_start = time.monotonic()
    else:
        _gc.append((_gc_start, time.monotonic(), int(info.get("generation", -1))))


def _dump() -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    doc = {"pushes": sorted(_pushes.values(), key=lambda p: p["fanout"]), "gc": _gc, "filestore": _filestore,
           "workload_reads": _workload_reads}
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh)


def _wrap_sync(cls: Any, name: str, before: Callable[..., None] | None = None,
               after: Callable[..., None] | None = None) -> None:
    orig = getattr(cls, name)

    def wrapper(*args: Any, **kw: Any) -> Any:
        if before:
            before(*args, **kw)
        out = orig(*args, **kw)
        if after:
            after(out, *args, **kw)
        return out

    setattr(cls, name, wrapper)


def install() -> None:
    """Wrap the control plane's push path (import sailmesh first, then call this, then run the CLI)."""
    from sailmesh.controlplane import app
    from sailmesh.controlplane.debounce import Debouncer
    from sailmesh.controlplane.source import MeshSource
    from sailmesh.controlplane.workloads import WorkloadFileFollower
    from sailmesh.server.ads import AdsServer
    from sailmesh.server.connection import Connection
    from sailmesh.server.sotw import SotwConnection
    from sailmesh.store.files import FileStore

    now = time.monotonic

    orig_apply = app.ControlPlane.apply_documents

    async def apply_documents(self: Any, docs: Any, *args: Any, **kwargs: Any) -> Any:
        _stages.clear()
        _stages["trigger"] = now()
        _stages["trigger_kind"] = "apply"  # type: ignore[assignment]
        return await orig_apply(self, docs, *args, **kwargs)

    app.ControlPlane.apply_documents = apply_documents  # type: ignore[method-assign]

    def load_before(self: Any) -> None:
        _stages.clear()
        _stages["trigger"] = now()
        _stages["trigger_kind"] = "workloads"  # type: ignore[assignment]

    def load_after(_out: Any, self: Any) -> None:
        _workload_reads.append((_stages.get("trigger", now()), now()))

    _wrap_sync(WorkloadFileFollower, "read", load_before, load_after)  # runs in a thread for file changes

    def submit_before(self: Any, item: Any) -> None:
        if self._pending is None and "submit" not in _stages:
            _stages["submit"] = now()

    _wrap_sync(Debouncer, "submit", submit_before)

    orig_build = app.build

    def build(*args: Any, **kw: Any) -> Any:
        _stages["push"] = now()
        out = orig_build(*args, **kw)
        _stages["built"] = now()
        return out

    app.build = build  # type: ignore[assignment]
    _wrap_sync(MeshSource, "update", after=lambda *_a, **_k: _stages.__setitem__("updated", now()))

    orig_push = AdsServer.push

    def push(self: Any, request: Any) -> int:
        t = now()
        _stages["fanout"] = t  # PendingPush.started of this push is taken just after: matched by nearest below
        out = orig_push(self, request)
        rec = dict(_stages, fanout_done=now(), connections=out, version=request.version, respond=[], sending=[],
                   sent=[], acks=[])
        _pushes[t] = rec
        _stages.clear()
        return int(out)

    AdsServer.push = push  # type: ignore[method-assign]

    def record(started: float | None) -> dict[str, Any] | None:
        if started is None:
            return None
        # PendingPush.started is AdsServer.push's `now`, taken after our `t`, within microseconds
        best = None
        for t, rec in reversed(_pushes.items()):
            if t <= started:
                best = rec
                break
        return best

    orig_respond = SotwConnection.respond

    async def respond(self: Any, st: Any, send: Any, *, force: bool, started: float | None) -> bool:
        rec = record(started)
        if rec is None:
            return bool(await orig_respond(self, st, send, force=force, started=started))
        rec["respond"].append(now())

        async def timed_send(response: Any) -> None:
            rec["sending"].append(now())
            await send(response)
            rec["sent"].append(now())

        return bool(await orig_respond(self, st, timed_send, force=force, started=started))

    SotwConnection.respond = respond  # type: ignore[method-assign]

    orig_ack = Connection.on_ack

    def on_ack(self: Any, st: Any, version: str, nonce: str) -> None:
        if st.push_started is not None and version == st.sent_version:
            rec = record(st.push_started)
            if rec is not None:
                rec["acks"].append(now())
        orig_ack(self, st, version, nonce)

    Connection.on_ack = on_ack  # type: ignore[method-assign]

    orig_fs_apply = FileStore._apply

    def fs_apply(self: Any, plan: Any) -> Any:
        t = now()
        try:
            return orig_fs_apply(self, plan)
        finally:
            _filestore.append((t, now()))

    FileStore._apply = fs_apply  # type: ignore[method-assign]
    gc.callbacks.append(_on_gc)
    atexit.register(_dump)


def main() -> int:
    install()
    from sailmesh.cli.main import main as cli_main

    return cli_main(["controlplane", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def _overlap(spans: list[list[float]], start: float, end: float) -> float:
    return sum(max(0.0, min(sp[1], end) - max(sp[0], start)) for sp in spans)


def push_stages(doc: dict[str, Any], kind: str) -> list[dict[str, float]]:
    """Per push of `kind` ("apply" or "workloads"): ms from the trigger to each stage (end of the push: last ACK
    the server read), and the ms of GC pauses and FileStore re-applies inside that window."""
    out = []
    for p in doc["pushes"]:
        if p.get("trigger_kind") != kind or not p["acks"]:
            continue
        t0 = p.get("trigger", p.get("submit", p["fanout"]))
        end = max(p["acks"])
        ms = {k: (p[k] - t0) * 1e3 for k in ("submit", "push", "built", "updated", "fanout", "fanout_done")
              if k in p}
        for key in ("respond", "sending", "sent", "acks"):
            vals = [(t - t0) * 1e3 for t in p[key]]
            ms[f"{key}_first"], ms[f"{key}_p50"], ms[f"{key}_last"] = min(vals), _pct(vals, 50), max(vals)
        ms["gc_ms"] = _overlap(doc["gc"], t0, end) * 1e3
        ms["gc_pauses"] = sum(1 for sp in doc["gc"] if sp[1] > t0 and sp[0] < end)
        ms["gc2_ms"] = _overlap([sp for sp in doc["gc"] if sp[2] == 2], t0, end) * 1e3
        ms["filestore_ms"] = _overlap(doc["filestore"], t0, end) * 1e3
        ms["responses"] = len(p["respond"])
        out.append(ms)
    return out


def summarise(doc: dict[str, Any]) -> dict[str, Any]:
    """Median and p90 over the pushes of each kind, per stage."""
    res: dict[str, Any] = {}
    for kind in ("apply", "workloads"):
        rows = push_stages(doc, kind)
        if rows:
            keys = list(rows[0])
            res[kind] = {"pushes": len(rows),
                         "p50": {k: _pct([r[k] for r in rows if k in r], 50) for k in keys},
                         "p90": {k: _pct([r[k] for r in rows if k in r], 90) for k in keys},
                         "max": {k: max(r.get(k, 0.0) for r in rows) for k in keys}}
    return res


STAGE_LABELS = [
    ("submit", "change reached the debouncer"), ("push", "push began (debounce)"), ("built", "snapshot built"),
    ("updated", "source updated"), ("fanout_done", "queued on every connection"),
    ("respond_first", "first respond()"), ("respond_last", "last respond()"), ("sent_last", "last write returned"),
    ("acks_p50", "server read the median ACK"), ("acks_last", "server read the last ACK"),
]


def render(summary: dict[str, Any]) -> list[str]:
    lines = []
    for kind, s in summary.items():
        label = "VirtualService (HTTP apply)" if kind == "apply" else "endpoints (workload file re-read)"
        lines.append(f"  push stages, {label}, ms from the trigger (p50 / p90 / max of {s['pushes']} pushes):")
        for key, text in STAGE_LABELS:
            if key in s["p50"]:
                lines.append(f"    {text:32s} {s['p50'][key]:7.1f} / {s['p90'][key]:7.1f} / {s['max'][key]:7.1f}")
        lines.append(f"    GC pauses inside the push          {s['p50']['gc_ms']:7.1f} / {s['p90']['gc_ms']:7.1f} / "
                     f"{s['max']['gc_ms']:7.1f} ms")
        lines.append(f"    of which full (gen 2) collections  {s['p50']['gc2_ms']:7.1f} / {s['p90']['gc2_ms']:7.1f} / "
                     f"{s['max']['gc2_ms']:7.1f} ms")
        lines.append(f"    FileStore re-apply inside the push {s['p50']['filestore_ms']:7.1f} / "
                     f"{s['p90']['filestore_ms']:7.1f} / {s['max']['filestore_ms']:7.1f} ms")
    return lines
