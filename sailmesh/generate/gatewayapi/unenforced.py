"""The Gateway API fields sailmesh accepts but does not translate ("accepted, not enforced", generate/enforcement)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def _items(node: Any, key: str) -> list[Any]:
    found = node.get(key) if isinstance(node, dict) else None
    return found if isinstance(found, list) else []


def gateway(spec: Any) -> Iterator[str]:
    for key in ("addresses", "infrastructure", "backendTLS"):
        if isinstance(spec, dict) and spec.get(key):
            yield f"spec.{key}"
    for i, lst in enumerate(_items(spec, "listeners")):
        where = f"spec.listeners[{i}]"
        if lst.get("protocol") not in ("HTTP", "HTTPS", "TLS", "TCP"):
            yield f"{where}.protocol: {lst.get('protocol')} (no listener is built)"
        tls = lst.get("tls") or {}
        for key in ("options", "frontendValidation"):
            if tls.get(key):
                yield f"{where}.tls.{key}"
        refs = tls.get("certificateRefs") or []
        if len(refs) > 1:
            yield f"{where}.tls.certificateRefs[1:] (the first certificate is served)"
        ns = ((lst.get("allowedRoutes") or {}).get("namespaces") or {}).get("selector") or {}
        if ns.get("matchExpressions"):
            yield f"{where}.allowedRoutes.namespaces.selector.matchExpressions (matchLabels only)"


def _route(spec: Any) -> Iterator[str]:
    if isinstance(spec, dict) and spec.get("sessionPersistence"):
        yield "spec.sessionPersistence"
    for i, rule in enumerate(_items(spec, "rules")):
        where = f"spec.rules[{i}]"
        for key in ("sessionPersistence",):
            if rule.get(key):
                yield f"{where}.{key}"
        for j, ref in enumerate(_items(rule, "backendRefs")):
            for k, f in enumerate(_items(ref, "filters")):
                if f.get("type") not in ("RequestHeaderModifier", "ResponseHeaderModifier"):
                    yield f"{where}.backendRefs[{j}].filters[{k}]: {f.get('type')}"


def http_route(spec: Any) -> Iterator[str]:
    yield from _route(spec)


def grpc_route(spec: Any) -> Iterator[str]:
    yield from _route(spec)
