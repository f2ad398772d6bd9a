"""The benchmark set-ups and the pluggable "sidecar pair" factory interface.

A set-up is started once, given the backend's address, and returns a `SetupHandle`: the URL (and Host
header) the load generators use, the PIDs of the Envoys to measure, and a cleanup.
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.dataplane.errors import BenchError
from bench.static_envoy import DIE_WITH_HARNESS, MtlsSide, start_static_pair
from sailmesh.processes import free_port
from sailmesh.testing.waiting import wait_for

ROOT = pathlib.Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Backend:
    """The backend every set-up forwards to (a separate, non-Envoy process)."""

    host: str
    port: int
    pid: int

    @property
    def address(self) -> str:
        """host:port."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class SetupContext:
    """What a factory may use: a scratch directory for configs/logs and the Envoy worker-thread count."""

    workdir: pathlib.Path
    envoy_concurrency: int = 1


@dataclass
class SetupHandle:
    """A running set-up.

    url: what the client requests (e.g. http://127.0.0.1:41000/ or a sidecar's outbound listener).
    host_header: the Host/authority to send (e.g. "bench-backend:8080" for a mesh service); None = url's.
    envoy_pids: name -> pid of each Envoy whose CPU and peak RSS are measured (empty for direct).
    agent_pids: sidecar name (a key of envoy_pids) -> pid of its agent, whose CPU counts with the Envoy's
      (the agent aggregates Istio's standard metrics from the access logs).
    cleanup: stops everything the factory started (called once, also on failure).
    transport: how the two proxies talk (printed with the results).
    """

    url: str
    envoy_pids: dict[str, int]
    cleanup: Callable[[], None]
    host_header: str | None = None
    transport: str = "plaintext HTTP/1.1"
    notes: list[str] = field(default_factory=list)
    agent_pids: dict[str, int] = field(default_factory=dict)


PairFactory = Callable[[Backend, SetupContext], SetupHandle]
"""Given the backend, start a client-side proxy and a server-side proxy in front of it."""


def start_backend(host: str = "127.0.0.1") -> tuple[subprocess.Popen[bytes], Backend]:
    """Start `python -m bench.backend` as its own process and wait until it accepts connections."""
    port = free_port(host)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    proc = subprocess.Popen([sys.executable, "-m", "bench.backend", "--host", host, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env, cwd=ROOT,
                            preexec_fn=DIE_WITH_HARNESS)

    def accepting() -> bool:
        if proc.poll() is not None:
            raise BenchError(f"backend exited with {proc.returncode}")
        with socket.create_connection((host, port), timeout=0.5):
            return True

    try:
        wait_for(accepting, timeout=15, what="benchmark backend")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, Backend(host, port, proc.pid)


def direct(backend: Backend, ctx: SetupContext) -> SetupHandle:
    """(1) client -> backend."""
    return SetupHandle(url=f"http://{backend.address}/", envoy_pids={}, cleanup=lambda: None, transport="none")


def static_pair(backend: Backend, ctx: SetupContext) -> SetupHandle:
    """(2) client -> Envoy A -> Envoy B -> backend, minimal static config (the physical floor)."""
    pair = start_static_pair(backend.port, ctx.workdir / "static", ctx.envoy_concurrency, backend.host)
    return SetupHandle(
        url=f"http://{backend.host}:{pair.a.listen_port}/",
        envoy_pids={"envoy-a": pair.a.pid, "envoy-b": pair.b.pid},
        cleanup=pair.stop,
    )


def static_mtls_sides() -> tuple[MtlsSide, MtlsSide]:
    """(2m)'s two TLS ends, A's client side and B's server side, with certificates from the CA the ablation's
    static copies use (bench/dataplane/sidecar_static.py)."""
    from bench.dataplane.sidecar_static import static_secrets
    from sailmesh.api.identity import Identity

    client, server = Identity("cluster.local", "default", "bench-a"), Identity("cluster.local", "default", "bench-b")
    return (MtlsSide(server=False, secrets=static_secrets(client), peer_uri=server.uri),
            MtlsSide(server=True, secrets=static_secrets(server), peer_uri=client.uri))


def static_mtls_pair(backend: Backend, ctx: SetupContext) -> SetupHandle:
    """(2m) the static pair with a mutual-TLS hop between A and B, TLS set as the sidecars set it: the floor for
    the mesh pair's mTLS (issue 9's "mTLS pair against the static mTLS Envoy pair")."""
    pair = start_static_pair(backend.port, ctx.workdir / "static-mtls", ctx.envoy_concurrency, backend.host,
                             static_mtls_sides())
    return SetupHandle(
        url=f"http://{backend.host}:{pair.a.listen_port}/",
        envoy_pids={"envoy-a": pair.a.pid, "envoy-b": pair.b.pid},
        cleanup=pair.stop,
        transport="mutual TLS 1.3 (ECDSA P-256 SPIFFE certificates, Istio's ALPN), HTTP/1.1",
    )
