"""VirtualService `tcp` routes (and `tls` routes on TLS ports) -> the cluster choice of a CONNECT tunnel (or a
gateway's tcp_proxy), and the destination-subnet routes a captured sidecar matches on the original destination
address (`subnet_routes`: Istio's runtime predicates, filter chains with prefix_ranges)."""

from __future__ import annotations

from dataclasses import dataclass

from sailmesh.api.hosts import hosts_match, resolve_short_name, selector_matches
from sailmesh.api.models import model_of
from sailmesh.api.models.networking import L4MatchAttributes, TLSMatchAttributes, TLSRoute, VirtualService
from sailmesh.api.resource import Resource
from sailmesh.generate import names
from sailmesh.generate.httproute import RouteContext, destination_cluster
from sailmesh.snapshot.index import egress_imports, gateway_ref
from sailmesh.snapshot.model import MeshSnapshot, ProxyView, Service

WeightedClusters = list[tuple[str, int]]


TLS_PROTOCOLS = frozenset({"TLS", "HTTPS"})


@dataclass(frozen=True)
class SubnetRoute:
    """A route taken only for connections to `subnets` (and, for a `tls` match, with an SNI of `sni`)."""

    subnets: tuple[str, ...]
    sni: tuple[str, ...]
    clusters: WeightedClusters
    vs: Resource


def _tcp_match_applies(m: L4MatchAttributes | TLSMatchAttributes, ctx: RouteContext, vs_ns: str) -> bool:
    """Istio's matchTCP / matchTLS, the static predicates: port, sourceLabels, sourceNamespace, gateways
    (destinationSubnets is a runtime predicate: `subnet_routes`)."""
    if m.port and m.port != ctx.port:
        return False
    if not selector_matches(m.source_labels, ctx.proxy.labels):
        return False
    if m.source_namespace and m.source_namespace != ctx.proxy.namespace:
        return False
    return not m.gateways or ctx.gateway in {gateway_ref(g, vs_ns) for g in m.gateways}


def tcp_destinations(vs: Resource, ctx: RouteContext, runtime: bool = False) -> WeightedClusters | None:
    """(cluster, weight) of the first `tcp` route of a VirtualService whose match applies; None when none does.
    `runtime` (sidecars): a match with destinationSubnets does not apply here, it only builds a subnet route (Istio's
    buildSidecarOutboundTCPFilterChainOpts); gateways ignore destinationSubnets, as Istio's l4SingleMatch."""
    vs_ns = vs.namespace
    for tcp in model_of(vs, VirtualService).tcp or ():
        matches = tcp.match or ()
        if matches and not any(_tcp_match_applies(m, ctx, vs_ns) and not (runtime and m.destination_subnets)
                               for m in matches):
            continue
        out = [(destination_cluster(d.destination, vs_ns, ctx), d.weight or 0)
               for d in tcp.route or () if d.destination is not None]
        if len(out) > 1:
            out = [(c, w) for c, w in out if w > 0]
        if out:
            return out
    return None


def _weighted(vs: Resource, ctx: RouteContext, route: TLSRoute) -> WeightedClusters:
    out = [(destination_cluster(d.destination, vs.namespace, ctx), d.weight or 0)
           for d in route.route or () if d.destination is not None]
    return [(c, w) for c, w in out if w > 0] if len(out) > 1 else out


def tls_destinations(vs: Resource, ctx: RouteContext, host: str) -> WeightedClusters | None:
    """(cluster, weight) of the first `tls` route of a VirtualService with a match that applies and whose
    sniHosts (short names resolved in the VS namespace) cover `host`: a client tunnelling to a service name
    sends that name as its SNI. None when none does."""
    for tls in model_of(vs, VirtualService).tls or ():
        for m in tls.match or ():
            sni = [resolve_short_name(s, vs.namespace, ctx.suffix) for s in m.sni_hosts or ()]
            if m.destination_subnets:
                continue  # a subnet route's (subnet_routes)
            if _tcp_match_applies(m, ctx, vs.namespace) and any(hosts_match(host, s) for s in sni):
                out = _weighted(vs, ctx, tls)
                if out:
                    return out
    return None


def service_tcp_route_from(ctx: RouteContext, svc: Service) -> tuple[WeightedClusters, Resource | None]:
    """Where a sidecar sends TCP traffic for a service port, and the VirtualService that says so (None: the
    default cluster): on TLS/HTTPS ports the oldest mesh VirtualService's `tls` route for the host's SNI (Istio's
    sidecar TLS filter chains come before TCP ones), else the oldest mesh VirtualService's tcp route, else the
    default cluster."""
    vss = ctx.snapshot.index.mesh_virtual_services_for(ctx.proxy, svc.hostname)
    protocol = next((p.protocol for p in svc.ports if p.port == ctx.port), "")
    if (protocol or "").upper() in TLS_PROTOCOLS:
        for vs in vss:
            found = tls_destinations(vs, ctx, svc.hostname)
            if found:
                return found, vs
    for vs in vss:
        found = tcp_destinations(vs, ctx, runtime=True)
        if found:
            return found, vs
    return [(names.outbound_cluster(ctx.port, "", svc.hostname), 100)], None


def subnet_routes(ctx: RouteContext, svc: Service) -> list[SubnetRoute]:
    """The destination-subnet routes of a service port for a captured sidecar, in order (Istio's
    buildSidecarOutboundTLSFilterChainOpts / buildSidecarOutboundTCPFilterChainOpts, the runtime predicates): on a
    TLS/HTTPS port one per applicable `tls` match with destinationSubnets (its sniHosts with it, each runtime match
    once); on other ports, `tcp` routes up to the first one that applies to every destination, each with the
    subnets of its applicable matches."""
    vss = ctx.snapshot.index.mesh_virtual_services_for(ctx.proxy, svc.hostname)
    protocol = next((p.protocol for p in svc.ports if p.port == ctx.port), "")
    out: list[SubnetRoute] = []
    if (protocol or "").upper() in TLS_PROTOCOLS:
        seen: set[tuple[tuple[str, ...], tuple[str, ...]]] = set()
        for vs in vss:
            for tls in model_of(vs, VirtualService).tls or ():
                for m in tls.match or ():
                    if not m.destination_subnets or not _tcp_match_applies(m, ctx, vs.namespace):
                        continue
                    sni = tuple(resolve_short_name(s, vs.namespace, ctx.suffix) for s in m.sni_hosts or ())
                    key = (sni, tuple(m.destination_subnets))
                    clusters = _weighted(vs, ctx, tls)
                    if key not in seen and clusters:
                        seen.add(key)
                        out.append(SubnetRoute(key[1], sni, clusters, vs))
        return out
    for vs in vss:
        for tcp in model_of(vs, VirtualService).tcp or ():
            applying = [m for m in tcp.match or () if _tcp_match_applies(m, ctx, vs.namespace)]
            clusters = [(destination_cluster(d.destination, vs.namespace, ctx), d.weight or 0)
                        for d in tcp.route or () if d.destination is not None]
            clusters = [(c, w) for c, w in clusters if w > 0] if len(clusters) > 1 else clusters
            if not clusters:
                continue
            if not tcp.match or any(not m.destination_subnets for m in applying):
                return out  # this route takes every other destination (the listener's default chain)
            subnets = tuple(s for m in applying for s in m.destination_subnets or ())
            if subnets:
                out.append(SubnetRoute(subnets, (), clusters, vs))
    return out


def egress_tcp_clusters(snapshot: MeshSnapshot, proxy: ProxyView, port: int,
                        hosts: tuple[tuple[str, str], ...]) -> WeightedClusters:
    """Where a Sidecar egress listener on a TCP `port` sends a connection: the first visible service (by name)
    that its hosts import and that has a non-HTTP `port`, through its tcp routes; [] when there is none."""
    for svc in snapshot.index.visible_services(proxy):
        if hosts and not egress_imports(list(hosts), svc.namespace, svc.hostname):
            continue
        if any(p.port == port and not names.is_http(p.protocol) for p in svc.ports):
            return service_tcp_route_from(RouteContext(snapshot, proxy, port), svc)[0]
    return []
