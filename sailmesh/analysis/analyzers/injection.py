"""Injection analyzers: namespace injection labels, pods missing the proxy, stale proxy images."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from sailmesh.analysis import messages as msg
from sailmesh.analysis.analyzer import Analyzer, diag
from sailmesh.analysis.analyzers.k8s import SYSTEM_NAMESPACES, pod_template, workload_opted_out
from sailmesh.analysis.context import Context
from sailmesh.analysis.diagnostic import Diagnostic
from sailmesh.analysis.shapes import as_list, as_map, dig
from sailmesh.api.resource import Resource

INJECTION_LABEL = "istio-injection"
REV_LABEL = "istio.io/rev"
DATAPLANE_LABEL = "istio.io/dataplane-mode"
INJECTOR_CONFIGMAP = "istio-sidecar-injector"
PROXY_CONTAINER = "istio-proxy"


def injector_values(ctx: Context, revision: str = "") -> Mapping[str, Any] | None:
    """The `values` JSON of the sidecar injector ConfigMap (per revision), None when absent."""
    name = f"{INJECTOR_CONFIGMAP}-{revision}" if revision else INJECTOR_CONFIGMAP
    for cm in ctx.of("ConfigMap"):
        if cm.name == name and cm.namespace == ctx.root_namespace:
            raw = (as_map(cm.raw.get("data"))).get("values")
            try:
                vals = json.loads(raw) if isinstance(raw, str) else None
            except ValueError:
                return None
            return vals if isinstance(vals, Mapping) else None
    return None


def proxy_container(pod: Resource) -> Mapping[str, Any] | None:
    """The istio-proxy container (regular or native sidecar init container)."""
    _, spec = pod_template(pod)
    for section in ("containers", "initContainers"):
        for c in as_list(spec.get(section)):
            if isinstance(c, Mapping) and c.get("name") == PROXY_CONTAINER:
                return c
    return None


class InjectionAnalyzer(Analyzer):
    """Namespaces should say whether they are injected (once); pods in injected namespaces need the proxy."""

    name = "injection.Analyzer"
    messages = (msg.NamespaceNotInjected, msg.NamespaceMultipleInjectionLabels, msg.NamespaceInjectionEnabledByDefault,
                msg.PodMissingProxy)

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        by_default = bool(dig(injector_values(ctx), "sidecarInjectorWebhook", "enableNamespacesByDefault"))
        injected: set[str] = set()
        for ns in ctx.of("Namespace"):
            if ns.name in SYSTEM_NAMESPACES or ns.name == ctx.root_namespace:
                continue
            lab = ns.labels
            inj, rev, ambient = lab.get(INJECTION_LABEL), lab.get(REV_LABEL), lab.get(DATAPLANE_LABEL) == "ambient"
            flags = (
                (INJECTION_LABEL, inj == "enabled"),
                (REV_LABEL, bool(rev) and inj != "disabled"),
                (DATAPLANE_LABEL, ambient and inj != "disabled"),
            )
            present = [k for k, on in flags if on]
            if len(present) > 1:
                yield diag(msg.NamespaceMultipleInjectionLabels, ns, present, path="metadata.labels")
                continue
            if inj == "enabled" or rev:
                injected.add(ns.name)
                continue
            if inj is None and not ambient:
                if by_default:
                    injected.add(ns.name)
                    yield diag(msg.NamespaceInjectionEnabledByDefault, ns)
                else:
                    yield diag(msg.NamespaceNotInjected, ns, ns.name, ns.name)
        for pod in ctx.pods():
            if pod.namespace not in injected or proxy_container(pod) is not None:
                continue
            meta, spec = pod_template(pod)
            if workload_opted_out(meta) or spec.get("hostNetwork"):
                continue
            yield diag(msg.PodMissingProxy, pod, f"{pod.namespace}/{pod.name}")


DISTROLESS = "-distroless"


def expected_image(values: Mapping[str, Any]) -> str:
    """Proxy image the injector would use: hub/image:tag (image taken as-is when it has a `/`)."""
    image = str(dig(values, "global", "proxy", "image") or "proxyv2")
    if "/" not in image:
        image = f"{dig(values, 'global', 'hub')}/{image}:{dig(values, 'global', 'tag')}"
    return image


def same_image(running: str, expected: str) -> bool:
    """Equal up to the image type: the distroless variant of an image counts as the same release."""
    return running.removesuffix(DISTROLESS) == expected.removesuffix(DISTROLESS)


class ImageAnalyzer(Analyzer):
    """Pods in injected namespaces should run the proxy image the injector currently uses."""

    name = "injection.ImageAnalyzer"
    messages = (msg.PodsIstioProxyImageMismatchInNamespace,)

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        for ns in ctx.of("Namespace"):
            lab = ns.labels
            if lab.get(INJECTION_LABEL) == "enabled":
                values = injector_values(ctx)
            elif lab.get(REV_LABEL) and lab.get(INJECTION_LABEL) != "disabled":
                values = injector_values(ctx, lab[REV_LABEL])
            else:
                continue
            if values is None:
                continue
            stale = []
            for pod in ctx.pods():
                if pod.namespace != ns.name or "sidecar.istio.io/proxyImage" in pod.annotations:
                    continue
                c = proxy_container(pod)
                if c is not None and not same_image(str(c.get("image") or ""), expected_image(values)):
                    stale.append(pod.name)
            if stale:
                yield diag(msg.PodsIstioProxyImageMismatchInNamespace, ns, stale)
