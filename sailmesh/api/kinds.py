"""The registry of kinds sailmesh understands: group, kind, served versions, namespaced or not."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KindInfo:
    """One known kind: its API group ("" for core), served versions, and scope."""

    group: str
    kind: str
    versions: tuple[str, ...]
    namespaced: bool = True
    istio_crd: bool = False  # validated against Istio's CRD schema
    # the kind's name inside sailmesh when it differs from `kind` (the Gateway API's Gateway would clash with
    # Istio's: it is stored and looked up as "KubernetesGateway", Istio's own internal name, gvk.KubernetesGateway)
    internal: str = ""

    @property
    def name(self) -> str:
        """The kind as resources, stores and snapshots key it."""
        return self.internal or self.kind

    def api_versions(self) -> tuple[str, ...]:
        return tuple(f"{self.group}/{v}" if self.group else v for v in self.versions)


NETWORKING = "networking.istio.io"
SECURITY = "security.istio.io"
TELEMETRY = "telemetry.istio.io"
EXTENSIONS = "extensions.istio.io"
LOCAL = "local.sailmesh.io"
POLICY = "policy.sailmesh.io"  # sailmesh's own policy kinds (RateLimit)
GATEWAY_API = "gateway.networking.k8s.io"  # the Kubernetes Gateway API (api/gatewayapi.py, generate/gatewayapi/)
KUBERNETES_GATEWAY = "KubernetesGateway"
_NET3 = ("v1alpha3", "v1beta1", "v1")

KINDS: tuple[KindInfo, ...] = (
    KindInfo(NETWORKING, "VirtualService", _NET3, istio_crd=True),
    KindInfo(NETWORKING, "DestinationRule", _NET3, istio_crd=True),
    KindInfo(NETWORKING, "Gateway", _NET3, istio_crd=True),
    KindInfo(NETWORKING, "ServiceEntry", _NET3, istio_crd=True),
    KindInfo(NETWORKING, "Sidecar", _NET3, istio_crd=True),
    KindInfo(NETWORKING, "WorkloadEntry", _NET3, istio_crd=True),
    KindInfo(NETWORKING, "WorkloadGroup", _NET3, istio_crd=True),
    KindInfo(NETWORKING, "EnvoyFilter", ("v1alpha3",), istio_crd=True),
    KindInfo(NETWORKING, "ProxyConfig", ("v1beta1",), istio_crd=True),
    KindInfo(SECURITY, "PeerAuthentication", ("v1beta1", "v1"), istio_crd=True),
    KindInfo(SECURITY, "AuthorizationPolicy", ("v1beta1", "v1"), istio_crd=True),
    KindInfo(SECURITY, "RequestAuthentication", ("v1beta1", "v1"), istio_crd=True),
    KindInfo(TELEMETRY, "Telemetry", ("v1alpha1", "v1"), istio_crd=True),
    KindInfo(EXTENSIONS, "WasmPlugin", ("v1alpha1",), istio_crd=True),
    KindInfo("", "Service", ("v1",)),
    KindInfo("", "Namespace", ("v1",), namespaced=False),
    KindInfo("", "ServiceAccount", ("v1",)),
    KindInfo("", "Pod", ("v1",)),
    KindInfo("", "ConfigMap", ("v1",)),
    KindInfo("", "Secret", ("v1",)),
    KindInfo("apps", "Deployment", ("v1",)),
    # Other Kubernetes kinds found in ordinary manifests: read (analyzers use them), not validated deeply.
    KindInfo("", "Node", ("v1",), namespaced=False),
    KindInfo("", "Endpoints", ("v1",)),
    KindInfo("discovery.k8s.io", "EndpointSlice", ("v1",)),
    KindInfo("apps", "StatefulSet", ("v1",)),
    KindInfo("apps", "DaemonSet", ("v1",)),
    KindInfo("apps", "ReplicaSet", ("v1",)),
    KindInfo("batch", "Job", ("v1",)),
    KindInfo("batch", "CronJob", ("v1",)),
    KindInfo("networking.k8s.io", "Ingress", ("v1",)),
    KindInfo(LOCAL, "LocalWorkload", ("v1alpha1",)),
    KindInfo(POLICY, "RateLimit", ("v1alpha1",)),
    KindInfo(GATEWAY_API, "GatewayClass", ("v1", "v1beta1"), namespaced=False),
    KindInfo(GATEWAY_API, "Gateway", ("v1", "v1beta1"), internal=KUBERNETES_GATEWAY),
    KindInfo(GATEWAY_API, "HTTPRoute", ("v1", "v1beta1")),
    KindInfo(GATEWAY_API, "GRPCRoute", ("v1",)),
    KindInfo(GATEWAY_API, "TCPRoute", ("v1alpha2",)),
    KindInfo(GATEWAY_API, "TLSRoute", ("v1alpha2",)),
    KindInfo(GATEWAY_API, "ReferenceGrant", ("v1beta1",)),
    KindInfo(GATEWAY_API, "BackendTLSPolicy", ("v1alpha3",)),
)

_BY_GROUP_KIND: dict[tuple[str, str], KindInfo] = {(k.group, k.kind): k for k in KINDS}
_BY_GROUP_KIND.update({(k.group, k.internal): k for k in KINDS if k.internal})
_BY_KIND: dict[str, list[KindInfo]] = {}
for _k in KINDS:
    _BY_KIND.setdefault(_k.kind, []).append(_k)


def split_api_version(api_version: str) -> tuple[str, str]:
    """("networking.istio.io", "v1") from "networking.istio.io/v1"; ("", "v1") from "v1"."""
    group, _, version = api_version.rpartition("/")
    return group, version


def lookup(api_version: str, kind: str) -> KindInfo | None:
    """The KindInfo for an apiVersion + kind when that version is served, else None."""
    group, version = split_api_version(api_version)
    info = _BY_GROUP_KIND.get((group, kind))
    return info if info is not None and version in info.versions else None


def internal_kind(api_version: str, kind: str) -> str:
    """The name sailmesh keys a kind by: "KubernetesGateway" for the Gateway API's Gateway, else `kind`."""
    info = _BY_GROUP_KIND.get((split_api_version(api_version)[0], kind))
    return info.name if info is not None else kind


def external_kind(kind: str) -> str:
    """The kind as written in YAML ("Gateway" for "KubernetesGateway")."""
    return "Gateway" if kind == KUBERNETES_GATEWAY else kind


def explain_unknown(api_version: str, kind: str) -> str:
    """Why an apiVersion/kind pair is not accepted, naming what would be."""
    group, version = split_api_version(api_version)
    info = _BY_GROUP_KIND.get((group, kind))
    if info is not None:
        return (f"unknown version {version!r} for {kind} in group {group or 'core'!r}; "
                f"served: {', '.join(info.api_versions())}")
    others = _BY_KIND.get(kind)
    if others:
        return (f"unknown kind {kind!r} in group {group or 'core'!r} (apiVersion {api_version!r}); sailmesh serves "
                f"{kind} only as {', '.join(others[0].api_versions())}")
    return f"unknown kind {kind!r} (apiVersion {api_version!r})"
