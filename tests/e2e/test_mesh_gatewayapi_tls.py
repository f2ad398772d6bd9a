"""Gateway API listener TLS and attachment fields through real Envoy, on the Gateway's own gateway process:
- `tls.frontendValidation.caCertificateRefs` (a ConfigMap holding the client CA): Istio's MUTUAL validation, so a
  client without a certificate fails the handshake and one with a certificate from that CA gets 418;
- two `certificateRefs` (an RSA and an ECDSA certificate, Istio 1.27+ credentialNames): a client that offers only
  ECDSA suites gets the ECDSA certificate, one that offers only RSA suites the RSA one (TLS 1.2, where the suite
  decides the certificate type);
- `allowedRoutes.namespaces.selector.matchExpressions`: a route from a namespace the selector does not select is
  not attached (its status says NotAllowedByListeners) and its hostname is not routed;
- `infrastructure.labels`: the gateway process carries them (as Istio's gateway pods do), so an
  AuthorizationPolicy selecting one of them applies at that gateway; likewise the pod template labels of its
  `infrastructure.parametersRef` ConfigMap's `deployment` overlay;
- `addresses` with one IPAddress (Istio: the gateway Service's loadBalancerIP): the gateway listens there;
- `addresses` with a Hostname (Istio's manual deployment): the Gateway runs on the existing Service's pods (the
  embedded ingress gateway), no gateway of its own is started;
- BackendTLSPolicy (v1alpha3): the gateway originates TLS to a TLS-only backend, verifying it with the CA of the
  policy's ConfigMap and the policy's hostname as SNI;
- the Gateway's `backendTLS.clientCertificateRef` (Gateway API v1.3): the gateway presents that certificate to a
  backend that requires one (the backend names it); a gateway without it is refused there.
"""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import random
import socket
import ssl
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sailmesh.testing.mesh import RunningMesh
from tests.e2e.test_mesh_gateway_tls import TLS_BACKEND, b64, issue, make_ca
from tests.e2e.test_mesh_gatewayapi_listeners import http, until

pytestmark = pytest.mark.e2e


def issue_rsa(ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], cn: str) -> tuple[bytes, bytes]:
    """A server certificate with an RSA key (the CA signs with its EC key; only the leaf's key type matters)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca[0].subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca[1], hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def tls_secret(name: str, pair: tuple[bytes, bytes]) -> str:
    return f"""---
apiVersion: v1
kind: Secret
type: kubernetes.io/tls
metadata: {{name: {name}, namespace: default}}
data: {{tls.crt: {b64(pair[0])}, tls.key: {b64(pair[1])}}}
"""


# a backend that requires a client certificate from its CA (CLIENT_CA_FILE) and answers with the client's name
MTLS_BACKEND = TLS_BACKEND.replace(
    'ctx.load_cert_chain(os.environ["CERT_FILE"], os.environ["KEY_FILE"])',
    'ctx.load_cert_chain(os.environ["CERT_FILE"], os.environ["KEY_FILE"])\n'
    'ctx.verify_mode = ssl.CERT_REQUIRED\nctx.load_verify_locations(os.environ["CLIENT_CA_FILE"])').replace(
    'body = os.environ.get("BODY", "Welcome to nginx!").encode()',
    'body = ("client=" + dict(x[0] for x in s.getpeercert()["subject"])["commonName"]).encode()')
assert MTLS_BACKEND != TLS_BACKEND


def manifests(server: tuple[bytes, bytes], rsa_pair: tuple[bytes, bytes], ecdsa_pair: tuple[bytes, bytes],
              client_ca_pem: bytes, address: str, root: pathlib.Path, gateway_client: tuple[bytes, bytes]) -> str:
    ca_text = client_ca_pem.decode().replace("\n", "\\n")
    backend_ca = (root / "ca.pem").read_text().replace("\n", "\\n")
    routes = "".join(f"""---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {team}, namespace: {team}-apps}}
spec:
  parentRefs: [{{name: secure, namespace: default, sectionName: http}}]
  hostnames: [{team}.example.com]
  rules: [{{backendRefs: [{{name: httpbin, namespace: default, port: 8000}}]}}]
""" for team in ("blue", "red"))
    return f"""apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: edge-deny, namespace: default}}
spec:
  selector: {{matchLabels: {{sailmesh.test/tier: edge}}}}
  action: DENY
  rules: [{{to: [{{operation: {{paths: ["/deny"]}}}}]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: params-deny, namespace: default}}
spec:
  selector: {{matchLabels: {{sailmesh.test/from-params: "yes"}}}}
  action: DENY
  rules: [{{to: [{{operation: {{paths: ["/params-deny"]}}}}]}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: secure-options, namespace: default}}
data:
  deployment: |
    spec:
      template:
        metadata:
          labels: {{sailmesh.test/from-params: "yes"}}
---
apiVersion: v1
kind: Service
metadata: {{name: httpbin, namespace: default}}
spec: {{ports: [{{name: http, port: 8000, targetPort: 8080}}], selector: {{app: httpbin}}}}
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {{name: httpbin, namespace: default, labels: {{app: httpbin}}}}
spec: {{command: [python, -m, sailmesh.samples.httpbin.app], sidecar: true,
        ports: [{{name: http, containerPort: 8080, protocol: HTTP}}]}}
{tls_secret("mtls-credential", server)}{tls_secret("rsa-credential", rsa_pair)}\
{tls_secret("ecdsa-credential", ecdsa_pair)}{tls_secret("gateway-client", gateway_client)}---
apiVersion: v1
kind: ConfigMap
metadata: {{name: client-ca, namespace: default}}
data: {{ca.crt: "{ca_text}"}}
---
# a backend that speaks TLS only, with a certificate for nginx.example.com from the example.com CA
apiVersion: v1
kind: Service
metadata: {{name: my-nginx, namespace: default}}
spec: {{ports: [{{name: https, port: 443, targetPort: 8443}}], selector: {{run: my-nginx}}}}
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {{name: my-nginx, namespace: default, labels: {{run: my-nginx}}}}
spec: {{command: [python, "{root / 'backend.py'}"], sidecar: false,
        env: {{CERT_FILE: "{root / 'nginx.crt'}", KEY_FILE: "{root / 'nginx.key'}"}},
        ports: [{{name: https, containerPort: 8443, protocol: TCP}}]}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: backend-ca, namespace: default}}
data: {{ca.crt: "{backend_ca}"}}
---
apiVersion: gateway.networking.k8s.io/v1alpha3
kind: BackendTLSPolicy
metadata: {{name: my-nginx-tls, namespace: default}}
spec:
  targetRefs: [{{group: "", kind: Service, name: my-nginx}}]
  validation:
    caCertificateRefs: [{{group: "", kind: ConfigMap, name: backend-ca}}]
    hostname: nginx.example.com
---
# a backend that requires a client certificate (from backend-client-ca): the Gateway's backendTLS presents one
apiVersion: v1
kind: Service
metadata: {{name: mtls-nginx, namespace: default}}
spec: {{ports: [{{name: https, port: 443, targetPort: 8443}}], selector: {{run: mtls-nginx}}}}
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {{name: mtls-nginx, namespace: default, labels: {{run: mtls-nginx}}}}
spec: {{command: [python, "{root / 'mtls_backend.py'}"], sidecar: false,
        env: {{CERT_FILE: "{root / 'mtls-nginx.crt'}", KEY_FILE: "{root / 'mtls-nginx.key'}",
              CLIENT_CA_FILE: "{root / 'backend-client-ca.pem'}"}},
        ports: [{{name: https, containerPort: 8443, protocol: TCP}}]}}
---
apiVersion: gateway.networking.k8s.io/v1alpha3
kind: BackendTLSPolicy
metadata: {{name: mtls-nginx-tls, namespace: default}}
spec:
  targetRefs: [{{group: "", kind: Service, name: mtls-nginx}}]
  validation:
    caCertificateRefs: [{{group: "", kind: ConfigMap, name: backend-ca}}]
    hostname: mtls-nginx.example.com
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: to-mtls-nginx, namespace: default}}
spec:
  parentRefs: [{{name: secure, sectionName: mtls-backend}}]
  rules: [{{backendRefs: [{{name: mtls-nginx, port: 443}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: manual-mtls, namespace: istio-system}}
spec:
  parentRefs: [{{name: manual}}]
  rules: [{{matches: [{{path: {{type: PathPrefix, value: /mtls}}}}],
           backendRefs: [{{name: mtls-nginx, namespace: default, port: 443}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: to-nginx, namespace: default}}
spec:
  parentRefs: [{{name: secure, sectionName: backend}}]
  rules: [{{backendRefs: [{{name: my-nginx, port: 443}}]}}]
---
apiVersion: v1
kind: Namespace
metadata: {{name: blue-apps, labels: {{team: blue}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: red-apps, labels: {{team: red}}}}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: apps-to-httpbin, namespace: default}}
spec:
  from:
  - {{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: blue-apps}}
  - {{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: istio-system}}
  - {{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: red-apps}}
  to: [{{group: "", kind: Service, name: httpbin}}, {{group: "", kind: Service, name: mtls-nginx}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: secure, namespace: default}}
spec:
  gatewayClassName: sailmesh
  infrastructure:
    labels: {{sailmesh.test/tier: edge}}
    parametersRef: {{group: "", kind: ConfigMap, name: secure-options}}
  addresses: [{{type: IPAddress, value: "{address}"}}]
  backendTLS: {{clientCertificateRef: {{name: gateway-client}}}}
  listeners:
  - name: mtls
    port: 443
    protocol: HTTPS
    hostname: mtls.example.com
    tls:
      mode: Terminate
      certificateRefs: [{{name: mtls-credential}}]
      frontendValidation: {{caCertificateRefs: [{{group: "", kind: ConfigMap, name: client-ca}}]}}
  - name: fallback
    port: 445
    protocol: HTTPS
    hostname: mtls.example.com
    tls:
      mode: Terminate
      certificateRefs: [{{name: mtls-credential}}]
      frontendValidation:
        caCertificateRefs: [{{group: "", kind: ConfigMap, name: client-ca}}]
        mode: AllowInsecureFallback
  - name: dual
    port: 444
    protocol: HTTPS
    hostname: dual.example.com
    tls: {{mode: Terminate, certificateRefs: [{{name: rsa-credential}}, {{name: ecdsa-credential}}]}}
  - name: backend
    port: 81
    protocol: HTTP
  - name: mtls-backend
    port: 82
    protocol: HTTP
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Selector
        selector: {{matchExpressions: [{{key: team, operator: In, values: [blue, green]}}]}}
---
# Istio's manual deployment: the Gateway names the ingress gateway's Service (short name: its own namespace)
apiVersion: v1
kind: Service
metadata: {{name: istio-ingressgateway, namespace: istio-system}}
spec: {{ports: [{{name: http2, port: 80, targetPort: 8080}}], selector: {{istio: ingressgateway}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: manual, namespace: istio-system}}
spec:
  gatewayClassName: istio
  addresses: [{{type: Hostname, value: istio-ingressgateway}}]
  listeners: [{{name: http, port: 80, protocol: HTTP, hostname: manual.example.com}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: manual, namespace: istio-system}}
spec:
  parentRefs: [{{name: manual}}]
  rules: [{{backendRefs: [{{name: httpbin, namespace: default, port: 8000}}]}}]
---
# the same with a ServiceEntry host whose workloadSelector selects the ingress gateway (Istio's
# ResolveGatewayInstances finds ServiceEntry hosts too)
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: edge, namespace: istio-system}}
spec:
  hosts: [edge.gateway.internal]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  workloadSelector: {{labels: {{istio: ingressgateway}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: manual-se, namespace: istio-system}}
spec:
  gatewayClassName: istio
  addresses: [{{type: Hostname, value: edge.gateway.internal}}]
  listeners: [{{name: http, port: 80, protocol: HTTP, hostname: manual-se.example.com}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: manual-se, namespace: istio-system}}
spec:
  parentRefs: [{{name: manual-se}}]
  rules: [{{backendRefs: [{{name: httpbin, namespace: default, port: 8000}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: tls-routes, namespace: default}}
spec:
  parentRefs: [{{name: secure, sectionName: mtls}}, {{name: secure, sectionName: dual}},
               {{name: secure, sectionName: fallback}}]
  rules:
  - backendRefs: [{{name: httpbin, port: 8000}}]
{routes}"""


class Setup:
    def __init__(self, mesh: RunningMesh, root: pathlib.Path, certs: dict[str, bytes], requested: str) -> None:
        self.mesh, self.root, self.certs, self.requested = mesh, root, certs, requested

    def address(self) -> str:
        def found() -> str | None:
            out = self.mesh.cli("get", "gateway.gateway.networking.k8s.io", "secure", "-o", "json", check=True)
            addresses = json.loads(out.stdout).get("status", {}).get("addresses") or []
            return str(addresses[0]["value"]) if addresses else None
        return str(until(found, "the secure gateway's address"))

    def status(self, kind: str, ns: str, name: str) -> dict:  # type: ignore[type-arg]
        out = self.mesh.cli("get", kind, name, "-n", ns, "-o", "json", check=True).stdout
        return dict(json.loads(out).get("status") or {})


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("gwapi-tls-pki")
    ca, client_ca = make_ca("example.com"), make_ca("client-ca")
    (root / "ca.pem").write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    server = issue(ca, "mtls.example.com")
    rsa_pair, ecdsa_pair = issue_rsa(ca, "dual.example.com"), issue(ca, "dual.example.com")
    client = issue(client_ca, "client.example.com", client=True)
    stranger = issue(make_ca("other-ca"), "stranger.example.com", client=True)
    for name, (cert, key) in (("client", client), ("stranger", stranger)):
        (root / f"{name}.crt").write_bytes(cert)
        (root / f"{name}.key").write_bytes(key)
        (root / f"{name}.key").chmod(0o600)
    config = tmp_path_factory.mktemp("gwapi-tls-config")
    requested = f"127.{random.randint(10, 250)}.{random.randint(1, 250)}.77"  # a loopback address no one uses
    nginx = issue(ca, "nginx.example.com")
    (root / "nginx.crt").write_bytes(nginx[0])
    (root / "nginx.key").write_bytes(nginx[1])
    (root / "backend.py").write_text(TLS_BACKEND)
    backend_client_ca = make_ca("backend-client-ca")
    (root / "backend-client-ca.pem").write_bytes(backend_client_ca[0].public_bytes(serialization.Encoding.PEM))
    mtls_nginx = issue(ca, "mtls-nginx.example.com")
    (root / "mtls-nginx.crt").write_bytes(mtls_nginx[0])
    (root / "mtls-nginx.key").write_bytes(mtls_nginx[1])
    (root / "mtls_backend.py").write_text(MTLS_BACKEND)
    gateway_client = issue(backend_client_ca, "secure-gateway", client=True)
    (config / "gateway-api.yaml").write_text(manifests(server, rsa_pair, ecdsa_pair,
                                                       client_ca[0].public_bytes(serialization.Encoding.PEM),
                                                       requested, root, gateway_client))
    m = RunningMesh(str(tmp_path_factory.mktemp("gwapi-tls-state")), dirs=[str(config)])
    try:
        yield Setup(m, root, {"rsa": rsa_pair[0], "ecdsa": ecdsa_pair[0]}, requested)
    finally:
        m.stop()


def status_over_tls(ip: str, port: int, host: str, ctx: ssl.SSLContext) -> int:
    with socket.create_connection((ip, port), timeout=10) as raw, ctx.wrap_socket(raw, server_hostname=host) as tls:
        tls.sendall(f"GET /status/418 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


def client_context(setup: Setup, cert: str = "") -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(setup.root / "ca.pem"))
    if cert:
        ctx.load_cert_chain(str(setup.root / f"{cert}.crt"), str(setup.root / f"{cert}.key"))
    return ctx


def test_frontend_validation_requires_a_client_certificate_from_the_ca(setup: Setup) -> None:
    """Istio's MUTUAL from caCertificateRefs: no certificate -> the handshake (or the first read) fails; a
    certificate from another CA fails too; one from the ConfigMap's CA -> 418."""
    ip = setup.address()
    assert until(lambda: status_over_tls(ip, 8443, "mtls.example.com", client_context(setup, "client")) == 418
                 or None, "418 with a client certificate (listener 443 -> 8443)")
    for cert in ("", "stranger"):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            status_over_tls(ip, 8443, "mtls.example.com", client_context(setup, cert))
    status = setup.status("gateway.gateway.networking.k8s.io", "default", "secure")
    (mtls,) = [lst for lst in status["listeners"] if lst["name"] == "mtls"]
    assert {c["type"]: c["status"] for c in mtls["conditions"]} == {"Accepted": "True", "Programmed": "True",
                                                                     "ResolvedRefs": "True"}


def test_allow_insecure_fallback_lets_any_client_through(setup: Setup) -> None:
    """Istio's buildTLS for frontendValidation `mode: AllowInsecureFallback`: OPTIONAL_MUTUAL with insecureSkipVerify,
    so a client with the CA's certificate, one with a certificate from another CA, and one with none all get 418
    (the same validation with the default mode refuses the latter two: the test above)."""
    ip = setup.address()
    for cert in ("client", "stranger", ""):
        assert until(lambda c=cert: status_over_tls(ip, 8445, "mtls.example.com", client_context(setup, c)) == 418
                     or None, f"418 on the fallback listener (445 -> 8445) with {cert or 'no'} certificate")


def served_certificate(ip: str, suites: str) -> bytes:
    ctx = ssl.create_default_context(cafile=None)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # the suite picks the certificate's key type
    ctx.set_ciphers(suites)
    with socket.create_connection((ip, 8444), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="dual.example.com") as tls:
        der = tls.getpeercert(binary_form=True) or b""
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


def test_two_certificate_refs_serve_rsa_and_ecdsa_clients(setup: Setup) -> None:
    ip = setup.address()
    ecdsa = until(lambda: served_certificate(ip, "ECDHE-ECDSA-AES128-GCM-SHA256"), "the ECDSA certificate")
    assert ecdsa == setup.certs["ecdsa"]
    assert served_certificate(ip, "ECDHE-RSA-AES128-GCM-SHA256") == setup.certs["rsa"]
    # both verify as dual.example.com for a client with the CA, over the default suites too
    assert until(lambda: status_over_tls(ip, 8444, "dual.example.com", client_context(setup)) == 418 or None,
                 "418 over the dual-certificate listener")


def test_match_expressions_attach_only_selected_namespaces(setup: Setup) -> None:
    ip = setup.address()
    assert until(lambda: http(ip, 8080, "blue.example.com", "/status/418")[0] == 418 or None,
                 "the blue namespace's route (team In [blue, green])")
    assert http(ip, 8080, "red.example.com", "/status/418")[0] == 404  # not attached: no route for its host
    parents = setup.status("httproute", "red-apps", "red")["parents"]
    accepted = {c["type"]: (c["status"], c["reason"]) for c in parents[0]["conditions"]}["Accepted"]
    assert accepted == ("False", "NotAllowedByListeners")
    listeners = setup.status("gateway.gateway.networking.k8s.io", "default", "secure")["listeners"]
    assert {lst["name"]: lst["attachedRoutes"] for lst in listeners}["http"] == 1


def test_infrastructure_labels_reach_the_gateway_process(setup: Setup) -> None:
    """The policy selects the label the Gateway's infrastructure gives its gateway: /deny is refused there (403,
    Envoy's RBAC), other paths pass."""
    ip = setup.address()
    assert until(lambda: http(ip, 8080, "blue.example.com", "/deny")[0] == 403 or None,
                 "the DENY policy selecting the infrastructure label")
    assert http(ip, 8080, "blue.example.com", "/status/418")[0] == 418
    assert until(lambda: http(ip, 8080, "blue.example.com", "/params-deny")[0] == 403 or None,
                 "the DENY policy selecting the parametersRef ConfigMap's pod template label")


def test_the_gateway_listens_on_its_requested_address(setup: Setup) -> None:
    assert setup.address() == setup.requested
    assert until(lambda: http(setup.requested, 8080, "blue.example.com", "/status/418")[0] == 418 or None,
                 "the blue route on the requested address")


def test_a_hostname_address_runs_the_gateway_on_the_existing_service(setup: Setup) -> None:
    """Istio's manual deployment (IsManaged false, the gateway-service annotation): the listener is served by the
    pods of Service istio-system/istio-ingressgateway (the embedded ingress gateway), not by a deployment of its
    own; the status names that Service and the gateway's address."""
    gateway_ip = setup.mesh.gateway_ip
    assert until(lambda: http(gateway_ip, 8080, "manual.example.com", "/status/418")[0] == 418 or None,
                 "the manual Gateway's route on the ingress gateway")
    assert http(setup.address(), 8080, "manual.example.com", "/status/418")[0] == 404  # not on another gateway
    status = setup.status("gateway.gateway.networking.k8s.io", "istio-system", "manual")
    assert status["addresses"] == [{"type": "IPAddress", "value": gateway_ip}]
    conds = {c["type"]: (c["status"], c["message"]) for c in status["conditions"]}
    assert conds["Accepted"][0] == "True" and conds["Programmed"][0] == "True"
    assert "istio-ingressgateway.istio-system.svc.cluster.local:80" in conds["Programmed"][1]
    assert "manual-istio" not in setup.mesh.output()  # no gateway process was started for it


def test_a_hostname_address_naming_a_service_entry_runs_on_its_workloads(setup: Setup) -> None:
    """Istio's ResolveGatewayInstances looks a Hostname up among Service and ServiceEntry hosts of the Gateway's
    namespace: the ServiceEntry's workloadSelector picks the embedded ingress gateway, which serves the route; the
    status reports the host by name (an internal host with no load-balancer address)."""
    gateway_ip = setup.mesh.gateway_ip
    assert until(lambda: http(gateway_ip, 8080, "manual-se.example.com", "/status/418")[0] == 418 or None,
                 "the ServiceEntry-placed Gateway's route on the ingress gateway")
    status = setup.status("gateway.gateway.networking.k8s.io", "istio-system", "manual-se")
    conds = {c["type"]: (c["status"], c["message"]) for c in status["conditions"]}
    assert conds["Programmed"] == ("True", "Resource programmed, assigned to service(s) edge.gateway.internal:80"
                                   f" (embedded mesh: listener port 80 -> {gateway_ip}:8080)"), conds
    assert status["addresses"] == [{"type": "IPAddress", "value": gateway_ip}]


def test_backend_tls_policy_originates_verified_tls(setup: Setup) -> None:
    """Istio's BackendTLSPolicy conversion: a DestinationRule with `tls: SIMPLE`, SNI = the policy's hostname and
    the ConfigMap's CA; the gateway reaches the TLS-only backend over HTTP->TLS, and the policy is Accepted."""
    ip = setup.address()
    got = until(lambda: (r := http(ip, 8081, "anything.example", "/")) and r[0] == 200 and r,
                "the TLS-only backend through the gateway (listener 81 -> 8081)")
    assert isinstance(got, tuple) and got[2] == "Welcome to nginx!"
    (ancestor,) = setup.status("backendtlspolicy", "default", "my-nginx-tls")["ancestors"]
    assert {c["type"]: c["status"] for c in ancestor["conditions"]} == {"Accepted": "True"}


def test_backend_tls_client_certificate_is_presented_to_a_backend_that_requires_one(setup: Setup) -> None:
    """Gateway API v1.3 `backendTLS.clientCertificateRef`: the secure gateway presents the gateway-client Secret's
    certificate (the backend answers with its CN) to mtls-nginx, whose TLS the BackendTLSPolicy sets up; the manual
    Gateway (no backendTLS, on the ingress gateway) has no certificate to present and is refused (503)."""
    ip = setup.address()
    got = until(lambda: (r := http(ip, 8082, "anything.example", "/")) and r[0] == 200 and r,
                "the mTLS backend through the secure gateway (listener 82 -> 8082)")
    assert isinstance(got, tuple) and got[2] == "client=secure-gateway"
    status = setup.status("gateway.gateway.networking.k8s.io", "default", "secure")
    conds = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conds["ResolvedRefs"] == ("True", "ResolvedRefs") and conds["Accepted"][0] == "True"
    gateway_ip = setup.mesh.gateway_ip
    assert until(lambda: http(gateway_ip, 8080, "manual.example.com", "/status/418")[0] == 418 or None,
                 "the manual Gateway's route")
    assert until(lambda: http(gateway_ip, 8080, "manual.example.com", "/mtls")[0] == 503 or None,
                 "the mTLS backend refusing the ingress gateway (no client certificate)")
