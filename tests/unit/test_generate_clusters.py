"""Clusters: Istio names, subsets, DestinationRule traffic policies, DNS/static services, inbound, specials."""

from __future__ import annotations

import dataclasses
import pathlib

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo

from sailmesh.generate.clusters import HTTP_OPTIONS_KEY
from sailmesh.xds.types import CLUSTER
from tests.unit.test_generate_support import (
    bookinfo,
    generate,
    generated,
    make_snapshot,
    resources,
    service,
    sidecar,
    workload,
)

C = cluster_pb2.Cluster
REVIEWS = "reviews.default.svc.cluster.local"


def clusters(snapshot, proxy=None) -> dict[str, C]:
    return generated(snapshot, proxy or sidecar(), CLUSTER, C)


@pytest.fixture
def bookinfo_dir(conformance: pathlib.Path) -> pathlib.Path:
    return conformance / "bookinfo"


def test_default_and_subset_clusters_from_destination_rule_all(bookinfo_dir: pathlib.Path) -> None:
    got = clusters(bookinfo(bookinfo_dir / "destination-rule-all.yaml"))
    for sub in ("", "v1", "v2", "v3"):
        c = got[f"outbound|9080|{sub}|{REVIEWS}"]
        assert c.type == C.EDS
        assert c.eds_cluster_config.service_name == c.name  # Istio: EDS service name = cluster name
        assert c.eds_cluster_config.eds_config.HasField("ads")
    assert "outbound|9080|v2-mysql-vm|ratings.default.svc.cluster.local" in got
    assert "outbound|9080|v3|details.default.svc.cluster.local" not in got


def test_istio_cluster_defaults() -> None:
    c = clusters(bookinfo())[f"outbound|9080||{REVIEWS}"]
    assert c.connect_timeout.seconds == 10  # MeshConfig connectTimeout default
    assert c.lb_policy == C.LEAST_REQUEST  # Istio's default LB since 1.14
    t = c.circuit_breakers.thresholds[0]  # Istio: every limit MaxUint32, remaining tracked
    assert (t.max_connections.value, t.max_pending_requests.value, t.max_requests.value, t.max_retries.value) == (
        4294967295,) * 4
    assert t.track_remaining
    assert not c.HasField("outlier_detection")
    opts = hpo.HttpProtocolOptions()
    c.typed_extension_protocol_options[HTTP_OPTIONS_KEY].Unpack(opts)
    assert opts.explicit_http_config.HasField("http_protocol_options")  # HTTP port: HTTP/1.1 upstream


def test_blackhole_and_passthrough() -> None:
    got = clusters(bookinfo())
    bh = got["BlackHoleCluster"]
    assert bh.type == C.STATIC and not bh.HasField("load_assignment")
    pt = got["PassthroughCluster"]  # explicit proxying: dynamic forward proxy instead of ORIGINAL_DST
    assert pt.cluster_type.name == "envoy.clusters.dynamic_forward_proxy"
    assert pt.lb_policy == C.CLUSTER_PROVIDED


def test_grpc_and_http2_ports_get_http2_upstream() -> None:
    snap = make_snapshot(services=[service("echo", ports=[(7070, "GRPC"), (8080, "HTTP2"), (9000, "TCP")])])
    got = clusters(snap)
    for port in (7070, 8080):
        opts = hpo.HttpProtocolOptions()
        got[f"outbound|{port}||echo.default.svc.cluster.local"].typed_extension_protocol_options[
            HTTP_OPTIONS_KEY].Unpack(opts)
        assert opts.explicit_http_config.HasField("http2_protocol_options")
    assert HTTP_OPTIONS_KEY not in got["outbound|9000||echo.default.svc.cluster.local"].typed_extension_protocol_options


DR_POLICIES = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 30ms, tcpKeepalive: {time: 7200s, interval: 75s, probes: 3}}
      http: {http1MaxPendingRequests: 10, http2MaxRequests: 1000, maxRequestsPerConnection: 1, maxRetries: 3,
             idleTimeout: 15s}
    outlierDetection: {consecutive5xxErrors: 7, consecutiveGatewayErrors: 3, interval: 5m, baseEjectionTime: 15m,
                       maxEjectionPercent: 50, minHealthPercent: 25}
    portLevelSettings:
    - port: {number: 9080}
      loadBalancer: {simple: RANDOM}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer:
        consistentHash: {httpHeaderName: x-user, ringHash: {minimumRingSize: 2048}}
      connectionPool:
        http: {h2UpgradePolicy: UPGRADE}
  - name: v3
    labels: {version: v3}
    trafficPolicy:
      loadBalancer:
        consistentHash: {useSourceIp: true, maglev: {tableSize: 65537}}
"""


def test_traffic_policy_translation() -> None:
    got = clusters(bookinfo(DR_POLICIES))
    c = got[f"outbound|9080||{REVIEWS}"]
    assert c.lb_policy == C.RANDOM  # portLevelSettings for 9080 replace the top-level loadBalancer
    t = c.circuit_breakers.thresholds[0]
    assert (t.max_connections.value, t.max_pending_requests.value, t.max_requests.value, t.max_retries.value) == (
        100, 10, 1000, 3)
    assert c.connect_timeout.ToMilliseconds() == 30
    ka = c.upstream_connection_options.tcp_keepalive
    assert (ka.keepalive_time.value, ka.keepalive_interval.value, ka.keepalive_probes.value) == (7200, 75, 3)
    opts = hpo.HttpProtocolOptions()
    c.typed_extension_protocol_options[HTTP_OPTIONS_KEY].Unpack(opts)
    assert opts.common_http_protocol_options.max_requests_per_connection.value == 1
    assert opts.common_http_protocol_options.idle_timeout.seconds == 15
    od = c.outlier_detection
    assert (od.consecutive_5xx.value, od.enforcing_consecutive_5xx.value) == (7, 100)
    assert (od.consecutive_gateway_failure.value, od.enforcing_consecutive_gateway_failure.value) == (3, 100)
    assert od.enforcing_success_rate.value == 0  # Istio turns success-rate ejection off
    assert (od.interval.seconds, od.base_ejection_time.seconds, od.max_ejection_percent.value) == (300, 900, 50)
    assert c.common_lb_config.healthy_panic_threshold.value == 25  # minHealthPercent


def test_subset_policy_overrides_top_level_per_component() -> None:
    got = clusters(bookinfo(DR_POLICIES))
    v1 = got[f"outbound|9080|v1|{REVIEWS}"]
    assert v1.lb_policy == C.RANDOM and v1.circuit_breakers.thresholds[0].max_connections.value == 100
    v2 = got[f"outbound|9080|v2|{REVIEWS}"]
    assert v2.lb_policy == C.RING_HASH and v2.ring_hash_lb_config.minimum_ring_size.value == 2048
    # the subset's connectionPool replaces the top-level one as a whole (Istio's MergeTrafficPolicy)
    assert v2.circuit_breakers.thresholds[0].max_connections.value == 4294967295
    opts = hpo.HttpProtocolOptions()
    v2.typed_extension_protocol_options[HTTP_OPTIONS_KEY].Unpack(opts)
    assert opts.explicit_http_config.HasField("http2_protocol_options")  # h2UpgradePolicy: UPGRADE
    assert v2.outlier_detection.consecutive_5xx.value == 7  # not overridden: inherited
    v3 = got[f"outbound|9080|v3|{REVIEWS}"]
    assert v3.lb_policy == C.MAGLEV and v3.maglev_lb_config.table_size.value == 65537


def test_consistent_hash_default_ring_size() -> None:
    dr = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: user, ttl: 0s}}}}
"""
    c = clusters(bookinfo(dr))[f"outbound|9080||{REVIEWS}"]
    assert c.lb_policy == C.RING_HASH and c.ring_hash_lb_config.minimum_ring_size.value == 1024


def test_destination_rule_lookup_prefers_proxy_namespace_then_service_then_root() -> None:
    def dr(ns: str, lb: str) -> str:
        return (f"apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
                f"metadata: {{name: r, namespace: {ns}}}\nspec:\n  host: reviews.default.svc.cluster.local\n"
                f"  trafficPolicy: {{loadBalancer: {{simple: {lb}}}}}\n")
    snap = make_snapshot(resources(dr("istio-system", "RANDOM"), dr("default", "ROUND_ROBIN"), dr("bar", "LEAST_CONN")),
                         [service("reviews")])
    name = f"outbound|9080||{REVIEWS}"
    assert clusters(snap, sidecar(ns="bar"))[name].lb_policy == C.LEAST_REQUEST
    assert clusters(snap, sidecar(ns="default"))[name].lb_policy == C.ROUND_ROBIN
    assert clusters(snap, sidecar(ns="other"))[name].lb_policy == C.ROUND_ROBIN
    root_only = make_snapshot(resources(dr("istio-system", "RANDOM")), [service("reviews")])
    assert clusters(root_only, sidecar(ns="other"))[name].lb_policy == C.RANDOM


def test_dns_service_entry_clusters() -> None:
    strict = service("api.example.com", ports=[(443, "TLS")], selector={}, resolution="DNS")
    strict = dataclasses.replace(strict, hostname="api.example.com")
    logical = service("x", ports=[(80, "HTTP")], selector={}, resolution="DNS_ROUND_ROBIN")
    logical = dataclasses.replace(logical, hostname="db.example.com")
    got = clusters(make_snapshot(services=[strict, logical]))
    s = got["outbound|443||api.example.com"]
    assert s.type == C.STRICT_DNS and s.dns_lookup_family == C.V4_ONLY
    ep = s.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (ep.address, ep.port_value) == ("api.example.com", 443)  # no endpoints: resolve the host itself
    assert got["outbound|80||db.example.com"].type == C.LOGICAL_DNS


def test_inbound_cluster_points_at_app_port() -> None:
    got = clusters(bookinfo(), sidecar("reviews-v2-0", "127.0.1.4", app="reviews", version="v2",
                                       app_ports={9080: 41234}))
    c = got["inbound|9080||"]
    assert c.type == C.STATIC
    sa = c.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (sa.address, sa.port_value) == ("127.0.1.4", 41234)


def test_inbound_port_without_app_port_mapping_uses_same_port() -> None:
    got = clusters(bookinfo(), sidecar("reviews-v2-0", "127.0.1.4", app="reviews", version="v2", app_ports={}))
    sa = got["inbound|9080||"].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert sa.port_value == 9080


def test_export_to_hides_services_from_other_namespaces() -> None:
    private = service("secret", ns="default", export_to=(".",))
    snap = make_snapshot(services=[private], workloads=[workload("s", "127.0.2.1", app="secret")])
    assert "outbound|9080||secret.default.svc.cluster.local" in clusters(snap, sidecar(ns="default"))
    assert "outbound|9080||secret.default.svc.cluster.local" not in clusters(snap, sidecar(ns="bar"))


def test_resolution_none_without_endpoints_forwards_to_the_requested_host() -> None:
    # Istio's ORIGINAL_DST has no meaning for explicitly proxied requests: forward to the Host instead.
    se = dataclasses.replace(service("x", ports=[(80, "HTTP")], selector={}), hostname="*.example.com",
                             resolution="NONE")
    snap = make_snapshot(services=[se])
    c = clusters(snap)["outbound|80||*.example.com"]
    assert c.cluster_type.name == "envoy.clusters.dynamic_forward_proxy" and c.lb_policy == C.CLUSTER_PROVIDED
    from sailmesh.xds.types import ENDPOINT

    assert generate(snap, sidecar(), ENDPOINT) == {}


def test_headless_service_with_endpoints_uses_eds() -> None:
    headless = service("db", resolution="NONE")
    snap = make_snapshot(services=[headless], workloads=[workload("db-0", "127.0.2.2", app="db")])
    assert clusters(snap)["outbound|9080||db.default.svc.cluster.local"].type == C.EDS


def test_destination_rule_tls_origination() -> None:
    from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

    dr = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ext}
spec:
  host: api.example.com
  trafficPolicy:
    portLevelSettings:
    - port: {number: 443}
      tls: {mode: SIMPLE, caCertificates: /etc/ca.pem, subjectAltNames: [api.example.com]}
  subsets:
  - name: mtls
    trafficPolicy:
      tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem, sni: other.example.com}
"""
    ext = dataclasses.replace(service("x", ports=[(443, "HTTPS"), (80, "HTTP")], selector={}),
                              hostname="api.example.com", resolution="DNS")
    got = clusters(make_snapshot(resources(dr), [ext]))
    assert not got["outbound|80||api.example.com"].HasField("transport_socket")  # TLS set for 443 only
    c = got["outbound|443||api.example.com"]
    assert c.transport_socket.name == "envoy.transport_sockets.tls"
    ctx = tls_pb2.UpstreamTlsContext()
    c.transport_socket.typed_config.Unpack(ctx)
    assert ctx.sni == "api.example.com"
    vc = ctx.common_tls_context.validation_context
    assert vc.trusted_ca.filename == "/etc/ca.pem"
    assert vc.match_typed_subject_alt_names[0].san_type == common_pb2.SubjectAltNameMatcher.DNS
    m = tls_pb2.UpstreamTlsContext()
    got["outbound|443|mtls|api.example.com"].transport_socket.typed_config.Unpack(m)
    assert m.sni == "other.example.com"
    assert m.common_tls_context.tls_certificates[0].private_key.filename == "/k.pem"
    # OS trust store by default
    assert m.common_tls_context.validation_context.trusted_ca.filename == "/etc/ssl/certs/ca-certificates.crt"


def test_warmup_slow_start() -> None:
    dr = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 30s, aggression: 2, minimumPercent: 10}}}
  subsets:
  - {name: v1, labels: {version: v1}, trafficPolicy: {loadBalancer: {warmupDurationSecs: 5s}}}
"""
    got = clusters(bookinfo(dr))
    ss = got[f"outbound|9080||{REVIEWS}"].round_robin_lb_config.slow_start_config
    assert (ss.slow_start_window.seconds, ss.aggression.default_value, ss.min_weight_percent.value) == (30, 2.0, 10.0)
    v1 = got[f"outbound|9080|v1|{REVIEWS}"]  # default LB is LEAST_REQUEST
    assert v1.least_request_lb_config.slow_start_config.slow_start_window.seconds == 5


def test_invalid_duplicates_do_not_duplicate_clusters() -> None:
    dr = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v1, labels: {version: v2}}
"""
    svc = service("reviews", ports=[(9080, "HTTP"), (9080, "TCP")])
    snap = make_snapshot(resources(dr), [svc], [workload("r1", "127.0.1.3", app="reviews", version="v1")])
    from sailmesh.xds.types import ENDPOINT, LISTENER, ROUTE

    for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE):
        generate(snap, sidecar(), t)  # raises GenerationError on duplicate names
    assert f"outbound|9080|v1|{REVIEWS}" in clusters(snap)
