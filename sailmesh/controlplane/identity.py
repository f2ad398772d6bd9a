"""The control plane's identity parts: its CA, the join tokens, the certificate service, its TLS credentials, and
the token that authenticates the local CLI to its HTTP API."""

from __future__ import annotations

import hmac
import logging
import secrets
import tempfile
from pathlib import Path

import grpc

from sailmesh.ca.authority import CaOptions, CertificateAuthority, write_private
from sailmesh.ca.service import CertificateService, ServingCredentials, handler
from sailmesh.ca.tokens import JoinTokens

log = logging.getLogger("sailmesh.controlplane")

TOKENS_FILE = "join-tokens.json"
API_TOKEN_FILE = "api-token"  # 0600: whoever can read it is the control plane's administrator


class MeshIdentity:
    """Owns the CA and everything that proves identities to or for the control plane."""

    def __init__(self, state_dir: str, cacerts_dir: str, options: CaOptions, ips: list[str]) -> None:
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
        self.certificates = CertificateService(self.authority, self.tokens)
        self.serving = ServingCredentials(self.authority, ips)
        self.api_token_path = self.state_dir / API_TOKEN_FILE
        self.api_token = secrets.token_urlsafe(32)
        write_private(self.api_token_path, self.api_token.encode())  # a new one each start
        self.root_cert_path = self.state_dir / "root-cert.pem"  # public: agents verify the CA with it
        self.root_cert_path.write_text(self.authority.trust_bundle())

    def grpc_handler(self) -> grpc.GenericRpcHandler:
        return handler(self.certificates)

    def credentials(self) -> grpc.ServerCredentials:
        return self.serving.credentials()

    def is_admin(self, token: str) -> bool:
        """Whether `token` is the API token (constant-time compare)."""
        return bool(token) and hmac.compare_digest(token.encode(), self.api_token.encode())

    def close(self) -> None:
        if self._temp is not None:
            self._temp.cleanup()
