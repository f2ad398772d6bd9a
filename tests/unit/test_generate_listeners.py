"""Listeners: the sidecar's HTTP-proxy virtualOutbound, per-port inbound listeners, gateway server ports."""

from __future__ import annotations

import pathlib

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from sailmesh.snapshot.model import Service, ServicePort, Workload
from sailmesh.xds.types import LISTENER, ROUTE
from tests.unit.test_generate_support import (
    bookinfo,
    gateway_proxy,
    generated,
    make_snapshot,
    resources,
    service,
    sidecar,
)

HCM = hcm_pb2.HttpConnectionManager


def listeners(snapshot, proxy) -> dict[str, listener_pb2.Listener]:
    return generated(snapshot, proxy, LISTENER, listener_pb2.Listener)


def hcm_of(listener: listener_pb2.Listener) -> HCM:
    f = listener.filter_chains[0].filters[0]
    assert f.name == "envoy.filters.network.http_connection_manager"
    h = HCM()
    assert f.typed_config.Unpack(h)
    return h


def test_virtual_outbound_is_an_http_proxy_on_15001() -> None:
    ls = listeners(bookinfo(), sidecar("reviews-v1-0", "127.0.1.3", app="reviews", version="v1"))
    lo = ls["virtualOutbound"]
    sa = lo.address.socket_address
    assert (sa.address, sa.port_value) == ("127.0.1.3", 15001)
    assert lo.traffic_direction == base_pb2.OUTBOUND
    h = hcm_of(lo)
    assert h.rds.route_config_name == "http_proxy" and h.rds.config_source.HasField("ads")
    assert h.http_protocol_options.allow_absolute_url.value  # `GET http://reviews:9080/` from HTTP_PROXY clients
    assert "CONNECT" in [u.upgrade_type for u in h.upgrade_configs]  # HTTPS_PROXY clients and TCP services
    assert h.http_protocol_options.accept_http_10  # Python's http.client tunnels with HTTP/1.0 CONNECT
    assert [f.name for f in h.http_filters] == [
        "istio.metadata_exchange.read", "istio.metadata_exchange.add",  # Istio's order: metadata exchange first
        "envoy.filters.http.fault", "envoy.filters.http.cors", "envoy.filters.http.set_filter_state",
        "envoy.filters.http.dynamic_forward_proxy", "envoy.filters.http.router"]  # router last, fault before it
    assert h.use_remote_address.value is False  # sidecars
    assert h.generate_request_id.value
    # Istio's GetProxyHeadersFromProxyConfig for the outbound class: Envoy's own server name ("envoy"), overwritten;
    # no XFCC setting (Envoy's SANITIZE)
    assert h.forward_client_cert_details == HCM.SANITIZE and not h.HasField("set_current_client_cert_details")
    assert h.server_name == "" and h.server_header_transformation == HCM.OVERWRITE


def test_inbound_http_listener_per_container_port() -> None:
    proxy = sidecar("reviews-v1-0", "127.0.1.3", app="reviews", version="v1", app_ports={9080: 41000})
    ls = listeners(bookinfo(), proxy)
    assert set(ls) == {"virtualOutbound", "127.0.1.3_9080"}
    li = ls["127.0.1.3_9080"]
    assert li.address.socket_address.port_value == 9080 and li.traffic_direction == base_pb2.INBOUND
    h = hcm_of(li)
    assert [f.name for f in h.http_filters] == [
        "istio.metadata_exchange.read", "istio.metadata_exchange.add", "envoy.filters.http.grpc_stats",
        "envoy.filters.http.router"]
    assert h.forward_client_cert_details == HCM.APPEND_FORWARD
    rcfg = h.route_config
    assert rcfg.name == "inbound|9080||"
    r = rcfg.virtual_hosts[0].routes[0]
    assert list(rcfg.virtual_hosts[0].domains) == ["*"]
    assert r.route.cluster == "inbound|9080||" and r.route.timeout.seconds == 0


def test_inbound_tcp_port_uses_tcp_proxy() -> None:
    snap = make_snapshot(services=[service("db", ports=[(5432, "TCP")])])
    ls = listeners(snap, sidecar("db-0", "127.0.3.1", app="db", app_ports={5432: 45000}))
    f = ls["127.0.3.1_5432"].filter_chains[0].filters[0]
    assert f.name == "envoy.filters.network.tcp_proxy"
    tp = tcp_proxy_pb2.TcpProxy()
    f.typed_config.Unpack(tp)
    assert tp.cluster == "inbound|5432||"


def test_undeclared_container_port_is_tcp() -> None:
    ls = listeners(make_snapshot(), sidecar("x-0", "127.0.3.2", app="x", app_ports={7000: 47000}))
    assert ls["127.0.3.2_7000"].filter_chains[0].filters[0].name == "envoy.filters.network.tcp_proxy"


def test_named_target_port_resolves_through_the_workloads_named_ports() -> None:
    web = Service(hostname="web.default.svc.cluster.local", name="web", namespace="default",
                  ports=(ServicePort(80, "http", "HTTP", target_port_name="web-http"),), selector={"app": "web"})
    proxy = sidecar("web-0", "127.0.3.3", app="web", app_ports={8000: 48000})
    me = Workload(name="web-0", namespace="default", address="127.0.3.3", labels={"app": "web"},
                  ports={"web-http": 8000})
    ls = listeners(make_snapshot(services=[web], workloads=[me]), proxy)
    assert set(ls) == {"virtualOutbound", "127.0.3.3_8000"}
    assert hcm_of(ls["127.0.3.3_8000"]).route_config.name == "inbound|8000||"  # HTTP: the service port's protocol
    # A pod without that named port does not serve the service port (Kubernetes gives it no endpoint):
    # no inbound listener on the service port number, and its own container port stays plain TCP.
    unnamed = Workload(name="web-0", namespace="default", address="127.0.3.3", labels={"app": "web"})
    ls = listeners(make_snapshot(services=[web], workloads=[unnamed]), proxy)
    assert set(ls) == {"virtualOutbound", "127.0.3.3_8000"}
    assert ls["127.0.3.3_8000"].filter_chains[0].filters[0].name == "envoy.filters.network.tcp_proxy"


def test_gateway_listener_per_server_port(conformance: pathlib.Path) -> None:
    snap = bookinfo(conformance / "bookinfo" / "bookinfo-gateway.yaml")
    ls = listeners(snap, gateway_proxy("127.0.0.9"))
    assert set(ls) == {"0.0.0.0_8080"}
    sa = ls["0.0.0.0_8080"].address.socket_address
    assert (sa.address, sa.port_value) == ("127.0.0.9", 8080)
    h = hcm_of(ls["0.0.0.0_8080"])
    assert h.rds.route_config_name == "http.8080"
    assert h.use_remote_address.value  # gateways are the edge
    assert h.http_filters[-1].name == "envoy.filters.http.router"
    assert set(generated(snap, gateway_proxy(), ROUTE, route_pb2.RouteConfiguration)) == {"http.8080"}


def test_gateway_privileged_ports_shift_by_8000() -> None:
    gw = ("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n"
          "  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n"
          "    hosts: ['*']\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: ['*']\n"
          "    tls: {mode: SIMPLE, credentialName: c}\n")
    ls = listeners(make_snapshot(resources(gw)), gateway_proxy())
    assert set(ls) == {"0.0.0.0_80", "0.0.0.0_443"}
    assert ls["0.0.0.0_80"].address.socket_address.port_value == 8080
    assert ls["0.0.0.0_443"].address.socket_address.port_value == 8443
    assert hcm_of(ls["0.0.0.0_80"]).rds.route_config_name == "http.80"


GATEWAY_TCP = """apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: tcp-gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-echo}
spec:
  hosts: ["*"]
  gateways: [tcp-gw]
  tcp:
  - match: [{port: 31400}]
    route:
    - {destination: {host: db, port: {number: 5432}, subset: v1}, weight: 80}
    - {destination: {host: db, port: {number: 5432}, subset: v2}, weight: 20}
"""


def test_gateway_tcp_server_gets_a_tcp_proxy_listener() -> None:
    # Istio's tcp-echo gateway task: a TCP server port, VirtualService tcp route with weights
    snap = make_snapshot(resources(GATEWAY_TCP), [service("db", ports=[(5432, "TCP")])])
    ls = listeners(snap, gateway_proxy("127.0.0.9"))
    li = ls["0.0.0.0_31400"]
    assert li.address.socket_address.port_value == 31400
    f = li.filter_chains[0].filters[0]
    assert f.name == "envoy.filters.network.tcp_proxy"
    tp = tcp_proxy_pb2.TcpProxy()
    f.typed_config.Unpack(tp)
    assert [(c.name, c.weight) for c in tp.weighted_clusters.clusters] == [
        ("outbound|5432|v1|db.default.svc.cluster.local", 80), ("outbound|5432|v2|db.default.svc.cluster.local", 20)]


def test_gateway_tcp_server_without_route_has_no_listener() -> None:
    snap = make_snapshot(resources(GATEWAY_TCP.split("---")[0]), [service("db", ports=[(5432, "TCP")])])
    assert listeners(snap, gateway_proxy()) == {}
