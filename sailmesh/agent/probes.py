"""The app's probes as Istio's pilot-agent serves rewritten ones: the injector points the kubelet's probes at
`<pod>:15020/app-health/<container>/livez|readyz|startupz` and hands the agent the originals (ISTIO_KUBE_APP_PROBERS:
path -> probe); the agent runs the original against the app and answers with its status code only (an HTTP probe:
the app's code, body stripped; a TCP probe: 200 when the port accepts; a gRPC probe: 200 when grpc.health.v1
answers SERVING; an error: 500; an unknown path: 404)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from aiohttp import web

from sailmesh.agent import grpchealth
from sailmesh.errors import AgentError

APP_HEALTH_ROUTE = "/app-health/{container}/{probe}"
Prober = Callable[[], Awaitable[tuple[int, str]]]


def _timeout(spec: Mapping[str, Any]) -> float:
    value = spec.get("timeoutSeconds", 1)
    return float(value) if isinstance(value, int | float) and value > 0 else 1.0


def _port(handler: Mapping[str, Any], path: str) -> int:
    port = handler.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise AgentError(f"app prober {path}: port must be a port number, not {port!r}")
    return port


def prober(ip: str, path: str, spec: Any) -> Prober:
    """One ISTIO_KUBE_APP_PROBERS entry as a check returning (status code, reason)."""
    if not isinstance(spec, dict):
        raise AgentError(f"app prober {path}: must be an object")
    timeout = _timeout(spec)
    if isinstance(spec.get("tcpSocket"), dict):
        port = _port(spec["tcpSocket"], path)

        async def tcp() -> tuple[int, str]:
            try:
                async with asyncio.timeout(timeout):
                    _, w = await asyncio.open_connection(ip, port)
            except (TimeoutError, OSError) as e:
                return 500, f"tcp {ip}:{port}: {str(e) or type(e).__name__}"
            w.close()
            return 200, ""

        return tcp
    if isinstance(spec.get("grpc"), dict):
        # Istio's handleAppProbeGRPC: grpc.health.v1 Health/Check; 200 on SERVING, 500 otherwise
        port = _port(spec["grpc"], path)
        service = str(spec["grpc"].get("service") or "")

        async def grpc_check() -> tuple[int, str]:
            why = await grpchealth.check(ip, port, service, timeout)
            return (200, "") if why is None else (500, why)

        return grpc_check
    h = spec.get("httpGet")
    if not isinstance(h, dict):
        raise AgentError(f"app prober {path}: needs httpGet, tcpSocket or grpc")
    port = _port(h, path)
    scheme = "https" if str(h.get("scheme", "HTTP")).upper() == "HTTPS" else "http"
    url = f"{scheme}://{ip}:{port}{h.get('path') or '/'}"
    headers = {str(x.get("name", "")): str(x.get("value", "")) for x in h.get("httpHeaders") or []
               if isinstance(x, dict)}

    async def http() -> tuple[int, str]:
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout), trust_env=False) as s:
                async with s.get(url, headers=headers, ssl=False, allow_redirects=False) as r:
                    return r.status, "" if r.status < 400 else f"{url}: HTTP {r.status}"
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            return 500, f"{url}: {str(e) or type(e).__name__}"

    return http


def parse_app_probers(ip: str, text: str) -> dict[str, Prober]:
    """ISTIO_KUBE_APP_PROBERS JSON (`{"/app-health/web/livez": {"httpGet": {...}, "timeoutSeconds": 1}}`)."""
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise AgentError(f"app probers: not JSON: {e}") from e
    if not isinstance(raw, dict):
        raise AgentError("app probers: must be an object of path -> probe")
    for path in raw:
        if not str(path).startswith("/app-health/"):
            raise AgentError(f"app prober path {path!r} must start with /app-health/")
    return {str(path): prober(ip, str(path), spec) for path, spec in raw.items()}


def app_health_handler(probers: Mapping[str, Prober]) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The status port's GET /app-health/... handler."""

    async def handle(request: web.Request) -> web.Response:
        check = probers.get(request.path)
        if check is None:
            return web.Response(status=404, text=f"app prober config does not exist for {request.path}\n")
        status, reason = await check()
        return web.Response(status=status, text=reason + "\n" if reason else "")

    return handle
