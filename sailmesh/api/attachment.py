"""Istio's policy attachment: whether a policy with a `selector` or `targetRef(s)` binds a sidecar or a gateway.

Istio's WorkloadPolicyMatcher.ShouldAttachPolicy (pilot/pkg/model/policyattachment.go), for the proxies sailmesh
runs (sidecars and gateways; no waypoints). Used by AuthorizationPolicy, RequestAuthentication and Telemetry:
- a policy with `targetRef(s)` never applies to a sidecar;
- on a Kubernetes Gateway API gateway (its proxy carries the label `gateway.networking.k8s.io/gateway-name`), a
  targetRef of group `gateway.networking.k8s.io`, kind `Gateway`, naming that gateway, from a policy in the
  gateway's namespace applies (a reference into another namespace never matches);
- a policy without targetRefs applies by its selector (every proxy when it has none; on gateways too, as
  ENABLE_SELECTOR_BASED_K8S_GATEWAY_POLICY defaults to true). Which namespaces' policies a proxy reads at all
  (its own, the root namespace) is each kind's rule, left to the caller.
Other targetRef kinds (Service, ServiceEntry, GatewayClass) bind waypoints: they match no proxy here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
GATEWAY_API_GROUP = "gateway.networking.k8s.io"
GATEWAY_KIND = "Gateway"


@dataclass(frozen=True)
class TargetRef:
    """One `targetRef` / `targetRefs[i]` (Istio's PolicyTargetReference)."""

    group: str = ""
    kind: str = ""
    name: str = ""
    namespace: str = ""

    @property
    def binds_gateway(self) -> bool:
        """A reference to a Gateway API Gateway (the only kind that binds a proxy sailmesh runs)."""
        return self.group == GATEWAY_API_GROUP and self.kind == GATEWAY_KIND


def target_refs(spec: Mapping[str, Any]) -> tuple[TargetRef, ...]:
    """Istio's GetTargetRefs from a raw spec: `targetRefs`, else the legacy `targetRef`."""
    raw = spec.get("targetRefs") or ([spec["targetRef"]] if spec.get("targetRef") else [])
    return tuple(TargetRef(str(r.get("group") or ""), str(r.get("kind") or ""), str(r.get("name") or ""),
                           str(r.get("namespace") or ""))
                 for r in raw if isinstance(r, Mapping))


def typed_refs(refs: Iterable[Any]) -> tuple[TargetRef, ...]:
    """TargetRefs from typed models with group/kind/name/namespace attributes (api/models)."""
    return tuple(TargetRef(r.group or "", r.kind or "", r.name or "", r.namespace or "") for r in refs)


def attaches(policy_namespace: str, selector: Mapping[str, str] | None, refs: Sequence[TargetRef],
             proxy_namespace: str, proxy_labels: Mapping[str, str]) -> bool:
    """Whether a policy (of a namespace the proxy reads) binds the proxy (see the module docstring)."""
    gateway_name = proxy_labels.get(GATEWAY_NAME_LABEL)
    if refs:
        if gateway_name is None or policy_namespace != proxy_namespace:
            return False
        return any(ref.binds_gateway and ref.name == gateway_name and ref.namespace in ("", proxy_namespace)
                   for ref in refs)
    return all(proxy_labels.get(k) == v for k, v in (selector or {}).items())


def unbound_kinds(refs: Sequence[TargetRef]) -> list[str]:
    """The kinds of references that bind no proxy here (waypoint attachments), for "accepted, not enforced"."""
    return sorted({ref.kind or "(no kind)" for ref in refs if not ref.binds_gateway})
