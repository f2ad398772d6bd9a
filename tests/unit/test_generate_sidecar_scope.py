"""Sidecar resources: egress host import (`ns/host`), selection order, outboundTrafficPolicy REGISTRY_ONLY."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_pb2

from sailmesh.xds.types import CLUSTER, ENDPOINT, ROUTE
from tests.unit.test_generate_support import generate, generated, make_snapshot, resources, service, sidecar

SERVICES = [service("reviews"), service("ratings"), service("api", ns="istio-system"), service("other", ns="bar")]


def sidecar_yaml(name: str, ns: str, hosts: list[str], selector: str = "", mode: str = "") -> str:
    out = f"apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n"
    if selector:
        out += f"  workloadSelector: {{labels: {selector}}}\n"
    if hosts:
        out += "  egress:\n  - hosts: [" + ", ".join(f'"{h}"' for h in hosts) + "]\n"
    if mode:
        out += f"  outboundTrafficPolicy: {{mode: {mode}}}\n"
    return out


def hosts(snapshot, proxy) -> set[str]:
    got = generated(snapshot, proxy, CLUSTER, cluster_pb2.Cluster)
    return {n.split("|")[3] for n in got if n.startswith("outbound|")}


def test_no_sidecar_imports_everything() -> None:
    assert hosts(make_snapshot(services=SERVICES), sidecar()) == {
        "reviews.default.svc.cluster.local", "ratings.default.svc.cluster.local",
        "api.istio-system.svc.cluster.local", "other.bar.svc.cluster.local"}


def test_egress_hosts_limit_clusters_endpoints_and_routes() -> None:
    snap = make_snapshot(resources(sidecar_yaml("default", "default", ["./*", "istio-system/*"])), SERVICES)
    p = sidecar()
    expect = {"reviews.default.svc.cluster.local", "ratings.default.svc.cluster.local",
              "api.istio-system.svc.cluster.local"}
    assert hosts(snap, p) == expect
    assert {n.split("|")[3] for n in generate(snap, p, ENDPOINT)} == expect
    rc = generated(snap, p, ROUTE, route_pb2.RouteConfiguration)["http_proxy"]
    assert {v.name.rsplit(":", 1)[0] for v in rc.virtual_hosts if v.name != "allow_any"} == expect


def test_specific_host_and_workload_selector_win() -> None:
    snap = make_snapshot(resources(
        sidecar_yaml("default", "default", ["./*"]),
        sidecar_yaml("pp", "default", ["*/other.bar.svc.cluster.local"], selector="{app: productpage}"),
    ), SERVICES)
    assert hosts(snap, sidecar()) == {"other.bar.svc.cluster.local"}  # productpage: its own Sidecar
    assert hosts(snap, sidecar("reviews-v1-0", "127.0.1.3", app="reviews")) == {
        "reviews.default.svc.cluster.local", "ratings.default.svc.cluster.local"}  # namespace default


def test_root_namespace_sidecar_is_the_mesh_default() -> None:
    snap = make_snapshot(resources(sidecar_yaml("default", "istio-system", ["~/*"])), SERVICES)
    assert hosts(snap, sidecar()) == set()  # `~` imports nothing
    assert hosts(snap, sidecar(ns="bar")) == set()


def test_registry_only_blocks_unknown_hosts_with_502() -> None:
    snap = make_snapshot(resources(sidecar_yaml("default", "default", [], mode="REGISTRY_ONLY")), SERVICES)
    rc = generated(snap, sidecar(), ROUTE, route_pb2.RouteConfiguration)["http_proxy"]
    last = rc.virtual_hosts[-1]
    assert last.name == "block_all" and list(last.domains) == ["*"]
    assert last.routes[0].direct_response.status == 502
    assert len(rc.virtual_hosts) == 5  # every service still imported (no egress section)


def test_mesh_wide_registry_only_and_sidecar_override() -> None:
    import dataclasses

    from sailmesh.settings import MeshDefaults

    snap = dataclasses.replace(make_snapshot(services=SERVICES),
                               mesh=MeshDefaults(outbound_traffic_policy="REGISTRY_ONLY"))
    rc = generated(snap, sidecar(), ROUTE, route_pb2.RouteConfiguration)["http_proxy"]
    assert rc.virtual_hosts[-1].name == "block_all"
    snap = dataclasses.replace(
        make_snapshot(resources(sidecar_yaml("default", "default", [], mode="ALLOW_ANY")), SERVICES),
        mesh=MeshDefaults(outbound_traffic_policy="REGISTRY_ONLY"))
    rc = generated(snap, sidecar(), ROUTE, route_pb2.RouteConfiguration)["http_proxy"]
    assert rc.virtual_hosts[-1].name == "allow_any"  # the Sidecar's own policy wins
