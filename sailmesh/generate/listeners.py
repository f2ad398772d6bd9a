"""Listeners: the sidecar's HTTP-proxy `virtualOutbound` (a captured sidecar's catch-all and per-port outbound ones)
and per-port inbound listeners; gateway server ports."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import TypeAlias

from envoy.config.core.v3 import address_pb2, base_pb2, protocol_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.sni_cluster.v3 import sni_cluster_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import wrappers_pb2

from sailmesh.api.meshconfig import MeshConfig, TLSDefaults
from sailmesh.api.models import model_of
from sailmesh.api.models.networking import ServerTLSSettings, Sidecar
from sailmesh.generate import autoallocate, capture, names, proxy_headers, sniffing
from sailmesh.generate.alpn import is_sniffed
from sailmesh.generate.common import ads, pack, socket_address
from sailmesh.generate.endpoints import unique_ports
from sailmesh.generate.filters import Direction, FilterContext, ext_authz, http_filters
from sailmesh.generate.gateway import ChainSpec, gateway_tcp_routes, gateway_tls_ports, gateways_for, http_servers
from sailmesh.generate.gateway_tls import downstream_tls_context
from sailmesh.generate.httproute import RouteContext, config_path, route_action_defaults
from sailmesh.generate.names import gateway_bind_port
from sailmesh.generate.peer_authn import workload_policy
from sailmesh.generate.scope import egress_ports, inbound_ports, ingress_listeners, outbound_policy, visible_services
from sailmesh.generate.tcproute import egress_tcp_clusters, service_tcp_route_from, subnet_routes
from sailmesh.generate.tls import has_mesh_identity, inbound_chains, needs_tls_inspector, tls_inspector
from sailmesh.generate.upstream_l4 import tunneling_config
from sailmesh.settings import ProxyPorts
from sailmesh.snapshot.model import MeshSnapshot, ProxyView, Service
from sailmesh.telemetry import access_log, resolve, tracing
from sailmesh.telemetry import standard as telemetry

HCM: TypeAlias = hcm_pb2.HttpConnectionManager
INBOUND, OUTBOUND = proxy_headers.ListenerClass.SIDECAR_INBOUND, proxy_headers.ListenerClass.SIDECAR_OUTBOUND
GATEWAY = proxy_headers.ListenerClass.GATEWAY
ListenerClass = proxy_headers.ListenerClass
HCM_NAME = "envoy.filters.network.http_connection_manager"
TCP_PROXY_NAME = "envoy.filters.network.tcp_proxy"
TLS_TRANSPORT_SOCKET = "envoy.transport_sockets.tls"
SNI_CLUSTER = lc.Filter(name="envoy.filters.network.sni_cluster", typed_config=pack(sni_cluster_pb2.SniCluster()))
SIDECAR_INGRESS_TLS = frozenset({"SIMPLE", "MUTUAL"})  # Istio: the modes a Sidecar ingress listener supports


def http_connection_manager(
    stat_prefix: str, filters: list[hcm_pb2.HttpFilter], mesh: MeshConfig, cls: ListenerClass, *, rds: str = "",
    route_config: route_pb2.RouteConfiguration | None = None, connect: bool = False,
) -> HCM:
    """An HCM with Istio's settings for its listener class (x-request-id, XFCC and server name as the mesh config's
    proxyHeaders say, the client's address used at gateways, path normalization, websockets)."""
    h = HCM(
        stat_prefix=stat_prefix,
        codec_type=HCM.AUTO,
        http_filters=filters,
        use_remote_address=wrappers_pb2.BoolValue(value=cls is ListenerClass.GATEWAY),
        normalize_path=wrappers_pb2.BoolValue(value=True),
        path_with_escaped_slashes_action=HCM.KEEP_UNCHANGED,
        upgrade_configs=[HCM.UpgradeConfig(upgrade_type="websocket")],
        # Explicit proxying: clients send `GET http://reviews:9080/ HTTP/1.1`.
        http_protocol_options=protocol_pb2.Http1ProtocolOptions(allow_absolute_url=wrappers_pb2.BoolValue(value=True)),
    )
    if connect:  # the explicit proxy tunnels CONNECT (HTTPS_PROXY clients, TCP services)
        h.upgrade_configs.append(HCM.UpgradeConfig(upgrade_type="CONNECT"))
        # Python's http.client (urllib's proxy support) sends `CONNECT host:port HTTP/1.0`.
        h.http_protocol_options.accept_http_10 = True
    proxy_headers.apply(h, mesh, cls)
    if rds:
        h.rds.config_source.CopyFrom(ads())
        h.rds.route_config_name = rds
    elif route_config is not None:
        h.route_config.CopyFrom(route_config)
    return h


def observability(msg: HCM | tcp_proxy_pb2.TcpProxy, snapshot: MeshSnapshot, proxy: ProxyView, mode: str,
                  eff: resolve.EffectiveTelemetry) -> None:
    """Access logs and (HCMs) tracing from the proxy's Telemetry (`eff`, resolve.for_proxy) or the mesh config;
    mode CLIENT (outbound, gateway) or SERVER (inbound)."""
    msg.access_log.extend(access_log.access_logs(eff, snapshot.mesh_config, mode))
    if msg.DESCRIPTOR.full_name == HCM.DESCRIPTOR.full_name:
        tracing.configure(msg, eff, snapshot.mesh_config, mode, namespace=proxy.namespace, labels=proxy.labels,
                          workload_name=proxy.workload_name, gateway=proxy.type == "router")


def with_metrics_log(h: HCM | tcp_proxy_pb2.TcpProxy, snapshot: MeshSnapshot, proxy: ProxyView,
                     eff: resolve.EffectiveTelemetry, reporter: str, services: list[str] | None = None,
                     tunnels: bool = False) -> None:
    """Istio's standard metrics: stream this listener's requests (connections) to the agent, which counts them,
    with the Telemetry API's metric overrides of the side; TCP connections (and CONNECT `tunnels`) are also
    reported periodically while open. Call it after observability() (the user's logs skip periodic entries)."""
    policy = telemetry.metrics_policy(eff, snapshot.mesh_config,
                                      resolve.CLIENT if reporter == telemetry.SOURCE else resolve.SERVER)
    if policy is None:
        return  # no prometheus provider in effect: Istio adds no stats filter either
    tcp = h.DESCRIPTOR.full_name == tcp_proxy_pb2.TcpProxy.DESCRIPTOR.full_name
    if tcp or tunnels:
        for user_log in h.access_log:
            telemetry.exclude_periodic(user_log)
        h.access_log_options.access_log_flush_interval.FromNanoseconds(
            int(telemetry.reporting_interval(eff) * 1e9))
    if tcp:
        h.access_log.append(telemetry.tcp_access_log(reporter, services or (), policy))
    else:  # Envoy's stats access logger (CONNECT tunnels: the stream)
        h.access_log.extend(telemetry.http_metrics_logs(reporter, services or (), policy, tunnels))


def backed_services(snapshot: MeshSnapshot, proxy: ProxyView) -> list[str]:
    """FQDNs of the services in the proxy's namespace that select it (the destination_service candidates)."""
    return sorted(s.hostname for s in snapshot.index.services_in(proxy.namespace)
                  if s.selector and all(proxy.labels.get(k) == v for k, v in s.selector.items()))


def _listener(name: str, ip: str, port: int, direction: int, network_filter: lc.Filter,
              before: list[lc.Filter] | None = None) -> listener_pb2.Listener:
    return listener_pb2.Listener(
        name=name,
        address=socket_address(ip, port),
        traffic_direction=direction,
        filter_chains=[lc.FilterChain(filters=[*(before or ()), network_filter])],
    )


def virtual_outbound(snapshot: MeshSnapshot, proxy: ProxyView, port: int,
                     eff: resolve.EffectiveTelemetry) -> listener_pb2.Listener:
    """`virtualOutbound`: the explicit HTTP proxy apps reach through HTTP_PROXY, routed by `http_proxy` (RDS)."""
    filters = http_filters(FilterContext(snapshot, proxy, Direction.OUTBOUND, port, eff))
    h = http_connection_manager("outbound_0.0.0.0_" + str(port), filters, snapshot.mesh_config, OUTBOUND,
                                rds=names.HTTP_PROXY_ROUTE, connect=True)
    observability(h, snapshot, proxy, resolve.CLIENT, eff)
    with_metrics_log(h, snapshot, proxy, eff, telemetry.SOURCE, tunnels=True)
    return _listener(
        names.VIRTUAL_OUTBOUND, proxy.ip, port, base_pb2.OUTBOUND, lc.Filter(name=HCM_NAME, typed_config=pack(h))
    )


def inbound_route_config(snapshot: MeshSnapshot, proxy: ProxyView, port: int,
                         cluster: str = "") -> route_pb2.RouteConfiguration:
    """Istio's inline inbound route config: everything to `inbound|port||` (or `cluster`: the passthrough's
    InboundPassthroughCluster, port 0), no timeout."""
    cluster = cluster or names.inbound_cluster(port)
    action = rc.RouteAction(cluster=cluster)
    route_action_defaults(action, 0)
    return route_pb2.RouteConfiguration(
        name=cluster,
        validate_clusters=wrappers_pb2.BoolValue(value=False),
        virtual_hosts=[
            rc.VirtualHost(
                name=f"inbound|http|{port}",
                domains=["*"],
                routes=[rc.Route(name="default", match=rc.RouteMatch(prefix="/"), route=action,
                                 decorator=rc.Decorator(operation=tracing.inbound_operation(snapshot, proxy, port)))],
            )
        ],
    )


def inbound_listeners(snapshot: MeshSnapshot, proxy: ProxyView,
                      eff: resolve.EffectiveTelemetry) -> list[listener_pb2.Listener]:
    """One listener per container port on proxy.ip:<port>: HCM for HTTP ports, tcp_proxy otherwise, in the
    filter chains of the port's PeerAuthentication mode (tls.inbound_chains)."""
    out = []
    policy = workload_policy(snapshot, proxy.namespace, proxy.labels)
    identity = has_mesh_identity(proxy)
    mtls = snapshot.mesh_config.mesh_mtls
    services = backed_services(snapshot, proxy)
    ingress = ingress_listeners(snapshot, proxy)
    sniff_ok = capture.is_captured(proxy)  # protocol sniffing: captured sidecars (the golden keeps the rest)
    for port, _app_port, protocol in inbound_ports(snapshot, proxy):
        cluster = names.inbound_cluster(port)
        before: list[lc.Filter] = []
        http = names.is_http(protocol)
        sniffed: lc.Filter | None = None  # a sniffed port's HCM, next to its TCP chain
        if sniff_ok and is_sniffed(protocol):
            sniffed = _inbound_hcm(snapshot, proxy, port, eff, services)
        if http:
            nf = _inbound_hcm(snapshot, proxy, port, eff, services)
        else:
            tp = tcp_proxy_pb2.TcpProxy(stat_prefix=cluster, cluster=cluster)
            observability(tp, snapshot, proxy, resolve.SERVER, eff)
            with_metrics_log(tp, snapshot, proxy, eff, telemetry.DESTINATION, services)
            nf = lc.Filter(name=TCP_PROXY_NAME, typed_config=pack(tp))
            before = ext_authz.tcp_filters(snapshot, proxy)  # AuthorizationPolicy on a TCP port
        il = ingress.get(port)
        bind = (il.bind if il is not None else None) or proxy.ip  # Sidecar ingress `bind`
        listener = _listener(names.listener_name(bind, port), bind, port, base_pb2.INBOUND, nf)
        tls = il.tls if il is not None else None
        if tls is not None and (tls.mode or "").upper() in SIDECAR_INGRESS_TLS:
            chains = [_ingress_tls_chain(tls, nf, snapshot.mesh_config.tls_defaults)]
        elif sniffed is not None:
            chains = sniffing.inbound_chains(policy.for_port(port), identity, sniffed, nf, mtls,
                                             snapshot.mesh.metadata_exchange)
        else:
            chains = inbound_chains(policy.for_port(port), http, identity, nf, mtls, snapshot.mesh.metadata_exchange)
        _before_app(chains, before, nf)
        del listener.filter_chains[:]
        listener.filter_chains.extend(chains)
        if needs_tls_inspector(chains) or sniffing.needs_http_inspector(chains):
            listener.listener_filters.append(tls_inspector())
            # a server-first protocol sends nothing for the inspector to read: carry on as plaintext after the timeout
            listener.continue_on_listener_filters_timeout = True
        if sniffing.needs_http_inspector(chains):
            listener.listener_filters.append(sniffing.http_inspector())
        _ingress_bind_to_port(listener, proxy, il.capture_mode if il is not None else None)
        out.append(listener)
    return out


def _ingress_bind_to_port(listener: listener_pb2.Listener, proxy: ProxyView, capture_mode: str | None) -> None:
    """Istio's getBindToPort for a Sidecar ingress listener: captureMode NONE binds the port even in a captured pod
    (an explicit `bind_to_port: true`, which keeps the listener out of virtualInbound: capture.apply), IPTABLES
    binds nothing even in an uncaptured one (only redirected traffic could reach it), DEFAULT follows the proxy."""
    mode = (capture_mode or "DEFAULT").upper()
    if mode == "NONE" and capture.is_captured(proxy):
        listener.bind_to_port.value = True
    elif mode == "IPTABLES" and not capture.is_captured(proxy):
        listener.bind_to_port.value = False


def _inbound_hcm(snapshot: MeshSnapshot, proxy: ProxyView, port: int, eff: resolve.EffectiveTelemetry,
                 services: list[str]) -> lc.Filter:
    """An inbound port's HCM (Istio's inline inbound route config to `inbound|port||`), with its logs."""
    h = http_connection_manager(
        f"inbound_0.0.0.0_{port}", http_filters(FilterContext(snapshot, proxy, Direction.INBOUND, port, eff)),
        snapshot.mesh_config, INBOUND, route_config=inbound_route_config(snapshot, proxy, port),
    )
    observability(h, snapshot, proxy, resolve.SERVER, eff)
    with_metrics_log(h, snapshot, proxy, eff, telemetry.DESTINATION, services)
    return lc.Filter(name=HCM_NAME, typed_config=pack(h))


def _ingress_tls_chain(tls: ServerTLSSettings, nf: lc.Filter, defaults: TLSDefaults) -> lc.FilterChain:
    """A Sidecar ingress listener's `tls` (Istio: TLS termination at the sidecar for clients outside the mesh,
    SIMPLE or MUTUAL with the files it names): the port's one filter chain, TLS only, in place of the
    PeerAuthentication chains (a plaintext or mesh-mTLS client matches nothing and is closed)."""
    fc = lc.FilterChain(filter_chain_match=lc.FilterChainMatch(transport_protocol="tls"), filters=[nf])
    fc.transport_socket.name = TLS_TRANSPORT_SOCKET
    fc.transport_socket.typed_config.CopyFrom(pack(downstream_tls_context(tls, defaults)))
    return fc


def outbound_tcp_proxy(snapshot: MeshSnapshot, proxy: ProxyView, stat_prefix: str,
                       clusters: Sequence[tuple[str, int]], eff: resolve.EffectiveTelemetry) -> lc.Filter:
    """A client-side tcp_proxy to one cluster or weighted clusters, with tracing/access logs and the metrics log,
    tunnelled through HTTP CONNECT/POST when the destination's DestinationRule says so (upstream_l4)."""
    tp = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix)
    if len(clusters) == 1:
        tp.cluster = clusters[0][0]
    else:
        for c, w in clusters:
            tp.weighted_clusters.clusters.add(name=c, weight=w)
    tunnel = tunneling_config(snapshot, proxy, clusters)
    if tunnel is not None:
        tp.tunneling_config.CopyFrom(tunnel)
    observability(tp, snapshot, proxy, resolve.CLIENT, eff)
    with_metrics_log(tp, snapshot, proxy, eff, telemetry.SOURCE)
    return lc.Filter(name=TCP_PROXY_NAME, typed_config=pack(tp))


def _config_metadata(fc: lc.FilterChain, config: str) -> None:
    """Istio's `istio.config` filter chain metadata: the VirtualService a TCP/TLS chain comes from (Istio sets it on
    its TLS/TCP route chains, util.BuildConfigInfoMetadata); explain and proxy-config name it."""
    if config:
        fc.metadata.filter_metadata["istio"].update({"config": config})


def gateway_listeners(snapshot: MeshSnapshot, proxy: ProxyView,
                      eff: resolve.EffectiveTelemetry) -> list[listener_pb2.Listener]:
    """One listener per Gateway server port on the gateway's address: HCM with RDS `http.<port>` for HTTP
    servers, tcp_proxy to the VirtualService `tcp` route's clusters for TCP servers (after the AuthorizationPolicy's
    TCP filters: CUSTOM, AUDIT, DENY, ALLOW, as Istio's gateway network filters)."""
    ports = sorted({p for gw in gateways_for(snapshot, proxy) for p, *_ in http_servers(gw)})
    out = []
    for port in ports:
        h = http_connection_manager(
            f"outbound_0.0.0.0_{port}", http_filters(FilterContext(snapshot, proxy, Direction.GATEWAY, port, eff)),
            snapshot.mesh_config, GATEWAY, rds=names.gateway_route(port),
        )
        observability(h, snapshot, proxy, resolve.CLIENT, eff)
        with_metrics_log(h, snapshot, proxy, eff, telemetry.SOURCE)  # gateways report as the source, as Istio's do
        nf = lc.Filter(name=HCM_NAME, typed_config=pack(h))
        out.append(
            _listener(names.listener_name("0.0.0.0", port), proxy.ip, gateway_bind_port(port), base_pb2.OUTBOUND, nf)
        )
    authz_tcp = ext_authz.tcp_filters(snapshot, proxy)  # AuthorizationPolicy on the gateway's TCP servers
    for port, (clusters, vs) in sorted(gateway_tcp_routes(snapshot, proxy).items()):
        nf = outbound_tcp_proxy(snapshot, proxy, f"outbound_0.0.0.0_{port}", clusters, eff)
        lis = _listener(names.listener_name("0.0.0.0", port), proxy.ip, gateway_bind_port(port), base_pb2.OUTBOUND, nf)
        _config_metadata(lis.filter_chains[0], config_path(vs))
        _before_app(list(lis.filter_chains), authz_tcp, nf)
        out.append(lis)
    for port, chains in sorted(gateway_tls_ports(snapshot, proxy).items()):
        out.append(_gateway_tls_listener(snapshot, proxy, port, chains, eff))
    return out


def _gateway_tls_listener(snapshot: MeshSnapshot, proxy: ProxyView, port: int, chains: list[ChainSpec],
                          eff: resolve.EffectiveTelemetry) -> listener_pb2.Listener:
    """A gateway HTTPS/TLS port: tls_inspector, one filter chain per server (SNI server_names), terminating TLS
    into an HCM (RDS `https.<port>...`) or a tcp_proxy, or passing TLS through by SNI to a tcp_proxy (those TCP
    chains behind the AuthorizationPolicy's network filters, as Istio's gateway network filter stack)."""
    authz_tcp = ext_authz.tcp_filters(snapshot, proxy)
    listener = listener_pb2.Listener(
        name=names.listener_name("0.0.0.0", port), address=socket_address(proxy.ip, gateway_bind_port(port)),
        traffic_direction=base_pb2.OUTBOUND,
        listener_filters=[tls_inspector()],
    )
    for chain in chains:
        if chain.route:
            h = http_connection_manager(
                f"outbound_0.0.0.0_{port}", http_filters(FilterContext(snapshot, proxy, Direction.GATEWAY, port, eff)),
                snapshot.mesh_config, GATEWAY, rds=chain.route,
            )
            observability(h, snapshot, proxy, resolve.CLIENT, eff)
            with_metrics_log(h, snapshot, proxy, eff, telemetry.SOURCE)  # gateways report as the source, as Istio's do
            nf = lc.Filter(name=HCM_NAME, typed_config=pack(h))
        elif chain.auto_passthrough:
            # Istio's buildOutboundAutoPassthroughFilterStack: sni_cluster sets the cluster from the SNI
            # (`outbound_.PORT_.SUBSET_.HOST`, the router's SNI-DNAT clusters), the tcp_proxy's own is BlackHole
            nf = outbound_tcp_proxy(snapshot, proxy, names.BLACKHOLE_CLUSTER, [(names.BLACKHOLE_CLUSTER, 100)], eff)
        else:
            nf = outbound_tcp_proxy(snapshot, proxy, f"outbound_0.0.0.0_{port}", chain.clusters, eff)
        filters = [SNI_CLUSTER, nf] if chain.auto_passthrough else [nf]
        if not chain.route:  # TCP (passed-through or terminated TLS): the AuthorizationPolicy's TCP filters first
            filters = [*authz_tcp, *filters]
        fc = lc.FilterChain(filters=filters, filter_chain_match=lc.FilterChainMatch(server_names=chain.server_names))
        _config_metadata(fc, chain.config)
        if chain.tls is not None:
            fc.transport_socket.name = TLS_TRANSPORT_SOCKET
            fc.transport_socket.typed_config.CopyFrom(
                pack(downstream_tls_context(chain.tls, snapshot.mesh_config.tls_defaults)))
        listener.filter_chains.append(fc)
    return listener


def build_listeners(
    snapshot: MeshSnapshot, proxy: ProxyView, ports: ProxyPorts | None = None
) -> list[listener_pb2.Listener]:
    """Every listener of a proxy; its Telemetry is resolved once here, for all of them."""
    eff = resolve.for_proxy(snapshot, proxy)
    if proxy.type == "router":
        return gateway_listeners(snapshot, proxy, eff)
    ports = ports or ProxyPorts()
    egress = egress_listeners(snapshot, proxy, eff)
    if capture.is_captured(proxy):
        egress = captured_egress(snapshot, proxy, egress)
    outbound = captured_outbound(snapshot, proxy, ports.outbound, eff, {li.name for li in egress}) \
        if capture.is_captured(proxy) else [virtual_outbound(snapshot, proxy, ports.outbound, eff)]
    passthrough = inbound_passthrough_chains(snapshot, proxy, eff) if capture.is_captured(proxy) else []
    return capture.apply(proxy, [*outbound, *inbound_listeners(snapshot, proxy, eff), *egress], ports.inbound,
                         passthrough)


def inbound_passthrough_chains(snapshot: MeshSnapshot, proxy: ProxyView,
                               eff: resolve.EffectiveTelemetry) -> list[lc.FilterChain]:
    """Istio's virtualInbound passthrough chains (buildInboundPassthroughChains), for a captured sidecar: a
    connection to a port without an inbound listener goes on to where it was sent (InboundPassthroughCluster), in
    the Auto chains of the workload's PeerAuthentication mode (sniffing.inbound_chains; port-level modes name
    listener ports): HTTP ones `virtualInbound-catchall-http` (an HCM with Istio's inline route config
    `InboundPassthroughCluster`), TCP ones `virtualInbound`, with the access and metrics logs and the TCP
    authorization filters of any inbound TCP port."""
    cluster = names.INBOUND_PASSTHROUGH_CLUSTER
    services = backed_services(snapshot, proxy)
    tp = tcp_proxy_pb2.TcpProxy(stat_prefix=cluster, cluster=cluster)
    observability(tp, snapshot, proxy, resolve.SERVER, eff)
    with_metrics_log(tp, snapshot, proxy, eff, telemetry.DESTINATION, services)
    nf = lc.Filter(name=TCP_PROXY_NAME, typed_config=pack(tp))
    h = http_connection_manager(cluster, http_filters(FilterContext(snapshot, proxy, Direction.INBOUND, 0, eff)),
                                snapshot.mesh_config, INBOUND, route_config=inbound_route_config(snapshot, proxy, 0,
                                                                                                 cluster))
    observability(h, snapshot, proxy, resolve.SERVER, eff)
    with_metrics_log(h, snapshot, proxy, eff, telemetry.DESTINATION, services)
    hcm = lc.Filter(name=HCM_NAME, typed_config=pack(h))
    policy = workload_policy(snapshot, proxy.namespace, proxy.labels)
    chains = sniffing.inbound_chains(policy.mode, has_mesh_identity(proxy), hcm, nf, snapshot.mesh_config.mesh_mtls,
                                     snapshot.mesh.metadata_exchange)
    before = ext_authz.tcp_filters(snapshot, proxy)
    seen: dict[str, int] = {}
    for fc in chains:
        base = capture.INBOUND_CATCH_ALL_HTTP_CHAIN if fc.filters[-1] == hcm else names.VIRTUAL_INBOUND
        fc.name = base if base not in seen else f"{base}-{seen[base]}"  # chain names are unique in a listener
        seen[base] = seen.get(base, 0) + 1
    _before_app(chains, before, nf)
    return chains


def _before_app(chains: list[lc.FilterChain], before: list[lc.Filter], nf: lc.Filter) -> None:
    """Put the TCP RBAC filters `before` the tcp_proxy `nf` of every chain that serves the app."""
    for fc in chains:
        if before and fc.filters and fc.filters[-1] == nf:
            filters = [*before, *fc.filters]
            del fc.filters[:]
            fc.filters.extend(filters)


def captured_outbound(snapshot: MeshSnapshot, proxy: ProxyView, port: int, eff: resolve.EffectiveTelemetry,
                      taken: set[str]) -> list[listener_pb2.Listener]:
    """A captured sidecar's outbound listeners, as Istio's (capture.py): the catch-all `virtualOutbound` on
    0.0.0.0:`port`, and per visible service port a listener that binds nothing, reached through it by original
    destination: `0.0.0.0_PORT` for HTTP ports (an HCM with RDS `PORT`: the route config by Host, VIPs included,
    ending in allow_any or block_all), `VIP_PORT` for each ClusterIP of a TCP port (a tcp_proxy to the service's
    tcp route), `0.0.0.0_PORT` for a TCP port of a service without one (unless an HTTP port took it: the first
    service by name wins, as Istio's listener conflicts). `taken`: Sidecar egress listener names, which win."""
    catch_all = capture.catch_all_cluster(outbound_policy(snapshot, proxy),
                                          capture.egress_proxy_cluster(snapshot, proxy))
    wild = capture.wildcard(proxy)  # `::` for an IPv6-only pod
    out = [capture.virtual_outbound(
        port, capture.interception_mode(proxy),
        outbound_tcp_proxy(snapshot, proxy, names.BLACKHOLE_CLUSTER, [(names.BLACKHOLE_CLUSTER, 100)], eff),
        outbound_tcp_proxy(snapshot, proxy, catch_all, [(catch_all, 100)], eff), wild)]
    services = visible_services(snapshot, proxy)
    auto = autoallocate.for_proxy(snapshot, proxy)  # ServiceEntries' 240.240.x.y VIPs (DNS auto-allocation)
    http_ports = sorted({p.port for svc in services for p in unique_ports(svc) if names.is_http(p.protocol)})
    for p in http_ports:
        name = names.listener_name(wild, p)
        if name in taken:
            continue
        h = http_connection_manager(f"outbound_{wild}_{p}",
                                    http_filters(FilterContext(snapshot, proxy, Direction.OUTBOUND, p, eff)),
                                    snapshot.mesh_config, OUTBOUND, rds=names.port_route(p))
        observability(h, snapshot, proxy, resolve.CLIENT, eff)
        with_metrics_log(h, snapshot, proxy, eff, telemetry.SOURCE)
        taken.add(name)
        out.append(capture.not_bound(_listener(name, wild, p, base_pb2.OUTBOUND,
                                               lc.Filter(name=HCM_NAME, typed_config=pack(h)))))
    for svc in services:
        for sp in unique_ports(svc):
            if names.is_http(sp.protocol):
                continue
            for ip in capture.listener_addresses(autoallocate.addresses(svc, auto), wild):
                name = names.listener_name(ip, sp.port)
                if name in taken:
                    continue
                taken.add(name)
                clusters, vs = service_tcp_route_from(RouteContext(snapshot, proxy, sp.port), svc)
                nf = outbound_tcp_proxy(snapshot, proxy, clusters[0][0] if len(clusters) == 1 else f"outbound_{name}",
                                        clusters, eff)
                lis = capture.not_bound(_listener(name, ip, sp.port, base_pb2.OUTBOUND, nf))
                _config_metadata(lis.filter_chains[0], config_path(vs) if vs is not None else "")
                if is_sniffed(sp.protocol):
                    http = _sniffed_http(snapshot, proxy, svc, ip, sp.port, eff)
                    lis = sniffing.outbound_listener(lis, http)
                else:
                    _subnet_chains(lis, snapshot, proxy, svc, sp.port, eff)
                out.append(lis)
    return out


def _subnet_chains(lis: listener_pb2.Listener, snapshot: MeshSnapshot, proxy: ProxyView, svc: Service, port: int,
                   eff: resolve.EffectiveTelemetry) -> None:
    """Istio's runtime destination-subnet predicates on a captured TCP/TLS service listener: a filter chain per
    `tcp`/`tls` route with destinationSubnets (prefix_ranges on the original destination address; a `tls` match's
    sniHosts as server_names, read by the tls_inspector), before the listener's default chain."""
    chains = []
    for route in subnet_routes(RouteContext(snapshot, proxy, port), svc):
        ranges = [r for r in (_cidr_range(s) for s in route.subnets) if r is not None]
        if not ranges:
            continue
        stat = route.clusters[0][0] if len(route.clusters) == 1 else f"outbound_{lis.name}_subnet"
        fc = lc.FilterChain(filter_chain_match=lc.FilterChainMatch(prefix_ranges=ranges, server_names=route.sni),
                            filters=[outbound_tcp_proxy(snapshot, proxy, stat, route.clusters, eff)])
        _config_metadata(fc, config_path(route.vs))
        chains.append(fc)
    if not chains:
        return
    default = list(lis.filter_chains)
    del lis.filter_chains[:]
    lis.filter_chains.extend([*chains, *default])
    if any(fc.filter_chain_match.server_names for fc in chains):
        lis.listener_filters.append(tls_inspector())


def _cidr_range(value: str) -> address_pb2.CidrRange | None:
    """A destinationSubnets entry (an address or a CIDR) as Envoy's CidrRange; None when it is neither."""
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError:
        return None
    return address_pb2.CidrRange(address_prefix=str(iface.ip),
                                 prefix_len=wrappers_pb2.UInt32Value(value=iface.network.prefixlen))


def _sniffed_http(snapshot: MeshSnapshot, proxy: ProxyView, svc: Service, ip: str, port: int,
                  eff: resolve.EffectiveTelemetry) -> HCM:
    """The HCM of a sniffed outbound listener's HTTP chains (sniffing.py), its routes over RDS with Istio's names:
    `host:port` on the service's address (routes.sniffed_service_routes), `PORT` on the wildcard (the per-port
    route config, ending in allow_any or block_all)."""
    name = names.port_route(port) if ip == capture.wildcard(proxy) else names.vhost_name(svc.hostname, port)
    h = http_connection_manager(f"outbound_{ip}_{port}",
                                http_filters(FilterContext(snapshot, proxy, Direction.OUTBOUND, port, eff)),
                                snapshot.mesh_config, OUTBOUND, rds=name)
    observability(h, snapshot, proxy, resolve.CLIENT, eff)
    with_metrics_log(h, snapshot, proxy, eff, telemetry.SOURCE)
    return h


def captured_egress(snapshot: MeshSnapshot, proxy: ProxyView,
                    egress: list[listener_pb2.Listener]) -> list[listener_pb2.Listener]:
    """A captured sidecar's Sidecar egress listeners, as Istio's bindToPort rule: with the default captureMode the
    listener binds nothing (iptables brings the traffic through virtualOutbound) on its `bind`, else 0.0.0.0
    (`0.0.0.0_PORT`); with captureMode NONE it binds its `bind`, else 127.0.0.1. (Bound on the pod address, it
    would collide with an app listening on that port.)"""
    sc = snapshot.index.sidecar(proxy)
    specs: dict[int, tuple[str, str]] = {}  # port -> (explicit bind, captureMode) of its first egress listener
    for e in (model_of(sc, Sidecar).egress or ()) if sc is not None else ():
        if e.port is not None and e.port.number:
            specs.setdefault(e.port.number, (e.bind or "", (e.capture_mode or "").upper()))
    out, seen = [], set()
    for lis in egress:
        port = lis.address.socket_address.port_value
        bind, mode = specs.get(port, ("", ""))
        address = bind or (capture.localhost(proxy) if mode == "NONE" else capture.wildcard(proxy))
        if names.listener_name(address, port) in seen:
            continue  # two egress listeners now on one address: the first wins, as Istio's conflicts
        seen.add(names.listener_name(address, port))
        moved = listener_pb2.Listener()
        moved.CopyFrom(lis)
        moved.name = names.listener_name(address, port)
        moved.address.socket_address.address = address
        out.append(moved if mode == "NONE" else capture.not_bound(moved))
    return out


def egress_listeners(snapshot: MeshSnapshot, proxy: ProxyView,
                     eff: resolve.EffectiveTelemetry) -> list[listener_pb2.Listener]:
    """Sidecar egress listeners with a `port` (Istio's explicit egress listeners, what captureMode NONE apps call):
    `<bind>_<port>` on the bind address (default the proxy's), HTTP ports routed by the port's route config
    (RDS `<port>`), other ports tcp_proxied to the one service of their hosts with that port (tcp routes applied)."""
    out = []
    for bind, port, protocol, hosts in egress_ports(snapshot, proxy):
        if names.is_http(protocol):
            h = http_connection_manager(f"outbound_{bind}_{port}",
                                        http_filters(FilterContext(snapshot, proxy, Direction.OUTBOUND, port, eff)),
                                        snapshot.mesh_config, OUTBOUND, rds=names.port_route(port))
            observability(h, snapshot, proxy, resolve.CLIENT, eff)
            with_metrics_log(h, snapshot, proxy, eff, telemetry.SOURCE)
            nf = lc.Filter(name=HCM_NAME, typed_config=pack(h))
        else:
            clusters = egress_tcp_clusters(snapshot, proxy, port, hosts)
            if not clusters:
                continue
            nf = outbound_tcp_proxy(snapshot, proxy, f"outbound_{bind}_{port}", clusters, eff)
        out.append(_listener(names.listener_name(bind, port), bind, port, base_pb2.OUTBOUND, nf))
    return out
