"""`sailmesh explain`: Envoy's jwt_authn filter replayed on its config JSON for one request. Pure (the clock is a
parameter).

Follows envoy/extensions/filters/http/jwt_authn/v3/config.proto as sailmesh generates it (generate/filters/jwt.py,
Istio's convertToEnvoyJwtConfig): each provider looks for a token where it says (`from_headers`, `from_params`,
`from_cookies`; none given: the `Authorization: Bearer` header and the `access_token` query parameter, Envoy's
default); a token is verified by the provider of its issuer against the provider's inline key set (local_jwks),
its audiences and its `exp`/`nbf`. The rule every path gets is "a token, if present, must be valid": no token
passes without a payload (an AuthorizationPolicy with requestPrincipals is what then denies), a bad token gets
Envoy's 401 with jwt_verify_lib's message ("Jwt is expired", "Jwt verification fails", ...), a good one puts its
payload in the dynamic metadata of `envoy.filters.http.jwt_authn` under the provider's `payload_in_metadata`.
Tokens are never printed: only their claims.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sailmesh.explain.routematch import Request

JWT_FILTER = "envoy.filters.http.jwt_authn"
DEFAULT_HEADER, DEFAULT_PREFIX, DEFAULT_PARAM = "authorization", "Bearer ", "access_token"
SPACE_DELIMITED_DEFAULT = ("scope", "permission")


@dataclass(frozen=True)
class JwtResult:
    """What the filter did: passed (with or without a payload) or rejected with Envoy's status and message."""

    allowed: bool
    decision: str
    provider: str = ""
    metadata_key: str = ""
    payload: dict[str, Any] = field(default_factory=dict)


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _locations(provider: Mapping[str, Any]) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    headers = [(str(h.get("name", "")).lower(), str(h.get("value_prefix", "")))
               for h in provider.get("from_headers", [])]
    params = [str(p) for p in provider.get("from_params", [])]
    cookies = [str(c) for c in provider.get("from_cookies", [])]
    if not (headers or params or cookies):
        headers, params = [(DEFAULT_HEADER, DEFAULT_PREFIX)], [DEFAULT_PARAM]
    return headers, params, cookies


def token_of(provider: Mapping[str, Any], req: Request) -> tuple[str, str]:
    """(token, where it was found) for one provider, ("", "") when the request carries none there."""
    headers, params, cookies = _locations(provider)
    for name, prefix in headers:
        value = req.header(name)
        if value is not None and value.startswith(prefix):
            return value[len(prefix):].strip(), f"header {name}"
    query = req.query()
    for p in params:
        if query.get(p):
            return query[p], f"query parameter {p}"
    jar = dict(c.strip().partition("=")[::2] for c in (req.header("cookie") or "").split(";") if "=" in c)
    for c in cookies:
        if jar.get(c):
            return jar[c], f"cookie {c}"
    return "", ""


def _public_key(jwk: Mapping[str, Any]) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if jwk.get("kty") == "RSA":
        n, e = (int.from_bytes(_b64(str(jwk[k])), "big") for k in ("n", "e"))
        return rsa.RSAPublicNumbers(e, n).public_key()
    if jwk.get("kty") == "EC":
        curve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}[str(jwk.get("crv"))]
        x, y = (int.from_bytes(_b64(str(jwk[k])), "big") for k in ("x", "y"))
        return ec.EllipticCurvePublicNumbers(x, y, curve).public_key()
    raise ValueError(f"key type {jwk.get('kty')!r}")


def signature_ok(jwks_text: str, header: Mapping[str, Any], signed: bytes, signature: bytes) -> bool | None:
    """Whether a key of the set verifies the signature (RS*/PS*/ES*); None when no key fits the token's kid/alg."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, utils

    alg = str(header.get("alg", ""))
    digest = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}.get(alg[2:])
    if digest is None or alg[:2] not in ("RS", "PS", "ES"):
        return None
    keys = [k for k in json.loads(jwks_text).get("keys", [])
            if (not header.get("kid") or k.get("kid") in (None, header.get("kid")))
            and (not k.get("alg") or k.get("alg") == alg)]
    tried = False
    for jwk in keys:
        try:
            key = _public_key(jwk)
        except (KeyError, ValueError):
            continue
        tried = True
        try:
            if alg.startswith("ES"):
                half = len(signature) // 2
                der = utils.encode_dss_signature(int.from_bytes(signature[:half], "big"),
                                                 int.from_bytes(signature[half:], "big"))
                key.verify(der, signed, ec.ECDSA(digest))
            elif alg.startswith("PS"):
                key.verify(signature, signed, padding.PSS(padding.MGF1(digest), padding.PSS.AUTO), digest)
            else:
                key.verify(signature, signed, padding.PKCS1v15(), digest)
            return True
        except (InvalidSignature, ValueError, TypeError):
            continue
    return False if tried else None


CLOCK_SKEW_SECONDS = 60  # JwtProvider.clock_skew_seconds default (jwt_verify_lib kClockSkewInSecond)


def _normalized(payload: dict[str, Any], provider: Mapping[str, Any]) -> dict[str, Any]:
    """normalize_payload_in_metadata: space-delimited claims become lists, as Envoy stores them."""
    names = (provider.get("normalize_payload_in_metadata") or {}).get("space_delimited_claims", [])
    return {k: (v.split() if k in names and isinstance(v, str) else v) for k, v in payload.items()}


def verify(token: str, provider_name: str, provider: Mapping[str, Any], now: float) -> JwtResult:
    """One token against one provider: Envoy's verdict and, when good, the payload it stores."""
    try:
        h, p, s = token.split(".")
        header, payload = json.loads(_b64(h)), json.loads(_b64(p))
        signature = _b64(s)
    except ValueError:
        return JwtResult(False, "401 Jwt is not in the form of Header.Payload.Signature", provider_name)
    if not isinstance(payload, dict) or not isinstance(header, dict):
        return JwtResult(False, "401 Jwt verification fails (payload is not a JSON object)", provider_name)
    iss = provider.get("issuer", "")
    if iss and payload.get("iss") != iss:
        return JwtResult(False, f"401 Jwt issuer is not configured (token issuer {payload.get('iss')!r})",
                         provider_name)
    audiences = list(provider.get("audiences", []))
    aud = payload.get("aud", [])
    aud = [aud] if isinstance(aud, str) else list(aud or [])
    if audiences and not set(audiences) & set(aud):
        return JwtResult(False, f"401 Audiences in Jwt are not allowed (token audiences {aud}, allowed "
                                f"{audiences})", provider_name)
    # jwt_verify_lib's time checks, whole seconds, with the provider's clock skew (Envoy's default 60 s, which
    # Istio leaves unset): expired when now > exp + skew, not yet valid when now + skew < nbf.
    skew = int(provider.get("clock_skew_seconds", CLOCK_SKEW_SECONDS))
    second = int(now)
    if isinstance(payload.get("exp"), int | float) and payload["exp"] and second > payload["exp"] + skew:
        return JwtResult(False, "401 Jwt is expired", provider_name)
    if isinstance(payload.get("nbf"), int | float) and second + skew < payload["nbf"]:
        return JwtResult(False, "401 Jwt not yet valid", provider_name)
    jwks = str((provider.get("local_jwks") or {}).get("inline_string", ""))
    if not jwks:
        return JwtResult(False, "the provider fetches its keys remotely (not simulated)", provider_name)
    ok = signature_ok(jwks, header, f"{h}.{p}".encode(), signature)
    if ok is None:
        return JwtResult(False, "401 Jwks doesn't have key to match kid or alg from Jwt", provider_name)
    if not ok:
        return JwtResult(False, "401 Jwt verification fails", provider_name)
    key = str(provider.get("payload_in_metadata", ""))
    return JwtResult(True, f"valid token of issuer {payload.get('iss', '')!r}, subject {payload.get('sub', '')!r}",
                     provider_name, key, _normalized(payload, provider))


def authenticate(config: Mapping[str, Any], req: Request, now: float | None = None) -> JwtResult:
    """The filter's verdict for one request (the rule sailmesh generates: a token, if present, must be valid)."""
    now = time.time() if now is None else now
    providers: Mapping[str, Any] = config.get("providers", {})
    found = [(name, prov, *token_of(prov, req)) for name, prov in sorted(providers.items())]
    found = [f for f in found if f[2]]
    if not found:
        return JwtResult(True, "no token in the request: passes without a payload (only an AuthorizationPolicy "
                               "with requestPrincipals or request.auth.* can deny it)")
    failures = []
    for name, prov, token, where in found:
        result = verify(token, name, prov, now)
        if result.allowed:
            return JwtResult(True, f"{result.decision} (from the {where}, provider {name})", name,
                             result.metadata_key, result.payload)
        failures.append(result)
    # Envoy reports the failure of the provider whose issuer the token names, else the first
    best = next((f for f in failures if "issuer is not configured" not in f.decision), failures[0])
    return JwtResult(False, best.decision, best.provider)
