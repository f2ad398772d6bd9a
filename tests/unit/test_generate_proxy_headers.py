"""The mesh config's `defaultConfig.proxyHeaders` in generated config, per listener class, as Istio builds it.

Istio's rules matched (pilot/pkg/networking/util/proxy_headers.go GetProxyHeadersFromProxyConfig, and its callers
listener_inbound.go, listener.go, gateway.go buildGatewayConnectionManager, httproute.go buildCatchAllVirtualHost;
mesh/v1alpha1/proxy.proto ProxyHeaders):
- defaults: inbound and gateway HCMs `server_name: istio-envoy`, the sidecar's outbound HCMs none (Envoy's
  `envoy`: "outbound uses envoy while inbound uses istio-envoy ... kept for backwards compatibility"), all OVERWRITE;
  inbound XFCC APPEND_FORWARD with subject, URI and DNS; gateways SANITIZE_SET with subject, cert, DNS and URI
  ("Gateways do not use ProxyHeaders for XFCC"); outbound no XFCC setting; `x-envoy-attempt-count` on outbound and
  gateway virtual hosts, the catch-all allow_any / block_all ones included;
- `server.disabled`: no name, PASS_THROUGH; `server.value`: that name on every class;
- `requestId.disabled`: generate_request_id false; `attemptCount.disabled`: no attempt count on virtual hosts;
- `envoyDebugHeaders.disabled`: the router's suppress_envoy_headers; `xForwardedPort.enabled`: every HCM's
  append_x_forwarded_port (off by default);
- `forwardedClientCert`: the inbound mode (Istio's enum is Envoy's plus one), `setCurrentClientCertDetails` its
  fields (cert and chain only when set true).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from sailmesh.api import meshconfig
from sailmesh.errors import ModelError
from sailmesh.generate import proxy_headers
from sailmesh.snapshot.model import MeshSnapshot
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
REVIEWS = sidecar("reviews-v1-0", "127.0.1.3", app="reviews", version="v1", app_ports={9080: 41000})
GATEWAY = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: istio-system}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route:
    - destination: {host: web.default.svc.cluster.local, port: {number: 8000}}
"""
OFF = {"defaultConfig": {"proxyHeaders": {
    "forwardedClientCert": "SANITIZE", "server": {"disabled": True}, "requestId": {"disabled": True},
    "attemptCount": {"disabled": True}, "envoyDebugHeaders": {"disabled": True}}}}


def with_mesh(snapshot: MeshSnapshot, raw: dict[str, Any]) -> MeshSnapshot:
    return dataclasses.replace(snapshot, mesh_config=meshconfig.from_mapping(raw))


def _hcm(listener: listener_pb2.Listener) -> HCM:
    h = HCM()
    assert listener.filter_chains[0].filters[0].typed_config.Unpack(h)
    return h


def _router(h: HCM) -> router_pb2.Router:
    r = router_pb2.Router()
    assert h.http_filters[-1].typed_config.Unpack(r)
    return r


def _sidecar_hcms(snapshot: MeshSnapshot) -> tuple[HCM, HCM]:
    ls = generated(snapshot, REVIEWS, LISTENER, listener_pb2.Listener)
    return _hcm(ls["virtualOutbound"]), _hcm(ls["127.0.1.3_9080"])


def _gateway_snapshot(raw: dict[str, Any] | None = None) -> MeshSnapshot:
    snap = make_snapshot(resources(GATEWAY), [service("web", ports=((8000, "HTTP"),))])
    return with_mesh(snap, raw) if raw is not None else snap


def test_defaults_per_listener_class() -> None:
    outbound, inbound = _sidecar_hcms(bookinfo())
    assert (outbound.server_name, outbound.server_header_transformation) == ("", HCM.OVERWRITE)
    assert (inbound.server_name, inbound.server_header_transformation) == ("istio-envoy", HCM.OVERWRITE)
    assert outbound.forward_client_cert_details == HCM.SANITIZE
    assert not outbound.HasField("set_current_client_cert_details")
    assert inbound.forward_client_cert_details == HCM.APPEND_FORWARD
    d = inbound.set_current_client_cert_details
    assert (d.subject.value, d.uri, d.dns, d.cert, d.chain) == (True, True, True, False, False)
    for h in (outbound, inbound):
        assert h.generate_request_id.value and not _router(h).suppress_envoy_headers
        assert not h.append_x_forwarded_port
    gw = _hcm(generated(_gateway_snapshot(), gateway_proxy(), LISTENER, listener_pb2.Listener)["0.0.0.0_80"])
    assert (gw.server_name, gw.use_remote_address.value) == ("istio-envoy", True)
    assert gw.forward_client_cert_details == HCM.SANITIZE_SET
    d = gw.set_current_client_cert_details
    assert (d.subject.value, d.uri, d.dns, d.cert, d.chain) == (True, True, True, True, False)


def test_attempt_count_on_every_outbound_and_gateway_virtual_host_by_default() -> None:
    routes = generated(bookinfo(), REVIEWS, ROUTE, route_pb2.RouteConfiguration)
    vhosts = [v for r in routes.values() for v in r.virtual_hosts]
    assert {v.name for v in vhosts} >= {"allow_any", "ratings.default.svc.cluster.local:9080"}
    assert all(v.include_request_attempt_count for v in vhosts), [v.name for v in vhosts]
    gw = generated(_gateway_snapshot(), gateway_proxy(), ROUTE, route_pb2.RouteConfiguration)
    assert all(v.include_request_attempt_count for r in gw.values() for v in r.virtual_hosts)


def test_block_all_carries_the_attempt_count_too() -> None:
    sidecar_registry_only = resources("""
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
""")
    snap = bookinfo()
    registry_only = make_snapshot(sidecar_registry_only, snap.services.values(), snap.workloads)
    routes = generated(registry_only, REVIEWS, ROUTE, route_pb2.RouteConfiguration)
    [block] = {v.name: v for r in routes.values() for v in r.virtual_hosts if v.name == "block_all"}.values()
    assert block.include_request_attempt_count


def test_every_header_turned_off() -> None:
    outbound, inbound = _sidecar_hcms(with_mesh(bookinfo(), OFF))
    for h in (outbound, inbound):
        assert (h.server_name, h.server_header_transformation) == ("", HCM.PASS_THROUGH)
        assert h.generate_request_id.value is False and h.HasField("generate_request_id")
        assert _router(h).suppress_envoy_headers
    assert inbound.forward_client_cert_details == HCM.SANITIZE
    routes = generated(with_mesh(bookinfo(), OFF), REVIEWS, ROUTE, route_pb2.RouteConfiguration)
    assert not any(v.include_request_attempt_count for r in routes.values() for v in r.virtual_hosts)
    gw_snap = _gateway_snapshot(OFF)
    gw = _hcm(generated(gw_snap, gateway_proxy(), LISTENER, listener_pb2.Listener)["0.0.0.0_80"])
    assert gw.forward_client_cert_details == HCM.SANITIZE_SET  # gateways ignore proxyHeaders' XFCC
    assert gw.server_header_transformation == HCM.PASS_THROUGH and not gw.generate_request_id.value
    assert not any(v.include_request_attempt_count
                   for r in generated(gw_snap, gateway_proxy(), ROUTE, route_pb2.RouteConfiguration).values()
                   for v in r.virtual_hosts)


def test_server_value_names_every_class_x_forwarded_port_and_cert_details_follow_the_settings() -> None:
    raw = {"defaultConfig": {"proxyHeaders": {
        "server": {"value": "my-server"}, "forwardedClientCert": "SANITIZE_SET", "xForwardedPort": {"enabled": True},
        "setCurrentClientCertDetails": {"subject": False, "cert": True, "chain": True, "dns": False}}}}
    outbound, inbound = _sidecar_hcms(with_mesh(bookinfo(), raw))
    assert outbound.server_name == inbound.server_name == "my-server"
    assert outbound.append_x_forwarded_port and inbound.append_x_forwarded_port
    assert inbound.forward_client_cert_details == HCM.SANITIZE_SET
    d = inbound.set_current_client_cert_details
    assert (d.subject.value, d.uri, d.dns, d.cert, d.chain) == (False, True, False, True, True)


@pytest.mark.parametrize(("value", "envoy"), [
    ("UNDEFINED", HCM.APPEND_FORWARD), ("SANITIZE", HCM.SANITIZE), ("FORWARD_ONLY", HCM.FORWARD_ONLY),
    ("APPEND_FORWARD", HCM.APPEND_FORWARD), ("SANITIZE_SET", HCM.SANITIZE_SET),
    ("ALWAYS_FORWARD_ONLY", HCM.ALWAYS_FORWARD_ONLY), (2, HCM.FORWARD_ONLY)])
def test_forwarded_client_cert_maps_istios_enum_to_envoys(value: str | int, envoy: int) -> None:
    mesh = meshconfig.from_mapping({"defaultConfig": {"proxyHeaders": {"forwardedClientCert": value}}})
    assert proxy_headers.for_class(mesh, proxy_headers.ListenerClass.SIDECAR_INBOUND).forward_client_cert == envoy


def test_an_unknown_forwarded_client_cert_is_refused_with_its_field() -> None:
    with pytest.raises(ModelError, match=r"defaultConfig\.proxyHeaders\.forwardedClientCert"):
        meshconfig.from_mapping({"defaultConfig": {"proxyHeaders": {"forwardedClientCert": "APPEND"}}})


def test_fields_not_acted_on_are_reported() -> None:
    """metadataExchangeHeaders, preserveHttp1HeaderCase and xForwardedHost: "accepted, not enforced"
    (MeshConfig.unmodelled), the modelled ones are not listed."""
    mesh = meshconfig.from_mapping({"defaultConfig": {"proxyHeaders": {
        "server": {"value": "x"}, "metadataExchangeHeaders": {"mode": "IN_MESH"}, "preserveHttp1HeaderCase": True,
        "xForwardedHost": {"enabled": True}, "xForwardedPort": {"enabled": True}}}})
    assert set(mesh.unmodelled) == {f"defaultConfig.proxyHeaders.{k}" for k in (
        "metadataExchangeHeaders", "preserveHttp1HeaderCase", "xForwardedHost")}
