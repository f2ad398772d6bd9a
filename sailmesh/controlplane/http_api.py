"""The control plane's HTTP API on the monitoring port: apply/delete/get, readiness, metrics, sync status.

Every path but `/ready` and `/metrics` (Istio's 15014 serves both to anyone, for probes and Prometheus) needs
`Authorization: Bearer <token>`, the token the control plane writes 0600 into its state dir at start; a call
without it gets 401 and a log line (never the token it sent).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

log = logging.getLogger("sailmesh.controlplane")

MAX_BODY = 64 * 1024 * 1024
OPEN_PATHS = frozenset({"/ready", "/metrics"})


class Backend(Protocol):
    """What the API serves; implemented by controlplane.app.ControlPlane."""

    def is_ready(self) -> bool: ...

    def is_admin(self, token: str) -> bool: ...

    def issue_join_token(self, namespace: str, service_account: str) -> str: ...

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


def make_app(backend: Backend) -> web.Application:
    """The aiohttp application; bind it to loopback (the default host)."""

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

    @web.middleware
    async def authenticate(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)  # type: ignore[no-any-return]
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if not backend.is_admin(token):
            log.warning("HTTP API: unauthenticated %s %s from %s (%s)", request.method, request.path,
                        request.remote, "wrong token" if token else "no token")
            return _json({"errors": ["unauthenticated: send the control plane's API token "
                                     "(Authorization: Bearer, from the api-token file in its state dir)"]}, 401)
        return await handler(request)  # type: ignore[no-any-return]

    async def join_token(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        ns = body.get("namespace") if isinstance(body, dict) else None
        sa = body.get("serviceAccount") if isinstance(body, dict) else None
        if not isinstance(ns, str) or not isinstance(sa, str) or not ns or not sa:
            return _json({"errors": ["expected {\"namespace\": ..., \"serviceAccount\": ...}"]}, 400)
        return _json({"token": backend.issue_join_token(ns, sa)})

    app = web.Application(client_max_size=MAX_BODY, middlewares=[authenticate])
    app.router.add_post("/api/v1/join-tokens", join_token)
    app.router.add_get("/ready", ready)
    app.router.add_post("/api/v1/apply", mutate(backend.apply_documents))
    app.router.add_post("/api/v1/delete", mutate(backend.delete_documents))
    app.router.add_get("/api/v1/resources", resources)
    app.router.add_get("/api/v1/rejected", rejected)
    app.router.add_get("/debug/syncz", syncz)
    app.router.add_get("/debug/config_dump", config_dump)
    app.router.add_get("/metrics", metrics)
    return app
