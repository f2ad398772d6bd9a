"""VirtualService delegation: a root VirtualService's `http[].delegate` routes replaced by the delegate's routes,
merged as Istio merges them (pilot/pkg/model/virtualservice.go: mergeVirtualServicesIfNeeded, mergeHTTPRoute,
mergeHTTPMatchRequests, hasConflict, stringMatchConflict).

Istio resolves short names before merging (each VirtualService in its own namespace), so a merged route's
destinations, mirrors and match gateways are written here as FQDNs / `ns/name`: the root's translation can read
them whatever namespace they came from.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from sailmesh.api.hosts import exported_to, resolve_short_name
from sailmesh.api.models import model_of
from sailmesh.api.models.networking import (
    Destination,
    HTTPMatchRequest,
    HTTPRoute,
    StringMatch,
    VirtualService,
)
from sailmesh.api.resource import Resource
from sailmesh.snapshot.index import gateway_ref
from sailmesh.snapshot.model import MeshSnapshot

_replace = msgspec.structs.replace
# the HTTPRoute fields a delegate route takes from its root route when it leaves them unset (mergeHTTPRoute)
INHERITED = ("rewrite", "timeout", "retries", "fault", "mirror", "mirror_percent", "mirror_percent_alt",
             "mirror_percentage", "cors_policy", "headers")


def is_root(vs: Resource) -> bool:
    """A VirtualService with hosts and at least one delegating http route (Istio's isRootVs)."""
    spec = model_of(vs, VirtualService)
    return bool(spec.hosts) and any(r.delegate is not None for r in spec.http or ())


def find_delegate(snapshot: MeshSnapshot, root: Resource, route: HTTPRoute) -> Resource | None:
    """The delegate a root route names (namespace defaults to the root's): a VirtualService without hosts,
    exported to the root's namespace; None when there is none (Istio then drops that route only)."""
    d = route.delegate
    if d is None or not d.name:
        return None
    ns = d.namespace or root.namespace
    for vs in snapshot.of_kind("VirtualService"):
        if vs.name == d.name and vs.namespace == ns:
            spec = model_of(vs, VirtualService)
            if spec.hosts or not exported_to(spec.export_to or (), vs.namespace, root.namespace):
                return None
            return vs
    return None


def delegates_of(snapshot: MeshSnapshot, root: Resource) -> tuple[Resource | None, ...]:
    """The delegate of each delegating route of a root (None where missing), in route order."""
    return tuple(find_delegate(snapshot, root, r) for r in model_of(root, VirtualService).http or ()
                 if r.delegate is not None)


def _fqdn_dest(d: Destination | None, ns: str, suffix: str) -> Destination | None:
    if d is None or not d.host:
        return d
    return _replace(d, host=resolve_short_name(d.host, ns, suffix))


def resolved(route: HTTPRoute, ns: str, suffix: str) -> HTTPRoute:
    """A route with its destinations and mirrors as FQDNs and its match gateways as `ns/name` (Istio's
    resolveVirtualServiceShortnames, done before merging)."""
    dests = tuple(_replace(rd, destination=_fqdn_dest(rd.destination, ns, suffix)) for rd in route.route or ()) \
        if route.route is not None else None
    mirrors = tuple(_replace(m, destination=_fqdn_dest(m.destination, ns, suffix)) for m in route.mirrors or ()) \
        if route.mirrors is not None else None
    matches = tuple(_replace(m, gateways=tuple(gateway_ref(g, ns) for g in m.gateways) if m.gateways else m.gateways)
                    for m in route.match) if route.match is not None else None
    return _replace(route, route=dests, mirrors=mirrors, match=matches,
                    mirror=_fqdn_dest(route.mirror, ns, suffix))


def merged_http(snapshot: MeshSnapshot, root: Resource) -> tuple[HTTPRoute, ...]:
    """The root's http routes with each delegating route replaced by its delegate's routes merged with it
    (resolved as `resolved` does); a missing delegate drops its route; a conflicting delegate route is dropped."""
    suffix = snapshot.mesh.domain_suffix
    out: list[HTTPRoute] = []
    for route in model_of(root, VirtualService).http or ():
        if route.delegate is None:
            out.append(resolved(route, root.namespace, suffix))
            continue
        delegate = find_delegate(snapshot, root, route)
        if delegate is None:
            continue
        parent = resolved(route, root.namespace, suffix)
        for sub in model_of(delegate, VirtualService).http or ():
            merged = merge_route(parent, resolved(sub, delegate.namespace, suffix))
            if merged is not None:
                out.append(merged)
    return tuple(out)


def _name(root: str | None, leaf: str | None) -> str | None:
    if not leaf:
        return root
    return f"{root}-{leaf}" if root else leaf


def merge_route(root: HTTPRoute, delegate: HTTPRoute) -> HTTPRoute | None:
    """Istio's mergeHTTPRoute: matches merged (None on conflict), the delegate's fields kept, unset ones from the
    root: rewrite, timeout, retries, fault, mirror, mirrorPercent, mirrorPercentage, corsPolicy, headers (Istio's
    list: a root's directResponse and `mirrors` are not inherited)."""
    matches = merge_matches(root.match or (), delegate.match or ())
    if matches is None:
        return None
    inherit = {f: getattr(root, f) for f in INHERITED if getattr(delegate, f) is None}
    return _replace(delegate, match=matches or delegate.match, name=_name(root.name, delegate.name), delegate=None,
                    **inherit)


def merge_matches(root: tuple[HTTPMatchRequest, ...],
                  delegate: tuple[HTTPMatchRequest, ...]) -> tuple[HTTPMatchRequest, ...] | None:
    """Istio's mergeHTTPMatchRequests: every delegate match must fit in some root match (each fitting pair is
    merged); None on conflict."""
    if not root:
        return delegate
    if not delegate:
        return root
    out: list[HTTPMatchRequest] = []
    for sub in delegate:
        found = False
        for top in root:
            if has_conflict(top, sub):
                continue
            out.append(merge_match(top, sub))
            found = True
        if not found:
            return None
    return tuple(out) if out else None


def _merge_maps(root: Mapping[str, object] | None, leaf: Mapping[str, object] | None) -> dict[str, object] | None:
    if root is None and leaf is None:
        return None
    return {**(root or {}), **(leaf or {})}


def merge_match(root: HTTPMatchRequest, leaf: HTTPMatchRequest) -> HTTPMatchRequest:
    """Istio's mergeHTTPMatchRequest: the delegate's conditions, unset ones from the root, maps merged (the
    delegate's keys win)."""
    return _replace(
        leaf,
        name=_name(root.name, leaf.name),
        uri=leaf.uri or root.uri,
        scheme=leaf.scheme or root.scheme,
        method=leaf.method or root.method,
        authority=leaf.authority or root.authority,
        headers=_merge_maps(root.headers, leaf.headers),
        without_headers=_merge_maps(root.without_headers, leaf.without_headers),
        query_params=_merge_maps(root.query_params, leaf.query_params),
        port=leaf.port or root.port,
        source_labels=_merge_maps(root.source_labels, leaf.source_labels),
        source_namespace=leaf.source_namespace or root.source_namespace,
        gateways=leaf.gateways or root.gateways,
    )


def has_conflict(root: HTTPMatchRequest, leaf: HTTPMatchRequest) -> bool:
    """Istio's hasConflict: the delegate match is not a subset of the root match."""
    for r, lf in ((root.uri, leaf.uri), (root.scheme, leaf.scheme), (root.method, leaf.method),
                  (root.authority, leaf.authority)):
        if string_match_conflict(r, lf):
            return True
    for attr in ("headers", "without_headers", "query_params"):
        top: Mapping[str, StringMatch] = getattr(root, attr) or {}
        for key, value in (getattr(leaf, attr) or {}).items():
            if string_match_conflict(top.get(key), value):
                return True
    if bool(root.ignore_uri_case) != bool(leaf.ignore_uri_case):
        return True
    if root.port and leaf.port and root.port != leaf.port:
        return True
    if root.source_namespace and leaf.source_namespace != root.source_namespace:
        return True
    for key, value in (leaf.source_labels or {}).items():
        if key in (root.source_labels or {}) and (root.source_labels or {})[key] != value:
            return True
    if root.gateways and leaf.gateways:
        if len(root.gateways) < len(leaf.gateways) or not set(leaf.gateways) <= set(root.gateways):
            return True
    return False


def string_match_conflict(root: StringMatch | None, leaf: StringMatch | None) -> bool:
    """Istio's stringMatchConflict: whether `leaf` can match something `root` does not."""
    if root is None or leaf is None:
        return False
    if root.regex and (leaf.regex or leaf.prefix or leaf.exact):
        return True
    if leaf.regex and (root.regex or root.prefix or root.exact):
        return True
    if root.exact:
        return bool(leaf.prefix) or leaf.exact != root.exact
    if root.prefix:
        if leaf.prefix:
            return not leaf.prefix.startswith(root.prefix)
        if leaf.exact:
            return not leaf.exact.startswith(root.prefix)
    return True


