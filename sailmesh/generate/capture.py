"""A sidecar whose traffic istio-iptables captures (node metadata INTERCEPTION_MODE, which the injector sets from
the pod annotation `sidecar.istio.io/interceptionMode`), as Istio's listener builder serves it:

- inbound TCP arrives on 15006 with its original destination kept (nat REDIRECT in REDIRECT mode, the mangle
  table's TPROXY target in TPROXY mode): a `virtualInbound` listener on 0.0.0.0:15006 with Istio's listener filter
  original_dst, whose filter chains are the proxy's inbound listeners' chains, each matched on its destination
  port. The per-port inbound listeners then do not bind (`bind_to_port: false`): in a pod the app owns its port;
- TPROXY mode only: `virtualOutbound` and `virtualInbound` are `transparent: true` (IP_TRANSPARENT: Envoy may
  accept connections addressed elsewhere), and virtualInbound adds the original_src listener filter (mark 1337:
  the app's replies are routed back to Envoy by the fwmark rule istio-iptables installs);
- outbound TCP arrives on 15001 (nat REDIRECT to ISTIO_REDIRECT; the proxy's own UID 1337 is left alone, so
  Envoy's upstream connections are not captured again): `virtualOutbound` on 0.0.0.0:15001 is Istio's catch-all,
  `use_original_dst` (Envoy hands each connection to the listener bound, without binding, to its original
  destination: `VIP_PORT` for a TCP service's ClusterIP, else `0.0.0.0_PORT`), whose chains send what no listener
  takes to PassthroughCluster (outboundTrafficPolicy ALLOW_ANY) or BlackHoleCluster (REGISTRY_ONLY), and the
  listen port itself to BlackHoleCluster. PassthroughCluster is ORIGINAL_DST here (the destination is known),
  not the embedded mesh's dynamic forward proxy; listeners.captured_outbound builds the per-port listeners;
- inbound TCP to a port the proxy has no listener for passes through (Istio's buildInboundPassthroughChains):
  virtualInbound's last chains, in the workload's PeerAuthentication mode, send it to InboundPassthroughCluster
  (ORIGINAL_DST: the app's port at the address it was sent to);
- REDIRECT mode only: the inbound clusters connect from 127.0.0.6 (Istio's InboundPassthroughBindIpv4), the
  source istio-iptables' ISTIO_OUTPUT lets through (`-s 127.0.0.6/32 -o lo -j RETURN`); otherwise Envoy's (UID
  1337) connection to the app on the pod address would be redirected to 15006 again;
- IP families (Istio's getWildcardsAndLocalHost by GetIPMode): an IPv6-only pod's wildcards are `::` / `::1` and
  its inbound source ::6; a dual-stack pod (both families in INSTANCE_IPS) keeps the IPv4 ones and adds `::` / `::1`
  as each wildcard listener's additional address and ::6 as the inbound clusters' extra source.

A proxy without INTERCEPTION_MODE (the embedded mesh's sidecar, reached on its own ports) or with NONE is not
captured and keeps its listeners as they are. Pure: listeners in, listeners out. Envoy needs CAP_NET_ADMIN for
transparent sockets: the injector gives the TPROXY pod's proxy that capability (webhook/inject.py), as Istio's
template.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.listener.original_src.v3 import original_src_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo
from google.protobuf import wrappers_pb2

from sailmesh.api.models import model_of
from sailmesh.api.models.networking import Sidecar
from sailmesh.generate import names
from sailmesh.generate.common import pack, socket_address
from sailmesh.generate.scope import outbound_policy
from sailmesh.generate.sniffing import http_inspector, needs_http_inspector
from sailmesh.generate.tls import needs_tls_inspector, tls_inspector
from sailmesh.snapshot.model import MeshSnapshot, ProxyView

TPROXY, REDIRECT = "TPROXY", "REDIRECT"
CAPTURED = (REDIRECT, TPROXY)
ORIGINAL_DST = "envoy.filters.listener.original_dst"
ORIGINAL_SRC = "envoy.filters.listener.original_src"
PROXY_MARK = 1337  # Istio's OriginalSrc mark: istio-iptables routes packets with it to the local table
INBOUND_PASSTHROUGH_BIND = "127.0.0.6"  # Istio's InboundPassthroughBindIpv4
INBOUND_PASSTHROUGH_BIND_V6 = "::6"  # Istio's InboundPassthroughBindIpv6
BLACKHOLE_CHAIN = "virtualOutbound-blackhole"  # Istio's VirtualOutboundBlackholeFilterChainName
CATCH_ALL_CHAIN = "virtualOutbound-catchall-tcp"  # Istio's VirtualOutboundCatchAllTCPFilterChainName
INBOUND_BLACKHOLE_CHAIN = "virtualInbound-blackhole"  # Istio's VirtualInboundBlackholeFilterChainName
INBOUND_CATCH_ALL_HTTP_CHAIN = "virtualInbound-catchall-http"  # Istio's VirtualInboundCatchAllHTTPFilterChainName
TCP_PROXY = "envoy.filters.network.tcp_proxy"
HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def interception_mode(proxy: ProxyView) -> str:
    """The proxy's declared interception mode, upper case ("" when it declares none: not captured)."""
    return str(proxy.metadata.get("INTERCEPTION_MODE", "")).upper()


def is_tproxy(proxy: ProxyView) -> bool:
    """Whether the proxy's traffic is intercepted with TPROXY (Istio's GetInterceptionMode)."""
    return interception_mode(proxy) == TPROXY


def is_captured(proxy: ProxyView) -> bool:
    """Whether istio-iptables captures the sidecar's traffic (REDIRECT or TPROXY declared in its node metadata)."""
    return proxy.type == "sidecar" and interception_mode(proxy) in CAPTURED


def is_ipv6(proxy: ProxyView) -> bool:
    """Whether the proxy's pod is IPv6-only (its address is IPv6; Istio's GetIPMode IPv6)."""
    return ":" in proxy.ip


def is_dual_stack(proxy: ProxyView) -> bool:
    """Whether the pod has IPv4 and IPv6 addresses (Istio's GetIPMode Dual: its agent declares both in INSTANCE_IPS,
    which Istio's agent does with ISTIO_DUAL_STACK)."""
    return proxy.ip_mode == "Dual"


def listener_addresses(addresses: Sequence[str], wild: str = "0.0.0.0") -> list[str]:
    """The outbound listener addresses of a non-HTTP service port: its VIPs (a host CIDR as its address; wider
    ServiceEntry CIDRs get no listener of their own: their traffic takes the catch-all), the wildcard `wild` when it
    has none."""
    if not addresses:
        return [wild]
    out = []
    for a in addresses:
        ip, _, bits = a.partition("/")
        if not bits or bits == ("128" if ":" in ip else "32"):
            out.append(ip)
    return out


def wildcard(proxy: ProxyView) -> str:
    """The captured sidecar's wildcard address (Istio's getWildcardsAndLocalHost): `::` for an IPv6-only pod."""
    return "::" if is_ipv6(proxy) else "0.0.0.0"


def localhost(proxy: ProxyView) -> str:
    """The captured sidecar's loopback address (Istio's getWildcardsAndLocalHost): `::1` for an IPv6-only pod."""
    return "::1" if is_ipv6(proxy) else "127.0.0.1"


def extra_inbound_sources(proxy: ProxyView) -> list[str]:
    """The other family's source for the inbound clusters of a dual-stack REDIRECT pod (Envoy's
    `extra_source_addresses`: an IPv6 connection leaves from ::6, an IPv4 one from 127.0.0.6; Istio's dual-stack
    InboundPassthroughBindIpv6)."""
    return [INBOUND_PASSTHROUGH_BIND_V6] if inbound_source_address(proxy) and is_dual_stack(proxy) else []


def bind_source(c: Cluster, proxy: ProxyView) -> Cluster:
    """`c` connecting from the inbound source address (and its other-family one): see inbound_source_address."""
    source = inbound_source_address(proxy)
    if source:
        c.upstream_bind_config.source_address.address = source
        c.upstream_bind_config.source_address.port_value = 0  # any port (Envoy wants the port set)
        for extra in extra_inbound_sources(proxy):
            added = c.upstream_bind_config.extra_source_addresses.add()
            added.address.address, added.address.port_value = extra, 0
    return c


def with_dual_stack_wildcards(listener: listener_pb2.Listener) -> listener_pb2.Listener:
    """A dual-stack pod's listener on an IPv4 wildcard or loopback address also listens on the IPv6 one, same port
    (Istio's getWildcardsAndLocalHost for Dual: `0.0.0.0` + `::`, `127.0.0.1` + `::1`, the second as the
    listener's additional address)."""
    sa = listener.address.socket_address
    other = {"0.0.0.0": "::", "127.0.0.1": "::1"}.get(sa.address)
    if other and not listener.additional_addresses:
        listener.additional_addresses.add().address.CopyFrom(socket_address(other, sa.port_value))
    return listener


def inbound_source_address(proxy: ProxyView) -> str:
    """The source the inbound clusters bind ("" = Envoy's choice): 127.0.0.6 (an IPv6-only pod: ::6, which
    istio-iptables puts on lo and lets through) for a REDIRECT-captured sidecar."""
    if not is_captured(proxy) or is_tproxy(proxy):
        return ""
    return INBOUND_PASSTHROUGH_BIND_V6 if is_ipv6(proxy) else INBOUND_PASSTHROUGH_BIND


def catch_all_cluster(policy: str, egress: str = "") -> str:
    """Where virtualOutbound sends a connection no listener takes: Istio's outboundTrafficPolicy ALLOW_ANY
    (the default) PassthroughCluster, or the Sidecar's egress proxy's cluster (`egress`: egress_proxy_cluster),
    REGISTRY_ONLY BlackHoleCluster (buildOutboundCatchAllNetworkFiltersOnly)."""
    if policy == "REGISTRY_ONLY":
        return names.BLACKHOLE_CLUSTER
    return egress or names.PASSTHROUGH_CLUSTER


def egress_proxy_cluster(snapshot: MeshSnapshot, proxy: ProxyView) -> str:
    """The cluster of the proxy's Sidecar `outboundTrafficPolicy.egressProxy` under ALLOW_ANY ("" without one),
    which takes PassthroughCluster's place for unknown destinations (Istio's buildCatchAllVirtualHost and
    buildOutboundCatchAllNetworkFiltersOnly): GetDestinationCluster(egressProxy, nil, 0), `outbound|PORT|SUBSET|HOST`
    with the host as written (name it by its FQDN). MeshConfig's outboundTrafficPolicy has only `mode` (as Istio's)."""
    sc = snapshot.index.sidecar(proxy)
    policy = model_of(sc, Sidecar).outbound_traffic_policy if sc is not None else None
    dest = policy.egress_proxy if policy is not None else None
    if dest is None or not dest.host or outbound_policy(snapshot, proxy) != "ALLOW_ANY":
        return ""
    port = (dest.port.number or 0) if dest.port is not None else 0
    return names.outbound_cluster(port, dest.subset or "", dest.host)


def virtual_outbound(port: int, mode: str, blackhole: lc.Filter, catch_all: lc.Filter,
                     address: str = "0.0.0.0") -> listener_pb2.Listener:
    """Istio's `virtualOutbound` for a captured sidecar: 0.0.0.0:`port`, `use_original_dst`, a chain for the
    listen port itself (`blackhole`: a connection must be redirected here, not sent here) and the catch-all
    chain (`catch_all`: a tcp_proxy to catch_all_cluster); transparent in TPROXY mode."""
    listener = listener_pb2.Listener(
        name=names.VIRTUAL_OUTBOUND, address=socket_address(address, port), traffic_direction=base_pb2.OUTBOUND,
        use_original_dst=wrappers_pb2.BoolValue(value=True),
        filter_chains=[
            lc.FilterChain(name=BLACKHOLE_CHAIN, filters=[blackhole],
                           filter_chain_match=lc.FilterChainMatch(
                               destination_port=wrappers_pb2.UInt32Value(value=port))),
            lc.FilterChain(name=CATCH_ALL_CHAIN, filters=[catch_all]),
        ],
    )
    if mode == TPROXY:
        listener.transparent.value = True
    return listener


def not_bound(listener: listener_pb2.Listener) -> listener_pb2.Listener:
    """The listener, reached only through a capture listener's hand-off (`bind_to_port: false`)."""
    listener.bind_to_port.value = False
    return listener


def original_dst(c: Cluster) -> Cluster:
    """`c` made Istio's passthrough cluster (buildDefaultPassthroughCluster): ORIGINAL_DST, CLUSTER_PROVIDED,
    the client's HTTP protocol upstream (bind_source makes the inbound one leave from 127.0.0.6)."""
    c.type = Cluster.ORIGINAL_DST
    c.lb_policy = Cluster.CLUSTER_PROVIDED
    opts = hpo.HttpProtocolOptions()
    opts.use_downstream_protocol_config.http_protocol_options.SetInParent()
    opts.use_downstream_protocol_config.http2_protocol_options.SetInParent()
    c.typed_extension_protocol_options[HTTP_OPTIONS_KEY].CopyFrom(pack(opts))
    return c


def virtual_inbound(inbound: Sequence[listener_pb2.Listener], port: int, mode: str,
                    passthrough: Sequence[lc.FilterChain] = (), address: str = "0.0.0.0") -> listener_pb2.Listener:
    """`virtualInbound` on 0.0.0.0:`port` serving every inbound listener's chains by destination port, then
    Istio's `virtualInbound-blackhole` (destination `port` itself) and the `passthrough` chains (no destination
    port: every other port, to InboundPassthroughCluster); `mode` TPROXY makes it transparent and keeps the
    client's source address (original_src)."""
    tproxy = mode == TPROXY
    listener = listener_pb2.Listener(
        name=names.VIRTUAL_INBOUND, address=socket_address(address, port), traffic_direction=base_pb2.INBOUND,
        listener_filters=[lc.ListenerFilter(name=ORIGINAL_DST, typed_config=pack(original_dst_pb2.OriginalDst()))],
    )
    if tproxy:
        listener.transparent.CopyFrom(wrappers_pb2.BoolValue(value=True))
        listener.listener_filters.append(
            lc.ListenerFilter(name=ORIGINAL_SRC, typed_config=pack(original_src_pb2.OriginalSrc(mark=PROXY_MARK))))
    seen: set[str] = set()
    for source in inbound:
        dest_port = source.address.socket_address.port_value
        for i, chain in enumerate(source.filter_chains):
            fc = lc.FilterChain()
            fc.CopyFrom(chain)
            fc.filter_chain_match.destination_port.value = dest_port
            name = fc.name or f"0.0.0.0_{dest_port}"
            fc.name = name if name not in seen else f"{name}_{i}"  # chain names are unique in a listener
            seen.add(fc.name)
            listener.filter_chains.append(fc)
    blackhole = tcp_proxy_pb2.TcpProxy(stat_prefix=names.BLACKHOLE_CLUSTER, cluster=names.BLACKHOLE_CLUSTER)
    listener.filter_chains.append(lc.FilterChain(
        name=INBOUND_BLACKHOLE_CHAIN, filter_chain_match=lc.FilterChainMatch(
            destination_port=wrappers_pb2.UInt32Value(value=port)),
        filters=[lc.Filter(name=TCP_PROXY, typed_config=pack(blackhole))]))
    listener.filter_chains.extend(passthrough)
    sniffed = [s.address.socket_address.port_value for s in inbound if needs_http_inspector(s.filter_chains)]
    if needs_tls_inspector(list(listener.filter_chains)) or sniffed or needs_http_inspector(passthrough):
        listener.listener_filters.append(tls_inspector())
        listener.continue_on_listener_filters_timeout = True
    if needs_http_inspector(passthrough):  # every port but the declared ones that do not sniff
        declared = {s.address.socket_address.port_value for s in inbound} | {port}
        listener.listener_filters.append(http_inspector(skip=declared - set(sniffed)))
    elif sniffed:  # only the ports that sniff (Istio's filter_disabled on virtualInbound's inspectors)
        listener.listener_filters.append(http_inspector(only=sniffed))
    return listener


def apply(proxy: ProxyView, listeners: list[listener_pb2.Listener], inbound_port: int,
          passthrough: Sequence[lc.FilterChain] = ()) -> list[listener_pb2.Listener]:
    """The sidecar's listeners for its interception mode (unchanged when it is not captured); `passthrough`:
    virtualInbound's chains for ports without a listener."""
    if not is_captured(proxy):
        return listeners
    mode = interception_mode(proxy)
    # served through virtualInbound (the app binds its own port), except a Sidecar ingress listener with captureMode
    # NONE, which says `bind_to_port: true` (listeners._ingress_bind_to_port) and stays a listener of its own
    inbound = [lis for lis in listeners if lis.traffic_direction == base_pb2.INBOUND
               and not (lis.HasField("bind_to_port") and lis.bind_to_port.value)]
    for lis in inbound:
        lis.bind_to_port.value = False
    out = [*listeners, virtual_inbound(inbound, inbound_port, mode, passthrough, wildcard(proxy))]
    if is_dual_stack(proxy):
        out = [with_dual_stack_wildcards(lis) for lis in out]
    return out
