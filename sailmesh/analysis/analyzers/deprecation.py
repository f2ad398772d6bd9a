"""Deprecated-field analyzer: fields Istio still accepts but ignores or has replaced."""

from __future__ import annotations

from collections.abc import Iterable

from sailmesh.analysis import messages as msg
from sailmesh.analysis.analyzer import Analyzer, diag
from sailmesh.analysis.context import Context
from sailmesh.analysis.diagnostic import Diagnostic
from sailmesh.api.models.networking import Destination, Sidecar, VirtualService

NO_DESTINATION = Destination()  # `egressProxy: {}` is read as unset (Istio's proto check would report it)


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
            spec = ctx.model(vs, VirtualService)
            for i, route in enumerate(spec.http or () if spec is not None else ()):
                delay = route.fault.delay if route.fault is not None else None
                if delay is not None and delay.percent:
                    yield diag(msg.Deprecated, vs, replaced("HTTPRoute.fault.delay.percent",
                                                            "HTTPRoute.fault.delay.percentage"),
                               path=f"spec.http[{i}].fault.delay.percent")
        for sc in ctx.of("Sidecar"):
            sidecar = ctx.model(sc, Sidecar)
            otp = sidecar.outbound_traffic_policy if sidecar is not None else None
            if otp is not None and otp.egress_proxy not in (None, NO_DESTINATION):
                yield diag(msg.Deprecated, sc, ignored("OutboundTrafficPolicy.EgressProxy"),
                           path="spec.outboundTrafficPolicy.egressProxy")
