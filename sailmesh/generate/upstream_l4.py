"""A DestinationRule's connection-level settings: the PROXY protocol header on upstream connections (a transport
socket wrapping the cluster's, Istio's applyUpstreamProxyProtocol) and outbound TCP tunnelled through HTTP
CONNECT/POST to the rule's host (tcp_proxy `tunneling_config`, Istio's tunnelingconfig.Apply)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, proxy_protocol_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.proxy_protocol.v3 import upstream_proxy_protocol_pb2 as upp

from sailmesh.api.models import model_of
from sailmesh.api.models.networking import DestinationRule
from sailmesh.api.resource import Resource
from sailmesh.generate import names
from sailmesh.generate.common import pack
from sailmesh.generate.scope import destination_rule
from sailmesh.generate.tls import raw_buffer
from sailmesh.snapshot.model import MeshSnapshot, ProxyView

PROXY_PROTOCOL_SOCKET = "envoy.transport_sockets.upstream_proxy_protocol"
# Istio's TrafficPolicy.ProxyProtocol.VERSION, whose numbers are Envoy's ProxyProtocolConfig.Version's
VERSIONS = {"V1": proxy_protocol_pb2.ProxyProtocolConfig.V1, "V2": proxy_protocol_pb2.ProxyProtocolConfig.V2}
OUTBOUND_PREFIX = "outbound|"


def _wrap(inner: base_pb2.TransportSocket, version: int) -> base_pb2.TransportSocket:
    config = upp.ProxyProtocolUpstreamTransport(config=proxy_protocol_pb2.ProxyProtocolConfig(version=version),
                                                transport_socket=inner)
    return base_pb2.TransportSocket(name=PROXY_PROTOCOL_SOCKET, typed_config=pack(config))


def apply_proxy_protocol(c: cluster_pb2.Cluster, proxy_protocol: Mapping[str, Any] | None) -> None:
    """Istio's applyUpstreamProxyProtocol (after the cluster's TLS is decided): the cluster's transport socket, and
    each of its transport socket matches (auto mTLS), wrapped in Envoy's upstream PROXY protocol socket of the
    rule's version (default V1); a cluster without one wraps raw_buffer."""
    if proxy_protocol is None:
        return
    version = VERSIONS.get(str(proxy_protocol.get("version") or "V1").upper(), VERSIONS["V1"])
    if not c.HasField("transport_socket") and not c.transport_socket_matches:
        c.transport_socket.CopyFrom(_wrap(raw_buffer(), version))
        return
    if c.HasField("transport_socket"):
        c.transport_socket.CopyFrom(_wrap(c.transport_socket, version))
    for match in c.transport_socket_matches:
        match.transport_socket.CopyFrom(_wrap(match.transport_socket, version))


def _tunnel(dr: Resource, subset: str) -> Mapping[str, Any] | None:
    """Istio's tunnelingconfig.Apply lookup: with a subset, that subset's policy's `tunnel` only (no fall back to
    the rule's); without, the rule's top-level one."""
    rule = model_of(dr, DestinationRule)
    if subset:
        sub = rule.subset(subset)
        return sub.traffic_policy.tunnel if sub is not None and sub.traffic_policy is not None else None
    return rule.traffic_policy.tunnel if rule.traffic_policy is not None else None


def _join_host_port(host: str, port: int) -> str:
    """Go's net.JoinHostPort: an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def tunneling_config(snapshot: MeshSnapshot, proxy: ProxyView,
                     clusters: Sequence[tuple[str, int]]) -> tcp_proxy_pb2.TcpProxy.TunnelingConfig | None:
    """The `tunneling_config` of an outbound tcp_proxy to `clusters` (Istio's buildOutboundNetworkFilters): the
    DestinationRule the proxy sees for the first destination's host decides; one destination reads its subset's
    `tunnel`, weighted destinations the rule's top-level one ("tunneling config for a subset is ignored"). The
    tunnel's CONNECT (or POST) names `targetHost:targetPort`. None: no tunnel (no rule, no `tunnel`, a cluster that
    is not a service's)."""
    if not clusters or not clusters[0][0].startswith(OUTBOUND_PREFIX):
        return None
    _direction, _port, subset, host = names.parse_cluster(clusters[0][0])
    svc = snapshot.services.get(host)
    dr = destination_rule(snapshot, proxy.namespace, svc, proxy.labels) if svc is not None else None
    tunnel = _tunnel(dr, subset if len(clusters) == 1 else "") if dr is not None else None
    if tunnel is None:
        return None
    return tcp_proxy_pb2.TcpProxy.TunnelingConfig(
        hostname=_join_host_port(str(tunnel.get("targetHost", "")), int(tunnel.get("targetPort", 0) or 0)),
        use_post=tunnel.get("protocol") == "POST")


def has_tunnel(snapshot: MeshSnapshot) -> bool:
    """Whether any DestinationRule of the snapshot sets a `tunnel` (its changes then reach listeners)."""
    for dr in snapshot.of_kind("DestinationRule"):
        rule = model_of(dr, DestinationRule)
        policies = [rule.traffic_policy, *(s.traffic_policy for s in rule.subsets or ())]
        if any(p is not None and p.tunnel is not None for p in policies):
            return True
    return False
