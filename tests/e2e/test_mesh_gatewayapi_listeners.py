"""Gateway API listeners and filters through real Envoy, on the Gateway's own gateway process: HTTPS with a
certificateRef to a kubernetes.io/tls Secret (as Istio's credentialName), TLS Passthrough routed by SNI (TLSRoute),
TCP (TCPRoute), and HTTPRoute filters (RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect's 302 and
ReplacePrefixMatch,
URLRewrite), with a ReferenceGrant letting a route of another namespace use a backend here.
"""

from __future__ import annotations

import json
import pathlib
import socket
import ssl
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization

from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.e2e.test_mesh_gateway_tls import TLS_BACKEND, b64, issue, make_ca

pytestmark = pytest.mark.e2e


def manifests(root: pathlib.Path, httpbin: tuple[bytes, bytes], ca_pem: bytes, shared: tuple[bytes, bytes]) -> str:
    cert, key = httpbin
    return f"""apiVersion: v1
kind: Service
metadata: {{name: httpbin, namespace: default}}
spec:
  ports: [{{name: http, port: 8000, targetPort: 8080}}]
  selector: {{app: httpbin}}
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {{name: httpbin, namespace: default, labels: {{app: httpbin, version: v1}}}}
spec:
  command: ["python", "-m", "sailmesh.samples.httpbin.app"]
  ports: [{{name: http, containerPort: 8080, protocol: HTTP}}]
  sidecar: true
---
apiVersion: v1
kind: Service
metadata: {{name: my-nginx, namespace: default}}
spec:
  ports: [{{name: https, port: 443, targetPort: 8443, protocol: TCP}}]
  selector: {{run: my-nginx}}
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {{name: my-nginx, namespace: default, labels: {{run: my-nginx}}}}
spec:
  command: ["python", "{root / 'backend.py'}"]
  env: {{CERT_FILE: "{root / 'nginx.crt'}", KEY_FILE: "{root / 'nginx.key'}"}}
  ports: [{{name: https, containerPort: 8443, protocol: TCP}}]
  sidecar: false
---
apiVersion: v1
kind: Secret
type: kubernetes.io/tls
metadata: {{name: httpbin-credential, namespace: default}}
data: {{tls.crt: {b64(cert + ca_pem)}, tls.key: {b64(key)}}}
---
# a certificate kept in another namespace, which a ReferenceGrant there opens to the Gateways of `default`
apiVersion: v1
kind: Secret
type: kubernetes.io/tls
metadata: {{name: shared-credential, namespace: certs}}
data: {{tls.crt: {b64(shared[0] + ca_pem)}, tls.key: {b64(shared[1])}}}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: default-gateways, namespace: certs}}
spec:
  from: [{{group: gateway.networking.k8s.io, kind: Gateway, namespace: default}}]
  to: [{{group: "", kind: Secret, name: shared-credential}}]
---
apiVersion: v1
kind: Namespace
metadata: {{name: apps, labels: {{routes: allowed}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: edge, namespace: default}}
spec:
  gatewayClassName: sailmesh
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    hostname: "*.example.com"
    allowedRoutes: {{namespaces: {{from: Selector, selector: {{matchLabels: {{routes: allowed}}}}}}}}
  - name: https
    port: 443
    protocol: HTTPS
    hostname: httpbin.example.com
    tls: {{mode: Terminate, certificateRefs: [{{name: httpbin-credential}}]}}
    allowedRoutes: {{namespaces: {{from: All}}}}
  - name: https-shared
    port: 444
    protocol: HTTPS
    hostname: shared.example.com
    tls: {{mode: Terminate, certificateRefs: [{{name: shared-credential, namespace: certs}}]}}
  - name: tls
    port: 9443
    protocol: TLS
    tls: {{mode: Passthrough}}
  - name: tcp
    port: 9000
    protocol: TCP
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: apps-to-httpbin, namespace: default}}
spec:
  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: apps}}]
  to: [{{group: "", kind: Service, name: httpbin}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: httpbin-http, namespace: apps}}
spec:
  parentRefs: [{{name: edge, namespace: default, sectionName: http}}]
  hostnames: [httpbin.example.com]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /old}}}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {{scheme: https, hostname: httpbin.example.com}}
  - matches: [{{path: {{type: PathPrefix, value: /moved}}}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /new}}}}
  - matches: [{{path: {{type: PathPrefix, value: /v2}}}}]
    filters:
    - type: URLRewrite
      urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /anything}}}}
    backendRefs: [{{name: httpbin, namespace: default, port: 8000}}]
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {{set: [{{name: X-Gateway-Api, value: "yes"}}]}}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {{add: [{{name: X-Served-By, value: edge}}]}}
    backendRefs: [{{name: httpbin, namespace: default, port: 8000}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: httpbin-https, namespace: default}}
spec:
  parentRefs: [{{name: edge, sectionName: https}}, {{name: edge, sectionName: https-shared}}]
  rules:
  - backendRefs: [{{name: httpbin, port: 8000}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {{name: nginx, namespace: default}}
spec:
  parentRefs: [{{name: edge, sectionName: tls}}]
  hostnames: [nginx.example.com]
  rules:
  - backendRefs: [{{name: my-nginx, port: 443}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: raw, namespace: default}}
spec:
  parentRefs: [{{name: edge, sectionName: tcp}}]
  rules:
  - backendRefs: [{{name: httpbin, port: 8000}}]
"""


class Setup:
    def __init__(self, mesh: RunningMesh, root: pathlib.Path, httpbin_cert: bytes, nginx_cert: bytes) -> None:
        self.mesh, self.root, self.httpbin_cert, self.nginx_cert = mesh, root, httpbin_cert, nginx_cert
        self.shared_cert = b""

    def address(self) -> str:
        def found() -> str:
            out = self.mesh.cli("get", "gateway.gateway.networking.k8s.io", "edge", "-o", "json", check=True)
            addresses = json.loads(out.stdout).get("status", {}).get("addresses") or []
            return str(addresses[0]["value"]) if addresses else ""
        return str(wait_for(found, timeout=60, what="the edge gateway's address"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("gwapi-pki")
    (root / "backend.py").write_text(TLS_BACKEND)
    ca = make_ca("example.com")
    ca_pem = ca[0].public_bytes(serialization.Encoding.PEM)
    (root / "ca.pem").write_bytes(ca_pem)
    httpbin, nginx = issue(ca, "httpbin.example.com"), issue(ca, "nginx.example.com")
    shared = issue(ca, "shared.example.com")
    for name, (cert, key) in (("httpbin", httpbin), ("nginx", nginx)):
        (root / f"{name}.crt").write_bytes(cert)
        (root / f"{name}.key").write_bytes(key)
    config = tmp_path_factory.mktemp("gwapi-config")
    (config / "gateway-api.yaml").write_text(manifests(root, httpbin, ca_pem, shared))
    m = RunningMesh(str(tmp_path_factory.mktemp("gwapi-listeners-state")), dirs=[str(config)])
    try:
        s = Setup(m, root, httpbin[0], nginx[0])
        s.shared_cert = shared[0]
        yield s
    finally:
        m.stop()


def exchange(ip: str, port: int, request: bytes, sni: str = "", ca: str = "") -> bytes:
    """Send one HTTP/1.1 request (over TLS with SNI when `sni`) and read the whole answer."""
    with socket.create_connection((ip, port), timeout=10) as raw:
        conn: socket.socket = raw
        if sni:
            conn = ssl.create_default_context(cafile=ca).wrap_socket(raw, server_hostname=sni)
        conn.sendall(request)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
        return data


def http(ip: str, port: int, host: str, path: str, sni: str = "", ca: str = "") -> tuple[int, dict[str, str], str]:
    raw = exchange(ip, port, f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode(), sni, ca)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body.decode(errors="replace")


def until(fn: object, what: str) -> object:
    def attempt() -> object:
        try:
            return fn()  # type: ignore[operator]
        except (OSError, ValueError, IndexError, ssl.SSLError):
            return None
    return wait_for(attempt, timeout=60, interval=0.5, what=what)


def test_https_listener_serves_the_secret_certificate(setup: Setup) -> None:
    ip, ca = setup.address(), str(setup.root / "ca.pem")
    status = until(lambda: http(ip, 8443, "httpbin.example.com", "/status/418", "httpbin.example.com", ca)[0] == 418
                   or None, "418 over HTTPS (listener 443 -> 8443)")
    assert status
    ctx = ssl.create_default_context(cafile=ca)
    with socket.create_connection((ip, 8443), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="httpbin.example.com") as tls:
        from cryptography import x509
        peer = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"")
        assert peer.public_bytes(serialization.Encoding.PEM) == setup.httpbin_cert


def test_https_certificate_from_another_namespace_with_a_reference_grant(setup: Setup) -> None:
    """A certificateRef to a Secret of namespace `certs`, allowed by a ReferenceGrant there (Gateway API
    SecretObjectReference; Istio serves it as `kubernetes-gateway://certs/shared-credential`)."""
    ip, ca = setup.address(), str(setup.root / "ca.pem")
    assert until(lambda: http(ip, 8444, "shared.example.com", "/status/418", "shared.example.com", ca)[0] == 418
                 or None, "418 over HTTPS with the other namespace's certificate (listener 444 -> 8444)")
    ctx = ssl.create_default_context(cafile=ca)
    with socket.create_connection((ip, 8444), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="shared.example.com") as tls:
        from cryptography import x509
        peer = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"")
        assert peer.public_bytes(serialization.Encoding.PEM) == setup.shared_cert
    out = setup.mesh.cli("get", "gateway.gateway.networking.k8s.io", "edge", "-o", "json", check=True).stdout
    (listener,) = [lst for lst in json.loads(out)["status"]["listeners"] if lst["name"] == "https-shared"]
    assert {c["type"]: c["status"] for c in listener["conditions"]}["ResolvedRefs"] == "True"


def test_tls_passthrough_by_sni_and_tcp_route(setup: Setup) -> None:
    ip, ca = setup.address(), str(setup.root / "ca.pem")
    body = until(lambda: http(ip, 9443, "nginx.example.com", "/", "nginx.example.com", ca)[2] or None,
                 "the TLS server behind passthrough")
    assert body == "Welcome to nginx!"
    status = until(lambda: http(ip, 9000, "anything", "/status/418")[0] == 418 or None, "418 over the TCPRoute")
    assert status


def test_http_filters_and_cross_namespace_grant(setup: Setup) -> None:
    ip = setup.address()
    got = until(lambda: (r := http(ip, 8080, "httpbin.example.com", "/headers")) and r[0] == 200 and r,
                "httpbin through the HTTP listener (route in namespace apps, backend granted)")
    assert isinstance(got, tuple)
    _, headers, body = got
    assert json.loads(body)["headers"].get("X-Gateway-Api") == "yes"
    assert headers.get("x-served-by") == "edge"
    status, headers, _ = http(ip, 8080, "httpbin.example.com", "/old/page")
    assert status == 302 and headers["location"].startswith("https://httpbin.example.com")  # Gateway API's default
    # RequestRedirect ReplacePrefixMatch (HTTPPathModifier): the matched prefix is swapped, the rest kept
    status, headers, _ = http(ip, 8080, "httpbin.example.com", "/moved/page?q=1")
    assert status == 302 and headers["location"] == "http://httpbin.example.com/new/page?q=1", headers
    status, headers, _ = http(ip, 8080, "httpbin.example.com", "/moved")
    assert status == 302 and headers["location"] == "http://httpbin.example.com/new", headers
    status, _, body = http(ip, 8080, "httpbin.example.com", "/v2/x")
    assert status == 200 and json.loads(body)["url"].endswith("/anything/x")
    # the listener's hostname is *.example.com: another domain is not routed
    assert http(ip, 8080, "httpbin.example.net", "/headers")[0] == 404
