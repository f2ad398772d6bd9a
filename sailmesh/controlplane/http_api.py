"""The control plane's HTTP API on the monitoring port: apply/delete/get, readiness, metrics, sync status.

Every path but `/ready` and `/metrics` (Istio's 15014 serves both to anyone, for probes and Prometheus) needs
`Authorization: Bearer <token>`, the token the control plane writes 0600 into its state dir at start; a call
without it gets 401 and a log line (never the token it sent). Ten failed authentications from one address, then
one a second: beyond that a failed authentication from that address answers 429 with Retry-After (a valid
credential always passes). On the remote port
(TLS, `--api-mtls`), the caller instead presents a client certificate of the admin identity signed by the mesh CA;
none gets 401, another identity 403, both logged.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from sailmesh import __version__
from sailmesh.ca.limits import FAILED_AUTH_PER_ADDRESS, RateLimiter, retry_after
from sailmesh.errors import CertificateError
from sailmesh.processes import PID_HEADER
from sailmesh.xds.logtext import printable

K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")  # a namespace or service account name

log = logging.getLogger("sailmesh.controlplane")

MAX_BODY = 64 * 1024 * 1024
# Nesting deeper than this is refused with 400 before any handler walks the body (JSON nested 100k deep made the
# parser raise RecursionError, a 500); Istio's resources nest a few dozen levels at most.
MAX_DEPTH = 100
JSON_TYPE = "application/json"
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

    def certificate_caller(self, der: bytes | None) -> tuple[int, str]: ...

    def issue_admin_certificate(self, csr_pem: str, ttl_s: float = 0) -> list[str]: ...

    def issue_join_token(self, namespace: str, service_account: str, ttl_s: float = 0.0) -> str: ...

    def revoke_join_tokens(self, namespace: str, service_account: str) -> int: ...

    async def rotate_root(self, phase: str, force: bool = False) -> dict[str, Any]: ...

    async def apply_documents(self, docs: list[dict[str, Any]], dry_run: bool = False,
                              analyze: bool = False) -> Outcome: ...

    async def delete_documents(self, docs: list[dict[str, Any]], dry_run: bool = False,
                               analyze: bool = False) -> Outcome: ...

    def live_documents(self) -> list[dict[str, Any]]: ...

    def list_resources(self, kind: str, namespace: str, name: str) -> list[dict[str, Any]]: ...

    def proxy_defaults(self) -> dict[str, Any]: ...

    def rejected(self) -> list[str]: ...

    def sync_status(self) -> list[dict[str, Any]]: ...

    def metrics_text(self) -> str: ...

    def config_dump(self, proxy_id: str, type_name: str) -> dict[str, Any] | None: ...


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, indent=1, default=str), status=status,
                        content_type="application/json")


def _too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether a parsed JSON value nests deeper than `limit` (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict | list):
            if depth > limit:
                return True
            stack.extend((c, depth + 1) for c in (v.values() if isinstance(v, dict) else v))
    return False


async def _body(request: web.Request) -> Any:
    """The request's JSON body, or a 4xx JSON response saying what is wrong with it (never an exception)."""
    if request.content_type.lower() != JSON_TYPE:  # (aiohttp reads a missing Content-Type as octet-stream)
        return _json({"errors": [f"Content-Type {request.content_type!r} is not supported: send application/json"]},
                     415)
    try:
        body = await request.json()
    except web.HTTPRequestEntityTooLarge:
        return _json({"errors": [f"request body over {MAX_BODY} bytes"]}, 413)
    except RecursionError:
        return _json({"errors": [f"request body nests deeper than {MAX_DEPTH} levels"]}, 400)
    except (ValueError, UnicodeDecodeError) as e:
        return _json({"errors": [f"request body is not JSON: {e}"]}, 400)
    if _too_deep(body):
        return _json({"errors": [f"request body nests deeper than {MAX_DEPTH} levels"]}, 400)
    return body


def _document_error(i: int, d: Any) -> str:
    """Why documents[i] is not {"file": str, "line": int >= 0, "doc": {...}} (the CLI's shape), or ""."""
    where = f"documents[{i}]"
    if not isinstance(d, dict):
        return f"{where} must be an object"
    if not isinstance(d.get("file", ""), str):
        return f"{where}.file must be a string"
    line = d.get("line", 0)
    if line is not None and (isinstance(line, bool) or not isinstance(line, int) or line < 0):
        return f"{where}.line must be a non-negative integer, not {json.dumps(line)[:40]}"
    if not isinstance(d.get("doc"), dict):
        return f"{where}.doc must be an object (one resource)"
    return ""


async def _documents(request: web.Request) -> tuple[list[dict[str, Any]], bool, bool] | web.Response:
    """The documents of an apply/delete body, its `dryRun` flag and its `analyze` flag (warnings wanted)."""
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    docs = body.get("documents") if isinstance(body, dict) else None
    if not isinstance(docs, list):
        return _json({"errors": ["expected {\"documents\": [{\"file\", \"line\", \"doc\"}, ...]}"]}, 400)
    errors = [e for e in (_document_error(i, d) for i, d in enumerate(docs)) if e]
    for flag in ("dryRun", "analyze"):
        if not isinstance(body.get(flag, False), bool):
            errors.append(f"{flag} must be true or false")
    if errors:
        return _json({"errors": errors[:20]}, 400)
    return docs, body.get("dryRun", False), body.get("analyze", False)


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
        notes = getattr(backend, "not_enforced_notes", None)  # said here once, so `get` needs no generator code
        if notes is not None:
            body["notes"] = notes(*args)
        return _json(body)

    async def proxy_defaults(_: web.Request) -> web.Response:
        return _json(backend.proxy_defaults())

    async def analysis(_: web.Request) -> web.Response:
        found = getattr(backend, "analysis", None)  # the analyzers' messages on the live mesh (x describe)
        if found is None:
            return _json({"errors": ["this control plane does not analyze"]}, 404)
        return _json({"items": await found()})

    def asked(method: str, what: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        """A POST the backend's `method` answers (JSON body in, (status, answer) out), where it offers one: the
        CLI's analyze (analyze_api) and explain (explain_api), so the CLI loads neither."""
        async def handler(request: web.Request) -> web.Response:
            found = getattr(backend, method, None)
            if found is None:
                return _json({"errors": [f"this control plane does not {what}"]}, 404)
            body = await _body(request)
            if isinstance(body, web.Response):
                return body
            status, answer = await found(body)
            return _json(answer, status)
        return handler

    async def authz(request: web.Request) -> web.Response:
        found = getattr(backend, "authz_rules", None)  # `x authz check` (explain_api)
        if found is None:
            return _json({"errors": ["this control plane does not list authorization rules"]}, 404)
        status, answer = await found(request.query.get("proxyID", ""))
        return _json(answer, status)

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

    failed_auth = RateLimiter(FAILED_AUTH_PER_ADDRESS)  # per caller address: 429 with Retry-After past the limit

    @web.middleware
    async def authenticate(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)  # type: ignore[no-any-return]
        address = request.remote or ""

        def refuse(status: int, what: str, detail: str, hint: str) -> web.Response:
            """401/403, logged; beyond the failed-authentication allowance of this address 429 with Retry-After
            (logged once per hundred). Valid credentials are never held back (every local caller is 127.0.0.1)."""
            wait = failed_auth.take(address)
            if wait:
                if failed_auth.refused % 100 == 1:
                    log.warning("HTTP API: too many failed authentications from %s (%s %s)", address,
                                request.method, printable(request.path))
                return web.Response(text=json.dumps({"errors": ["too many failed authentications; retry later"]}),
                                    status=429, content_type="application/json",
                                    headers={"Retry-After": retry_after(wait)})
            log.warning("HTTP API: %s %s %s from %s (%s)", what, request.method, printable(request.path), address,
                        detail)
            return _json({"errors": [f"{what}: {hint}"]}, status)

        tls = request.transport.get_extra_info("ssl_object") if request.transport is not None else None
        if tls is not None:  # the remote port: a client certificate of the admin identity, nothing else
            status, who = backend.certificate_caller(tls.getpeercert(binary_form=True))
            if status:
                return refuse(status, "unauthenticated" if status == 401 else "forbidden", f"mTLS: {who}",
                              f"{who}; remote callers present the admin certificate of `sailmesh x ca admin-cert`")
            return await handler(request)  # type: ignore[no-any-return]
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        browser = request.path.startswith(BROWSER_PREFIX)
        if browser and not token:
            token = request.query.get("token", "") or request.cookies.get(TOKEN_COOKIE, "")
        if not backend.is_admin(token):
            hint = "open it with `sailmesh dashboard`" if browser else \
                "send the control plane's API token (Authorization: Bearer, from the api-token file in its state dir)"
            return refuse(401, "unauthenticated", "wrong token" if token else "no token", hint)
        response: web.StreamResponse = await handler(request)
        if browser and request.query.get("token"):
            response.set_cookie(TOKEN_COOKIE, token, path=BROWSER_PREFIX, httponly=True, samesite="Strict")
        return response

    async def identity_body(request: web.Request) -> tuple[str, str, Any] | web.Response:
        """{"namespace", "serviceAccount"} of a join-token call (Kubernetes names), and the whole body."""
        body = await _body(request)
        if isinstance(body, web.Response):
            return body
        ns = body.get("namespace") if isinstance(body, dict) else None
        sa = body.get("serviceAccount") if isinstance(body, dict) else None
        if not isinstance(ns, str) or not isinstance(sa, str) or not K8S_NAME.fullmatch(ns) or \
                not K8S_NAME.fullmatch(sa):
            return _json({"errors": ["expected {\"namespace\": NAME, \"serviceAccount\": NAME} "
                                     "(Kubernetes names: lower-case letters, digits, '-', '.'; at most 253)"]}, 400)
        return ns, sa, body

    async def join_token(request: web.Request) -> web.Response:
        parsed = await identity_body(request)
        if isinstance(parsed, web.Response):
            return parsed
        ns, sa, body = parsed
        ttl = body.get("ttlSeconds", 0)
        if not isinstance(ttl, int | float) or isinstance(ttl, bool) or ttl < 0:
            return _json({"errors": ["ttlSeconds must be a number of seconds, 0 or more (0: until revoked)"]}, 400)
        try:
            return _json({"token": backend.issue_join_token(ns, sa, float(ttl))})
        except CertificateError as e:
            return _json({"errors": [str(e)]}, 400)

    async def revoke_tokens(request: web.Request) -> web.Response:
        parsed = await identity_body(request)
        if isinstance(parsed, web.Response):
            return parsed
        ns, sa, _ = parsed
        return _json({"revoked": backend.revoke_join_tokens(ns, sa)})

    async def rotate_root(request: web.Request) -> web.Response:
        try:
            body = await request.json() if request.can_read_body else {}
        except (ValueError, UnicodeDecodeError):
            body = None
        phase = body.get("phase", "status") if isinstance(body, dict) else None
        if not isinstance(phase, str) or not isinstance(body, dict):
            return _json({"errors": ["expected {\"phase\": \"add\"|\"switch\"|\"drop\"|\"status\"}"]}, 400)
        try:
            return _json(await backend.rotate_root(phase, bool(body.get("force"))))
        except CertificateError as e:
            return _json({"errors": [str(e)]}, 409)

    async def admin_certificate(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        csr = body.get("csr") if isinstance(body, dict) else None
        ttl = body.get("ttlSeconds", 0) if isinstance(body, dict) else 0
        if not isinstance(csr, str) or not isinstance(ttl, int | float) or isinstance(ttl, bool):
            return _json({"errors": ["expected {\"csr\": PEM, \"ttlSeconds\": N}"]}, 400)
        try:
            return _json({"certChain": backend.issue_admin_certificate(csr, float(ttl))})
        except CertificateError as e:
            return _json({"errors": [str(e)]}, 400)

    app = web.Application(client_max_size=MAX_BODY, middlewares=[authenticate])
    app.router.add_post("/api/v1/ca/admin-certificate", admin_certificate)
    app.router.add_post("/api/v1/ca/rotate-root", rotate_root)
    app.router.add_post("/api/v1/join-tokens", join_token)
    app.router.add_post("/api/v1/join-tokens/revoke", revoke_tokens)
    app.router.add_get("/ready", ready)
    app.router.add_post("/api/v1/apply", mutate(backend.apply_documents))
    app.router.add_post("/api/v1/delete", mutate(backend.delete_documents))
    app.router.add_get("/api/v1/resources", resources)
    app.router.add_get("/api/v1/proxy-defaults", proxy_defaults)  # what the embedded platform starts a proxy with
    app.router.add_get("/api/v1/live", live)
    app.router.add_get("/api/v1/analysis", analysis)
    app.router.add_post("/api/v1/analyze", asked("analyze_files", "analyze"))
    app.router.add_post("/api/v1/explain", asked("explain", "explain"))
    app.router.add_get("/api/v1/authz", authz)
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
