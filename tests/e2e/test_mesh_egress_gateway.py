"""Istio's egress-gateway task (istio.io/latest/docs/tasks/traffic-management/egress/egress-gateway/) on the
embedded mesh, its Gateway, DestinationRule and VirtualService YAML unchanged, through real Envoy:
sidecar -> istio-egressgateway -> an "external" server outside the mesh.

The task's `edition.cnn.com` is served by this test: an HTTP and an HTTPS server on a loopback address no mesh
process uses. The task's ServiceEntry resolves the name by DNS; here it lists that address as its endpoint (the
same ServiceEntry otherwise), so nothing leaves the machine. The egress gateway is started with the mesh
(`sailmesh up --egress-gateway`, Istio's demo profile), as the task's "Before you begin" asks.

Proof that a request went through the egress gateway, as the task shows it: the gateway's access log (mesh
config `accessLogFile: /dev/stdout`, the task's "enable Envoy's access logging") has the request with
`outbound|80||edition.cnn.com`, and its Envoy counts upstream requests on that cluster. With
`outboundTrafficPolicy: REGISTRY_ONLY` a host without a ServiceEntry gets 502 from the sidecar (Istio's
`block_all` virtual host), as the task's "apply Kubernetes network policies" section relies on.
"""

from __future__ import annotations

import http.server
import json
import os
import pathlib
import random
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from sailmesh.cli.exec import find_instance
from sailmesh.platform.state import MeshState
from sailmesh.testing.envoy_stats import envoy_stat
from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.e2e.test_mesh_gateway_tls import issue, make_ca
from tests.e2e.traffic_support import NO_PROXY

pytestmark = pytest.mark.e2e

# The task's Gateway, DestinationRule and VirtualService for HTTP (step "Egress gateway for HTTP traffic"), unchanged
HTTP_TASK = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: istio-egressgateway
spec:
  selector:
    istio: egressgateway
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - edition.cnn.com
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: egressgateway-for-cnn
spec:
  host: istio-egressgateway.istio-system.svc.cluster.local
  subsets:
  - name: cnn
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: direct-cnn-through-egress-gateway
spec:
  hosts:
  - edition.cnn.com
  gateways:
  - istio-egressgateway
  - mesh
  http:
  - match:
    - gateways:
      - mesh
      port: 80
    route:
    - destination:
        host: istio-egressgateway.istio-system.svc.cluster.local
        subset: cnn
        port:
          number: 80
      weight: 100
  - match:
    - gateways:
      - istio-egressgateway
      port: 80
    route:
    - destination:
        host: edition.cnn.com
        port:
          number: 80
      weight: 100
"""

# The task's "Egress gateway for HTTPS traffic" (TLS passthrough by SNI at the gateway), unchanged
TLS_TASK = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: istio-egressgateway
spec:
  selector:
    istio: egressgateway
  servers:
  - port:
      number: 443
      name: tls
      protocol: TLS
    hosts:
    - edition.cnn.com
    tls:
      mode: PASSTHROUGH
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: egressgateway-for-cnn
spec:
  host: istio-egressgateway.istio-system.svc.cluster.local
  subsets:
  - name: cnn
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: direct-cnn-through-egress-gateway
spec:
  hosts:
  - edition.cnn.com
  gateways:
  - mesh
  - istio-egressgateway
  tls:
  - match:
    - gateways:
      - mesh
      port: 443
      sniHosts:
      - edition.cnn.com
    route:
    - destination:
        host: istio-egressgateway.istio-system.svc.cluster.local
        subset: cnn
        port:
          number: 443
  - match:
    - gateways:
      - istio-egressgateway
      port: 443
      sniHosts:
      - edition.cnn.com
    route:
    - destination:
        host: edition.cnn.com
        port:
          number: 443
      weight: 100
"""

MESH = """\
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: sleep, labels: {app: sleep}}
spec:
  command: ["python", "-m", "sailmesh.samples.httpbin.sleep"]
---
# Istio's "enable Envoy's access logging" (meshConfig.accessLogFile), as the ConfigMap istio
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    accessLogFile: /dev/stdout
---
# The task's ServiceEntry `cnn`, its endpoint the test's "external" servers
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: cnn
spec:
  hosts:
  - edition.cnn.com
  ports:
  - number: 80
    name: http-port
    protocol: HTTP
  - number: 443
    name: https
    protocol: HTTPS
  resolution: STATIC
  endpoints:
  - address: {ADDRESS}
    ports: {http-port: {HTTP_PORT}, https: {HTTPS_PORT}}
"""

REGISTRY_ONLY = """\
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: istio-system}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"""


class _External(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = json.dumps({"server": "edition.cnn.com", "path": self.path, "scheme": self.server.scheme,  # type: ignore[attr-defined]
                           "headers": dict(self.headers)}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class External:
    """edition.cnn.com outside the mesh: HTTP and HTTPS (its own CA) on one loopback address."""

    def __init__(self, root: pathlib.Path) -> None:
        self.address = f"127.{random.randint(10, 250)}.{random.randint(1, 250)}.253"
        ca = make_ca("cnn-test-ca")
        cert, key = issue(ca, "edition.cnn.com")
        from cryptography.hazmat.primitives import serialization
        self.ca_file = str(root / "ca.pem")
        pathlib.Path(self.ca_file).write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
        (root / "cnn.crt").write_bytes(cert)
        (root / "cnn.key").write_bytes(key)
        os.chmod(root / "cnn.key", 0o600)
        self.http = http.server.ThreadingHTTPServer((self.address, 0), _External)
        self.http.scheme = "http"  # type: ignore[attr-defined]
        self.https = http.server.ThreadingHTTPServer((self.address, 0), _External)
        self.https.scheme = "https"  # type: ignore[attr-defined]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(root / "cnn.crt"), str(root / "cnn.key"))
        self.https.socket = ctx.wrap_socket(self.https.socket, server_side=True)
        self.threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (self.http, self.https)]
        for t in self.threads:
            t.start()

    def port(self, which: str) -> int:
        return int((self.http if which == "http" else self.https).server_address[1])

    def close(self) -> None:
        for s in (self.http, self.https):
            s.shutdown()
            s.server_close()


@pytest.fixture(scope="module")
def external(tmp_path_factory: pytest.TempPathFactory) -> Iterator[External]:
    ext = External(tmp_path_factory.mktemp("external"))
    try:
        yield ext
    finally:
        ext.close()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, external: External) -> Iterator[RunningMesh]:
    config = tmp_path_factory.mktemp("egress-config")
    (config / "mesh.yaml").write_text(MESH.replace("{ADDRESS}", external.address)
                                      .replace("{HTTP_PORT}", str(external.port("http")))
                                      .replace("{HTTPS_PORT}", str(external.port("https"))))
    with RunningMesh(str(tmp_path_factory.mktemp("egress-state")), dirs=[str(config)], egress_gateway=True) as m:
        yield m


def _proxy(mesh: RunningMesh) -> str:
    inst = find_instance(MeshState.load(mesh.state_dir), "sleep", "default")
    assert inst is not None
    return inst.env["HTTP_PROXY"]


def _get(mesh: RunningMesh, url: str, ca_file: str = "") -> tuple[int, dict]:  # type: ignore[type-arg]
    """GET through the sleep's sidecar: http:// as a proxied request, https:// through the sidecar's CONNECT
    tunnel (TLS from the client to edition.cnn.com end to end, verified against `ca_file`)."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({"http": _proxy(mesh),
                                                                               "https": _proxy(mesh)})]
    if ca_file:
        handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=ca_file)))
    try:
        with urllib.request.build_opener(*handlers).open(url, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, {"raw": e.read().decode(errors="replace")}
    except (OSError, ValueError) as e:
        return 0, {"error": str(e)}


def _egress_stat(mesh: RunningMesh, name: str) -> int:
    return envoy_stat(mesh.egress_gateway_ip, name)


def _gateway_log(mesh: RunningMesh) -> str:
    """The gateway Envoy's own log (the agent writes Envoy's stdout there): the task's `kubectl logs -l
    istio=egressgateway`."""
    with open(os.path.join(mesh.state_dir, "proxies", "istio-egressgateway-0.istio-system", "envoy.log"),
              encoding="utf-8", errors="replace") as fh:
        return fh.read()


def test_egress_gateway_is_a_mesh_service(mesh: RunningMesh) -> None:
    """The egress gateway runs as a router proxy with Istio's labels and Service (the task's `kubectl get svc
    istio-egressgateway -n istio-system`)."""
    with NO_PROXY.open(f"http://{mesh.egress_gateway_ip}:15021/healthz/ready", timeout=5) as r:
        assert r.status == 200
    out = mesh.cli("get", "service", "istio-egressgateway", "-n", "istio-system", "-o", "json", check=True).stdout
    assert "istio-egressgateway" in out and "8443" in out


def test_http_through_the_egress_gateway(mesh: RunningMesh, tmp_path: pathlib.Path, external: External) -> None:
    mesh.apply_text(tmp_path, "http-task", HTTP_TASK)
    before = _egress_stat(mesh, "cluster.outbound|80||edition.cnn.com.upstream_rq_total")

    def call() -> tuple[int, dict] | None:  # type: ignore[type-arg]
        status, body = _get(mesh, "http://edition.cnn.com/politics")
        arrived = _egress_stat(mesh, "cluster.outbound|80||edition.cnn.com.upstream_rq_total") > before
        return (status, body) if status == 200 and arrived else None

    _status, body = wait_for(call, timeout=60, interval=0.5, what="edition.cnn.com through the egress gateway")
    assert body["server"] == "edition.cnn.com" and body["path"] == "/politics" and body["scheme"] == "http"
    # The task's check: the egress gateway's access log has the request, sent to outbound|80||edition.cnn.com
    wait_for(lambda: any("/politics" in line and "outbound|80||edition.cnn.com" in line
                         for line in _gateway_log(mesh).splitlines()), timeout=20, interval=0.3,
             what="the request in the egress gateway's access log")
    # ... and the sidecar sent it to the gateway's subset cluster, not to the external host itself
    sleep_ip = find_instance(MeshState.load(mesh.state_dir), "sleep", "default").address  # type: ignore[union-attr]
    with NO_PROXY.open(f"http://{sleep_ip}:15000/stats?filter=istio-egressgateway", timeout=5) as r:
        stats = r.read().decode()
    assert "outbound|80|cnn|istio-egressgateway.istio-system.svc.cluster.local.upstream_rq_200" in stats, stats
    mesh.delete_text(tmp_path, "http-task")


def test_tls_passthrough_through_the_egress_gateway(mesh: RunningMesh, tmp_path: pathlib.Path,
                                                    external: External) -> None:
    mesh.apply_text(tmp_path, "tls-task", TLS_TASK)
    name = "cluster.outbound|443||edition.cnn.com.upstream_cx_total"
    before = _egress_stat(mesh, name)

    def call() -> tuple[int, dict] | None:  # type: ignore[type-arg]
        status, body = _get(mesh, "https://edition.cnn.com/politics", external.ca_file)
        return (status, body) if status == 200 and _egress_stat(mesh, name) > before else None

    _status, body = wait_for(call, timeout=60, interval=0.5, what="https://edition.cnn.com through the egress gateway")
    # the client's TLS reached the external server unterminated (its certificate verified against the test CA)
    assert body["scheme"] == "https" and body["path"] == "/politics"
    mesh.delete_text(tmp_path, "tls-task")


def test_registry_only_blocks_hosts_without_service_entry(mesh: RunningMesh, tmp_path: pathlib.Path) -> None:
    """Istio: with REGISTRY_ONLY the sidecar's `block_all` virtual host answers 502 for a host no ServiceEntry
    declares; the ServiceEntry's host still works (ALLOW_ANY would have passed the other one through)."""
    mesh.apply_text(tmp_path, "http-task", HTTP_TASK)
    mesh.apply_text(tmp_path, "registry-only", REGISTRY_ONLY)
    try:
        wait_for(lambda: _get(mesh, "http://unknown.example.invalid/")[0] == 502, timeout=60, interval=0.5,
                 what="502 for a host without a ServiceEntry")
        wait_for(lambda: _get(mesh, "http://edition.cnn.com/politics")[0] == 200, timeout=30, interval=0.5,
                 what="the ServiceEntry host under REGISTRY_ONLY")
    finally:
        mesh.delete_text(tmp_path, "registry-only")
        mesh.delete_text(tmp_path, "http-task")

