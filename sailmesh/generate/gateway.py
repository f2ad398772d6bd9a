"""Gateways: which Gateways select a router proxy, their servers, and the `http.<port>` route configs."""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from google.protobuf import wrappers_pb2

from sailmesh.api.hosts import host_subset_of, hosts_match, selector_matches
from sailmesh.api.models import model_of
from sailmesh.api.models.networking import Gateway
from sailmesh.api.resource import Resource
from sailmesh.generate import names
from sailmesh.generate.httproute import RouteContext, virtual_service_routes
from sailmesh.generate.scope import virtual_services
from sailmesh.generate.tcproute import tcp_destinations
from sailmesh.snapshot.index import vs_hosts
from sailmesh.snapshot.model import MeshSnapshot, ProxyView

GATEWAY_HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC"})
GATEWAY_TCP_PROTOCOLS = frozenset({"TCP", "MONGO", "MYSQL", "REDIS"})
NO = wrappers_pb2.BoolValue(value=False)  # Istio never validates clusters in route configs


def gateways_for(snapshot: MeshSnapshot, proxy: ProxyView) -> list[Resource]:
    """Gateways whose selector matches the proxy's labels (any namespace, as Istio by default)."""
    out = []
    for gw in snapshot.of_kind("Gateway"):  # oldest first
        selector = model_of(gw, Gateway).selector
        if selector is not None and selector_matches(selector, proxy.labels):
            out.append(gw)
    return out


def http_servers(gw: Resource) -> list[tuple[int, list[str], bool]]:
    """(port number, hosts, tls.httpsRedirect) of each plain-HTTP server of a Gateway."""
    out = []
    for server in model_of(gw, Gateway).servers or ():
        port = server.port
        if port is not None and (port.protocol or "").upper() in GATEWAY_HTTP_PROTOCOLS and port.number:
            redirect = bool(server.tls is not None and server.tls.https_redirect)
            out.append((port.number, list(server.hosts or ()), redirect))
    return out


def tcp_servers(gw: Resource) -> list[tuple[int, list[str]]]:
    """(port number, hosts) of each plain TCP server of a Gateway (TCP, MONGO, MYSQL, REDIS)."""
    out = []
    for server in model_of(gw, Gateway).servers or ():
        port = server.port
        if port is not None and (port.protocol or "").upper() in GATEWAY_TCP_PROTOCOLS and port.number:
            out.append((port.number, list(server.hosts or ())))
    return out


def gateway_tcp_routes(snapshot: MeshSnapshot, proxy: ProxyView) -> dict[int, list[tuple[str, int]]]:
    """Server port -> (cluster, weight) for each Gateway TCP server with an applicable VirtualService `tcp` route.

    The oldest VirtualService bound to the Gateway whose hosts intersect the server's hosts wins;
    ports that also carry an HTTP server are left to HTTP.
    """
    suffix = snapshot.mesh.domain_suffix
    http_ports = {p for gw in gateways_for(snapshot, proxy) for p, *_ in http_servers(gw)}
    out: dict[int, list[tuple[str, int]]] = {}
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
                    out[port] = found
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


def gateway_routes(snapshot: MeshSnapshot, proxy: ProxyView) -> list[route_pb2.RouteConfiguration]:
    """`http.<port>` per Gateway server port, virtual hosts from the VirtualServices bound to the Gateway."""
    suffix = snapshot.mesh.domain_suffix
    # port -> host -> routes (routes of several VirtualServices for one host are merged in creation order)
    by_port: dict[int, dict[str, list[rc.Route]]] = {}
    redirect: set[tuple[int, str]] = set()  # (port, host) served by a server with tls.httpsRedirect
    for gw in gateways_for(snapshot, proxy):
        ref = f"{gw.namespace}/{gw.name}"
        for port, server_hosts, https_redirect in http_servers(gw):
            hosts = by_port.setdefault(port, {})
            ctx = RouteContext(snapshot, proxy, port, gateway=ref)
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
                    if https_redirect:
                        redirect.add((port, h))
    out = []
    for port, hosts in sorted(by_port.items()):
        vhosts = [
            rc.VirtualHost(
                name=names.vhost_name(h, port),
                domains=["*"] if h == "*" else [h, f"{h}:*"],
                routes=routes,
                include_request_attempt_count=True,
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
        out.append(route_pb2.RouteConfiguration(name=names.gateway_route(port), virtual_hosts=vhosts,
                                                validate_clusters=NO))
    return out
