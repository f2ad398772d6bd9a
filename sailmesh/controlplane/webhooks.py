"""The control plane's admission webhooks on Kubernetes: the :15017 server, the caBundle it keeps patched into
the webhook configurations it owns, and the mesh root published to every namespace (as istiod does).

- `WebhookServer` (webhook/server.py) serves validation and injection with a certificate from the mesh CA.
- The ValidatingWebhookConfiguration `istio-validator-istio-system` and the MutatingWebhookConfiguration
  `istio-sidecar-injector` (install/manifests.py writes them) get every webhook's `clientConfig.caBundle` set to
  the CA's trust bundle; the validating one's `failurePolicy` goes from Ignore (as installed) to Fail once the
  bundle is in, as istiod's webhook controller does, so config cannot bypass validation while istiod runs.
- ConfigMap `istio-ca-root-cert` (key `root-cert.pem`) in every namespace but kube-system/kube-public/
  kube-node-lease: injected proxies mount it to verify the control plane.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sailmesh.ca.authority import CertificateAuthority
from sailmesh.ca.service import CONTROL_PLANE_DNS
from sailmesh.errors import PlatformError
from sailmesh.platform.kube.client import KubeApiError, KubeConnection
from sailmesh.platform.kube.informer import Informer, KubeResource, Obj
from sailmesh.webhook.inject import ROOT_CERT_CONFIGMAP, InjectionConfig
from sailmesh.webhook.server import Validate, WebhookServer

log = logging.getLogger(__name__)

VALIDATING = KubeResource("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations",
                          "ValidatingWebhookConfiguration", False)
MUTATING = KubeResource("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations",
                        "MutatingWebhookConfiguration", False)
NAMESPACES = KubeResource("", "v1", "namespaces", "Namespace", False)
CONFIGMAPS = KubeResource("", "v1", "configmaps", "ConfigMap")
VALIDATOR_NAME = "istio-validator-istio-system"
INJECTOR_NAME = "istio-sidecar-injector"
NO_ROOT_CERT = ("kube-system", "kube-public", "kube-node-lease")


@dataclass
class WebhookWriter:
    """Keeps the caBundle of the webhook configurations and the namespaces' root-cert ConfigMaps current.

    The informers' handler methods only queue what to look at; one task does the writes (GET, change, PUT,
    retried on a conflict), so the API server sees one writer per object.
    """

    conn: KubeConnection
    bundle: Callable[[], str]
    names: tuple[str, str] = (VALIDATOR_NAME, INJECTOR_NAME)
    patched: dict[str, int] = field(default_factory=dict)  # name -> times written (tests, /debug)
    _queue: asyncio.Queue[tuple[KubeResource, str]] = field(default_factory=asyncio.Queue)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _namespaces: set[str] = field(default_factory=set)
    informers: list[Informer] = field(default_factory=list)
    manager: str = ""  # the field manager named in every write (with replicas: the leader's identity)

    # -- informer handler -----------------------------------------------------------------------
    def listed(self, resource: KubeResource, objs: list[Obj]) -> None:
        for o in objs:
            self.upserted(resource, o)

    def upserted(self, resource: KubeResource, obj: Obj) -> None:
        name = str((obj.get("metadata") or {}).get("name") or "")
        if resource is NAMESPACES:
            if name not in NO_ROOT_CERT and not (obj.get("metadata") or {}).get("deletionTimestamp"):
                self._namespaces.add(name)
                self._queue.put_nowait((CONFIGMAPS, name))
        elif name in self.names and self._needs_bundle(resource, obj):
            self._queue.put_nowait((resource, name))

    def deleted(self, resource: KubeResource, obj: Obj) -> None:
        if resource is NAMESPACES:
            self._namespaces.discard(str((obj.get("metadata") or {}).get("name") or ""))

    def _needs_bundle(self, resource: KubeResource, obj: Obj) -> bool:
        want = base64.b64encode(self.bundle().encode()).decode()
        for hook in obj.get("webhooks") or ():
            if (hook.get("clientConfig") or {}).get("caBundle") != want:
                return True
            if resource is VALIDATING and hook.get("failurePolicy") != "Fail":
                return True
        return False

    # -- writes ---------------------------------------------------------------------------------
    async def _patch_config(self, resource: KubeResource, name: str) -> None:
        want = base64.b64encode(self.bundle().encode()).decode()
        for _ in range(5):
            try:
                obj = await self.conn.get_json(resource.path(name=name))
            except KubeApiError as e:
                if e.code == 404:
                    return
                raise
            if not self._needs_bundle(resource, obj):
                return
            for hook in obj.get("webhooks") or ():
                hook.setdefault("clientConfig", {})["caBundle"] = want
                if resource is VALIDATING:
                    hook["failurePolicy"] = "Fail"  # istiod: Ignore until the webhook is known to work
            try:
                await self.conn.send_json("PUT", resource.path(name=name), obj, params=self._params())
            except KubeApiError as e:
                if e.code == 409:  # changed meanwhile: read it again
                    continue
                raise
            self.patched[name] = self.patched.get(name, 0) + 1
            log.info("patched the CA bundle into %s %s", resource.kind, name)
            return

    async def _publish_root(self, namespace: str) -> None:
        body = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": ROOT_CERT_CONFIGMAP, "namespace": namespace,
                             "labels": {"istio.io/config": "true"}},
                "data": {"root-cert.pem": self.bundle()}}
        path = CONFIGMAPS.path(namespace, ROOT_CERT_CONFIGMAP)
        try:
            current = await self.conn.get_json(path)
        except KubeApiError as e:
            if e.code != 404:
                raise
            try:
                await self.conn.send_json("POST", CONFIGMAPS.path(namespace), body, params=self._params())
            except KubeApiError as e2:
                if e2.code not in (403, 409):  # 403: the namespace is terminating; 409: created meanwhile
                    raise
            return
        if (current.get("data") or {}).get("root-cert.pem") != self.bundle():
            current["data"] = body["data"]
            await self.conn.send_json("PUT", path, current, params=self._params())

    def _params(self) -> dict[str, str]:
        return {"fieldManager": self.manager} if self.manager else {}

    async def lead(self) -> None:
        """A leader task (platform/kube/lease.py): write while this replica holds the Lease, stop when it does not."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def _worker(self) -> None:
        while True:
            resource, name = await self._queue.get()
            try:
                if resource is CONFIGMAPS:
                    await self._publish_root(name)
                else:
                    await self._patch_config(resource, name)
            except (KubeApiError, PlatformError, OSError) as e:
                log.warning("webhook/root-cert write for %s %s failed (%s); retrying", resource.kind, name, e)
                await asyncio.sleep(1.0)
                self._queue.put_nowait((resource, name))

    def refresh(self) -> None:
        """The trust bundle changed (root rotation): write it everywhere again."""
        for r, n in ((VALIDATING, self.names[0]), (MUTATING, self.names[1])):
            self._queue.put_nowait((r, n))
        for ns in sorted(self._namespaces):
            self._queue.put_nowait((CONFIGMAPS, ns))

    async def _follow_bundle(self, interval_s: float = 5.0) -> None:
        """Notice a new trust bundle (a root rotation adds and later drops roots) and rewrite it."""
        seen = self.bundle()
        while True:
            await asyncio.sleep(interval_s)
            now = self.bundle()
            if now != seen:
                seen = now
                log.info("trust bundle changed: rewriting the webhooks' caBundle and istio-ca-root-cert")
                self.refresh()

    async def start(self) -> None:
        self.informers = [Informer(self.conn, VALIDATING, self, field_selector=f"metadata.name={self.names[0]}"),
                          Informer(self.conn, MUTATING, self, field_selector=f"metadata.name={self.names[1]}"),
                          Informer(self.conn, NAMESPACES, self)]
        self._tasks = [asyncio.create_task(i.run(), name=f"webhook-writer-{i.resource.plural}")
                       for i in self.informers]
        self._tasks.append(asyncio.create_task(self._worker(), name="webhook-writer"))
        self._tasks.append(asyncio.create_task(self._follow_bundle(), name="webhook-bundle"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()


@dataclass
class Webhooks:
    """The webhook server plus, with an API server, the writer that keeps its configurations trusted."""

    server: WebhookServer
    writer: WebhookWriter | None = None

    @classmethod
    async def start(cls, authority: CertificateAuthority, validate: Validate, injection: InjectionConfig,
                    host: str, port: int, conn: KubeConnection | None, extra_sans: tuple[str, ...] = (),
                    start_writer: bool = True) -> Webhooks:
        """Serve on host:port (0: any free port; the bound port is `server.port`); patch when conn is given
        (start_writer False: the caller runs `writer.lead` as a leader task instead)."""
        ips = sorted({a for a in ("127.0.0.1", host, *extra_sans) if _is_ip(a)})
        names = [*CONTROL_PLANE_DNS, *(a for a in extra_sans if not _is_ip(a))]
        server = WebhookServer(authority, validate, injection, names, ips)
        await server.start(host, port)
        writer = WebhookWriter(conn, authority.trust_bundle) if conn is not None else None
        if writer is not None and start_writer:
            await writer.start()
        return cls(server, writer)

    async def stop(self) -> None:
        if self.writer is not None:
            await self.writer.stop()
        await self.server.stop()


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True
