"""RateLimit analyzers: a RateLimit whose selector matches no workload limits nothing (IST0127, as Istio says of
its own policies); one whose `provider` names no envoyRateLimit extensionProvider stays local (IST0101)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sailmesh.analysis import messages as msg
from sailmesh.analysis.analyzer import Analyzer, diag
from sailmesh.analysis.analyzers.selectors import selector_string
from sailmesh.analysis.context import Context
from sailmesh.analysis.diagnostic import Diagnostic
from sailmesh.api import ratelimit


class RateLimitSelectorAnalyzer(Analyzer):
    """RateLimits must select some workload (their namespace's, or any for the root namespace)."""

    name = "ratelimit.RateLimitSelectorAnalyzer"
    messages = (msg.NoMatchingWorkloadsFound,)

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        for rl in ctx.of(ratelimit.KIND):
            spec, problems = ratelimit.parse(rl.spec)
            if problems:
                continue  # validation reports them
            sel = dict(spec.selector)
            mesh_wide = rl.namespace == ctx.root_namespace
            if not ctx.pods_matching(None if mesh_wide else rl.namespace, sel):
                yield diag(msg.NoMatchingWorkloadsFound, rl, selector_string(sel), path="spec.selector")


class RateLimitProviderAnalyzer(Analyzer):
    """A RateLimit's `provider` must name an `envoyRateLimit` extensionProvider of the mesh config (else the
    sidecars keep local buckets: no count is shared)."""

    name = "ratelimit.RateLimitProviderAnalyzer"
    messages = (msg.ReferencedResourceNotFound,)

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        providers = {str(p.get("name")) for p in ctx.mesh_config.get("extensionProviders") or ()
                     if isinstance(p, Mapping) and isinstance(p.get("envoyRateLimit"), Mapping)}
        for rl in ctx.of(ratelimit.KIND):
            spec, problems = ratelimit.parse(rl.spec)
            if not problems and spec.provider and spec.provider not in providers:
                yield diag(msg.ReferencedResourceNotFound, rl, "envoyRateLimit extension provider", spec.provider,
                           path="spec.provider")
