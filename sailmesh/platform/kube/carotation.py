"""Root rotation with replicas sharing `istio-ca-secret`: every replica follows the root the Secret holds.

When the root in the Secret changes (an operator replaced ca-cert.pem/ca-key.pem, or a replica's `rotate-root`
wrote a new one), each replica runs the embedded rotation's three steps (sailmesh/ca/rotation.py) on its own CA:

1. trust: the new root joins its trust bundle at once (published: the control plane's root-cert.pem, every CSR
   answer, and, by the Lease holder's webhook writer, the `istio-ca-root-cert` ConfigMaps and webhook caBundles);
   nothing is signed with it yet;
2. sign: once the bundle is out - at least `settle_s` after step 1 (the other replicas see the same watch event and
   take step 1 too), every live workload that got a certificate from this replica holds the new bundle, and the
   root namespace's `istio-ca-root-cert` (when the cluster has one) carries the new root - it signs with the new
   root; the old root stays trusted. A workload that never renews cannot block it for ever: after `switch_max_s`
   it signs anyway and names the workloads it waited for;
3. drop: `drop_after_s` after step 2, once no live workload of this replica holds a certificate of an old root,
   the old roots leave the bundle, except those the Secret's `root-cert.pem` lists (the operator's way to keep a
   root trusted, also across restarts: a replica that starts reads ca-cert.pem plus root-cert.pem).

A replica's `sailmesh x ca rotate-root` (RootFollower.start_rotation) starts the same: it makes a new self-signed
root and writes it with its key into the Secret (a merge patch carrying the resourceVersion it read, so of two
replicas rotating at once one gets 409), refusing while a rotation is under way; its own watch then takes step 1
like every other replica's.

Istio's istiod reloads a changed istio-ca-secret and signs with it at once (SelfSignedCARootCertRotator); the
trust-first order here is the security issue's requirement (no workload may get a certificate its peers cannot
verify yet). A plug-in `cacerts` Secret is not followed (its files are the operator's, as for istiod).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sailmesh.ca.authority import CA_CERT, CA_KEY, ROOT_CERT, check_signer, key_pem, new_root_key, pem, root_certificate
from sailmesh.ca.rotation import RootRotation, fingerprint
from sailmesh.ca.template import SigningKey
from sailmesh.errors import CertificateError, PlatformError
from sailmesh.platform.kube.casecret import CA_SECRET, decode
from sailmesh.platform.kube.client import KubeApiError, KubeConnection
from sailmesh.platform.kube.informer import Informer, KubeResource, Obj

log = logging.getLogger(__name__)

SECRETS = KubeResource("", "v1", "secrets", "Secret")
ROOT_CONFIGMAP, ROOT_CONFIGMAP_KEY = "istio-ca-root-cert", "root-cert.pem"


@dataclass(frozen=True)
class FollowTimings:
    """How long each step waits (seconds)."""

    settle_s: float = 10.0  # step 1 -> 2 at the earliest: the other replicas trust the root too by then
    check_s: float = 2.0  # how often the conditions of steps 2 and 3 are looked at
    switch_max_s: float = 600.0  # step 2 happens by then even if some workload never took the new bundle
    drop_after_s: float = 3600.0  # step 2 -> 3 at the earliest (the other replicas' workloads renew meanwhile)


@dataclass(frozen=True)
class SecretRoot:
    """What istio-ca-secret holds: the signing root and its key, and root-cert.pem's roots (may be empty)."""

    cert: x509.Certificate
    key: SigningKey
    listed: list[x509.Certificate]


def parse(secret: Obj) -> SecretRoot:
    """The Secret's root (PlatformError/CertificateError when it is not a usable CA)."""
    files = decode(secret)
    try:
        cert = x509.load_pem_x509_certificates(files.get(CA_CERT, "").encode())[0]
        key = serialization.load_pem_private_key(files.get(CA_KEY, "").encode(), password=None)
        listed = x509.load_pem_x509_certificates(files[ROOT_CERT].encode()) if files.get(ROOT_CERT) else []
    except (ValueError, IndexError, TypeError) as e:
        raise PlatformError(f"Secret {CA_SECRET}: no usable {CA_CERT}/{CA_KEY}/{ROOT_CERT}: {type(e).__name__}") \
            from None  # never echo key material
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PlatformError(f"Secret {CA_SECRET}: the CA key must be ECDSA or RSA")
    check_signer(cert, key)
    return SecretRoot(cert, key, listed)


class RootFollower:
    """Follows istio-ca-secret in the root namespace (an informer on that one Secret) and rotates this replica's CA
    onto the root it holds; `changed` publishes a new bundle (root-cert.pem, serving certificates)."""

    def __init__(self, conn: KubeConnection, namespace: str, rotation: RootRotation, changed: Callable[[], None],
                 timings: FollowTimings | None = None) -> None:
        self.conn, self.namespace, self.rotation, self.changed = conn, namespace, rotation, changed
        self.timings = timings or FollowTimings()
        self.informer = Informer(conn, SECRETS, self, namespace=namespace, field_selector=f"metadata.name={CA_SECRET}")
        self.kept: list[x509.Certificate] = []  # root-cert.pem's roots as last seen (step 3 keeps them)
        self.steps: list[tuple[str, str]] = []  # (step, root fingerprint) as taken: trust, sign, drop
        self._task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        try:
            await self.informer.run()
        finally:
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task

    # -- the informer's handler -------------------------------------------------------------------------------
    def listed(self, resource: KubeResource, objs: list[Obj]) -> None:
        for obj in objs:
            self.upserted(resource, obj)

    def upserted(self, resource: KubeResource, obj: Obj) -> None:
        try:
            found = parse(obj)
        except (PlatformError, CertificateError) as e:
            log.error("CA: Secret %s/%s changed but cannot be used (%s); keeping the current root",
                      self.namespace, CA_SECRET, e)
            return
        self.kept = found.listed
        ca = self.rotation.authority
        if found.cert == ca.signing_cert or found.cert == self.rotation.pending:
            return
        if self._task is not None:  # a rotation under way is superseded: its root stays trusted
            self._task.cancel()
        self.rotation.follow(found.cert, found.key, found.listed)
        self._step("trust", found.cert)
        self._task = asyncio.create_task(self._rotate(found.cert), name="ca-root-rotation")

    def rotating(self) -> bool:
        """Whether a rotation is under way here (a root trusted and not signing yet, or the old one not dropped)."""
        return self.rotation.pending is not None or (self._task is not None and not self._task.done())

    async def start_rotation(self, trust_domain: str) -> x509.Certificate:
        """A replica-initiated rotation: a new self-signed root and its key written into the Secret, which every
        replica (this one too) then follows; CertificateError while a rotation is under way or when the Secret
        changed meanwhile."""
        if self.rotating():
            raise CertificateError("a root rotation is under way (`sailmesh x ca status` shows its steps); start "
                                   "the next one after its old root was dropped")
        path = f"/api/v1/namespaces/{self.namespace}/secrets/{CA_SECRET}"
        try:
            current: dict[str, Any] = await self.conn.get_json(path)
        except KubeApiError as e:
            raise CertificateError(f"Secret {self.namespace}/{CA_SECRET} cannot be read: {e}") from None
        try:
            held = parse(current).cert
        except (PlatformError, CertificateError):
            held = None  # not a usable CA: writing a usable one is what the operator would do too
        if held is not None and held != self.rotation.authority.signing_cert:
            raise CertificateError(f"Secret {self.namespace}/{CA_SECRET} holds root {fingerprint(held)}, which this "
                                   "replica has not taken up yet: a rotation has just started")
        key = new_root_key()
        root = root_certificate(key, trust_domain)
        patch = {"metadata": {"resourceVersion": str((current.get("metadata") or {}).get("resourceVersion", ""))},
                 "data": {CA_CERT: base64.b64encode(pem(root).encode()).decode(),
                          CA_KEY: base64.b64encode(key_pem(key)).decode()}}
        try:
            await self.conn.send_json("PATCH", path, patch, "application/merge-patch+json")
        except KubeApiError as e:
            if e.code == 409:
                raise CertificateError(f"Secret {self.namespace}/{CA_SECRET} changed meanwhile (another replica or "
                                       "an operator rotated it): look at `sailmesh x ca status`") from None
            raise CertificateError(f"Secret {self.namespace}/{CA_SECRET} not written: {e}") from None
        log.info("CA: wrote the new root %s into Secret %s/%s; every replica follows it", fingerprint(root),
                 self.namespace, CA_SECRET)
        return root

    def deleted(self, resource: KubeResource, obj: Obj) -> None:
        log.warning("CA: Secret %s/%s was deleted; this replica keeps signing with its root (a restart would "
                    "create a new one)", self.namespace, CA_SECRET)

    # -- steps 2 and 3 ----------------------------------------------------------------------------------------
    def _step(self, name: str, root: x509.Certificate) -> None:
        self.steps.append((name, fingerprint(root)))
        self.changed()

    async def _configmap_has(self, root: x509.Certificate) -> bool:
        """Whether the root namespace's istio-ca-root-cert carries `root` (True when there is no such ConfigMap:
        nothing distributes the bundle through it here)."""
        try:
            cm: dict[str, Any] = await self.conn.get_json(
                f"/api/v1/namespaces/{self.namespace}/configmaps/{ROOT_CONFIGMAP}")
        except KubeApiError as e:
            if e.code == 404:
                return True
            raise
        text = str((cm.get("data") or {}).get(ROOT_CONFIGMAP_KEY, ""))
        try:
            return root in x509.load_pem_x509_certificates(text.encode())
        except ValueError:
            return False

    async def _rotate(self, root: x509.Certificate) -> None:
        started = time.monotonic()
        await asyncio.sleep(self.timings.settle_s)
        while True:
            t = self.timings
            waiting = self.rotation.status()["withoutBundle"]
            try:
                published = await self._configmap_has(root)
            except (KubeApiError, OSError) as e:
                published = False
                log.warning("CA: cannot read %s/%s (%s)", self.namespace, ROOT_CONFIGMAP, e)
            if not waiting and published:
                break
            if time.monotonic() - started >= t.switch_max_s:
                log.warning("CA: signing with the new root %s although %s after %.0fs", fingerprint(root),
                            f"{len(waiting)} workload(s) do not hold it: {', '.join(waiting[:10])}" if waiting
                            else f"{ROOT_CONFIGMAP} does not carry it", t.switch_max_s)
                break
            await asyncio.sleep(t.check_s)
        self.rotation.promote()
        self._step("sign", root)
        switched = time.monotonic()
        # (the timings are read on every check: an operator may shorten the wait while it runs)
        while time.monotonic() - switched < self.timings.drop_after_s or self.rotation.status()["onOldRoot"]:
            await asyncio.sleep(self.timings.check_s)
        if self.rotation.drop_old(self.kept):
            self._step("drop", root)
        log.info("CA: root rotation onto %s done (%.0fs after it was signing)", fingerprint(root),
                 time.monotonic() - switched)
