"""AuthorizationPolicy analyzer: selectors that match no workload, source namespaces that do not exist."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sailmesh.analysis import messages as msg
from sailmesh.analysis.analyzer import Analyzer, diag
from sailmesh.analysis.analyzers.selectors import match_labels, selector_string
from sailmesh.analysis.context import Context
from sailmesh.analysis.diagnostic import Diagnostic
from sailmesh.analysis.shapes import as_list


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
            sel = match_labels(ap) or {}
            mesh_wide = ap.namespace == ctx.root_namespace
            if sel or not mesh_wide:
                pods = ctx.pods_matching(None if mesh_wide else ap.namespace, sel)
                if not pods:
                    yield diag(msg.NoMatchingWorkloadsFound, ap, selector_string(sel), path="spec.selector")
            for i, rule in enumerate(as_list(ap.spec.get("rules"))):
                if not isinstance(rule, Mapping):
                    continue
                for j, frm in enumerate(as_list(rule.get("from"))):
                    src = frm.get("source") if isinstance(frm, Mapping) else None
                    if not isinstance(src, Mapping):
                        continue
                    for field in ("namespaces", "notNamespaces"):
                        for pat in as_list(src.get(field)):
                            if not any(namespace_pattern_matches(str(pat), n) for n in namespaces):
                                yield diag(msg.ReferencedResourceNotFound, ap, "namespace", str(pat),
                                           path=f"spec.rules[{i}].from[{j}].source.{field}")
