"""Helpers shared by the VirtualService analyzers: destinations, gateways, service visibility."""

from __future__ import annotations

from collections.abc import Iterator

from sailmesh.analysis.context import Context, ServiceInfo, export_to
from sailmesh.api.hosts import analyzer_fqdn, exported_to
from sailmesh.api.models.networking import (
    Destination,
    HTTPRoute,
    HTTPRouteDestination,
    RouteDestination,
    TCPRoute,
    TLSRoute,
    VirtualService,
)
from sailmesh.api.resource import Resource

MESH_GATEWAY = "mesh"


def route_destinations(vs: VirtualService) -> Iterator[tuple[str, Destination]]:
    """(field path, destination) for every http/tcp/tls route destination."""
    sections: tuple[tuple[str, tuple[HTTPRoute | TCPRoute | TLSRoute, ...] | None], ...] = (
        ("http", vs.http), ("tcp", vs.tcp), ("tls", vs.tls))
    for section, rules in sections:
        for i, rule in enumerate(rules or ()):
            routes: tuple[HTTPRouteDestination | RouteDestination, ...] = rule.route or ()
            for j, route in enumerate(routes):
                if route.destination is not None:
                    yield f"spec.{section}[{i}].route[{j}].destination", route.destination


def mirror_destinations(vs: VirtualService) -> Iterator[tuple[str, Destination]]:
    """(field path, destination) for every http mirror / mirrors entry."""
    for i, rule in enumerate(vs.http or ()):
        if rule.mirror is not None:
            yield f"spec.http[{i}].mirror", rule.mirror
        for j, m in enumerate(rule.mirrors or ()):
            if m.destination is not None:
                yield f"spec.http[{i}].mirrors[{j}].destination", m.destination


def all_destinations(vs: VirtualService) -> Iterator[tuple[str, Destination]]:
    yield from route_destinations(vs)
    yield from mirror_destinations(vs)


def gateways_of(vs: VirtualService) -> tuple[str, ...]:
    """The VirtualService's gateways; unset (or empty) means the mesh gateway only."""
    return vs.gateways or (MESH_GATEWAY,)


def split_ref(ref: str, namespace: str) -> tuple[str, str]:
    """`ns/name` or `name` (in namespace) -> (ns, name)."""
    if "/" in ref:
        ns, _, name = ref.partition("/")
        return ns, name
    return namespace, ref


def service_export_to(svc: Resource) -> list[str]:
    """Kubernetes Service visibility from the networking.istio.io/exportTo annotation (default all)."""
    ann = svc.annotations.get("networking.istio.io/exportTo")
    if not ann:
        return ["*"]
    return [p.strip() for p in ann.split(",") if p.strip()]


def service_visible(svc: Resource, namespace: str) -> bool:
    exports = service_export_to(svc) if svc.kind == "Service" else export_to(svc)
    return exported_to(exports, svc.namespace, namespace)


def vs_namespaces(vs: Resource, spec: VirtualService) -> list[str]:
    """Namespaces a VirtualService must resolve its destinations in: its own, or its explicit exportTo list."""
    val = spec.export_to
    if not val or "*" in val:
        return [vs.namespace]
    return [vs.namespace if e == "." else e for e in val]


def find_services(ctx: Context, host: str, namespace: str) -> list[ServiceInfo]:
    """Services/ServiceEntry hosts visible in namespace that overlap host."""
    full = analyzer_fqdn(host, namespace)
    return [s for s in ctx.services_overlapping(full) if service_visible(s.resource, namespace)]
