"""Helpers shared by the VirtualService analyzers: destinations, gateways, service visibility."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from sailmesh.analysis.context import Context, export_to
from sailmesh.analysis.shapes import as_list
from sailmesh.api.hosts import analyzer_fqdn, exported_to
from sailmesh.api.resource import Resource

MESH_GATEWAY = "mesh"


def route_destinations(vs: Resource) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(field path, destination) for every http/tcp/tls route destination."""
    for section in ("http", "tcp", "tls"):
        for i, rule in enumerate(as_list(vs.spec.get(section))):
            if not isinstance(rule, Mapping):
                continue
            for j, route in enumerate(as_list(rule.get("route"))):
                if isinstance(route, Mapping) and isinstance(route.get("destination"), Mapping):
                    yield f"spec.{section}[{i}].route[{j}].destination", route["destination"]


def mirror_destinations(vs: Resource) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(field path, destination) for every http mirror / mirrors entry."""
    for i, rule in enumerate(as_list(vs.spec.get("http"))):
        if not isinstance(rule, Mapping):
            continue
        if isinstance(rule.get("mirror"), Mapping):
            yield f"spec.http[{i}].mirror", rule["mirror"]
        for j, m in enumerate(as_list(rule.get("mirrors"))):
            if isinstance(m, Mapping) and isinstance(m.get("destination"), Mapping):
                yield f"spec.http[{i}].mirrors[{j}].destination", m["destination"]


def all_destinations(vs: Resource) -> Iterator[tuple[str, Mapping[str, Any]]]:
    yield from route_destinations(vs)
    yield from mirror_destinations(vs)


def gateways_of(vs: Resource) -> list[str]:
    """The VirtualService's gateways; unset means the mesh gateway only."""
    gws = vs.spec.get("gateways")
    return [str(g) for g in gws] if isinstance(gws, list) and gws else [MESH_GATEWAY]


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


def vs_namespaces(vs: Resource) -> list[str]:
    """Namespaces a VirtualService must resolve its destinations in: its own, or its explicit exportTo list."""
    val = vs.spec.get("exportTo")
    if not isinstance(val, list) or not val or "*" in val:
        return [vs.namespace]
    return [vs.namespace if str(e) == "." else str(e) for e in val]


def find_services(ctx: Context, host: str, namespace: str) -> list[tuple[str, Resource, list[Any]]]:
    """(service host, resource, ports) of Services/ServiceEntries visible in namespace matching host."""
    full = analyzer_fqdn(host, namespace)
    out = []
    for s in ctx.services_overlapping(full):
        if service_visible(s.resource, namespace):
            out.append((s.host, s.resource, s.ports))
    return out
