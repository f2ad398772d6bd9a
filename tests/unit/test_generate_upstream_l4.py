"""DestinationRule `proxyProtocol` (Istio's applyUpstreamProxyProtocol: the PROXY protocol transport socket wrapping
the cluster's) and `tunnel` (Istio's tunnelingconfig.Apply: the outbound tcp_proxy's tunneling_config), on the
generated protobufs."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import proxy_protocol_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.proxy_protocol.v3 import upstream_proxy_protocol_pb2 as upp
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from sailmesh.api.change import Change
from sailmesh.api.resource import ResourceKey
from sailmesh.generate import enforcement
from sailmesh.generate.affect import affected_types
from sailmesh.generate.upstream_l4 import PROXY_PROTOCOL_SOCKET
from sailmesh.xds.types import CLUSTER, LISTENER
from tests.unit.test_generate_sidecar_egress import DB
from tests.unit.test_generate_support import (
    bookinfo_services,
    bookinfo_workloads,
    generated,
    make_snapshot,
    resources,
    sidecar,
)

REVIEWS = "reviews.default.svc.cluster.local"
PPV = proxy_protocol_pb2.ProxyProtocolConfig
EGRESS = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: pp, namespace: default}
spec:
  workloadSelector: {labels: {app: productpage}}
  egress:
  - port: {number: 5432, protocol: TCP, name: tcp}
    hosts: ["./db.default.svc.cluster.local"]
  - hosts: ["./*"]
---
"""


def _snap(text: str):  # type: ignore[no-untyped-def]
    return make_snapshot(resources(EGRESS + text), [*bookinfo_services(), DB], bookinfo_workloads())


def _unwrap(socket) -> tuple[int, object]:  # type: ignore[no-untyped-def]
    assert socket.name == PROXY_PROTOCOL_SOCKET, socket
    t = upp.ProxyProtocolUpstreamTransport()
    socket.typed_config.Unpack(t)
    return t.config.version, t.transport_socket


def test_proxy_protocol_wraps_raw_buffer_and_subsets_override() -> None:
    """Istio's applyUpstreamProxyProtocol: a cluster without a transport socket gets the PROXY socket around
    raw_buffer, of the rule's version; MergeTrafficPolicy: a subset's proxyProtocol replaces the rule's, port-level
    settings keep it."""
    snap = _snap(f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: {REVIEWS}
  trafficPolicy:
    proxyProtocol: {{version: V2}}
    portLevelSettings: [{{port: {{number: 9080}}, loadBalancer: {{simple: RANDOM}}}}]
  subsets:
  - {{name: v1, labels: {{version: v1}}, trafficPolicy: {{proxyProtocol: {{version: V1}}}}}}
  - {{name: v2, labels: {{version: v2}}}}
""")
    got = generated(snap, sidecar(), CLUSTER, cluster_pb2.Cluster)
    version, inner = _unwrap(got[f"outbound|9080||{REVIEWS}"].transport_socket)
    assert version == PPV.V2 and inner.name == "envoy.transport_sockets.raw_buffer"  # type: ignore[attr-defined]
    assert _unwrap(got[f"outbound|9080|v1|{REVIEWS}"].transport_socket)[0] == PPV.V1
    assert _unwrap(got[f"outbound|9080|v2|{REVIEWS}"].transport_socket)[0] == PPV.V2
    assert not got["outbound|9080||details.default.svc.cluster.local"].HasField("transport_socket")


def test_proxy_protocol_wraps_tls_and_each_auto_mtls_match() -> None:
    """The PROXY socket wraps the TLS origination socket (the header goes first, then the handshake), and each of
    auto mTLS's transport socket matches."""
    snap = _snap(f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: {REVIEWS}
  trafficPolicy: {{proxyProtocol: {{}}, tls: {{mode: SIMPLE}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: ratings, namespace: default}}
spec:
  host: ratings.default.svc.cluster.local
  trafficPolicy: {{proxyProtocol: {{version: V2}}}}
""")
    got = generated(snap, sidecar(**{"security.istio.io/tlsMode": "istio"}), CLUSTER, cluster_pb2.Cluster)
    version, inner = _unwrap(got[f"outbound|9080||{REVIEWS}"].transport_socket)
    assert version == PPV.V1  # Istio's default version
    ctx = tls_pb2.UpstreamTlsContext()
    inner.typed_config.Unpack(ctx)  # type: ignore[attr-defined]
    assert ctx.sni == REVIEWS
    ratings = got["outbound|9080||ratings.default.svc.cluster.local"]
    assert len(ratings.transport_socket_matches) == 2 and not ratings.HasField("transport_socket")
    wrapped = [_unwrap(m.transport_socket) for m in ratings.transport_socket_matches]
    assert [v for v, _ in wrapped] == [PPV.V2, PPV.V2]
    assert [s.name for _, s in wrapped] == ["envoy.transport_sockets.tls",  # type: ignore[attr-defined]
                                            "envoy.transport_sockets.raw_buffer"]


def _tcp_proxy(snap) -> tcp_proxy_pb2.TcpProxy:  # type: ignore[no-untyped-def]
    listener = generated(snap, sidecar(), LISTENER, listener_pb2.Listener)["127.0.1.1_5432"]
    tp = tcp_proxy_pb2.TcpProxy()
    listener.filter_chains[0].filters[-1].typed_config.Unpack(tp)
    return tp


TUNNEL_DR = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: default}
spec:
  host: db.default.svc.cluster.local
  trafficPolicy: {tunnel: {protocol: CONNECT, targetHost: api.mysql.example.com, targetPort: 3306}}
  subsets:
  - {name: post, labels: {v: post}, trafficPolicy: {tunnel: {protocol: POST, targetHost: "2001:db8::1", targetPort: 8}}}
  - {name: none, labels: {v: none}}
"""


def test_tunnel_on_the_outbound_tcp_proxy() -> None:
    """Istio's tunnelingconfig.Apply: `targetHost:targetPort` (net.JoinHostPort) as the tunnel's hostname, POST when
    the protocol says so; without a rule, no tunnel."""
    assert not _tcp_proxy(_snap("")).HasField("tunneling_config")
    tp = _tcp_proxy(_snap(TUNNEL_DR))
    assert tp.cluster == "outbound|5432||db.default.svc.cluster.local"
    assert (tp.tunneling_config.hostname, tp.tunneling_config.use_post) == ("api.mysql.example.com:3306", False)


def test_tunnel_of_a_subset_destination_is_the_subsets_only() -> None:
    """A tcp route to a subset reads that subset's tunnel, with no fall back to the rule's (tunnelingconfig.Apply);
    weighted destinations read the rule's top-level tunnel ("tunneling config for a subset is ignored")."""
    def routed(route: str) -> tcp_proxy_pb2.TcpProxy:
        return _tcp_proxy(_snap(TUNNEL_DR + f"""---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: db, namespace: default}}
spec:
  hosts: [db.default.svc.cluster.local]
  tcp: [{{route: {route}}}]
"""))
    tp = routed("[{destination: {host: db.default.svc.cluster.local, subset: post}}]")
    assert (tp.tunneling_config.hostname, tp.tunneling_config.use_post) == ("[2001:db8::1]:8", True)
    assert not routed("[{destination: {host: db.default.svc.cluster.local, subset: none}}]") \
        .HasField("tunneling_config")
    tp = routed("[{destination: {host: db.default.svc.cluster.local, subset: post}, weight: 50}, "
                "{destination: {host: db.default.svc.cluster.local, subset: none}, weight: 50}]")
    assert len(tp.weighted_clusters.clusters) == 2
    assert (tp.tunneling_config.hostname, tp.tunneling_config.use_post) == ("api.mysql.example.com:3306", False)


def test_a_tunnel_rule_change_pushes_listeners() -> None:
    """The tunnel lives in listeners: a DestinationRule change pushes LDS when either snapshot has a tunnel."""
    before, after = _snap(""), _snap(TUNNEL_DR)
    change = Change(frozenset({ResourceKey("DestinationRule", "default", "db")}))
    assert LISTENER in affected_types(change, before, after)
    assert LISTENER in affected_types(change, after, before)
    assert LISTENER not in affected_types(change, before, before)


def test_enforced_fields_are_not_reported() -> None:
    """proxyProtocol and CONNECT tunnels are enforced; a POST tunnel is reported for explicit-proxy sidecars (their
    clients' CONNECT is forwarded, not re-encapsulated)."""
    [dr] = resources(TUNNEL_DR)
    assert enforcement.not_enforced(dr) == [
        "DestinationRule default/db: accepted, not enforced: spec.subsets[0].trafficPolicy.tunnel.protocol: POST (TCP "
        "listeners only: an explicit-proxy sidecar's CONNECT clients are not tunnelled)"]
    [dr] = resources(TUNNEL_DR.replace("protocol: POST", "protocol: CONNECT"))
    assert enforcement.not_enforced(dr) == []
    [pp] = resources(f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec: {{host: {REVIEWS}, trafficPolicy: {{proxyProtocol: {{version: V2}}}}}}
""")
    assert enforcement.not_enforced(pp) == []
