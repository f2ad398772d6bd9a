"""redact: private keys, tokens, JWTs and Secret data never leave in a bug report."""

from __future__ import annotations

import base64
import json

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sailmesh.cli import redact


def pem_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def test_keys_tokens_and_literals_are_replaced() -> None:
    pem = pem_key()
    body = pem.splitlines()[1]
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJqYXNvbiJ9.c2lnbmF0dXJlc2lnbmF0dXJl"
    text = "\n".join([
        "log: loaded key", pem,                                   # raw PEM
        json.dumps({"private_key": pem}),                         # PEM in JSON (escaped newlines)
        json.dumps({"inline_bytes": base64.b64encode(pem.encode()).decode()}),  # base64 PEM, as Envoy/agent write
        "Authorization: Bearer s3cr3t-token-value", f"token {jwt}", "join token abcdefgh12345678 used"])
    out = redact.text(text, ["abcdefgh12345678"])
    for secret in (body, "s3cr3t-token-value", jwt, "abcdefgh12345678", base64.b64encode(pem.encode()).decode()[:60]):
        assert secret not in out, secret
    assert "PRIVATE KEY" not in out
    assert out.count("[redacted") == 6 and "log: loaded key" in out


def test_public_material_stays() -> None:
    cert_like = base64.b64encode(b"-----BEGIN CERTIFICATE-----" + b"x" * 200).decode()
    text = f'{{"certificate_chain": {{"inline_bytes": "{cert_like}"}}, "name": "istio-ingressgateway"}}'
    assert redact.text(text, ["short"]) == text  # literals under 8 characters are ignored: too likely to be words


def test_secret_documents_keep_keys_not_values() -> None:
    doc = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tls"},
           "data": {"tls.key": "QUJD", "tls.crt": "REVG"}, "stringData": {"password": "hunter2"}}
    out = redact.document(doc)
    assert out["data"] == {"tls.key": "[redacted 4 chars]", "tls.crt": "[redacted 4 chars]"}
    assert out["stringData"] == {"password": "[redacted 7 chars]"} and doc["data"]["tls.key"] == "QUJD"
    assert redact.document({"kind": "ConfigMap", "data": {"a": "b"}})["data"] == {"a": "b"}


def test_known_key_lines_do_not_break_the_pem_pattern() -> None:
    # the state dir's key files are passed as literals line by line, armor included; another key in a log (same
    # armor lines) must still go whole
    pem = pem_key()
    out = redact.text(f"log\n{pem}\n", pem_key().splitlines())
    assert "PRIVATE KEY" not in out and all(line not in out for line in pem.splitlines()[1:-1])


def test_a_base64_key_is_found_at_every_alignment_and_case() -> None:
    # text() skips a pattern's scan when the text cannot match it (cheap substring checks): a base64 blob holding
    # a private key anywhere (after 0, 1 or 2 bytes of a 3-byte group) and `BEARER` in any case still go
    pem = pem_key()
    for prefix in ("", "x", "xy", "xyz", "certificate and "):
        blob = base64.b64encode((prefix + pem).encode()).decode()
        out = redact.text(json.dumps({"inline_bytes": blob}))
        assert blob[:100] not in out and "[redacted base64 private key]" in out, prefix
    assert redact.text("AUTHORIZATION: BEARER abcdefghij") == "AUTHORIZATION: BEARER [redacted token]"
    blob = base64.b64encode(b"public data " * 20).decode()
    assert redact.text(blob) == blob  # not a key: stays
