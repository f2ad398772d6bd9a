"""Annotation analyzer: unknown, misplaced, invalid, deprecated and alpha Istio annotations."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from sailmesh.analysis import messages as msg
from sailmesh.analysis.analyzer import Analyzer, diag
from sailmesh.analysis.analyzers.k8s import pod_template
from sailmesh.analysis.context import Context
from sailmesh.analysis.diagnostic import Diagnostic
from sailmesh.analysis.shapes import as_list


@dataclass(frozen=True)
class Annotation:
    """One entry of Istio's annotation catalogue (istio/api annotation/annotations.yaml)."""

    kinds: tuple[str, ...]
    value: str = "string"  # string | int | bool
    deprecated: bool = False
    alpha: bool = False


POD = ("Pod",)
ANNOTATIONS: dict[str, Annotation] = {
    "sidecar.istio.io/inject": Annotation(POD),
    "sidecar.istio.io/status": Annotation(POD),
    "sidecar.istio.io/proxyImage": Annotation(POD),
    "sidecar.istio.io/proxyImageType": Annotation(POD),
    "sidecar.istio.io/proxyCPU": Annotation(POD),
    "sidecar.istio.io/proxyCPULimit": Annotation(POD),
    "sidecar.istio.io/proxyMemory": Annotation(POD),
    "sidecar.istio.io/proxyMemoryLimit": Annotation(POD),
    "sidecar.istio.io/interceptionMode": Annotation(POD),
    "sidecar.istio.io/logLevel": Annotation(POD),
    "sidecar.istio.io/componentLogLevel": Annotation(POD),
    "sidecar.istio.io/agentLogLevel": Annotation(POD),
    "sidecar.istio.io/userVolume": Annotation(POD),
    "sidecar.istio.io/userVolumeMount": Annotation(POD),
    "sidecar.istio.io/bootstrapOverride": Annotation(POD),
    "sidecar.istio.io/enableCoreDump": Annotation(POD, "bool"),
    "sidecar.istio.io/rewriteAppHTTPProbers": Annotation(POD, "bool"),
    "sidecar.istio.io/discoveryAddress": Annotation(POD),
    "sidecar.istio.io/extraStatTags": Annotation(POD),
    "sidecar.istio.io/statsHistogramBuckets": Annotation(POD),
    "sidecar.istio.io/statsInclusionPrefixes": Annotation(POD, deprecated=True),
    "sidecar.istio.io/statsInclusionSuffixes": Annotation(POD, deprecated=True),
    "sidecar.istio.io/statsInclusionRegexps": Annotation(POD, deprecated=True),
    "sidecar.istio.io/nativeSidecar": Annotation(POD, "bool"),
    "traffic.sidecar.istio.io/includeOutboundIPRanges": Annotation(POD),
    "traffic.sidecar.istio.io/excludeOutboundIPRanges": Annotation(POD),
    "traffic.sidecar.istio.io/includeInboundPorts": Annotation(POD),
    "traffic.sidecar.istio.io/excludeInboundPorts": Annotation(POD),
    "traffic.sidecar.istio.io/includeOutboundPorts": Annotation(POD),
    "traffic.sidecar.istio.io/excludeOutboundPorts": Annotation(POD),
    "traffic.sidecar.istio.io/excludeInterfaces": Annotation(POD),
    "traffic.sidecar.istio.io/kubevirtInterfaces": Annotation(POD, deprecated=True),
    "status.sidecar.istio.io/port": Annotation(POD, "int"),
    "readiness.status.sidecar.istio.io/applicationPorts": Annotation(POD),
    "readiness.status.sidecar.istio.io/initialDelaySeconds": Annotation(POD, "int"),
    "readiness.status.sidecar.istio.io/periodSeconds": Annotation(POD, "int"),
    "readiness.status.sidecar.istio.io/failureThreshold": Annotation(POD, "int"),
    "proxy.istio.io/config": Annotation(POD),
    "proxy.istio.io/overrides": Annotation(POD),
    "prometheus.istio.io/merge-metrics": Annotation(POD, "bool"),
    "inject.istio.io/templates": Annotation(POD),
    "ambient.istio.io/redirection": Annotation(POD),
    "istio.io/rev": Annotation(("Pod", "Namespace")),
    "networking.istio.io/exportTo": Annotation(("Service",)),
    "networking.istio.io/traffic-distribution": Annotation(("Service", "ServiceEntry")),
    "networking.istio.io/service-type": Annotation(("Gateway",)),
    "networking.istio.io/address-type": Annotation(("Gateway",)),
    "alpha.istio.io/kubernetes-serviceaccounts": Annotation(("Service",), alpha=True),
    "alpha.istio.io/canonical-serviceaccounts": Annotation(("Service",), alpha=True),
    "gateway.istio.io/controller-version": Annotation(("Gateway",)),
    "gateway.istio.io/service-account": Annotation(("Gateway",)),
    "istio.io/dry-run": Annotation(("AuthorizationPolicy",), "bool"),
    "kubernetes.io/ingress.class": Annotation(("Ingress",)),
    "galley.istio.io/analyze-suppress": Annotation(("*",)),
    "istio.io/ingress.class": Annotation(("Ingress",)),
}
# Containers that mark a pod as already injected: injection sets several annotations itself.
INJECTED_CONTAINERS = ("istio-proxy", "istio-init", "istio-validation")
CHECKED_KINDS = ("Pod", "Deployment", "StatefulSet", "DaemonSet", "Service", "Namespace", "Ingress")
_INT = re.compile(r"^-?\d+$")


def _is_istio(key: str) -> bool:
    return "istio.io/" in key


def _valid(value: str, kind: str) -> bool:
    if kind == "int":
        return bool(_INT.match(value.strip()))
    if kind == "bool":
        return value.strip().lower() in ("true", "false")
    return True


def _injected(r: object) -> bool:
    _, spec = pod_template(r)  # type: ignore[arg-type]
    return any(
        isinstance(c, dict) and c.get("name") in INJECTED_CONTAINERS
        for section in ("containers", "initContainers") for c in as_list(spec.get(section))
    )


class K8sAnalyzer(Analyzer):
    """Istio annotations on Kubernetes objects must exist, sit on the right kind and hold valid values."""

    name = "annotations.K8sAnalyzer"
    messages = (msg.UnknownAnnotation, msg.MisplacedAnnotation, msg.InvalidAnnotation, msg.DeprecatedAnnotation,
                msg.AlphaAnnotation)

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        for r in ctx.of(*CHECKED_KINDS):
            if r.kind == "Pod" and _injected(r):
                continue
            for key, value in sorted(r.annotations.items()):
                info = ANNOTATIONS.get(key)
                path = f"metadata.annotations.{key}"
                if info is None:
                    if _is_istio(key):
                        yield diag(msg.UnknownAnnotation, r, key, path=path)
                    continue
                misplaced = "*" not in info.kinds and r.kind not in info.kinds
                if misplaced:
                    yield diag(msg.MisplacedAnnotation, r, key, ", ".join(info.kinds), path=path)
                elif not _valid(value, info.value):
                    yield diag(msg.InvalidAnnotation, r, key, f"expected {info.value} value, got {value!r}",
                               path=path)
                if info.deprecated:
                    yield diag(msg.DeprecatedAnnotation, r, key, "", path=path)
                if info.alpha:
                    yield diag(msg.AlphaAnnotation, r, key, path=path)
