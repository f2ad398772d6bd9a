"""VirtualService `tcp` routes -> the cluster choice of a CONNECT tunnel (or a gateway's tcp_proxy)."""

from __future__ import annotations

from sailmesh.api.hosts import selector_matches
from sailmesh.api.models import model_of
from sailmesh.api.models.networking import L4MatchAttributes, VirtualService
from sailmesh.api.resource import Resource
from sailmesh.generate import names
from sailmesh.generate.httproute import RouteContext, destination_cluster
from sailmesh.snapshot.index import gateway_ref
from sailmesh.snapshot.model import Service

WeightedClusters = list[tuple[str, int]]


def _tcp_match_applies(m: L4MatchAttributes, ctx: RouteContext, vs_ns: str) -> bool:
    """Istio L4MatchAttributes: port, sourceLabels, sourceNamespace, gateways (destinationSubnets ignored)."""
    if m.port and m.port != ctx.port:
        return False
    if not selector_matches(m.source_labels, ctx.proxy.labels):
        return False
    if m.source_namespace and m.source_namespace != ctx.proxy.namespace:
        return False
    return not m.gateways or ctx.gateway in {gateway_ref(g, vs_ns) for g in m.gateways}


def tcp_destinations(vs: Resource, ctx: RouteContext) -> WeightedClusters | None:
    """(cluster, weight) of the first `tcp` route of a VirtualService whose match applies; None when none does."""
    vs_ns = vs.namespace
    for tcp in model_of(vs, VirtualService).tcp or ():
        matches = tcp.match or ()
        if matches and not any(_tcp_match_applies(m, ctx, vs_ns) for m in matches):
            continue
        out = [(destination_cluster(d.destination, vs_ns, ctx), d.weight or 0)
               for d in tcp.route or () if d.destination is not None]
        if len(out) > 1:
            out = [(c, w) for c, w in out if w > 0]
        if out:
            return out
    return None


def service_tcp_route(ctx: RouteContext, svc: Service) -> WeightedClusters:
    """Where a sidecar sends TCP traffic for a service port: the oldest mesh VirtualService's tcp route, else
    the default cluster."""
    for vs in ctx.snapshot.index.mesh_virtual_services_for(ctx.proxy, svc.hostname):
        found = tcp_destinations(vs, ctx)
        if found:
            return found
    return [(names.outbound_cluster(ctx.port, "", svc.hostname), 100)]
