"""Kubernetes Gateway analyzer: policies selecting gateway pods by label instead of targetRef."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sailmesh.analysis import messages as msg
from sailmesh.analysis.analyzer import Analyzer, diag
from sailmesh.analysis.analyzers.selectors import labels_of, raw_match_labels
from sailmesh.analysis.context import Context
from sailmesh.analysis.diagnostic import Diagnostic
from sailmesh.api import attachment
from sailmesh.api.models.security import AuthorizationPolicy, PolicyTargetReference, RequestAuthentication
from sailmesh.api.resource import Resource

GATEWAY_NAME_LABEL = attachment.GATEWAY_NAME_LABEL
POLICY_KINDS = ("AuthorizationPolicy", "RequestAuthentication", "Telemetry", "WasmPlugin")
TYPED_POLICIES: dict[str, type[AuthorizationPolicy | RequestAuthentication]] = {
    "AuthorizationPolicy": AuthorizationPolicy, "RequestAuthentication": RequestAuthentication}
UNSET_REF = PolicyTargetReference()  # `targetRef: {}` names nothing: read as unset, like an empty selector


def _target(ctx: Context, r: Resource) -> tuple[bool, Mapping[str, str] | None] | None:
    """(whether the policy has a targetRef(s), its selector labels); None when its spec does not fit its model."""
    if r.kind in TYPED_POLICIES:
        policy = ctx.model(r, TYPED_POLICIES[r.kind])
        if policy is None:
            return None
        return policy.target_ref not in (None, UNSET_REF) or bool(policy.target_refs), labels_of(policy.selector)
    # Telemetry and WasmPlugin have no typed model: read raw
    return bool(r.spec.get("targetRef") or r.spec.get("targetRefs")), raw_match_labels(r)


class SelectorAnalyzer(Analyzer):
    """A workload selector on a Kubernetes Gateway's pods has no effect; targetRef is required."""

    name = "k8sgateway.SelectorAnalyzer"
    messages = (msg.IneffectiveSelector,)

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        for r in ctx.of(*POLICY_KINDS):
            found = _target(ctx, r)
            if found is None:
                continue
            targeted, sel = found
            if targeted or not sel:
                continue
            for pod in ctx.pods_matching(r.namespace, sel):
                gw = pod.labels.get(GATEWAY_NAME_LABEL)
                if gw:
                    yield diag(msg.IneffectiveSelector, r, gw, path="spec.selector")
                    break
