"""Deprecated-field analyzer: fields Istio still accepts but ignores or has replaced."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sailmesh.analysis import messages as msg
from sailmesh.analysis.analyzer import Analyzer, diag
from sailmesh.analysis.context import Context
from sailmesh.analysis.diagnostic import Diagnostic
from sailmesh.analysis.shapes import as_list


def replaced(field: str, replacement: str) -> str:
    return f"{field} is deprecated; use {replacement}"


def ignored(field: str) -> str:
    return f"{field} ignored"


class FieldAnalyzer(Analyzer):
    """VirtualService fault.delay.percent (use percentage); Sidecar outboundTrafficPolicy.egressProxy (ignored)."""

    name = "deprecation.FieldAnalyzer"
    messages = (msg.Deprecated,)

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        for vs in ctx.of("VirtualService"):
            for i, route in enumerate(as_list(vs.spec.get("http"))):
                fault = route.get("fault") if isinstance(route, Mapping) else None
                delay = fault.get("delay") if isinstance(fault, Mapping) else None
                if isinstance(delay, Mapping) and delay.get("percent"):
                    yield diag(msg.Deprecated, vs, replaced("HTTPRoute.fault.delay.percent",
                                                            "HTTPRoute.fault.delay.percentage"),
                               path=f"spec.http[{i}].fault.delay.percent")
        for sc in ctx.of("Sidecar"):
            otp = sc.spec.get("outboundTrafficPolicy")
            if isinstance(otp, Mapping) and otp.get("egressProxy"):
                yield diag(msg.Deprecated, sc, ignored("OutboundTrafficPolicy.EgressProxy"),
                           path="spec.outboundTrafficPolicy.egressProxy")
