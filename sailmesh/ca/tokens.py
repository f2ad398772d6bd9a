"""Join tokens: opaque random secrets the CA issues for one (namespace, service account), stored only as hashes.

A token proves "the platform that started me was allowed to run this service account"; the CA signs a CSR
for exactly that identity and no other. A token may expire (`ttl_s` at issue); revoking an identity deletes its
tokens and records when, so that certificates issued before the revocation cannot be used to renew either.
The value is returned once, to the issuer's caller, and never
logged; the CA keeps SHA-256 digests (in a 0600 file when given a path, so tokens survive a restart and agents
can renew after one). Tokens are 32 random bytes, so an unsalted fast hash is enough: nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable
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
    expires_at: float = 0.0  # 0: does not expire


def digest(token: str) -> str:
    """The stored form of a token (never the token itself)."""
    return hashlib.sha256(token.encode()).hexdigest()


class JoinTokens:
    """Issue, check and revoke join tokens; persisted (hashes only) to `path` when given."""

    def __init__(self, path: str | Path | None = None, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path) if path else None
        self._clock = clock
        self._grants: dict[str, TokenGrant] = {}
        self._revoked: dict[str, float] = {}  # "ns/sa" -> when its tokens were last revoked
        self.reserved: set[tuple[str, str]] = set()  # identities no token may prove (the API's admin identity)
        if self.path is not None and self.path.exists():
            mode = self.path.stat().st_mode & 0o777
            if mode & 0o077:
                raise CertificateError(f"{self.path} is readable by others (mode {mode:o}); it must be 0600")
            try:
                data = json.loads(self.path.read_text())
                if "tokens" not in data:  # the first format: hashes to grants only
                    data = {"tokens": data}
                self._grants = {h: TokenGrant(**g) for h, g in data["tokens"].items()}
                self._revoked = {k: float(v) for k, v in data.get("revoked", {}).items()}
            except (OSError, ValueError, TypeError) as e:
                raise CertificateError(f"cannot read join tokens from {self.path}: {e}") from e

    def issue(self, namespace: str, service_account: str, ttl_s: float = 0.0) -> str:
        """A new token for (namespace, service account), valid `ttl_s` seconds (0: until revoked); the only time
        its value exists outside the caller."""
        if not namespace or not service_account:
            raise CertificateError("a join token needs a namespace and a service account")
        if ttl_s < 0:
            raise CertificateError("a join token's lifetime cannot be negative")
        if (namespace, service_account) in self.reserved:
            raise CertificateError(f"ns/{namespace}/sa/{service_account} is reserved (the control plane's admin "
                                   "identity); no join token is issued for it")
        token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
        now = self._clock()
        self._grants[digest(token)] = TokenGrant(namespace, service_account, now, now + ttl_s if ttl_s else 0.0)
        self._save()
        log.info("issued a join token for ns/%s/sa/%s%s", namespace, service_account,
                 f" valid {ttl_s:.0f}s" if ttl_s else "")
        return token

    def authenticate(self, token: str) -> TokenGrant:
        """The grant of a token; AuthenticationError (without the token's value) if it is unknown or expired."""
        key = digest(token) if token else ""
        grant = self._grants.get(key) if token else None
        if grant is None:
            raise AuthenticationError("unknown or revoked join token" if token else "no join token")
        if grant.expires_at and self._clock() >= grant.expires_at:
            del self._grants[key]
            self._save()
            raise AuthenticationError(f"expired join token (ns/{grant.namespace}/sa/{grant.service_account})")
        return grant

    def revoke(self, namespace: str, service_account: str) -> int:
        """Revoke every token of one identity, and certificate renewals by certificates issued until now; how many
        tokens."""
        gone = [h for h, g in self._grants.items() if (g.namespace, g.service_account) == (namespace, service_account)]
        for h in gone:
            del self._grants[h]
        self._revoked[f"{namespace}/{service_account}"] = self._clock()
        self._save()
        log.warning("revoked %d join token(s) of ns/%s/sa/%s", len(gone), namespace, service_account)
        return len(gone)

    def revoked_at(self, namespace: str, service_account: str) -> float:
        """When the identity's tokens were last revoked (0: never)."""
        return self._revoked.get(f"{namespace}/{service_account}", 0.0)

    def __len__(self) -> int:
        return len(self._grants)

    def _save(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            data = {"tokens": {h: asdict(g) for h, g in self._grants.items()}, "revoked": self._revoked}
            write_private(self.path, json.dumps(data).encode())
