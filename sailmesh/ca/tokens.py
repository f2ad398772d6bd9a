"""Join tokens: opaque random secrets the CA issues for one (namespace, service account), stored only as hashes.

A token proves "the platform that started me was allowed to run this service account"; the CA signs a CSR
for exactly that identity and no other. The value is returned once, to the issuer's caller, and never
logged; the CA keeps SHA-256 digests (in a 0600 file when given a path, so tokens survive a restart and agents
can renew after one). Tokens are 32 random bytes, so an unsalted fast hash is enough: nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sailmesh.ca.authority import write_private
from sailmesh.errors import AuthenticationError, CertificateError

log = logging.getLogger("sailmesh.ca")

TOKEN_BYTES = 32
TOKEN_PREFIX = "smjt."  # recognisable in a leak scan; carries no information


@dataclass(frozen=True)
class TokenGrant:
    """What a token is bound to."""

    namespace: str
    service_account: str
    issued_at: float


def digest(token: str) -> str:
    """The stored form of a token (never the token itself)."""
    return hashlib.sha256(token.encode()).hexdigest()


class JoinTokens:
    """Issue, check and revoke join tokens; persisted (hashes only) to `path` when given."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else None
        self._grants: dict[str, TokenGrant] = {}
        if self.path is not None and self.path.exists():
            mode = self.path.stat().st_mode & 0o777
            if mode & 0o077:
                raise CertificateError(f"{self.path} is readable by others (mode {mode:o}); it must be 0600")
            try:
                data = json.loads(self.path.read_text())
                self._grants = {h: TokenGrant(**g) for h, g in data.items()}
            except (OSError, ValueError, TypeError) as e:
                raise CertificateError(f"cannot read join tokens from {self.path}: {e}") from e

    def issue(self, namespace: str, service_account: str) -> str:
        """A new token for (namespace, service account); the only time its value exists outside the caller."""
        if not namespace or not service_account:
            raise CertificateError("a join token needs a namespace and a service account")
        token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
        self._grants[digest(token)] = TokenGrant(namespace, service_account, time.time())
        self._save()
        log.info("issued a join token for ns/%s/sa/%s", namespace, service_account)
        return token

    def authenticate(self, token: str) -> TokenGrant:
        """The grant of a token; AuthenticationError (without the token's value) if it is unknown."""
        grant = self._grants.get(digest(token)) if token else None
        if grant is None:
            raise AuthenticationError("unknown or revoked join token" if token else "no join token")
        return grant

    def revoke(self, namespace: str, service_account: str) -> int:
        """Revoke every token of one identity; how many."""
        gone = [h for h, g in self._grants.items() if (g.namespace, g.service_account) == (namespace, service_account)]
        for h in gone:
            del self._grants[h]
        self._save()
        return len(gone)

    def __len__(self) -> int:
        return len(self._grants)

    def _save(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_private(self.path, json.dumps({h: asdict(g) for h, g in self._grants.items()}).encode())
