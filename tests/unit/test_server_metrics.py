"""The ADS server's metrics: Istio pilot's names and buckets, on the shared registry (sailmesh/metrics.py)."""

from __future__ import annotations

from sailmesh.server.metrics import CONVERGENCE_BUCKETS, XdsMetrics
from sailmesh.server.push import PendingPush, ordered
from sailmesh.xds.push import PushRequest
from sailmesh.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET


def test_istio_metric_names_and_convergence_buckets():
    m = XdsMetrics()
    # Istio: pilot_proxy_convergence_time buckets [0.1, 0.5, 1, 3, 5, 10, 20, 30].
    assert CONVERGENCE_BUCKETS == (0.1, 0.5, 1, 3, 5, 10, 20, 30)
    m.pushes.inc(type="cds")
    m.convergence.observe(0.2, type="cds")
    text = m.registry.render()
    for name in ("pilot_xds_pushes", "pilot_proxy_convergence_time", "pilot_total_xds_rejects", "pilot_xds"):
        assert f"# TYPE {name} " in text
    assert 'pilot_proxy_convergence_time_bucket{le="0.5",type="cds"} 1.0' in text


def test_push_order_and_merging():
    # Istio's order: clusters, endpoints, listeners, routes, secrets; unknown types last.
    assert ordered([ROUTE, "type.googleapis.com/x.Y", LISTENER, SECRET, ENDPOINT, CLUSTER]) == [
        CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, "type.googleapis.com/x.Y"]
    p = PendingPush.of(PushRequest("v1", frozenset({CLUSTER}), reason="a"), now=1.0)
    p.merge(PushRequest("v2", frozenset({ROUTE}), reason="b"))
    assert p.type_urls == {CLUSTER, ROUTE} and p.version == "v2" and p.started == 1.0 and p.merged == 2
    assert p.wants(ROUTE) and not p.wants(LISTENER)
    p.merge(PushRequest("v3"))
    assert p.type_urls is None and p.wants(LISTENER)


def test_shared_response_body_parses_like_a_built_response():
    from envoy.config.cluster.v3 import cluster_pb2
    from envoy.service.discovery.v3 import discovery_pb2

    from sailmesh.server.hashing import HashCache
    from sailmesh.testing.static_source import pack

    resources = {n: pack(cluster_pb2.Cluster(name=n)) for n in ("b", "a", "c")}
    cache = HashCache()
    chosen, digest = cache.subset(resources, None)
    assert cache.subset(resources, None)[1] == digest and cache.hits == 1  # same mapping: no rehash
    body = cache.encoded(chosen)
    kept = cache.encoded(chosen)  # kept from the second use on (a mapping shared by several proxies)
    assert kept == body and cache.encoded(chosen) is kept  # serialized once, shared
    header = discovery_pb2.DiscoveryResponse(version_info="v1", type_url=CLUSTER, nonce="n-1")
    parsed = discovery_pb2.DiscoveryResponse.FromString(header.SerializeToString() + body)
    expected = discovery_pb2.DiscoveryResponse(version_info="v1", type_url=CLUSTER, nonce="n-1")
    expected.resources.extend(resources[n] for n in ("a", "b", "c"))
    assert parsed == expected
    assert cache.subset(resources, frozenset({"a", "zz"}))[0] == {"a": resources["a"]}
