"""A Kubernetes Service's `spec.trafficDistribution` (and Istio's `networking.istio.io/traffic-distribution`
annotation) as Istio applies it to a sidecar's endpoints: model.GetTrafficDistribution reads it, and
loadbalancer.GetLocalityLbSetting turns PreferClose / PreferSameZone into failoverPriority labels
[topology.istio.io/network, topology.kubernetes.io/region, topology.kubernetes.io/zone] (PreferSameNode adds
topology.istio.io/subzone and kubernetes.io/hostname) with failover forced (no outlier detection needed), below a
DestinationRule's localityLbSetting and above the mesh's."""

from __future__ import annotations

import dataclasses

from envoy.config.endpoint.v3 import endpoint_pb2

from sailmesh.api import locality as loc
from sailmesh.api.meshconfig import from_mapping
from sailmesh.generate.generator import Generator
from sailmesh.registry.model import PREFER_SAME_NODE, PREFER_SAME_ZONE
from sailmesh.registry.services import service_from_kube, services_from_entry, traffic_distribution
from sailmesh.settings import MeshDefaults
from sailmesh.xds.types import ENDPOINT
from tests.unit.test_generate_support import generated, make_snapshot, resources, service, sidecar, workload

CLUSTER_NAME = "outbound|9080||reviews.default.svc.cluster.local"
PLACES = {"127.0.1.3": "r1/z1/s1", "127.0.1.4": "r1/z1/s2", "127.0.1.5": "r1/z2", "127.0.1.6": "r2/z1"}


def dr(policy: str) -> str:
    return ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: default}\n"
            f"spec:\n  host: reviews\n  trafficPolicy:\n{policy}")


def snap(distribution: str = PREFER_SAME_ZONE, *config: str, mesh: dict | None = None):  # type: ignore[no-untyped-def,type-arg]
    wls = [dataclasses.replace(workload(f"reviews-{i}", ip, app="reviews"), locality=place)
           for i, (ip, place) in enumerate(PLACES.items())]
    s = make_snapshot(resources(*config), [service("reviews", traffic_distribution=distribution),
                                           service("productpage")], wls)
    return dataclasses.replace(s, mesh_config=from_mapping(mesh)) if mesh else s


def client(place: str = "r1/z1/s1", **extra: str):  # type: ignore[no-untyped-def]
    return sidecar("productpage-v1-0", "127.0.1.1", app="productpage", version="v1",
                   **loc.topology_labels(place), **extra)


def priorities(snapshot, proxy=None) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """endpoint address -> priority in the proxy's assignment for reviews."""
    cla = generated(snapshot, proxy or client(), ENDPOINT, endpoint_pb2.ClusterLoadAssignment)[CLUSTER_NAME]
    return {e.endpoint.address.socket_address.address: g.priority for g in cla.endpoints for e in g.lb_endpoints}


def kube_service(spec_extra: str = "", annotation: str = "") -> str:
    note = f"  annotations: {{networking.istio.io/traffic-distribution: {annotation}}}\n" if annotation else ""
    return (f"apiVersion: v1\nkind: Service\nmetadata:\n  name: reviews\n  namespace: default\n{note}"
            f"spec:\n  selector: {{app: reviews}}\n  ports: [{{name: http, port: 9080}}]\n{spec_extra}")


def test_istio_reads_the_field_else_the_annotation() -> None:
    """Istio's model.GetTrafficDistribution: spec PreferClose and PreferSameZone are one value, PreferSameNode
    another; without the field the annotation (any case); anything else is no distribution."""
    mesh = MeshDefaults()
    read = [service_from_kube(r, mesh).service.traffic_distribution for r in resources(
        kube_service("  trafficDistribution: PreferClose\n"), kube_service("  trafficDistribution: PreferSameZone\n"),
        kube_service("  trafficDistribution: PreferSameNode\n"), kube_service(annotation="preferclose"),
        kube_service("  trafficDistribution: PreferSameNode\n", annotation="PreferClose"), kube_service(),
        kube_service(annotation="Elsewhere"))]
    assert read == [PREFER_SAME_ZONE, PREFER_SAME_ZONE, PREFER_SAME_NODE, PREFER_SAME_ZONE, PREFER_SAME_NODE, "", ""]
    assert traffic_distribution("Unknown", {}) == ""
    (entry,) = services_from_entry(resources(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: ext\n  namespace: default\n"
        "  annotations: {networking.istio.io/traffic-distribution: PreferSameNode}\n"
        "spec:\n  hosts: [ext.example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n"
        "  resolution: STATIC\n  endpoints: [{address: 10.0.0.1}]\n")[0])
    assert entry.service.traffic_distribution == PREFER_SAME_NODE  # a ServiceEntry: the annotation (Istio)


def test_prefer_close_prioritizes_zone_then_region_without_outlier_detection() -> None:
    """GetLocalityLbSetting(PreferSameZone): failoverPriority [network, region, zone], forceFailover true, so the
    priorities apply without a DestinationRule (applyFailoverPriorities: the first mismatching label of N sets
    N - index): the proxy's zone 0 (both subzones: Istio 1.27 left the subzone out), its region 1, others 2."""
    assert priorities(snap()) == {"127.0.1.3": 0, "127.0.1.4": 0, "127.0.1.5": 1, "127.0.1.6": 2}
    assert priorities(snap(), client("r2/z1")) == {"127.0.1.6": 0, "127.0.1.3": 1, "127.0.1.4": 1, "127.0.1.5": 1}
    # no distribution: one priority (locality LB without outlier detection leaves Envoy at priority 0)
    assert set(priorities(snap(""), client()).values()) == {0}
    # a proxy without a locality gets the plain assignment
    assert set(priorities(snap(), sidecar()).values()) == {0}


def test_prefer_same_node_also_splits_subzones() -> None:
    """GetLocalityLbSetting(PreferSameNode): [network, region, zone, subzone, kubernetes.io/hostname]."""
    assert priorities(snap(PREFER_SAME_NODE)) == {"127.0.1.3": 0, "127.0.1.4": 1, "127.0.1.5": 2, "127.0.1.6": 3}


def test_a_destination_rules_locality_setting_wins() -> None:
    """GetLocalityLbSetting: a DestinationRule's localityLbSetting replaces the service's distribution (`enabled:
    false` turns locality LB off); a rule without one leaves the distribution in force."""
    off = dr("    loadBalancer:\n      localityLbSetting: {enabled: false}\n")
    assert set(priorities(snap(PREFER_SAME_ZONE, off)).values()) == {0}
    by_region = dr("    outlierDetection: {consecutive5xxErrors: 1}\n    loadBalancer:\n"
                   "      localityLbSetting: {failoverPriority: [topology.kubernetes.io/region]}\n")
    assert priorities(snap(PREFER_SAME_ZONE, by_region)) == {
        "127.0.1.3": 0, "127.0.1.4": 0, "127.0.1.5": 0, "127.0.1.6": 1}
    pool_only = dr("    connectionPool: {tcp: {maxConnections: 10}}\n")
    assert priorities(snap(PREFER_SAME_ZONE, pool_only)) == priorities(snap())


def test_the_distribution_wins_over_the_mesh_setting() -> None:
    """GetLocalityLbSetting reads the mesh's localityLbSetting only when the service has no distribution: a
    mesh-wide `enabled: false` leaves a PreferClose service prioritized."""
    s = snap(PREFER_SAME_ZONE, mesh={"localityLbSetting": {"enabled": False}})
    assert priorities(s) == {"127.0.1.3": 0, "127.0.1.4": 0, "127.0.1.5": 1, "127.0.1.6": 2}
    assert set(priorities(snap("", mesh={"localityLbSetting": {"enabled": False}})).values()) == {0}


def test_the_network_label_counts_first_and_enters_the_outbound_key() -> None:
    """The network label is the first failoverPriority label: an endpoint on another network than the proxy's
    (both as labels) goes behind every endpoint of its own; proxies on different networks do not share config."""
    wls = [dataclasses.replace(workload("reviews-0", "127.0.1.3", app="reviews",
                                        **{loc.NETWORK_LABEL: "n2"}), locality="r1/z1"),
           dataclasses.replace(workload("reviews-1", "127.0.1.6", app="reviews",
                                        **{loc.NETWORK_LABEL: "n1"}), locality="r2/z1")]
    s = make_snapshot((), [service("reviews", traffic_distribution=PREFER_SAME_ZONE), service("productpage")], wls)
    proxy = client("r1/z1", **{loc.NETWORK_LABEL: "n1"})
    assert priorities(s, proxy) == {"127.0.1.6": 0, "127.0.1.3": 1}
    assert s.index.outbound_key(proxy) != s.index.outbound_key(client("r1/z1", **{loc.NETWORK_LABEL: "n2"}))


def test_a_service_gaining_the_field_rebuilds_memoized_assignments() -> None:
    """One Generator (its memos kept, as the control plane's) over a snapshot without the field, then the next one whose
    Service has it and whose endpoint tuples are the very same objects: the assignment follows the Service."""
    gen, plain = Generator(), snap("")
    with_field = dataclasses.replace(plain, version=2, services={
        h: dataclasses.replace(s, traffic_distribution=PREFER_SAME_ZONE) if s.name == "reviews" else s
        for h, s in plain.services.items()})
    assert with_field.endpoints is plain.endpoints

    def prios(s) -> dict[str, int]:  # type: ignore[no-untyped-def]
        cla = endpoint_pb2.ClusterLoadAssignment()
        gen.resources(s, client(), ENDPOINT)[CLUSTER_NAME].Unpack(cla)
        return {e.endpoint.address.socket_address.address: g.priority for g in cla.endpoints for e in g.lb_endpoints}

    assert set(prios(plain).values()) == {0}
    assert prios(with_field) == {"127.0.1.3": 0, "127.0.1.4": 0, "127.0.1.5": 1, "127.0.1.6": 2}
