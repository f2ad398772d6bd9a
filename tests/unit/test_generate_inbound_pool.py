"""An inbound cluster's connection pool, as Istio's buildInboundCluster picks it (cluster_builder.go; its
TestConnectionPoolSettings cases): the Sidecar ingress listener's `connectionPool` on that port, else the Sidecar's
`inboundConnectionPool`, else the workload's service's DestinationRule `connectionPool` (port-level merged); none:
Istio's default thresholds. An HTTP/2 upgrade is not applied inbound."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo

from sailmesh.generate import enforcement
from sailmesh.xds.types import CLUSTER
from tests.unit.test_generate_sidecar_ingress import reviews
from tests.unit.test_generate_support import bookinfo, generated, resources

C = cluster_pb2.Cluster
MAX = 4294967295
RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 4, connectTimeout: 5s}
      http: {http1MaxPendingRequests: 5, http2MaxRequests: 6, maxRequestsPerConnection: 7, maxRetries: 8,
             h2UpgradePolicy: UPGRADE}
"""
SIDECAR = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: reviews, namespace: default}
spec:
  workloadSelector: {labels: {app: reviews}}
  inboundConnectionPool:
    tcp: {maxConnections: 40}
    http: {http1MaxPendingRequests: 50}
"""
PER_PORT = SIDECAR + """  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 0.0.0.0:9080
    connectionPool: {tcp: {maxConnections: 400}}
  - port: {number: 7000, protocol: HTTP, name: http-alt}
    defaultEndpoint: 0.0.0.0:9080
"""


def limits(c: cluster_pb2.Cluster) -> tuple[int, int, int, int]:
    t = c.circuit_breakers.thresholds[0]
    return t.max_connections.value, t.max_pending_requests.value, t.max_requests.value, t.max_retries.value


def inbound(*config: str, port: int = 9080) -> cluster_pb2.Cluster:
    return generated(bookinfo(*config), reviews(), CLUSTER, C)[f"inbound|{port}||"]  # type: ignore[no-any-return]


def test_no_settings_keep_istios_default_thresholds() -> None:
    assert limits(inbound()) == (MAX, MAX, MAX, MAX)


def test_the_destination_rule_of_the_workloads_service_applies_inbound_without_an_http2_upgrade() -> None:
    c = inbound(RULE)
    assert limits(c) == (4, 5, 6, 8) and c.connect_timeout.seconds == 5
    opts = hpo.HttpProtocolOptions()
    c.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].Unpack(opts)
    assert opts.common_http_protocol_options.max_requests_per_connection.value == 7
    assert opts.explicit_http_config.HasField("http_protocol_options")  # HTTP/1.1 to the app, as before


def test_the_sidecars_inbound_pool_overrides_the_destination_rule() -> None:
    c = inbound(RULE, SIDECAR)  # replaced whole, not merged (Istio: opts.policy.ConnectionPool = sidecarConnPool)
    assert limits(c) == (40, 50, MAX, MAX) and c.connect_timeout.seconds == 10


def test_an_ingress_listeners_pool_overrides_the_sidecars_for_its_port_only() -> None:
    assert limits(inbound(RULE, PER_PORT))[0] == 400
    assert limits(inbound(RULE, PER_PORT, port=7000))[:2] == (40, 50)


def test_connection_pools_on_a_sidecar_are_enforced() -> None:
    assert enforcement.not_enforced(resources(PER_PORT)[0]) == []
