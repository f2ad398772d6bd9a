"""The admission webhook server on :15017 (istiod's port): AdmissionReview v1 over TLS.

- `POST /validate`: every Istio kind is checked with the validator `sailmesh validate` uses (errors only); a
  refusal carries Istio's wording, `configuration is invalid: <the validator's messages>`, which the API server
  shows as `admission webhook "validation.istio.io" denied the request: configuration is invalid: ...`.
- `POST /inject` (and `/inject/...`, Istio's path with parameters): sidecar injection (inject.py), answered with
  a JSONPatch. A pod the injector does not inject is allowed unchanged.
- `GET /ready`: 200 once serving.

The serving certificate comes from the mesh CA (SANs: istiod.istio-system.svc, ... and the given addresses) and
is renewed at half its lifetime; the API server verifies it with the caBundle the control plane writes into the
webhook configurations (controlplane/webhooks.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import ssl
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from sailmesh.api import kinds
from sailmesh.api.parse import resource_from_dict
from sailmesh.api.resource import Source
from sailmesh.ca.authority import CertificateAuthority, write_private
from sailmesh.errors import ParseError
from sailmesh.webhook.inject import (
    InjectionConfig,
    inject_pod,
    injection_required,
    json_patch,
    not_acted_on,
    workload_name,
)

log = logging.getLogger(__name__)

Validate = Callable[[Any], "list[object]"]  # a Resource -> its errors (the control plane's validator)
ADMISSION_V1 = "admission.k8s.io/v1"
MAX_BODY = 8 * 1024 * 1024  # the API server's own limit for an object is 3 MiB (etcd); a review is bounded too


def review_response(uid: str, allowed: bool, message: str = "", patch: list[dict[str, Any]] | None = None,
                    warnings: list[str] | None = None) -> dict[str, Any]:
    """An AdmissionReview v1 answer (warnings are printed by kubectl as `Warning: ...`)."""
    resp: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if warnings:
        resp["warnings"] = warnings
    if not allowed:
        resp["status"] = {"code": 400, "reason": "BadRequest", "message": message}
    if patch:
        resp["patchType"] = "JSONPatch"
        resp["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    return {"apiVersion": ADMISSION_V1, "kind": "AdmissionReview", "response": resp}


def validate_review(request: Mapping[str, Any], validate: Validate) -> tuple[bool, str]:
    """(allowed, message) for one AdmissionRequest to the validating webhook. A kind sailmesh does not know
    (an Istio CRD newer than its kind table) is allowed with a warning message, not refused."""
    if request.get("operation") not in ("CREATE", "UPDATE"):
        return True, ""
    obj = request.get("object")
    if not isinstance(obj, dict):
        return False, "configuration is invalid: no object in the request"
    if kinds.lookup(str(obj.get("apiVersion") or ""), str(obj.get("kind") or "")) is None:
        return True, (f"{obj.get('apiVersion')} {obj.get('kind')} is accepted, not validated: sailmesh does not "
                      "know this kind")
    obj = dict(obj)
    meta = dict(obj.get("metadata") or {})
    meta.pop("managedFields", None)
    if not meta.get("namespace") and request.get("namespace"):
        meta["namespace"] = request["namespace"]
    obj["metadata"] = meta
    try:
        resource = resource_from_dict(obj, Source(file=""))
    except ParseError as e:
        return False, f"configuration is invalid: {e.message}"
    issues = validate(resource)
    if not issues:
        return True, ""
    return False, "configuration is invalid: " + "; ".join(str(i) for i in issues)


def inject_review(request: Mapping[str, Any], cfg: InjectionConfig
                  ) -> tuple[list[dict[str, Any]], str, list[str]]:
    """(JSON patch, reason, warnings) for one AdmissionRequest to the injecting webhook; an empty patch: not
    injected. The warnings name Istio injection annotations the injector does not act on."""
    pod = request.get("object")
    if not isinstance(pod, dict) or request.get("operation") != "CREATE":
        return [], "not a pod creation", []
    namespace = str(request.get("namespace") or (pod.get("metadata") or {}).get("namespace") or "default")
    needed, why = injection_required(pod, namespace)
    if not needed:
        return [], why, []
    injected = inject_pod(pod, cfg, workload=workload_name(pod), namespace=namespace)
    return json_patch(pod, injected), "injected", not_acted_on(pod, cfg)


class WebhookServer:
    """Validation and injection over TLS; start() binds (port 0: any free one), stop() closes."""

    def __init__(self, authority: CertificateAuthority, validate: Validate, inject: InjectionConfig,
                 dns_names: list[str], ips: list[str]) -> None:
        self.authority = authority
        self.validate = validate
        self.inject = inject
        self.dns_names = dns_names
        self.ips = ips
        self.port = 0
        self.reviews = {"validate": 0, "denied": 0, "inject": 0, "injected": 0}
        self._runner: web.AppRunner | None = None
        self._renew: asyncio.Task[None] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="sailmesh-webhook-")
        self.ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
        self._lifetime_s = self._load_certificate()

    def _load_certificate(self) -> float:
        """A fresh serving certificate into the TLS context (new handshakes use it); returns its lifetime."""
        issued, key = self.authority.issue_server(self.dns_names, self.ips)
        folder = Path(self._dir.name)
        write_private(folder / "key.pem", key)  # ssl loads keys from files only
        (folder / "cert.pem").write_text("".join(issued.chain[:-1]) or issued.chain[0])
        self.ssl.load_cert_chain(folder / "cert.pem", folder / "key.pem")
        (folder / "key.pem").unlink()
        return (issued.not_after - issued.not_before).total_seconds()

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(max(60.0, self._lifetime_s / 2))
            self._lifetime_s = self._load_certificate()
            log.info("webhook serving certificate renewed")

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/validate", self._validate)
        app.router.add_post("/validate/{rest:.*}", self._validate)
        app.router.add_post("/inject", self._inject)
        app.router.add_post("/inject/{rest:.*}", self._inject)
        app.router.add_get("/ready", self._ready)
        return app

    async def start(self, host: str, port: int) -> int:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=self.ssl)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        self._renew = asyncio.create_task(self._renew_loop(), name="webhook-cert-renew")
        log.info("admission webhooks (validation, injection) on %s:%d (TLS)", host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._renew is not None:
            self._renew.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renew
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._dir.cleanup()

    @staticmethod
    async def _review(request: web.Request) -> tuple[str, dict[str, Any]] | web.Response:
        if request.content_type != "application/json":
            return web.json_response({"error": "want application/json"}, status=415)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "not JSON"}, status=400)
        req = body.get("request") if isinstance(body, dict) else None
        if not isinstance(req, dict) or not req.get("uid"):
            return web.json_response({"error": "not an AdmissionReview with a request"}, status=400)
        return str(req["uid"]), req

    async def _validate(self, request: web.Request) -> web.Response:
        got = await self._review(request)
        if isinstance(got, web.Response):
            return got
        uid, req = got
        self.reviews["validate"] += 1
        allowed, message = validate_review(req, self.validate)
        if not allowed:
            self.reviews["denied"] += 1
            log.info("denied %s %s/%s: %s", (req.get("kind") or {}).get("kind"), req.get("namespace"),
                     req.get("name"), message)
            return web.json_response(review_response(uid, False, message))
        return web.json_response(review_response(uid, True, warnings=[message] if message else None))

    async def _inject(self, request: web.Request) -> web.Response:
        got = await self._review(request)
        if isinstance(got, web.Response):
            return got
        uid, req = got
        self.reviews["inject"] += 1
        patch, why, warnings = inject_review(req, self.inject)
        if patch:
            self.reviews["injected"] += 1
        log.info("injection %s/%s: %s", req.get("namespace"), req.get("name") or
                 ((req.get("object") or {}).get("metadata") or {}).get("generateName"), why)
        return web.json_response(review_response(uid, True, patch=patch, warnings=warnings))

    async def _ready(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")
