"""Kubernetes Gateway analyzer: policies selecting gateway pods by label instead of targetRef."""

from __future__ import annotations

from collections.abc import Iterable

from sailmesh.analysis import messages as msg
from sailmesh.analysis.analyzer import Analyzer, diag
from sailmesh.analysis.analyzers.selectors import match_labels
from sailmesh.analysis.context import Context
from sailmesh.analysis.diagnostic import Diagnostic

GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
POLICY_KINDS = ("AuthorizationPolicy", "RequestAuthentication", "Telemetry", "WasmPlugin")


class SelectorAnalyzer(Analyzer):
    """A workload selector on a Kubernetes Gateway's pods has no effect; targetRef is required."""

    name = "k8sgateway.SelectorAnalyzer"
    messages = (msg.IneffectiveSelector,)

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        for r in ctx.of(*POLICY_KINDS):
            if r.spec.get("targetRef") or r.spec.get("targetRefs"):
                continue
            sel = match_labels(r)
            if not sel:
                continue
            for pod in ctx.pods_matching(r.namespace, sel):
                gw = pod.labels.get(GATEWAY_NAME_LABEL)
                if gw:
                    yield diag(msg.IneffectiveSelector, r, gw, path="spec.selector")
                    break
