"""The control plane's identity parts: its CA, the join tokens, the certificate service, its TLS credentials, and
the token that authenticates the local CLI to its HTTP API."""

from __future__ import annotations

import hmac
import logging
import secrets
import tempfile
from pathlib import Path

import grpc
from google.protobuf import json_format

from sailmesh.api.identity import parse_spiffe_id
from sailmesh.ca.authority import CaOptions, CertificateAuthority, write_private
from sailmesh.ca.rotation import RootRotation
from sailmesh.ca.service import CertificateService, ServingCredentials, handler
from sailmesh.ca.tokens import JoinTokens
from sailmesh.errors import ValidationError, XdsError
from sailmesh.metrics import CitadelMetrics
from sailmesh.server.ads import NO_PORT_REUSE
from sailmesh.snapshot.node import proxy_view_from_node

log = logging.getLogger("sailmesh.controlplane")

TOKENS_FILE = "join-tokens.json"
API_TOKEN_FILE = "api-token"  # 0600: whoever can read it is the control plane's administrator


class MeshIdentity:
    """Owns the CA and everything that proves identities to or for the control plane."""

    def __init__(self, state_dir: str, cacerts_dir: str, options: CaOptions, ips: list[str],
                 metrics: CitadelMetrics | None = None) -> None:
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
        self.rotation = RootRotation(self.authority)
        self.certificates = CertificateService(self.authority, self.tokens, metrics, self.rotation.holders)
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
            self._publish_bundle()
            self.serving.renew_now()
            self.bootstrap_serving.renew_now()
        return status

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
