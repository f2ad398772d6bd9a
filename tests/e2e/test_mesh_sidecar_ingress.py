"""Sidecar `ingress` and egress `port` through real Envoy.

A Sidecar for `web` declares one ingress listener on port 7000 forwarding to the app's port 8000
(`defaultEndpoint: 0.0.0.0:8000`); the Service `web` targets 7000. A client's request reaches
the app through that listener, and the workload's own port 8000 is no longer served by its sidecar (Istio: with
`ingress`, the inbound listeners are exactly those declared).

The client's Sidecar declares an egress listener on port 8100 (Istio's explicit egress listener, what an app with
captureMode NONE calls): the app connects to its own address:8100 without HTTP_PROXY, and the Host header
`web-alt:8100` routes it to the Service web-alt.

A Sidecar for `secure` terminates TLS on its ingress port 7443 (Istio's Sidecar ingress `tls`, MUTUAL with the
certificate files it names): a client outside the mesh with a certificate of the client CA gets the app's answer;
without a certificate, or with one of another CA, the handshake fails."""

from __future__ import annotations

import json
import socket
import ssl
import urllib.request
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization

from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.e2e.test_mesh_gateway_tls import issue, make_ca
from tests.e2e.traffic_support import APP, NO_PROXY, admin_ip, via

pytestmark = pytest.mark.e2e

MESH = """\
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{name: http, port: 80, targetPort: 7000}]
  selector: {app: web}
---
apiVersion: v1
kind: Service
metadata: {name: web-alt}
spec:
  ports: [{name: http, port: 8100, targetPort: 7000}]
  selector: {app: web}
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: web, labels: {app: web}}
spec:
  command: ["python", "{APP}"]
  ports: [{name: http, containerPort: 8000}]
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: client, labels: {app: client}}
spec:
  command: ["python", "-m", "sailmesh.samples.httpbin.sleep"]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: web}
spec:
  workloadSelector: {labels: {app: web}}
  ingress:
  - port: {number: 7000, protocol: HTTP, name: http}
    defaultEndpoint: 0.0.0.0:8000
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: secure, labels: {app: secure}}
spec:
  command: ["python", "{APP}"]
  ports: [{name: http, containerPort: 8000}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: secure}
spec:
  workloadSelector: {labels: {app: secure}}
  ingress:
  - port: {number: 7443, protocol: HTTPS, name: https}
    defaultEndpoint: 0.0.0.0:8000
    tls:
      mode: MUTUAL
      serverCertificate: {PKI}/secure.crt
      privateKey: {PKI}/secure.key
      caCertificates: {PKI}/client-ca.pem
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: client}
spec:
  workloadSelector: {labels: {app: client}}
  egress:
  - port: {number: 8100, protocol: HTTP, name: http}
    captureMode: NONE
    hosts: ["./*"]
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    config = tmp_path_factory.mktemp("ingress-config")
    app = config / "app.py"
    app.write_text(APP)
    pki = tmp_path_factory.mktemp("ingress-pki")
    server_ca, client_ca = make_ca("example.com"), make_ca("client-ca")
    (pki / "ca.pem").write_bytes(server_ca[0].public_bytes(serialization.Encoding.PEM))
    (pki / "client-ca.pem").write_bytes(client_ca[0].public_bytes(serialization.Encoding.PEM))
    for name, (cert, key) in {"secure": issue(server_ca, "secure.example.com"),
                              "client": issue(client_ca, "client.example.com", client=True),
                              "stranger": issue(make_ca("stranger"), "client.example.com", client=True)}.items():
        (pki / f"{name}.crt").write_bytes(cert)
        (pki / f"{name}.key").write_bytes(key)
    (config / "mesh.yaml").write_text(MESH.replace("{APP}", str(app)).replace("{PKI}", str(pki)))
    with RunningMesh(str(tmp_path_factory.mktemp("ingress-state")), dirs=[str(config)]) as m:
        m.pki = pki  # type: ignore[attr-defined]
        yield m


def test_ingress_listener_serves_the_app(mesh: RunningMesh) -> None:
    get = via(mesh, "client")
    _, body = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(get("http://web/")), timeout=30,
                       interval=0.3, what="web through its ingress listener")
    assert body["pod"] == "web-0"
    ip = admin_ip(mesh, "web")
    with NO_PROXY.open(f"http://{ip}:15000/listeners?format=json", timeout=5) as r:
        names = {entry["name"] for entry in json.loads(r.read())["listener_statuses"]}
    assert f"{ip}_7000" in names and f"{ip}_8000" not in names, names


def test_egress_listener_routes_by_host(mesh: RunningMesh) -> None:
    ip = admin_ip(mesh, "client")

    def call() -> dict | None:  # type: ignore[type-arg]
        req = urllib.request.Request(f"http://{ip}:8100/", headers={"Host": "web-alt:8100"})
        try:
            with NO_PROXY.open(req, timeout=5) as r:
                return json.loads(r.read()) if r.status == 200 else None  # type: ignore[no-any-return]
        except OSError:
            return None

    body = wait_for(call, timeout=30, interval=0.3, what="web-alt through the client's egress listener")
    assert body["pod"] == "web-0"


def _tls_get(ip: str, pki: str, cert: str | None) -> int | None:
    """GET / over TLS to the secure sidecar's 7443 (verifying its certificate against the test CA), presenting
    `cert` (a name in the pki dir) or none; the status, or None when the handshake or request fails."""
    ctx = ssl.create_default_context(cafile=f"{pki}/ca.pem")
    ctx.check_hostname = False  # the certificate names secure.example.com; the test dials an address
    if cert is not None:
        ctx.load_cert_chain(f"{pki}/{cert}.crt", f"{pki}/{cert}.key")
    try:
        with socket.create_connection((ip, 7443), timeout=5) as raw, ctx.wrap_socket(raw) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: secure\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except (OSError, ssl.SSLError):
        return None
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None


def test_ingress_tls_requires_a_client_certificate(mesh: RunningMesh) -> None:
    """Istio's Sidecar ingress `tls` MUTUAL: TLS terminated by the sidecar with the Sidecar's certificate files."""
    ip, pki = admin_ip(mesh, "secure"), str(mesh.pki)  # type: ignore[attr-defined]
    assert wait_for(lambda: _tls_get(ip, pki, "client") == 200, timeout=30, interval=0.3,
                    what="the app through the sidecar's TLS ingress listener")
    assert _tls_get(ip, pki, None) is None  # no client certificate: the handshake fails
    assert _tls_get(ip, pki, "stranger") is None  # a certificate of another CA: refused
    with socket.create_connection((ip, 7443), timeout=5) as raw:  # plaintext matches no filter chain: closed
        raw.sendall(b"GET / HTTP/1.1\r\nHost: secure\r\n\r\n")
        raw.settimeout(5)
        try:
            assert raw.recv(100) == b""
        except ConnectionResetError:
            pass
