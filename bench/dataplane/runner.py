"""Runs the data-plane benchmark: starts the set-ups, measures them in interleaved rounds, summarises."""

from __future__ import annotations

import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.dataplane import analysis, loadgen, procstat
from bench.dataplane.errors import BenchError
from bench.dataplane.mesh import DEFAULT_TRANSPORT_NOTE, FactoryProvider, mesh_pair_factory
from bench.dataplane.setups import (
    Backend,
    PairFactory,
    SetupContext,
    SetupHandle,
    direct,
    start_backend,
    static_mtls_pair,
    static_pair,
)
from sailmesh.processes import envoy_binary


@dataclass
class RunConfig:
    """Everything one benchmark run needs."""

    mode: str = "full"
    duration: float = 60.0
    rate: float = 1000.0
    connections: int = 16
    rounds: int = 3
    saturation_s: float = 10.0
    warmup_s: float = 5.0
    envoy_concurrency: int = 1
    wrk_threads: int = 1
    loadgen: str = "auto"  # auto | python
    fixed_tool: str = "wrk"  # wrk (paced, µs resolution) | hey (per-worker -q; workers tick in step)
    mesh_provider: FactoryProvider = mesh_pair_factory
    command: str = ""
    log: Callable[[str], None] | None = field(default=None, repr=False)  # progress lines


MODES: dict[str, dict[str, float]] = {
    "full": {"duration": 60, "rounds": 3, "saturation_s": 10, "warmup_s": 5, "rate": 1000},
    "quick": {"duration": 10, "rounds": 2, "saturation_s": 3, "warmup_s": 1, "rate": 1000},
    "smoke": {"duration": 2, "rounds": 1, "saturation_s": 1, "warmup_s": 0.3, "rate": 200},
}


@dataclass
class _Gen:
    fixed_tool: str
    sat_tool: str
    notes: list[str]


def choose_generators(cfg: RunConfig) -> _Gen:
    """wrk (or hey) when installed; the asyncio fallback only in smoke mode (or when asked for), said aloud."""
    tools = loadgen.tools_available()
    notes: list[str] = []
    if cfg.loadgen == "python":
        notes.append("load generator: python asyncio fallback (asked for with --loadgen python)")
        return _Gen("python-fallback", "python-fallback", notes)
    fixed = cfg.fixed_tool if tools[cfg.fixed_tool] else None
    sat = "wrk" if tools["wrk"] else None
    if (fixed is None or sat is None) and cfg.mode != "smoke":
        raise BenchError("wrk and hey are needed outside --smoke: apt-get install -y wrk hey")
    if fixed is None:
        notes.append(f"{cfg.fixed_tool} not found: fixed-rate phase uses the python asyncio fallback generator")
    if sat is None:
        notes.append("wrk not found: saturation phase uses the python asyncio fallback generator")
    return _Gen(fixed or "python-fallback", sat or "python-fallback", notes)


def _fixed(gen: _Gen, url: str, host: str | None, rate: float, conns: int, dur: float) -> loadgen.FixedRateResult:
    if gen.fixed_tool == "wrk":
        return loadgen.run_wrk_paced(url, rate, conns, dur, host)
    if gen.fixed_tool == "hey":
        return loadgen.run_hey(url, rate, conns, dur, host)
    return loadgen.run_fallback_fixed(url, rate, conns, dur, host)


def _saturate(gen: _Gen, cfg: RunConfig, url: str, host: str | None) -> loadgen.SaturationResult:
    if gen.sat_tool == "wrk":
        return loadgen.run_wrk(url, cfg.connections, cfg.saturation_s, cfg.wrk_threads, host)
    return loadgen.run_fallback_saturation(url, cfg.connections, cfg.saturation_s, host)


def check_setup(handle: SetupHandle, expect_bytes: int = 1024) -> None:
    """One request through the set-up must return 200 and the backend's body."""
    req = urllib.request.Request(handle.url)
    if handle.host_header:
        req.add_header("Host", handle.host_header)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=5) as r:
        body = r.read()
        if r.status != 200 or len(body) != expect_bytes:
            raise BenchError(f"set-up answered {r.status} with {len(body)} bytes, want 200 with {expect_bytes}")


def machine_info() -> dict[str, Any]:
    """nproc, CPU model, kernel, Envoy and tool versions."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        ev = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
        envoy_version = ev.split("version:", 1)[-1].strip()
    except (OSError, subprocess.SubprocessError):
        envoy_version = "unknown"
    versions: dict[str, str] = {}
    for pkg in ("hey", "wrk"):
        if shutil.which("dpkg-query") and shutil.which(pkg):
            q = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
            versions[pkg] = q.stdout.strip() or "unknown"
    return {"nproc": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "python": sys.version.split()[0], "envoy": envoy_version, "tools": versions,
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}


def _start(name: str, factory: PairFactory | None, backend: Backend, ctx: SetupContext,
           handles: dict[str, SetupHandle], results: dict[str, Any]) -> None:
    if factory is None:
        results[name] = {"label": analysis.LABELS[name], "available": False, "reason": "not available yet"}
        return
    try:
        handle = factory(backend, ctx)
    except Exception as e:  # a mesh factory may fail in any way; the harness reports it and goes on
        if name in ("direct", "static", "static_mtls"):
            raise
        results[name] = {"label": analysis.LABELS[name], "available": False,
                         "reason": f"failed to start: {type(e).__name__}: {e}"}
        return
    handles[name] = handle
    try:
        check_setup(handle)
    except Exception as e:
        if name in ("direct", "static", "static_mtls"):
            raise BenchError(f"{name}: {e}") from e
        results[name] = {"label": analysis.LABELS[name], "available": False,
                         "reason": f"started but does not answer: {type(e).__name__}: {e}"}
        return
    transport = handle.transport
    if name in analysis.MESH_SETUPS and transport == "plaintext HTTP/1.1":
        transport = DEFAULT_TRANSPORT_NOTE
    results[name] = {"label": analysis.LABELS[name], "available": True, "transport": transport,
                     "notes": list(handle.notes), "envoy_pids": dict(handle.envoy_pids)}


AGENT_SUFFIX = "-agent"


def _measure(cfg: RunConfig, gen: _Gen, handle: SetupHandle, backend: Backend) -> dict[str, Any]:
    if cfg.warmup_s > 0:
        _fixed(gen, handle.url, handle.host_header, cfg.rate, cfg.connections, cfg.warmup_s)
    pids = {**handle.envoy_pids, **{f"{n}{AGENT_SUFFIX}": p for n, p in handle.agent_pids.items()},
            "backend": backend.pid}
    before = {n: procstat.cpu_seconds(p) for n, p in pids.items()}
    t0 = time.monotonic()
    fixed = _fixed(gen, handle.url, handle.host_header, cfg.rate, cfg.connections, cfg.duration)
    wall = time.monotonic() - t0
    procs = {n: analysis.ProcSample(procstat.cpu_seconds(p) - before[n], wall, procstat.peak_rss_mb(p),
                                    procstat.rss_anon_mb(p))
             for n, p in pids.items()}
    sat = _saturate(gen, cfg, handle.url, handle.host_header)
    return {"fixed": fixed, "procs": procs, "sat": sat}


def _summarise(rounds: list[dict[str, Any]], cfg: RunConfig) -> dict[str, Any]:
    fr: list[loadgen.FixedRateResult] = [r["fixed"] for r in rounds]
    per_round = [{**{f"{k}_ms": v for k, v in f.percentiles_ms.items()}, "mean_ms": f.mean_ms, "rps": f.rps,
                  "requests": f.requests, "errors": f.errors} for f in fr]
    requests = sum(f.requests for f in fr)
    dur = sum(f.duration_s for f in fr)
    achieved = requests / dur if dur else 0.0
    # each percentile is the median over rounds, so one disturbed round does not move it
    fixed = {"tool": fr[0].tool, "target_rps": cfg.rate, "connections": cfg.connections, "achieved_rps": achieved,
             "requests": requests, "errors": sum(f.errors for f in fr), "resolution_ms": fr[0].resolution_s * 1000.0,
             **{k: statistics.median(r[k] for r in per_round) for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms")},
             "rounds": per_round}
    sats: list[loadgen.SaturationResult] = [r["sat"] for r in rounds]
    saturation = {"tool": sats[0].tool, "rps": statistics.median(s.rps for s in sats),
                  "errors": sum(s.errors for s in sats),
                  "rounds": [{"rps": s.rps, "errors": s.errors, **s.percentiles_ms} for s in sats]}
    names = list(rounds[0]["procs"])
    procs = {n: analysis.process_summary([r["procs"][n] for r in rounds], achieved) for n in names}
    envoys = {n: v for n, v in procs.items() if n != "backend" and not n.endswith(AGENT_SUFFIX)}
    agents = {n: v for n, v in procs.items() if n.endswith(AGENT_SUFFIX)}
    with_agent = {n: v["vcpu_per_1k_rps"] + agents[n + AGENT_SUFFIX]["vcpu_per_1k_rps"]
                  for n, v in envoys.items() if n + AGENT_SUFFIX in agents}
    per_sidecar = {
        # Envoy plus its agent where the set-up has agents (the mesh): the sidecar's whole CPU cost
        "max_vcpu_per_1k_rps": max(with_agent.values(), default=None) if with_agent else
        max((v["vcpu_per_1k_rps"] for v in envoys.values()), default=None),
        "max_envoy_vcpu_per_1k_rps": max((v["vcpu_per_1k_rps"] for v in envoys.values()), default=None),
        "max_peak_rss_mb": max((v["peak_rss_mb"] for v in envoys.values()), default=None),
        "max_rss_anon_mb": max((v["rss_anon_mb"] for v in envoys.values()), default=None),
    }
    return {"fixed_rate": fixed, "saturation": saturation, "envoys": envoys, "agents": agents,
            "backend": procs["backend"],
            "per_sidecar": per_sidecar}


def run(cfg: RunConfig) -> dict[str, Any]:
    """Run the whole benchmark and return the result document (also what --json writes)."""
    log = cfg.log or (lambda s: None)
    gen = choose_generators(cfg)
    started = datetime.datetime.now(datetime.UTC)
    meta = {"date": started.isoformat(timespec="seconds"), "command": cfg.command, "mode": cfg.mode,
            "machine": machine_info(),
            "config": {"duration_s": cfg.duration, "rate": cfg.rate, "connections": cfg.connections,
                       "fixed_tool": cfg.fixed_tool, "rounds": cfg.rounds, "saturation_s": cfg.saturation_s,
                       "warmup_s": cfg.warmup_s,
                       "envoy_concurrency": cfg.envoy_concurrency, "wrk_threads": cfg.wrk_threads,
                       "hey_q_per_worker": loadgen.hey_per_worker_qps(cfg.rate, cfg.connections)},
            "loadgen": {"fixed_rate": gen.fixed_tool, "saturation": gen.sat_tool}, "notes": list(gen.notes)}
    if gen.fixed_tool == "hey":
        meta["notes"].append("hey: 0.1 ms latency resolution, and its workers tick in step (bursts of "
                             f"{cfg.connections} requests); the default paced wrk has neither problem")
    if gen.fixed_tool == "wrk":
        meta["notes"].append("fixed rate: wrk paced by bench/dataplane/fixed_rate.lua (one even schedule, sends "
                             "within 0.5 ms of their slot, no bursts; latency in µs from wrk's histogram)")
    workdir = Path(tempfile.mkdtemp(prefix="sailmesh-bench-"))
    ctx = SetupContext(workdir, cfg.envoy_concurrency)
    handles: dict[str, SetupHandle] = {}
    results: dict[str, Any] = {}
    backend_proc, backend = start_backend()
    ok = False
    try:
        factories: dict[str, PairFactory | None] = {
            "direct": direct, "static": static_pair, "static_mtls": static_mtls_pair,
            "mesh": cfg.mesh_provider("default"), "mesh_demo": cfg.mesh_provider("demo"),
            "mesh_nometrics": cfg.mesh_provider("nometrics"), "mesh_notelemetry": cfg.mesh_provider("notelemetry"),
        }
        for name, factory in factories.items():
            _start(name, factory, backend, ctx, handles, results)
            log(f"{analysis.LABELS[name]}: {'started' if results[name]['available'] else results[name]['reason']}")
        live = [n for n in analysis.SETUPS if results[n]["available"]]
        collected: dict[str, list[dict[str, Any]]] = {n: [] for n in live}
        for rnd in range(cfg.rounds):
            order = live[rnd % len(live):] + live[: rnd % len(live)]  # rotate so no set-up always goes first
            for name in order:
                if not results[name]["available"]:
                    continue
                log(f"round {rnd + 1}/{cfg.rounds}: {analysis.LABELS[name]}")
                try:
                    collected[name].append(_measure(cfg, gen, handles[name], backend))
                except Exception as e:  # a mesh set-up that breaks mid-run is reported; (1)/(2) failing is fatal
                    if name in ("direct", "static", "static_mtls"):
                        raise
                    results[name].update(available=False, reason=f"failed during round {rnd + 1}: "
                                                                  f"{type(e).__name__}: {e}")
                    log(f"{analysis.LABELS[name]}: {results[name]['reason']}")
        live = [n for n in live if results[n]["available"]]
        for name in live:
            results[name].update(_summarise(collected[name], cfg))
        ok = True
    finally:
        for h in handles.values():
            try:
                h.cleanup()
            except Exception:  # cleanup of one set-up must not hide the others' or the real error
                traceback.print_exc()
        backend_proc.terminate()
        try:
            backend_proc.wait(5)
        except subprocess.TimeoutExpired:
            backend_proc.kill()
            backend_proc.wait()
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"benchmark failed; Envoy configs and logs kept in {workdir}", file=sys.stderr)
    rat = analysis.ratios(results)
    meta["wall_s"] = (datetime.datetime.now(datetime.UTC) - started).total_seconds()
    meta["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return {"meta": meta, "setups": results, "ratios": rat, "targets": analysis.targets(results, rat)}
