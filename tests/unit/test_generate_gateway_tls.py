"""Gateway TLS through the Generator: SIMPLE/MUTUAL/ISTIO_MUTUAL termination, credentialName secrets over ADS,
PASSTHROUGH by SNI from VirtualService `tls` routes, TLS parameters, httpsRedirect (Istio's gateway translation)."""

from __future__ import annotations

import base64
import json

from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2

from sailmesh.api.change import Change
from sailmesh.api.resource import ResourceKey
from sailmesh.generate.affect import affected_types
from sailmesh.generate.enforcement import not_enforced
from sailmesh.generate.generator import Generator
from sailmesh.xds.types import LISTENER, ROUTE, SECRET
from tests.unit.test_generate_support import gateway_proxy, generated, make_snapshot, resources, service, sidecar

HCM = hcm_pb2.HttpConnectionManager
CERT = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"
CA = b"-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def gateway(servers: str, name: str = "gw", ns: str = "default") -> str:
    return (f"apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {ns}}}\n"
            f"spec:\n  selector: {{istio: ingressgateway}}\n  servers:\n{servers}")


HTTPBIN_VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin, namespace: default}
spec:
  hosts: [httpbin.example.com]
  gateways: [gw]
  http:
  - route: [{destination: {host: httpbin, port: {number: 8000}}}]
"""
SIMPLE = gateway("""  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [httpbin.example.com]
    tls: {mode: SIMPLE, credentialName: httpbin-credential}
""")
TLS_SECRET = f"""apiVersion: v1
kind: Secret
type: kubernetes.io/tls
metadata: {{name: httpbin-credential, namespace: istio-system}}
data: {{tls.crt: {b64(CERT)}, tls.key: {b64(KEY)}, ca.crt: {b64(CA)}}}
"""
SERVICES = [service("httpbin", ports=((8000, "HTTP"),)), service("nginx", ports=((443, "TLS"),)),
            service("other", ports=((443, "TLS"),))]


def listeners(*texts: str) -> dict[str, listener_pb2.Listener]:
    return generated(make_snapshot(resources(*texts), SERVICES), gateway_proxy(), LISTENER, listener_pb2.Listener)


def tls_context(chain: object) -> tls_pb2.DownstreamTlsContext:
    ts = chain.transport_socket  # type: ignore[attr-defined]
    assert ts.name == "envoy.transport_sockets.tls"
    ctx = tls_pb2.DownstreamTlsContext()
    assert ts.typed_config.Unpack(ctx)
    return ctx


def hcm_of(chain: object) -> HCM:
    h = HCM()
    assert chain.filters[0].typed_config.Unpack(h)  # type: ignore[attr-defined]
    return h


def tcp_of(chain: object) -> tcp_proxy_pb2.TcpProxy:
    tp = tcp_proxy_pb2.TcpProxy()
    assert chain.filters[0].typed_config.Unpack(tp)  # type: ignore[attr-defined]
    return tp


def test_simple_with_credential_name_terminates_by_sni_on_8443() -> None:
    """Istio's secure-ingress task: port 443 (bound at 8443), SNI httpbin.example.com, the certificate over ADS as
    `kubernetes://httpbin-credential` (ConstructSdsSecretConfigForCredential), ALPN h2/http1.1, no client cert."""
    lst = listeners(SIMPLE, HTTPBIN_VS)["0.0.0.0_443"]
    assert lst.address.socket_address.port_value == 8443
    assert [f.name for f in lst.listener_filters] == ["envoy.filters.listener.tls_inspector"]
    [chain] = lst.filter_chains
    assert list(chain.filter_chain_match.server_names) == ["httpbin.example.com"]
    ctx = tls_context(chain)
    assert ctx.require_client_certificate.value is False
    common = ctx.common_tls_context
    assert list(common.alpn_protocols) == ["h2", "http/1.1"]
    [sds] = common.tls_certificate_sds_secret_configs
    assert sds.name == "kubernetes://httpbin-credential" and sds.sds_config.HasField("ads")
    assert not common.HasField("tls_params")  # TLS parameters only when set
    h = hcm_of(chain)
    assert h.rds.route_config_name == "https.443.https.gw.default"  # Istio's gatewayRDSRouteName
    assert h.use_remote_address.value


def test_https_route_config_has_the_bound_virtual_service() -> None:
    routes = generated(make_snapshot(resources(SIMPLE, HTTPBIN_VS), SERVICES), gateway_proxy(), ROUTE,
                       route_pb2.RouteConfiguration)
    rc = routes["https.443.https.gw.default"]
    [vh] = rc.virtual_hosts
    assert list(vh.domains) == ["httpbin.example.com", "httpbin.example.com:*"]
    assert vh.routes[0].route.cluster == "outbound|8000||httpbin.default.svc.cluster.local"


def test_credential_secret_served_over_ads_from_the_gateway_namespace() -> None:
    """kubernetes.io/tls keys (tls.crt/tls.key, ca.crt for `-cacert`); a Secret of another namespace is not used."""
    mutual = SIMPLE.replace("mode: SIMPLE", "mode: MUTUAL")
    snap = make_snapshot(resources(mutual, HTTPBIN_VS, TLS_SECRET), SERVICES)
    secrets = generated(snap, gateway_proxy(), SECRET, secret_pb2.Secret)
    assert set(secrets) == {"kubernetes://httpbin-credential", "kubernetes://httpbin-credential-cacert"}
    cert = secrets["kubernetes://httpbin-credential"].tls_certificate
    assert (cert.certificate_chain.inline_bytes, cert.private_key.inline_bytes) == (CERT, KEY)
    assert secrets["kubernetes://httpbin-credential-cacert"].validation_context.trusted_ca.inline_bytes == CA
    ctx = tls_context(generated(snap, gateway_proxy(), LISTENER, listener_pb2.Listener)["0.0.0.0_443"]
                      .filter_chains[0])
    assert ctx.require_client_certificate.value is True
    combined = ctx.common_tls_context.combined_validation_context
    assert combined.validation_context_sds_secret_config.name == "kubernetes://httpbin-credential-cacert"
    # the Secret must live in the gateway's namespace (istio-system), as Istio's credentialName
    elsewhere = TLS_SECRET.replace("namespace: istio-system", "namespace: default")
    snap2 = make_snapshot(resources(mutual, HTTPBIN_VS, elsewhere), SERVICES)
    assert generated(snap2, gateway_proxy(), SECRET, secret_pb2.Secret) == {}
    assert generated(snap, sidecar(), SECRET, secret_pb2.Secret) == {}  # sidecars get none over ADS
    # `<namespace>/<name>` names the gateway's own namespace explicitly; another namespace is not readable
    for ns, found in (("istio-system", True), ("default", False)):
        qualified = SIMPLE.replace("credentialName: httpbin-credential", f"credentialName: {ns}/httpbin-credential")
        got = generated(make_snapshot(resources(qualified, TLS_SECRET, elsewhere), SERVICES), gateway_proxy(),
                        SECRET, secret_pb2.Secret)
        assert list(got) == ([f"kubernetes://{ns}/httpbin-credential"] if found else [])


def test_generic_secret_and_separate_cacert_secret() -> None:
    """Generic Secrets (cert/key/cacert, stringData too) and Istio's `<name>-cacert` Secret, which wins over
    the CA key of `<name>` (credentials/kube GetCaCert)."""
    ca_secret = ("apiVersion: v1\nkind: Secret\nmetadata: {name: c-cacert, namespace: istio-system}\n"
                 f"data: {{cacert: {b64(CA)}}}\n")
    gw = gateway("""  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: MUTUAL, credentialName: c}
""")
    generic = ("apiVersion: v1\nkind: Secret\nmetadata: {name: c, namespace: istio-system}\n"
               f"data:\n  cert: {b64(CERT)}\n  key: {b64(KEY)}\nstringData:\n  cacert: wrong\n")
    snap = make_snapshot(resources(gw, ca_secret, generic), SERVICES)
    secrets = generated(snap, gateway_proxy(), SECRET, secret_pb2.Secret)
    assert secrets["kubernetes://c"].tls_certificate.certificate_chain.inline_bytes == CERT
    assert secrets["kubernetes://c-cacert"].validation_context.trusted_ca.inline_bytes == CA


def test_files_istio_mutual_and_tls_parameters() -> None:
    """Certificate files are read by Envoy; ISTIO_MUTUAL uses the agent's SDS `default`/`ROOTCA` (sds-grpc);
    min/max protocol versions and cipher suites become TlsParameters (Istio's convertTLSProtocol)."""
    gw = gateway("""  - port: {number: 443, name: https-files, protocol: HTTPS}
    hosts: [a.example.com]
    tls:
      mode: MUTUAL
      serverCertificate: /etc/certs/cert.pem
      privateKey: /etc/certs/key.pem
      caCertificates: /etc/certs/ca.pem
      minProtocolVersion: TLSV1_2
      maxProtocolVersion: TLSV1_3
      cipherSuites: [ECDHE-RSA-AES256-GCM-SHA384, TLS_AES_128_GCM_SHA256, ECDHE-RSA-AES256-GCM-SHA384]
  - port: {number: 443, name: https-mesh, protocol: HTTPS}
    hosts: [b.example.com]
    tls: {mode: ISTIO_MUTUAL}
""")
    lst = listeners(gw)["0.0.0.0_443"]
    a, b = lst.filter_chains
    assert list(a.filter_chain_match.server_names) == ["a.example.com"]
    ca = tls_context(a)
    assert ca.require_client_certificate.value is True
    [cert] = ca.common_tls_context.tls_certificates
    assert (cert.certificate_chain.filename, cert.private_key.filename) == ("/etc/certs/cert.pem", "/etc/certs/key.pem")
    assert ca.common_tls_context.validation_context.trusted_ca.filename == "/etc/certs/ca.pem"
    params = ca.common_tls_context.tls_params
    assert params.tls_minimum_protocol_version == common_pb2.TlsParameters.TLSv1_2
    assert params.tls_maximum_protocol_version == common_pb2.TlsParameters.TLSv1_3
    assert list(params.cipher_suites) == ["ECDHE-RSA-AES256-GCM-SHA384"]  # Istio's filteredGatewayCipherSuites
    assert hcm_of(a).rds.route_config_name == "https.443.https-files.gw.default"
    cb = tls_context(b)
    assert cb.require_client_certificate.value is True
    [sds] = cb.common_tls_context.tls_certificate_sds_secret_configs
    assert sds.name == "default"
    grpc = sds.sds_config.api_config_source.grpc_services[0]
    assert grpc.envoy_grpc.cluster_name == "sds-grpc"
    assert cb.common_tls_context.combined_validation_context.validation_context_sds_secret_config.name == "ROOTCA"


PASSTHROUGH = gateway("""  - port: {number: 443, name: tls, protocol: TLS}
    hosts: ["*.example.com"]
    tls: {mode: PASSTHROUGH}
""")
TLS_VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: nginx, namespace: default}
spec:
  hosts: ["*.example.com"]
  gateways: [gw]
  tls:
  - match: [{port: 443, sniHosts: [nginx.example.com]}]
    route: [{destination: {host: nginx, port: {number: 443}}}]
  - match: [{sniHosts: [split.example.com]}]
    route:
    - {destination: {host: nginx}, weight: 75}
    - {destination: {host: other}, weight: 25}
  - match: [{sniHosts: [nginx.example.com]}]
    route: [{destination: {host: other}}]
  - match: [{port: 8443, sniHosts: [wrong-port.example.com]}, {sniHosts: [elsewhere.org]}]
    route: [{destination: {host: other}}]
"""


def test_passthrough_routes_by_sni_through_virtual_service_tls_routes() -> None:
    """One filter chain per applicable `tls` match (sniHosts as server_names), no TLS termination, tcp_proxy to
    the weighted destinations; a duplicate SNI match is dropped (Istio: the first wins), a match on another port
    or an SNI the server's hosts do not allow gives no chain."""
    lst = listeners(PASSTHROUGH, TLS_VS)["0.0.0.0_443"]
    assert [f.name for f in lst.listener_filters] == ["envoy.filters.listener.tls_inspector"]
    assert [list(c.filter_chain_match.server_names) for c in lst.filter_chains] == [
        ["nginx.example.com"], ["split.example.com"]]
    one, split = lst.filter_chains
    assert not one.HasField("transport_socket") and not split.HasField("transport_socket")
    assert tcp_of(one).cluster == "outbound|443||nginx.default.svc.cluster.local"
    assert [(c.name, c.weight) for c in tcp_of(split).weighted_clusters.clusters] == [
        ("outbound|443||nginx.default.svc.cluster.local", 75), ("outbound|443||other.default.svc.cluster.local", 25)]
    assert not_enforced(resources(TLS_VS)[0]) == []


def test_several_servers_on_one_port_and_https_redirect() -> None:
    """Two HTTPS servers on 443 with their own hosts: two SNI chains (and route configs); an HTTP server with
    httpsRedirect answers every host with require_tls ALL (Envoy's 301 to https)."""
    gw = gateway("""  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [httpbin.example.com]
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https-httpbin, protocol: HTTPS}
    hosts: [httpbin.example.com]
    tls: {mode: SIMPLE, credentialName: httpbin-credential}
  - port: {number: 443, name: https-other, protocol: HTTPS}
    hosts: [default/other.example.com, "*"]
    tls: {mode: SIMPLE, credentialName: other-credential}
""")
    snap = make_snapshot(resources(gw, HTTPBIN_VS), SERVICES)
    lst = generated(snap, gateway_proxy(), LISTENER, listener_pb2.Listener)["0.0.0.0_443"]
    assert [list(c.filter_chain_match.server_names) for c in lst.filter_chains] == [["httpbin.example.com"], []]
    routes = generated(snap, gateway_proxy(), ROUTE, route_pb2.RouteConfiguration)
    assert set(routes) == {"http.80", "https.443.https-httpbin.gw.default", "https.443.https-other.gw.default"}
    [vh] = routes["http.80"].virtual_hosts
    assert vh.require_tls == rc.VirtualHost.ALL


def test_a_secret_change_regenerates_secrets_only() -> None:
    """A Secret change affects the SECRET type alone: only gateways subscribe to it over ADS, and the server
    sends a proxy nothing when its secrets are unchanged."""
    s1 = make_snapshot(resources(SIMPLE, HTTPBIN_VS), SERVICES, version=1)
    s2 = make_snapshot(resources(SIMPLE, HTTPBIN_VS, TLS_SECRET), SERVICES, version=2)
    change = Change.of(ResourceKey("Secret", "istio-system", "httpbin-credential"))
    assert affected_types(change, s1, s2) == {SECRET}
    gen = Generator()
    assert gen.resources(s1, gateway_proxy(), SECRET) == {}
    listeners_before = gen.resources(s1, gateway_proxy(), LISTENER)
    gen.advance(s2, affected_types(change, s1, s2))
    assert set(gen.resources(s2, gateway_proxy(), SECRET)) == {"kubernetes://httpbin-credential"}
    after = gen.resources(s2, gateway_proxy(), LISTENER)
    assert all(after[n] is listeners_before[n] for n in listeners_before)


def test_sidecar_tunnels_tls_ports_by_the_tls_route_for_the_service_sni() -> None:
    """On a sidecar, a CONNECT to a TLS service port follows the mesh VirtualService's `tls` route whose sniHosts
    cover the service (the SNI a client of that name sends), before `tcp` routes; other ports keep tcp routes."""
    from envoy.config.route.v3 import route_pb2 as rp

    vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: nginx, namespace: default}
spec:
  hosts: [nginx]
  tls:
  - match: [{port: 443, sniHosts: [somewhere.else]}]
    route: [{destination: {host: other}}]
  - match: [{port: 443, sniHosts: [nginx]}]
    route: [{destination: {host: other, port: {number: 443}}, weight: 90}, {destination: {host: nginx}, weight: 10}]
  tcp:
  - route: [{destination: {host: nginx}}]
"""
    snap = make_snapshot(resources(vs), SERVICES)
    routes = generated(snap, sidecar(), ROUTE, rp.RouteConfiguration)
    [vh] = [v for v in routes["http_proxy"].virtual_hosts if v.name == "nginx.default.svc.cluster.local:443"]
    assert [(c.name, c.weight.value) for c in vh.routes[0].route.weighted_clusters.clusters] == [
        ("outbound|443||other.default.svc.cluster.local", 90), ("outbound|443||nginx.default.svc.cluster.local", 10)]
    assert not_enforced(resources(vs)[0]) == []


def test_credential_names_serve_several_certificates_and_pin_clients() -> None:
    """Istio's credentialNames (an RSA and an ECDSA certificate side by side;
    ApplyCredentialSDSToServerCommonTLSContext): every name's certificate, the first one's `-cacert` for MUTUAL,
    with SPKI/hash pinning of client certificates."""
    two = SIMPLE.replace("tls: {mode: SIMPLE, credentialName: httpbin-credential}",
                         "tls: {mode: MUTUAL, credentialNames: [httpbin-credential, httpbin-ecdsa], "
                         "verifyCertificateSpki: [abc=], verifyCertificateHash: ['AB:CD']}")
    ecdsa = TLS_SECRET.replace("name: httpbin-credential,", "name: httpbin-ecdsa,")
    snap = make_snapshot(resources(two, HTTPBIN_VS, TLS_SECRET, ecdsa), SERVICES)
    ctx = tls_context(generated(snap, gateway_proxy(), LISTENER, listener_pb2.Listener)["0.0.0.0_443"]
                      .filter_chains[0])
    common = ctx.common_tls_context
    assert [s.name for s in common.tls_certificate_sds_secret_configs] == \
        ["kubernetes://httpbin-credential", "kubernetes://httpbin-ecdsa"]
    combined = common.combined_validation_context
    assert combined.validation_context_sds_secret_config.name == "kubernetes://httpbin-credential-cacert"
    assert list(combined.default_validation_context.verify_certificate_spki) == ["abc="]
    assert list(combined.default_validation_context.verify_certificate_hash) == ["AB:CD"]
    secrets = generated(snap, gateway_proxy(), SECRET, secret_pb2.Secret)
    assert set(secrets) == {"kubernetes://httpbin-credential", "kubernetes://httpbin-ecdsa",
                            "kubernetes://httpbin-credential-cacert"}
    assert not_enforced(resources(two)[0]) == []


def test_ca_crl_checks_client_certificates_with_files_and_istio_mutual() -> None:
    """Istio's BuildListenerTLSContext: `caCrl` goes into the validation context (ApplyToCommonTLSContext) for
    certificate files and ISTIO_MUTUAL; the credentialName branch does not read it (reported as such)."""
    from sailmesh.api.models.networking import ServerTLSSettings
    from sailmesh.generate.gateway_tls import downstream_tls_context

    files = downstream_tls_context(ServerTLSSettings(mode="MUTUAL", server_certificate="/c", private_key="/k",
                                                     ca_certificates="/ca", ca_crl="/crl.pem"))
    assert files.common_tls_context.validation_context.crl.filename == "/crl.pem"
    mesh = downstream_tls_context(ServerTLSSettings(mode="ISTIO_MUTUAL", ca_crl="/crl.pem"))
    assert mesh.common_tls_context.combined_validation_context.default_validation_context.crl.filename == "/crl.pem"
    text = """apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: MUTUAL, TLS}
"""
    assert not_enforced(resources(text.replace("TLS", "serverCertificate: /c, privateKey: /k, caCertificates: /ca, "
                                                      "caCrl: /crl.pem"))[0]) == []
    assert not_enforced(resources(text.replace("TLS", "credentialName: c, caCrl: /crl.pem"))[0]) == [
        "Gateway default/gw: accepted, not enforced: spec.servers[0].tls.caCrl (with credentialName: Istio ignores "
        "it too)"]


def test_ca_cert_credential_name_takes_precedence_over_the_credentials_ca() -> None:
    """Istio's caCertCredentialName ("For mutual TLS, the name of the secret or the configmap that holds CA
    certificates. Takes precedence over CA certificates in the Secret referenced with credentialName(s)"):
    ApplyCredentialSDSToServerCommonTLSContext validates clients with ToResourceName(caCertCredentialName); istiod's
    SDS reads a `-cacert` name as a CA (that Secret, else the CA key of the name without the suffix) with the CRL
    beside it (ExtractRoot: `cacert`+`crl`), and a `configmap://<ns>/<name>` from that ConfigMap."""
    crl = b"-----BEGIN X509 CRL-----\nMIIB\n-----END X509 CRL-----\n"
    ca_secret = ("apiVersion: v1\nkind: Secret\nmetadata: {name: client-ca-cacert, namespace: istio-system}\n"
                 f"data: {{cacert: {b64(CA)}, crl: {b64(crl)}}}\n")
    config_map = ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm-ca, namespace: istio-system}\n"
                  f"data: {{ca.crt: {json.dumps(CA.decode())}}}\n")
    for ca_name, sds_name in (("client-ca-cacert", "kubernetes://client-ca-cacert"),
                              ("kubernetes://client-ca-cacert", "kubernetes://client-ca-cacert"),
                              ("configmap://istio-system/cm-ca", "configmap://istio-system/cm-ca")):
        gw = SIMPLE.replace("mode: SIMPLE", f"mode: MUTUAL, caCertCredentialName: '{ca_name}'")
        snap = make_snapshot(resources(gw, HTTPBIN_VS, TLS_SECRET, ca_secret, config_map), SERVICES)
        ctx = tls_context(generated(snap, gateway_proxy(), LISTENER, listener_pb2.Listener)["0.0.0.0_443"]
                          .filter_chains[0])
        combined = ctx.common_tls_context.combined_validation_context
        assert combined.validation_context_sds_secret_config.name == sds_name
        secrets = generated(snap, gateway_proxy(), SECRET, secret_pb2.Secret)
        assert set(secrets) == {"kubernetes://httpbin-credential", sds_name}  # not httpbin-credential-cacert
        validation = secrets[sds_name].validation_context
        assert validation.trusted_ca.inline_bytes == CA
        assert validation.crl.inline_bytes == (b"" if sds_name.startswith("configmap") else crl)
        assert not_enforced(resources(gw)[0]) == []
    # Istio reads it with credentialName(s) and MUTUAL/OPTIONAL_MUTUAL only
    simple = SIMPLE.replace("mode: SIMPLE", "mode: SIMPLE, caCertCredentialName: client-ca-cacert")
    assert not_enforced(resources(simple)[0]) == [
        "Gateway default/gw: accepted, not enforced: spec.servers[0].tls.caCertCredentialName (read with "
        "credentialName(s) and MUTUAL or OPTIONAL_MUTUAL only, as Istio)"]


def test_the_credentials_own_crl_and_ocsp_staple_are_served() -> None:
    """Istio's credentialName Secret keys: `ca.crl` beside `ca.crt` revokes client certificates
    (toEnvoyCaSecret), `tls.ocsp-staple` beside tls.crt/tls.key is stapled (toEnvoyTLSSecret)."""
    staple = b"\x30\x03\x0a\x01\x00"
    secret = TLS_SECRET.replace("}\n", f", ca.crl: {b64(b'CRL')}, tls.ocsp-staple: {b64(staple)}}}\n")
    mutual = SIMPLE.replace("mode: SIMPLE", "mode: MUTUAL")
    secrets = generated(make_snapshot(resources(mutual, HTTPBIN_VS, secret), SERVICES), gateway_proxy(), SECRET,
                        secret_pb2.Secret)
    assert secrets["kubernetes://httpbin-credential"].tls_certificate.ocsp_staple.inline_bytes == staple
    assert secrets["kubernetes://httpbin-credential-cacert"].validation_context.crl.inline_bytes == b"CRL"


def test_tls_certificates_ecdh_curves_and_insecure_skip_verify() -> None:
    """Istio's BuildListenerTLSContext: `tlsCertificates` serves every file pair on one chain (an RSA and an ECDSA
    certificate), clients verified with the server's caCertificates; applyServerTLSSettings sets `ecdhCurves` for
    SIMPLE/MUTUAL/OPTIONAL_MUTUAL; `insecureSkipVerify` lets an untrusted client certificate through
    (ACCEPT_UNTRUSTED) on every source; an ISTIO_MUTUAL server takes none of the TLS parameters."""
    gw = gateway("""  - port: {number: 443, name: https-files, protocol: HTTPS}
    hosts: [a.example.com]
    tls:
      mode: MUTUAL
      tlsCertificates:
      - {serverCertificate: /rsa.pem, privateKey: /rsa.key}
      - {serverCertificate: /ecdsa.pem, privateKey: /ecdsa.key, caCertificates: /ignored.pem}
      caCertificates: /ca.pem
      ecdhCurves: [P-384, X25519]
      insecureSkipVerify: true
  - port: {number: 443, name: https-cred, protocol: HTTPS}
    hosts: [b.example.com]
    tls: {mode: MUTUAL, credentialName: c, insecureSkipVerify: true}
  - port: {number: 443, name: https-mesh, protocol: HTTPS}
    hosts: [c.example.com]
    tls: {mode: ISTIO_MUTUAL, minProtocolVersion: TLSV1_3, ecdhCurves: [P-384], insecureSkipVerify: true}
""")
    a, b, c = listeners(gw)["0.0.0.0_443"].filter_chains
    files = tls_context(a).common_tls_context
    assert [(t.certificate_chain.filename, t.private_key.filename) for t in files.tls_certificates] == [
        ("/rsa.pem", "/rsa.key"), ("/ecdsa.pem", "/ecdsa.key")]
    assert files.validation_context.trusted_ca.filename == "/ca.pem"
    assert files.validation_context.trust_chain_verification == common_pb2.CertificateValidationContext.ACCEPT_UNTRUSTED
    assert list(files.tls_params.ecdh_curves) == ["P-384", "X25519"]
    assert files.tls_params.tls_minimum_protocol_version == common_pb2.TlsParameters.TLS_AUTO
    cred = tls_context(b).common_tls_context.combined_validation_context.default_validation_context
    assert cred.trust_chain_verification == common_pb2.CertificateValidationContext.ACCEPT_UNTRUSTED
    mesh = tls_context(c).common_tls_context
    assert not mesh.HasField("tls_params")
    assert mesh.combined_validation_context.default_validation_context.trust_chain_verification == \
        common_pb2.CertificateValidationContext.ACCEPT_UNTRUSTED
    assert not_enforced(resources(gw)[0]) == [
        "Gateway default/gw: accepted, not enforced: spec.servers[2].tls.minProtocolVersion (ISTIO_MUTUAL: Istio "
        "ignores it too), spec.servers[2].tls.ecdhCurves (ISTIO_MUTUAL: Istio ignores it too)"]


def test_a_server_without_certificate_files_serves_the_proxy_certificate() -> None:
    """Istio's ApplyToCommonTLSContext falls back to the SDS names `default` (no certificate path) and `ROOTCA`
    (MUTUAL without caCertificates), the proxy's own certificate and the mesh root, from the agent."""
    from sailmesh.api.models.networking import ServerTLSSettings
    from sailmesh.generate.gateway_tls import downstream_tls_context

    ctx = downstream_tls_context(ServerTLSSettings(mode="MUTUAL")).common_tls_context
    assert [s.name for s in ctx.tls_certificate_sds_secret_configs] == ["default"]
    assert ctx.combined_validation_context.validation_context_sds_secret_config.name == "ROOTCA"


def test_a_redirect_on_a_tls_server_derives_the_https_default_port() -> None:
    """Istio's ApplyRedirect with RouteOptions.IsTLS (`server.Tls != nil`): without a scheme the redirect's scheme is
    https on a TLS server, so a derived (FROM_REQUEST_PORT) or explicit port 443 is left out, and 80 is kept; on a
    plain HTTP server it is http (80 left out, 443 kept)."""
    vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin, namespace: default}
spec:
  hosts: [httpbin.example.com]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /derived}}]
    redirect: {uri: /d, derivePort: FROM_REQUEST_PORT}
  - match: [{uri: {prefix: /eighty}}]
    redirect: {uri: /e, port: 80}
"""
    plain = gateway("""  - port: {number: 443, name: http, protocol: HTTP}
    hosts: [httpbin.example.com]
""")
    tls = generated(make_snapshot(resources(SIMPLE, vs), SERVICES), gateway_proxy(), ROUTE,
                    route_pb2.RouteConfiguration)["https.443.https.gw.default"]
    derived, eighty = tls.virtual_hosts[0].routes
    assert (derived.redirect.port_redirect, eighty.redirect.port_redirect) == (0, 80)
    http = generated(make_snapshot(resources(plain, vs), SERVICES), gateway_proxy(), ROUTE,
                     route_pb2.RouteConfiguration)["http.443"]
    derived, eighty = http.virtual_hosts[0].routes
    assert (derived.redirect.port_redirect, eighty.redirect.port_redirect) == (443, 0)
