"""Istio's ProxyConfig resources for one proxy as it starts (pilot/pkg/model/proxy_config.go EffectiveProxyConfig):
the root namespace's ProxyConfig without a selector, over it the proxy's namespace's, over that the first of its
namespace whose `selector.matchLabels` the proxy's labels carry (each level: the oldest such resource). Only
`concurrency` is acted on (the embedded platform passes it to the agent's Envoy); the rest is reported by
generate/enforcement.py."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp

from sailmesh.errors import PlatformError


def _selector(doc: Mapping[str, Any]) -> Mapping[str, Any] | None:
    spec = doc.get("spec")
    sel = spec.get("selector") if isinstance(spec, Mapping) else None
    labels = sel.get("matchLabels") if isinstance(sel, Mapping) else None
    return labels if isinstance(labels, Mapping) and labels else None


def _meta(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    m = doc.get("metadata")
    return m if isinstance(m, Mapping) else {}


def _oldest_first(docs: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Istio sorts ProxyConfigs by creation time (then name) and takes the first match of a level."""
    return sorted(docs, key=lambda d: (str(_meta(d).get("creationTimestamp") or ""), str(_meta(d).get("name") or "")))


def effective(docs: Iterable[Mapping[str, Any]], namespace: str, labels: Mapping[str, str],
              root_namespace: str) -> list[Mapping[str, Any]]:
    """The specs that apply to a proxy, lowest precedence first: root namespace, namespace, workload."""
    ordered = [d for d in _oldest_first(docs) if d.get("kind") == "ProxyConfig"]
    out: list[Mapping[str, Any]] = []

    def first(ns: str, selected: bool) -> None:
        for d in ordered:
            if _meta(d).get("namespace") != ns:
                continue
            sel = _selector(d)
            if (sel is not None) == selected and (sel is None or all(labels.get(k) == v for k, v in sel.items())):
                spec = d.get("spec")
                out.append(spec if isinstance(spec, Mapping) else {})
                return

    first(root_namespace, False)
    if namespace != root_namespace:
        first(namespace, False)
    first(namespace, True)
    return out


def _workers(value: int) -> int:
    """Istio's concurrency 0: every core of the machine (Envoy's own 0 would be one worker)."""
    return value or os.cpu_count() or 1


def concurrency(docs: Iterable[Mapping[str, Any]], namespace: str, labels: Mapping[str, str],
                root_namespace: str) -> int | None:
    """Istio's mergeWithPrecedence for `concurrency`: the most specific ProxyConfig that sets it (None: none does)."""
    found = None
    for spec in effective(docs, namespace, labels, root_namespace):
        value = spec.get("concurrency")
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            found = _workers(value)
    return found


async def fetch(api_url: str, token_file: str) -> list[Mapping[str, Any]]:
    """The ProxyConfig resources the control plane holds now (a proxy reads them as it starts, as Istio's
    injector does); PlatformError when it does not answer."""
    with open(token_file, encoding="utf-8") as fh:
        token = fh.read().strip()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10), trust_env=False) as s, \
                s.get(f"{api_url}/api/v1/resources", params={"kind": "ProxyConfig"},
                      headers={"Authorization": f"Bearer {token}"}) as r:
            body = await r.json()
            if r.status != 200:
                raise PlatformError(f"the control plane did not list ProxyConfigs: {body}")
    except (TimeoutError, OSError, aiohttp.ClientError, ValueError) as e:
        raise PlatformError(f"the control plane did not list ProxyConfigs: {e}") from None
    items = body.get("items") if isinstance(body, Mapping) else None
    return [i for i in items or () if isinstance(i, Mapping)]
