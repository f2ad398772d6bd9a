"""The agent's rewritten app probes (Istio's ISTIO_KUBE_APP_PROBERS on 15020): an HTTP probe answers with the app's
status code, a TCP probe 200 or 500, an unknown path 404; malformed prober config is an AgentError."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from sailmesh.agent.probes import parse_app_probers
from sailmesh.errors import AgentError
from sailmesh.processes import free_port


async def _probe_app(port: int) -> web.AppRunner:
    async def healthz(_r: web.Request) -> web.Response:
        return web.Response(status=503, text="not yet")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def test_http_probe_passes_the_apps_code_and_tcp_probe_answers_200_or_500() -> None:
    async def run() -> None:
        up, down = free_port(), free_port()
        runner = await _probe_app(up)
        try:
            probers = parse_app_probers("127.0.0.1", json.dumps({
                "/app-health/web/livez": {"httpGet": {"path": "/healthz", "port": up}, "timeoutSeconds": 1},
                "/app-health/web/readyz": {"tcpSocket": {"port": up}},
                "/app-health/web/startupz": {"tcpSocket": {"port": down}}}))
            assert (await probers["/app-health/web/livez"]())[0] == 503
            assert await probers["/app-health/web/readyz"]() == (200, "")
            assert (await probers["/app-health/web/startupz"]())[0] == 500
        finally:
            await runner.cleanup()

    asyncio.run(run())


@pytest.mark.parametrize("text", ["not json", "[]", '{"/healthz": {"tcpSocket": {"port": 1}}}',
                                  '{"/app-health/a/livez": {"tcpSocket": {"port": "http"}}}',
                                  '{"/app-health/a/livez": {"exec": {}}}',
                                  '{"/app-health/a/livez": {"grpc": {"port": "grpc"}}}'])
def test_malformed_probers_are_refused(text: str) -> None:
    with pytest.raises(AgentError):
        parse_app_probers("127.0.0.1", text)
