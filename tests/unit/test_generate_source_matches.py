"""sourceLabels / sourceNamespace on tcp and tls route matches (Istio keeps for a proxy only the routes whose source
matches it), also when sidecars share generated config (the outbound key carries tcp/tls sourceLabels too)."""

from __future__ import annotations

from envoy.config.route.v3 import route_pb2

from sailmesh.generate.generator import Generator
from sailmesh.snapshot.model import Service, ServicePort
from sailmesh.xds.types import ROUTE
from tests.unit.test_generate_support import bookinfo_services, bookinfo_workloads, make_snapshot, resources, sidecar

DB = Service(hostname="db.default.svc.cluster.local", name="db", namespace="default",
             ports=(ServicePort(port=5432, name="tcp", protocol="TCP"),), selector={"app": "db"})

TCP_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: default}
spec:
  hosts: [db]
  tcp:
  - match: [{sourceLabels: {app: productpage}}]
    route: [{destination: {host: db, subset: v2}}]
  - match: [{sourceNamespace: other}]
    route: [{destination: {host: db, subset: v3}}]
  - route: [{destination: {host: db, subset: v1}}]
"""


def connect_cluster(gen: Generator, snap, proxy) -> str:  # type: ignore[no-untyped-def]
    cfg = route_pb2.RouteConfiguration()
    gen.resources(snap, proxy, ROUTE)["http_proxy"].Unpack(cfg)
    vh = next(v for v in cfg.virtual_hosts if v.name == "db.default.svc.cluster.local:5432")
    return str(vh.routes[0].route.cluster)


def test_tcp_source_matches_per_proxy_through_one_generator() -> None:
    snap = make_snapshot(resources(TCP_VS), [*bookinfo_services(), DB], bookinfo_workloads())
    gen = Generator()
    details = sidecar("details-v1-0", "127.0.1.2", app="details", version="v1")
    pp = sidecar("productpage-v1-0", "127.0.1.1", app="productpage", version="v1")
    other = sidecar("client-0", "127.0.2.1", ns="other", app="client")
    # details first: its config must not be handed to productpage, whose labels match the first tcp route
    assert connect_cluster(gen, snap, details) == "outbound|5432|v1|db.default.svc.cluster.local"
    assert connect_cluster(gen, snap, pp) == "outbound|5432|v2|db.default.svc.cluster.local"
    assert connect_cluster(gen, snap, other) == "outbound|5432|v3|db.default.svc.cluster.local"


TWO_PORTS = Service(hostname="db.default.svc.cluster.local", name="db", namespace="default",
                    ports=(ServicePort(port=5432, name="tcp", protocol="TCP"),
                           ServicePort(port=5433, name="tcp-b", protocol="TCP")), selector={"app": "db"})

PORT_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: default}
spec:
  hosts: [db]
  tcp:
  - match: [{port: 5433}]
    route: [{destination: {host: db, subset: v2, port: {number: 5433}}}]
  - route: [{destination: {host: db, subset: v1}, weight: 75}, {destination: {host: db, subset: v3}, weight: 25}]
"""


def test_tcp_routes_on_every_applicable_port() -> None:
    """Each TCP port of the host takes the first tcp route whose match applies to it (Istio builds a TCP route per
    port); a route without a port match applies to every port, with its weights."""
    snap = make_snapshot(resources(PORT_VS), [*bookinfo_services(), TWO_PORTS], bookinfo_workloads())
    cfg = route_pb2.RouteConfiguration()
    Generator().resources(snap, sidecar(), ROUTE)["http_proxy"].Unpack(cfg)
    vh = {v.name: v for v in cfg.virtual_hosts}
    second = vh["db.default.svc.cluster.local:5433"].routes[0].route
    assert second.cluster == "outbound|5433|v2|db.default.svc.cluster.local"
    first = vh["db.default.svc.cluster.local:5432"].routes[0].route
    assert [(c.name, c.weight.value) for c in first.weighted_clusters.clusters] == [
        ("outbound|5432|v1|db.default.svc.cluster.local", 75), ("outbound|5432|v3|db.default.svc.cluster.local", 25)]
