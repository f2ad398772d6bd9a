"""The control plane's HTTP API on the monitoring port: apply/delete/get, readiness, metrics, sync status."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from aiohttp import web

MAX_BODY = 64 * 1024 * 1024


class Backend(Protocol):
    """What the API serves; implemented by controlplane.app.ControlPlane."""

    def is_ready(self) -> bool: ...

    async def apply_documents(self, docs: list[dict[str, Any]]) -> tuple[list[str], list[str]]: ...

    async def delete_documents(self, docs: list[dict[str, Any]]) -> tuple[list[str], list[str]]: ...

    def list_resources(self, kind: str, namespace: str, name: str) -> list[dict[str, Any]]: ...

    def rejected(self) -> list[str]: ...

    def sync_status(self) -> list[dict[str, Any]]: ...

    def metrics_text(self) -> str: ...

    def config_dump(self, proxy_id: str, type_name: str) -> dict[str, Any] | None: ...


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, indent=1, default=str), status=status,
                        content_type="application/json")


async def _documents(request: web.Request) -> list[dict[str, Any]] | web.Response:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return _json({"errors": ["request body is not JSON"]}, 400)
    docs = body.get("documents") if isinstance(body, dict) else None
    if not isinstance(docs, list) or not all(isinstance(d, dict) for d in docs):
        return _json({"errors": ["expected {\"documents\": [{\"file\", \"line\", \"doc\"}, ...]}"]}, 400)
    return docs


def _redirect(location: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(_: web.Request) -> web.Response:
        raise web.HTTPFound(location)

    return handler


def make_app(backend: Backend, mounts: Mapping[str, web.Application] | None = None) -> web.Application:
    """The aiohttp application; bind it to loopback (the default host). `mounts`: prefix -> sub-application
    from a higher layer (the dashboard under /dashboard/), served on the same port."""

    def mutate(op: Callable[[list[dict[str, Any]]], Awaitable[tuple[list[str], list[str]]]]) -> Any:
        async def handler(request: web.Request) -> web.Response:
            docs = await _documents(request)
            if isinstance(docs, web.Response):
                return docs
            results, errors = await op(docs)
            if errors:
                return _json({"errors": errors}, 400)
            return _json({"results": results})

        return handler

    async def ready(_: web.Request) -> web.Response:
        return web.Response(text="ready\n" if backend.is_ready() else "not ready\n",
                            status=200 if backend.is_ready() else 503)

    async def resources(request: web.Request) -> web.Response:
        q = request.query
        return _json({"items": backend.list_resources(q.get("kind", ""), q.get("namespace", ""), q.get("name", ""))})

    async def rejected(_: web.Request) -> web.Response:
        return _json({"rejected": backend.rejected()})

    async def syncz(_: web.Request) -> web.Response:
        return _json(backend.sync_status())

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=backend.metrics_text(), content_type="text/plain")

    async def config_dump(request: web.Request) -> web.Response:
        dump = backend.config_dump(request.query.get("proxyID", ""), request.query.get("types", ""))
        if dump is None:
            return _json({"errors": [f"proxy {request.query.get('proxyID', '')!r} is not connected"]}, 404)
        return _json(dump)

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_get("/ready", ready)
    app.router.add_post("/api/v1/apply", mutate(backend.apply_documents))
    app.router.add_post("/api/v1/delete", mutate(backend.delete_documents))
    app.router.add_get("/api/v1/resources", resources)
    app.router.add_get("/api/v1/rejected", rejected)
    app.router.add_get("/debug/syncz", syncz)
    app.router.add_get("/debug/config_dump", config_dump)
    app.router.add_get("/metrics", metrics)
    for prefix, sub in (mounts or {}).items():
        if prefix.endswith("/") and len(prefix) > 1:  # /dashboard -> /dashboard/ (its pages use relative URLs)
            app.router.add_get(prefix.rstrip("/"), _redirect(prefix))
        app.add_subapp(prefix, sub)
    return app
