"""Envoy's listeners for a sidecar istio-iptables captures (REDIRECT and TPROXY modes), as Istio builds them:
virtualInbound on 15006 serving the inbound ports by destination port; an uncaptured sidecar is unchanged."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.listener.original_src.v3 import original_src_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from sailmesh.agent.bootstrap import node
from sailmesh.agent.config import AgentConfig
from sailmesh.snapshot.model import ProxyView
from sailmesh.xds.types import CLUSTER, LISTENER
from tests.unit.test_generate_support import bookinfo, generated, sidecar

TPROXY = MappingProxyType({"INTERCEPTION_MODE": "TPROXY"})
REDIRECT = MappingProxyType({"INTERCEPTION_MODE": "REDIRECT"})


def _proxy(metadata: MappingProxyType[str, str] | None = None) -> ProxyView:
    proxy = sidecar(name="reviews-v1-0", ip="127.0.1.3", app_ports={9080: 41000})
    return proxy if metadata is None else dataclasses.replace(proxy, metadata=metadata)


def _listeners(metadata: MappingProxyType[str, str] | None = None) -> dict[str, listener_pb2.Listener]:
    return generated(bookinfo(), _proxy(metadata), LISTENER, listener_pb2.Listener)


def test_tproxy_listeners_are_transparent_and_inbound_keeps_the_original_source() -> None:
    """Istio: virtualOutbound transparent; virtualInbound (15006) transparent with the original_dst and
    original_src (mark 1337) listener filters; each inbound port's chains matched by destination port."""
    lis = _listeners(TPROXY)
    assert lis["virtualOutbound"].transparent.value is True
    vin = lis["virtualInbound"]
    assert vin.transparent.value is True
    assert (vin.address.socket_address.address, vin.address.socket_address.port_value) == ("0.0.0.0", 15006)
    assert [f.name for f in vin.listener_filters][:2] == ["envoy.filters.listener.original_dst",
                                                          "envoy.filters.listener.original_src"]
    src = original_src_pb2.OriginalSrc()
    assert vin.listener_filters[1].typed_config.Unpack(src) and src.mark == 1337
    per_port = lis["127.0.1.3_9080"]
    ported = vin.filter_chains[:len(per_port.filter_chains)]  # then the blackhole and passthrough chains
    assert [c.filter_chain_match.destination_port.value for c in ported] == [9080] * len(per_port.filter_chains)
    assert [c.filters for c in ported] == [c.filters for c in per_port.filter_chains]
    assert len({c.name for c in vin.filter_chains}) == len(vin.filter_chains)  # unique names, as Envoy wants


def _inbound_cluster(metadata: MappingProxyType[str, str] | None = None) -> cluster_pb2.Cluster:
    return generated(bookinfo(), _proxy(metadata), CLUSTER, cluster_pb2.Cluster)["inbound|9080||"]


def test_redirect_captured_sidecar_serves_inbound_on_virtual_inbound() -> None:
    """Istio's REDIRECT mode (the default interceptionMode): nat REDIRECT sends inbound TCP to 15006, so
    virtualInbound on 0.0.0.0:15006 with the original_dst listener filter only (not transparent, no original_src:
    those are TPROXY's) serves each inbound port's chains by destination port; the per-port listeners do not bind
    (the app owns its port in a pod)."""
    lis = _listeners(REDIRECT)
    vin = lis["virtualInbound"]
    assert not vin.HasField("transparent")
    assert (vin.address.socket_address.address, vin.address.socket_address.port_value) == ("0.0.0.0", 15006)
    assert [f.name for f in vin.listener_filters][:1] == ["envoy.filters.listener.original_dst"]
    assert "envoy.filters.listener.original_src" not in [f.name for f in vin.listener_filters]
    per_port = lis["127.0.1.3_9080"]
    assert per_port.bind_to_port.value is False and per_port.HasField("bind_to_port")
    ported = vin.filter_chains[:len(per_port.filter_chains)]  # then the blackhole and passthrough chains
    assert [c.filter_chain_match.destination_port.value for c in ported] == [9080] * len(per_port.filter_chains)
    assert [c.filters for c in ported] == [c.filters for c in per_port.filter_chains]
    assert lis["virtualOutbound"].use_original_dst.value is True  # Istio's catch-all (test_generate_capture_outbound)


def test_redirect_mode_inbound_clusters_leave_from_the_passthrough_source() -> None:
    """Istio's inbound clusters bind 127.0.0.6 (InboundPassthroughBindIpv4), which istio-iptables' ISTIO_OUTPUT
    returns (`-s 127.0.0.6/32 -o lo -j RETURN`): Envoy's connection to the app is not captured again. TPROXY keeps
    the client's source (original_src) instead, and an uncaptured sidecar binds nothing."""
    source = _inbound_cluster(REDIRECT).upstream_bind_config.source_address
    assert (source.address, source.WhichOneof("port_specifier"), source.port_value) == ("127.0.0.6", "port_value", 0)
    assert not _inbound_cluster(TPROXY).HasField("upstream_bind_config")
    assert not _inbound_cluster().HasField("upstream_bind_config")


def test_tproxy_per_port_listeners_do_not_bind_either() -> None:
    lis = _listeners(TPROXY)
    assert lis["127.0.1.3_9080"].HasField("bind_to_port") and lis["127.0.1.3_9080"].bind_to_port.value is False


def test_uncaptured_sidecars_are_unchanged() -> None:
    """No INTERCEPTION_MODE (the embedded mesh's sidecar, reached on its own ports) and Istio's NONE: no
    virtualInbound, per-port listeners bind as before, nothing transparent."""
    plain = _listeners()
    assert plain == _listeners(MappingProxyType({"INTERCEPTION_MODE": "NONE"}))
    assert "virtualInbound" not in plain and not plain["virtualOutbound"].HasField("transparent")
    assert not any(li.HasField("bind_to_port") for li in plain.values())


def test_the_agent_declares_the_mode_only_when_it_is_given() -> None:
    """The injector sets ISTIO_META_INTERCEPTION_MODE (REDIRECT by default) for a captured pod; an agent started
    without it (the embedded mesh) declares nothing, so its sidecar is generated as before."""
    base = AgentConfig(ip="127.0.0.1", name="reviews-v1-0", namespace="default")
    assert "INTERCEPTION_MODE" not in node(base)["metadata"]
    for mode in ("REDIRECT", "TPROXY", "NONE"):
        cfg = dataclasses.replace(base, interception_mode=mode)
        assert node(cfg)["metadata"]["INTERCEPTION_MODE"] == mode


STRICT = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec:
  mtls: {mode: STRICT}
"""


def _passthrough_chains(vin: listener_pb2.Listener) -> list[lc.FilterChain]:
    return [c for c in vin.filter_chains
            if c.name.startswith("virtualInbound") and c.name != "virtualInbound-blackhole"]


def test_inbound_ports_without_a_listener_pass_through() -> None:
    """Istio's virtualInbound: after the listener ports' chains, `virtualInbound-blackhole` (destination port 15006
    itself) and the passthrough chains (no destination port: any other port) to InboundPassthroughCluster, an
    ORIGINAL_DST cluster leaving from 127.0.0.6 in REDIRECT mode (buildInboundPassthroughCluster); TPROXY keeps
    the client's source (original_src); an uncaptured sidecar has neither."""
    vin = _listeners(REDIRECT)["virtualInbound"]
    names = [c.name for c in vin.filter_chains]
    black = vin.filter_chains[names.index("virtualInbound-blackhole")]
    assert black.filter_chain_match.destination_port.value == 15006
    passthrough = _passthrough_chains(vin)
    # no mesh identity: plaintext only, Istio's HTTP catch-all (http_inspector's ALPN) and the TCP one
    assert [c.name for c in passthrough] == ["virtualInbound-catchall-http", "virtualInbound"]
    assert not any(c.filter_chain_match.HasField("destination_port") for c in passthrough)
    tp = tcp_proxy_pb2.TcpProxy()
    assert passthrough[1].filters[-1].typed_config.Unpack(tp) and tp.cluster == "InboundPassthroughCluster"
    clusters = generated(bookinfo(), _proxy(REDIRECT), CLUSTER, cluster_pb2.Cluster)
    c = clusters["InboundPassthroughCluster"]
    assert (c.type, c.lb_policy) == (cluster_pb2.Cluster.ORIGINAL_DST, cluster_pb2.Cluster.CLUSTER_PROVIDED)
    assert c.upstream_bind_config.source_address.address == "127.0.0.6"
    tproxy = generated(bookinfo(), _proxy(TPROXY), CLUSTER, cluster_pb2.Cluster)["InboundPassthroughCluster"]
    assert not tproxy.HasField("upstream_bind_config")
    assert "InboundPassthroughCluster" not in generated(bookinfo(), _proxy(), CLUSTER, cluster_pb2.Cluster)


def test_inbound_passthrough_follows_the_workloads_peer_authentication() -> None:
    """Istio builds the passthrough chains with the workload's mTLS mode: STRICT takes only mesh mTLS there too
    (a plaintext connection to an unlisted port matches no chain and is closed)."""
    proxy = dataclasses.replace(_proxy(REDIRECT), labels={"app": "reviews", "version": "v1",
                                                          "security.istio.io/tlsMode": "istio"})
    vin = generated(bookinfo(STRICT), proxy, LISTENER, listener_pb2.Listener)["virtualInbound"]
    passthrough = _passthrough_chains(vin)
    assert passthrough and all(c.filter_chain_match.transport_protocol == "tls" for c in passthrough)
    assert all(c.HasField("transport_socket") for c in passthrough)


def test_inbound_passthrough_has_istios_http_catch_all_chain() -> None:
    """Istio's `virtualInbound-catchall-http` (buildInboundPassthroughChains with the Auto options): plaintext
    HTTP/1.1 or h2c to a port without a listener (the http_inspector's ALPN) goes through an HCM whose inline route
    config `InboundPassthroughCluster` (virtual host `inbound|http|0`) sends it to InboundPassthroughCluster;
    virtualInbound runs the http_inspector for every port but the declared ones that do not sniff (and 15006)."""
    vin = _listeners(REDIRECT)["virtualInbound"]
    http = _passthrough_chains(vin)[0]
    assert list(http.filter_chain_match.application_protocols) == ["http/1.1", "h2c"]
    h = hcm_pb2.HttpConnectionManager()
    assert http.filters[-1].typed_config.Unpack(h) and h.stat_prefix == "InboundPassthroughCluster"
    assert h.route_config.name == "InboundPassthroughCluster"
    [vhost] = h.route_config.virtual_hosts
    assert (vhost.name, list(vhost.domains)) == ("inbound|http|0", ["*"])
    assert vhost.routes[0].route.cluster == "InboundPassthroughCluster"
    [inspector] = [f for f in vin.listener_filters if f.name == "envoy.filters.listener.http_inspector"]
    skipped = {r.destination_port_range.start for r in inspector.filter_disabled.or_match.rules}
    assert skipped == {9080, 15006}  # reviews' declared HTTP port and the capture port itself
    mesh = dataclasses.replace(_proxy(REDIRECT), labels={"app": "reviews", "version": "v1",
                                                         "security.istio.io/tlsMode": "istio"})
    permissive = _passthrough_chains(generated(bookinfo(), mesh, LISTENER, listener_pb2.Listener)["virtualInbound"])
    assert [c.name for c in permissive] == ["virtualInbound-catchall-http", "virtualInbound-catchall-http-1",
                                            "virtualInbound", "virtualInbound-1", "virtualInbound-2"]
