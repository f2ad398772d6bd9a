"""Where the sailmesh sidecar pair plugs into the benchmark: set-ups (3) and (4).

`mesh_pair_factory(features)` returns a `PairFactory` that runs a real embedded mesh
(`bench/dataplane/mesh_runner.py`: `sailmesh up` plus the agents' Envoy concurrency) from a directory
written by `bench/dataplane/mesh_config.py`: the Service `bench-backend` (8080), a server LocalWorkload
whose app is `python -m bench.backend` behind its sidecar, and an idle client LocalWorkload whose
sidecar's HTTP-proxy listener (`<client pod IP>:15001`) the load generator talks to with
`Host: bench-backend:8080`. Path: wrk -> client sidecar Envoy -> server sidecar Envoy -> backend.
"demo" adds what exists of the demo's features (a VirtualService with retries and a timeout, a
DestinationRule subset with connection-pool settings) and says in `notes` what it leaves out.
"nometrics" (set-up (3n)) adds a mesh-wide Telemetry that turns Istio's standard metrics off: the same
mTLS pair without the metrics' stats logger (the peer-metadata exchange stays, as in Istio), so the mTLS
pair's cost can be read apart from the metrics'. "notelemetry" (set-up (3t)) also runs the control plane with
Istio's PILOT_ENABLE_METADATA_EXCHANGE=false: none of Istio's telemetry is left on the request path.

The mesh runs its own copy of the backend (the harness's Backend idles for (3)/(4)); the two sidecars'
Envoys and agents are measured (the agent counts Istio's standard metrics from its Envoy's access logs, so
its CPU is part of a sidecar's cost); the control plane and the idle ingress gateway are not.

A factory can also be plugged from outside with `--mesh-factory module:function`, where
function(features) -> PairFactory | None.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.dataplane import mesh_config
from bench.dataplane.errors import BenchError
from bench.dataplane.mesh_config import Features
from bench.dataplane.setups import ROOT, Backend, PairFactory, SetupContext, SetupHandle
from bench.static_envoy import DIE_WITH_HARNESS
from sailmesh.testing.waiting import random_loopback_block, wait_for

FactoryProvider = Callable[[Features], "PairFactory | None"]

DEFAULT_TRANSPORT_NOTE = "Istio mTLS between the sidecars (auto mTLS, certificates over SDS, TLS 1.3)"
READY_LINE = "are ready"  # LocalMesh: "all N workloads and the ingress gateway are ready"
OUTBOUND_PORT = 15001
ADMIN_PORT = 15000
START_TIMEOUT = 120.0  # the machine may be busy: control plane + gateway + 2 agents + 2 Envoys + 2 apps
STOP_TIMEOUT = 30.0

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class MeshPair:
    """One running benchmark mesh: the runner process and where its two sidecars are."""

    proc: subprocess.Popen[bytes]
    state_dir: Path
    log: Path
    client_ip: str
    server_ip: str
    client_envoy: int
    server_envoy: int
    server_app: int
    client_agent: int = 0
    server_agent: int = 0

    @property
    def url(self) -> str:
        """The client sidecar's HTTP-proxy listener."""
        return f"http://{self.client_ip}:{OUTBOUND_PORT}/"

    def admin(self, ip: str) -> str:
        """A sidecar Envoy's admin URL (loopback, the pod IP)."""
        return f"http://{ip}:{ADMIN_PORT}"

    def stop(self) -> None:
        """SIGTERM the runner (sidecars drain, then apps, gateway, control plane); kill what is left."""
        pids = _recorded_pids(self.state_dir)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(STOP_TIMEOUT)
        clean = self.proc.returncode == 0
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if not clean:  # the runner did not stop its children: each runs in its own session (pgid = pid)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)


def _recorded_pids(state_dir: Path) -> list[int]:
    try:
        doc = json.loads((state_dir / "mesh.json").read_text())
        return [int(p["pid"]) for p in doc.get("processes", [])]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _get(url: str, host: str | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url)
    if host:
        req.add_header("Host", host)
    with _NO_PROXY.open(req, timeout=timeout) as r:
        return r.status, r.read()


def _address(state: dict[str, Any], name: str) -> tuple[str, int]:
    for p in state.get("processes", []):
        if p.get("name") == name:
            return str(p["address"]), int(p["pid"])
    raise BenchError(f"the mesh state lists no process {name!r}")


def _envoy_pid(state_dir: Path, instance: str) -> int:
    path = state_dir / "proxies" / f"{instance}.{mesh_config.NAMESPACE}" / "envoy.pid"
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError) as e:
        raise BenchError(f"no Envoy pid in {path}: {e}") from e
    cmd = _read(Path(f"/proc/{pid}/cmdline")).split("\0")
    if not cmd or "envoy" not in os.path.basename(cmd[0]):
        raise BenchError(f"pid {pid} from {path} is not an Envoy: {cmd[:1]}")
    return pid


def _routes_service(admin: str) -> bool:
    """The client sidecar's outbound routes hold a virtual host answering `bench-backend:8080`."""
    _, body = _get(admin + "/config_dump?resource=dynamic_route_configs")
    return f'"{mesh_config.HOST_HEADER}"' in body.decode()


def _metrics_off(admin: str, no_exchange: bool = False) -> bool:
    """The sidecar's listeners (present once its routes are) keep none of Istio's metrics: no stats access
    logger (and, `no_exchange`, no metadata-exchange filter either)."""
    from sailmesh.telemetry.standard import MX_ADD_FILTER
    from sailmesh.telemetry.stats_logger import STATS_LOGGER

    _, body = _get(admin + "/config_dump?resource=dynamic_listeners")
    text = body.decode()
    return STATS_LOGGER not in text and not (no_exchange and MX_ADD_FILTER in text)


def _demo_applied(admin: str) -> bool:
    """The client sidecar routes to the DestinationRule subset with the VirtualService's retries."""
    _, body = _get(admin + "/config_dump?resource=dynamic_route_configs")
    text = body.decode()
    return mesh_config.SUBSET_CLUSTER in text and '"retry_on": "5xx"' in text and '"num_retries": 3' in text


def start_mesh_pair(features: Features, ctx: SetupContext) -> MeshPair:
    """Write the mesh directory, run it and wait until the client sidecar routes bench-backend:8080."""
    work = ctx.workdir / f"mesh-{features}"
    config, state = work / "config", work / "state"
    mesh_config.write(config, features)
    state.mkdir(parents=True, exist_ok=True)
    block = random_loopback_block()
    log = work / "mesh.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    if features == "notelemetry":
        env.update(mesh_config.NO_MX_ENV)
    argv = [sys.executable, "-m", "bench.dataplane.mesh_runner", "-f", str(config), "--state-dir", str(state),
            # ports 0: the control plane binds free ones itself (ports picked here and bound later could collide
            # with the ones it binds at 0: a run failed so, its HTTP API on the port its xDS had taken)
            "--base-ip", f"{block}.2", "--gateway-ip", f"{block}.1", "--xds-port", "0", "--http-port", "0",
            "--concurrency", str(ctx.envoy_concurrency)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=ROOT, preexec_fn=DIE_WITH_HARNESS)
    pair: MeshPair | None = None

    def ready() -> bool:
        if proc.poll() is not None:
            raise BenchError(f"the mesh exited with {proc.returncode}:\n{_read(log)[-2000:]}")
        return READY_LINE in _read(log)

    try:
        wait_for(ready, timeout=START_TIMEOUT, interval=0.1, what=f"the benchmark mesh ({log})")
        doc = json.loads((state / "mesh.json").read_text())
        client_ip, client_agent = _address(doc, f"{mesh_config.CLIENT}-0.{mesh_config.NAMESPACE}.sidecar")
        server_ip, server_agent = _address(doc, f"{mesh_config.SERVER}-0.{mesh_config.NAMESPACE}.sidecar")
        _, server_app = _address(doc, f"{mesh_config.SERVER}-0.{mesh_config.NAMESPACE}")
        pair = MeshPair(proc, state, log, client_ip, server_ip,
                        client_envoy=_envoy_pid(state, f"{mesh_config.CLIENT}-0"),
                        server_envoy=_envoy_pid(state, f"{mesh_config.SERVER}-0"), server_app=server_app,
                        client_agent=client_agent, server_agent=server_agent)
        admin = pair.admin(client_ip)
        wait_for(lambda: _routes_service(admin), timeout=30, interval=0.1, what="client sidecar routes bench-backend")
        if features == "demo":
            wait_for(lambda: _demo_applied(admin), timeout=30, interval=0.1, what="retries and subset in the routes")
        if features in ("nometrics", "notelemetry"):
            for ip in (client_ip, server_ip):
                wait_for(lambda ip=ip: _metrics_off(pair.admin(ip), features == "notelemetry"),  # type: ignore[misc]
                         timeout=30, interval=0.1, what=f"no stats logger in {ip}'s listeners")
        wait_for(lambda: _get(pair.url, mesh_config.HOST_HEADER) == (200, _expected_body()), timeout=30,
                 interval=0.1, what="a request through both sidecars")
    except BaseException:
        (pair or MeshPair(proc, state, log, "", "", 0, 0, 0)).stop()
        raise
    return pair


def _expected_body() -> bytes:
    from bench.backend import build_response

    return build_response().split(b"\r\n\r\n", 1)[1]


def _notes(features: Features, pair: MeshPair, ctx: SetupContext) -> list[str]:
    notes = [
        f"sailmesh embedded mesh: client sidecar {pair.client_ip}:{OUTBOUND_PORT} (HTTP-proxy listener, "
        f"Host {mesh_config.HOST_HEADER}) -> server sidecar {pair.server_ip}:{mesh_config.SERVICE_PORT} -> "
        f"bench.backend; Envoy --concurrency {ctx.envoy_concurrency} (as the static pair)",
        f"the mesh runs its own bench.backend (pid {pair.server_app}); the 'backend' CPU figure is the "
        "harness's backend, idle for this set-up",
        f"transport: {DEFAULT_TRANSPORT_NOTE}",
    ]
    if features == "demo":
        r = mesh_config.DEMO_RETRIES
        notes.append(f"demo features on: VirtualService retries (attempts {r['attempts']}, retryOn {r['retryOn']}, "
                     f"perTryTimeout {r['perTryTimeout']}), timeout {mesh_config.DEMO_TIMEOUT}; DestinationRule "
                     f"subset {mesh_config.SUBSET} with connectionPool limits; Envoy stats and Istio's standard "
                     "metrics (always on, in (3) too)")
        notes += [f"not in (4): {n}" for n in mesh_config.DEMO_LEFT_OUT]
    if features in ("nometrics", "notelemetry"):
        notes.append(f"Istio's standard metrics off: mesh-wide Telemetry istio-system/"
                     f"{mesh_config.NO_METRICS_TELEMETRY} (prometheus, ALL_METRICS disabled); the peer-metadata "
                     "exchange stays, as in Istio" if features == "nometrics" else "exchange off too: the control "
                     "plane runs with Istio's PILOT_ENABLE_METADATA_EXCHANGE=false")
    return notes


def mesh_pair_factory(features: Features) -> PairFactory | None:
    """The sailmesh sidecar pair for `features` ("default", "demo", "nometrics" or "notelemetry")."""

    def factory(backend: Backend, ctx: SetupContext) -> SetupHandle:
        pair = start_mesh_pair(features, ctx)
        return SetupHandle(
            url=pair.url,
            host_header=mesh_config.HOST_HEADER,
            envoy_pids={"client-sidecar": pair.client_envoy, "server-sidecar": pair.server_envoy},
            agent_pids={"client-sidecar": pair.client_agent, "server-sidecar": pair.server_agent},
            cleanup=pair.stop,
            transport=DEFAULT_TRANSPORT_NOTE,
            notes=_notes(features, pair, ctx),
        )

    return factory


def load_provider(spec: str) -> FactoryProvider:
    """Import `module:function` given on the command line."""
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise BenchError(f"--mesh-factory wants module:function, got {spec!r}")
    fn = getattr(importlib.import_module(mod_name), attr, None)
    if not callable(fn):
        raise BenchError(f"{spec} is not a callable")
    return fn  # type: ignore[no-any-return]
