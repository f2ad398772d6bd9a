"""DestinationRule analyzers: server certificate verification and subsets that select no pods."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sailmesh.analysis import messages as msg
from sailmesh.analysis.analyzer import Analyzer, diag
from sailmesh.analysis.context import DOMAIN_SUFFIX, Context
from sailmesh.analysis.diagnostic import Diagnostic
from sailmesh.analysis.shapes import as_map
from sailmesh.api.hosts import analyzer_fqdn
from sailmesh.api.models.networking import ClientTLSSettings, DestinationRule, WorkloadSelector
from sailmesh.api.resource import Resource

TLS_MODES = ("SIMPLE", "MUTUAL")
TOPOLOGY_PREFIX = "topology.kubernetes.io/"
NO_SELECTOR = WorkloadSelector()  # `workloadSelector: {}` selects nothing more than no selector


def _needs_ca(tls: ClientTLSSettings | None, has_selector: bool) -> str:
    """The TLS mode when it verifies the server without caCertificates (else '')."""
    if tls is None:
        return ""
    mode = tls.mode or ""
    if mode not in TLS_MODES or tls.ca_certificates or tls.insecure_skip_verify:
        return ""
    if tls.credential_name and has_selector:
        return ""
    return mode


class CaCertificateAnalyzer(Analyzer):
    """SIMPLE/MUTUAL TLS without caCertificates does not verify the server's identity."""

    name = "destinationrule.CaCertificateAnalyzer"
    messages = (msg.NoServerCertificateVerificationDestinationLevel, msg.NoServerCertificateVerificationPortLevel)

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        for dr in ctx.of("DestinationRule"):
            rule = ctx.model(dr, DestinationRule)
            tp = rule.traffic_policy if rule is not None else None
            if rule is None or tp is None:
                continue
            host = rule.host or ""
            has_sel = rule.workload_selector not in (None, NO_SELECTOR)
            mode = _needs_ca(tp.tls, has_sel)
            if mode:
                yield diag(msg.NoServerCertificateVerificationDestinationLevel, dr, dr.name, dr.namespace, mode, host,
                           path="spec.trafficPolicy.tls")
            for i, pls in enumerate(tp.port_level_settings or ()):
                mode = _needs_ca(pls.tls, has_sel)
                if mode:
                    number = pls.port.number if pls.port is not None and pls.port.number is not None else ""
                    yield diag(msg.NoServerCertificateVerificationPortLevel, dr, dr.name, dr.namespace, mode, host,
                               str(number), path=f"spec.trafficPolicy.portLevelSettings[{i}].tls")


def pod_labels_with_topology(ctx: Context, pod: Resource) -> dict[str, str]:
    """Pod labels plus its Node's topology.kubernetes.io/* labels (as Istio's workload labels)."""
    labels = dict(pod.labels)
    node_name = (as_map(pod.raw.get("spec"))).get("nodeName") if isinstance(pod.raw.get("spec"), Mapping) else None
    if node_name:
        for n in ctx.of("Node"):
            if n.name == node_name:
                labels.update({k: v for k, v in n.labels.items() if k.startswith(TOPOLOGY_PREFIX)})
    return labels


def _selects(subset_labels: Mapping[str, object], labels: Mapping[str, str]) -> bool:
    for k, v in subset_labels.items():
        if k.startswith(TOPOLOGY_PREFIX) and not str(v):
            return False
        if labels.get(k) != str(v):
            return False
    return True


class PodNotSelectedAnalyzer(Analyzer):
    """A DestinationRule host must be a known service, and each subset must select some of its pods."""

    name = "destinationrule.PodNotSelectedAnalyzer"
    messages = (msg.DestinationRuleSubsetNotSelectPods, msg.UnknownDestinationRuleHost)

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        for dr in ctx.of("DestinationRule"):
            rule = ctx.model(dr, DestinationRule)
            host = analyzer_fqdn(rule.host or "", dr.namespace) if rule is not None else ""
            if rule is None or not host:
                continue
            matched = ctx.services_overlapping(host)
            if not matched:
                yield diag(msg.UnknownDestinationRuleHost, dr, host, path="spec.host")
                continue
            svc = next((s.resource for s in matched if s.resource.kind == "Service"
                        and s.host == host and host.endswith(f".svc.{DOMAIN_SUFFIX}")), None)
            if svc is None:
                continue
            ssel = svc.spec.get("selector")
            if not isinstance(ssel, Mapping) or not ssel:
                continue
            pods = [pod_labels_with_topology(ctx, p) for p in ctx.pods_matching(svc.namespace, ssel)]
            for i, subset in enumerate(rule.subsets or ()):
                labels = subset.labels or {}
                if not any(_selects(labels, pl) for pl in pods):
                    yield diag(msg.DestinationRuleSubsetNotSelectPods, dr, subset.name or "",
                               path=f"spec.subsets[{i}]")
