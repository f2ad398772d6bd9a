"""EnvoyFilter: Istio's patch operations on generated listeners, routes and clusters (pilot/pkg/networking/core/
envoyfilter), on the generator's production path."""

# ruff: noqa: E501  (the EnvoyFilter documents are YAML flow mappings kept on one line each)
from __future__ import annotations

import pathlib

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from sailmesh.api.envoyfilter_values import build_value, merge
from sailmesh.errors import PatchError
from sailmesh.xds.types import CLUSTER, LISTENER, ROUTE
from tests.unit.test_generate_support import bookinfo, gateway_proxy, generated, sidecar

CONFORMANCE = pathlib.Path(__file__).resolve().parents[3] / "shared" / "conformance"
HCM = "envoy.filters.network.http_connection_manager"

# Istio's local rate limit task (istio.io/latest/docs/tasks/policy-enforcement/rate-limit/), as documented
LOCAL_RATELIMIT = """\
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata:
  name: filter-local-ratelimit-svc
  namespace: istio-system
spec:
  workloadSelector:
    labels:
      app: productpage
  configPatches:
    - applyTo: HTTP_FILTER
      match:
        context: SIDECAR_INBOUND
        listener:
          filterChain:
            filter:
              name: "envoy.filters.network.http_connection_manager"
      patch:
        operation: INSERT_BEFORE
        value:
          name: envoy.filters.http.local_ratelimit
          typed_config:
            "@type": type.googleapis.com/udpa.type.v1.TypedStruct
            type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
            value:
              stat_prefix: http_local_rate_limiter
    - applyTo: HTTP_ROUTE
      match:
        context: SIDECAR_INBOUND
        routeConfiguration:
          vhost:
            name: "inbound|http|9080"
            route:
              action: ANY
      patch:
        operation: MERGE
        value:
          typed_per_filter_config:
            envoy.filters.http.local_ratelimit:
              "@type": type.googleapis.com/udpa.type.v1.TypedStruct
              type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
              value:
                stat_prefix: http_local_rate_limiter
                token_bucket: {max_tokens: 4, tokens_per_fill: 4, fill_interval: 60s}
"""

PRODUCTPAGE = sidecar("productpage-v1-0", "127.0.1.1", app="productpage", version="v1")
REVIEWS = sidecar("reviews-v1-0", "127.0.1.3", app="reviews", version="v1")


def hcm_of(listener: listener_pb2.Listener, chain: int = 0) -> hcm_pb2.HttpConnectionManager:
    f = next(f for f in listener.filter_chains[chain].filters if f.name == HCM)
    h = hcm_pb2.HttpConnectionManager()
    assert f.typed_config.Unpack(h)
    return h


def inbound(snapshot, proxy) -> listener_pb2.Listener:
    ls = generated(snapshot, proxy, LISTENER, listener_pb2.Listener)
    return next(v for k, v in ls.items() if k != "virtualOutbound")


def test_local_rate_limit_task_inserts_the_filter_first_and_the_route_config() -> None:
    snap = bookinfo(LOCAL_RATELIMIT)
    lis = inbound(snap, PRODUCTPAGE)
    for i in range(len(lis.filter_chains)):  # every inbound chain (mTLS and plaintext) gets it
        h = hcm_of(lis, i)
        # INSERT_BEFORE without a subFilter match goes first (pilot's insertBefore with no route match)
        assert h.http_filters[0].name == "envoy.filters.http.local_ratelimit"
        assert h.http_filters[0].typed_config.type_url == "type.googleapis.com/udpa.type.v1.TypedStruct"
        assert h.http_filters[-1].name == "envoy.filters.http.router"
        route = h.route_config.virtual_hosts[0].routes[0]
        assert "envoy.filters.http.local_ratelimit" in route.typed_per_filter_config
    # the outbound listener (context SIDECAR_OUTBOUND) is untouched
    out = generated(snap, PRODUCTPAGE, LISTENER, listener_pb2.Listener)["virtualOutbound"]
    assert "envoy.filters.http.local_ratelimit" not in [f.name for f in hcm_of(out).http_filters]


def test_workload_selector_limits_the_filter() -> None:
    snap = bookinfo(LOCAL_RATELIMIT)
    h = hcm_of(inbound(snap, REVIEWS))
    assert "envoy.filters.http.local_ratelimit" not in [f.name for f in h.http_filters]


def ef(name: str, ns: str, patches: str, extra: str = "") -> str:
    return f"""\
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {{name: {name}, namespace: {ns}}}
spec:
{extra}  configPatches:
{patches}"""


def test_http_filter_insert_before_after_replace_remove_by_sub_filter() -> None:
    patches = """\
  - applyTo: HTTP_FILTER
    match: {context: SIDECAR_OUTBOUND, listener: {filterChain: {filter: {name: envoy.filters.network.http_connection_manager, subFilter: {name: envoy.filters.http.router}}}}}
    patch: {operation: INSERT_BEFORE, value: {name: before.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer, max_request_bytes: 1024}}}
  - applyTo: HTTP_FILTER
    match: {context: SIDECAR_OUTBOUND, listener: {filterChain: {filter: {name: envoy.filters.network.http_connection_manager, subFilter: {name: envoy.filters.http.fault}}}}}
    patch: {operation: INSERT_AFTER, value: {name: after.fault, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer, max_request_bytes: 2048}}}
  - applyTo: HTTP_FILTER
    match: {context: SIDECAR_OUTBOUND, listener: {filterChain: {filter: {name: envoy.filters.network.http_connection_manager, subFilter: {name: envoy.filters.http.cors}}}}}
    patch: {operation: REMOVE}
  - applyTo: HTTP_FILTER
    match: {context: SIDECAR_OUTBOUND, listener: {filterChain: {filter: {name: envoy.filters.network.http_connection_manager, subFilter: {name: before.router}}}}}
    patch: {operation: MERGE, value: {typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer, max_request_bytes: 4096}}}
"""
    snap = bookinfo(ef("f", "default", patches))
    h = hcm_of(generated(snap, REVIEWS, LISTENER, listener_pb2.Listener)["virtualOutbound"])
    names = [f.name for f in h.http_filters]
    assert "envoy.filters.http.cors" not in names
    assert names.index("after.fault") == names.index("envoy.filters.http.fault") + 1
    assert names[-2:] == ["before.router", "envoy.filters.http.router"]
    from envoy.extensions.filters.http.buffer.v3 import buffer_pb2
    b = buffer_pb2.Buffer()
    assert h.http_filters[names.index("before.router")].typed_config.Unpack(b)
    assert b.max_request_bytes.value == 4096  # MERGE: the Any unpacked, merged and packed again (MergeAnyWithAny)


def test_cluster_merge_remove_add_by_service_port_subset() -> None:
    patches = """\
  - applyTo: CLUSTER
    match: {context: SIDECAR_OUTBOUND, cluster: {service: ratings.default.svc.cluster.local, portNumber: 9080}}
    patch: {operation: MERGE, value: {connect_timeout: 7s, per_connection_buffer_limit_bytes: 1024}}
  - applyTo: CLUSTER
    match: {cluster: {name: "outbound|9080||details.default.svc.cluster.local"}}
    patch: {operation: REMOVE}
  - applyTo: CLUSTER
    match: {context: SIDECAR_OUTBOUND}
    patch:
      operation: ADD
      value:
        name: rate_limit_cluster
        type: STRICT_DNS
        connect_timeout: 10s
        load_assignment:
          cluster_name: rate_limit_cluster
          endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.9, port_value: 8081}}}}]}]
"""
    snap = bookinfo(ef("c", "istio-system", patches))
    cs = generated(snap, REVIEWS, CLUSTER, cluster_pb2.Cluster)
    ratings = cs["outbound|9080||ratings.default.svc.cluster.local"]
    assert ratings.connect_timeout.seconds == 7 and ratings.connect_timeout.nanos == 0  # a Duration is replaced
    assert ratings.per_connection_buffer_limit_bytes.value == 1024
    assert "outbound|9080||details.default.svc.cluster.local" not in cs
    assert cs["rate_limit_cluster"].type == cluster_pb2.Cluster.STRICT_DNS
    # the gateway is another context: the SIDECAR_OUTBOUND ADD skips it, the context-free REMOVE applies (ANY)
    gw = generated(snap, gateway_proxy(), CLUSTER, cluster_pb2.Cluster)
    assert "rate_limit_cluster" not in gw and "outbound|9080||details.default.svc.cluster.local" not in gw
    assert "outbound|9080||ratings.default.svc.cluster.local" in gw


def test_virtual_host_and_route_patches_on_rds() -> None:
    patches = """\
  - applyTo: VIRTUAL_HOST
    match: {context: SIDECAR_OUTBOUND, routeConfiguration: {vhost: {name: "ratings.default.svc.cluster.local:9080"}}}
    patch: {operation: MERGE, value: {request_headers_to_add: [{header: {key: x-patched, value: "1"}}]}}
  - applyTo: VIRTUAL_HOST
    match: {context: SIDECAR_OUTBOUND, routeConfiguration: {portNumber: 9080, vhost: {name: "details.default.svc.cluster.local:9080"}}}
    patch: {operation: REMOVE}
  - applyTo: VIRTUAL_HOST
    match: {context: SIDECAR_OUTBOUND, routeConfiguration: {name: "9080"}}
    patch: {operation: ADD, value: {name: extra, domains: [extra.example.com], routes: [{match: {prefix: /}, direct_response: {status: 204}}]}}
  - applyTo: HTTP_ROUTE
    match: {context: SIDECAR_OUTBOUND, routeConfiguration: {vhost: {name: "reviews.default.svc.cluster.local:9080", route: {name: default}}}}
    patch: {operation: INSERT_BEFORE, value: {name: health, match: {path: /health}, direct_response: {status: 200}}}
"""
    snap = bookinfo(ef("r", "default", patches))
    rcs = generated(snap, PRODUCTPAGE, ROUTE, route_pb2.RouteConfiguration)
    vhosts = {v.name: v for v in rcs["9080"].virtual_hosts}
    assert vhosts["ratings.default.svc.cluster.local:9080"].request_headers_to_add[0].header.key == "x-patched"
    assert "details.default.svc.cluster.local:9080" not in vhosts
    assert list(vhosts)[-1] == "extra"  # ADD appends
    assert [r.name for r in vhosts["reviews.default.svc.cluster.local:9080"].routes][:2] == ["health", "default"]
    # a route configuration of another name is not touched by the name-scoped ADD
    assert "extra" not in [v.name for v in rcs["http_proxy"].virtual_hosts]


def test_priority_then_root_namespace_first_order() -> None:
    # two INSERT_FIRST patches: the later-applied one ends up first
    def first(name: str) -> str:
        return f"""\
  - applyTo: HTTP_FILTER
    match: {{context: SIDECAR_OUTBOUND}}
    patch: {{operation: INSERT_FIRST, value: {{name: {name}, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer, max_request_bytes: 1}}}}}}
"""
    snap = bookinfo(ef("a", "default", first("ns.zero")), ef("b", "istio-system", first("root.zero")),
                    extra_priority(ef("c", "default", first("ns.minus"))))
    h = hcm_of(generated(snap, REVIEWS, LISTENER, listener_pb2.Listener)["virtualOutbound"])
    names = [f.name for f in h.http_filters][:3]
    # applied in order: priority -1 (ns.minus), then priority 0 root namespace first (root.zero), then ns.zero
    assert names == ["ns.zero", "root.zero", "ns.minus"]


def extra_priority(doc: str) -> str:
    return doc.replace("spec:\n", "spec:\n  priority: -1\n")


def test_proxy_version_and_metadata_matches() -> None:
    patches = """\
  - applyTo: CLUSTER
    match: {proxy: {proxyVersion: '^1\\.2.*'}}
    patch: {operation: ADD, value: {name: versioned, connect_timeout: 1s}}
  - applyTo: CLUSTER
    match: {proxy: {metadata: {NAMESPACE: default}}}
    patch: {operation: ADD, value: {name: by-metadata, connect_timeout: 1s}}
"""
    from dataclasses import replace
    snap = bookinfo(ef("v", "default", patches))
    plain = generated(snap, REVIEWS, CLUSTER, cluster_pb2.Cluster)
    assert "versioned" not in plain  # no ISTIO_VERSION in the node: no proxyVersion match (pilot's proxyMatch)
    versioned = replace(REVIEWS, istio_version="1.24.2", metadata={"NAMESPACE": "default"})
    cs = generated(snap, versioned, CLUSTER, cluster_pb2.Cluster)
    assert "versioned" in cs and "by-metadata" in cs


def test_values_merge_as_istio() -> None:
    from envoy.config.cluster.v3 import cluster_pb2 as c
    dst = c.Cluster(name="a", connect_timeout={"seconds": 1, "nanos": 5})
    dst.metadata.filter_metadata["x"].update({"k": 1})
    src = c.Cluster(connect_timeout={"seconds": 2})
    src.metadata.filter_metadata["y"].update({"k": 2})
    merge(dst, src)
    assert (dst.connect_timeout.seconds, dst.connect_timeout.nanos) == (2, 0)
    assert set(dst.metadata.filter_metadata) == {"x", "y"} and dst.name == "a"


def test_bad_values_are_refused_with_the_reason() -> None:
    with pytest.raises(PatchError, match="no_such_field"):
        build_value("CLUSTER", {"no_such_field": 1}, strict=True)
    with pytest.raises(PatchError, match="unknown type"):
        build_value("HTTP_FILTER", {"name": "x", "typed_config": {"@type": "type.googleapis.com/no.Such"}}, strict=True)
    build_value("CLUSTER", {"no_such_field": 1}, strict=False)  # generation ignores unknown fields, as pilot


@pytest.mark.skipif(not CONFORMANCE.is_dir(), reason="../shared/conformance is missing (Istio's sample data)")
def test_bookinfo_ratelimit_sample_patches_the_gateway() -> None:
    snap = bookinfo(CONFORMANCE / "bookinfo" / "policy" / "productpage_envoy_ratelimit.yaml")
    gw = gateway_proxy()
    gw = type(gw)(**{**gw.__dict__, "labels": {"istio": "ingressgateway"}}) if "istio" not in gw.labels else gw
    cs = generated(snap, gw, CLUSTER, cluster_pb2.Cluster)
    assert cs["rate_limit_cluster"].type == cluster_pb2.Cluster.STRICT_DNS


ECDS_LUA = """\
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: ecds-lua, namespace: default}
spec:
  workloadSelector: {labels: {app: productpage}}
  configPatches:
  - applyTo: EXTENSION_CONFIG
    patch:
      operation: ADD
      value:
        name: ecds-lua
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
          default_source_code: {inline_string: "function envoy_on_response(h) h:headers():add('x-ecds', 'lua') end"}
  - applyTo: EXTENSION_CONFIG
    patch: {operation: ADD, value: {name: ecds-lua, typed_config: {"@type": type.googleapis.com/google.protobuf.Empty}}}
  - applyTo: HTTP_FILTER
    match: {context: SIDECAR_INBOUND, listener: {filterChain: {filter: {name: envoy.filters.network.http_connection_manager}}}}
    patch:
      operation: INSERT_BEFORE
      value:
        name: ecds-lua
        config_discovery:
          config_source: {ads: {}}
          type_urls: [type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua]
"""


def test_extension_config_is_served_over_ecds() -> None:
    """Istio's EcdsGenerator / InsertedExtensionConfigurations: an EXTENSION_CONFIG patch with operation ADD is a
    TypedExtensionConfig served over ECDS (the first of a name) to the proxies the EnvoyFilter selects, which an
    HTTP filter's `config_discovery` asks for by name; other proxies get none."""
    from envoy.config.core.v3 import extension_pb2
    from envoy.extensions.filters.http.lua.v3 import lua_pb2

    from sailmesh.xds.types import EXTENSION_CONFIG

    snap = bookinfo(ECDS_LUA)
    configs = generated(snap, sidecar(), EXTENSION_CONFIG, extension_pb2.TypedExtensionConfig)
    assert list(configs) == ["ecds-lua"]
    lua = lua_pb2.Lua()
    assert configs["ecds-lua"].typed_config.Unpack(lua)
    assert "x-ecds" in lua.default_source_code.inline_string
    assert generated(snap, sidecar("details-v1-0", "127.0.1.2"), EXTENSION_CONFIG,
                     extension_pb2.TypedExtensionConfig) == {}
    listeners = generated(snap, sidecar(), LISTENER, listener_pb2.Listener)
    h = hcm_pb2.HttpConnectionManager()
    [inbound] = [li for n, li in listeners.items() if n.endswith("_9080") and li.traffic_direction == 1]
    inbound.filter_chains[0].filters[-1].typed_config.Unpack(h)
    [ecds] = [f for f in h.http_filters if f.name == "ecds-lua"]
    assert ecds.config_discovery.config_source.HasField("ads")
