"""AuthorizationPolicy analyzer: selectors that match no workload, source namespaces that do not exist."""

from __future__ import annotations

from collections.abc import Iterable

from sailmesh.analysis import messages as msg
from sailmesh.analysis.analyzer import Analyzer, diag
from sailmesh.analysis.analyzers.selectors import labels_of, selector_string
from sailmesh.analysis.context import Context
from sailmesh.analysis.diagnostic import Diagnostic
from sailmesh.api.models.security import AuthorizationPolicy


def namespace_pattern_matches(pattern: str, namespace: str) -> bool:
    """Istio's string match for source namespaces: exact, `*`, `prefix*` or `*suffix`."""
    if pattern == "*" or pattern == namespace:
        return True
    if pattern.endswith("*"):
        return namespace.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return namespace.endswith(pattern[1:])
    return False


class AuthorizationPoliciesAnalyzer(Analyzer):
    """Policies must apply to some workload, and referenced source namespaces must exist."""

    name = "authz.AuthorizationPoliciesAnalyzer"
    messages = (msg.NoMatchingWorkloadsFound, msg.ReferencedResourceNotFound)

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        namespaces = ctx.namespaces()
        for ap in ctx.of("AuthorizationPolicy"):
            policy = ctx.model(ap, AuthorizationPolicy)
            if policy is None:
                continue
            sel = labels_of(policy.selector) or {}
            mesh_wide = ap.namespace == ctx.root_namespace
            if sel or not mesh_wide:
                pods = ctx.pods_matching(None if mesh_wide else ap.namespace, sel)
                if not pods:
                    yield diag(msg.NoMatchingWorkloadsFound, ap, selector_string(sel), path="spec.selector")
            for i, rule in enumerate(policy.rules or ()):
                for j, frm in enumerate(rule.from_ or ()):
                    src = frm.source
                    if src is None:
                        continue
                    for field, patterns in (("namespaces", src.namespaces), ("notNamespaces", src.not_namespaces)):
                        for pat in patterns or ():
                            if not any(namespace_pattern_matches(pat, n) for n in namespaces):
                                yield diag(msg.ReferencedResourceNotFound, ap, "namespace", pat,
                                           path=f"spec.rules[{i}].from[{j}].source.{field}")
