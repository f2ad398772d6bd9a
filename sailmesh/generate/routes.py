"""Route configurations: per outbound port, the combined HTTP-proxy config, and gateway `http.<port>` configs."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from google.protobuf import wrappers_pb2

from sailmesh.api.resource import Resource
from sailmesh.api.types import selector_matches
from sailmesh.generate import names
from sailmesh.generate.httproute import RouteContext, default_route, translate_http
from sailmesh.generate.scope import (
    creation_order,
    host_matches,
    hosts_intersect,
    index_of,
    outbound_policy,
    virtual_services,
    visible_services,
    vs_hosts,
)
from sailmesh.snapshot.model import MeshSnapshot, ProxyView, Service

GATEWAY_HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC"})
NO = wrappers_pb2.BoolValue(value=False)  # Istio never validates clusters in route configs


# Routes (and virtual hosts) of one service port, reused across proxies of a scope and across snapshots while
# their inputs are the same objects: key -> (the objects whose identity is in the key, routes, {domains: vhost}).
_MEMO: OrderedDict[tuple[object, ...], tuple[tuple[object, ...], list[rc.Route], dict[tuple[str, ...], rc.VirtualHost]]]
_MEMO = OrderedDict()
MEMO_MAX = 100_000


def _memo_entry(snapshot: MeshSnapshot, proxy: ProxyView, svc: Service, port: int
                ) -> tuple[tuple[object, ...], list[rc.Route], dict[tuple[str, ...], rc.VirtualHost]]:
    """What service_routes depends on: the proxy's outbound key, the service, the VirtualServices applied to
    its host, the services (destination ports), the DestinationRules (hash policies) and the mesh settings."""
    idx = index_of(snapshot)
    vss = tuple(idx.mesh_virtual_services_for(proxy, svc.hostname))
    held = (svc, vss, snapshot.services, snapshot.of_kind("DestinationRule"), snapshot.mesh)
    key = (idx.outbound_key(proxy), port, id(svc), tuple(map(id, vss)), *map(id, held[2:]))
    hit = _MEMO.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0][:1] + hit[0][2:], held[:1] + held[2:], strict=True)) \
            and len(hit[0][1]) == len(vss) and all(a is b for a, b in zip(hit[0][1], vss, strict=True)):
        _MEMO.move_to_end(key)
        return hit
    entry = (held, _service_routes(snapshot, proxy, svc, port, vss), {})
    _MEMO[key] = entry
    if len(_MEMO) > MEMO_MAX:
        _MEMO.popitem(last=False)
    return entry


def service_routes(snapshot: MeshSnapshot, proxy: ProxyView, svc: Service, port: int) -> list[rc.Route]:
    """The routes of one service port for a sidecar: the oldest mesh VirtualService for its host, else default.

    When several VirtualServices name the same host, Istio keeps the oldest one (creationTimestamp, then
    name, then namespace) and so do we; the others are ignored for that host. Treat the list as immutable.
    """
    return _memo_entry(snapshot, proxy, svc, port)[1]


def _service_routes(snapshot: MeshSnapshot, proxy: ProxyView, svc: Service, port: int,
                    vss: tuple[Resource, ...]) -> list[rc.Route]:
    ctx = RouteContext(snapshot, proxy, port)
    for vs in vss:
        routes: list[rc.Route] = []
        for http in vs.spec.get("http") or []:
            if isinstance(http, Mapping):
                routes.extend(translate_http(vs, http, ctx))
        if routes:
            return routes
    return [default_route(names.outbound_cluster(port, "", svc.hostname), ctx, svc.hostname)]


def _http_ports(svc: Service) -> list[int]:
    return [p.port for p in svc.ports if names.is_http(p.protocol)]


def allow_any_vhost() -> rc.VirtualHost:
    """Istio's `allow_any` virtual host: unknown hosts go to PassthroughCluster (outboundTrafficPolicy ALLOW_ANY)."""
    return rc.VirtualHost(
        name=names.ALLOW_ANY_VHOST,
        domains=["*"],
        routes=[
            rc.Route(
                name=names.ALLOW_ANY_VHOST,
                match=rc.RouteMatch(prefix="/"),
                route=rc.RouteAction(cluster=names.PASSTHROUGH_CLUSTER),
            )
        ],
    )


def block_all_vhost() -> rc.VirtualHost:
    """Istio's `block_all` virtual host (outboundTrafficPolicy REGISTRY_ONLY): unknown hosts get 502."""
    return rc.VirtualHost(
        name=names.BLOCK_ALL_VHOST,
        domains=["*"],
        routes=[
            rc.Route(
                name=names.BLOCK_ALL_VHOST,
                match=rc.RouteMatch(prefix="/"),
                direct_response=rc.DirectResponseAction(status=502),
            )
        ],
    )


def _vhost(name: str, domains: list[str], routes: list[rc.Route], used: set[str],
           memo: dict[tuple[str, ...], rc.VirtualHost] | None = None) -> rc.VirtualHost | None:
    fresh = tuple(d for d in dict.fromkeys(domains) if d not in used)
    if not fresh:
        return None
    used.update(fresh)
    hit = memo.get(fresh) if memo is not None else None
    if hit is None:
        hit = rc.VirtualHost(name=name, domains=fresh, routes=routes, include_request_attempt_count=True)
        if memo is not None:
            memo[fresh] = hit
    return hit


def sidecar_routes(snapshot: MeshSnapshot, proxy: ProxyView) -> list[route_pb2.RouteConfiguration]:
    """A route config per outbound HTTP port (`9080`) and the combined `http_proxy` config."""
    suffix = snapshot.mesh.domain_suffix
    per_port: dict[int, list[rc.VirtualHost]] = {}
    used_per_port: dict[int, set[str]] = {}
    proxy_hosts: list[rc.VirtualHost] = []
    proxy_used: set[str] = set()
    for svc in visible_services(snapshot, proxy):
        aliases = names.host_aliases(svc.hostname, svc.namespace, proxy.namespace, suffix) + list(svc.addresses)
        for port in _http_ports(svc):
            _, routes, memo = _memo_entry(snapshot, proxy, svc, port)
            vname = names.vhost_name(svc.hostname, port)
            used = used_per_port.setdefault(port, set())
            vh = _vhost(vname, names.domains_with_port(aliases, port, plain=True), routes, used, memo)
            if vh is not None:
                per_port.setdefault(port, []).append(vh)
            vh = _vhost(vname, names.domains_with_port(aliases, port, plain=port == 80), routes, proxy_used, memo)
            if vh is not None:
                proxy_hosts.append(vh)
    fallback = block_all_vhost if outbound_policy(snapshot, proxy) == "REGISTRY_ONLY" else allow_any_vhost
    out = [
        route_pb2.RouteConfiguration(
            name=names.port_route(port), virtual_hosts=[*vhosts, fallback()], validate_clusters=NO
        )
        for port, vhosts in sorted(per_port.items())
    ]
    out.append(
        route_pb2.RouteConfiguration(
            name=names.HTTP_PROXY_ROUTE, virtual_hosts=[*proxy_hosts, fallback()], validate_clusters=NO
        )
    )
    return out


# ---- gateways ------------------------------------------------------------------------------------------


def gateways_for(snapshot: MeshSnapshot, proxy: ProxyView) -> list[Resource]:
    """Gateways whose selector matches the proxy's labels (any namespace, as Istio by default)."""
    out = []
    for gw in sorted(snapshot.of_kind("Gateway"), key=creation_order):
        selector = gw.spec.get("selector")
        if isinstance(selector, Mapping) and selector_matches(selector, proxy.labels):
            out.append(gw)
    return out


def http_servers(gw: Resource) -> list[tuple[int, list[str]]]:
    """(port number, hosts) of each plain-HTTP server of a Gateway."""
    out = []
    for server in gw.spec.get("servers") or []:
        if not isinstance(server, Mapping):
            continue
        port = server.get("port") if isinstance(server.get("port"), Mapping) else {}
        if str(port.get("protocol") or "").upper() in GATEWAY_HTTP_PROTOCOLS and port.get("number"):
            out.append((int(port["number"]), [str(h) for h in server.get("hosts") or []]))
    return out


def _server_host_allows(server_host: str, gw_ns: str, vs: Resource) -> str | None:
    """The host part of a server host `ns/host` if the VirtualService's namespace is allowed."""
    ns, _, host = server_host.rpartition("/")
    if ns in ("", "*") or (ns == "." and vs.namespace == gw_ns) or ns == vs.namespace:
        return host
    return None


def _narrower(a: str, b: str) -> str:
    return a if host_matches(a, b) else b


def gateway_routes(snapshot: MeshSnapshot, proxy: ProxyView) -> list[route_pb2.RouteConfiguration]:
    """`http.<port>` per Gateway server port, virtual hosts from the VirtualServices bound to the Gateway."""
    suffix = snapshot.mesh.domain_suffix
    # port -> host -> routes (routes of several VirtualServices for one host are merged in creation order)
    by_port: dict[int, dict[str, list[rc.Route]]] = {}
    for gw in gateways_for(snapshot, proxy):
        ref = f"{gw.namespace}/{gw.name}"
        for port, server_hosts in http_servers(gw):
            hosts = by_port.setdefault(port, {})
            ctx = RouteContext(snapshot, proxy, port, gateway=ref)
            for vs in virtual_services(snapshot, proxy.namespace, ref):
                matched: list[str] = []
                for sh in server_hosts:
                    allowed = _server_host_allows(sh, gw.namespace, vs)
                    if allowed is None:
                        continue
                    for h in vs_hosts(vs, suffix):
                        if hosts_intersect(h, allowed):
                            matched.append(_narrower(h, allowed))
                if not matched:
                    continue
                routes: list[rc.Route] = []
                for http in vs.spec.get("http") or []:
                    if isinstance(http, Mapping):
                        routes.extend(translate_http(vs, http, ctx))
                for h in dict.fromkeys(matched):
                    hosts.setdefault(h, []).extend(routes)
    out = []
    for port, hosts in sorted(by_port.items()):
        vhosts = [
            rc.VirtualHost(
                name=names.vhost_name(h, port),
                domains=["*"] if h == "*" else [h, f"{h}:*"],
                routes=routes,
                include_request_attempt_count=True,
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


def build_routes(snapshot: MeshSnapshot, proxy: ProxyView) -> list[route_pb2.RouteConfiguration]:
    """Every route configuration of a proxy."""
    if proxy.type == "router":
        return gateway_routes(snapshot, proxy)
    return sidecar_routes(snapshot, proxy)
