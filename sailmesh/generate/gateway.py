"""Gateways: which Gateways select a router proxy, their servers, and the `http.<port>` route configs."""

from __future__ import annotations

from dataclasses import dataclass, field

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf import wrappers_pb2

from sailmesh.api.hosts import host_subset_of, hosts_match, selector_matches
from sailmesh.api.models import model_of
from sailmesh.api.models.networking import (
    Gateway,
    ServerTLSSettings,
    TLSMatchAttributes,
    VirtualService,
)
from sailmesh.api.resource import Resource
from sailmesh.generate import credentials, gateway_tls, names, proxy_headers
from sailmesh.generate.gatewayapi.addresses import NAMESPACE_ANNOTATION as GATEWAY_NAMESPACE_ANNOTATION
from sailmesh.generate.httproute import RouteContext, config_path, destination_cluster, virtual_service_routes
from sailmesh.generate.scope import virtual_services
from sailmesh.generate.tcproute import WeightedClusters, tcp_destinations
from sailmesh.snapshot.index import gateway_ref, vs_hosts
from sailmesh.snapshot.model import MeshSnapshot, ProxyView

GATEWAY_HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC"})
GATEWAY_TCP_PROTOCOLS = frozenset({"TCP", "MONGO", "MYSQL", "REDIS"})
GATEWAY_TLS_PROTOCOLS = frozenset({"HTTPS", "TLS"})
NO = wrappers_pb2.BoolValue(value=False)  # Istio never validates clusters in route configs


def gateways_for(snapshot: MeshSnapshot, proxy: ProxyView) -> list[Resource]:
    """Gateways whose selector matches the proxy's labels (any namespace, as Istio by default; a Gateway API
    Gateway on existing Services only their namespace's, gatewayapi/addresses.py)."""
    out = []
    for gw in snapshot.of_kind("Gateway"):  # oldest first
        selector = model_of(gw, Gateway).selector
        if selector is not None and selector_matches(selector, proxy.labels) \
                and gw.annotations.get(GATEWAY_NAMESPACE_ANNOTATION, proxy.namespace) == proxy.namespace:
            out.append(gw)
    return out


def http_servers(gw: Resource) -> list[tuple[int, list[str], bool, bool]]:
    """(port number, hosts, tls.httpsRedirect, has a `tls` block) of each plain-HTTP server of a Gateway."""
    out = []
    for server in model_of(gw, Gateway).servers or ():
        port = server.port
        if port is not None and (port.protocol or "").upper() in GATEWAY_HTTP_PROTOCOLS and port.number:
            redirect = bool(server.tls is not None and server.tls.https_redirect)
            out.append((port.number, list(server.hosts or ()), redirect, server.tls is not None))
    return out


def tcp_servers(gw: Resource) -> list[tuple[int, list[str]]]:
    """(port number, hosts) of each plain TCP server of a Gateway (TCP, MONGO, MYSQL, REDIS)."""
    out = []
    for server in model_of(gw, Gateway).servers or ():
        port = server.port
        if port is not None and (port.protocol or "").upper() in GATEWAY_TCP_PROTOCOLS and port.number:
            out.append((port.number, list(server.hosts or ())))
    return out


def gateway_tcp_routes(snapshot: MeshSnapshot, proxy: ProxyView) -> dict[int, tuple[WeightedClusters, Resource]]:
    """Server port -> ((cluster, weight), the VirtualService) for each Gateway TCP server with an applicable
    VirtualService `tcp` route.

    The oldest VirtualService bound to the Gateway whose hosts intersect the server's hosts wins;
    ports that also carry an HTTP server are left to HTTP.
    """
    suffix = snapshot.mesh.domain_suffix
    http_ports = {p for gw in gateways_for(snapshot, proxy) for p, *_ in http_servers(gw)}
    out: dict[int, tuple[WeightedClusters, Resource]] = {}
    for gw in gateways_for(snapshot, proxy):
        ref = f"{gw.namespace}/{gw.name}"
        for port, server_hosts in tcp_servers(gw):
            if port in http_ports or port in out:
                continue
            ctx = RouteContext(snapshot, proxy, port, gateway=ref)
            for vs in virtual_services(snapshot, proxy.namespace, ref):
                allowed = [a for sh in server_hosts if (a := _server_host_allows(sh, gw.namespace, vs)) is not None]
                if not any(hosts_match(h, a) for h in vs_hosts(vs, suffix) for a in allowed):
                    continue
                found = tcp_destinations(vs, ctx)
                if found:
                    out[port] = (found, vs)
                    break
    return out


def _server_host_allows(server_host: str, gw_ns: str, vs: Resource) -> str | None:
    """The host part of a server host `ns/host` if the VirtualService's namespace is allowed."""
    ns, _, host = server_host.rpartition("/")
    if ns in ("", "*") or (ns == "." and vs.namespace == gw_ns) or ns == vs.namespace:
        return host
    return None


def _narrower(a: str, b: str) -> str:
    return a if host_subset_of(a, b) else b


def _server_virtual_hosts(snapshot: MeshSnapshot, proxy: ProxyView, gw: Resource, port: int,
                          server_hosts: list[str] | tuple[str, ...], tls: bool) -> dict[str, list[rc.Route]]:
    """host -> routes of the VirtualServices bound to `gw` whose hosts meet the server's hosts (creation order);
    `tls`: the server has a `tls` block (Istio's RouteOptions.IsTLS, `server.Tls != nil`)."""
    suffix = snapshot.mesh.domain_suffix
    ref = f"{gw.namespace}/{gw.name}"
    ctx = RouteContext(snapshot, proxy, port, gateway=ref, tls=tls)
    hosts: dict[str, list[rc.Route]] = {}
    for vs in virtual_services(snapshot, proxy.namespace, ref):
        matched: list[str] = []
        for sh in server_hosts:
            allowed = _server_host_allows(sh, gw.namespace, vs)
            if allowed is None:
                continue
            for h in vs_hosts(vs, suffix):
                if hosts_match(h, allowed):
                    matched.append(_narrower(h, allowed))
        if not matched:
            continue
        routes = virtual_service_routes(vs, ctx)
        for h in dict.fromkeys(matched):
            hosts.setdefault(h, []).extend(routes)
    return hosts


def _route_config(name: str, port: int, hosts: dict[str, list[rc.Route]],
                  redirect: set[tuple[int, str]], attempts: bool) -> route_pb2.RouteConfiguration:
    vhosts = [
        rc.VirtualHost(
            name=names.vhost_name(h, port),
            domains=["*"] if h == "*" else [h, f"{h}:*"],
            routes=routes,
            include_request_attempt_count=attempts,  # proxyHeaders.attemptCount (Istio: on unless disabled)
            require_tls=rc.VirtualHost.ALL if (port, h) in redirect else rc.VirtualHost.NONE,
        )
        for h, routes in sorted(hosts.items(), key=lambda kv: (kv[0] == "*", kv[0]))
    ]
    if not vhosts:
        vhosts = [
            rc.VirtualHost(
                name=f"blackhole:{port}",
                domains=["*"],
                routes=[
                    rc.Route(
                        name="default",
                        match=rc.RouteMatch(prefix="/"),
                        direct_response=rc.DirectResponseAction(status=404),
                    )
                ],
            )
        ]
    return route_pb2.RouteConfiguration(name=name, virtual_hosts=vhosts, validate_clusters=NO)


def gateway_routes(snapshot: MeshSnapshot, proxy: ProxyView) -> list[route_pb2.RouteConfiguration]:
    """`http.<port>` per Gateway HTTP server port and Istio's `https.<port>.<portName>.<gateway>.<namespace>` per
    TLS-terminating HTTPS server, virtual hosts from the VirtualServices bound to the Gateway."""
    # port -> host -> routes (routes of several VirtualServices for one host are merged in creation order)
    by_port: dict[int, dict[str, list[rc.Route]]] = {}
    redirect: set[tuple[int, str]] = set()  # (port, host) served by a server with tls.httpsRedirect
    for gw in gateways_for(snapshot, proxy):
        for port, server_hosts, https_redirect, tls in http_servers(gw):
            hosts = by_port.setdefault(port, {})
            for h, routes in _server_virtual_hosts(snapshot, proxy, gw, port, server_hosts, tls).items():
                hosts.setdefault(h, []).extend(routes)
                if https_redirect:
                    redirect.add((port, h))
    attempts = proxy_headers.attempt_count(snapshot.mesh_config)
    out = [_route_config(names.gateway_route(port), port, hosts, redirect, attempts)
           for port, hosts in sorted(by_port.items())]
    seen = {r.name for r in out}
    for gw in gateways_for(snapshot, proxy):
        for server in tls_servers(gw):
            if server.protocol != "HTTPS" or server.mode not in gateway_tls.TERMINATING or server.route in seen:
                continue
            seen.add(server.route)
            hosts = _server_virtual_hosts(snapshot, proxy, gw, server.port, server.hosts, True)
            out.append(_route_config(server.route, server.port, hosts, set(), attempts))
    return out


# ---- TLS servers ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsServer:
    """A Gateway server with `tls` on an HTTPS or TLS port."""

    gateway: Resource
    index: int
    port: int
    port_name: str
    protocol: str  # HTTPS or TLS
    hosts: tuple[str, ...]
    tls: ServerTLSSettings

    @property
    def mode(self) -> str:
        return gateway_tls.mode_of(self.tls)

    @property
    def route(self) -> str:
        """Istio's gatewayRDSRouteName for an HTTPS server: `https.<port>.<portName>.<gateway>.<namespace>`."""
        return f"https.{self.port}.{self.port_name or self.index}.{self.gateway.name}.{self.gateway.namespace}"


@dataclass(frozen=True)
class ChainSpec:
    """One filter chain of a gateway TLS port: SNI names (empty: any), TLS termination (None: passthrough), and an
    HCM on `route` (RDS) or a tcp_proxy to `clusters`."""

    server_names: tuple[str, ...]
    tls: ServerTLSSettings | None
    route: str = ""
    clusters: WeightedClusters = field(default_factory=list)
    auto_passthrough: bool = False  # AUTO_PASSTHROUGH: sni_cluster picks the cluster the SNI names
    config: str = ""  # the VirtualService of a tcp_proxy chain (Istio's `istio.config` path: httproute.config_path)


def tls_servers(gw: Resource) -> list[TlsServer]:
    """The HTTPS/TLS servers of a Gateway (with `tls`)."""
    out = []
    for i, server in enumerate(model_of(gw, Gateway).servers or ()):
        port = server.port
        protocol = (port.protocol or "").upper() if port is not None else ""
        if port is None or not port.number or protocol not in GATEWAY_TLS_PROTOCOLS or server.tls is None:
            continue
        out.append(TlsServer(gw, i, port.number, port.name or "", protocol, tuple(server.hosts or ()), server.tls))
    return out


def sni_names(hosts: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Istio's getSNIHostsForServer: the server hosts without their namespace part; none (match any) for `*`."""
    plain = [h.rpartition("/")[2] for h in hosts]
    return () if "*" in plain else tuple(dict.fromkeys(plain))


def _tls_match_applies(m: TLSMatchAttributes, server: TlsServer, proxy: ProxyView, ref: str, vs_ns: str) -> bool:
    """Istio's l4SingleMatch for a gateway: port, gateways, sourceLabels, sourceNamespace."""
    if m.port and m.port != server.port:
        return False
    if not selector_matches(m.source_labels, proxy.labels):
        return False
    if m.source_namespace and m.source_namespace != proxy.namespace:
        return False
    return not m.gateways or ref in {gateway_ref(g, vs_ns) for g in m.gateways}


def _bound_virtual_services(snapshot: MeshSnapshot, proxy: ProxyView, server: TlsServer) -> list[Resource]:
    """VirtualServices bound to the server's Gateway whose hosts meet the server's hosts."""
    gw = server.gateway
    ref = f"{gw.namespace}/{gw.name}"
    suffix = snapshot.mesh.domain_suffix
    out = []
    for vs in virtual_services(snapshot, proxy.namespace, ref):
        allowed = [a for sh in server.hosts if (a := _server_host_allows(sh, gw.namespace, vs)) is not None]
        if any(hosts_match(h, a) for h in vs_hosts(vs, suffix) for a in allowed):
            out.append(vs)
    return out


def passthrough_chains(snapshot: MeshSnapshot, proxy: ProxyView, server: TlsServer) -> list[ChainSpec]:
    """Istio's buildGatewayNetworkFiltersFromTLSRoutes: one chain per VirtualService `tls` match that applies, SNI
    names from its sniHosts (those the server's hosts allow), a tcp_proxy to its weighted destinations."""
    gw = server.gateway
    ref = f"{gw.namespace}/{gw.name}"
    ctx = RouteContext(snapshot, proxy, server.port, gateway=ref)
    allowed = [h.rpartition("/")[2] for h in server.hosts]
    out = []
    for vs in _bound_virtual_services(snapshot, proxy, server):
        for route in model_of(vs, VirtualService).tls or ():
            dests = [(destination_cluster(d.destination, vs.namespace, ctx), d.weight or 0)
                     for d in route.route or () if d.destination is not None]
            if len(dests) > 1:
                dests = [(c, w) for c, w in dests if w > 0]
            if not dests:
                continue
            for m in route.match or ():
                if not _tls_match_applies(m, server, proxy, ref, vs.namespace):
                    continue
                sni = tuple(dict.fromkeys(s for s in m.sni_hosts or () if any(hosts_match(s, a) for a in allowed)))
                if sni:
                    out.append(ChainSpec(sni, None, clusters=dests, config=config_path(vs)))
    return out


def _terminated_tcp(snapshot: MeshSnapshot, proxy: ProxyView, server: TlsServer) -> ChainSpec | None:
    """A TLS server that terminates TLS forwards the plaintext stream by the oldest bound VirtualService's `tcp`."""
    gw = server.gateway
    ctx = RouteContext(snapshot, proxy, server.port, gateway=f"{gw.namespace}/{gw.name}")
    for vs in _bound_virtual_services(snapshot, proxy, server):
        found = tcp_destinations(vs, ctx)
        if found:
            return ChainSpec(sni_names(server.hosts), server.tls, clusters=found, config=config_path(vs))
    return None


def gateway_tls_ports(snapshot: MeshSnapshot, proxy: ProxyView) -> dict[int, list[ChainSpec]]:
    """Server port -> filter chains of the gateway's HTTPS/TLS servers. Ports with a plain HTTP or TCP server keep
    those (Istio refuses servers of conflicting protocols on one port); a chain whose SNI names an earlier chain
    of the port already matches is dropped, as Istio drops duplicate filter chain matches (the oldest wins)."""
    taken = {p for gw in gateways_for(snapshot, proxy) for p, *_ in http_servers(gw)}
    taken |= set(gateway_tcp_routes(snapshot, proxy))
    out: dict[int, list[ChainSpec]] = {}
    seen: dict[int, set[tuple[str, ...]]] = {}
    for gw in gateways_for(snapshot, proxy):
        for server in tls_servers(gw):
            if server.port in taken:
                continue
            if server.mode in gateway_tls.TERMINATING:
                if server.protocol == "HTTPS":
                    chains = [ChainSpec(sni_names(server.hosts), server.tls, route=server.route)]
                else:
                    terminated = _terminated_tcp(snapshot, proxy, server)
                    chains = [terminated] if terminated is not None else []
            elif server.mode == "PASSTHROUGH":
                chains = passthrough_chains(snapshot, proxy, server)
            else:  # AUTO_PASSTHROUGH: no VirtualService, the SNI names the cluster (Istio's SNI-DNAT)
                chains = [ChainSpec(sni_names(server.hosts), None, auto_passthrough=True)]
            for chain in chains:
                key = tuple(sorted(chain.server_names))
                if key in seen.setdefault(server.port, set()):
                    continue
                seen[server.port].add(key)
                out.setdefault(server.port, []).append(chain)
    return out


def has_auto_passthrough(snapshot: MeshSnapshot, proxy: ProxyView) -> bool:
    """Whether a Gateway selecting this router has an AUTO_PASSTHROUGH server (it then needs SNI-DNAT clusters)."""
    return any(server.mode == "AUTO_PASSTHROUGH" for gw in gateways_for(snapshot, proxy) for server in tls_servers(gw))


def gateway_secrets(snapshot: MeshSnapshot, proxy: ProxyView) -> list[secret_pb2.Secret]:
    """The credentialName secrets the gateway's servers reference (`kubernetes://<name>`, `...-cacert`) and those
    of DestinationRules' client TLS (a gateway originates TLS with them), from the Secrets in the gateway proxy's
    namespace, as istiod's SDS serves them; missing ones are left out."""
    if proxy.type != "router":
        return credentials.sidecar_secrets(snapshot, proxy)
    wanted = dict.fromkeys(n for gw in gateways_for(snapshot, proxy) for server in tls_servers(gw)
                           for n in gateway_tls.credential_names(server.tls))
    wanted.update(dict.fromkeys(n for dr in snapshot.of_kind("DestinationRule")
                                for n in credentials.client_credentials(dr)))
    if not wanted:
        return []
    secrets = {r.name: r for r in snapshot.of_kind("Secret") if r.namespace == proxy.namespace}
    granted = credentials.granted_secrets(snapshot, proxy.namespace)
    # ConfigMap CAs: Istio's sds.go serves them unconditionally (the conversion checked a frontendValidation's
    # ReferenceGrant; a BackendTLSPolicy's ConfigMap is in its Service's namespace)
    def config_map(ns: str, name: str) -> Resource | None:
        return next((r for r in snapshot.of_kind("ConfigMap") if r.namespace == ns and r.name == name), None)

    return [s for n in wanted
            if (s := gateway_tls.secret_resource(n, secrets, proxy.namespace, granted, config_map)) is not None]
