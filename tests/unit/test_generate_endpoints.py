"""EDS: one ClusterLoadAssignment per EDS cluster, subset label filtering, health, locality, weights."""

from __future__ import annotations

import dataclasses
import pathlib

from envoy.config.endpoint.v3 import endpoint_pb2

from sailmesh.xds.types import CLUSTER, ENDPOINT
from tests.unit.test_generate_support import bookinfo, generate, generated, make_snapshot, service, sidecar, workload

REVIEWS = "reviews.default.svc.cluster.local"


def addresses(cla: endpoint_pb2.ClusterLoadAssignment) -> list[str]:
    return sorted(
        f"{e.endpoint.address.socket_address.address}:{e.endpoint.address.socket_address.port_value}"
        for group in cla.endpoints for e in group.lb_endpoints
    )


def test_subset_clusters_hold_only_matching_pods(conformance: pathlib.Path) -> None:
    snap = bookinfo(conformance / "bookinfo" / "destination-rule-all.yaml")
    got = generated(snap, sidecar(), ENDPOINT, endpoint_pb2.ClusterLoadAssignment)
    assert addresses(got[f"outbound|9080||{REVIEWS}"]) == ["127.0.1.3:9080", "127.0.1.4:9080", "127.0.1.5:9080"]
    assert addresses(got[f"outbound|9080|v2|{REVIEWS}"]) == ["127.0.1.4:9080"]
    assert addresses(got["outbound|9080|v2-mysql|ratings.default.svc.cluster.local"]) == []
    assert all(cla.cluster_name == name for name, cla in got.items())


def test_every_eds_cluster_has_an_assignment(conformance: pathlib.Path) -> None:
    from envoy.config.cluster.v3 import cluster_pb2

    snap = bookinfo(conformance / "bookinfo" / "destination-rule-all.yaml")
    eds = {n for n, c in generated(snap, sidecar(), CLUSTER, cluster_pb2.Cluster).items()
           if c.type == cluster_pb2.Cluster.EDS}
    assert eds == set(generate(snap, sidecar(), ENDPOINT))


def test_unhealthy_endpoints_are_left_out() -> None:
    sick = dataclasses.replace(workload("r2", "127.0.1.4", app="reviews", version="v2"), healthy=False)
    snap = make_snapshot(services=[service("reviews")],
                         workloads=[workload("r1", "127.0.1.3", app="reviews", version="v1"), sick])
    got = generated(snap, sidecar(), ENDPOINT, endpoint_pb2.ClusterLoadAssignment)
    assert addresses(got[f"outbound|9080||{REVIEWS}"]) == ["127.0.1.3:9080"]


def test_locality_groups_and_target_port() -> None:
    a = dataclasses.replace(workload("r1", "127.0.1.3", app="reviews"), locality="us-east/zone-a/rack1")
    b = dataclasses.replace(workload("r2", "127.0.1.4", app="reviews"), locality="us-west/zone-b")
    svc = service("reviews")
    svc = dataclasses.replace(svc, ports=(dataclasses.replace(svc.ports[0], target_port=9081),))
    got = generated(make_snapshot(services=[svc], workloads=[a, b]), sidecar(), ENDPOINT,
                    endpoint_pb2.ClusterLoadAssignment)[f"outbound|9080||{REVIEWS}"]
    locs = [(g.locality.region, g.locality.zone, g.locality.sub_zone) for g in got.endpoints]
    assert locs == [("us-east", "zone-a", "rack1"), ("us-west", "zone-b", "")]
    assert got.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value == 9081


def test_dns_services_have_no_eds() -> None:
    svc = dataclasses.replace(service("x", selector={}), hostname="api.example.com", resolution="DNS")
    assert generate(make_snapshot(services=[svc]), sidecar(), ENDPOINT) == {}
