"""Readiness on `<ip>:15021/healthz/ready`: 200 once Envoy is LIVE with its first xDS config, 503 otherwise."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import aiohttp
from aiohttp import web

from sailmesh.agent.admin import EnvoyAdmin
from sailmesh.errors import AgentError
from sailmesh.processes import PID_HEADER

log = logging.getLogger(__name__)

READY_PATH = "/healthz/ready"
# sailmesh's own: ready as a proxy, whatever the app's state (the platform starts the app after it, as Istio's
# holdApplicationUntilProxyStarts waits for the proxy)
PROXY_READY_PATH = "/healthz/proxy-ready"


class Readiness:
    """Istio's readiness rule: not draining, Envoy `/ready` is LIVE, and CDS and LDS were each received once."""

    def __init__(self, admin: EnvoyAdmin, require_xds: bool = True, generation: Callable[[], int] = lambda: 0,
                 app_check: Callable[[], Awaitable[str | None]] | None = None) -> None:
        self.admin = admin
        self.app_check = app_check  # the app's readiness (None: Envoy's alone), e.g. tcp_app_check
        self.require_xds = require_xds
        self.draining = False
        self._generation = generation  # changes when Envoy restarts: its counters start again at zero
        self._config_seen_in: int | None = None

    async def check(self, with_app: bool = True) -> str | None:
        """None when ready, else why not (the 503 body); with_app=False leaves the app's readiness out."""
        if self.draining:
            return "draining"
        if with_app and self.app_check is not None and (why := await self.app_check()) is not None:
            return why
        try:
            state = await self.admin.server_state()
        except AgentError:
            return "Envoy admin is not reachable (Envoy not running yet?)"
        if state != "LIVE":
            return f"Envoy server state is {state or 'unknown'}"
        if not self.require_xds:
            return None
        gen = self._generation()
        if self._config_seen_in == gen:
            return None
        try:
            s = await self.admin.xds_stats()
        except AgentError as e:
            return str(e)
        cds_ok, cds_bad = s["cluster_manager.cds.update_success"], s["cluster_manager.cds.update_rejected"]
        lds_ok, lds_bad = s["listener_manager.lds.update_success"], s["listener_manager.lds.update_rejected"]
        if cds_ok + cds_bad == 0 or lds_ok + lds_bad == 0:
            # Istio's wording, so operators recognise it.
            return (
                "config not received from XDS server (is the control plane running?): "
                f"cds updates: {cds_ok} successful, {cds_bad} rejected; "
                f"lds updates: {lds_ok} successful, {lds_bad} rejected"
            )
        self._config_seen_in = gen
        return None


def tcp_app_check(ip: str, ports: Sequence[int], timeout: float = 1.0) -> Callable[[], Awaitable[str | None]]:
    """The app is ready when each of its ports accepts a connection (what a kubelet's tcpSocket probe checks)."""

    async def check() -> str | None:
        for port in ports:
            try:
                async with asyncio.timeout(timeout):
                    _, w = await asyncio.open_connection(ip, port)
            except (TimeoutError, OSError):
                return f"app is not listening on {ip}:{port}"
            w.close()
        return None

    return check


def probe_check(ip: str, probe: Mapping[str, Any]) -> Callable[[], Awaitable[str | None]]:
    """The app's readinessProbe as Istio's agent runs a rewritten one: httpGet (ready on 200-399, as the kubelet),
    tcpSocket or grpc (grpc.health.v1 SERVING), straight to the app's port (not through Envoy). `probe`:
    platform/probes.py Probe.to_json."""
    kind, port = str(probe.get("kind", "")), int(probe.get("port", 0))
    timeout = float(probe.get("timeoutSeconds", 1.0))
    if kind == "tcpSocket":
        return tcp_app_check(ip, [port], timeout)
    if kind == "grpc":
        service = str(probe.get("service") or "")
        # lazy: gRPC's import (~0.1 CPU s) is for grpc probes only; the `sailmesh up` supervisor imports this module
        from sailmesh.agent import grpchealth

        async def grpc_check() -> str | None:
            why = await grpchealth.check(ip, port, service, timeout)
            return None if why is None else f"app readiness probe {why}"

        return grpc_check
    scheme = "https" if str(probe.get("scheme", "HTTP")).upper() == "HTTPS" else "http"
    url = f"{scheme}://{ip}:{port}{probe.get('path') or '/'}"
    headers = {str(k): str(v) for k, v in probe.get("headers") or []}

    async def check() -> str | None:
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout), trust_env=False) as s:
                async with s.get(url, headers=headers, ssl=False, allow_redirects=False) as r:
                    if 200 <= r.status < 400:
                        return None
                    return f"app readiness probe {url}: HTTP {r.status}"
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            return f"app readiness probe {url}: {str(e) or type(e).__name__}"

    return check


class HealthServer:
    """The agent's status port (Istio's 15021), loopback only."""

    def __init__(self, readiness: Readiness, host: str, port: int) -> None:
        if not host.startswith("127."):
            raise AgentError(f"the health endpoint binds loopback only, not {host!r}")
        self.readiness = readiness
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def _ready(self, request: web.Request) -> web.Response:
        reason = await self.readiness.check(with_app=request.path != PROXY_READY_PATH)
        if reason is None:
            return web.Response(status=200, text="", headers={PID_HEADER: str(os.getpid())})
        return web.Response(status=503, text=reason + "\n", headers={PID_HEADER: str(os.getpid())})

    async def start(self) -> None:
        """Bind and serve."""
        app = web.Application()
        app.router.add_get(READY_PATH, self._ready)
        app.router.add_get(PROXY_READY_PATH, self._ready)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as e:
            await self._runner.cleanup()
            raise AgentError(f"cannot bind readiness endpoint {self.host}:{self.port}: {e}") from e

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
