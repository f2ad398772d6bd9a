"""EnvoyFilter patch analyzer: relative operations without priority, operations ignored for their applyTo."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sailmesh.analysis import messages as msg
from sailmesh.analysis.analyzer import Analyzer, diag
from sailmesh.analysis.context import Context
from sailmesh.analysis.diagnostic import Diagnostic
from sailmesh.analysis.shapes import as_list, dig
from sailmesh.api.resource import Resource

ROUTE_LEVEL = ("ROUTE_CONFIGURATION", "HTTP_ROUTE")
FILTER_LEVEL = ("NETWORK_FILTER", "HTTP_FILTER", "VIRTUAL_HOST")  # REPLACE targets Istio accepts


class EnvoyPatchAnalyzer(Analyzer):
    """Mirrors Istio's envoyfilter.EnvoyPatchAnalyzer, including its proxyVersion bookkeeping across filters."""

    name = "envoyfilter.EnvoyPatchAnalyzer"
    messages = (
        msg.EnvoyFilterUsesRelativeOperation,
        msg.EnvoyFilterUsesRelativeOperationWithProxyVersion,
        msg.EnvoyFilterUsesReplaceOperationIncorrectly,
        msg.EnvoyFilterUsesAddOperationIncorrectly,
        msg.EnvoyFilterUsesRemoveOperationIncorrectly,
    )

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        versioned_filters: list[str] = []
        for ef in ctx.of("EnvoyFilter"):
            yield from self._filter(ef, versioned_filters)

    def _filter(self, ef: Resource, versioned: list[str]) -> Iterable[Diagnostic]:
        priority = ef.spec.get("priority") or 0
        for i, patch in enumerate(as_list(ef.spec.get("configPatches"))):
            if not isinstance(patch, Mapping):
                continue
            path = f"spec.configPatches[{i}]"
            match = patch.get("match")
            filter_name = str(dig(match, "listener", "filterChain", "filter", "name") or "")
            if dig(match, "proxy") is not None and filter_name:
                versioned.append(filter_name)
            op = str(dig(patch, "patch", "operation") or "")
            apply_to = str(patch.get("applyTo") or "")
            relative = False
            if op == "ADD":
                if apply_to in ROUTE_LEVEL:
                    yield diag(msg.EnvoyFilterUsesAddOperationIncorrectly, ef, path=path)
            elif op == "REMOVE":
                if apply_to in ROUTE_LEVEL:
                    yield diag(msg.EnvoyFilterUsesRemoveOperationIncorrectly, ef, path=path)
                else:
                    relative = True
            elif op == "REPLACE":
                if apply_to not in FILTER_LEVEL:
                    yield diag(msg.EnvoyFilterUsesReplaceOperationIncorrectly, ef, path=path)
                else:
                    relative = True
            elif op in ("INSERT_BEFORE", "INSERT_AFTER"):
                relative = True
            if relative and not priority:
                if filter_name and filter_name in versioned:
                    yield diag(msg.EnvoyFilterUsesRelativeOperationWithProxyVersion, ef, path=path)
                yield diag(msg.EnvoyFilterUsesRelativeOperation, ef, path=path)
