"""A captured sidecar's outbound side, as Istio's listener builder (buildVirtualOutboundListener,
buildOutboundCatchAllNetworkFilterChains, buildSidecarOutboundListeners) and cluster builder
(buildDefaultPassthroughCluster): virtualOutbound 0.0.0.0:15001 with use_original_dst, per-service-port listeners
that bind nothing, PassthroughCluster ORIGINAL_DST (ALLOW_ANY) or BlackHoleCluster (REGISTRY_ONLY)."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from sailmesh.generate.generator import Generator
from sailmesh.snapshot.model import MeshSnapshot, ProxyView
from sailmesh.xds.types import CLUSTER, LISTENER, ROUTE
from tests.unit.test_generate_support import (
    bookinfo_services,
    bookinfo_workloads,
    generated,
    make_snapshot,
    resources,
    service,
    sidecar,
    unpacked,
)
from tests.unit.test_generate_uncaptured_golden import REGISTRY_ONLY

MONGO_TCP_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mongo, namespace: default}
spec:
  hosts: [mongodb]
  tcp:
  - route:
    - destination: {host: redis, port: {number: 6379}}
"""


def _snapshot(*config: str) -> MeshSnapshot:
    services = [dataclasses.replace(s, addresses=(f"10.96.0.{i + 10}",)) for i, s in enumerate(bookinfo_services())]
    services.append(service("mongodb", ports=((27017, "TCP"),), addresses=("10.96.0.30",)))
    services.append(service("redis", ports=((6379, "TCP"),)))
    services.append(service("wide", ports=((5432, "TCP"),), addresses=("10.8.0.0/16", "10.9.0.1/32")))
    return make_snapshot(resources(*config), services, bookinfo_workloads())


def _proxy(mode: str = "") -> ProxyView:
    proxy = sidecar(name="productpage-v1-0", ip="10.77.0.1", app_ports={9080: 9080})
    return dataclasses.replace(proxy, metadata=MappingProxyType({"INTERCEPTION_MODE": mode})) if mode else proxy


def _listeners(mode: str = "REDIRECT", *config: str) -> dict[str, listener_pb2.Listener]:
    return generated(_snapshot(*config), _proxy(mode), LISTENER, listener_pb2.Listener)


def _tcp_proxy(chain: listener_pb2.FilterChain) -> tcp_proxy_pb2.TcpProxy:
    tp = tcp_proxy_pb2.TcpProxy()
    assert chain.filters[-1].typed_config.Unpack(tp)
    return tp


def test_virtual_outbound_is_istios_catch_all() -> None:
    """buildVirtualOutboundListener: 0.0.0.0:15001 (mesh proxyListenPort), use_original_dst, no listener filters;
    chains `virtualOutbound-blackhole` (destination port 15001 itself -> BlackHoleCluster: a connection must be
    redirected there, never addressed to it) and `virtualOutbound-catchall-tcp` (-> PassthroughCluster under
    ALLOW_ANY, the default outboundTrafficPolicy); REDIRECT mode: not transparent."""
    vout = _listeners()["virtualOutbound"]
    assert (vout.address.socket_address.address, vout.address.socket_address.port_value) == ("0.0.0.0", 15001)
    assert vout.use_original_dst.value is True and not vout.listener_filters
    assert not vout.HasField("transparent") and not vout.HasField("bind_to_port")
    assert [c.name for c in vout.filter_chains] == ["virtualOutbound-blackhole", "virtualOutbound-catchall-tcp"]
    black, catch_all = vout.filter_chains
    assert black.filter_chain_match.destination_port.value == 15001
    assert (_tcp_proxy(black).cluster, _tcp_proxy(black).stat_prefix) == ("BlackHoleCluster", "BlackHoleCluster")
    assert not catch_all.HasField("filter_chain_match")
    assert (_tcp_proxy(catch_all).cluster, _tcp_proxy(catch_all).stat_prefix) == \
        ("PassthroughCluster", "PassthroughCluster")


def test_registry_only_sends_unknown_destinations_to_the_black_hole() -> None:
    """Istio: outboundTrafficPolicy REGISTRY_ONLY makes the catch-all chain's cluster BlackHoleCluster."""
    catch_all = _listeners("REDIRECT", REGISTRY_ONLY)["virtualOutbound"].filter_chains[1]
    assert _tcp_proxy(catch_all).cluster == "BlackHoleCluster"


def test_tproxy_virtual_outbound_is_transparent() -> None:
    assert _listeners("TPROXY")["virtualOutbound"].transparent.value is True


def test_http_service_ports_get_an_unbound_wildcard_listener_routed_by_host() -> None:
    """Istio's outbound HTTP listener `0.0.0.0_PORT` (bind_to_port false: reached from virtualOutbound), an HCM
    with RDS `PORT`; that route config matches the service's ClusterIP (with and without the port) as a host,
    so a captured app calling the VIP is routed to the service."""
    lis = _listeners()
    http = lis["0.0.0.0_9080"]
    assert http.HasField("bind_to_port") and http.bind_to_port.value is False
    assert (http.address.socket_address.address, http.address.socket_address.port_value) == ("0.0.0.0", 9080)
    h = hcm_pb2.HttpConnectionManager()
    assert http.filter_chains[0].filters[-1].typed_config.Unpack(h)
    assert h.rds.route_config_name == "9080" and h.stat_prefix == "outbound_0.0.0.0_9080"
    routes = unpacked(Generator().resources(_snapshot(), _proxy("REDIRECT"), ROUTE), route_pb2.RouteConfiguration)
    reviews = next(v for v in routes["9080"].virtual_hosts if v.name.startswith("reviews.default"))
    assert {"10.96.0.12", "10.96.0.12:9080"} <= set(reviews.domains)
    assert routes["9080"].virtual_hosts[-1].name == "allow_any"


def test_tcp_service_ports_get_a_listener_per_cluster_ip() -> None:
    """Istio's TCP outbound listeners: `VIP_PORT` for each ClusterIP (a tcp_proxy to the service's tcp route:
    here the VirtualService sends mongodb to redis), `0.0.0.0_PORT` for a service without one; a /32 address
    is a VIP, a wider ServiceEntry CIDR gets no listener of its own."""
    lis = _listeners("REDIRECT", MONGO_TCP_VS)
    mongo = lis["10.96.0.30_27017"]
    assert mongo.bind_to_port.value is False and mongo.address.socket_address.address == "10.96.0.30"
    assert _tcp_proxy(mongo.filter_chains[0]).cluster == "outbound|6379||redis.default.svc.cluster.local"
    assert mongo.filter_chains[0].metadata.filter_metadata["istio"]["config"].endswith("/mongo")
    redis = lis["0.0.0.0_6379"]
    assert redis.bind_to_port.value is False
    assert _tcp_proxy(redis.filter_chains[0]).cluster == "outbound|6379||redis.default.svc.cluster.local"
    assert "10.9.0.1_5432" in lis and not any(n.startswith("10.8.0.0") for n in lis)


def test_captured_passthrough_cluster_is_original_dst_and_uncaptured_keeps_the_forward_proxy() -> None:
    """Istio's buildDefaultPassthroughCluster: ORIGINAL_DST, CLUSTER_PROVIDED, the downstream's HTTP protocol.
    One Generator serving a captured and an uncaptured sidecar of the same namespace and labels gives each its
    own (the outbound cache is keyed by the interception mode)."""
    gen, snapshot = Generator(), _snapshot()
    captured = unpacked(gen.resources(snapshot, _proxy("REDIRECT"), CLUSTER), cluster_pb2.Cluster)
    plain = unpacked(gen.resources(snapshot, _proxy(), CLUSTER), cluster_pb2.Cluster)
    pt = captured["PassthroughCluster"]
    assert (pt.type, pt.lb_policy) == (cluster_pb2.Cluster.ORIGINAL_DST, cluster_pb2.Cluster.CLUSTER_PROVIDED)
    assert not pt.HasField("cluster_type")
    assert plain["PassthroughCluster"].cluster_type.name == "envoy.clusters.dynamic_forward_proxy"
    plain_lis = generated(snapshot, _proxy(), LISTENER, listener_pb2.Listener)
    assert "0.0.0.0_9080" not in plain_lis and not plain_lis["virtualOutbound"].HasField("use_original_dst")


def _egress_sidecar(port: int, bind: str = "", capture_mode: str = "") -> str:
    extra = (f"\n    bind: '{bind}'" if bind else "") + (f"\n    captureMode: {capture_mode}" if capture_mode else "")
    return f"""
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: default}}
spec:
  egress:
  - port: {{number: {port}, protocol: HTTP, name: http}}
    hosts: ["./*"]{extra}
  - hosts: ["./*"]
"""


def test_sidecar_egress_listeners_follow_istios_bind_to_port_rule_when_captured() -> None:
    """Istio's buildSidecarOutboundListeners: in a captured pod an egress listener with the default captureMode
    binds nothing (`0.0.0.0_PORT`, or its `bind`), reached through virtualOutbound; captureMode NONE binds its
    `bind`, else 127.0.0.1. An uncaptured sidecar keeps it on its own address, bound."""
    lis = _listeners("REDIRECT", _egress_sidecar(9081))
    assert lis["0.0.0.0_9081"].bind_to_port.value is False and "10.77.0.1_9081" not in lis
    assert lis["0.0.0.0_9081"].address.socket_address.address == "0.0.0.0"
    explicit = _listeners("REDIRECT", _egress_sidecar(9081, bind="127.0.0.2"))["127.0.0.2_9081"]
    assert explicit.bind_to_port.value is False
    none = _listeners("REDIRECT", _egress_sidecar(9081, capture_mode="NONE"))["127.0.0.1_9081"]
    assert not none.HasField("bind_to_port") and none.address.socket_address.address == "127.0.0.1"
    plain = generated(_snapshot(_egress_sidecar(9081)), _proxy(), LISTENER, listener_pb2.Listener)
    assert "10.77.0.1_9081" in plain and not plain["10.77.0.1_9081"].HasField("bind_to_port")


def egress_proxy_sidecar(host: str, port: int) -> str:
    """The namespace's Sidecar: ALLOW_ANY with an egress proxy `host:port`."""
    return f"""
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: default}}
spec:
  outboundTrafficPolicy:
    mode: ALLOW_ANY
    egressProxy: {{host: {host}, port: {{number: {port}}}}}
"""


EGRESS_PROXY = egress_proxy_sidecar("mongodb.default.svc.cluster.local", 27017)


def test_sidecar_egress_proxy_takes_the_passthroughs_place() -> None:
    """Istio's Sidecar `outboundTrafficPolicy.egressProxy` under ALLOW_ANY (buildOutboundCatchAllNetworkFiltersOnly,
    buildCatchAllVirtualHost): unknown destinations go to the egress proxy's cluster
    (GetDestinationCluster: `outbound|PORT|SUBSET|HOST`) instead of PassthroughCluster, on the virtualOutbound
    catch-all TCP chain and in the `allow_any` virtual host of every HTTP route config; uncaptured sidecars' too."""
    egress = "outbound|27017||mongodb.default.svc.cluster.local"
    catch_all = _listeners("REDIRECT", EGRESS_PROXY)["virtualOutbound"].filter_chains[1]
    assert (_tcp_proxy(catch_all).cluster, _tcp_proxy(catch_all).stat_prefix) == (egress, egress)
    for mode in ("REDIRECT", ""):
        routes = generated(_snapshot(EGRESS_PROXY), _proxy(mode), ROUTE, route_pb2.RouteConfiguration)
        for name in ("9080", "http_proxy"):
            allow_any = routes[name].virtual_hosts[-1]
            assert allow_any.name == "allow_any" and {r.route.cluster for r in allow_any.routes} == {egress}
    assert egress in generated(_snapshot(EGRESS_PROXY), _proxy("REDIRECT"), CLUSTER, cluster_pb2.Cluster)


def test_ipv6_only_pod_gets_ipv6_wildcards_and_passthrough_source() -> None:
    """Istio's getWildcardsAndLocalHost for an IPv6-only proxy (GetIPMode IPv6): virtualOutbound, virtualInbound
    and the per-port wildcard listeners on `::` (named `::_PORT`), captureMode NONE egress on `::1`; the REDIRECT
    inbound clusters and InboundPassthroughCluster leave from ::6 (InboundPassthroughBindIpv6); IPv4 pods as before."""
    proxy = dataclasses.replace(_proxy("REDIRECT"), ip="fd00::77:1")
    lis = generated(_snapshot(), proxy, LISTENER, listener_pb2.Listener)
    assert lis["virtualOutbound"].address.socket_address.address == "::"
    assert lis["virtualInbound"].address.socket_address.address == "::"
    assert lis["::_9080"].address.socket_address.address == "::" and lis["::_9080"].bind_to_port.value is False
    assert lis["::_6379"].address.socket_address.address == "::"  # a TCP service without a VIP
    assert "0.0.0.0_9080" not in lis
    clusters = generated(_snapshot(), proxy, CLUSTER, cluster_pb2.Cluster)
    assert clusters["InboundPassthroughCluster"].upstream_bind_config.source_address.address == "::6"
    assert clusters["inbound|9080||"].upstream_bind_config.source_address.address == "::6"
    v4 = generated(_snapshot(), _proxy("REDIRECT"), CLUSTER, cluster_pb2.Cluster)
    assert v4["InboundPassthroughCluster"].upstream_bind_config.source_address.address == "127.0.0.6"
    none = generated(_snapshot(_egress_sidecar(9999, capture_mode="NONE")), proxy, LISTENER, listener_pb2.Listener)
    assert none["::1_9999"].address.socket_address.address == "::1"


SUBNET_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: subnets, namespace: default}
spec:
  hosts: [redis, mongodb]
  tcp:
  - match:
    - {destinationSubnets: [10.77.0.2/32, 10.78.0.0/16]}
    - {destinationSubnets: [10.79.0.5], sourceLabels: {app: x}}
    route: [{destination: {host: mongodb}}]
  - match: [{port: 6379}]
    route: [{destination: {host: redis, subset: v2}}]
  - route: [{destination: {host: mongodb, subset: never}}]
"""


def test_destination_subnets_become_filter_chains_on_the_original_destination() -> None:
    """Istio's buildSidecarOutboundTCPFilterChainOpts (runtime predicates): the applicable matches' destinationSubnets
    of a `tcp` route make a filter chain with those prefix_ranges before the listener's default chain, which is the
    first route applying to every destination (routes after it are never reached); a match whose static predicates
    (sourceLabels) fail adds nothing. The route choice without captured traffic skips subnet matches."""
    lis = _listeners("REDIRECT", SUBNET_VS)["0.0.0.0_6379"]
    subnet, default = lis.filter_chains
    assert [(r.address_prefix, r.prefix_len.value) for r in subnet.filter_chain_match.prefix_ranges] == [
        ("10.77.0.2", 32), ("10.78.0.0", 16)]
    assert _tcp_proxy(subnet).cluster == "outbound|27017||mongodb.default.svc.cluster.local"
    assert subnet.metadata.filter_metadata["istio"]["config"].endswith("/subnets")
    assert not default.HasField("filter_chain_match")
    assert _tcp_proxy(default).cluster == "outbound|6379|v2|redis.default.svc.cluster.local"
    # on mongodb's VIP listener (port 27017: the port match fails) the catch-all third route is the default
    mongo = _listeners("REDIRECT", SUBNET_VS)["10.96.0.30_27017"]
    assert [_tcp_proxy(c).cluster for c in mongo.filter_chains] == [
        "outbound|27017||mongodb.default.svc.cluster.local", "outbound|27017|never|mongodb.default.svc.cluster.local"]


def test_tls_destination_subnets_match_the_sni_and_the_address() -> None:
    """Istio's buildSidecarOutboundTLSFilterChainOpts: a `tls` match with destinationSubnets gives a chain matching
    its sniHosts (server_names, read by a tls_inspector) and its subnets; without one the port keeps its chain."""
    tls_vs = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: secure, namespace: default}
spec:
  hosts: [secure]
  tls:
  - match: [{sniHosts: [secure], destinationSubnets: [10.96.0.40/32]}]
    route: [{destination: {host: redis, port: {number: 6379}}}]
"""
    snap = _snapshot(tls_vs)
    snap = make_snapshot(resources(tls_vs), [*snap.services.values(), service("secure", ports=((443, "TLS"),),
                                                                    addresses=("10.96.0.40",))])
    lis = generated(snap, _proxy("REDIRECT"), LISTENER, listener_pb2.Listener)["10.96.0.40_443"]
    subnet, default = lis.filter_chains
    assert list(subnet.filter_chain_match.server_names) == ["secure.default.svc.cluster.local"]
    assert subnet.filter_chain_match.prefix_ranges[0].address_prefix == "10.96.0.40"
    assert _tcp_proxy(subnet).cluster == "outbound|6379||redis.default.svc.cluster.local"
    assert _tcp_proxy(default).cluster == "outbound|443||secure.default.svc.cluster.local"
    assert [f.name for f in lis.listener_filters] == ["envoy.filters.listener.tls_inspector"]


def _ingress_sidecar(capture_mode: str) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: default}}
spec:
  ingress:
  - port: {{number: 7000, protocol: HTTP, name: http}}
    defaultEndpoint: 127.0.0.1:9080
    captureMode: {capture_mode}
"""


def test_sidecar_ingress_capture_mode_follows_istios_get_bind_to_port() -> None:
    """Istio's getBindToPort: an ingress listener with captureMode NONE binds its port in a captured pod too (a
    listener of its own on the pod address, not a chain of virtualInbound); IPTABLES binds nothing even in an
    uncaptured sidecar; DEFAULT follows the proxy (captured: through virtualInbound)."""
    none = _listeners("REDIRECT", _ingress_sidecar("NONE"))
    assert none["10.77.0.1_7000"].bind_to_port.value is True
    assert not any(c.filter_chain_match.destination_port.value == 7000 for c in none["virtualInbound"].filter_chains)
    default = _listeners("REDIRECT", _ingress_sidecar("DEFAULT"))
    assert default["10.77.0.1_7000"].bind_to_port.value is False
    assert any(c.filter_chain_match.destination_port.value == 7000 for c in default["virtualInbound"].filter_chains)
    plain = generated(_snapshot(_ingress_sidecar("IPTABLES")), _proxy(), LISTENER, listener_pb2.Listener)
    assert plain["10.77.0.1_7000"].HasField("bind_to_port") and not plain["10.77.0.1_7000"].bind_to_port.value
    assert not generated(_snapshot(_ingress_sidecar("NONE")), _proxy(), LISTENER,
                         listener_pb2.Listener)["10.77.0.1_7000"].HasField("bind_to_port")
