"""Protocol sniffing for a captured sidecar (generate/sniffing.py), as Istio builds it for a port whose protocol is
not declared (ListenerProtocolAuto): outbound (listener.go buildSidecarOutboundListener) the TCP chain as the
default filter chain and an HTTP chain matched on application_protocols [http/1.1, h2c] (plaintextHTTPALPNs),
tls_inspector + http_inspector, listener_filters_timeout = protocolDetectionTimeout (0s); inbound
(filterchain_options.go) the Auto chains of each PeerAuthentication mode; uncaptured sidecars unchanged."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.set_filter_state.v3 import set_filter_state_pb2 as sfs
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo

from sailmesh.generate.sniffing import http_inspector
from sailmesh.snapshot.model import MeshSnapshot, ProxyView
from sailmesh.xds.types import CLUSTER, LISTENER, ROUTE
from tests.unit.test_generate_support import generated, make_snapshot, resources, service, sidecar, workload
from tests.unit.test_generate_uncaptured_golden import REGISTRY_ONLY

HTTP_INSPECTOR = "envoy.filters.listener.http_inspector"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
ECHO = "echo.default.svc.cluster.local"
ECHO_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo]
  http:
  - match: [{headers: {x-version: {exact: v2}}}]
    route: [{destination: {host: echo, subset: v2}}]
  - route: [{destination: {host: echo}}]
"""
STRICT = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: STRICT}}
"""


def _snapshot(*config: str, address: bool = True) -> MeshSnapshot:
    """echo (port 7000, protocol not declared; a ClusterIP unless `address` is False) with its workload, the
    captured client and a TCP service."""
    services = [service("echo", ports=((7000, "UNKNOWN"),), addresses=("10.96.0.40",) if address else ()),
                service("db", ports=((5432, "TCP"),), addresses=("10.96.0.41",))]
    workloads = [workload("echo-v1-0", "10.77.0.9", app="echo", version="v1"),
                 workload("client-v1-0", "10.77.0.1", app="client", version="v1")]
    return make_snapshot(resources(*config), services, workloads)


def _proxy(name: str = "client-v1-0", ip: str = "10.77.0.1", mode: str = "REDIRECT", **labels: str) -> ProxyView:
    proxy = sidecar(name=name, ip=ip, app_ports={}, **(labels or {"app": name.split("-")[0], "version": "v1"}))
    return dataclasses.replace(proxy, metadata=MappingProxyType({"INTERCEPTION_MODE": mode})) if mode else proxy


def _listeners(snapshot: MeshSnapshot, proxy: ProxyView) -> dict[str, listener_pb2.Listener]:
    return generated(snapshot, proxy, LISTENER, listener_pb2.Listener)


def _hcm(fc: lc.FilterChain) -> hcm_pb2.HttpConnectionManager:
    h = hcm_pb2.HttpConnectionManager()
    assert fc.filters[-1].typed_config.Unpack(h)
    return h


def _tcp(fc: lc.FilterChain) -> tcp_proxy_pb2.TcpProxy:
    tp = tcp_proxy_pb2.TcpProxy()
    assert fc.filters[-1].typed_config.Unpack(tp)
    return tp


def test_outbound_sniffed_port_on_a_cluster_ip_has_an_http_chain_and_the_tcp_default() -> None:
    lis = _listeners(_snapshot(ECHO_VS), _proxy())["10.96.0.40_7000"]
    assert lis.bind_to_port.value is False  # reached through virtualOutbound, as the TCP listeners
    assert [f.name for f in lis.listener_filters] == [TLS_INSPECTOR, HTTP_INSPECTOR]
    assert lis.listener_filters_timeout.ToSeconds() == 0 and lis.HasField("listener_filters_timeout")
    http, h2c = lis.filter_chains
    assert [list(fc.filter_chain_match.application_protocols) for fc in (http, h2c)] == [["http/1.1"], ["h2c"]]
    assert {fc.filter_chain_match.transport_protocol for fc in (http, h2c)} == {"raw_buffer"}
    # Istio's RDS name for a sniffed listener on the service's address (listener.go): `host:port`, not inline
    assert [(_hcm(fc).rds.route_config_name, _hcm(fc).HasField("route_config")) for fc in (http, h2c)] == \
        [(f"{ECHO}:7000", False)] * 2
    assert _hcm(http).rds.config_source.HasField("ads")
    routes = _routes(_snapshot(ECHO_VS), _proxy())
    # buildSidecarOutboundHTTPRouteConfig for `host:port`: the service's virtual host alone, domains `*`
    # (getVirtualHostsForSniffedServicePort), no catch-all
    rc = routes[f"{ECHO}:7000"]
    assert [(v.name, list(v.domains)) for v in rc.virtual_hosts] == [(f"{ECHO}:7000", ["*"])]
    first = rc.virtual_hosts[0].routes[0]  # the VirtualService's header route applies
    assert first.match.headers[0].name == "x-version" and first.route.cluster == f"outbound|7000|v2|{ECHO}"
    # the port's own route config holds the sniffed service too (Istio: HTTP or sniffed ports), with its domains
    [vh] = [v for v in routes["7000"].virtual_hosts if v.name == f"{ECHO}:7000"]
    assert {"echo", "10.96.0.40", "10.96.0.40:7000", ECHO} <= set(vh.domains)
    assert _tcp(lis.default_filter_chain).cluster == f"outbound|7000||{ECHO}"


def _routes(snapshot: MeshSnapshot, proxy: ProxyView) -> dict[str, route_pb2.RouteConfiguration]:
    return generated(snapshot, proxy, ROUTE, route_pb2.RouteConfiguration)


def test_an_uncaptured_sidecar_gets_no_route_config_for_a_sniffed_port() -> None:
    routes = _routes(_snapshot(ECHO_VS), _proxy(mode=""))
    assert "7000" not in routes and f"{ECHO}:7000" not in routes  # its port stays TCP (the golden digests)


def test_outbound_sniffed_port_without_an_address_is_on_the_wildcard_and_ends_in_the_catch_all() -> None:
    """Istio's RDS name on the wildcard listener: the port (`7000`), ending in allow_any or block_all; no
    `host:port` route config for a service without an address."""
    lis = _listeners(_snapshot(address=False), _proxy())["0.0.0.0_7000"]
    assert _hcm(lis.filter_chains[0]).rds.route_config_name == "7000"
    routes = _routes(_snapshot(address=False), _proxy())
    assert [v.name for v in routes["7000"].virtual_hosts] == [f"{ECHO}:7000", "allow_any"]
    assert f"{ECHO}:7000" not in routes
    blocked = _routes(_snapshot(REGISTRY_ONLY, address=False), _proxy())
    assert blocked["7000"].virtual_hosts[-1].name == "block_all"


def _alpn_override(h: hcm_pb2.HttpConnectionManager) -> str | None:
    """The ALPN list the HCM's `istio.alpn` (Envoy's set_filter_state) gives the upstream connection."""
    for f in h.http_filters:
        if f.name == "istio.alpn":
            config = sfs.Config()
            assert f.typed_config.Unpack(config)
            [value] = config.on_request_headers
            assert value.object_key == "envoy.network.application_protocols"
            return value.format_string.text_format_source.inline_string
    return None


def test_outbound_sniffed_chains_offer_istios_http_alpn_upstream_per_protocol() -> None:
    """Istio's istio.alpn filter (xdsfilters.Alpn: mtlsHTTP11ALPN `istio-http/1.1, istio`, mtlsHTTP2ALPN
    `istio-h2, istio` by the upstream protocol, which for a sniffed port's cluster is the client's): the http/1.1
    chain offers the first, the h2c chain the second, just before the router; the TCP chain offers the cluster's
    own `istio-peer-exchange, istio`. So the server's Auto chains (mTLS + istio-http/* -> HTTP) see HTTP."""
    lis = _listeners(_snapshot(ECHO_VS), _proxy())["10.96.0.40_7000"]
    http, h2c = (_hcm(fc) for fc in lis.filter_chains)
    assert (_alpn_override(http), _alpn_override(h2c)) == ("istio-http/1.1,istio", "istio-h2,istio")
    for h in (http, h2c):
        assert [f.name for f in h.http_filters][-2:] == ["istio.alpn", "envoy.filters.http.router"]
    assert lis.default_filter_chain.filters[-1].name.endswith("tcp_proxy")


def _cluster_options(snapshot: MeshSnapshot, proxy: ProxyView, name: str) -> hpo.HttpProtocolOptions | None:
    c = generated(snapshot, proxy, CLUSTER, cluster_pb2.Cluster)[name]
    key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    if key not in c.typed_extension_protocol_options:
        return None
    opts = hpo.HttpProtocolOptions()
    assert c.typed_extension_protocol_options[key].Unpack(opts)
    return opts


def test_sniffed_ports_clusters_speak_the_clients_protocol_on_captured_sidecars_only() -> None:
    """Istio's setUpstreamProtocol: a sidecar's cluster for a port whose protocol is not declared (IsUnsupported)
    gets use_downstream_protocol_config (HTTP/1.1 and HTTP/2 options), outbound and inbound, so an h2c request goes
    upstream as HTTP/2; a declared TCP port's cluster gets no HTTP options; uncaptured sidecars keep the sniffed port
    TCP (no options)."""
    snapshot = _snapshot()
    for proxy, name in ((_proxy(), f"outbound|7000||{ECHO}"), (_proxy("echo-v1-0", "10.77.0.9"), "inbound|7000||")):
        opts = _cluster_options(snapshot, proxy, name)
        assert opts is not None, name
        down = opts.use_downstream_protocol_config
        assert down.HasField("http_protocol_options") and down.HasField("http2_protocol_options"), name
    assert _cluster_options(snapshot, _proxy(), "outbound|5432||db.default.svc.cluster.local") is None
    assert _cluster_options(snapshot, _proxy(mode=""), f"outbound|7000||{ECHO}") is None
    assert _cluster_options(snapshot, _proxy("echo-v1-0", "10.77.0.9", mode=""), "inbound|7000||") is None


def test_declared_tcp_ports_and_uncaptured_sidecars_do_not_sniff() -> None:
    lis = _listeners(_snapshot(), _proxy())
    assert not lis["10.96.0.41_5432"].listener_filters and not lis["10.96.0.41_5432"].HasField("default_filter_chain")
    for listener in _listeners(_snapshot(), _proxy(mode="")).values():
        assert HTTP_INSPECTOR not in [f.name for f in listener.listener_filters], listener.name
    echo = _listeners(_snapshot(), _proxy("echo-v1-0", "10.77.0.9", mode=""))
    assert HTTP_INSPECTOR not in [f.name for f in echo["10.77.0.9_7000"].listener_filters]


def _inbound(*config: str, **labels: str) -> tuple[listener_pb2.Listener, listener_pb2.Listener]:
    lis = _listeners(_snapshot(*config), _proxy("echo-v1-0", "10.77.0.9", **labels))
    return lis["10.77.0.9_7000"], lis["virtualInbound"]


def _shape(lis: listener_pb2.Listener) -> list[tuple[str, tuple[str, ...], str, bool]]:
    """(transport, ALPNs, HCM or tcp_proxy, terminates TLS) per chain."""
    return [(fc.filter_chain_match.transport_protocol, tuple(fc.filter_chain_match.application_protocols),
             "hcm" if fc.filters[-1].name.endswith("http_connection_manager") else "tcp",
             fc.HasField("transport_socket")) for fc in lis.filter_chains]


MESH = {"app": "echo", "version": "v1", "security.istio.io/tlsMode": "istio"}


def test_inbound_sniffed_port_permissive_chains_are_istios_auto_options() -> None:
    port, vin = _inbound(**MESH)
    assert _shape(port) == [
        ("tls", ("istio-http/1.0", "istio-http/1.1", "istio-h2"), "hcm", True),
        ("raw_buffer", ("http/1.1", "h2c"), "hcm", False),
        ("tls", ("istio-peer-exchange", "istio"), "tcp", True),
        ("raw_buffer", (), "tcp", False),
        ("tls", (), "tcp", False),
    ]
    # virtualInbound serves them on 7000 and runs the http_inspector there too (it skips only 15006 itself: the
    # passthrough's HTTP catch-all sniffs every other port)
    ported = [fc for fc in vin.filter_chains if fc.filter_chain_match.destination_port.value == 7000]
    assert [fc.filters for fc in ported] == [fc.filters for fc in port.filter_chains]
    [inspector] = [f for f in vin.listener_filters if f.name == HTTP_INSPECTOR]
    rule = inspector.filter_disabled.destination_port_range
    assert (rule.start, rule.end) == (15006, 15007)
    assert TLS_INSPECTOR in [f.name for f in vin.listener_filters]


def test_inbound_sniffed_port_strict_and_plaintext_chains() -> None:
    strict, _ = _inbound(STRICT, **MESH)
    assert _shape(strict) == [("tls", ("istio-http/1.0", "istio-http/1.1", "istio-h2"), "hcm", True),
                              ("tls", (), "tcp", True)]
    plain, _ = _inbound()  # no mesh identity: plaintext HTTP by ALPN, else TCP
    assert _shape(plain) == [("raw_buffer", ("http/1.1", "h2c"), "hcm", False), ("raw_buffer", (), "tcp", False)]
    assert [f.name for f in plain.listener_filters] == [TLS_INSPECTOR, HTTP_INSPECTOR]


def test_http_inspector_port_predicates_are_envoys_match_sets() -> None:
    """`filter_disabled` as Envoy's ListenerFilterChainMatchPredicate: one port a destination_port_range, several an
    or_match (a match set takes two rules or more); `only` negates it."""
    one = http_inspector(skip=[15006]).filter_disabled
    assert (one.destination_port_range.start, one.destination_port_range.end) == (15006, 15007)
    only = http_inspector(only=[7001, 7000]).filter_disabled.not_match.or_match
    assert [(r.destination_port_range.start, r.destination_port_range.end) for r in only.rules] == [
        (7000, 7001), (7001, 7002)]
    assert not http_inspector().HasField("filter_disabled")


def test_ipv6_cluster_ips_are_route_domains_in_host_header_form() -> None:
    """Istio's generateVirtualHostDomains adds a VIP with its port through util.DomainName (Go's net.JoinHostPort):
    an IPv6 ClusterIP is matched as a Host header carries it, `[fd00:10:96::c]:9080`, on a declared HTTP port's
    route config and on a sniffed port's (before: `fd00:10:96::c:9080`, which no client sends: the request fell to
    allow_any, or 404 on the VIP's own listener)."""
    from envoy.config.route.v3 import route_pb2

    from sailmesh.xds.types import ROUTE

    services = [service("reviews", addresses=("fd00:10:96::c",)),
                service("echo", ports=((7000, "UNKNOWN"),), addresses=("fd00:10:96::d",))]
    workloads = [workload("reviews-v1-0", "fd77::2", app="reviews"), workload("echo-v1-0", "fd77::2", app="echo")]
    snapshot = make_snapshot((), services, workloads)
    proxy = _proxy(ip="fd77::1")
    routes = generated(snapshot, proxy, ROUTE, route_pb2.RouteConfiguration)
    [reviews] = [v for v in routes["9080"].virtual_hosts if v.name.startswith("reviews")]
    assert "[fd00:10:96::c]:9080" in reviews.domains and "fd00:10:96::c:9080" not in reviews.domains
    [echo] = [v for v in routes["7000"].virtual_hosts if v.name.startswith("echo")]
    assert {"fd00:10:96::d", "[fd00:10:96::d]:7000"} <= set(echo.domains), echo.domains
