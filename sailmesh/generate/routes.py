"""Route configurations: a sidecar's per-port configs and its combined HTTP-proxy config (gateways: gateway.py)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from google.protobuf import any_pb2, wrappers_pb2

from sailmesh.api.resource import Resource
from sailmesh.generate import autoallocate, names, proxy_headers
from sailmesh.generate.alpn import is_sniffed
from sailmesh.generate.capture import egress_proxy_cluster, is_captured, listener_addresses, wildcard
from sailmesh.generate.common import Prepacked
from sailmesh.generate.delegate import delegates_of, is_root
from sailmesh.generate.endpoints import unique_ports
from sailmesh.generate.gateway import gateway_routes
from sailmesh.generate.httproute import (
    RouteContext,
    config_path,
    default_route,
    route_action_defaults,
    virtual_service_routes,
)
from sailmesh.generate.memo import Memos, same_objects
from sailmesh.generate.scope import egress_http_ports, outbound_policy, visible_services
from sailmesh.generate.tcproute import service_tcp_route_from
from sailmesh.generate.upstream_l4 import tunneling_config
from sailmesh.snapshot.model import MeshSnapshot, ProxyView, Service
from sailmesh.xds.types import ROUTE
from sailmesh.xds.wire import length_delimited, varint_field

NO = wrappers_pb2.BoolValue(value=False)  # Istio never validates clusters in route configs


# A sidecar's route configurations are assembled from serialized virtual hosts: a upb message costs 1-3 KiB of
# memory however small it is, and without Sidecar scoping every namespace holds a virtual host per service.
_VH = rc.VirtualHost.DESCRIPTOR.fields_by_name
_RC = route_pb2.RouteConfiguration.DESCRIPTOR.fields_by_name
_VH_NAME, _VH_DOMAINS, _VH_ROUTES = _VH["name"].number, _VH["domains"].number, _VH["routes"].number
_VH_ATTEMPTS = _VH["include_request_attempt_count"].number
_RC_NAME, _RC_VHOSTS = _RC["name"].number, _RC["virtual_hosts"].number
_RC_NO_VALIDATE = length_delimited(_RC["validate_clusters"].number, NO.SerializeToString())


# (service, its VirtualServices, services, DestinationRules, mesh): compared by identity only.
Held = tuple[object, tuple[object, ...], object, object, object]


class MemoEntry:
    """The routes of one service port as some proxies read them, serialized, and its virtual hosts."""

    __slots__ = ("held", "routes", "vhosts")

    def __init__(self, held: Held, routes: bytes):
        self.held = held  # the objects whose identity is in the key (kept alive so ids are not reused)
        self.routes = routes  # VirtualHost.routes fields
        # (attempt count header, domains) -> the virtual host as a RouteConfiguration field
        self.vhosts: dict[tuple[bool, tuple[str, ...]], bytes] = {}


def _route_reader(snapshot: MeshSnapshot, proxy: ProxyView, svc: Service, vss: tuple[Resource, ...],
                  outbound_key: Hashable) -> Hashable:
    """What a service port's routes read from the proxy (the part of the memo key that depends on it).

    Routes read the client only through match sourceLabels/sourceNamespace; otherwise only through the
    DestinationRules its namespace sees for the destinations (hash policies). So without client matches, the
    sidecars of every namespace that sees the same rules share the routes (translated once, not per namespace).
    """
    idx = snapshot.index
    hosts: dict[str, None] = {svc.hostname: None}
    for vs in vss:  # a root's delegates (after it in vss) are read like it
        reads_client, dest_hosts = idx.route_inputs(vs)
        if reads_client:
            return ("client", outbound_key)
        hosts.update(dict.fromkeys(dest_hosts))
    services = snapshot.services
    return ("rules", *(id(idx.destination_rule(proxy.namespace, services[h], proxy.labels))
                       for h in hosts if h in services))


def _memo_entry(snapshot: MeshSnapshot, proxy: ProxyView, svc: Service, port: int, memos: Memos,
                outbound_key: Hashable | None = None) -> MemoEntry:
    """The routes of one service port, reused across proxies and snapshots (memos.routes) while their inputs
    are the same objects: what they read from the proxy (_route_reader), the service, the VirtualServices
    applied to its host, the services (destination ports), the DestinationRules (hash policies) and the mesh."""
    idx = snapshot.index
    memo: OrderedDict[tuple[object, ...], MemoEntry] = memos.routes
    okey = idx.outbound_key(proxy) if outbound_key is None else outbound_key
    vss = tuple(idx.mesh_virtual_services_for(proxy, svc.hostname))
    # the delegates of root VirtualServices: their routes are part of the root's (a changed delegate is a new object)
    read = vss + tuple(d for vs in vss if is_root(vs) for d in delegates_of(snapshot, vs) if d is not None)
    held = (svc, read, snapshot.services, snapshot.of_kind("DestinationRule"), snapshot.mesh)
    reader = _route_reader(snapshot, proxy, svc, read, okey)
    key = (reader, port, id(svc), tuple(map(id, read)), *map(id, held[2:]))
    hit = memo.get(key)
    if hit is not None:  # the entry holds the objects whose ids are in its key: equal ids, the same objects
        memo.move_to_end(key)
        return hit
    entry = MemoEntry(held, _routes_field(_service_routes(snapshot, proxy, svc, port, vss)))
    memo[key] = entry
    if len(memo) > memos.max_entries:
        memo.popitem(last=False)
    memos.routes_inserted(lambda: _current_in(snapshot))
    return entry


def _current_in(snapshot: MeshSnapshot) -> Callable[[MemoEntry], bool]:
    """Whether a memo entry's inputs are all `snapshot`'s: its services, rules and mesh objects, and each of its
    VirtualServices (an entry of a superseded one can never be hit again: its key holds that object's id)."""
    services, rules, mesh = snapshot.services, snapshot.of_kind("DestinationRule"), snapshot.mesh
    live = {id(vs) for vs in snapshot.of_kind("VirtualService")}

    def current(entry: MemoEntry) -> bool:
        _svc, read, held_services, held_rules, held_mesh = entry.held
        return (held_services is services and held_rules is rules and held_mesh is mesh
                and all(id(vs) in live for vs in read))

    return current


def _domains(snapshot: MeshSnapshot, proxy: ProxyView, svc: Service, port: int,
             memos: Memos, auto: Mapping[str, str] | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(per-port route config domains, http_proxy domains) of a service port, deduplicated; they depend on the
    proxy only through whether it is in the service's namespace (the short-name alias) and, for a proxy using DNS
    auto-allocation (`auto`: autoallocate.for_proxy), the service's 240.240.x.y address (Istio's
    GetAddressForProxy: a Host header naming the VIP routes too)."""
    same_ns = proxy.namespace == svc.namespace
    vips = autoallocate.addresses(svc, auto) if auto else svc.addresses
    key = ("domains", id(svc), port, same_ns, id(snapshot.mesh), *(() if vips is svc.addresses else vips))
    held = (svc, snapshot.mesh)
    hit: tuple[tuple[str, ...], tuple[str, ...]] | None = memos.domains.get(key, held)
    if hit is None:
        aliases = names.host_aliases(svc.hostname, svc.namespace, proxy.namespace, snapshot.mesh.domain_suffix)
        aliases += list(vips)
        hit = (tuple(dict.fromkeys(names.domains_with_port(aliases, port, plain=True))),
               tuple(dict.fromkeys(names.domains_with_port(aliases, port, plain=port == 80))))
        memos.domains.put(key, held, hit)
    return hit


def _service_routes(snapshot: MeshSnapshot, proxy: ProxyView, svc: Service, port: int,
                    vss: tuple[Resource, ...]) -> list[rc.Route]:
    """The routes of one service port for a sidecar: the oldest mesh VirtualService for its host, else default.

    When several VirtualServices name the same host, Istio keeps the oldest one (creationTimestamp, then
    name, then namespace) and so do we; the others are ignored for that host.
    """
    ctx = RouteContext(snapshot, proxy, port)
    for vs in vss:
        routes = virtual_service_routes(vs, ctx)
        if routes:
            return routes
    return [default_route(names.outbound_cluster(port, "", svc.hostname), ctx, svc.hostname)]


def _http_ports(svc: Service, sniffed: bool = False) -> list[int]:
    """The ports whose virtual hosts the per-port and http_proxy route configs hold: HTTP ones and, for a captured
    sidecar (`sniffed`), those whose protocol it detects (Istio: IsHTTP, or protocol sniffing for the port)."""
    return [p.port for p in unique_ports(svc) if names.is_http(p.protocol) or (sniffed and is_sniffed(p.protocol))]


def sniffed_service_routes(snapshot: MeshSnapshot, proxy: ProxyView, memos: Memos,
                           okey: Hashable) -> list[Prepacked]:
    """A captured sidecar's route config `host:port` for each sniffed service port with a listener on the service's
    own address (Istio's buildSidecarOutboundHTTPRouteConfig for a `host:port` name: of the port's virtual hosts the
    service's alone, its domains `*` since the address already chose it, no allow_any/block_all). A service without
    an address is served on the wildcard listener, whose `PORT` route config holds its virtual host."""
    auto = autoallocate.for_proxy(snapshot, proxy)
    wild = wildcard(proxy)
    attempts = proxy_headers.attempt_count(snapshot.mesh_config)
    out = []
    for svc in visible_services(snapshot, proxy):
        if wild in listener_addresses(autoallocate.addresses(svc, auto), wild):
            continue
        for p in unique_ports(svc):
            if is_sniffed(p.protocol):
                name = names.vhost_name(svc.hostname, p.port)
                entry = _memo_entry(snapshot, proxy, svc, p.port, memos, okey)
                vhost = _vhost(name, ("*",), entry.routes, set(), attempts)
                out.append(_route_config(name, [vhost] if vhost is not None else []))
    return out


def allow_any_vhost(egress: str = "", attempts: bool = True) -> rc.VirtualHost:
    """Istio's `allow_any` virtual host: unknown hosts go to PassthroughCluster (outboundTrafficPolicy ALLOW_ANY),
    or to the Sidecar's egress proxy's cluster (`egress`: capture.egress_proxy_cluster); with
    `x-envoy-attempt-count` unless proxyHeaders.attemptCount is disabled (Istio's buildCatchAllVirtualHost)."""
    cluster = egress or names.PASSTHROUGH_CLUSTER
    action = rc.RouteAction(cluster=cluster)
    route_action_defaults(action, 0)  # no timeout, as Istio's allow_any route
    return rc.VirtualHost(
        name=names.ALLOW_ANY_VHOST,
        domains=["*"],
        routes=[
            connect_route(cluster, names.ALLOW_ANY_VHOST),
            rc.Route(name=names.ALLOW_ANY_VHOST, match=rc.RouteMatch(prefix="/"), route=action),
        ],
        include_request_attempt_count=attempts,
    )


def connect_route(cluster: str | list[tuple[str, int]], name: str, tunnel: str = "") -> rc.Route:
    """CONNECT tunnelling (HTTPS_PROXY clients, TCP services) to a cluster (or weighted clusters): the sidecar
    terminates the CONNECT and sends the bytes on. With a DestinationRule `tunnel` (`tunnel`: its
    `targetHost:targetPort`) the CONNECT goes on to the cluster instead, naming the rule's target (Envoy proxies a
    CONNECT it does not terminate)."""
    upgrade = rc.RouteAction.UpgradeConfig(upgrade_type="CONNECT")
    if tunnel:
        action = rc.RouteAction(upgrade_configs=[upgrade], host_rewrite_literal=tunnel)
    else:
        upgrade.connect_config.SetInParent()
        action = rc.RouteAction(upgrade_configs=[upgrade])
    if isinstance(cluster, str):
        action.cluster = cluster
    elif len(cluster) == 1:
        action.cluster = cluster[0][0]
    else:
        for c, w in cluster:
            action.weighted_clusters.clusters.add(name=c).weight.value = w
    route_action_defaults(action, 0)
    return rc.Route(name=name, match=rc.RouteMatch(connect_matcher={}), route=action)


def _tcp_services(snapshot: MeshSnapshot, proxy: ProxyView) -> list[Service]:
    """The visible services with a non-HTTP port (TCP, TLS, ...)."""
    return [svc for svc in visible_services(snapshot, proxy)
            if any(not names.is_http(p.protocol) for p in unique_ports(svc))]


def _tcp_vhosts(snapshot: MeshSnapshot, proxy: ProxyView, services: list[Service], used: set[str]) -> list[bytes]:
    """`http_proxy` virtual hosts that tunnel CONNECT `host:port` to non-HTTP service ports (TCP, TLS, ...)."""
    attempts = proxy_headers.attempt_count(snapshot.mesh_config)
    out = []
    for svc in services:
        tcp_ports = [p for p in unique_ports(svc) if not names.is_http(p.protocol)]
        aliases = names.host_aliases(svc.hostname, svc.namespace, proxy.namespace, snapshot.mesh.domain_suffix)
        for p in tcp_ports:
            clusters, vs = service_tcp_route_from(RouteContext(snapshot, proxy, p.port), svc)
            tunnel = tunneling_config(snapshot, proxy, clusters)  # a CONNECT tunnel only: POST is reported
            route = connect_route(clusters, "connect", tunnel.hostname if tunnel and not tunnel.use_post else "")
            if vs is not None:  # which VirtualService (explain and proxy-config name it, as for HTTP routes)
                route.metadata.filter_metadata["istio"].update({"config": config_path(vs)})
            vname = names.vhost_name(svc.hostname, p.port)
            vh = _vhost(vname, names.domains_with_port([*aliases, *svc.addresses], p.port, plain=False),
                        _routes_field([route]), used, attempts)
            if vh is not None:
                out.append(vh)
    return out


def block_all_vhost(attempts: bool = True) -> rc.VirtualHost:
    """Istio's `block_all` virtual host (outboundTrafficPolicy REGISTRY_ONLY): unknown hosts get 502 (Istio's
    buildCatchAllVirtualHost, with `x-envoy-attempt-count` like allow_any)."""
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
        include_request_attempt_count=attempts,
    )


def _routes_field(routes: list[rc.Route]) -> bytes:
    """Routes serialized as VirtualHost.routes fields."""
    return b"".join(length_delimited(_VH_ROUTES, r.SerializeToString(deterministic=True)) for r in routes)


def _vhost(name: str, domains: list[str] | tuple[str, ...], routes: bytes, used: set[str], attempts: bool,
           memo: dict[tuple[bool, tuple[str, ...]], bytes] | None = None) -> bytes | None:
    """A virtual host with the domains not used yet, as a RouteConfiguration.virtual_hosts field (None: no domain
    left). `routes` are VirtualHost.routes fields; a tuple of `domains` must be free of duplicates; `attempts`: the
    mesh config's proxyHeaders.attemptCount (proxy_headers.attempt_count)."""
    if isinstance(domains, tuple) and used.isdisjoint(domains):
        fresh = domains  # the usual case: no earlier virtual host took any of them
    else:
        fresh = tuple(d for d in dict.fromkeys(domains) if d not in used)
        if not fresh:
            return None
    used.update(fresh)
    hit = memo.get((attempts, fresh)) if memo is not None else None
    if hit is None:
        body = b"".join((length_delimited(_VH_NAME, name.encode()),
                         *(length_delimited(_VH_DOMAINS, d.encode()) for d in fresh),
                         routes, varint_field(_VH_ATTEMPTS, 1) if attempts else b""))
        hit = length_delimited(_RC_VHOSTS, body)
        if memo is not None:
            memo[(attempts, fresh)] = hit
    return hit


def _fallback_field(policy: str, egress: str = "", attempts: bool = True) -> bytes:
    """The last virtual host (`allow_any` or `block_all`) as a RouteConfiguration.virtual_hosts field; `egress`: the
    Sidecar's egress proxy's cluster, in place of PassthroughCluster; `attempts`: proxy_headers.attempt_count."""
    if policy == "REGISTRY_ONLY":
        return _BLOCK_ALL_FIELD[attempts]
    if egress:
        return length_delimited(_RC_VHOSTS, allow_any_vhost(egress, attempts).SerializeToString(deterministic=True))
    return _ALLOW_ANY_FIELD[attempts]


_ALLOW_ANY_FIELD = {a: length_delimited(_RC_VHOSTS, allow_any_vhost(attempts=a).SerializeToString(deterministic=True))
                    for a in (False, True)}
_BLOCK_ALL_FIELD = {a: length_delimited(_RC_VHOSTS, block_all_vhost(a).SerializeToString(deterministic=True))
                    for a in (False, True)}


def _route_config(name: str, vhosts: list[bytes]) -> Prepacked:
    """A RouteConfiguration assembled from serialized virtual hosts, packed (`validate_clusters: false`).

    Its content is the name and the virtual host fields, which are all its bytes: scopes that assemble equal
    ones (sidecars of one namespace in other localities, namespaces with no service of their own) share one
    resource through the generator's interning. Mostly the same bytes objects (the virtual host memo), so
    hashing and comparing the content is cheap."""
    fields = tuple(vhosts)
    value = b"".join((length_delimited(_RC_NAME, name.encode()), *fields, _RC_NO_VALIDATE))
    return Prepacked(name, any_pb2.Any(type_url=ROUTE, value=value), (name, fields))


# One service port's virtual hosts in a scope's route configurations: (hostname, port, the domains of its
# per-port virtual host, that virtual host, the domains of its http_proxy virtual host, that one); None: no domain.
ScopeItem = tuple[str, int, tuple[str, ...] | None, bytes | None, tuple[str, ...] | None, bytes | None]


class ScopeRoutes:
    """The service virtual hosts a scope's route configurations were assembled from, and the inputs they were
    assembled at: the next snapshot that only changed VirtualServices of plain service hosts reuses the rest."""

    __slots__ = ("items", "others", "services", "tcp_services", "vss")

    def __init__(self, snapshot: MeshSnapshot, items: list[ScopeItem], tcp_services: list[Service]) -> None:
        self.items = items
        self.tcp_services = tcp_services
        self.services = snapshot.services
        self.vss = snapshot.of_kind("VirtualService")
        self.others = _other_inputs(snapshot)


def _other_inputs(snapshot: MeshSnapshot) -> tuple[object, ...]:
    """Every input of the route configurations but the VirtualServices (compared by identity)."""
    return (snapshot.mesh, snapshot.mesh_config,
            *(v for k, v in sorted(snapshot.config.items()) if k != "VirtualService"))


def _changed_vss(memos: Memos, old_vss: Sequence[Resource], vss: Sequence[Resource]) -> list[Resource]:
    """The VirtualServices in one list and not the other (by identity), found once per pair of lists for every scope
    (each of 25 scopes compared the two lists of 1,000 on every VirtualService push)."""
    key = ("vss", id(old_vss), id(vss))
    hit: list[Resource] | None = memos.changes.get(key, (old_vss, vss))
    if hit is None:
        old, new = {id(v): v for v in old_vss}, {id(v): v for v in vss}
        hit = [v for k, v in old.items() if k not in new] + [v for k, v in new.items() if k not in old]
        memos.changes.put(key, (old_vss, vss), hit)
    return hit


def _changed_hosts(snapshot: MeshSnapshot, prev: ScopeRoutes, memos: Memos) -> set[str] | None:
    """The service hosts whose virtual hosts may differ from `prev`'s, or None when anything else may have
    changed: other inputs, a root or delegate VirtualService, a wildcard host, or many VirtualServices."""
    if prev.services is not snapshot.services:
        return None
    if not same_objects(_other_inputs(snapshot), prev.others):
        return None
    vss = snapshot.of_kind("VirtualService")
    if vss is prev.vss:
        return set()
    changed = _changed_vss(memos, prev.vss, vss)
    if len(changed) > 64:
        return None
    hosts: set[str] = set()
    for vs in changed:
        vs_hosts = snapshot.index.hosts_of(vs)
        if not vs_hosts or is_root(vs) or any("*" in h for h in vs_hosts):
            return None
        hosts.update(vs_hosts)
    return hosts


def _service_vhosts(snapshot: MeshSnapshot, proxy: ProxyView, memos: Memos,
                    okey: Hashable) -> tuple[list[ScopeItem], list[Service]]:
    """Every visible service port's virtual hosts (and the services with TCP ports), reusing the scope's previous
    ones where their inputs are the same (a VirtualService change rebuilds its hosts only, not the scope's
    thousand others)."""
    prev: ScopeRoutes | None = memos.route_scopes.get(okey)
    hosts = _changed_hosts(snapshot, prev, memos) if prev is not None else None
    attempts = proxy_headers.attempt_count(snapshot.mesh_config)  # a mesh config change rebuilds every item
    if prev is not None and hosts is not None:
        items, tcp_services = list(prev.items), prev.tcp_services
        for k, (hostname, port, port_domains, _old, proxy_domains, _old_proxy) in enumerate(items):
            if hostname in hosts:
                svc = snapshot.services[hostname]
                entry = _memo_entry(snapshot, proxy, svc, port, memos, okey)
                vname = names.vhost_name(hostname, port)
                items[k] = (hostname, port, port_domains, _vh(vname, port_domains, entry, attempts),
                            proxy_domains, _vh(vname, proxy_domains, entry, attempts))
    else:
        items, tcp_services = [], _tcp_services(snapshot, proxy)
        used_per_port: dict[int, set[str]] = {}
        proxy_used: set[str] = set()
        auto = autoallocate.for_proxy(snapshot, proxy)  # DNS auto-allocated VIPs (the outbound key holds the flags)
        sniffed = is_captured(proxy)  # its undeclared ports are sniffed: HTTP virtual hosts too (the key holds it)
        for svc in visible_services(snapshot, proxy):
            for port in _http_ports(svc, sniffed):
                entry = _memo_entry(snapshot, proxy, svc, port, memos, okey)
                vname = names.vhost_name(svc.hostname, port)
                port_domains, proxy_domains = _domains(snapshot, proxy, svc, port, memos, auto)
                used = used_per_port.setdefault(port, set())
                fresh_port = _fresh(port_domains, used)
                fresh_proxy = _fresh(proxy_domains, proxy_used)
                items.append((svc.hostname, port, fresh_port, _vh(vname, fresh_port, entry, attempts),
                              fresh_proxy, _vh(vname, fresh_proxy, entry, attempts)))
    scopes = memos.route_scopes
    scopes[okey] = current = ScopeRoutes(snapshot, items, tcp_services)
    scopes.move_to_end(okey)
    if len(scopes) > memos.max_scopes:
        scopes.popitem(last=False)
    memos.scope_inserts += 1
    if memos.scope_inserts >= len(scopes) // 8 + 64:  # now and then (O(1) per insert): drop the scopes whose
        memos.scope_inserts = 0  # services or other inputs were superseded (never reusable; they pin old config)
        for key in [k for k, v in scopes.items()
                    if v.services is not current.services or not same_objects(v.others, current.others)]:
            del scopes[key]
    return items, tcp_services


def _vh(vname: str, domains: tuple[str, ...] | None, entry: MemoEntry, attempts: bool) -> bytes | None:
    """A service port's virtual host with exactly these (fresh) domains, from the entry's memo."""
    return None if domains is None else _vhost(vname, domains, entry.routes, set(), attempts, entry.vhosts)


def _fresh(domains: tuple[str, ...], used: set[str]) -> tuple[str, ...] | None:
    """The domains no earlier virtual host took (marked taken now), None when none is left."""
    if used.isdisjoint(domains):
        fresh = domains  # the usual case: the same tuple object (the virtual host memo is keyed by it)
    else:
        fresh = tuple(d for d in dict.fromkeys(domains) if d not in used)
    used.update(fresh)
    return fresh or None


def sidecar_routes(snapshot: MeshSnapshot, proxy: ProxyView, memos: Memos, *, port_routes: bool = True,
                   http_proxy: bool = True) -> list[Prepacked]:
    """A route config per outbound HTTP port (`9080`) and the combined `http_proxy` config, packed (only the
    ones asked for: the generator caches them as two parts; their virtual hosts are built once per scope)."""
    per_port: dict[int, list[bytes]] = {}
    used_per_port: dict[int, set[str]] = {}
    proxy_hosts: list[bytes] = []
    proxy_used: set[str] = set()
    items, tcp_services = _service_vhosts(snapshot, proxy, memos, snapshot.index.outbound_key(proxy))
    extra = snapshot.index.non_service_hosts(proxy)
    track = bool(extra or tcp_services)  # the domains taken matter only to virtual hosts added after these
    for _host, port, port_domains, vh, proxy_domains, pvh in items:
        if port_domains is not None and vh is not None:
            if track:
                used_per_port.setdefault(port, set()).update(port_domains)
            per_port.setdefault(port, []).append(vh)
        if proxy_domains is not None and pvh is not None:
            if track:
                proxy_used.update(proxy_domains)
            proxy_hosts.append(pvh)
    for port in egress_http_ports(snapshot, proxy):  # a Sidecar egress listener's RDS must exist
        per_port.setdefault(port, [])
    _non_service_hosts(snapshot, proxy, extra, per_port, used_per_port, proxy_hosts, proxy_used)
    proxy_hosts.extend(_tcp_vhosts(snapshot, proxy, tcp_services, proxy_used))
    fallback = _fallback_field(outbound_policy(snapshot, proxy), egress_proxy_cluster(snapshot, proxy),
                               proxy_headers.attempt_count(snapshot.mesh_config))
    out = [_route_config(names.port_route(port), [*vhosts, fallback])
           for port, vhosts in sorted(per_port.items()) if port_routes]
    if port_routes and is_captured(proxy):
        out += sniffed_service_routes(snapshot, proxy, memos, snapshot.index.outbound_key(proxy))
    if http_proxy:
        out.append(_route_config(names.HTTP_PROXY_ROUTE, [*proxy_hosts, fallback]))
    return out


def _non_service_hosts(
    snapshot: MeshSnapshot, proxy: ProxyView, extra: list[tuple[Resource, list[str]]],
    per_port: dict[int, list[bytes]], used_per_port: dict[int, set[str]], proxy_hosts: list[bytes],
    proxy_used: set[str],
) -> None:
    """Virtual hosts for VirtualService hosts that are no service (Istio adds them on every HTTP port); `extra`:
    SnapshotIndex.non_service_hosts.

    Wildcard hosts only apply to the services they match, and `*` would shadow allow_any: both are skipped.
    """
    ports = sorted(per_port) or [80]
    attempts = proxy_headers.attempt_count(snapshot.mesh_config)
    for vs, hosts in extra:
        for h in hosts:
            for port in ports:
                ctx = RouteContext(snapshot, proxy, port)
                translated = virtual_service_routes(vs, ctx)
                if not translated:
                    continue
                routes = _routes_field(translated)
                vname = names.vhost_name(h, port)
                vh = _vhost(vname, names.domains_with_port([h], port, plain=True), routes,
                            used_per_port.setdefault(port, set()), attempts)
                if vh is not None:
                    per_port.setdefault(port, []).append(vh)
                vh = _vhost(vname, names.domains_with_port([h], port, plain=port == 80), routes, proxy_used,
                            attempts)
                if vh is not None:
                    proxy_hosts.append(vh)


def build_port_routes(snapshot: MeshSnapshot, proxy: ProxyView,
                      memos: Memos) -> list[route_pb2.RouteConfiguration] | list[Prepacked]:
    """Every route configuration of a proxy but a sidecar's `http_proxy` one (gateways: all of theirs)."""
    if proxy.type == "router":
        return gateway_routes(snapshot, proxy)
    return sidecar_routes(snapshot, proxy, memos, http_proxy=False)


def build_http_proxy_route(snapshot: MeshSnapshot, proxy: ProxyView, memos: Memos) -> list[Prepacked]:
    """A sidecar's `http_proxy` route configuration (gateways have none)."""
    if proxy.type == "router":
        return []
    return sidecar_routes(snapshot, proxy, memos, port_routes=False)
