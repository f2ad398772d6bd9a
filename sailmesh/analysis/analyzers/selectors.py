"""Workload-selector analyzers for Sidecar and Telemetry: unmatched selectors, overlaps, several defaults."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sailmesh.analysis import messages as msg
from sailmesh.analysis.analyzer import Analyzer, diag
from sailmesh.analysis.context import Context, group_by
from sailmesh.analysis.diagnostic import Diagnostic
from sailmesh.analysis.messages import MessageType
from sailmesh.analysis.shapes import as_map
from sailmesh.api.models.networking import Sidecar, WorkloadSelector
from sailmesh.api.resource import Resource

Selected = list[tuple[Resource, Mapping[str, str] | None]]  # (resource, its selector labels; None: no selector)


def labels_of(selector: WorkloadSelector | None) -> Mapping[str, str] | None:
    """A typed `selector: {matchLabels}`'s labels; None when unset or empty (selects like no selector)."""
    return (selector.match_labels or None) if selector is not None else None


def sidecar_selectors(ctx: Context) -> Selected:
    """Every Sidecar with its workloadSelector labels (Sidecars whose spec does not fit the model are skipped)."""
    out: Selected = []
    for r in ctx.of("Sidecar"):
        sc = ctx.model(r, Sidecar)
        if sc is not None:
            ws = sc.workload_selector
            out.append((r, (ws.labels or None) if ws is not None else None))
    return out


def raw_match_labels(r: Resource) -> Mapping[str, str] | None:
    """`spec.selector.matchLabels` of a kind without a typed model (Telemetry, WasmPlugin), read raw."""
    sel = r.spec.get("selector")
    return (sel.get("matchLabels") or None) if isinstance(sel, Mapping) else None


def telemetry_selectors(ctx: Context) -> Selected:
    return [(r, raw_match_labels(r)) for r in ctx.of("Telemetry")]


def selector_string(sel: Mapping[str, str]) -> str:
    """Kubernetes labels.Set String(): sorted `k=v` joined by commas."""
    return ",".join(f"{k}={v}" for k, v in sorted(as_map(sel).items()))


def _selector_analysis(ctx: Context, selected: Selected, conflict: MessageType, path: str) -> Iterable[Diagnostic]:
    by_pod: dict[tuple[str, str], list[Resource]] = {}
    for r, sel in selected:
        if not sel:
            continue
        pods = ctx.pods_matching(r.namespace, sel)
        if not pods:
            yield diag(msg.ReferencedResourceNotFound, r, "selector", selector_string(sel), path=path)
        for p in pods:
            by_pod.setdefault((p.namespace, p.name), []).append(r)
    reported: set[int] = set()
    for (ns, pod), rs in by_pod.items():
        if len(rs) < 2:
            continue
        names = [r.name for r in rs]
        for r in rs:
            if id(r) not in reported:
                reported.add(id(r))
                yield diag(conflict, r, names, ns, pod, path=path)


def _default_analysis(selected: Selected, conflict: MessageType) -> Iterable[Diagnostic]:
    defaults = [r for r, sel in selected if not sel]
    for ns, rs in group_by(defaults, lambda r: r.namespace).items():
        if len(rs) > 1:
            names = [r.name for r in rs]
            for r in rs:
                yield diag(conflict, r, names, ns)


class SidecarSelectorAnalyzer(Analyzer):
    """Sidecar workload selectors must select pods, and no pod may be selected by two Sidecars."""

    name = "sidecar.SelectorAnalyzer"
    messages = (
        msg.ReferencedResourceNotFound,
        msg.ConflictingSidecarWorkloadSelectors,
        msg.MultipleSidecarsWithoutWorkloadSelectors,
        msg.IneffectivePolicy,
    )

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        yield from _selector_analysis(
            ctx, sidecar_selectors(ctx), msg.ConflictingSidecarWorkloadSelectors, "spec.workloadSelector"
        )
        yield from sidecar_defaults_and_ambient(ctx)


def ambient_namespace(ctx: Context, namespace: str) -> bool:
    """Namespace labelled for ambient and not for sidecar injection."""
    for n in ctx.of("Namespace"):
        if n.name == namespace:
            lab = n.labels
            return lab.get("istio.io/dataplane-mode") == "ambient" and not (
                "istio-injection" in lab or "istio.io/rev" in lab
            )
    return False


def sidecar_defaults_and_ambient(ctx: Context) -> Iterable[Diagnostic]:
    """At most one selector-less Sidecar per namespace; Sidecars do nothing for ambient workloads."""

    selected = sidecar_selectors(ctx)
    yield from _default_analysis(selected, msg.MultipleSidecarsWithoutWorkloadSelectors)
    for r, sel in selected:
        if sel is None:
            if ambient_namespace(ctx, r.namespace):
                yield diag(msg.IneffectivePolicy, r, "namespace is in ambient mode")
            continue
        pods = ctx.pods_matching(r.namespace, sel)
        if pods and all(
            p.annotations.get("ambient.istio.io/redirection") == "enabled" or ambient_namespace(ctx, p.namespace)
            for p in pods
        ):
            yield diag(msg.IneffectivePolicy, r, "selected workloads are in ambient mode", path="spec")


class TelemetrySelectorAnalyzer(Analyzer):
    """Telemetry selectors must select pods, and no pod may be selected by two Telemetries."""

    name = "telemetry.SelectorAnalyzer"
    messages = (msg.ReferencedResourceNotFound, msg.ConflictingTelemetryWorkloadSelectors)

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        yield from _selector_analysis(
            ctx, telemetry_selectors(ctx), msg.ConflictingTelemetryWorkloadSelectors, "spec.selector"
        )


class TelemetryDefaultSelectorAnalyzer(Analyzer):
    """At most one selector-less Telemetry per namespace."""

    name = "telemetry.DefaultSelectorAnalyzer"
    messages = (msg.MultipleTelemetriesWithoutWorkloadSelectors,)

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        yield from _default_analysis(telemetry_selectors(ctx), msg.MultipleTelemetriesWithoutWorkloadSelectors)
