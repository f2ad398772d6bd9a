"""`python -m bench.dataplane.instructions`: Envoy instructions per request of each sidecar variant, under callgrind.

The CPU-time ablation (bench/dataplane/ablation.py) cannot separate effects of a few µs per request on a machine
shared with other jobs: CPU seconds per request move 10-15 % between rounds with the load. Instructions executed do
not. The same static copies of the real sidecar pair (bench/dataplane/sidecar_static.py, variants from
sidecar_cuts.py), and the minimal and mTLS static pairs, run under valgrind's callgrind (not counting during
start-up); after a warm-up (pooled connections and their TLS handshakes made, every stat created), both Envoys'
counters are read (`callgrind_control -e`), a fixed number of requests is sent (`hey -n`), the counters are read
again, and the same wall time with no request is counted next and subtracted (timers, the stats flush). What
remains is the user-space instructions of the two Envoys per request, the same within about 1 % from run to run
and from machine load. It does not see the kernel's share (syscalls, loopback TCP: the same per request in the
mesh pair and the static pair, strace -c says), cache misses or time: read it next to the CPU-time ablation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.dataplane import mesh_config, metrics_cuts, sidecar_cuts, sidecar_static, wasm_variant
from bench.dataplane.ablation import STATIC_MTLS, Captured, als_receivers, capture, start_copy, write_json
from bench.dataplane.errors import BenchError
from bench.dataplane.setups import ROOT, start_backend, static_mtls_sides
from bench.static_envoy import DIE_WITH_HARNESS, EnvoyProcess, proxy_config
from sailmesh.processes import free_port

MINIMAL = "minimal static pair (set-up 2)"
Config = dict[str, Any]


@dataclass
class Grinder:
    """One Envoy under callgrind."""

    envoy: EnvoyProcess

    def instrument(self) -> None:
        """Start counting (callgrind_control -i on)."""
        subprocess.run(["callgrind_control", "-i", "on", str(self.envoy.pid)], capture_output=True, timeout=120,
                       check=True)

    def total(self) -> int:
        """Instructions executed so far, all threads (callgrind_control -e: live counters, no dump file)."""
        res = subprocess.run(["callgrind_control", "-e", str(self.envoy.pid)], capture_output=True, text=True,
                             timeout=120, check=True)
        counts = [int(line.split()[2].replace(",", "")) for line in res.stdout.splitlines()
                  if line.strip().startswith("Th ")]
        if not counts:
            raise BenchError(f"no totals from callgrind_control: {res.stdout[-500:]}")
        return sum(counts)

    def stop(self) -> None:
        self.envoy.stop()


def grind(cfg: Config, admin: str, workdir: pathlib.Path, name: str) -> Grinder:
    """Start one Envoy under callgrind, not counting yet (start-up is faster so), and wait until it is ready."""
    wrapper = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={workdir}/cg-{name}"]
    return Grinder(start_copy(cfg, admin.rsplit(":", 1)[0], workdir, name, 1, wrapper, admin, timeout=240))


def hey(url: str, host: str | None, n: int, conns: int, check: bool = True) -> float:
    """Send exactly n requests over `conns` keep-alive connections; the wall seconds it took."""
    cmd = ["hey", "-n", str(n), "-c", str(conns), "-t", "60", "-disable-compression"]
    if host:
        cmd += ["-host", host]
    t0 = time.monotonic()
    res = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=1800)
    took = time.monotonic() - t0
    if check and f"[200]\t{n} responses" not in res.stdout:
        raise BenchError(f"not {n} x 200 from {url}: {res.stdout[-800:]}")
    return took


def per_request(envoys: list[Grinder], url: str, host: str | None, n: int, conns: int) -> dict[str, float]:
    """Instructions per request of each Envoy: (load - the same wall time idle) / n."""
    for g in envoys:
        g.instrument()
    # warm-up: pooled upstream connections and their TLS handshakes (slow under callgrind: the first may time out),
    # the stats of every label value created
    hey(url, host, conns * 4, conns, check=False)
    hey(url, host, max(conns * 10, n // 10 // conns * conns), conns)
    t0 = [g.total() for g in envoys]
    took = hey(url, host, n, conns)
    t1 = [g.total() for g in envoys]
    time.sleep(took)
    t2 = [g.total() for g in envoys]
    loaded = [b - a for a, b in zip(t0, t1, strict=True)]
    idle = [b - a for a, b in zip(t1, t2, strict=True)]
    each = [(lo - id_) / n for lo, id_ in zip(loaded, idle, strict=True)]
    return {"client": each[0], "server": each[1], "pair": sum(each), "idle_per_s": sum(idle) / took,
            "seconds": took}


def static_pairs(backend_port: int, names: list[str]) -> list[tuple[str, Config, Config, str, str]]:
    """The minimal static pair (and the static mTLS pair) as (name, A, B, A's admin, B's admin)."""
    out = []
    for name in names:
        a_port, b_port, a_admin, b_admin = (free_port("127.0.0.1") for _ in range(4))
        tls = static_mtls_sides() if name == STATIC_MTLS else (None, None)
        b = proxy_config(b_port, backend_port, b_admin, tls=tls[1])
        a = proxy_config(a_port, b_port, a_admin, tls=tls[0])
        out.append((name, a, b, f"127.0.0.1:{a_admin}", f"127.0.0.1:{b_admin}"))
    return out


def captured(workdir: pathlib.Path, keep: pathlib.Path | None) -> Captured:
    """The mesh pair's config: captured from a running mesh, or read from `keep` (written there when absent)."""
    if keep is not None and keep.exists():
        return Captured(**json.loads(keep.read_text()))
    cap = capture(workdir, 1, "default")
    if keep is not None:
        keep.write_text(json.dumps(dataclasses.asdict(cap)))
    return cap


def run(requests: int, conns: int, variants: list[tuple[str, Callable[[Config], None] | None]],
        statics: list[str], keep: pathlib.Path | None = None,
        stats_flush: float | None = None) -> dict[str, dict[str, float]]:
    """Every variant once (instruction counts do not need rounds), then the static pairs. `stats_flush` (seconds)
    replaces the copies' stats flush interval (the agent's 1 s): the flush is most of what the subtracted idle time
    runs, and its share moves between passes by more than the smaller effects."""
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="sailmesh-instructions-"))
    cap = captured(workdir, keep)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    local_proc, local_backend = start_backend()
    backend = subprocess.Popen([sys.executable, "-m", "bench.backend", "--host", cap.server_ip, "--port",
                                str(cap.app_port)], stdout=subprocess.DEVNULL, env=env, cwd=ROOT,
                               preexec_fn=DIE_WITH_HARNESS)
    clients = sidecar_static.alternative_configs(sidecar_static.to_static(cap.client), variants)
    servers = sidecar_static.alternative_configs(sidecar_static.to_static(cap.server), variants)
    if stats_flush is not None:
        for _, cfg in [*clients, *servers]:
            cfg["stats_flush_interval"] = f"{stats_flush:g}s"
    stop_als, _ = als_receivers([clients[0][1], servers[0][1]], env)
    results: dict[str, dict[str, float]] = {}
    try:
        for (name, cli_cfg), (_, srv_cfg) in zip(clients, servers, strict=True):
            print(f"... {name}", file=sys.stderr, flush=True)
            results[name] = _measure_pair(workdir, cli_cfg, srv_cfg, f"{cap.client_ip}:15000",
                                          f"{cap.server_ip}:15000", f"http://{cap.client_ip}:15001/",
                                          mesh_config.HOST_HEADER, requests, conns)
            print(f"    {results[name]}", file=sys.stderr, flush=True)
        for name, a, b, a_admin, b_admin in static_pairs(local_backend.port, statics):
            print(f"... {name}", file=sys.stderr, flush=True)
            port = a["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]  # type: ignore[index]
            results[name] = _measure_pair(workdir, a, b, a_admin, b_admin, f"http://127.0.0.1:{port}/", None,
                                          requests, conns)
            print(f"    {results[name]}", file=sys.stderr, flush=True)
    finally:
        stop_als()
        for proc in (backend, local_proc):
            proc.terminate()
            proc.wait(5)
        if results and len(results) == len(clients) + len(statics):
            shutil.rmtree(workdir, ignore_errors=True)
    return results


def _measure_pair(workdir: pathlib.Path, cli_cfg: Config, srv_cfg: Config, cli_admin: str, srv_admin: str,
                  url: str, host: str | None, requests: int, conns: int) -> dict[str, float]:
    srv = grind(srv_cfg, srv_admin, workdir, "server")
    try:
        cli = grind(cli_cfg, cli_admin, workdir, "client")
        try:
            return per_request([cli, srv], url, host, requests, conns)
        finally:
            cli.stop()
    finally:
        srv.stop()


FEATURES: dict[str, list[tuple[str, Callable[[Config], None] | None]]] = {
    "cuts": sidecar_cuts.CUT_VARIANTS,
    "metrics": sidecar_static.METRICS_VARIANTS,
    "mx": metrics_cuts.MX_VARIANTS,
    "tls": sidecar_static.TLS_VARIANTS,
    "wasm": wasm_variant.WASM_VARIANTS,
}


def main(argv: list[str] | None = None) -> int:
    """Print one line per variant: instructions per request of the client and server Envoys and the pair."""
    p = argparse.ArgumentParser(prog="python -m bench.dataplane.instructions", description=__doc__)
    p.add_argument("--requests", type=int, default=1000,
                   help="requests measured per variant (after a warm-up); a multiple of --connections (hey's rule)")
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--features", choices=sorted(FEATURES), default="cuts")
    p.add_argument("--only", action="append", default=[], metavar="PREFIX",
                   help="only the variants whose names start with PREFIX (repeatable; the first, the copy, always)")
    p.add_argument("--no-static", action="store_true", help="skip the minimal and mTLS static pairs")
    p.add_argument("--capture", type=pathlib.Path, metavar="FILE",
                   help="reuse the mesh pair's config dumps from FILE (captured and written there when absent)")
    p.add_argument("--stats-flush", type=float, metavar="SECONDS",
                   help="the copies' stats flush interval instead of the agent's 1 s (less idle work to subtract)")
    p.add_argument("--json", type=pathlib.Path)
    a = p.parse_args(argv)
    if a.requests % a.connections:
        p.error("--requests must be a multiple of --connections (hey sends n / c per connection)")
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("needs valgrind (callgrind) on PATH")
    variants = FEATURES[a.features]
    variants = [v for i, v in enumerate(variants) if i == 0 or not a.only or v[0].startswith(tuple(a.only))]
    res = run(a.requests, a.connections, variants, [] if a.no_static else [MINIMAL, STATIC_MTLS],
              a.capture, a.stats_flush)
    base = next(iter(res.values()))["pair"]
    print(f"{'variant':52} {'client':>9} {'server':>9} {'pair':>9} {'vs copy':>8}  (instructions per request)")
    for name, r in res.items():
        print(f"{name:52} {r['client']:9.0f} {r['server']:9.0f} {r['pair']:9.0f} {r['pair'] - base:+8.0f}")
    if a.json:
        write_json(a.json, a, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
