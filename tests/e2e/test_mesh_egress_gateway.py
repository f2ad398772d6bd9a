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

import json
import os
import pathlib
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization

from sailmesh.cli.exec import find_instance
from sailmesh.platform.state import MeshState
from sailmesh.testing.envoy_stats import envoy_stat
from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.e2e.outside_servers import OutsideServers, server_tls
from tests.e2e.test_mesh_gateway_tls import b64, issue, make_ca
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

# "Egress gateway with TLS origination" (egress-gateway-tls-origination): the gateway's route goes to port 443 and
# a DestinationRule originates TLS there. The task's rule verifies with the OS trust store; the test's CA is in no
# trust store, so the rule names it with `credentialName` (a Secret holding only ca.crt), else the task's YAML.
SIMPLE_TASK = HTTP_TASK.replace("""        host: edition.cnn.com
        port:
          number: 80""", """        host: edition.cnn.com
        port:
          number: 443""") + """---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: originate-tls-for-edition-cnn-com
spec:
  host: edition.cnn.com
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
    portLevelSettings:
    - port:
        number: 443
      tls:
        mode: SIMPLE
        credentialName: cnn-ca
"""

# "Perform mutual TLS origination with an egress gateway", unchanged: ISTIO_MUTUAL from the sidecar to the
# gateway, MUTUAL with the client-credential Secret from the gateway to nginx (the last rule in istio-system, as the
# task applies it with -n istio-system: a DestinationRule in `default` is not looked up for a gateway in
# istio-system and a host in mesh-external, in Istio as here)
MTLS_TASK = """\
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
      name: https
      protocol: HTTPS
    hosts:
    - my-nginx.mesh-external.svc.cluster.local
    tls:
      mode: ISTIO_MUTUAL
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: egressgateway-for-nginx
spec:
  host: istio-egressgateway.istio-system.svc.cluster.local
  subsets:
  - name: nginx
    trafficPolicy:
      loadBalancer:
        simple: ROUND_ROBIN
      portLevelSettings:
      - port:
          number: 443
        tls:
          mode: ISTIO_MUTUAL
          sni: my-nginx.mesh-external.svc.cluster.local
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: direct-nginx-through-egress-gateway
spec:
  hosts:
  - my-nginx.mesh-external.svc.cluster.local
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
        subset: nginx
        port:
          number: 443
      weight: 100
  - match:
    - gateways:
      - istio-egressgateway
      port: 443
    route:
    - destination:
        host: my-nginx.mesh-external.svc.cluster.local
        port:
          number: 443
      weight: 100
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: originate-mtls-for-nginx
  namespace: istio-system  # the task: kubectl apply -n istio-system (where the gateway and its Secret are)
spec:
  host: my-nginx.mesh-external.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
    portLevelSettings:
    - port:
        number: 443
      tls:
        mode: MUTUAL
        credentialName: client-credential # this must match the secret created earlier to hold client certs
        sni: my-nginx.mesh-external.svc.cluster.local
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
---
# The task's nginx in mesh-external (outside the mesh: no sidecar), here the test's mTLS server
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: my-nginx, namespace: mesh-external}
spec:
  hosts: [my-nginx.mesh-external.svc.cluster.local]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  - {number: 443, name: https, protocol: HTTPS}
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints:
  - address: {ADDRESS}
    ports: {http: {MTLS_PORT}, https: {MTLS_PORT}}
---
# kubectl create secret -n istio-system generic client-credential --from-file=tls.key=client.example.com.key
#   --from-file=tls.crt=client.example.com.crt --from-file=ca.crt=example.com.crt
apiVersion: v1
kind: Secret
metadata: {name: client-credential, namespace: istio-system}
data: {tls.crt: {CLIENT_CRT}, tls.key: {CLIENT_KEY}, ca.crt: {CA_CRT}}
---
apiVersion: v1
kind: Secret
metadata: {name: cnn-ca, namespace: istio-system}
data: {ca.crt: {CA_CRT}}
"""

REGISTRY_ONLY = """\
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: istio-system}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"""


class External(OutsideServers):
    """Servers outside the mesh on one loopback address: edition.cnn.com over HTTP and HTTPS, and the mTLS task's
    my-nginx, which requires a client certificate from the client CA (all server certificates from one test CA)."""

    def __init__(self, root: pathlib.Path) -> None:
        super().__init__(253)
        ca, client_ca = make_ca("example.com"), make_ca("client-ca")
        self.ca_pem = ca[0].public_bytes(serialization.Encoding.PEM)
        self.ca_file = str(root / "ca.pem")
        pathlib.Path(self.ca_file).write_bytes(self.ca_pem)
        (root / "client-ca.pem").write_bytes(client_ca[0].public_bytes(serialization.Encoding.PEM))
        self.client = issue(client_ca, "client.example.com", client=True)
        self.add("http", "edition.cnn.com")
        self.add("https", "edition.cnn.com", server_tls(root, ca, "edition.cnn.com"))
        self.add("mtls", "my-nginx", server_tls(root, ca, "my-nginx.mesh-external.svc.cluster.local",
                                                str(root / "client-ca.pem")))


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
                                      .replace("{HTTPS_PORT}", str(external.port("https")))
                                      .replace("{MTLS_PORT}", str(external.port("mtls")))
                                      .replace("{CLIENT_CRT}", b64(external.client[0]))
                                      .replace("{CLIENT_KEY}", b64(external.client[1]))
                                      .replace("{CA_CRT}", b64(external.ca_pem)))
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



def test_tls_origination_at_the_egress_gateway_with_a_credential(mesh: RunningMesh, tmp_path: pathlib.Path) -> None:
    """Plain HTTP from the app; the egress gateway originates TLS to edition.cnn.com:443, verifying the server with
    the CA of the DestinationRule's credentialName (served to the gateway over SDS as kubernetes://cnn-ca-cacert)."""
    mesh.apply_text(tmp_path, "simple-task", SIMPLE_TASK)
    try:
        def call() -> dict | None:  # type: ignore[type-arg]
            status, body = _get(mesh, "http://edition.cnn.com/politics")
            return body if status == 200 and body.get("scheme") == "https" else None

        body = wait_for(call, timeout=60, interval=0.5, what="TLS origination at the egress gateway")
        assert body["server"] == "edition.cnn.com" and body["client"] == ""
    finally:
        mesh.delete_text(tmp_path, "simple-task")


def test_mutual_tls_origination_at_the_egress_gateway(mesh: RunningMesh, tmp_path: pathlib.Path) -> None:
    """The task's `curl -sS http://my-nginx.mesh-external.svc.cluster.local` answers from nginx, which saw the
    client certificate of the client-credential Secret (MUTUAL + credentialName at the gateway); the sidecar reached
    the gateway over ISTIO_MUTUAL."""
    mesh.apply_text(tmp_path, "mtls-task", MTLS_TASK)
    try:
        def call() -> dict | None:  # type: ignore[type-arg]
            status, body = _get(mesh, "http://my-nginx.mesh-external.svc.cluster.local/")
            return body if status == 200 else None

        body = wait_for(call, timeout=60, interval=0.5, what="mTLS origination at the egress gateway")
        assert body["server"] == "my-nginx" and body["client"] == "client.example.com"
        assert envoy_stat(mesh.egress_gateway_ip,
                          "cluster.outbound|443||my-nginx.mesh-external.svc.cluster.local.ssl.handshake") > 0
    finally:
        mesh.delete_text(tmp_path, "mtls-task")
