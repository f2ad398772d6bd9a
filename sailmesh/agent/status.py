"""The agent's status port (Istio's 15020): merged Prometheus metrics, readiness, and POST /quitquitquit."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from sailmesh.agent.health import READY_PATH, Readiness
from sailmesh.agent.probes import APP_HEALTH_ROUTE
from sailmesh.errors import AgentError
from sailmesh.metrics import Registry

log = logging.getLogger(__name__)

METRICS_PATH = "/stats/prometheus"


class StatusServer:
    """Serves Envoy's, the app's (optional) and the agent's own metrics as one Prometheus page."""

    def __init__(
        self,
        readiness: Readiness,
        host: str,
        port: int,
        envoy_metrics_url: str,
        quit_event: asyncio.Event,
        restarts: Callable[[], int],
        app_metrics_url: str = "",
        app_health: Callable[[web.Request], Awaitable[web.Response]] | None = None,
        envoy_page: Callable[[str], str] | None = None,
    ) -> None:
        if not host.startswith("127."):
            raise AgentError(f"the status endpoint binds loopback only, not {host!r}")
        self.readiness = readiness
        self.host = host
        self.port = port
        self.envoy_metrics_url = envoy_metrics_url
        self.app_metrics_url = app_metrics_url
        self.quit_event = quit_event
        self.app_health = app_health  # the app's rewritten probes (agent/probes.py), when it has any
        # takes Istio's metrics kept by Envoy off its page before the agent's own are rendered (agent/istio_stats.py)
        self.envoy_page = envoy_page
        # The agent's own metrics, after Envoy's and the app's on the merged page.
        self.metrics = Registry()
        m = self.metrics
        restarts_total = m.counter("sailmesh_agent_envoy_restarts_total", "Times the agent restarted a crashed Envoy.")
        restarts_total.set_function(restarts)
        self._ready_gauge = m.gauge("sailmesh_agent_ready", "1 when the readiness probe would answer 200.")
        self._envoy_up = m.gauge("sailmesh_agent_scrape_envoy_up",
                                 "1 when Envoy's metrics could be read for this page.")
        m.gauge("sailmesh_agent_start_time_seconds", "When the agent started (Unix time).").set(round(time.time(), 3))
        self._app_up = (
            m.gauge("sailmesh_agent_scrape_app_up", "1 when the app's metrics could be read for this page.")
            if app_metrics_url else None
        )
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def _scrape(self, url: str) -> str | None:
        assert self._session is not None
        try:
            async with self._session.get(url) as resp:
                if resp.status != 200:
                    return None
                return await resp.text()
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None

    async def _metrics(self, _request: web.Request) -> web.Response:
        envoy_text, app_text, reason = await asyncio.gather(
            self._scrape(self.envoy_metrics_url),
            self._scrape(self.app_metrics_url) if self.app_metrics_url else asyncio.sleep(0, None),
            self.readiness.check(),
        )
        if envoy_text is not None and self.envoy_page is not None:
            envoy_text = self.envoy_page(envoy_text)
        parts = [p.rstrip("\n") + "\n" for p in (envoy_text, app_text) if p]
        self._ready_gauge.set(int(reason is None))
        self._envoy_up.set(int(envoy_text is not None))
        if self._app_up is not None:
            self._app_up.set(int(app_text is not None))
        parts.append(self.metrics.render())
        return web.Response(text="".join(parts), content_type="text/plain", charset="utf-8")

    async def _ready(self, _request: web.Request) -> web.Response:
        reason = await self.readiness.check()
        return web.Response(status=200) if reason is None else web.Response(status=503, text=reason + "\n")

    async def _quit(self, _request: web.Request) -> web.Response:
        log.info("POST /quitquitquit: shutting down")
        self.quit_event.set()
        return web.Response(text="OK\n")

    async def start(self) -> None:
        """Bind and serve."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3))
        app = web.Application()
        app.router.add_get(METRICS_PATH, self._metrics)
        app.router.add_get(READY_PATH, self._ready)
        app.router.add_post("/quitquitquit", self._quit)
        if self.app_health is not None:
            app.router.add_get(APP_HEALTH_ROUTE, self.app_health)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.host, self.port, reuse_address=True).start()
        except OSError as e:
            await self.stop()
            raise AgentError(f"cannot bind status endpoint {self.host}:{self.port}: {e}") from e

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None
