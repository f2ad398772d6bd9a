"""The control plane's HTTP API on the monitoring port: apply/delete/get, readiness, metrics, sync status.

Every path but `/ready` and `/metrics` (Istio's 15014 serves both to anyone, for probes and Prometheus) needs
`Authorization: Bearer <token>`, the token the control plane writes 0600 into its state dir at start; a call
without it gets 401 and a log line (never the token it sent).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from sailmesh import __version__
from sailmesh.processes import PID_HEADER

log = logging.getLogger("sailmesh.controlplane")

MAX_BODY = 64 * 1024 * 1024
OPEN_PATHS = frozenset({"/ready", "/metrics"})
# Pages a browser opens (the dashboard) cannot send a bearer header: `sailmesh dashboard` opens them with the API
# token once in the URL (`?token=`), which sets an HttpOnly, SameSite=Strict cookie for the rest of the visit.
BROWSER_PREFIX = "/dashboard"
TOKEN_COOKIE = "sailmesh_token"


@dataclass
class Outcome:
    """What an apply or delete did: a line per resource, errors (nothing applied, or names not found on delete),
    and analyzer warnings about the applied resources."""

    results: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    partial: bool = False  # some resources were changed although there are errors (delete of some missing names)

    @property
    def status(self) -> int:
        return 200 if not self.errors else 207 if self.partial else 400


class Backend(Protocol):
    """What the API serves; implemented by controlplane.app.ControlPlane."""

    def is_ready(self) -> bool: ...

    def is_admin(self, token: str) -> bool: ...

    def issue_join_token(self, namespace: str, service_account: str) -> str: ...

    async def apply_documents(self, docs: list[dict[str, Any]], dry_run: bool = False,
                              analyze: bool = False) -> Outcome: ...

    async def delete_documents(self, docs: list[dict[str, Any]], dry_run: bool = False,
                               analyze: bool = False) -> Outcome: ...

    def live_documents(self) -> list[dict[str, Any]]: ...

    def list_resources(self, kind: str, namespace: str, name: str) -> list[dict[str, Any]]: ...

    def rejected(self) -> list[str]: ...

    def sync_status(self) -> list[dict[str, Any]]: ...

    def metrics_text(self) -> str: ...

    def config_dump(self, proxy_id: str, type_name: str) -> dict[str, Any] | None: ...


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, indent=1, default=str), status=status,
                        content_type="application/json")


async def _documents(request: web.Request) -> tuple[list[dict[str, Any]], bool, bool] | web.Response:
    """The documents of an apply/delete body, its `dryRun` flag and its `analyze` flag (warnings wanted)."""
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return _json({"errors": ["request body is not JSON"]}, 400)
    docs = body.get("documents") if isinstance(body, dict) else None
    if not isinstance(docs, list) or not all(isinstance(d, dict) for d in docs):
        return _json({"errors": ["expected {\"documents\": [{\"file\", \"line\", \"doc\"}, ...]}"]}, 400)
    return docs, bool(body.get("dryRun")), bool(body.get("analyze"))


def _redirect(location: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(_: web.Request) -> web.Response:
        raise web.HTTPFound(location)

    return handler


def make_app(backend: Backend, mounts: Mapping[str, web.Application] | None = None) -> web.Application:
    """The aiohttp application; bind it to loopback (the default host). `mounts`: prefix -> sub-application
    from a higher layer (the dashboard under /dashboard/), served on the same port."""

    def mutate(op: Callable[[list[dict[str, Any]], bool, bool], Awaitable[Outcome]]) -> Any:
        async def handler(request: web.Request) -> web.Response:
            body = await _documents(request)
            if isinstance(body, web.Response):
                return body
            outcome = await op(*body)
            return _json({"results": outcome.results, "errors": outcome.errors, "warnings": outcome.warnings},
                         outcome.status)

        return handler

    async def ready(_: web.Request) -> web.Response:
        # X-Sailmesh-Pid: whoever waits for readiness can tell this process from another on the same port
        return web.Response(text="ready\n" if backend.is_ready() else "not ready\n",
                            status=200 if backend.is_ready() else 503, headers={PID_HEADER: str(os.getpid())})

    async def resources(request: web.Request) -> web.Response:
        q = request.query
        args = (q.get("kind", ""), q.get("namespace", ""), q.get("name", ""))
        body: dict[str, Any] = {"items": backend.list_resources(*args)}
        shadowed = getattr(backend, "shadowed", None)  # which copy is in force, where a file defines it too
        if shadowed is not None:
            body["shadowed"] = shadowed(*args)
        return _json(body)

    async def version(_: web.Request) -> web.Response:
        return _json({"version": __version__})

    async def live(_: web.Request) -> web.Response:
        return _json({"items": backend.live_documents()})

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
        browser = request.path.startswith(BROWSER_PREFIX)
        if browser and not token:
            token = request.query.get("token", "") or request.cookies.get(TOKEN_COOKIE, "")
        if not backend.is_admin(token):
            log.warning("HTTP API: unauthenticated %s %s from %s (%s)", request.method, request.path,
                        request.remote, "wrong token" if token else "no token")
            hint = "open it with `sailmesh dashboard`" if browser else \
                "send the control plane's API token (Authorization: Bearer, from the api-token file in its state dir)"
            return _json({"errors": [f"unauthenticated: {hint}"]}, 401)
        response: web.StreamResponse = await handler(request)
        if browser and request.query.get("token"):
            response.set_cookie(TOKEN_COOKIE, token, path=BROWSER_PREFIX, httponly=True, samesite="Strict")
        return response

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
    app.router.add_get("/api/v1/live", live)
    app.router.add_get("/version", version)
    app.router.add_get("/api/v1/rejected", rejected)
    app.router.add_get("/debug/syncz", syncz)
    app.router.add_get("/debug/config_dump", config_dump)
    app.router.add_get("/metrics", metrics)
    for prefix, sub in (mounts or {}).items():
        if prefix.endswith("/") and len(prefix) > 1:  # /dashboard -> /dashboard/ (its pages use relative URLs)
            app.router.add_get(prefix.rstrip("/"), _redirect(prefix))
        app.add_subapp(prefix, sub)
    return app
