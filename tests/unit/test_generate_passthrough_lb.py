"""DestinationRule `loadBalancer.simple: PASSTHROUGH` (Istio: "forward the connection to the original IP address
requested by the caller without doing any form of load balancing", an ORIGINAL_DST cluster). Explicitly proxied
requests carry no original destination, so the cluster resolves the service's name as the caller would (through
the mesh's DNS) and connects to that address at the port the caller dialled: LOGICAL_DNS, no EDS."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from sailmesh.generate.enforcement import not_enforced
from sailmesh.xds.types import CLUSTER, ENDPOINT
from tests.unit.test_generate_support import bookinfo, generated, resources, sidecar

C = cluster_pb2.Cluster
REVIEWS = "reviews.default.svc.cluster.local"
RULE = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}, trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}}
"""


def test_passthrough_cluster_resolves_the_service_name_at_the_dialled_port() -> None:
    got = generated(bookinfo(RULE), sidecar(), CLUSTER, C)
    c = got[f"outbound|9080|v2|{REVIEWS}"]
    assert c.type == C.LOGICAL_DNS and not c.HasField("eds_cluster_config")
    assert c.lb_policy == C.ROUND_ROBIN  # one host: nothing to balance
    assert c.dns_lookup_family == C.V4_ONLY and c.respect_dns_ttl
    (host,) = [e.endpoint.address.socket_address for g in c.load_assignment.endpoints for e in g.lb_endpoints]
    assert (host.address, host.port_value) == (REVIEWS, 9080)
    # no auto mTLS: Istio's ORIGINAL_DST hosts carry no tlsMode metadata, so they are sent plaintext
    assert not c.transport_socket_matches and not c.HasField("transport_socket")
    # the other clusters of the rule still balance over EDS (the subset's policy replaces the top-level one)
    assert got[f"outbound|9080|v1|{REVIEWS}"].type == C.EDS
    assert got[f"outbound|9080||{REVIEWS}"].type == C.EDS


def test_passthrough_cluster_gets_no_assignment() -> None:
    got = generated(bookinfo(RULE), sidecar(), ENDPOINT, endpoint_pb2.ClusterLoadAssignment)
    assert f"outbound|9080|v2|{REVIEWS}" not in got
    assert f"outbound|9080|v1|{REVIEWS}" in got


def test_passthrough_is_enforced() -> None:
    (rule,) = resources(RULE)
    assert not_enforced(rule) == []
