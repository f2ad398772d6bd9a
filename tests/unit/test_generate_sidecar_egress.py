"""Sidecar egress listeners with a `port` (Istio's explicit egress listeners): `<bind>_<port>` listeners, HTTP ones
routed by the port's route config, TCP ones tcp_proxied to the service of their hosts; conflicts with inbound ports
dropped; an uncaptured sidecar binds them whatever their captureMode (Istio's proxyNoneMode rule)."""

from __future__ import annotations

from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from sailmesh.generate import enforcement
from sailmesh.snapshot.model import Service, ServicePort
from sailmesh.xds.types import LISTENER, ROUTE
from tests.unit.test_generate_support import (
    bookinfo_services,
    bookinfo_workloads,
    generated,
    make_snapshot,
    resources,
    sidecar,
)

DB = Service(hostname="db.default.svc.cluster.local", name="db", namespace="default",
             ports=(ServicePort(port=5432, name="tcp", protocol="TCP"),), selector={"app": "db"})

EGRESS = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: pp, namespace: default}
spec:
  workloadSelector: {labels: {app: productpage}}
  egress:
  - port: {number: 8080, protocol: HTTP, name: http}
    hosts: ["./*"]
  - port: {number: 5432, protocol: TCP, name: tcp}
    bind: 127.0.0.1
    captureMode: NONE
    hosts: ["./db.default.svc.cluster.local"]
  - port: {number: 9080, protocol: HTTP, name: clash}
    hosts: ["./*"]
  - hosts: ["./*"]
"""


def snap():  # type: ignore[no-untyped-def]
    return make_snapshot(resources(EGRESS), [*bookinfo_services(), DB], bookinfo_workloads())


def test_egress_port_listeners() -> None:
    ls = generated(snap(), sidecar(), LISTENER, listener_pb2.Listener)
    http = ls["127.0.1.1_8080"]
    assert http.address.socket_address.address == "127.0.1.1" and http.address.socket_address.port_value == 8080
    h = hcm_pb2.HttpConnectionManager()
    http.filter_chains[0].filters[0].typed_config.Unpack(h)
    assert h.rds.route_config_name == "8080"
    tcp = ls["127.0.0.1_5432"]  # bind as written
    tp = tcp_proxy_pb2.TcpProxy()
    tcp.filter_chains[0].filters[0].typed_config.Unpack(tp)
    assert tp.cluster == "outbound|5432||db.default.svc.cluster.local"
    # 9080 is the proxy's own inbound port on its address: the egress listener is dropped, the inbound one stays
    assert "127.0.1.1_9080" in ls and ls["127.0.1.1_9080"].traffic_direction != http.traffic_direction
    # the HTTP egress port has its route config even though no service has port 8080 (only the fallback host)
    rcs = generated(snap(), sidecar(), ROUTE, route_pb2.RouteConfiguration)
    assert [v.name for v in rcs["8080"].virtual_hosts] == ["allow_any"]


def test_egress_fields_are_enforced_capture_modes_as_istio() -> None:
    """Istio's buildSidecarOutboundListeners: "do not care what the listener's capture mode setting is. The proxy
    does not use iptables" - an uncaptured sidecar binds its egress listener whatever the mode (no note); a captured
    one follows captureMode (test_generate_capture_outbound)."""
    assert enforcement.not_enforced(resources(EGRESS)[0]) == []
    iptables = EGRESS.replace("captureMode: NONE", "captureMode: IPTABLES")
    assert enforcement.not_enforced(resources(iptables)[0]) == []
    bound = generated(make_snapshot(resources(iptables), [*bookinfo_services(), DB], bookinfo_workloads()), sidecar(),
                      LISTENER, listener_pb2.Listener)
    assert all(not lis.HasField("bind_to_port") for lis in bound.values())
