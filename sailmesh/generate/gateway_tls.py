"""Gateway TLS: a server's `tls` settings -> DownstreamTlsContext, and credentialName Secrets -> SDS secrets over ADS.

As Istio's BuildListenerTLSContext: ALPN h2/http1.1, a client certificate required for MUTUAL and ISTIO_MUTUAL,
TLS parameters only when set. Certificates come from
- `credentialName`: an SdsSecretConfig `kubernetes://<name>` (and for MUTUAL `kubernetes://<name>-cacert`) over ADS;
  the control plane serves them from the Secret of that name in the gateway's namespace (`gateway_secrets`), as
  istiod does (its SDS generator, credentials/kube: `<name>-cacert` first, else the `ca.crt`/`cacert` key of
  `<name>`);
- files (`serverCertificate`, `privateKey`, `caCertificates`): Envoy reads them itself (filename data sources;
  Istio hands them to its agent's file SDS instead);
- ISTIO_MUTUAL: the proxy's own workload certificate, the agent's SDS secrets `default` and `ROOTCA`
  (generate.tls.sds_secret).
Key material only ever travels in the generated protobufs; nothing here logs it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2

from sailmesh.api.meshconfig import TLSDefaults
from sailmesh.api.models.networking import ServerTLSSettings
from sailmesh.api.resource import Resource
from sailmesh.api.tlsnames import valid_cipher_suite
from sailmesh.generate.common import ads
from sailmesh.generate.tls import sds_secret

CREDENTIAL_PREFIX = "kubernetes://"  # Istio's credentials.KubernetesSecretTypeURI
# Istio's credentials.KubernetesGatewaySecretTypeURI: a Gateway API certificateRef `<ns>/<name>`, which may name
# another namespace when a ReferenceGrant there allows it (generate/gatewayapi/convert.py writes it so)
GATEWAY_CREDENTIAL_PREFIX = "kubernetes-gateway://"
# Istio's KubernetesConfigMapType: a Gateway API frontendValidation caCertificateRef to a ConfigMap `<ns>/<name>-cacert`
CONFIGMAP_PREFIX = "configmap://"
BUILTIN_CREDENTIAL = "builtin://"  # Istio's BuiltinGatewaySecretTypeURI: the proxy's own workload certificate
CA_SUFFIX = "-cacert"  # Istio's SdsCaSuffix
WORKLOAD_CERT = "default"
ROOT_CERT = "ROOTCA"
ALPN_HTTP = ("h2", "http/1.1")  # Istio's util.ALPNHttp
TERMINATING = frozenset({"SIMPLE", "MUTUAL", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"})
PASSTHROUGH = frozenset({"PASSTHROUGH", "AUTO_PASSTHROUGH"})
# Istio's convertTLSProtocol
_PROTOCOLS = {
    "TLS_AUTO": common_pb2.TlsParameters.TLS_AUTO,
    "TLSV1_0": common_pb2.TlsParameters.TLSv1_0,
    "TLSV1_1": common_pb2.TlsParameters.TLSv1_1,
    "TLSV1_2": common_pb2.TlsParameters.TLSv1_2,
    "TLSV1_3": common_pb2.TlsParameters.TLSv1_3,
}
# Secret keys, as Istio's extractCertInfo/extractRoot read them: generic first, then kubernetes.io/tls
_CERT_KEYS = (("cert", "key"), ("tls.crt", "tls.key"))
_CA_KEYS = (("cacert", "crl"), ("ca.crt", "ca.crl"))  # the CA and the revocation list that goes with it
_OCSP_STAPLE_KEY = "tls.ocsp-staple"  # read beside tls.crt/tls.key only, as Istio's ExtractCertInfo


def mode_of(tls: ServerTLSSettings | None) -> str:
    """The server's TLS mode (Istio's default PASSTHROUGH when `tls` is set without a mode), "" without `tls`."""
    if tls is None:
        return ""
    return (tls.mode or "PASSTHROUGH").upper()


def credential_secret(name: str) -> secret_pb2.SdsSecretConfig:
    """Istio's ConstructSdsSecretConfigForCredential: `kubernetes://<name>`, served by the control plane over ADS."""
    return secret_pb2.SdsSecretConfig(name=_sds_name(name), sds_config=ads())


def _sds_name(credential: str) -> str:
    """Istio's credentials.ToResourceName: the SDS resource name of a credentialName (`kubernetes://...`,
    `kubernetes-gateway://...` and `configmap://...` names already are one)."""
    return credential if credential.startswith((CREDENTIAL_PREFIX, GATEWAY_CREDENTIAL_PREFIX, CONFIGMAP_PREFIX)) \
        else CREDENTIAL_PREFIX + credential


def _san_matchers(sans: tuple[str, ...] | None) -> list[common_pb2.SubjectAltNameMatcher]:
    out = []
    for san in sans or ():
        for kind in (common_pb2.SubjectAltNameMatcher.DNS, common_pb2.SubjectAltNameMatcher.URI):
            out.append(common_pb2.SubjectAltNameMatcher(san_type=kind, matcher=string_pb2.StringMatcher(exact=san)))
    return out


def downstream_tls_context(tls: ServerTLSSettings,
                           defaults: TLSDefaults = TLSDefaults()) -> tls_pb2.DownstreamTlsContext:
    """The DownstreamTlsContext of a TLS-terminating gateway server (SIMPLE, MUTUAL, OPTIONAL_MUTUAL, ISTIO_MUTUAL),
    as Istio's BuildListenerTLSContext: the certificates by source (mesh certificate, credentials, files), client
    validation for MUTUAL, OPTIONAL_MUTUAL and ISTIO_MUTUAL (`insecureSkipVerify`: ACCEPT_UNTRUSTED), and the
    server's TLS parameters (protocol versions, cipher suites, ECDH curves) for SIMPLE/MUTUAL/OPTIONAL_MUTUAL only
    (Istio's isSimpleOrMutual: an ISTIO_MUTUAL server keeps Envoy's defaults); the mesh config's `tlsDefaults`
    cipher suites and ECDH curves where the server sets none."""
    mode = mode_of(tls)
    ctx = tls_pb2.DownstreamTlsContext(common_tls_context=tls_pb2.CommonTlsContext(alpn_protocols=ALPN_HTTP))
    ctx.require_client_certificate.value = mode in ("MUTUAL", "ISTIO_MUTUAL")
    validate_client = mode in ("MUTUAL", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL")
    common = ctx.common_tls_context
    sans = _san_matchers(tls.subject_alt_names)
    if mode == "ISTIO_MUTUAL" or tls.credential_name == BUILTIN_CREDENTIAL:
        common.tls_certificate_sds_secret_configs.append(sds_secret(WORKLOAD_CERT))
        combined = common.combined_validation_context
        combined.default_validation_context.match_typed_subject_alt_names.extend(sans)
        combined.validation_context_sds_secret_config.CopyFrom(sds_secret(ROOT_CERT))
        if tls.ca_crl:  # Istio's ApplyToCommonTLSContext: the CRL file checks the client certificates
            combined.default_validation_context.crl.filename = tls.ca_crl
        _skip_verify(tls, combined.default_validation_context)
    elif tls.credential_name or tls.credential_names:
        # Istio's ApplyCredentialSDSToServerCommonTLSContext: credentialNames (an RSA and an ECDSA certificate, say)
        # are served side by side; a MUTUAL server verifies clients with the first one's CA, or with
        # caCertCredentialName's when it is set
        names = list(tls.credential_names or ()) or [tls.credential_name or ""]
        common.tls_certificate_sds_secret_configs.extend(credential_secret(n) for n in names)
        if mode in ("MUTUAL", "OPTIONAL_MUTUAL"):
            combined = common.combined_validation_context
            default = combined.default_validation_context
            default.match_typed_subject_alt_names.extend(sans)
            default.verify_certificate_spki.extend(tls.verify_certificate_spki or ())
            default.verify_certificate_hash.extend(tls.verify_certificate_hash or ())
            _skip_verify(tls, default)
            combined.validation_context_sds_secret_config.CopyFrom(credential_secret(_ca_credential(tls)))
    else:
        # Istio's ApplyToCommonTLSContext with certificate files: every `tlsCertificates` entry (an RSA and an ECDSA
        # certificate), else serverCertificate/privateKey; without files, the proxy's own certificate (`default`)
        pairs = [(c.server_certificate or "", c.private_key or "") for c in tls.tls_certificates or ()] or \
            [(tls.server_certificate or "", tls.private_key or "")]
        for cert, key in pairs:
            if cert and key:
                common.tls_certificates.append(common_pb2.TlsCertificate(
                    certificate_chain=base_pb2.DataSource(filename=cert),
                    private_key=base_pb2.DataSource(filename=key)))
            else:
                common.tls_certificate_sds_secret_configs.append(sds_secret(WORKLOAD_CERT))
        if validate_client:
            # the server's caCertificates verify clients (Istio: "Envoy does not support client validation using
            # multiple CA certificates", so an entry's own caCertificates is not read); without one, the mesh root
            if tls.ca_certificates:
                validation = common.validation_context
                validation.trusted_ca.filename = tls.ca_certificates
            else:
                combined = common.combined_validation_context
                combined.validation_context_sds_secret_config.CopyFrom(sds_secret(ROOT_CERT))
                validation = combined.default_validation_context
            validation.match_typed_subject_alt_names.extend(sans)
            if tls.ca_crl:
                validation.crl.filename = tls.ca_crl
            _skip_verify(tls, validation)
    if mode in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL"):
        _apply_server_tls_settings(tls, common, defaults)
    return ctx


def _skip_verify(tls: ServerTLSSettings, validation: common_pb2.CertificateValidationContext) -> None:
    """`insecureSkipVerify`: the client certificate is checked but an untrusted one is let through (Istio's
    ACCEPT_UNTRUSTED; what Gateway API's AllowInsecureFallback needs)."""
    if tls.insecure_skip_verify:
        validation.trust_chain_verification = common_pb2.CertificateValidationContext.ACCEPT_UNTRUSTED


def _apply_server_tls_settings(tls: ServerTLSSettings, common: tls_pb2.CommonTlsContext,
                               defaults: TLSDefaults) -> None:
    """Istio's applyServerTLSSettings: minimum/maximum protocol version, ECDH curves and cipher suites, each only
    when set (TlsParameters appear only then); curves and suites fall back to the mesh config's `tlsDefaults`
    ("Configuration of TLS for all traffic except for ISTIO_MUTUAL mode")."""
    lo = (tls.min_protocol_version or "TLS_AUTO").upper()
    hi = (tls.max_protocol_version or "TLS_AUTO").upper()
    suites = filtered_cipher_suites(tls.cipher_suites or defaults.cipher_suites)
    curves = tls.ecdh_curves or defaults.ecdh_curves
    if not (suites or curves or lo != "TLS_AUTO" or hi != "TLS_AUTO"):
        return
    params = common.tls_params
    params.tls_minimum_protocol_version = _PROTOCOLS.get(lo, common_pb2.TlsParameters.TLS_AUTO)
    params.tls_maximum_protocol_version = _PROTOCOLS.get(hi, common_pb2.TlsParameters.TLS_AUTO)
    params.cipher_suites.extend(suites)
    params.ecdh_curves.extend(curves)


def filtered_cipher_suites(suites: tuple[str, ...] | None) -> list[str]:
    """Istio's filteredGatewayCipherSuites: the valid suites, each once, in order (an invalid one, such as a TLS
    1.3 suite Envoy does not let configure, is dropped rather than failing the listener)."""
    return list(dict.fromkeys(s for s in suites or () if valid_cipher_suite(s)))


def _ca_credential(tls: ServerTLSSettings) -> str:
    """The credential a MUTUAL server's client CA comes from (Istio's ApplyCredentialSDSToServerCommonTLSContext):
    `caCertCredentialName` when set ("takes precedence over CA certificates in the Secret referenced with
    credentialName(s)": `configmap://<ns>/<name>`, `kubernetes://...`, a Gateway API `kubernetes-gateway://...`,
    or a plain Secret name), else `<first credential name>-cacert`."""
    if tls.ca_cert_credential_name:
        return tls.ca_cert_credential_name
    first = (tls.credential_names or ())[:1] or (tls.credential_name or "",)
    return first[0] + CA_SUFFIX


def credential_names(tls: ServerTLSSettings | None) -> list[str]:
    """The ADS secret names a server's TLS settings reference (`kubernetes://name`, `...-cacert`)."""
    if tls is None or not (tls.credential_name or tls.credential_names) or mode_of(tls) not in TERMINATING or \
            mode_of(tls) == "ISTIO_MUTUAL" or tls.credential_name == BUILTIN_CREDENTIAL:
        return []
    out = [_sds_name(n) for n in (tls.credential_names or ()) or (tls.credential_name or "",)]
    if mode_of(tls) in ("MUTUAL", "OPTIONAL_MUTUAL"):
        out.append(_sds_name(_ca_credential(tls)))
    return out


def secret_data(secret: Resource) -> dict[str, bytes]:
    """A Secret's `data` (base64-decoded) merged with its `stringData`, as the API server stores it."""
    raw: Mapping[str, Any] = secret.raw or {}
    out: dict[str, bytes] = {}
    data = raw.get("data")
    for k, v in (data if isinstance(data, Mapping) else {}).items():
        try:
            out[str(k)] = base64.b64decode(v if isinstance(v, str) else "", validate=True)
        except (binascii.Error, ValueError):
            continue  # validation reports it; never echo the value
    string_data = raw.get("stringData")
    for k, v in (string_data if isinstance(string_data, Mapping) else {}).items():
        if isinstance(v, str):
            out[str(k)] = v.encode()
    return out


def _inline(value: bytes) -> base_pb2.DataSource:
    return base_pb2.DataSource(inline_bytes=value)


def secret_resource(name: str, secrets: Mapping[str, Resource], namespace: str,
                    granted: Callable[[str, str], Resource | None] | None = None,
                    config_map: Callable[[str, str], Resource | None] | None = None) -> secret_pb2.Secret | None:
    """The SDS Secret for one ADS name (`kubernetes://x` or `kubernetes://x-cacert`; `x` may be `<namespace>/name`)
    from the Secrets of the gateway's namespace, None when that Secret or its keys are missing (Envoy keeps the
    listener warming) or it names another namespace (a gateway reads only its own namespace's Secrets).
    `kubernetes-gateway://<ns>/<name>` (a Gateway API certificateRef) may name another namespace: `granted(ns,
    name)` gives that Secret when a ReferenceGrant lets the gateway read it (Istio's SecretAllowed). A name ending
    in `-cacert` there, or `configmap://<ns>/<name>-cacert` (`config_map(ns, name)`, own namespace or granted), is
    the client CA of a Gateway API frontendValidation."""
    if name.startswith(CONFIGMAP_PREFIX):
        ns, _, credential = name[len(CONFIGMAP_PREFIX):].partition("/")
        cm = config_map(ns, credential.removesuffix(CA_SUFFIX)) if config_map is not None else None
        data = (cm.raw or {}).get("data") if cm is not None else None
        return _ca_secret(name, {str(k): str(v).encode() for k, v in data.items()} if isinstance(data, Mapping)
                          else {})
    if name.startswith(GATEWAY_CREDENTIAL_PREFIX):
        ns, _, credential = name[len(GATEWAY_CREDENTIAL_PREFIX):].partition("/")
        ca = credential.endswith(CA_SUFFIX)
        credential = credential.removesuffix(CA_SUFFIX) if ca else credential
        found = secrets.get(credential) if ns == namespace else granted(ns, credential) if granted is not None \
            else None
        if ca:
            return _ca_secret(name, secret_data(found) if found is not None else {})
        return _certificate(name, found)
    if not name.startswith(CREDENTIAL_PREFIX):
        return None
    credential = name[len(CREDENTIAL_PREFIX):]
    ns, slash, rest = credential.partition("/")
    if slash:
        if ns != namespace:
            return None
        credential = rest
    if credential.endswith(CA_SUFFIX):
        # Istio's GetCaCert: the Secret `<name>-cacert`, else the CA key of `<name>`
        for candidate in (credential, credential[: -len(CA_SUFFIX)]):
            res = secrets.get(candidate)
            if res is None:
                continue
            return _ca_secret(name, secret_data(res))
        return None
    return _certificate(name, secrets.get(credential))


def _ca_secret(name: str, data: Mapping[str, bytes]) -> secret_pb2.Secret | None:
    """A validation-context secret from the CA key of a Secret's or ConfigMap's data, with the CRL stored beside it
    (`cacert`+`crl` or `ca.crt`+`ca.crl`: Istio's ExtractRoot and toEnvoyCaSecret); None without a CA."""
    for ca_key, crl_key in _CA_KEYS:
        if data.get(ca_key):
            ctx = common_pb2.CertificateValidationContext(trusted_ca=_inline(data[ca_key]))
            if data.get(crl_key):
                ctx.crl.CopyFrom(_inline(data[crl_key]))
            return secret_pb2.Secret(name=name, validation_context=ctx)
    return None


def _certificate(name: str, res: Resource | None) -> secret_pb2.Secret | None:
    """A TlsCertificate secret from a Secret's cert/key (`tls.crt`/`tls.key` or `cert`/`key`), None without them."""
    if res is None:
        return None
    data = secret_data(res)
    for cert_key, key_key in _CERT_KEYS:
        if data.get(cert_key) and data.get(key_key):
            cert = common_pb2.TlsCertificate(certificate_chain=_inline(data[cert_key]),
                                             private_key=_inline(data[key_key]))
            if cert_key == "tls.crt" and data.get(_OCSP_STAPLE_KEY):  # Istio's toEnvoyTLSSecret: the OCSP staple
                cert.ocsp_staple.CopyFrom(_inline(data[_OCSP_STAPLE_KEY]))
            return secret_pb2.Secret(name=name, tls_certificate=cert)
    return None
