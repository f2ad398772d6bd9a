"""AuthorizationPolicy -> Envoy RBAC: which policies apply to a proxy, and the RBAC configs Istio builds from them.

Istio's pilot/pkg/model/authorization.go + policyattachment.go (selection) and pilot/pkg/security/authz/builder
(istio/istio 86c9f01f):
- A proxy gets the policies of the root namespace (`istio-system`: mesh-wide) and of its own namespace, oldest
  first, whose `selector` is a subset of its labels (no selector: every workload of the namespace). A policy with
  `targetRef(s)` never applies to a sidecar; on a Kubernetes Gateway API gateway (label
  `gateway.networking.k8s.io/gateway-name`) a `Gateway` targetRef of the same namespace and name applies.
- Per action one RBAC config: policies become `ns[NS]-policy[NAME]-rule[I]` entries; a policy without rules
  (`spec: {}`) gets a policy that matches nothing (so an ALLOW `spec: {}` denies everything). Policies annotated
  `istio.io/dry-run: "true"` go into `shadow_rules` (evaluated and counted, not enforced).
- The HTTP chain runs AUDIT (action LOG), DENY, then ALLOW filters; CUSTOM comes first (filters/ext_authz.py).
  With no ALLOW policy there is no ALLOW filter, so everything not denied is allowed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from envoy.config.rbac.v3 import rbac_pb2

from sailmesh.api import attachment
from sailmesh.api.models import model_of
from sailmesh.api.models.security import AuthorizationPolicy
from sailmesh.api.resource import Resource
from sailmesh.generate import authz_model as am
from sailmesh.snapshot.model import MeshSnapshot, ProxyView

KIND = "AuthorizationPolicy"
GATEWAY_NAME_LABEL = attachment.GATEWAY_NAME_LABEL
DRY_RUN_ANNOTATION = "istio.io/dry-run"
SHADOW_ALLOW_PREFIX = "istio_dry_run_allow_"  # Istio's RBACShadowRulesAllowStatPrefix
SHADOW_DENY_PREFIX = "istio_dry_run_deny_"
TCP_STAT_PREFIX = "tcp."  # Istio's RBACTCPFilterStatPrefix
EXT_AUTHZ_PREFIX = "istio-ext-authz"  # Istio's extAuthzMatchPrefix: names of CUSTOM rules
ACTIONS = {"ALLOW": rbac_pb2.RBAC.ALLOW, "DENY": rbac_pb2.RBAC.DENY, "AUDIT": rbac_pb2.RBAC.LOG}


@dataclass(frozen=True)
class Selected:
    """The policies that apply to one proxy, by action (Istio's AuthorizationPoliciesResult), oldest first."""

    custom: tuple[Resource, ...] = ()
    deny: tuple[Resource, ...] = ()
    allow: tuple[Resource, ...] = ()
    audit: tuple[Resource, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.custom or self.deny or self.allow or self.audit)


def _target_refs(policy: AuthorizationPolicy) -> tuple[attachment.TargetRef, ...]:
    """Istio's GetTargetRefs: targetRefs, else the legacy targetRef."""
    return attachment.typed_refs(policy.target_refs or ((policy.target_ref,) if policy.target_ref is not None else ()))


def attaches(resource: Resource, policy: AuthorizationPolicy, proxy: ProxyView, root_namespace: str) -> bool:
    """Istio's WorkloadPolicyMatcher.ShouldAttachPolicy for a sidecar or a gateway (api/attachment.py)."""
    selector = policy.selector.match_labels if policy.selector is not None else None
    return attachment.attaches(resource.namespace, selector, _target_refs(policy), proxy.namespace, proxy.labels)


def select(snapshot: MeshSnapshot, proxy: ProxyView) -> Selected:
    """Istio's ListAuthorizationPolicies: root namespace first, then the proxy's namespace, oldest first."""
    root = snapshot.mesh.root_namespace
    out: dict[str, list[Resource]] = {"CUSTOM": [], "DENY": [], "ALLOW": [], "AUDIT": []}
    policies = snapshot.of_kind(KIND)
    for ns in dict.fromkeys((root, proxy.namespace)):
        for r in policies:
            if r.namespace != ns:
                continue
            p = model_of(r, AuthorizationPolicy)
            if attaches(r, p, proxy, root):
                action = p.action or "ALLOW"
                if action in out:
                    out[action].append(r)
    return Selected(tuple(out["CUSTOM"]), tuple(out["DENY"]), tuple(out["ALLOW"]), tuple(out["AUDIT"]))


def is_dry_run(resource: Resource) -> bool:
    """`istio.io/dry-run: "true"` (Go's ParseBool spellings)."""
    value = (resource.annotations or {}).get(DRY_RUN_ANNOTATION, "")
    return value in ("1", "t", "T", "TRUE", "true", "True")


def policy_name(namespace: str, name: str, rule: int, provider: str | None = None) -> str:
    """`ns[foo]-policy[httpbin]-rule[0]`; CUSTOM rules are prefixed `istio-ext-authz-<provider>-`."""
    head = "" if provider is None else (f"{EXT_AUTHZ_PREFIX}-{provider}-" if provider else f"{EXT_AUTHZ_PREFIX}-")
    return f"{head}ns[{namespace}]-policy[{name}]-rule[{rule}]"


def trust_domains(snapshot: MeshSnapshot) -> tuple[str, ...]:
    """Istio's trust domain bundle: the mesh's trust domain, then its aliases."""
    mc = snapshot.mesh_config
    return (mc.trust_domain, *mc.trust_domain_aliases)


@dataclass(frozen=True)
class Context:
    """What translation needs besides the policies: the trust domain bundle (empty: no migration, as Istio's
    empty Bundle) and the JWT hook (None: Istio's own matchers on jwt_authn's `payload` metadata)."""

    trust_domains: tuple[str, ...] = ()
    request_auth: am.RequestAuthMatcher | None = None


def request_auth_matcher(_snapshot: MeshSnapshot, _proxy: ProxyView) -> am.RequestAuthMatcher | None:
    """THE JWT HOOK: how `requestPrincipals` and `request.auth.*` match for this proxy.

    None: Istio's own matchers (authz_model.request_auth_principal), which read what jwt_authn writes
    (generate/filters/jwt.py: the verified payload in `envoy.filters.http.jwt_authn` under `payload`). Return a
    matcher here only if that metadata ever takes another shape; without a RequestAuthentication no request carries
    a payload, so an ALLOW on these keys denies and a `notRequestPrincipals: ["*"]` DENY denies, as in Istio.
    """
    return None


def context(snapshot: MeshSnapshot, proxy: ProxyView) -> Context:
    """The translation context of one proxy."""
    return Context(trust_domains(snapshot), request_auth_matcher(snapshot, proxy))


@dataclass
class Built:
    """One action's RBAC (Istio's builtRule): enforced rules and dry-run (shadow) rules, None when empty."""

    rules: rbac_pb2.RBAC | None = None
    shadow: rbac_pb2.RBAC | None = None
    by_provider: dict[str, tuple[rbac_pb2.RBAC, rbac_pb2.RBAC]] = field(default_factory=dict)


def add_policy(target: rbac_pb2.RBAC, resource: Resource, action: int, for_tcp: bool, ctx: Context,
               provider: str | None = None) -> None:
    """Every rule of one policy into `target` (Istio's Builder.build loop body)."""
    policy = model_of(resource, AuthorizationPolicy)
    rules = policy.rules or ()
    for i, rule in enumerate(rules):
        name = policy_name(resource.namespace, resource.name, i, provider)
        try:
            generated = am.generate(am.rule_model(rule, ctx.trust_domains), for_tcp, action, resource.namespace,
                                    ctx.request_auth)
        except (am.Rejected, am.Unsupported):
            continue  # Istio: "skipped rule ... on TCP filter chain" / "skipped invalid rule"
        target.policies[name].CopyFrom(generated)
    if not rules:
        target.policies[policy_name(resource.namespace, resource.name, 0, provider)].CopyFrom(am.match_never())


def build(policies: Sequence[Resource], action: int, for_tcp: bool, ctx: Context) -> Built | None:
    """Istio's Builder.build for ALLOW/DENY/AUDIT: enforced and dry-run policies in two RBAC configs."""
    if not policies:
        return None
    enforce, shadow = rbac_pb2.RBAC(action=action), rbac_pb2.RBAC(action=action)
    has_enforce = has_shadow = False
    for r in policies:
        if is_dry_run(r):
            has_shadow = True
            add_policy(shadow, r, action, for_tcp, ctx)
        else:
            has_enforce = True
            add_policy(enforce, r, action, for_tcp, ctx)
    return Built(enforce if has_enforce else None, shadow if has_shadow else None)


def build_custom(policies: Sequence[Resource], for_tcp: bool, ctx: Context) -> Built | None:
    """Istio's Builder.build for CUSTOM: rules grouped by provider, named `istio-ext-authz-<provider>-...`, action
    DENY (the RBAC filter only marks matching requests in metadata; ext_authz decides)."""
    if not policies:
        return None
    out = Built()
    for r in policies:
        spec_provider = model_of(r, AuthorizationPolicy).provider
        provider = (spec_provider.name if spec_provider is not None else None) or ""
        if provider not in out.by_provider:
            out.by_provider[provider] = (rbac_pb2.RBAC(action=rbac_pb2.RBAC.DENY),
                                         rbac_pb2.RBAC(action=rbac_pb2.RBAC.DENY))
        enforce, shadow = out.by_provider[provider]
        add_policy(shadow if is_dry_run(r) else enforce, r, rbac_pb2.RBAC.DENY, for_tcp, ctx, provider)
    return out


def shadow_prefix(rules: rbac_pb2.RBAC | None) -> str:
    """Istio's shadowRuleStatPrefix: without shadow rules Go reads the nil config's action as ALLOW (0), so
    every filter without dry-run policies carries the allow prefix; kept for byte-equal config."""
    if rules is None:
        return SHADOW_ALLOW_PREFIX
    return {rbac_pb2.RBAC.ALLOW: SHADOW_ALLOW_PREFIX, rbac_pb2.RBAC.DENY: SHADOW_DENY_PREFIX}.get(rules.action, "")


def local_rbacs(selected: Selected, for_tcp: bool, ctx: Context) -> list[Built]:
    """The AUDIT, DENY and ALLOW configs, in Istio's filter order (each non-empty one becomes a filter)."""
    out = []
    for policies, action in ((selected.audit, ACTIONS["AUDIT"]), (selected.deny, ACTIONS["DENY"]),
                             (selected.allow, ACTIONS["ALLOW"])):
        b = build(policies, action, for_tcp, ctx)
        if b is not None:
            out.append(b)
    return out


def not_enforced(resource: Resource) -> list[str]:
    """What one AuthorizationPolicy asks for that sailmesh accepts but does not act on (generate/enforcement.py)."""
    p = model_of(resource, AuthorizationPolicy)
    where = f"AuthorizationPolicy {resource.namespace}/{resource.name}"
    kinds = attachment.unbound_kinds(_target_refs(p))
    if kinds:
        return [f"{where}: accepted, not enforced: targetRef(s) of kind {', '.join(kinds)} (waypoints are not "
                f"supported; a targetRef policy never applies to a sidecar)"]
    return []
