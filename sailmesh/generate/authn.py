"""RequestAuthentication selection: which policies and JWT rules apply to a proxy, as Istio selects them.

Istio's rule (pilot/pkg/model/authentication.go, getConfigsForWorkload; istio.io RequestAuthentication reference):
a policy in the root namespace (istio-system) without a selector applies to the whole mesh, one in a workload's
namespace without a selector to that namespace, and one with a `selector` to the workloads (of its namespace, or of
any namespace from the root namespace) whose labels match it. Unlike PeerAuthentication there is no precedence:
every matching RequestAuthentication applies, and their jwtRules are concatenated and stable-sorted by issuer
(pilot/pkg/security/authn/policy_applier.go, newPolicyApplier), so a token from any of their issuers is accepted.

A policy with `targetRef`/`targetRefs` never applies to a sidecar; a `Gateway` reference (group
gateway.networking.k8s.io) binds that Kubernetes Gateway's own gateway proxy (label
`gateway.networking.k8s.io/gateway-name`) when the policy is in the gateway's namespace (Istio's policy attachment,
api/attachment.py). Other kinds (Service, ServiceEntry, GatewayClass) bind waypoints, which sailmesh does not run:
accepted, not enforced (`not_enforced` names them, and the control plane logs it).
"""

from __future__ import annotations

from collections.abc import Iterable

from sailmesh.api import attachment
from sailmesh.api.hosts import selector_matches
from sailmesh.api.models import model_of
from sailmesh.api.models.security import JWTRule, RequestAuthentication
from sailmesh.api.resource import Resource
from sailmesh.errors import ModelError
from sailmesh.registry.jwks import discoverable
from sailmesh.snapshot.model import MeshSnapshot, ProxyView

KIND = "RequestAuthentication"


def _spec(resource: Resource) -> RequestAuthentication | None:
    try:
        return model_of(resource, RequestAuthentication)
    except ModelError:  # validation keeps these out of the store; never fail a proxy's push over one
        return None


def _refs(spec: RequestAuthentication) -> tuple[attachment.TargetRef, ...]:
    return attachment.typed_refs(spec.target_refs or ((spec.target_ref,) if spec.target_ref is not None else ()))


def applies(resource: Resource, proxy: ProxyView, root_namespace: str) -> bool:
    """Whether the RequestAuthentication applies to the proxy's workload (see the module docstring)."""
    spec = _spec(resource)
    if spec is None or resource.namespace not in (proxy.namespace, root_namespace):
        return False
    refs = _refs(spec)
    if refs:
        return attachment.attaches(resource.namespace, None, refs, proxy.namespace, proxy.labels)
    labels = spec.selector.match_labels if spec.selector is not None else None
    return not labels or selector_matches(labels, proxy.labels)


def policies_for(snapshot: MeshSnapshot, proxy: ProxyView) -> tuple[Resource, ...]:
    """Every RequestAuthentication that applies to the proxy, oldest first."""
    root = snapshot.mesh.root_namespace
    return tuple(r for r in snapshot.of_kind(KIND) if applies(r, proxy, root))


def jwt_rules(snapshot: MeshSnapshot, proxy: ProxyView) -> tuple[JWTRule, ...]:
    """The jwtRules of every applying policy, concatenated and stable-sorted by issuer (Istio's order)."""
    rules = [rule for r in policies_for(snapshot, proxy) if (spec := _spec(r)) is not None
             for rule in spec.jwt_rules or ()]
    return tuple(sorted(rules, key=lambda rule: rule.issuer or ""))


def not_enforced(resources: Iterable[Resource]) -> list[str]:
    """What these RequestAuthentications ask for that sailmesh accepts but does not enforce, one line each."""
    out = []
    for r in resources:
        spec = _spec(r)
        if spec is None:
            continue
        where = f"RequestAuthentication {r.namespace}/{r.name}"
        kinds = attachment.unbound_kinds(_refs(spec))
        if kinds:
            out.append(f"{where}: targetRef(s) of kind {', '.join(kinds)} accepted, not enforced (they bind "
                       "waypoints, which sailmesh does not run; a Gateway targetRef binds that Gateway's proxy)")
        for i, rule in enumerate(spec.jwt_rules or ()):
            if not rule.jwks and not rule.jwks_uri and not discoverable(rule.issuer):
                out.append(f"{where}: jwtRules[{i}] has neither jwks nor jwksUri and its issuer is no http(s) URL "
                           "to discover its keys from (OpenID discovery), so its tokens are rejected")
            if rule.presence:
                out.append(f"{where}: jwtRules[{i}].presence accepted, not enforced")
    return out
