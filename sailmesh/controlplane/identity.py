"""The control plane's identity parts: its CA, the join tokens, the certificate service, its TLS credentials, and
the token that authenticates the local CLI to its HTTP API."""

from __future__ import annotations

import datetime
import hmac
import logging
import secrets
import ssl
import tempfile
from pathlib import Path

import grpc
from cryptography import x509
from google.protobuf import json_format

from sailmesh.api.identity import Identity, parse_spiffe_id, spiffe_id
from sailmesh.ca.authority import CaOptions, CertificateAuthority, issued_by, write_private
from sailmesh.ca.limits import CSR_PER_IDENTITY, Limit
from sailmesh.ca.rotation import RootRotation
from sailmesh.ca.service import CONTROL_PLANE_DNS, CertificateService, ServingCredentials, TokenVerifier, handler
from sailmesh.ca.tokens import JoinTokens
from sailmesh.errors import ValidationError, XdsError
from sailmesh.metrics import CitadelMetrics
from sailmesh.server.ads import NO_PORT_REUSE
from sailmesh.snapshot.node import proxy_view_from_node

log = logging.getLogger("sailmesh.controlplane")

TOKENS_FILE = "join-tokens.json"
API_TOKEN_FILE = "api-token"  # 0600: whoever can read it is the control plane's administrator
# Remote callers of the HTTP API prove this identity with a client certificate the mesh CA signed (`sailmesh x ca
# admin-cert`); no join token can be issued for it, so no workload can hold it.
ADMIN_NAMESPACE, ADMIN_SERVICE_ACCOUNT = "istio-system", "sailmesh-admin"


class MeshIdentity:
    """Owns the CA and everything that proves identities to or for the control plane."""

    def __init__(self, state_dir: str, cacerts_dir: str, options: CaOptions, ips: list[str],
                 metrics: CitadelMetrics | None = None, csr_limit: Limit = CSR_PER_IDENTITY) -> None:
        self._temp: tempfile.TemporaryDirectory[str] | None = None
        if not state_dir:  # in-process tests: an ephemeral root, nothing left behind
            self._temp = tempfile.TemporaryDirectory(prefix="sailmesh-cp-")
            state_dir = self._temp.name
            log.warning("no state dir: the CA root and join tokens live only as long as this process")
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.authority = (CertificateAuthority.plugin(cacerts_dir, options) if cacerts_dir
                          else CertificateAuthority.self_signed(self.state_dir, options))
        self.tokens = JoinTokens(self.state_dir / TOKENS_FILE)
        self.tokens.reserved.add((ADMIN_NAMESPACE, ADMIN_SERVICE_ACCOUNT))
        self.rotation = RootRotation(self.authority)
        self.certificates = CertificateService(self.authority, self.tokens, metrics, self.rotation.holders, csr_limit)
        self.serving = ServingCredentials(self.authority, ips, require_client_auth=True)  # xDS on 15012
        self.bootstrap_serving = ServingCredentials(self.authority, ips)  # first CSR: no client cert yet
        self._bootstrap_server: grpc.aio.Server | None = None
        self.api_token_path = self.state_dir / API_TOKEN_FILE
        self.api_token = secrets.token_urlsafe(32)
        write_private(self.api_token_path, self.api_token.encode())  # a new one each start
        self.root_cert_path = self.state_dir / "root-cert.pem"  # public: agents verify the CA with it
        self._publish_bundle()

    def _publish_bundle(self) -> None:
        """The trust bundle where agents read it (replaced atomically: agents watch it and renew on a change)."""
        tmp = self.root_cert_path.with_name(self.root_cert_path.name + ".tmp")
        tmp.write_text(self.authority.trust_bundle())
        tmp.replace(self.root_cert_path)

    def rotate_root(self, phase: str, force: bool = False) -> dict[str, object]:
        """One step of the root rotation (ca/rotation.py); the bundle is published and the control plane's own
        serving certificates are re-issued (new handshakes verify clients with the new bundle)."""
        status = self.rotation.step(phase, force) if phase != "status" else self.rotation.status()
        if phase != "status":
            self.bundle_changed()
        return status

    def bundle_changed(self) -> None:
        """After a rotation step: publish the trust bundle and re-issue the control plane's own serving certificates
        (new handshakes verify clients with the new bundle, and present a certificate of the signing root)."""
        self._publish_bundle()
        self.serving.renew_now()
        self.bootstrap_serving.renew_now()

    def accept_platform_tokens(self, verifier: TokenVerifier) -> None:
        """Also accept a platform's tokens for first CSRs (Kubernetes: service-account tokens through TokenReview);
        the join tokens keep working beside them."""
        self.certificates.token_verifier = verifier
        log.info("the CA accepts platform tokens (%s) beside join tokens", type(verifier).__name__)

    def grpc_handler(self) -> grpc.GenericRpcHandler:
        return handler(self.certificates)

    def credentials(self) -> grpc.ServerCredentials:
        return self.serving.credentials()

    async def serve_bootstrap(self, host: str, port: int) -> int:
        """The certificate service alone on its own TLS port without client certificates: a workload's first CSR
        (join token) cannot present a certificate, and grpcio cannot ask for one only if given (Go's
        VerifyClientCertIfGiven, which istiod uses on 15012). Returns the bound port."""
        server = grpc.aio.server(options=[NO_PORT_REUSE])  # a second control plane must fail to bind
        server.add_generic_rpc_handlers((self.grpc_handler(),))
        bound = server.add_secure_port(f"{host}:{port}", self.bootstrap_serving.credentials())
        await server.start()
        self._bootstrap_server = server
        return bound

    def authorize_proxy(self, node: object, identities: tuple[str, ...], secure: bool) -> None:
        """Istio's checkConnectionIdentity: over TLS the node's namespace and service account (metadata NAMESPACE
        and SERVICE_ACCOUNT, as the config is generated for them) must be those of a SPIFFE ID in its
        certificate. Stricter than Istio in one point: an unset SERVICE_ACCOUNT is `default`, not "any".
        Plaintext streams (the opt-in loopback debugging port) are not checked."""
        if not secure:
            return
        node_id = getattr(node, "id", "")
        meta = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}  # type: ignore[attr-defined]
        view = proxy_view_from_node(node_id, meta)  # XdsError for a malformed node
        for uri in identities:
            try:
                identity = parse_spiffe_id(uri)
            except ValidationError:
                continue
            if (identity.trust_domain == self.authority.options.trust_domain and identity.namespace == view.namespace
                    and identity.service_account == view.service_account):
                return
        raise XdsError(f"no identities ({', '.join(identities) or 'no client certificate'}) matched "
                       f"{view.namespace}/{view.service_account}")

    @property
    def admin_uri(self) -> str:
        return spiffe_id(self.authority.options.trust_domain, ADMIN_NAMESPACE, ADMIN_SERVICE_ACCOUNT)

    def issue_admin_certificate(self, csr_pem: str, ttl_s: float = 0) -> list[str]:
        """Sign a CSR for the admin identity (the caller is already an administrator): the chain, leaf first."""
        identity = Identity(self.authority.options.trust_domain, ADMIN_NAMESPACE, ADMIN_SERVICE_ACCOUNT)
        issued = self.authority.sign_csr(csr_pem, identity, ttl_s)
        log.info("issued an admin client certificate (serial %x) valid until %s",
                 x509.load_pem_x509_certificate(issued.cert_pem.encode()).serial_number, issued.not_after.isoformat())
        return list(issued.chain)

    def api_ssl_context(self) -> ssl.SSLContext:
        """TLS for the HTTP API's remote port: the CA's serving certificate; a client certificate is asked for and
        verified against the trust bundle when given (none: the request gets a 401, not a failed handshake)."""
        issued, key = self.authority.issue_server(list(CONTROL_PLANE_DNS), self.serving.ips)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=self.authority.trust_bundle())
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.verify_mode = ssl.CERT_OPTIONAL
        folder = self.state_dir / "api-tls"
        folder.mkdir(mode=0o700, exist_ok=True)
        write_private(folder / "key.pem", key)  # ssl loads keys from files only; 0600 in a 0700 dir
        (folder / "cert.pem").write_text("".join(issued.chain[:-1]))
        ctx.load_cert_chain(folder / "cert.pem", folder / "key.pem")
        return ctx

    def certificate_caller(self, der: bytes | None) -> tuple[int, str]:
        """Who a remote API caller's client certificate proves: (0, uri) for the admin; else (401 or 403, why).
        TLS verified it against the bundle of the handshake's time; this checks it against today's CA (a root
        dropped since) and its lifetime again."""
        if not der:
            return 401, "no client certificate"
        try:
            cert = x509.load_der_x509_certificate(der)
            uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
                x509.UniformResourceIdentifier)
        except (ValueError, x509.ExtensionNotFound):
            return 401, "an unreadable client certificate"
        now = datetime.datetime.now(datetime.UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return 401, "an expired client certificate"
        issuers = [self.authority.signing_cert, *self.authority.intermediates, *self.authority.roots]
        if not any(issued_by(cert, issuer) for issuer in issuers):
            return 401, "a client certificate the mesh CA no longer trusts"
        if self.admin_uri not in uris:
            return 403, f"{', '.join(uris) or 'a certificate without SPIFFE ID'} is not the admin identity"
        return 0, self.admin_uri

    def is_admin(self, token: str) -> bool:
        """Whether `token` is the API token (constant-time compare)."""
        return bool(token) and hmac.compare_digest(token.encode(), self.api_token.encode())

    async def stop(self) -> None:
        if self._bootstrap_server is not None:
            await self._bootstrap_server.stop(0)
        self.close()

    def close(self) -> None:
        if self._temp is not None:
            self._temp.cleanup()
