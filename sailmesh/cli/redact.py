"""Secret material taken out of text before it leaves the machine (bug-report): pure functions.

What counts as secret: PEM private keys (raw, or base64 inside JSON as Envoy and the agent write them), bearer
tokens, JWTs, the data of Kubernetes Secrets, and any literal value the caller knows to be secret (the mesh's API
token, join tokens, key files). Each is replaced by a marker that says what was there, never by a hash of it.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from typing import Any

PEM_KEY = re.compile(r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.DOTALL)
BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
BASE64 = re.compile(r"[A-Za-z0-9+/]{80,}={0,2}")
PEM_ESCAPED = re.compile(r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----(?:\\n|[^-])*?-----END \1PRIVATE KEY-----")


def _b64_signatures(phrase: bytes) -> tuple[str, ...]:
    """The base64 text every encoding of `phrase` contains, one per alignment (offset mod 3 in the blob): a blob
    that decodes to something holding the phrase holds one of these."""
    out = []
    for pad in (0, 1, 2):
        enc = base64.b64encode(b"\0" * pad + phrase).decode()
        first, last = -(-pad // 3), (pad + len(phrase)) // 3  # the 3-byte groups wholly inside the phrase
        out.append(enc[4 * first:4 * last])
    return tuple(out)


# Cheap checks that let text() skip a pattern's scan (a bug report is megabytes of JSON with none of them): the
# same redactions, without running five regular expressions over text that cannot match them.
B64_PRIVATE_KEY = _b64_signatures(b"PRIVATE KEY")


def _b64_key(match: re.Match[str]) -> str:
    blob = match.group(0)
    try:
        decoded = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=False)
    except (binascii.Error, ValueError):
        return blob
    return "[redacted base64 private key]" if b"PRIVATE KEY" in decoded else blob


def text(value: str, literals: Iterable[str] = ()) -> str:
    """`value` with every private key, token and known secret literal replaced by a marker."""
    if "PRIVATE KEY-----" in value:
        value = PEM_KEY.sub("[redacted private key]", value)  # keys first: a literal must not break a PEM block
        # a PEM key inside a JSON string has its newlines escaped
        value = PEM_ESCAPED.sub("[redacted private key]", value)
    for lit in sorted({s for s in literals if len(s) >= 8 and not s.startswith("-----")}, key=len, reverse=True):
        value = value.replace(lit, "[redacted secret]")
    if "bearer" in value.lower():
        value = BEARER.sub(r"\1[redacted token]", value)
    if "eyJ" in value:
        value = JWT.sub("[redacted JWT]", value)
    if any(sig in value for sig in B64_PRIVATE_KEY):
        value = BASE64.sub(_b64_key, value)
    return value


def document(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A config document with a Secret's `data` / `stringData` values replaced (their keys stay visible)."""
    out = dict(doc)
    if out.get("kind") == "Secret":
        for field in ("data", "stringData"):
            if isinstance(out.get(field), Mapping):
                out[field] = {k: f"[redacted {len(str(v))} chars]" for k, v in out[field].items()}
    return out
