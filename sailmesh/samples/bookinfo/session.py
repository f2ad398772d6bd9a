"""productpage's signed `session` cookie holding the signed-in user (Flask's session, HMAC-SHA256 signed)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

COOKIE_NAME = "session"
# Flask's sample key, as the original productpage hard-codes one; override with SESSION_SECRET.
DEFAULT_SECRET = '_5#y2L"F4Q8z\n\xec]/'


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: str, payload: str) -> str:
    return _b64(hmac.new(secret.encode("utf-8"), payload.encode("ascii"), hashlib.sha256).digest())


def encode_session(secret: str, user: str) -> str:
    """The cookie value for a signed-in user."""
    payload = _b64(json.dumps({"user": user}, separators=(",", ":")).encode("utf-8"))
    return f"{payload}.{_sign(secret, payload)}"


def decode_session(secret: str, value: str | None) -> str:
    """The user in a cookie value, or "" when absent, malformed or not signed with secret."""
    if not value or "." not in value or not value.isascii():
        return ""
    payload, _, signature = value.rpartition(".")
    if not hmac.compare_digest(_sign(secret, payload), signature):
        return ""
    try:
        data = json.loads(_unb64(payload))
    except ValueError:
        return ""
    user = data.get("user") if isinstance(data, dict) else None
    return user if isinstance(user, str) else ""
