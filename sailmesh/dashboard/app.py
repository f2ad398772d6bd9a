"""The dashboard's web application, mounted by the control plane under /dashboard/ on its monitoring port.

Pages are static files (static/: plain HTML, CSS and JavaScript, no build step); everything they show comes from
the JSON API next to them, which scripts can use too:

    api/graph     nodes and edges (rps, error_rate, p50/p90/p99_ms, mtls, health) over the last window
    api/history   one node's rate and latency over the kept windows (the service and workload charts)
    api/proxies   every connected proxy and its xDS sync state per type (as `sailmesh proxy-status`)
    api/config    the current config, each resource with the `analyze` messages about it, and rejections

`?prometheus=URL` on any page or API call reads a Prometheus instead of the sidecars.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from sailmesh.analysis.registry import analyze
from sailmesh.api.parse import resource_from_dict
from sailmesh.api.resource import Resource, Source
from sailmesh.cli.proxy_status import status_word as sync_word  # Istio's words, as proxy-status prints them
from sailmesh.dashboard.collect import Collector, PrometheusSource, ScrapeSource, SourceError, prometheus_url
from sailmesh.errors import ParseError

STATIC = pathlib.Path(__file__).parent / "static"
PAGES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
COLLECTORS: web.AppKey[dict[str, Collector]] = web.AppKey("collectors", dict)
SESSION: web.AppKey[list[aiohttp.ClientSession]] = web.AppKey("session", list)


class Backend(Protocol):
    """What the dashboard reads from the control plane (controlplane.app.ControlPlane implements it)."""

    def sync_status(self) -> list[dict[str, Any]]: ...

    def list_resources(self, kind: str, namespace: str, name: str) -> list[dict[str, Any]]: ...

    def rejected(self) -> list[str]: ...


@dataclass(frozen=True)
class DashboardOptions:
    """How often to poll, how long to keep history, where proxies serve their merged metrics (Istio: 15020)."""

    interval: float = 5.0
    keep: int = 120
    idle: float = 300.0
    metrics_port: int = 15020
    metrics_path: str = "/stats/prometheus"
    window: str = "1m"


def proxy_ip(node_id: str) -> str:
    """The address in Istio's node id `type~ip~pod.namespace~namespace.svc.domain` ("" if not that shape)."""
    parts = node_id.split("~")
    return parts[1] if len(parts) == 4 else ""


def scrape_targets(status: Iterable[dict[str, Any]], port: int, path: str) -> list[str]:
    """Every connected proxy's merged metrics page (sidecars and gateways alike)."""
    ips = {proxy_ip(str(p.get("proxy", ""))) for p in status}
    return [f"http://{'[' + ip + ']' if ':' in ip else ip}:{port}{path}" for ip in sorted(ips) if ip]


def config_with_messages(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each resource with the analysis messages about it; messages about no stored resource listed apart."""
    resources: list[Resource] = []
    for d in docs:
        try:
            resources.append(resource_from_dict(d, Source("", 0)))
        except ParseError:
            continue
    by_key: dict[str, list[dict[str, Any]]] = {}
    other: list[dict[str, Any]] = []
    for diag in analyze(resources):
        item = {**diag.as_dict(), "path": diag.path}
        if diag.resource is not None:
            by_key.setdefault(str(diag.resource.key), []).append(item)
        else:
            other.append(item)
    items = []
    for r in sorted(resources, key=lambda r: (r.kind, r.namespace, r.name)):
        key = str(r.key)
        items.append({"key": key, "kind": r.kind, "namespace": r.namespace, "name": r.name,
                      "spec": dict(r.spec), "messages": by_key.pop(key, [])})
    for key, msgs in by_key.items():  # messages about resources analyze assumed (defaults) or derived
        other.extend({**m, "origin": m.get("origin") or key} for m in msgs)
    return {"resources": items, "messages": other}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, default=str), status=status, content_type="application/json",
                        headers={"Cache-Control": "no-store"})


def make_app(backend: Backend, options: DashboardOptions | None = None) -> web.Application:
    """The dashboard application (mount it with `add_subapp("/dashboard/", ...)`)."""
    opts = options or DashboardOptions()
    app = web.Application()
    app[COLLECTORS] = {}
    app[SESSION] = []

    def session() -> aiohttp.ClientSession:
        if not app[SESSION]:
            app[SESSION].append(aiohttp.ClientSession(trust_env=False))
        return app[SESSION][0]

    def collector(request: web.Request) -> Collector:
        url = request.query.get("prometheus", "")
        key = prometheus_url(url) if url else ""  # raises SourceError for a bad URL
        found = app[COLLECTORS].get(key)
        if found is None:
            source: PrometheusSource | ScrapeSource
            if key:
                source = PrometheusSource(key, session(), window=opts.window)
            else:
                source = ScrapeSource(lambda: scrape_targets(backend.sync_status(), opts.metrics_port,
                                                             opts.metrics_path), session())
            found = app[COLLECTORS][key] = Collector(source, opts.interval, opts.keep, opts.idle)
        found.touch()
        return found

    async def page(request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("name") or "index.html"
        if name not in PAGES:
            raise web.HTTPNotFound()
        return web.Response(body=(STATIC / name).read_bytes(), content_type=PAGES[name],
                            headers={"Cache-Control": "no-cache"})

    async def graph(request: web.Request) -> web.Response:
        try:
            c = collector(request)
        except SourceError as e:
            return _json({"errors": [str(e)]}, 400)
        await c.first_graph(timeout=3 * max(c.first_interval, 1.0) + 5)
        latest = c.latest() or {"nodes": [], "edges": [], "time": None}
        return _json({**latest, **c.source.status(), "interval_s": c.interval,
                      "error": c.error, "warming_up": c.latest() is None})

    async def history(request: web.Request) -> web.Response:
        try:
            c = collector(request)
        except SourceError as e:
            return _json({"errors": [str(e)]}, 400)
        node = request.query.get("node", "")
        points = []
        for g in list(c.history):
            n = next((n for n in g["nodes"] if n["id"] == node), None)
            keys = ("rps", "error_rate", "p50_ms", "p90_ms", "p99_ms")
            points.append({"time": g["time"], **{k: (n or {}).get(k) for k in keys}})
        return _json({"node": node, "interval_s": c.interval, "points": points})

    async def proxies(_: web.Request) -> web.Response:
        rows = []
        for p in backend.sync_status():
            types = p.get("types", {})
            rows.append({**p, "ip": proxy_ip(str(p.get("proxy", ""))),
                         "sync": {t: sync_word(types.get(t)) for t in ("CDS", "LDS", "EDS", "RDS")}})
        return _json({"proxies": rows})

    async def config(_: web.Request) -> web.Response:
        docs = backend.list_resources("", "", "")
        data = await asyncio.to_thread(config_with_messages, docs)
        return _json({**data, "rejected": backend.rejected()})

    async def cleanup(_: web.Application) -> None:
        for c in app[COLLECTORS].values():
            await c.stop()
        for s in app[SESSION]:
            await s.close()

    app.on_cleanup.append(cleanup)
    app.router.add_get("/", page)
    app.router.add_get("/{name:[a-z]+\\.(?:html|js|css)}", page)
    app.router.add_get("/api/graph", graph)
    app.router.add_get("/api/history", history)
    app.router.add_get("/api/proxies", proxies)
    app.router.add_get("/api/config", config)
    return app
