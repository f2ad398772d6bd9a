"""TLS parameter names the mesh accepts: Istio's valid cipher suites (BoringSSL names), the ECDH curves Envoy knows."""

from __future__ import annotations

# Istio's security.ValidCipherSuites (BoringSSL's names without PSK): what Gateway `cipherSuites` and the mesh
# config's `meshMTLS` / `tlsDefaults` `cipherSuites` may name
CIPHER_SUITES = frozenset({
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA", "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-SHA", "AES256-SHA", "DES-CBC3-SHA",
})

# The groups this Envoy's BoringSSL accepts in TlsParameters.ecdh_curves (checked with `envoy --mode validate`; any
# other name, e.g. P-224 or X25519Kyber768Draft00, makes Envoy reject the listener or cluster, so validation refuses
# it before it reaches a proxy)
ECDH_CURVES = frozenset({"P-256", "P-384", "P-521", "X25519", "X25519MLKEM768", "MLKEM1024"})


def valid_cipher_suite(suite: str) -> bool:
    """Istio's security.IsValidCipherSuite: a known name, `ALL`, or an expression starting with an operator."""
    if suite in ("", "ALL") or not suite[0].isalnum():
        return True
    return suite in CIPHER_SUITES
