"""A Gateway's `spec.infrastructure.parametersRef`: Istio's customization of its automated deployment.

As Istio's deployment controller reads it: a ConfigMap of the Gateway's namespace (group "", kind ConfigMap)
whose keys hold YAML overlays, applied to the generated objects as Kubernetes strategic merge patches:
`deployment`, `service`, `serviceAccount`, and `horizontalPodAutoscaler` / `podDisruptionBudget`, whose presence
makes Istio create those objects too (Istio's kube-gateway template: an autoscaling/v2 HorizontalPodAutoscaler
targeting the Deployment with maxReplicas 1, a policy/v1 PodDisruptionBudget selecting the gateway's pods, each
named `<gateway>-istio`, the overlay merged in). A reference of another kind, a
missing ConfigMap or an overlay that is not a YAML mapping: the Gateway is not Accepted (the Gateway API's
`InvalidParameters`, GatewayInfrastructure.ParametersRef) and its deployment is left as it was.

The merge follows the strategic merge patch rules for what gateway overlays touch: mappings merge key by key
(a null value removes the key); lists of objects merge by their patch merge key (`name` for containers, volumes,
env, imagePullSecrets; `port` for a Service's ports, `containerPort` for a container's, `mountPath` for
volumeMounts); other lists are replaced.

In the embedded mesh a gateway is a process, not a Deployment: the `deployment` overlay's pod template labels
(`spec.template.metadata.labels`) are its labels too; nothing else of the ConfigMap applies there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import yaml

from sailmesh.api.resource import Resource

INVALID_PARAMETERS = "InvalidParameters"  # the Gateway API's GatewayReasonInvalidParameters
OVERLAY_KEYS = {"Deployment": "deployment", "Service": "service", "ServiceAccount": "serviceAccount",
                "HorizontalPodAutoscaler": "horizontalPodAutoscaler", "PodDisruptionBudget": "podDisruptionBudget"}
OPTIONAL_KINDS = {"HorizontalPodAutoscaler": "autoscaling/v2", "PodDisruptionBudget": "policy/v1"}  # only if set
NOT_APPLIED_KEYS = ("horizontalPodAutoscaler", "podDisruptionBudget")  # in the embedded mesh (no autoscaler)
_MERGE_KEYS = ("name", "containerPort", "port", "mountPath")


def overlays(gw: Resource, config_map: Callable[[str, str], Resource | None]
             ) -> tuple[dict[str, dict[str, Any]], str]:
    """(data key -> the overlay mapping, "" or the InvalidParameters message); ({}, "") without a parametersRef."""
    ref = ((gw.spec.get("infrastructure") or {}) if isinstance(gw.spec.get("infrastructure"), Mapping) else {}
           ).get("parametersRef")
    if not isinstance(ref, Mapping):
        return {}, ""
    if (ref.get("group") or "") not in ("", "core") or ref.get("kind") != "ConfigMap":
        return {}, f"unsupported parametersRef {ref.get('group') or 'core'}/{ref.get('kind')}: only ConfigMap"
    name = str(ref.get("name", ""))
    cm = config_map(gw.namespace, name)
    if cm is None:
        return {}, f"parametersRef ConfigMap {gw.namespace}/{name} not found"
    data = (cm.raw or {}).get("data")
    out: dict[str, dict[str, Any]] = {}
    for key, text in (data.items() if isinstance(data, Mapping) else ()):
        try:
            value = yaml.safe_load(str(text)) if text else {}
        except yaml.YAMLError as e:
            return {}, f"parametersRef ConfigMap {gw.namespace}/{name}: {key} is not YAML: {e}"
        if value is None:
            value = {}
        if not isinstance(value, dict):
            return {}, f"parametersRef ConfigMap {gw.namespace}/{name}: {key} is not a mapping"
        out[str(key)] = value
    return out, ""


def _merge_key(items: list[Any], patch: list[Any]) -> str:
    both = [*items, *patch]
    if not both or not all(isinstance(i, dict) for i in both):
        return ""
    return next((k for k in _MERGE_KEYS if all(k in i for i in both)), "")


def merge(base: Any, patch: Any) -> Any:
    """`base` with the strategic-merge-style `patch` applied (a new object; neither argument is changed)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = merge(base.get(k), v)
        return out
    if isinstance(base, list) and isinstance(patch, list):
        key = _merge_key(base, patch)
        if not key:
            return list(patch)
        merged = list(base)
        for item in patch:
            at = next((i for i, b in enumerate(merged) if b.get(key) == item.get(key)), None)
            if at is None:
                merged.append(item)
            else:
                merged[at] = merge(merged[at], item)
        return merged
    return patch


def pod_labels(found: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """The `deployment` overlay's pod template labels (what the embedded gateway process gets)."""
    labels = (((found.get("deployment") or {}).get("spec") or {}).get("template") or {}).get("metadata") or {}
    labels = labels.get("labels") if isinstance(labels, Mapping) else None
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {}
