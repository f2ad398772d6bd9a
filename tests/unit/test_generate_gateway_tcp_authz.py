"""AuthorizationPolicy on a gateway's TCP filter chains (Istio's gateway network filter stack: the policy's TCP
filters, CUSTOM, AUDIT, DENY, ALLOW, before the tcp_proxy of TCP servers and of passed-through or terminated TLS
chains; HTTP chains carry them as HTTP filters instead)."""

from __future__ import annotations

from envoy.config.listener.v3 import listener_pb2

from sailmesh.xds.types import LISTENER
from tests.unit.test_generate_gateway_tls import PASSTHROUGH, SERVICES, TLS_VS, gateway
from tests.unit.test_generate_support import gateway_proxy, generated, make_snapshot, resources, service

TCP_SERVER = gateway("""  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ['*']
""", name="tcp-gw")
TCP_VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-echo, namespace: default}
spec:
  hosts: ['*']
  gateways: [tcp-gw]
  tcp: [{route: [{destination: {host: tcp-echo, port: {number: 9000}}}]}]
"""
DENY = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-lan, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: DENY
  rules: [{from: [{source: {ipBlocks: [10.0.0.0/8]}}]}]
"""


def chains(*texts: str) -> dict[str, list[list[str]]]:
    snap = make_snapshot(resources(*texts), [*SERVICES, service("tcp-echo", ports=((9000, "TCP"),))])
    lis = generated(snap, gateway_proxy(), LISTENER, listener_pb2.Listener)
    return {name: [[f.name for f in fc.filters] for fc in li.filter_chains] for name, li in lis.items()}


def test_tcp_and_passthrough_chains_get_the_policys_tcp_filters_first() -> None:
    got = chains(TCP_SERVER, TCP_VS, PASSTHROUGH, TLS_VS, DENY)
    rbac, tcp = "envoy.filters.network.rbac", "envoy.filters.network.tcp_proxy"
    assert got["0.0.0.0_31400"] == [[rbac, tcp]]
    assert got["0.0.0.0_443"] == [[rbac, tcp], [rbac, tcp]]


def test_without_a_policy_nothing_before_the_tcp_proxy() -> None:
    got = chains(TCP_SERVER, TCP_VS, PASSTHROUGH, TLS_VS)
    assert got["0.0.0.0_31400"] == [["envoy.filters.network.tcp_proxy"]]
    assert all(c == ["envoy.filters.network.tcp_proxy"] for c in got["0.0.0.0_443"])
