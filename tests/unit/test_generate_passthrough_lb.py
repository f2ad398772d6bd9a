"""DestinationRule `loadBalancer.simple: PASSTHROUGH` (Istio: "forward the connection to the original IP address
requested by the caller without doing any form of load balancing", an ORIGINAL_DST cluster). Explicitly proxied
requests carry no original destination, so the cluster resolves the service's name as the caller would (through
the mesh's DNS) and connects to that address at the port the caller dialled: LOGICAL_DNS, no EDS. A service with
addresses (VIPs its virtual host matches) gets a dynamic forward proxy cluster on HTTP ports: the request's
authority (an address as is) is where the connection goes. A captured sidecar gets Istio's plain ORIGINAL_DST.

docs/translation.md "Clusters"."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.clusters.dynamic_forward_proxy.v3 import cluster_pb2 as dfp_cluster_pb2

from sailmesh.generate.enforcement import not_enforced
from sailmesh.snapshot.model import Endpoint, MeshSnapshot, Service
from sailmesh.xds.types import CLUSTER, ENDPOINT
from tests.unit.test_generate_support import (
    bookinfo,
    bookinfo_services,
    bookinfo_workloads,
    generated,
    make_snapshot,
    resources,
    service,
    sidecar,
)

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


# A service with addresses (a ServiceEntry's `addresses`): its virtual host matches requests for those addresses
INSTANCES = "instances.example.test"
ADDRESSED_RULE = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: instances, namespace: default}
spec:
  host: instances.example.test
  trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}
"""


def _addressed() -> MeshSnapshot:
    svc = Service(hostname=INSTANCES, name=INSTANCES, namespace="default",
                  ports=service("x", ports=[(8080, "HTTP"), (9000, "TCP")]).ports, resolution="STATIC",
                  mesh_external=True, addresses=("127.0.77.1", "127.0.77.2"))
    eps = [Endpoint(INSTANCES, p, f"127.0.77.{i}", p) for p in (8080, 9000) for i in (1, 2)]
    return make_snapshot(resources(ADDRESSED_RULE), [*bookinfo_services(), svc], bookinfo_workloads(),
                         extra_endpoints=eps)


def test_passthrough_on_an_addressed_http_port_forwards_to_the_requested_authority() -> None:
    got = generated(_addressed(), sidecar(), CLUSTER, C)
    c = got[f"outbound|8080||{INSTANCES}"]
    assert c.cluster_type.name == "envoy.clusters.dynamic_forward_proxy"
    config = dfp_cluster_pb2.ClusterConfig()
    c.cluster_type.typed_config.Unpack(config)
    assert config.dns_cache_config.name == "dynamic_forward_proxy_cache_config"  # the HCM filter's cache
    assert c.lb_policy == C.CLUSTER_PROVIDED and not c.HasField("load_assignment")
    assert not c.transport_socket_matches and not c.HasField("transport_socket")
    # a TCP port has no authority: the name resolved as the caller would
    assert got[f"outbound|9000||{INSTANCES}"].type == C.LOGICAL_DNS


def test_passthrough_at_a_captured_sidecar_is_istios_original_dst() -> None:
    """Istio's applyLoadBalancer for PASSTHROUGH: ClusterDiscoveryType ORIGINAL_DST, LbPolicy CLUSTER_PROVIDED, no
    load assignment; the connection goes where the app connected (istio-iptables kept it)."""
    captured = dataclasses.replace(sidecar(), metadata=MappingProxyType({"INTERCEPTION_MODE": "REDIRECT"}))
    for snapshot, name in ((bookinfo(RULE), f"outbound|9080|v2|{REVIEWS}"),
                           (_addressed(), f"outbound|8080||{INSTANCES}")):
        c = generated(snapshot, captured, CLUSTER, C)[name]
        assert c.type == C.ORIGINAL_DST and c.lb_policy == C.CLUSTER_PROVIDED, name
        assert not c.HasField("load_assignment") and not c.HasField("eds_cluster_config"), name


# A Kubernetes Service with a ClusterIP: its virtual host matches `reviews:9080` from default's sidecars
CLUSTER_IP_RULE = ADDRESSED_RULE.replace("instances.example.test", "reviews").replace("instances", "reviews")


def _cluster_ip() -> MeshSnapshot:
    services = [dataclasses.replace(s, addresses=("10.96.0.9",)) if s.name == "reviews" else s
                for s in bookinfo_services()]
    return make_snapshot(resources(CLUSTER_IP_RULE), services, bookinfo_workloads())


def test_passthrough_short_names_map_to_the_fqdn_as_a_search_list_would() -> None:
    """A pod's search list (`<ns>.svc.cluster.local svc.cluster.local cluster.local`) resolves `reviews`,
    `reviews.default` and `reviews.default.svc` to the Service; Envoy's resolver has none, so the forward proxy
    cluster carries those names (Istio's generateVirtualHostDomains: exactly the ones reaching its virtual host)
    mapped to `<FQDN>:<port>`, which the outbound chain's set_filter_state hands the forward proxy."""
    from google.protobuf.json_format import MessageToDict

    from sailmesh.generate.clusters import PASSTHROUGH_HOSTS, PASSTHROUGH_METADATA

    def hosts(proxy: object) -> dict[str, str]:
        c = generated(_cluster_ip(), proxy, CLUSTER, C)[f"outbound|9080||{REVIEWS}"]  # type: ignore[arg-type]
        assert c.cluster_type.name == "envoy.clusters.dynamic_forward_proxy"
        return dict(MessageToDict(c.metadata.filter_metadata[PASSTHROUGH_METADATA]).get(PASSTHROUGH_HOSTS, {}))

    target = f"{REVIEWS}:9080"
    assert hosts(sidecar()) == {n: target for n in ("reviews", "reviews:9080", "reviews.default.svc",
                                                     "reviews.default.svc:9080", "reviews.default",
                                                     "reviews.default:9080")}
    # from another namespace the bare short name is not the Service's (Istio leaves it out of the domains)
    other = hosts(sidecar("client-v1-0", "127.0.9.1", ns="bar", app="client", version="v1"))
    assert "reviews" not in other and "reviews:9080" not in other and other["reviews.default:9080"] == target
    # without the rule: no forward proxy, no map
    plain = generated(make_snapshot((), bookinfo_services(), bookinfo_workloads()), sidecar(), CLUSTER, C)
    assert not plain[f"outbound|9080||{REVIEWS}"].metadata.filter_metadata.get(PASSTHROUGH_METADATA)


def test_the_outbound_chain_hands_the_short_names_fqdn_to_the_forward_proxy() -> None:
    """set_filter_state (`envoy.upstream.dynamic_host`, skipped when empty) just before the forward proxy filter,
    which reads it, disabled unless a route enables it; neither at a captured sidecar (ORIGINAL_DST) nor on the
    inbound side."""
    from envoy.extensions.filters.http.dynamic_forward_proxy.v3 import dynamic_forward_proxy_pb2 as dfp
    from envoy.extensions.filters.http.set_filter_state.v3 import set_filter_state_pb2 as sfs

    from sailmesh.generate.filters.basic import DFP_FILTER, PASSTHROUGH_HOST_CEL, SET_FILTER_STATE_FILTER
    from sailmesh.generate.filters.chain import http_filters
    from sailmesh.generate.filters.context import Direction, FilterContext

    snap = _cluster_ip()
    chain = http_filters(FilterContext(snap, sidecar(), Direction.OUTBOUND, 15001))
    names = [f.name for f in chain]
    assert names.index(SET_FILTER_STATE_FILTER) == names.index(DFP_FILTER) - 1
    config = sfs.Config()
    chain[names.index(SET_FILTER_STATE_FILTER)].typed_config.Unpack(config)
    (value,) = config.on_request_headers
    assert value.object_key == "envoy.upstream.dynamic_host" and value.skip_if_empty
    assert value.format_string.text_format_source.inline_string == PASSTHROUGH_HOST_CEL
    assert chain[names.index(SET_FILTER_STATE_FILTER)].disabled  # enabled only by routes to PASSTHROUGH services
    proxy = dfp.FilterConfig()
    chain[names.index(DFP_FILTER)].typed_config.Unpack(proxy)
    assert proxy.allow_dynamic_host_from_filter_state
    captured = dataclasses.replace(sidecar(), metadata=MappingProxyType({"INTERCEPTION_MODE": "REDIRECT"}))
    assert SET_FILTER_STATE_FILTER not in [f.name for f in http_filters(
        FilterContext(snap, captured, Direction.OUTBOUND, 15001))]
    assert SET_FILTER_STATE_FILTER not in [f.name for f in http_filters(
        FilterContext(snap, sidecar(), Direction.INBOUND, 9080))]


def test_only_routes_to_a_passthrough_forward_proxy_enable_the_short_name_filter() -> None:
    """Envoy's HttpFilter `disabled` + the route's FilterConfig with an empty `config` (which enables it): the CEL
    look-up runs only for requests routed to a PASSTHROUGH service's forward proxy cluster, never for other
    services' requests, and not at all without such a rule."""
    from envoy.config.route.v3 import route_components_pb2 as rc
    from envoy.config.route.v3 import route_pb2

    from sailmesh.generate.filters.basic import SET_FILTER_STATE_FILTER
    from sailmesh.xds.types import ROUTE

    def enabled(snapshot: MeshSnapshot) -> dict[str, bool]:
        out: dict[str, bool] = {}
        for rcfg in generated(snapshot, sidecar(), ROUTE, route_pb2.RouteConfiguration).values():
            for vh in rcfg.virtual_hosts:
                for r in vh.routes:
                    if r.route.cluster:
                        cfg = r.typed_per_filter_config.get(SET_FILTER_STATE_FILTER)
                        on = cfg is not None and cfg.Is(rc.FilterConfig.DESCRIPTOR)
                        if on:
                            fc = rc.FilterConfig()
                            cfg.Unpack(fc)
                            assert fc.HasField("config") and not fc.config.type_url and not fc.disabled
                            assert fc.is_optional  # chains without the filter (captured, gateways) ignore it
                        out[r.route.cluster] = out.get(r.route.cluster, False) or on
        return out

    got = enabled(_cluster_ip())
    assert got[f"outbound|9080||{REVIEWS}"]
    others = {c: on for c, on in got.items() if "reviews" not in c}
    assert others and not any(others.values()), others
    plain = enabled(make_snapshot((), bookinfo_services(), bookinfo_workloads()))
    assert plain and not any(plain.values())
