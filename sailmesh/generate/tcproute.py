"""VirtualService `tcp` routes -> the cluster choice of a CONNECT tunnel (or a gateway's tcp_proxy)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sailmesh.api.hosts import selector_matches
from sailmesh.generate import names
from sailmesh.generate.httproute import RouteContext, destination_cluster
from sailmesh.snapshot.index import gateway_ref
from sailmesh.snapshot.model import Service

WeightedClusters = list[tuple[str, int]]


def _tcp_match_applies(m: Mapping[str, Any], ctx: RouteContext, vs_ns: str) -> bool:
    """Istio L4MatchAttributes: port, sourceLabels, sourceNamespace, gateways (destinationSubnets ignored)."""
    if m.get("port") and int(m["port"]) != ctx.port:
        return False
    labels = m.get("sourceLabels")
    if isinstance(labels, Mapping) and not selector_matches(labels, ctx.proxy.labels):
        return False
    if m.get("sourceNamespace") and m["sourceNamespace"] != ctx.proxy.namespace:
        return False
    gws = m.get("gateways")
    return not gws or ctx.gateway in {gateway_ref(str(g), vs_ns) for g in gws}


def tcp_destinations(vs_spec: Mapping[str, Any], vs_ns: str, ctx: RouteContext) -> WeightedClusters | None:
    """(cluster, weight) of the first `tcp` route whose match applies; None when none does."""
    for tcp in vs_spec.get("tcp") or []:
        if not isinstance(tcp, Mapping):
            continue
        matches = [m for m in tcp.get("match") or [] if isinstance(m, Mapping)]
        if matches and not any(_tcp_match_applies(m, ctx, vs_ns) for m in matches):
            continue
        dests = [d for d in tcp.get("route") or [] if isinstance(d, Mapping) and isinstance(d.get("destination"),
                                                                                              Mapping)]
        out = [(destination_cluster(d["destination"], vs_ns, ctx), int(d.get("weight") or 0)) for d in dests]
        if len(out) > 1:
            out = [(c, w) for c, w in out if w > 0]
        if out:
            return out
    return None


def service_tcp_route(ctx: RouteContext, svc: Service) -> WeightedClusters:
    """Where a sidecar sends TCP traffic for a service port: the oldest mesh VirtualService's tcp route, else
    the default cluster."""
    for vs in ctx.snapshot.index.mesh_virtual_services_for(ctx.proxy, svc.hostname):
        found = tcp_destinations(vs.spec, vs.namespace, ctx)
        if found:
            return found
    return [(names.outbound_cluster(ctx.port, "", svc.hostname), 100)]
