"""Gateway `tls.mode: AUTO_PASSTHROUGH` (Istio's multi-network east-west gateway): no VirtualService; the filter
chain of the server's SNI hosts runs `sni_cluster` before a tcp_proxy to BlackHoleCluster
(buildOutboundAutoPassthroughFilterStack), and the router gets SNI-DNAT clusters `outbound_.PORT_.SUBSET_.HOST`
without TLS (buildOutboundSniDnatClusters)."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from sailmesh.generate.enforcement import not_enforced
from sailmesh.xds.types import CLUSTER, LISTENER
from tests.unit.test_generate_support import gateway_proxy, generated, make_snapshot, resources, service, sidecar

GATEWAY = """apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: cross-network-gateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 15443, name: tls, protocol: TLS}
    tls: {mode: AUTO_PASSTHROUGH}
    hosts: ["*.local"]
"""
DR = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
  subsets: [{name: v1, labels: {version: v1}}]
"""


def snap(*extra: str):  # type: ignore[no-untyped-def]
    return make_snapshot(resources(GATEWAY, *extra), services=[service("reviews")])


def test_listener_routes_by_sni_to_the_cluster_it_names() -> None:
    lst = generated(snap(), gateway_proxy(), LISTENER, listener_pb2.Listener)["0.0.0.0_15443"]
    assert lst.address.socket_address.port_value == 15443
    assert [f.name for f in lst.listener_filters] == ["envoy.filters.listener.tls_inspector"]
    (chain,) = lst.filter_chains
    assert list(chain.filter_chain_match.server_names) == ["*.local"]
    assert not chain.HasField("transport_socket")  # passthrough: no TLS termination
    assert [f.name for f in chain.filters] == ["envoy.filters.network.sni_cluster", "envoy.filters.network.tcp_proxy"]
    tp = tcp_proxy_pb2.TcpProxy()
    chain.filters[1].typed_config.Unpack(tp)
    assert tp.cluster == "BlackHoleCluster"


def test_sni_dnat_clusters_per_port_and_subset_without_tls() -> None:
    clusters = generated(snap(DR), gateway_proxy(), CLUSTER, cluster_pb2.Cluster)
    plain = clusters["outbound_.9080_._.reviews.default.svc.cluster.local"]
    v1 = clusters["outbound_.9080_.v1_.reviews.default.svc.cluster.local"]
    for c in (plain, v1):
        assert c.type == cluster_pb2.Cluster.EDS
        assert not c.HasField("transport_socket") and not c.transport_socket_matches
    assert v1.eds_cluster_config.service_name == "outbound|9080|v1|reviews.default.svc.cluster.local"


def test_no_sni_dnat_clusters_without_auto_passthrough_or_at_sidecars() -> None:
    plain = make_snapshot(resources(DR), services=[service("reviews")])
    assert not any(n.startswith("outbound_.") for n in generated(plain, gateway_proxy(), CLUSTER, cluster_pb2.Cluster))
    assert not any(n.startswith("outbound_.") for n in generated(snap(), sidecar(), CLUSTER, cluster_pb2.Cluster))


def test_auto_passthrough_is_enforced() -> None:
    (gw,) = resources(GATEWAY)
    assert not_enforced(gw) == []
