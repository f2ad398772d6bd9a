"""One benchmark case: a synthetic mesh, `sailmesh controlplane`, M proxies; pushes, convergence, CPU, memory."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import pathlib
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from bench.controlplane import stats, trace
from bench.controlplane.errors import BenchError
from bench.controlplane.mesh import SHARED_SERVICES, ProxySpec, SyntheticMesh, make_mesh
from bench.controlplane.procs import ClientWorker, ControlPlaneProc, cpu_seconds, rss_bytes
from bench.controlplane.profile import Profiler, start_profiler, stop_profiler
from sailmesh.platform import workload_file
from sailmesh.testing.envoy_proc import EnvoyProcess, ads_bootstrap
from sailmesh.testing.waiting import random_loopback_block

CLIENTS_PER_WORKER = 250
QUIET_S = 0.15  # > the control plane's 100 ms debounce quiet period, so each change is pushed at once
# The control plane's memory is read this long after the last push: what it keeps between pushes (it gives its free
# heap back to the system after a second without pushes: sailmesh/controlplane/trim.py)
SETTLE_S = 2.5

# How long a real Envoy's admin port may take to come up (Envoys start beside 500 busy clients)
ENVOY_ADMIN_S = 60.0


@dataclass(frozen=True)
class CaseConfig:
    services: int
    proxies: int  # lean clients + real Envoys
    sidecar_scoping: bool
    changes: int
    real_envoys: int
    sync_timeout: float = 600.0
    change_timeout: float = 120.0
    profile_dir: str = ""  # record py-spy stacks of the control plane into this directory (whole case; and each kind
    # of changes alone)
    trace: bool = False  # run bench.controlplane.trace (timestamps of each push's stages) instead of the CLI
    # first push: connect the clients in batches of this many, each batch after the previous one synced (0: all
    # at once). Without Sidecar scoping at 5,000 services each proxy's clusters are 10 MB: 2,000 simulated
    # proxies receiving theirs at once held more memory than this machine has, on the proxies' side too.
    connect_batch: int = 0
    control_plane_root: str = ""  # run another checkout's control plane (A/B against e.g. `git archive main`)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _summary(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "p50_s": stats.percentile(values, 50), "p90_s": stats.percentile(values, 90),
            "p99_s": stats.percentile(values, 99), "max_s": max(values) if values else math.nan,
            "buckets": stats.bucketed(values)}


class EnvoyProxy:
    """A real Envoy connected to the control plane, a replica of a lean client's workload (same scope)."""

    def __init__(self, spec: ProxySpec, ip: str, envoy: EnvoyProcess) -> None:
        self.spec = spec
        self.ip = ip
        self.envoy = envoy

    @classmethod
    def make(cls, mesh: SyntheticMesh, service: int, index: int, block: str, xds_port: int,
             workdir: pathlib.Path) -> EnvoyProxy:
        base = mesh.proxies(service + 1)[service]
        ip = f"{block}.{index + 2}"
        name = f"svc-{service}-v1-envoy{index}"
        node_id = f"sidecar~{ip}~{name}.{base.namespace}~{base.namespace}.svc.cluster.local"
        meta = dict(base.metadata, NAME=name)
        spec = ProxySpec(node_id, meta, service, base.namespace)
        boot = ads_bootstrap(node_id, xds_port)
        boot["node"]["metadata"] = meta
        return cls(spec, ip, EnvoyProcess(boot, workdir / f"envoy-{index}"))

    async def readouts(self, prefix: str) -> dict[str, tuple[str, int]]:
        """Envoy's subscriptions whose stat names contain prefix (e.g. `.rds.`): per subscription, the version it
        last accepted (`version_text`) and when (`update_time`, ms since the epoch, Envoy's own clock reading)."""
        # one stats walk over 3,503 clusters at --concurrency 1 passed the 5 s default twice on a loaded machine
        _, text = await self.envoy.admin_get("/stats?filter=(version_text|update_time)$", ENVOY_ADMIN_S)
        versions: dict[str, str] = {}
        times: dict[str, int] = {}
        for line in text.splitlines():
            key, _, value = line.partition(": ")
            if prefix not in key:
                continue
            if key.endswith(".version_text"):
                versions[key.removesuffix(".version_text")] = value.strip().strip('"')
            elif key.endswith(".update_time"):
                times[key.removesuffix(".update_time")] = int(value.strip() or 0)
        return {k: (v, times.get(k, 0)) for k, v in versions.items()}


async def _envoys_applied(envoys: list[EnvoyProxy], prefix: str, before: list[dict[str, tuple[str, int]]],
                          t0_wall: float, deadline: float) -> list[float]:
    """Seconds from the change (`t0_wall`, time.time()) until each Envoy had accepted a new version of every
    matching subscription, by the Envoy's own `update_time` of the last of them. Read once the simulated proxies
    have converged, and polled every 20 ms only while an Envoy has not caught up yet: polling every 5 ms from the
    change on (each poll a walk over the Envoy's stats) took CPU from the control plane and the clients being
    measured on these 2 cores."""
    out: list[float] = []
    for ep, old in zip(envoys, before, strict=True):
        while True:
            now = await ep.readouts(prefix)
            if now and len(now) >= len(old) and all(now.get(k, ("", 0))[0] != v for k, (v, _) in old.items()):
                out.append(max(t for _, t in now.values()) / 1000 - t0_wall)
                break
            if time.monotonic() > deadline:
                raise BenchError(f"Envoy {ep.spec.node_id} did not apply the change ({prefix}): {now}")
            await asyncio.sleep(0.02)
    return out


async def _syncz(cp: ControlPlaneProc) -> dict[str, dict]:
    return {p["proxy"]: p for p in json.loads(await cp.get("/debug/syncz"))}


class Case:
    """Runs one (services, proxies, scoping) case and returns its result document."""

    def __init__(self, cfg: CaseConfig, workdir: str) -> None:
        self.cfg = cfg
        self.workdir = pathlib.Path(workdir)
        self.cp: ControlPlaneProc | None = None
        self.workers: list[ClientWorker] = []
        self.envoys: list[EnvoyProxy] = []
        self.profiler: Profiler | None = None
        self.result: dict[str, Any] = {"services": cfg.services, "proxies": cfg.proxies,
                                       "sidecar_scoping": cfg.sidecar_scoping, "notes": []}

    async def run(self) -> dict[str, Any]:
        try:
            await self._run()
        finally:
            await self._cleanup()
        return self.result

    async def _cleanup(self) -> None:
        if self.profiler is not None:
            self.result["profile"] = await stop_profiler(self.profiler)
        for ep in self.envoys:
            with contextlib.suppress(Exception):
                await ep.envoy.stop()
        await asyncio.gather(*(w.stop() for w in self.workers), return_exceptions=True)
        if self.cp is not None:
            self.cp.stop()
            if self.cp.trace_path and os.path.exists(self.cp.trace_path):
                with open(self.cp.trace_path, encoding="utf-8") as fh:
                    self.result["push_stages"] = trace.summarise(json.load(fh))

    async def _run(self) -> None:
        cfg = self.cfg
        r = self.result
        mesh = make_mesh(str(self.workdir), cfg.services, cfg.sidecar_scoping)
        self.mesh = mesh
        n_envoys = min(cfg.real_envoys, cfg.proxies)
        n_lean = cfg.proxies - n_envoys
        specs = mesh.proxies(n_lean)
        log(f"case: {cfg.services} services, {n_lean} lean clients + {n_envoys} Envoys, "
            f"Sidecar scoping {'on' if cfg.sidecar_scoping else 'off'}")

        t = time.monotonic()
        self.cp = cp = ControlPlaneProc(mesh.config_dir, mesh.workload_file, str(self.workdir / "controlplane.log"),
                                        str(self.workdir / "trace.json") if cfg.trace else "",
                                        root=cfg.control_plane_root)
        await cp.wait_ready()
        r["startup_s"] = time.monotonic() - t
        if cfg.profile_dir:
            self.profiler = await start_profiler(cp.pid, cfg.profile_dir, _case_name(cfg))
        # let the start-up settle (file store's first rescan, GC) before the 0-proxy memory sample
        await asyncio.sleep(0.5)
        rss0, cpu0 = cp.rss(), cp.cpu()
        r["rss_0_proxies_mb"] = rss0 / 2**20

        n_workers = max(1, math.ceil(n_lean / CLIENTS_PER_WORKER)) if n_lean else 0
        self.workers = list(await asyncio.gather(*(ClientWorker.start(str(self.workdir / f"worker-{k}.err"))
                                                   for k in range(n_workers))))
        batch = cfg.connect_batch or len(specs) or 1
        batches = [specs[i:i + batch] for i in range(0, len(specs), batch)]

        # -- first full push: connect every client at once (or a batch at a time), until each has ACKed CDS, EDS,
        # LDS and RDS --
        t0 = time.monotonic()
        clients_cpu0 = sum(cpu_seconds(w.pid) for w in self.workers)
        replies = []
        by_batch = []
        for part in batches:
            if len(batches) > 1:
                done = len(replies) // max(1, n_workers) * batch
                by_batch.append({"synced": done, "cp_rss_mb": cp.rss() / 2**20, "clients_rss_mb": self._clients_rss()})
                log(f"connecting {len(part)} clients ({done} connected; control plane RSS "
                    f"{by_batch[-1]['cp_rss_mb']:.0f} MiB, simulated proxies {by_batch[-1]['clients_rss_mb']:.0f} MiB)")
            shares = [part[k::n_workers] for k in range(n_workers)]
            replies += await asyncio.gather(*(
                w.call({"cmd": "connect", "target": cp.target, "timeout": cfg.sync_timeout,
                        "proxies": [{"id": s.node_id, "metadata": s.metadata} for s in share]})
                for w, share in zip(self.workers, shares, strict=True)))
            if any(rep["errors"] for rep in replies[-n_workers:]):
                break
        replies = replies[-n_workers:] if n_workers else []  # each worker's last reply covers all its clients
        synced = {k: v for rep in replies for k, v in rep["synced"].items()}
        errors = {k: v for rep in replies for k, v in rep["errors"].items()}
        counts = {k: v for rep in replies for k, v in rep["counts"].items()}
        if errors:
            raise BenchError(f"{len(errors)} clients did not sync, e.g. {next(iter(errors.items()))}; "
                             f"control plane log: {cp.log_tail()}")
        cpu1 = cp.cpu()
        times = [v - t0 for v in synced.values()]
        retries = {k: v for rep in replies for k, v in rep.get("retries", {}).items()}
        r["first_push"] = {"all_synced_s": max(times) if times else 0.0, "p50_s": stats.percentile(times, 50),
                           "cpu_s": cpu1 - cpu0, "clients_that_reconnected": len(retries),
                           "reconnect_example": next(iter(retries.values()), None),
                           "clients_cpu_s": sum(cpu_seconds(w.pid) for w in self.workers) - clients_cpu0}
        if by_batch:
            r["first_push"]["by_batch"] = by_batch
        sizes = {t: sorted(c.get(t, 0) for c in counts.values()) for t in ("cds", "eds", "lds", "rds")}
        r["resources_per_proxy"] = {t: {"min": v[0], "max": v[-1]} for t, v in sizes.items() if v}
        log(f"first full push to {len(synced)} clients: {r['first_push']['all_synced_s']:.2f} s, "
            f"{cpu1 - cpu0:.1f} CPU s; per proxy {r['resources_per_proxy']}")

        # -- real Envoys: same scope as a lean client; they must receive and ACK the same config --
        if n_envoys:
            await self._start_envoys(n_envoys, counts)

        await asyncio.sleep(SETTLE_S)
        rss1 = cp.rss()
        r["rss_mb"] = rss1 / 2**20
        r["mb_per_proxy"] = (rss1 - rss0) / 2**20 / max(1, cfg.proxies)
        # the harness's own memory (its worker processes, not the control plane's figure)
        r["clients_rss_mb"] = self._clients_rss()
        log(f"memory after the first push: control plane {r['rss_mb']:.0f} MiB ({r['rss_0_proxies_mb']:.0f} with 0 "
            f"proxies): {r['mb_per_proxy']:.3f} MB per proxy; simulated proxies {r['clients_rss_mb']:.0f} MiB")

        # -- convergence after VirtualService changes (RDS) and endpoint changes (EDS only) --
        r["vs_change"] = await self._profiled("rds", self._changes("rds", self._vs_change, cfg.changes))
        r["endpoint_change"] = await self._profiled(
            "eds", self._changes("eds", self._endpoint_change, cfg.changes, self._prepare_endpoint_change))
        r["server_metrics"] = {
            "pilot_proxy_convergence_time": stats.histogram_by_type(await cp.get("/metrics"),
                                                                    "pilot_proxy_convergence_time"),
        }
        await asyncio.sleep(SETTLE_S)
        r["rss_end_mb"] = cp.rss() / 2**20
        # after the changes: what each connection holds between pushes (its last requests too), not only after the
        # first push
        r["mb_per_proxy_end"] = (r["rss_end_mb"] - r["rss_0_proxies_mb"]) / max(1, cfg.proxies)
        if self.envoys:
            await self._check_envoys_synced()

    async def _profiled(self, phase: str, run: Any) -> dict[str, Any]:
        """Await `run` (one kind of changes) with py-spy recording the control plane into a file of its own (the whole
        case's profile is mostly the first push)."""
        if not self.cfg.profile_dir or self.cp is None:
            return dict(await run)
        prof = await start_profiler(self.cp.pid, self.cfg.profile_dir, f"{_case_name(self.cfg)}-{phase}")
        try:
            out = dict(await run)
        finally:
            summary = await stop_profiler(prof)
        out["profile"] = summary
        return out

    def _clients_rss(self) -> float:
        """RSS of the simulated proxies' worker processes in MiB."""
        return sum(rss_bytes(w.pid) for w in self.workers) / 2**20

    # -- Envoys --
    async def _start_envoys(self, n: int, counts: dict[str, dict[str, int]]) -> None:
        assert self.cp is not None
        block = random_loopback_block()
        lean_ids = {s.service: s.node_id for s in self.mesh.proxies(self.cfg.proxies - n)}
        self.envoys = [EnvoyProxy.make(self.mesh, k % self.cfg.services, k, block, self.cp.xds_port, self.workdir)
                       for k in range(n)]
        t0 = time.monotonic()
        # the admin port comes up late on a loaded machine (15 s, the e2e default, failed at load ~10): 60 s
        await asyncio.gather(*(ep.envoy.start(timeout=ENVOY_ADMIN_S) for ep in self.envoys))
        await asyncio.gather(*(ep.envoy.wait_ready(timeout=self.cfg.sync_timeout) for ep in self.envoys))
        ready = time.monotonic() - t0
        deadline = time.monotonic() + 60
        while True:
            sz = await _syncz(self.cp)
            rows = [sz.get(ep.spec.node_id) for ep in self.envoys]
            if all(row and _synced(row) for row in rows):
                break
            if time.monotonic() > deadline:
                raise BenchError(f"Envoys did not ACK everything: {rows}")
            await asyncio.sleep(0.05)
        checks = []
        for ep, row in zip(self.envoys, rows, strict=True):
            assert row is not None
            got = {t.lower(): v["resources"] for t, v in row["types"].items()}
            twin = lean_ids.get(ep.spec.service)
            want = counts.get(twin, {}) if twin else {}
            same = all(got.get(t) == want.get(t) for t in ("cds", "eds", "lds", "rds")) if want else None
            checks.append({"envoy": ep.spec.node_id, "resources": got, "twin": twin, "twin_resources": want,
                           "same_as_twin": same})
            if same is False:
                raise BenchError(f"Envoy {ep.spec.node_id} got {got}, its lean twin {twin} got {want}")
        dumped = await self.envoys[0].envoy.config_dump("dynamic_active_clusters")
        n_clusters = len(dumped.get("configs", []))
        self.result["envoys"] = {"count": n, "ready_s": ready, "checks": checks,
                                 "envoy0_active_clusters": n_clusters}
        log(f"{n} real Envoys ready in {ready:.2f} s and ACKed the same resources as their lean twins "
            f"(envoy 0 holds {n_clusters} dynamic clusters)")

    async def _check_envoys_synced(self) -> None:
        """At the end: every Envoy ACKed the last version of each type, and holds the clusters and route
        configurations (names, virtual hosts) the control plane generates for its lean twin."""
        assert self.cp is not None
        deadline = time.monotonic() + self.cfg.change_timeout
        while True:  # Envoys are not waited for after endpoint changes: they may still be applying the last one
            sz = await _syncz(self.cp)
            rows = [sz.get(ep.spec.node_id) for ep in self.envoys]
            if all(row and _synced(row) for row in rows):
                break
            if time.monotonic() > deadline:
                raise BenchError(f"Envoys are not in sync at the end: {rows}")
            await asyncio.sleep(0.1)
        lean = {s.service: s.node_id for s in self.mesh.proxies(self.cfg.proxies - len(self.envoys))}
        compared = 0
        for ep in self.envoys:
            twin = lean.get(ep.spec.service)
            if twin is None:
                continue
            want = json.loads(await self.cp.get(f"/debug/config_dump?proxyID={twin}&types=clusters,routes"))
            clusters = await ep.envoy.config_dump("dynamic_active_clusters")
            routes = await ep.envoy.config_dump("dynamic_route_configs")
            got_clusters = {c["cluster"]["name"] for c in clusters.get("configs", [])}
            got_routes = {rc["name"]: sorted(v["name"] for v in rc.get("virtual_hosts", ()))
                          for rc in (r["route_config"] for r in routes.get("configs", []))}
            want_routes = {n: sorted(v["name"] for v in rc.get("virtual_hosts", []))
                           for n, rc in want.get("routes", {}).items() if n in got_routes}
            if got_clusters != set(want.get("clusters", {})) or got_routes != want_routes:
                raise BenchError(f"Envoy {ep.spec.node_id} holds other clusters/routes than its twin {twin}: "
                                 f"{len(got_clusters ^ set(want.get('clusters', {})))} clusters differ")
            compared += 1
        self.result.setdefault("envoys", {}).update({"synced_at_end": True, "same_names_as_twin": compared})

    # -- changes --
    async def _vs_change(self, k: int, _prepared: None) -> None:
        assert self.cp is not None
        i = k % min(SHARED_SERVICES, self.cfg.services)
        await self.cp.apply([self.mesh.virtual_service_doc(i, change=k + 1)])

    async def _prepare_endpoint_change(self, k: int) -> str:
        """The workload file's text after change k, serialised before the change is timed: the change is the file
        being replaced (the registry's event, as an EndpointSlice event is Istio's), not this harness turning 2,000
        workloads into JSON (~30 ms, which the timed window used to include)."""
        i = k % min(SHARED_SERVICES, self.cfg.services)
        extra = [] if k % 2 else [self.mesh.workload(i, "v3", 9)]
        # the previous change added one workload: an odd change removes it (back to the base set)
        return await asyncio.to_thread(workload_file.dump, [*self.mesh.workloads, *extra])

    async def _endpoint_change(self, k: int, text: str) -> None:
        await asyncio.to_thread(workload_file.write_text, self.mesh.workload_file, text)

    async def _changes(self, short: str, change: Any, n: int, prepare: Any = None) -> dict[str, Any]:
        """n changes, one at a time: time from the change until the last expected proxy ACKed `short`
        (`prepare(k)`, if given, runs before change k is timed; change(k, what it returned))."""
        assert self.cp is not None
        cp = self.cp
        prefix = {"rds": ".rds.", "eds": "cluster.outbound|8080|"}[short]
        latencies: list[float] = []
        envoy_latencies: list[float] = []
        other_types: dict[str, int] = {}
        pushes_before = stats.counters_by_type(await cp.get("/metrics"), "pilot_xds_pushes")
        cpu_before = cp.cpu()
        clients_cpu_before = sum(cpu_seconds(w.pid) for w in self.workers)
        for k in range(n):
            await asyncio.sleep(QUIET_S)
            await asyncio.gather(*(w.call({"cmd": "mark"}) for w in self.workers))
            envoy_before = [await ep.readouts(prefix) for ep in self.envoys] if short == "rds" else []
            prepared = await prepare(k) if prepare is not None else None
            t0, t0_wall = time.monotonic(), time.time()
            await change(k, prepared)
            deadline = t0 + self.cfg.change_timeout
            replies = await asyncio.gather(*(w.call({"cmd": "wait", "type": short,
                                                      "timeout": self.cfg.change_timeout}) for w in self.workers))
            missing = [m for rep in replies for m in rep["missing"]]
            if missing:
                raise BenchError(f"change {k}: {len(missing)} proxies never ACKed a new {short}, e.g. {missing[0]}")
            acked = [t for rep in replies for t in rep["acked"].values()]
            last = max(acked) if acked else t0
            if envoy_before:
                envoy_latencies.append(max(await _envoys_applied(self.envoys, prefix, envoy_before, t0_wall,
                                                                 deadline)))
            latencies.append(last - t0)
            for rep in replies:
                for t, c in rep["types"].items():
                    if t != short:
                        other_types[t] = other_types.get(t, 0) + c
        cpu = cp.cpu() - cpu_before
        clients_cpu = sum(cpu_seconds(w.pid) for w in self.workers) - clients_cpu_before
        await asyncio.sleep(QUIET_S)
        pushes_after = stats.counters_by_type(await cp.get("/metrics"), "pilot_xds_pushes")
        sent = {t: int(pushes_after.get(t, 0) - pushes_before.get(t, 0)) for t in pushes_after}
        out = _summary(latencies)
        out.update({"latencies_s": latencies, "cpu_s": cpu, "cpu_per_push_s": cpu / max(1, n),
                    "clients_cpu_per_push_s": clients_cpu / max(1, n),
                    "responses_sent_by_type": sent, "other_types_received": other_types})
        if envoy_latencies:
            out["envoy"] = _summary(envoy_latencies)
        log(f"{n} {short} changes: p50 {out['p50_s'] * 1000:.1f} ms, p99 {out['p99_s'] * 1000:.1f} ms, "
            f"{out['cpu_per_push_s'] * 1000:.0f} ms CPU per push; responses sent {sent}")
        return out


def _case_name(cfg: CaseConfig) -> str:
    return f"{cfg.services}-{cfg.proxies}-{'on' if cfg.sidecar_scoping else 'off'}"


def _synced(row: dict) -> bool:
    types = row.get("types", {})
    return all(t in types and types[t]["acked"] and types[t]["acked"] == types[t]["sent"]
               for t in ("CDS", "EDS", "LDS", "RDS"))


async def run_case(cfg: CaseConfig, keep_dir: str = "") -> dict[str, Any]:
    """Run one case in a temporary directory (kept with its logs when keep_dir is given).

    SIGTERM and SIGINT cancel the case, so its cleanup (control plane, workers, Envoys) runs; the
    cancellation then propagates (asyncio.CancelledError)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        if keep_dir:
            os.makedirs(keep_dir, exist_ok=True)
            return await Case(cfg, keep_dir).run()
        with tempfile.TemporaryDirectory(prefix="bench-cp-") as d:
            return await Case(cfg, d).run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
