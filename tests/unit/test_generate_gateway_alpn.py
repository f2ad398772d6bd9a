"""Istio's `istio.alpn` at gateways (pilot/pkg/networking/core: the ALPN filter on gateway HCMs, mtlsHTTP11ALPN):
a gateway's request to a service port whose protocol is not declared offers `istio-http/1.1, istio` upstream, so
a captured server sidecar's sniffing chains (mTLS + istio-http/* -> HTTP) serve it as HTTP. The filter is Envoy's
set_filter_state, disabled on the gateway's HCM and enabled by the routes to such ports only; a route to a port
whose TLS is not Istio's (DestinationRule SIMPLE) keeps its own ALPN, as Istio's filter skips such clusters."""

from __future__ import annotations

from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.set_filter_state.v3 import set_filter_state_pb2 as sfs
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from sailmesh.xds.types import LISTENER, ROUTE
from tests.unit.test_generate_gateway_tls import gateway
from tests.unit.test_generate_support import gateway_proxy, generated, make_snapshot, resources, service

GATEWAY = gateway("""  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
""")
VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: routes, namespace: default}
spec:
  hosts: ['*']
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /sniffed}}]
    route: [{destination: {host: echo, port: {number: 7070}}}]
  - match: [{uri: {prefix: /declared}}]
    route: [{destination: {host: web, port: {number: 8000}}}]
  - match: [{uri: {prefix: /originated}}]
    route: [{destination: {host: tls-echo, port: {number: 7070}}}]
"""
SIMPLE_DR = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tls-echo, namespace: default}
spec:
  host: tls-echo
  trafficPolicy: {tls: {mode: SIMPLE}}
"""
SERVICES = [service("echo", ports=((7070, "UNKNOWN"),)), service("web", ports=((8000, "HTTP"),)),
            service("tls-echo", ports=((7070, "UNKNOWN"),))]


def gateway_config(services: list = SERVICES,  # type: ignore[type-arg]
                   ) -> tuple[hcm_pb2.HttpConnectionManager, route_pb2.RouteConfiguration]:
    snap = make_snapshot(resources(GATEWAY, VS, SIMPLE_DR), services)
    lst = generated(snap, gateway_proxy(), LISTENER, listener_pb2.Listener)["0.0.0.0_80"]
    hcm = hcm_pb2.HttpConnectionManager()
    assert lst.filter_chains[0].filters[-1].typed_config.Unpack(hcm)
    [rc] = generated(snap, gateway_proxy(), ROUTE, route_pb2.RouteConfiguration).values()
    return hcm, rc


def test_the_gateway_hcm_carries_the_override_disabled_before_the_router() -> None:
    hcm, _ = gateway_config()
    names = [f.name for f in hcm.http_filters]
    assert "istio.alpn" in names and names[-1] == "envoy.filters.http.router"
    alpn = hcm.http_filters[names.index("istio.alpn")]
    assert alpn.disabled
    cfg = sfs.Config()
    assert alpn.typed_config.Unpack(cfg)
    [value] = cfg.on_request_headers
    assert value.object_key == "envoy.network.application_protocols"
    assert value.format_string.text_format_source.inline_string == "istio-http/1.1,istio"


def test_only_routes_to_sniffed_ports_over_mesh_mtls_enable_it() -> None:
    _, rc = gateway_config()
    enabled = {r.match.prefix: "istio.alpn" in r.typed_per_filter_config for vh in rc.virtual_hosts for r in vh.routes}
    assert enabled == {"/sniffed": True, "/declared": False, "/originated": False}


def test_no_sniffed_port_no_filter() -> None:
    """A mesh whose every port declares its protocol keeps the gateway's chain as before."""
    hcm, rc = gateway_config([service("echo", ports=((7070, "HTTP"),)), service("web", ports=((8000, "HTTP"),)),
                              service("tls-echo", ports=((7070, "TLS"),))])
    assert "istio.alpn" not in [f.name for f in hcm.http_filters]
    assert not any("istio.alpn" in r.typed_per_filter_config for vh in rc.virtual_hosts for r in vh.routes)
