"""A Gateway API listener's `tls` -> the Istio server's `tls`, as Istio's buildTLS (kube/gateway/conversion.go) does.

- Passthrough -> PASSTHROUGH.
- Terminate -> SIMPLE; `options["gateway.istio.io/tls-terminate-mode"]` MUTUAL / OPTIONAL_MUTUAL change the mode,
  ISTIO_MUTUAL (the proxy's mesh certificate, clients need one from the mesh CA) and ISTIO_SIMPLE (the proxy's mesh
  certificate served, `builtin://`) take no certificateRefs; `options["gateway.istio.io/tls-cipher-suites"]` ->
  cipherSuites (Istio's FilterCipherSuites). Istio reads no other option (generate/gatewayapi/unenforced says so).
- certificateRefs: at most 2 (Istio 1.27+: an RSA and an ECDSA certificate served on one chain, credentialNames);
  each a Secret, of another namespace only with a ReferenceGrant there. Refs that cannot be used are dropped as
  long as one can; with none usable the listener's ResolvedRefs says why (its first problem). With no ref at all
  (options only) Istio builds a server without a certificate; sailmesh builds none (InvalidCertificateRef).
- frontendValidation.caCertificateRefs (the Gateway API v1.3 listener field; Istio 1.28 reads the same from the
  Gateway's `tls.frontend`): one ConfigMap or Secret (cross-namespace with a ReferenceGrant) -> MUTUAL with
  `caCertCredentialName` `configmap://<ns>/<name>-cacert` / `kubernetes-gateway://<ns>/<name>-cacert`; the
  terminate-mode option may still make it OPTIONAL_MUTUAL; its `mode: AllowInsecureFallback` (Gateway API v1.4) ->
  OPTIONAL_MUTUAL with `insecureSkipVerify` (Istio's buildTLS; a terminate-mode option overrides it). More than
  one, another kind, or a missing one: the listener is not Accepted (NoValidCACertificate) as Istio reports it -
  and, unlike Istio, which then serves the listener without client validation, no server is built (it fails
  closed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sailmesh.generate.gateway_tls import (
    BUILTIN_CREDENTIAL,
    CA_SUFFIX,
    CONFIGMAP_PREFIX,
    GATEWAY_CREDENTIAL_PREFIX,
    filtered_cipher_suites,
)
from sailmesh.generate.gatewayapi.tls_options import CIPHER_SUITES_KEY, TERMINATE_MODE_KEY

MAX_CERTIFICATES = 2
CA_REASONS = frozenset({"InvalidCACertificateRef", "InvalidCACertificateKind", "RefNotPermitted"})


@dataclass
class Refs:
    """What a listener's references resolve against."""

    gateway_ns: str
    has_secret: Callable[[str, str], bool]  # (namespace, name)
    ca_data: Callable[[str, str, str], Mapping[str, Any] | None]  # (kind, namespace, name) -> data keys
    grant_allows: Callable[[str, str, str, str, str], bool]  # (from kind, from ns, to kind, to ns, to name)


@dataclass
class ListenerTls:
    """The server's `tls` (None: build no server) and the listener's problem (reason, message), if any."""

    tls: dict[str, Any] | None
    problem: tuple[str, str] | None = None

    @property
    def ca_problem(self) -> bool:
        """Istio reports a CA (or RefNotPermitted) problem as Accepted=False NoValidCACertificate."""
        return self.problem is not None and self.problem[0] in CA_REASONS


def _certificates(refs: list[Mapping[str, Any]], r: Refs) -> tuple[list[str], tuple[str, str] | None]:
    """The credential names of the usable certificateRefs (all of them when none is usable, so the server still
    names its certificate and waits for it, as before) and the first problem when none is usable."""
    good, named, problem = [], [], None
    for ref in refs:
        kind, name = str(ref.get("kind") or "Secret"), str(ref.get("name", ""))
        ns = str(ref.get("namespace") or r.gateway_ns)
        cred = name if ns == r.gateway_ns else f"{GATEWAY_CREDENTIAL_PREFIX}{ns}/{name}"
        named.append(cred)
        found: tuple[str, str] | None = None
        if (ref.get("group") or "") not in ("", "core") or kind != "Secret":
            found = "InvalidCertificateRef", f"invalid certificate reference {kind} {name}: only Secrets are supported"
        elif ns != r.gateway_ns and not r.grant_allows("Gateway", r.gateway_ns, "Secret", ns, name):
            found = "RefNotPermitted", (f"certificateRef {name}/{ns} not accessible to a Gateway in namespace "
                                        f"{r.gateway_ns!r} (missing a ReferenceGrant?)")
        elif not r.has_secret(ns, name):
            found = "InvalidCertificateRef", f"invalid certificate reference /Secret/{name}.{ns}, secret not found"
        if found is None:
            good.append(cred)
        elif problem is None:
            problem = found
    return (good, None) if good else (named, problem)


def _ca(validation: Mapping[str, Any], r: Refs) -> tuple[str, tuple[str, str] | None]:
    """Istio's buildCaCertificateReference: the caCertCredentialName of the listener's one caCertificateRef."""
    refs = list(validation.get("caCertificateRefs") or ())
    if len(refs) > 1:
        return "", ("InvalidCACertificateRef", "only one caCertificateRef is supported")
    ref = refs[0]
    group, kind, name = str(ref.get("group") or ""), str(ref.get("kind") or ""), str(ref.get("name", ""))
    ns = str(ref.get("namespace") or r.gateway_ns)
    text = f"{group}/{kind}/{ns}/{name}"
    if group not in ("", "core") or kind not in ("ConfigMap", "Secret"):
        return "", ("InvalidCACertificateKind",
                    f"invalid CA certificate reference {text}, only secret and configmap are allowed")
    if ns != r.gateway_ns and not r.grant_allows("Gateway", r.gateway_ns, kind, ns, name):
        return "", ("RefNotPermitted", f"caCertificateRef {ns}/{name} not accessible to a Gateway in namespace "
                                       f"{r.gateway_ns!r} (missing a ReferenceGrant?)")
    data = r.ca_data(kind, ns, name)
    if data is None:
        return "", ("InvalidCACertificateRef", f"invalid CA certificate reference {text}, {kind.lower()} "
                                               f"{ns}/{name} not found")
    if not any(b"BEGIN CERTIFICATE" in _bytes(data.get(k)) for k in ("ca.crt", "cacert")):
        return "", ("InvalidCACertificateRef", f"invalid CA certificate reference {text}, found no CA certificate "
                                               "(ca.crt) in it")
    prefix = CONFIGMAP_PREFIX if kind == "ConfigMap" else GATEWAY_CREDENTIAL_PREFIX
    return f"{prefix}{ns}/{name}{CA_SUFFIX}", None


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value or "").encode()


def build(tls: Mapping[str, Any], r: Refs) -> ListenerTls:
    """The Istio server `tls` of a listener's `tls` (its listener is HTTPS or TLS)."""
    if tls.get("mode") == "Passthrough":
        return ListenerTls({"mode": "PASSTHROUGH"})
    options = tls.get("options") or {}
    out: dict[str, Any] = {"mode": "SIMPLE"}
    terminate = str(options.get(TERMINATE_MODE_KEY) or "")
    if terminate in ("MUTUAL", "OPTIONAL_MUTUAL"):
        out["mode"] = terminate
    elif terminate == "ISTIO_MUTUAL":
        return ListenerTls({"mode": "ISTIO_MUTUAL"})  # Istio returns here: no certificates, no cipher suites
    elif terminate == "ISTIO_SIMPLE":
        return ListenerTls({"mode": "SIMPLE", "credentialName": BUILTIN_CREDENTIAL})
    refs = list(tls.get("certificateRefs") or ())
    if len(refs) > MAX_CERTIFICATES:
        return ListenerTls(None, ("InvalidCertificateRef", "TLS mode can only support up to 2 server certificates"))
    creds, problem = _certificates(refs, r)
    if not creds:  # (only options): Istio builds a server with no certificate; sailmesh builds none
        return ListenerTls(None, ("InvalidCertificateRef", "no certificateRefs: the listener has no certificate"))
    if len(creds) == 1:
        out["credentialName"] = creds[0]
    elif creds:
        out["credentialNames"] = creds
    validation = tls.get("frontendValidation") or {}
    if problem is None and validation.get("caCertificateRefs"):
        ca, problem = _ca(validation, r)
        if problem is not None:
            return ListenerTls(None, problem)
        out["mode"] = "OPTIONAL_MUTUAL" if terminate == "OPTIONAL_MUTUAL" else "MUTUAL"
        if validation.get("mode") == "AllowInsecureFallback" and terminate not in ("MUTUAL", "OPTIONAL_MUTUAL"):
            # Istio's buildTLS: OPTIONAL_MUTUAL with insecureSkipVerify (a client certificate is asked for, an
            # untrusted one let through: ACCEPT_UNTRUSTED); a terminate-mode option overrides both
            out["mode"] = "OPTIONAL_MUTUAL"
            out["insecureSkipVerify"] = True
        out["caCertCredentialName"] = ca
    suites = filtered_cipher_suites(tuple(s.strip() for s in str(options.get(CIPHER_SUITES_KEY) or "").split(",")
                                          if s.strip()))
    if suites:
        out["cipherSuites"] = suites
    return ListenerTls(out, problem)
