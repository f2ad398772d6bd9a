"""The Gateway API fields sailmesh accepts but does not translate ("accepted, not enforced", generate/enforcement)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sailmesh.generate.gatewayapi import tls_options


def _items(node: Any, key: str) -> list[Any]:
    found = node.get(key) if isinstance(node, dict) else None
    return found if isinstance(found, list) else []


def gateway(spec: Any) -> Iterator[str]:
    infra = spec.get("infrastructure") if isinstance(spec, dict) else None
    if isinstance(infra, dict):  # labels: on the gateway's pods (Kubernetes) or process (embedded mesh)
        if infra.get("parametersRef"):  # generate/gatewayapi/parameters.py
            yield "spec.infrastructure.parametersRef (in the embedded mesh the gateway process takes only the " \
                  "deployment's pod template labels: no horizontalPodAutoscaler / podDisruptionBudget, there is no " \
                  "autoscaler; on Kubernetes every key applies)"
        if infra.get("annotations"):
            yield "spec.infrastructure.annotations (set on the gateway's Kubernetes objects; the embedded mesh's " \
                  "gateway process has none)"
    for i, lst in enumerate(_items(spec, "listeners")):
        where = f"spec.listeners[{i}]"
        if lst.get("protocol") not in ("HTTP", "HTTPS", "TLS", "TCP"):
            yield f"{where}.protocol: {lst.get('protocol')} (no listener is built)"
        options = (lst.get("tls") or {}).get("options") or {}
        for key, value in options.items() if isinstance(options, dict) else ():
            if key not in tls_options.READ_OPTIONS:  # Istio's buildTLS reads these two only
                yield f"{where}.tls.options[{key}] (ignored, as Istio ignores it)"
            elif key == tls_options.TERMINATE_MODE_KEY and value not in tls_options.TERMINATE_MODES:
                yield f"{where}.tls.options[{key}]: {value} (ignored, as Istio ignores it: SIMPLE)"


def _route(spec: Any) -> Iterator[str]:
    # Istio's conversion does not read sessionPersistence (no cookie or header affinity is set up for it)
    if isinstance(spec, dict) and spec.get("sessionPersistence"):
        yield "spec.sessionPersistence (ignored, as Istio ignores it)"
    for i, rule in enumerate(_items(spec, "rules")):
        if rule.get("sessionPersistence"):
            yield f"spec.rules[{i}].sessionPersistence (ignored, as Istio ignores it)"


def http_route(spec: Any) -> Iterator[str]:
    yield from _route(spec)


def grpc_route(spec: Any) -> Iterator[str]:
    yield from _route(spec)
