"""Authentication analyzers: JWKS fetches must be restricted when RequestAuthentications exist."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sailmesh.analysis import messages as msg
from sailmesh.analysis.analyzer import Analyzer, diag
from sailmesh.analysis.analyzers.k8s import pod_template
from sailmesh.analysis.context import Context
from sailmesh.analysis.diagnostic import Diagnostic
from sailmesh.analysis.shapes import as_list
from sailmesh.api.models.security import RequestAuthentication

BLOCKED_CIDRS_ENV = "BLOCKED_CIDRS_IN_JWKS_URIS"


class BlockedCIDRsAnalyzer(Analyzer):
    """istiod should set BLOCKED_CIDRS_IN_JWKS_URIS once any RequestAuthentication fetches a JWKS URI."""

    name = "authn.BlockedCIDRsAnalyzer"
    messages = (msg.JwksUriFetchUnrestricted,)

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        ras = [
            r for r in ctx.of("RequestAuthentication")
            if (policy := ctx.model(r, RequestAuthentication)) is not None
            and any(rule.jwks_uri for rule in policy.jwt_rules or ())
        ]
        if not ras:
            return
        names = ", ".join(f"{r.namespace}/{r.name}" for r in ras)
        for dep in ctx.of("Deployment"):
            if dep.namespace != ctx.root_namespace or dep.labels.get("app") != "istiod":
                continue
            _, spec = pod_template(dep)  # a core kind: its spec stays raw
            envs = {
                str(e.get("name")): e.get("value")
                for c in as_list(spec.get("containers")) if isinstance(c, Mapping) and c.get("name") == "discovery"
                for e in as_list(c.get("env")) if isinstance(e, Mapping)
            }
            if not envs.get(BLOCKED_CIDRS_ENV):
                yield diag(msg.JwksUriFetchUnrestricted, dep, len(ras), names)
