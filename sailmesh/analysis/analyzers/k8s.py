"""Kubernetes helpers for analyzers: system namespaces, port-name protocols, injection state, pod specs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sailmesh.analysis.context import Context
from sailmesh.analysis.shapes import as_map, dig
from sailmesh.api.resource import Resource

SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease", "local-path-storage"})
# Istio's protocol.Parse names, matched on the port name prefix (`http-foo`, `grpc-web`, ...).
PROTOCOLS = ("grpc-web", "http_proxy", "http2", "https", "http", "grpc", "tcp", "tls", "udp", "mongo", "redis",
             "mysql")
INJECT_ANNOTATION = "sidecar.istio.io/inject"


def port_protocol(name: str) -> str:
    """Protocol from an Istio-style port name (`http`, `http-web`, `grpc-web`); '' when none."""
    low = name.lower()
    for p in PROTOCOLS:
        if low == p or low.startswith(p + "-"):
            return p.upper()
    return ""


def pod_template(r: Resource) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """(metadata, spec) of a Pod, or of the pod template of a Deployment-like workload."""
    if r.kind == "Pod":
        return as_map(r.raw.get("metadata")), as_map(r.raw.get("spec"))
    tmpl = as_map(dig(r.raw, "spec", "template"))
    return as_map(tmpl.get("metadata")), as_map(tmpl.get("spec"))


def namespace_labels(ctx: Context, namespace: str) -> Mapping[str, str] | None:
    for n in ctx.of("Namespace"):
        if n.name == namespace:
            return n.labels
    return None


def namespace_injected(ctx: Context, namespace: str) -> bool:
    """Namespace labelled istio-injection=enabled or with an istio.io/rev label."""
    labels = namespace_labels(ctx, namespace) or {}
    return labels.get("istio-injection") == "enabled" or bool(labels.get("istio.io/rev"))


def workload_opted_out(meta: Mapping[str, Any]) -> bool:
    """sidecar.istio.io/inject: "false" as annotation or label."""
    for section in ("annotations", "labels"):
        vals = meta.get(section) or {}
        if isinstance(vals, Mapping) and str(vals.get(INJECT_ANNOTATION, "")).lower() == "false":
            return True
    return False
