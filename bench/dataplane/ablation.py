"""`python -m bench.dataplane.ablation`: which sidecar features cost the sidecar pair CPU and latency.

Starts the real sailmesh pair (set-up (3)), dumps both sidecars' config (`/config_dump?include_eds`),
stops the mesh, then runs static copies of that config on the same addresses (bench/dataplane/
sidecar_static.py) with sidecar features stripped one group at a time, next to the minimal static pair
of set-up (2), all in front of the same backend. Each variant is measured at a fixed rate with paced
wrk in interleaved rounds: Envoy CPU per request (both Envoys) and latency percentiles.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bench.dataplane import loadgen, mesh_config, procstat, sidecar_cuts, sidecar_static, wasm_variant
from bench.dataplane.mesh import mesh_pair_factory
from bench.dataplane.mesh_config import Features
from bench.dataplane.setups import ROOT, Backend, SetupContext, start_backend, static_mtls_sides
from bench.static_envoy import DIE_WITH_HARNESS, EnvoyProcess, start_static_pair
from sailmesh.processes import envoy_binary
from sailmesh.testing.waiting import wait_for

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
STATIC_MTLS = "static mTLS pair (set-up 2m)"


@dataclass
class Captured:
    """What the ablation needs from the running mesh pair."""

    client_ip: str
    server_ip: str
    app_port: int
    client: dict[str, Any]
    server: dict[str, Any]


def capture(workdir: pathlib.Path, concurrency: int, features: Features = "default") -> Captured:
    """Run set-up (3) (or (4) for "demo"), dump both sidecars' config with endpoints, stop it."""
    factory = mesh_pair_factory(features)
    assert factory is not None
    handle = factory(Backend("127.0.0.1", 1, os.getpid()), SetupContext(workdir, concurrency))
    try:
        state = json.loads((workdir / f"mesh-{features}" / "state" / "mesh.json").read_text())
        ips = {p["name"]: p["address"] for p in state["processes"]}
        client_ip = ips[f"{mesh_config.CLIENT}-0.default.sidecar"]
        server_ip = ips[f"{mesh_config.SERVER}-0.default.sidecar"]
        dumps = [json.loads(_NO_PROXY.open(f"http://{ip}:15000/config_dump?include_eds", timeout=10).read())
                 for ip in (client_ip, server_ip)]
    finally:
        handle.cleanup()
    inbound = [c for c in sidecar_static.to_static(dumps[1])["static_resources"]["clusters"]
               if c["name"].startswith("inbound|")]
    addr = inbound[0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    return Captured(client_ip, server_ip, int(addr["port_value"]), dumps[0], dumps[1])


def start_copy(cfg: dict[str, Any], admin_ip: str, workdir: pathlib.Path, name: str,
               concurrency: int, wrapper: Sequence[str] = (), admin: str | None = None,
               timeout: float = 20) -> EnvoyProcess:
    """Start one static copy (under `wrapper`, e.g. valgrind, if given) and wait until its admin (on the pod IP,
    port 15000 unless `admin` says host:port) says it is ready."""
    path = workdir / f"{name}.json"
    path.write_text(json.dumps(cfg))
    log = workdir / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*wrapper, envoy_binary(), "-c", str(path), "--disable-hot-restart", "--concurrency",
                                 str(concurrency), "--log-level", "warning", "--local-address-ip-version", "v4"],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=DIE_WITH_HARNESS)
    env = EnvoyProcess(proc, 0, 15000, log)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {log.read_text()[-1500:]}")
        return _NO_PROXY.open(f"http://{admin or admin_ip + ':15000'}/ready", timeout=2).status == 200

    try:
        wait_for(ready, timeout=timeout, what=f"{name} ready")
    except BaseException:
        env.stop()
        raise
    return env


def als_receivers(configs: list[dict[str, Any]], env: dict[str, str]) -> tuple[Callable[[], None], int | None]:
    """Serve the agents' access-log sockets the static copies stream to (the agents are gone with the mesh), in a
    separate process (gRPC threads in this one would break its fork+exec of Envoys), so the Envoys do the same
    work as in the mesh; returns the stop function and the receiver's pid."""
    from sailmesh.telemetry.standard import ALS_CLUSTER

    paths = sorted({ep["endpoint"]["address"]["pipe"]["path"] for cfg in configs
                    for c in cfg["static_resources"]["clusters"] if c["name"] == ALS_CLUSTER
                    for ep in c["load_assignment"]["endpoints"][0]["lb_endpoints"]})
    if not paths:
        return (lambda: None), None
    proc = subprocess.Popen([sys.executable, "-m", "bench.telemetry_cost", "--serve", *paths], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, preexec_fn=DIE_WITH_HARNESS)
    assert proc.stdout is not None
    proc.stdout.readline()  # "serving"

    def stop() -> None:
        proc.terminate()
        proc.wait(5)

    return stop, proc.pid


def measure(url: str, host: str | None, pids: list[int], rate: float, conns: int, duration: float,
            warmup: float, receiver: int | None = None) -> dict[str, float]:
    """Fixed-rate load; CPU µs per request summed over the Envoys (and the access-log receiver's, which counts
    Istio's metrics as both agents would), latency percentiles."""
    if warmup > 0:
        loadgen.run_wrk_paced(url, rate, conns, warmup, host)
    before = sum(procstat.cpu_seconds(p) for p in pids)
    rx_before = procstat.cpu_seconds(receiver) if receiver else 0.0
    r = loadgen.run_wrk_paced(url, rate, conns, duration, host)
    cpu = sum(procstat.cpu_seconds(p) for p in pids) - before
    rx = (procstat.cpu_seconds(receiver) - rx_before) if receiver else 0.0
    if r.errors or not r.requests:
        raise RuntimeError(f"{r.errors} errors over {r.requests} requests at {url}")
    return {"cpu_us_per_req": cpu / r.requests * 1e6, "agents_cpu_us_per_req": rx / r.requests * 1e6,
            **{f"{k}_ms": v for k, v in r.percentiles_ms.items()}}


# Feature groups whose variants each change the copy alone (not cumulative).
ALTERNATIVES = {"metrics": sidecar_static.METRICS_VARIANTS, "tls": sidecar_static.TLS_VARIANTS,
                "cuts": sidecar_cuts.CUT_VARIANTS, "wasm": wasm_variant.WASM_VARIANTS}


def run(duration: float, rounds: int, rate: float, conns: int, concurrency: int, warmup: float,
        features: Features | Literal["metrics", "tls", "cuts", "wasm"] = "default", only: tuple[str, ...] = ()
        ) -> dict[str, Any]:
    """All variants, interleaved rounds; returns per-variant medians (and every round's sample)."""
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="sailmesh-ablation-"))
    cap = capture(workdir, concurrency, "demo" if features == "demo" else "default")  # metrics, tls, cuts: on (3)
    if features in ALTERNATIVES:
        make = functools.partial(sidecar_static.alternative_configs, variants=ALTERNATIVES[features])
    else:
        make = functools.partial(sidecar_static.variant_configs, variants=sidecar_static.DEMO_VARIANTS
                                 if features == "demo" else sidecar_static.VARIANTS)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    local_proc, local_backend = start_backend()  # for the minimal static pair (same code as the mesh's backend)
    backend = subprocess.Popen([sys.executable, "-m", "bench.backend", "--host", cap.server_ip, "--port",
                                str(cap.app_port)], stdout=subprocess.DEVNULL, env=env, cwd=ROOT,
                               preexec_fn=DIE_WITH_HARNESS)
    clients = make(sidecar_static.to_static(cap.client))
    servers = make(sidecar_static.to_static(cap.server))
    if only:  # --only: the variants whose names start with one of these (fewer, longer rounds on a busy machine)
        keep = [i for i, (n, _) in enumerate(clients) if n.startswith(only)]
        clients, servers = [clients[i] for i in keep], [servers[i] for i in keep]
    names = [n for n, _ in clients] + ["minimal static pair (set-up 2)"]
    if features in ("tls", "wasm"):
        names.append(STATIC_MTLS)
    samples: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    url = f"http://{cap.client_ip}:15001/"
    stop_als, rx_pid = als_receivers([clients[0][1], servers[0][1]], env)
    ok = False
    try:
        wait_for(lambda: _NO_PROXY.open(f"http://{cap.server_ip}:{cap.app_port}/", timeout=1).status == 200,
                 timeout=15, what="backend")
        for rnd in range(rounds):
            order = names[rnd % len(names):] + names[: rnd % len(names)]
            for name in order:
                print(f"... round {rnd + 1}/{rounds}: {name}", file=sys.stderr, flush=True)
                if name.startswith("minimal") or name == STATIC_MTLS:  # admin on 127.0.0.1 only
                    pair = start_static_pair(local_backend.port, workdir / "static", concurrency,
                                             mtls=static_mtls_sides() if name == STATIC_MTLS else None)
                    try:
                        samples[name].append(measure(f"http://127.0.0.1:{pair.a.listen_port}/", None,
                                                     [pair.a.pid, pair.b.pid], rate, conns, duration, warmup))
                    finally:
                        pair.stop()
                    continue
                i = [n for n, _ in clients].index(name)
                srv = start_copy(servers[i][1], cap.server_ip, workdir, f"server-{i}", concurrency)
                try:
                    cli = start_copy(clients[i][1], cap.client_ip, workdir, f"client-{i}", concurrency)
                    try:
                        samples[name].append(measure(url, mesh_config.HOST_HEADER, [cli.pid, srv.pid], rate, conns,
                                                     duration, warmup, rx_pid))
                    finally:
                        cli.stop()
                finally:
                    srv.stop()
        ok = True
    finally:
        stop_als()
        for proc in (backend, local_proc):
            proc.terminate()
            proc.wait(5)
        if ok:  # as the runner: configs and logs are kept only when something failed
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"ablation failed; Envoy configs and logs kept in {workdir}", file=sys.stderr)
    return {n: {**{k: statistics.median(s[k] for s in samples[n]) for k in samples[n][0]}, "rounds": samples[n]}
            for n in names}


def write_json(path: pathlib.Path, args: argparse.Namespace, results: dict[str, Any]) -> None:
    """The run's arguments, the load average at its end and its results, as JSON."""
    path.write_text(json.dumps({"config": vars(args), "loadavg": os.getloadavg(), "results": results}, indent=2,
                               default=str))


def main(argv: list[str] | None = None) -> int:
    """Print one line per variant: CPU µs per request (both Envoys) and p50/p90/p99 (medians over rounds)."""
    p = argparse.ArgumentParser(prog="python -m bench.dataplane.ablation", description=__doc__)
    p.add_argument("--duration", type=float, default=15.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--envoy-concurrency", type=int, default=1)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--features", choices=["default", "demo", "metrics", "tls", "cuts", "wasm"], default="default",
                   help="strip the sidecar features of set-up (3), or what set-up (4)'s demo policy adds, or "
                        "(metrics) each part of Istio's metrics alone, or (tls) the mTLS hop's alternatives "
                        "next to the static mTLS pair, or (cuts) every feature a request passes, one at a time, "
                        "or (wasm) Istio's metrics by a Wasm filter (bench/dataplane/wasm_variant.py)")
    p.add_argument("--only", action="append", default=[], metavar="PREFIX",
                   help="measure only the variants whose names start with PREFIX (repeatable; the minimal static "
                        "pair always runs)")
    p.add_argument("--json", type=pathlib.Path)
    a = p.parse_args(argv)
    res = run(a.duration, a.rounds, a.rate, a.connections, a.envoy_concurrency, a.warmup, a.features,
              tuple(a.only))
    title = "variant (alone)" if a.features in ALTERNATIVES else "variant (cumulative)"
    print(f"{title:48} {'CPU µs/req':>10} {'agents':>7} {'p50':>7} {'p90':>7} {'p99':>7}")
    for name, r in res.items():
        print(f"{name:48} {r['cpu_us_per_req']:10.1f} {r.get('agents_cpu_us_per_req', 0.0):7.1f} "
              f"{r['p50_ms']:7.3f} {r['p90_ms']:7.3f} {r['p99_ms']:7.3f}")
    if a.json:
        write_json(a.json, a, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
