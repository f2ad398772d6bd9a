"""Istio's ProxyConfig for one proxy as it starts (pilot/pkg/model/proxy_config.go EffectiveProxyConfig), for the
field sailmesh acts on, `concurrency`: the mesh config's `defaultConfig`, over it the root namespace's ProxyConfig
without a selector, over that the proxy's namespace's, over that the pod's `proxy.istio.io/config` annotation, over
that the first ProxyConfig of its namespace whose `selector.matchLabels` the proxy's labels carry (each level: the
oldest such resource). The embedded platform and the injection webhook pass the result to the agent
(`--concurrency`); `environmentVariables` and `image` are reported by generate/enforcement.py."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from sailmesh.api.resource import Resource

KIND = "ProxyConfig"


def _selector(spec: Mapping[str, Any]) -> Mapping[str, Any] | None:
    sel = spec.get("selector")
    labels = sel.get("matchLabels") if isinstance(sel, Mapping) else None
    return labels if isinstance(labels, Mapping) and labels else None


def _spec(r: Resource) -> Mapping[str, Any]:
    return r.spec if isinstance(r.spec, Mapping) else {}


def levels(configs: Iterable[Resource], namespace: str, labels: Mapping[str, str], root_namespace: str,
           annotation: Mapping[str, Any] | None = None,
           mesh_default: Mapping[str, Any] | None = None) -> list[Mapping[str, Any]]:
    """The specs that apply to a proxy, lowest precedence first: the mesh config's defaultConfig, root namespace,
    namespace, the pod's annotation, workload. `configs` oldest first (Istio sorts ProxyConfigs by creation time and
    takes each level's first)."""
    ordered = [r for r in configs if r.kind == KIND]

    def first(ns: str, selected: bool) -> list[Mapping[str, Any]]:
        for r in ordered:
            sel = _selector(_spec(r))
            if r.namespace == ns and (sel is not None) == selected and \
                    (sel is None or all(labels.get(k) == v for k, v in sel.items())):
                return [_spec(r)]
        return []

    out = [mesh_default] if mesh_default else []
    out += first(root_namespace, False)
    if namespace != root_namespace:
        out += first(namespace, False)
    if annotation:
        out.append(annotation)
    return out + first(namespace, True)


def _workers(value: int) -> int:
    """Istio's concurrency 0: every core of the machine (Envoy's own 0 would be one worker)."""
    return value or os.cpu_count() or 1


def concurrency(configs: Iterable[Resource], namespace: str, labels: Mapping[str, str], root_namespace: str,
                annotation: Mapping[str, Any] | None = None, mesh_concurrency: int | None = None) -> int | None:
    """Istio's mergeWithPrecedence for `concurrency`: the most specific level that sets it, the mesh config's
    `defaultConfig.concurrency` (mesh_concurrency) the least specific (None: no level sets it)."""
    found = None
    mesh_default = {"concurrency": mesh_concurrency} if mesh_concurrency is not None else None
    for spec in levels(configs, namespace, labels, root_namespace, annotation, mesh_default):
        value = spec.get("concurrency")
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            found = _workers(value)
    return found
