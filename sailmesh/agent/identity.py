"""The workload's certificate: a key made here, a CSR to the control plane's CA, renewal at half life with jitter.

The private key is generated in this process for every CSR and leaves it only to Envoy (over the SDS Unix socket,
in a private directory) or into this agent's 0600 files. The token is read from a file (never the
command line, where `ps` would show it) and sent only as `authorization: Bearer` to the CA over TLS, for the first
CSR; renewals present the current certificate on the control plane's mTLS port instead (the token only when that
fails), so a join token may expire once the workload has its first certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import random
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sailmesh.api.identity import spiffe_id
from sailmesh.ca.rotation import INSTANCE_KEY
from sailmesh.ca.service import IstioCertificateRequest, client_call
from sailmesh.errors import AgentError

log = logging.getLogger(__name__)

# Istio's SECRET_GRACE_PERIOD_RATIO and SECRET_GRACE_PERIOD_RATIO_JITTER: renew when half the lifetime is left,
# give or take 1% so that proxies started together do not renew together.
GRACE_RATIO = 0.5
GRACE_JITTER = 0.01
RETRY_MIN_S, RETRY_MAX_S = 0.5, 30.0
CSR_TIMEOUT_S = 10.0
BUNDLE_POLL_S = 2.0  # how often the published trust bundle (ca_root_file) is looked at; a change renews at once


@dataclass(frozen=True)
class WorkloadCertificate:
    """What SDS serves: `default` (chain + key) and `ROOTCA` (the trust bundle), PEM."""

    chain_pem: bytes  # leaf first, without the root
    key_pem: bytes
    roots_pem: bytes
    not_after: datetime.datetime
    received_at: datetime.datetime
    serial: int


@dataclass(frozen=True)
class IdentityOptions:
    """Where the CA is and how to prove who we are."""

    ca_address: str  # host:port of the control plane's TLS port
    ca_root_file: str  # the trust bundle that verifies the CA's serving certificate
    token_file: str  # the join token or projected service-account token (any mode: read_token)
    trust_domain: str
    namespace: str
    service_account: str
    ttl_s: float = 0.0  # requested lifetime (0 = the CA's default, 24 h)
    instance: str = ""  # ns/name, in the CSR's metadata: the CA's root rotation knows who holds which bundle
    renew_address: str = ""  # the control plane's mTLS port: renewals prove the identity with the current certificate


_MODE_NOTED: set[str] = set()


def read_token(path: str) -> str:
    """The stripped content of the token file (AgentError when it cannot be read).

    Its mode is not checked, as Istio's agent reads its token (os.ReadFile): a kubelet projects service-account
    tokens with the volume's defaultMode, 0644 unless set, and only makes them 0600 when every container of the pod
    runs as the same user, which an injected pod (istio-init as root, the proxy as 1337) does not. A token readable
    by group/others is noted once in the log (at info: on Kubernetes it is the normal case); the platforms that
    write join tokens themselves (`sailmesh up`) write them 0600.
    """
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        with open(path, encoding="utf-8") as fh:
            token = fh.read().strip()
    except OSError as e:
        raise AgentError(f"cannot read {path}: {e}") from e
    if mode & 0o077 and path not in _MODE_NOTED:
        _MODE_NOTED.add(path)
        log.info("token file %s is readable by group/others (mode %o), as Kubernetes projects it; using it", path,
                 mode)
    return token


def make_csr(uri: str) -> tuple[bytes, bytes]:
    """A fresh ECDSA P-256 key and a CSR asking for `uri` (Istio's agent asks for its SPIFFE ID): (csr, key) PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True)
           .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return csr.public_bytes(serialization.Encoding.PEM), key_pem


def renew_delay(cert: WorkloadCertificate, rng: random.Random | None = None) -> float:
    """Seconds from receipt until renewal: Istio's grace ratio of what was left at receipt, with jitter."""
    ratio = GRACE_RATIO + (rng or random).uniform(-GRACE_JITTER, GRACE_JITTER)
    left = (cert.not_after - cert.received_at).total_seconds()
    return max(left * ratio, 0.0)


class CertificateManager:
    """Fetches the workload certificate, keeps it renewed, and tells listeners (the SDS server) when it changes."""

    def __init__(self, options: IdentityOptions) -> None:
        self.options = options
        self.current: WorkloadCertificate | None = None
        self.rotations = 0
        self._listeners: list[Callable[[WorkloadCertificate], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.first = asyncio.Event()
        self.bundle_changed = asyncio.Event()
        self._bundle_seen = b""  # the published bundle as of the last CSR

    @property
    def uri(self) -> str:
        return spiffe_id(self.options.trust_domain, self.options.namespace, self.options.service_account)

    def on_change(self, callback: Callable[[WorkloadCertificate], None]) -> None:
        self._listeners.append(callback)

    async def fetch(self, with_certificate: WorkloadCertificate | None = None) -> WorkloadCertificate:
        """One CSR round trip to the CA (raises grpc.aio.AioRpcError or AgentError): with the join token on the CA
        port, or (a renewal) with `with_certificate` as the client certificate on the mTLS port and no token, so
        that a token that expired after the first CSR does not stop renewals."""
        token = "" if with_certificate else read_token(self.options.token_file)
        try:
            with open(self.options.ca_root_file, "rb") as fh:
                ca_roots = fh.read()
        except OSError as e:
            raise AgentError(f"cannot read the CA root {self.options.ca_root_file}: {e}") from e
        self._bundle_seen = ca_roots
        csr, key = make_csr(self.uri)
        metadata: tuple[tuple[str, str], ...] = ()
        if with_certificate is not None:
            creds = grpc.ssl_channel_credentials(root_certificates=ca_roots, private_key=with_certificate.key_pem,
                                                 certificate_chain=with_certificate.chain_pem)
            address = self.options.renew_address
        else:
            creds = grpc.ssl_channel_credentials(root_certificates=ca_roots)
            address, metadata = self.options.ca_address, (("authorization", f"Bearer {token}"),)
        request: Any = IstioCertificateRequest(csr=csr.decode(), validity_duration=int(self.options.ttl_s))
        if self.options.instance:
            request.metadata.update({INSTANCE_KEY: self.options.instance})
        async with grpc.aio.secure_channel(address, creds) as channel:
            response = await client_call(channel)(request, metadata=metadata, timeout=CSR_TIMEOUT_S)
        chain = list(response.cert_chain)
        if len(chain) < 2:
            raise AgentError("the CA answered without a chain (leaf and root expected)")
        leaf = x509.load_pem_x509_certificate(chain[0].encode())
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if self.uri not in names.get_values_for_type(x509.UniformResourceIdentifier):
            raise AgentError(f"the CA signed a certificate for another identity than {self.uri}")
        return WorkloadCertificate(
            chain_pem="".join(chain[:-1]).encode(), key_pem=key, roots_pem=chain[-1].encode(),
            not_after=leaf.not_valid_after_utc, received_at=datetime.datetime.now(datetime.UTC),
            serial=leaf.serial_number)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        self._watcher = asyncio.create_task(self._watch_bundle())

    async def stop(self) -> None:
        for task in (self._task, self._watcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _watch_bundle(self) -> None:
        """Istio's agent watches its mounted root certificate; so does this one: when the control plane publishes
        another trust bundle (a root rotation's step), renew now, so that the new bundle (from the CA's answer,
        over TLS, not from the file) reaches Envoy in seconds rather than at the next half life."""
        while True:
            await asyncio.sleep(BUNDLE_POLL_S)
            try:
                current = await asyncio.to_thread(Path(self.options.ca_root_file).read_bytes)
            except OSError:
                continue
            if self._bundle_seen and current and current != self._bundle_seen:
                log.info("the published trust bundle changed; renewing the certificate of %s now", self.uri)
                self._bundle_seen = current
                self.bundle_changed.set()

    async def _renew_or_fetch(self) -> WorkloadCertificate:
        """A renewal with the current certificate where possible; else (or if that is refused) the join token."""
        current = self.current
        if current is not None and self.options.renew_address and \
                current.not_after > datetime.datetime.now(datetime.UTC):
            try:
                return await self.fetch(with_certificate=current)
            except (grpc.aio.AioRpcError, AgentError) as e:
                detail = e.details() if isinstance(e, grpc.aio.AioRpcError) else str(e)
                log.warning("renewal of %s with its certificate failed (%s); trying the join token", self.uri, detail)
        return await self.fetch()

    async def _run(self) -> None:
        retry = RETRY_MIN_S
        while True:
            self.bundle_changed.clear()  # a change from here on renews again after this CSR
            try:
                cert = await self._renew_or_fetch()
            except (grpc.aio.AioRpcError, AgentError, ValueError) as e:
                detail = e.details() if isinstance(e, grpc.aio.AioRpcError) else str(e)
                log.warning("certificate request for %s failed: %s; retrying in %.1fs", self.uri, detail, retry)
                await asyncio.sleep(retry)
                retry = min(retry * 2, RETRY_MAX_S)
                continue
            retry = RETRY_MIN_S
            if self.current is not None:
                self.rotations += 1
            self.current = cert
            delay = renew_delay(cert)
            log.info("certificate for %s (serial %x) valid until %s; renewing in %.1fs", self.uri, cert.serial,
                     cert.not_after.isoformat(), delay)
            for callback in self._listeners:
                callback(cert)
            self.first.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self.bundle_changed.wait()

