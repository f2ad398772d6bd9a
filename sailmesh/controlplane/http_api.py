"""The control plane's HTTP API on the monitoring port: apply/delete/get, readiness, metrics, sync status."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from sailmesh import __version__
from sailmesh.processes import PID_HEADER

MAX_BODY = 64 * 1024 * 1024


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


def make_app(backend: Backend) -> web.Application:
    """The aiohttp application; bind it to loopback (the default host)."""

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
        return _json({"items": backend.list_resources(q.get("kind", ""), q.get("namespace", ""), q.get("name", ""))})

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

    app = web.Application(client_max_size=MAX_BODY)
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
    return app
