"""Generated resources loaded into a real Envoy as a static bootstrap: accepted, and they route real traffic."""

from __future__ import annotations

import http.client
import http.server
import json
import pathlib
import socket
import subprocess
import threading
from collections.abc import Iterator

import pytest
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import json_format

from sailmesh.processes import envoy_binary, free_port
from sailmesh.snapshot.model import MeshSnapshot, ProxyView, Service, ServicePort, Workload
from sailmesh.testing.waiting import random_loopback_block, wait_for
from sailmesh.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE
from tests.unit.test_generate_support import (
    bookinfo_services,
    gateway_proxy,
    generated,
    make_snapshot,
    resources,
    service,
    sidecar,
    workload,
)

pytestmark = pytest.mark.e2e

KITCHEN_SINK = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - name: everything
    match:
    - uri: {regex: "/r/[0-9]+"}
      ignoreUriCase: true
      headers: {x-a: {prefix: a}, x-p: {}}
      withoutHeaders: {x-no: {exact: "1"}}
      queryParams: {q: {exact: v}}
      method: {exact: GET}
    timeout: 3s
    retries: {attempts: 4, perTryTimeout: 1s, retryOn: "5xx,429"}
    rewrite: {uri: /new, authority: ratings.internal}
    headers: {request: {set: {x-s: "1"}, add: {x-a2: "2"}, remove: [x-r]}, response: {set: {x-o: "3"}}}
    mirror: {host: details, subset: v1}
    mirrorPercentage: {value: 12.5}
    corsPolicy: {allowOrigins: [{exact: "https://a"}], allowMethods: [GET], maxAge: 1h, allowCredentials: false}
    fault:
      delay: {fixedDelay: 1ms, percentage: {value: 0.5}}
      abort: {grpcStatus: UNAVAILABLE, percentage: {value: 1}}
    route:
    - {destination: {host: ratings, subset: v1}, weight: 70, headers: {request: {set: {x-w: a}}}}
    - {destination: {host: ratings, subset: v2}, weight: 30}
  - match: [{uri: {exact: /old}}]
    redirect: {uri: /new, redirectCode: 308}
  - match: [{uri: {prefix: /teapot}}]
    directResponse: {status: 418, body: {string: short and stout}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings}
spec:
  host: ratings
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 10, connectTimeout: 1s, tcpKeepalive: {time: 60s}}
      http: {http1MaxPendingRequests: 5, maxRequestsPerConnection: 2, idleTimeout: 30s, maxRetries: 2}
    outlierDetection: {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 100}
    loadBalancer: {consistentHash: {httpCookie: {name: u, path: /, ttl: 10s}}}
  subsets:
  - {name: v1, labels: {version: v1}, trafficPolicy: {loadBalancer: {consistentHash: {maglev: {tableSize: 1021},
                                                                                     useSourceIp: true}}}}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      tls: {mode: SIMPLE, sni: ratings.example.com, subjectAltNames: [ratings.example.com]}
      loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 10s, aggression: 1.5, minimumPercent: 5}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db}
spec:
  hosts: [db]
  tcp:
  - route:
    - {destination: {host: db, subset: a}, weight: 50}
    - {destination: {host: db, subset: b}, weight: 50}
"""


def static_bootstrap(snapshot: MeshSnapshot, proxy: ProxyView, admin_port: int) -> bootstrap_pb2.Bootstrap:
    """The proxy's generated resources as static_resources: EDS clusters get their CLA inline, RDS becomes inline."""
    cls = generated(snapshot, proxy, CLUSTER, cluster_pb2.Cluster)
    cla = generated(snapshot, proxy, ENDPOINT, endpoint_pb2.ClusterLoadAssignment)
    lis = generated(snapshot, proxy, LISTENER, listener_pb2.Listener)
    rts = generated(snapshot, proxy, ROUTE, route_pb2.RouteConfiguration)
    b = bootstrap_pb2.Bootstrap()
    b.node.id, b.node.cluster = proxy.id, proxy.workload_name or "sailmesh"
    b.admin.address.socket_address.address = "127.0.0.1"
    b.admin.address.socket_address.port_value = admin_port
    for name, c in cls.items():
        if c.type == cluster_pb2.Cluster.EDS:
            c.type = cluster_pb2.Cluster.STATIC
            c.ClearField("eds_cluster_config")
            c.load_assignment.CopyFrom(cla[name])
        b.static_resources.clusters.append(c)
    for li in lis.values():
        for chain in li.filter_chains:
            for f in chain.filters:
                h = hcm_pb2.HttpConnectionManager()
                if f.typed_config.Unpack(h) and h.HasField("rds"):
                    h.route_config.CopyFrom(rts[h.rds.route_config_name])
                    f.typed_config.Pack(h)
        b.static_resources.listeners.append(li)
    return b


def write_bootstrap(tmp: pathlib.Path, b: bootstrap_pb2.Bootstrap) -> pathlib.Path:
    p = tmp / "bootstrap.json"
    p.write_text(json_format.MessageToJson(b))
    return p


class Backend(http.server.ThreadingHTTPServer):
    """A tiny HTTP app that answers with its name, the path and headers it got (TCP_NODELAY on)."""

    daemon_threads = True

    def __init__(self, name: str, host: str, port: int) -> None:
        self.name = name

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps({"name": name, "path": self.path, "host": self.headers.get("host", ""),
                                   "end_user": self.headers.get("end-user", "")}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        super().__init__((host, port), Handler)

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().server_bind()


def start(b: Backend) -> None:
    threading.Thread(target=b.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()


@pytest.fixture
def backends() -> Iterator[list[Backend]]:
    """Backends the test starts; each is shut down afterwards, even on failure."""
    started: list[Backend] = []
    yield started
    for b in started:
        b.shutdown()
        b.server_close()


def run_envoy(tmp: pathlib.Path, b: bootstrap_pb2.Bootstrap) -> tuple[subprocess.Popen, int]:
    admin = b.admin.address.socket_address.port_value
    log = (tmp / "envoy.log").open("w")
    proc = subprocess.Popen(
        [envoy_binary(), "-c", str(write_bootstrap(tmp, b)), "--disable-hot-restart", "-l", "warning"],
        stdout=log, stderr=subprocess.STDOUT,
    )

    def ready_or_exited() -> bool:
        if proc.poll() is not None:
            return True
        c = http.client.HTTPConnection("127.0.0.1", admin, timeout=1)
        try:
            c.request("GET", "/ready")
            return c.getresponse().status == 200
        finally:
            c.close()

    try:
        wait_for(ready_or_exited, timeout=15, what="envoy ready")
        assert proc.poll() is None, "envoy exited: " + (tmp / "envoy.log").read_text()[-3000:]
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, admin


@pytest.fixture
def envoy(tmp_path: pathlib.Path) -> Iterator:
    procs: list[subprocess.Popen] = []

    def start(b: bootstrap_pb2.Bootstrap) -> int:
        proc, admin = run_envoy(tmp_path, b)
        procs.append(proc)
        return admin

    yield start
    for p in procs:
        p.kill()
        p.wait()


def pods(block: str) -> list[Workload]:
    return [
        workload("productpage-v1-0", f"{block}.1", app="productpage", version="v1"),
        workload("details-v1-0", f"{block}.2", app="details", version="v1"),
        workload("reviews-v1-0", f"{block}.3", app="reviews", version="v1"),
        workload("reviews-v2-0", f"{block}.4", app="reviews", version="v2"),
        workload("ratings-v1-0", f"{block}.6", app="ratings", version="v1"),
    ]


def get(host: str, port: int, url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    c = http.client.HTTPConnection(host, port, timeout=10)
    try:
        c.request("GET", url, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def tunnel_get(proxy_host: str, proxy_port: int, host: str, port: int, path: str) -> tuple[int, bytes]:
    c = http.client.HTTPConnection(proxy_host, proxy_port, timeout=10)
    c.set_tunnel(host, port)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def test_envoy_validates_generated_config(conformance: pathlib.Path, tmp_path: pathlib.Path) -> None:
    bi = conformance / "bookinfo"
    block = random_loopback_block()
    bookinfo_config = resources(bi / "destination-rule-all.yaml", bi / "virtual-service-reviews-test-v2.yaml",
                                bi / "bookinfo-gateway.yaml", bi / "virtual-service-details-v2.yaml")
    sink = make_snapshot(resources(KITCHEN_SINK, bi / "bookinfo-gateway.yaml"),
                         [*bookinfo_services(), service("db", ports=[(7070, "TCP")])], pods(block))
    # the kitchen sink really is in the config under test
    b = static_bootstrap(sink, sidecar(ip=f"{block}.1"), free_port())
    ratings = {c.name: c for c in b.static_resources.clusters if "ratings" in c.name}
    assert ratings["outbound|9080|v1|ratings.default.svc.cluster.local"].lb_policy == cluster_pb2.Cluster.MAGLEV
    v2 = ratings["outbound|9080|v2|ratings.default.svc.cluster.local"]
    assert v2.HasField("transport_socket") and v2.round_robin_lb_config.HasField("slow_start_config")
    cases = [
        (make_snapshot(bookinfo_config, bookinfo_services(), pods(block)), sidecar(ip=f"{block}.1")),
        (make_snapshot(bookinfo_config, bookinfo_services(), pods(block)), gateway_proxy(f"{block}.100")),
        (sink, sidecar(ip=f"{block}.1")),
        (sink, gateway_proxy(f"{block}.100")),
    ]
    for snap, proxy in cases:
        path = write_bootstrap(tmp_path, static_bootstrap(snap, proxy, free_port()))
        r = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart",
                            "-l", "warning"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (proxy.type, r.stdout[-3000:], r.stderr[-3000:])


def test_sidecar_routes_real_traffic(conformance: pathlib.Path, tmp_path: pathlib.Path, backends: list[Backend],
                                     envoy) -> None:
    bi = conformance / "bookinfo"
    block = random_loopback_block()
    app_port = free_port(f"{block}.1")
    outside_port = free_port(f"{block}.99")
    passthrough_port = free_port(f"{block}.98")
    external = Service(f"{block}.99", f"{block}.99", "default", (ServicePort(outside_port, "http", "HTTP"),),
                       resolution="NONE")  # a ServiceEntry with resolution NONE
    snap = make_snapshot(
        resources(bi / "destination-rule-all.yaml", bi / "virtual-service-reviews-test-v2.yaml",
                  bi / "fault-injection-details-v1.yaml"),
        [*bookinfo_services(), external, service("db", ports=[(7070, "TCP")])],
        [*pods(block), workload("db-0", f"{block}.7", app="db")])
    for w in snap.workloads:
        if w.name != "productpage-v1-0":
            b = Backend(w.name, w.address, 7070 if w.name == "db-0" else 9080)
            start(b)
            backends.append(b)
    app = Backend("productpage-app", f"{block}.1", app_port)
    start(app)
    backends.append(app)
    for name, host, port in (("outside", f"{block}.99", outside_port), ("unknown", f"{block}.98", passthrough_port)):
        b = Backend(name, host, port)
        start(b)
        backends.append(b)

    proxy = sidecar(ip=f"{block}.1", app_ports={9080: app_port})
    admin = envoy(static_bootstrap(snap, proxy, free_port()))
    ip = proxy.ip

    # explicit proxying through virtualOutbound (absolute URI, Host: reviews:9080)
    status, body = get(ip, 15001, "http://reviews:9080/reviews/1", {"end-user": "jason"})
    assert status == 200 and json.loads(body)["name"] == "reviews-v2-0"  # header match -> subset v2
    for _ in range(3):
        status, body = get(ip, 15001, "http://reviews:9080/reviews/1")
        assert json.loads(body)["name"] == "reviews-v1-0"  # everything else -> v1
    status, body = get(ip, 15001, "http://reviews.default.svc.cluster.local:9080/")
    assert json.loads(body)["name"] == "reviews-v1-0"  # FQDN alias
    status, _ = get(ip, 15001, "http://details:9080/details/0")
    assert status == 555  # fault-injection-details-v1: abort 555 for 100%
    status, body = get(ip, 15001, "http://ratings:9080/ratings/0")
    assert status == 200 and json.loads(body)["name"] == "ratings-v1-0"  # no VirtualService: default route
    # unknown host: allow_any -> PassthroughCluster (dynamic forward proxy)
    status, body = get(ip, 15001, f"http://{block}.98:{passthrough_port}/x")
    assert status == 200 and json.loads(body)["name"] == "unknown"
    # resolution NONE ServiceEntry host: its own outbound cluster, forwarding to the requested host
    status, body = get(ip, 15001, f"http://{block}.99:{outside_port}/x")
    assert status == 200 and json.loads(body)["name"] == "outside"
    _, stats = get("127.0.0.1", admin, "/stats?filter=upstream_rq_total$")
    counts = dict(line.split(": ") for line in stats.decode().splitlines())
    assert counts[f"cluster.outbound|{outside_port}||{block}.99.upstream_rq_total"] == "1"
    assert counts["cluster.PassthroughCluster.upstream_rq_total"] == "1"
    assert counts["cluster.outbound|9080|v2|reviews.default.svc.cluster.local.upstream_rq_total"] == "1"
    # CONNECT: HTTPS_PROXY-style tunnels to a TCP service (by its short name) and to an unknown host
    status, body = tunnel_get(ip, 15001, "db", 7070, "/q")
    assert status == 200 and json.loads(body)["name"] == "db-0"
    status, body = tunnel_get(ip, 15001, f"{block}.98", passthrough_port, "/t")
    assert status == 200 and json.loads(body)["name"] == "unknown"
    # inbound: the sidecar owns containerPort 9080 on the pod IP and forwards to the app port
    status, body = get(ip, 9080, "/productpage")
    assert status == 200 and json.loads(body) | {"host": ""} == {"name": "productpage-app", "path": "/productpage",
                                                                  "host": "", "end_user": ""}


def test_gateway_routes_real_traffic(conformance: pathlib.Path, tmp_path: pathlib.Path, backends: list[Backend],
                                     envoy) -> None:
    block = random_loopback_block()
    tcp_port = free_port(f"{block}.100")
    tcp_gateway = f"""
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: tcp-gw}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {tcp_port}, name: tcp, protocol: TCP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: db}}
spec:
  hosts: ["*"]
  gateways: [tcp-gw]
  tcp:
  - route: [{{destination: {{host: db, port: {{number: 7070}}}}}}]
"""
    snap = make_snapshot(resources(conformance / "bookinfo" / "bookinfo-gateway.yaml", tcp_gateway),
                         [*bookinfo_services(), service("db", ports=[(7070, "TCP")])],
                         [*pods(block), workload("db-0", f"{block}.7", app="db")])
    for name, host, port in (("productpage-v1-0", f"{block}.1", 9080), ("db-0", f"{block}.7", 7070)):
        b = Backend(name, host, port)
        start(b)
        backends.append(b)
    gw = gateway_proxy(f"{block}.100")
    envoy(static_bootstrap(snap, gw, free_port()))
    status, body = get(gw.ip, 8080, "/productpage", {"host": "bookinfo.example"})
    assert status == 200 and json.loads(body)["name"] == "productpage-v1-0"
    assert get(gw.ip, 8080, "/static/x.css")[0] == 200  # prefix match
    assert get(gw.ip, 8080, "/admin")[0] == 404  # no route matches
    status, body = get(gw.ip, tcp_port, "/over-tcp")  # TCP server: bytes go through tcp_proxy to db
    assert status == 200 and json.loads(body)["name"] == "db-0"
