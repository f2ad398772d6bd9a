"""The agent's status page: Envoy's and the app's metrics, then the agent's own, in Prometheus text."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from aiohttp import web

from sailmesh.agent.status import METRICS_PATH, StatusServer
from sailmesh.processes import free_port


class _Readiness:
    def __init__(self, reason: str | None) -> None:
        self.reason = reason

    async def check(self) -> str | None:
        return self.reason


async def _page(readiness: _Readiness, envoy_url: str, app_url: str = "", restarts: int = 2) -> str:
    port = free_port()
    server = StatusServer(readiness, "127.0.0.1", port, envoy_url, asyncio.Event(),  # type: ignore[arg-type]
                          restarts=lambda: restarts, app_metrics_url=app_url)
    await server.start()
    try:
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}{METRICS_PATH}") as resp:
            assert resp.status == 200
            return await resp.text()
    finally:
        await server.stop()


async def test_agent_metrics_follow_envoys_with_their_names_and_types() -> None:
    envoy_port = free_port()
    async def envoy_stats(_request: web.Request) -> web.Response:
        return web.Response(text="# TYPE envoy_x counter\nenvoy_x 7")

    app = web.Application()
    app.router.add_get("/stats/prometheus", envoy_stats)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", envoy_port).start()
    try:
        text = await _page(_Readiness(None), f"http://127.0.0.1:{envoy_port}/stats/prometheus")
    finally:
        await runner.cleanup()
    lines = text.splitlines()
    assert lines[:2] == ["# TYPE envoy_x counter", "envoy_x 7"]
    assert lines[2:11] == [
        "# HELP sailmesh_agent_envoy_restarts_total Times the agent restarted a crashed Envoy.",
        "# TYPE sailmesh_agent_envoy_restarts_total counter",
        "sailmesh_agent_envoy_restarts_total 2.0",
        "# HELP sailmesh_agent_ready 1 when the readiness probe would answer 200.",
        "# TYPE sailmesh_agent_ready gauge",
        "sailmesh_agent_ready 1.0",
        "# HELP sailmesh_agent_scrape_envoy_up 1 when Envoy's metrics could be read for this page.",
        "# TYPE sailmesh_agent_scrape_envoy_up gauge",
        "sailmesh_agent_scrape_envoy_up 1.0",
    ]
    assert lines[11:13] == ["# HELP sailmesh_agent_start_time_seconds When the agent started (Unix time).",
                            "# TYPE sailmesh_agent_start_time_seconds gauge"]
    # prometheus_client writes floats as Go does: 1.764348e+09.
    name, value = lines[13].split(" ")
    assert name == "sailmesh_agent_start_time_seconds" and abs(float(value) - time.time()) < 60
    assert len(lines) == 14  # no app configured: no app line


async def test_unreachable_envoy_and_app_and_not_ready_show_as_zero() -> None:
    dead = f"http://127.0.0.1:{free_port()}/x"
    text = await _page(_Readiness("envoy not ready"), dead, app_url=dead, restarts=0)
    for line in ("sailmesh_agent_envoy_restarts_total 0.0", "sailmesh_agent_ready 0.0",
                 "sailmesh_agent_scrape_envoy_up 0.0", "# TYPE sailmesh_agent_scrape_app_up gauge",
                 "sailmesh_agent_scrape_app_up 0.0"):
        assert line in text.splitlines()
