"""Telemetry API resolution: one proxy's effective tracing, access logging and metrics from the Telemetry resources
at mesh (root namespace, no selector), namespace (no selector) and workload (selector) scope, plus mesh config.

Istio's rules (pilot/pkg/model/telemetry.go, `applicableTelemetries`, `Tracing`, `mergeLogs`, `mergeMetrics`):
- scopes apply in the order root namespace -> proxy namespace -> workload; the later (more specific) overrides;
- the mesh and namespace scopes are each the oldest Telemetry without a selector or targetRefs; the workload
  scope is every Telemetry of the proxy's namespace, oldest first, that attaches to the proxy by Istio's policy
  attachment (api/attachment.py): its `selector.matchLabels` is a subset of the proxy's labels, or (gateways of
  the Gateway API) a `Gateway` targetRef names the proxy's gateway (a targetRef never binds a sidecar);
- tracing: starts from `defaultProviders.tracing[0]`; each entry (in scope order, `match.mode` CLIENT/SERVER
  or both) replaces the provider if it names one (the first), and replaces `disableSpanReporting`,
  `customTags` (whole map, a shallow merge), `randomSamplingPercentage`, `useRequestIdForTraceSampling` where
  set; a mode left without a provider is disabled. No Telemetry tracing and no default provider: None, the
  legacy mesh config (`enableTracing`, `defaultConfig.tracing`) applies;
- access logging: the providers of the most specific scope that names any (else `defaultProviders.accessLogging`);
  each entry whose mode matches enables (with its filter) or, when `disabled`, removes its providers (an entry
  without providers inherits its parent's). Neither Telemetry logging nor default providers: None, the legacy
  `accessLogFile` applies;
- metrics: provider names as for logging (default `prometheus`); overrides accumulate per (provider, mode,
  metric), later wins; ALL_METRICS disabled turns that side off (both sides: the provider is dropped); the most
  specific `reportingInterval` applies (TCP metrics of open connections).
Provider names match case-insensitively (Istio's `fetchProvider`), and Istio's built-in providers `envoy`
(file access log on /dev/stdout) and `prometheus` exist unless the mesh config redefines them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sailmesh.api import attachment
from sailmesh.api.meshconfig import EnvoyFileAccessLog, ExtensionProvider, MeshConfig, Prometheus
from sailmesh.api.resource import Resource
from sailmesh.api.types import BadValue, parse_duration
from sailmesh.snapshot.model import MeshSnapshot, ProxyView

CLIENT = "CLIENT"
SERVER = "SERVER"
MODES = (CLIENT, SERVER)
ISTIO_METRICS = ("GRPC_REQUEST_MESSAGES", "GRPC_RESPONSE_MESSAGES", "REQUEST_COUNT", "REQUEST_DURATION",
                 "REQUEST_SIZE", "RESPONSE_SIZE", "TCP_CLOSED_CONNECTIONS", "TCP_OPENED_CONNECTIONS",
                 "TCP_RECEIVED_BYTES", "TCP_SENT_BYTES")  # Istio's MetricSelector.IstioMetric, sorted
BUILTIN_PROVIDERS = (
    ExtensionProvider(name="envoy", envoy_file_access_log=EnvoyFileAccessLog(path="/dev/stdout")),
    ExtensionProvider(name="prometheus", prometheus=Prometheus()),
)
TRACING_KINDS = ("zipkin", "opentelemetry")  # provider kinds sailmesh turns into an Envoy tracer
LOGGING_KINDS = ("envoyFileAccessLog",)  # provider kinds sailmesh turns into an Envoy access logger
METRICS_KINDS = ("prometheus",)  # provider kinds whose metrics sailmesh's agent serves
DEFAULT_METRICS_PROVIDER = "prometheus"  # without defaultProviders.metrics (Istio's default installation)


@dataclass(frozen=True)
class CustomTag:
    """A Telemetry/ProxyConfig tracing custom tag: kind `literal` (value), `environment` or `header` (name,
    default) or `formatter` (value, an Envoy command operator)."""

    tag: str
    kind: str
    value: str = ""
    default: str = ""


@dataclass(frozen=True)
class TracingSpec:
    """The tracing of one side (CLIENT: outbound and gateway HCMs; SERVER: inbound HCMs)."""

    provider: ExtensionProvider | None = None
    disabled: bool = False
    sampling: float | None = None  # randomSamplingPercentage; None: the mesh config's
    custom_tags: tuple[CustomTag, ...] | None = None  # None: the mesh config's defaultConfig.tracing.customTags
    use_request_id_for_trace_sampling: bool = True


@dataclass(frozen=True)
class TracingConfig:
    client: TracingSpec
    server: TracingSpec

    def for_mode(self, mode: str) -> TracingSpec:
        return self.server if mode == SERVER else self.client


@dataclass(frozen=True)
class LogSink:
    """One access-log provider in effect, with its Telemetry filter expression (CEL), if any."""

    provider: ExtensionProvider
    filter_expression: str = ""


@dataclass(frozen=True)
class TagOverride:
    name: str
    remove: bool = False
    value: str = ""


@dataclass(frozen=True)
class MetricOverride:
    """Istio's normalized override of one metric (REQUEST_COUNT, ... or a custom metric name)."""

    name: str
    disabled: bool = False
    tags: tuple[TagOverride, ...] = ()


@dataclass(frozen=True)
class MetricsConfig:
    """One metrics provider's overrides, per side (client: outbound/gateway, server: inbound)."""

    client: tuple[MetricOverride, ...] = ()
    server: tuple[MetricOverride, ...] = ()
    reporting_interval: float | None = None  # seconds between TCP metric reports of an open connection


@dataclass(frozen=True)
class EffectiveTelemetry:
    """What a proxy's telemetry is. `tracing`/`access_logging` None: no Telemetry API config applies (use the mesh
    config's legacy settings); an empty logging tuple: access logging explicitly off."""

    tracing: TracingConfig | None
    access_logging: Mapping[str, tuple[LogSink, ...]] | None  # mode -> sinks
    metrics: Mapping[str, MetricsConfig]  # provider name -> overrides (present: the provider is enabled)
    applied: tuple[str, ...] = ()  # namespace/name of the Telemetry resources that applied (root, ns, workload)
    unenforced: tuple[str, ...] = field(default=())  # "ns/name: field" accepted but not acted on

    def logging_for(self, mode: str) -> tuple[LogSink, ...] | None:
        return None if self.access_logging is None else self.access_logging.get(mode, ())


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _map(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def provider_names(entry: Mapping[str, Any]) -> list[str]:
    return [str(_map(p).get("name", "")) for p in _list(entry.get("providers"))]


def fetch_provider(mesh: MeshConfig, name: str) -> ExtensionProvider | None:
    """Istio's fetchProvider: the mesh config's provider of that name (case-insensitive), else a built-in."""
    for p in (*mesh.extension_providers, *BUILTIN_PROVIDERS):
        if p.name.lower() == name.lower():
            return p
    return None


def match_labels(t: Resource) -> Mapping[str, str]:
    return {str(k): str(v) for k, v in _map(_map(t.spec.get("selector")).get("matchLabels")).items()}


def has_target_refs(t: Resource) -> bool:
    return bool(t.spec.get("targetRef") or t.spec.get("targetRefs"))


def applicable(telemetries: Iterable[Resource], root_namespace: str, namespace: str,
               labels: Mapping[str, str]) -> list[Resource]:
    """The Telemetry resources for a proxy, least specific first: root namespace, namespace, then every
    workload-level one that attaches (Istio's applicableTelemetries). `telemetries` are oldest first (the
    snapshot's order)."""
    by_ns: dict[str, list[Resource]] = {}
    for t in telemetries:
        by_ns.setdefault(t.namespace, []).append(t)
    out: list[Resource] = []
    for ns in ([root_namespace] if root_namespace else []) + ([namespace] if namespace != root_namespace else []):
        wide = next((t for t in by_ns.get(ns, ()) if not match_labels(t) and not has_target_refs(t)), None)
        if wide is not None:
            out.append(wide)
    for t in by_ns.get(namespace, ()):
        refs = attachment.target_refs(t.spec)
        sel = match_labels(t)
        if (sel or refs) and attachment.attaches(t.namespace, sel, refs, namespace, labels):
            out.append(t)
    return out


def _modes(entry: Mapping[str, Any]) -> tuple[str, ...]:
    mode = str(_map(entry.get("match")).get("mode") or "CLIENT_AND_SERVER")
    return (mode,) if mode in MODES else MODES


def custom_tags(raw: Mapping[str, Any]) -> tuple[CustomTag, ...]:
    out = []
    for tag, spec in sorted(raw.items()):
        s = _map(spec)
        for kind in ("literal", "environment", "header", "formatter"):
            if kind in s:
                d = _map(s[kind])
                out.append(CustomTag(str(tag), kind, str(d.get("value") or d.get("name") or ""),
                                     str(d.get("defaultValue") or "")))
                break
    return tuple(out)


def resolve_tracing(entries: Sequence[Mapping[str, Any]], mesh: MeshConfig) -> TracingConfig | None:
    """Istio's Telemetries.Tracing over the in-scope `tracing` entries (least specific first)."""
    defaults = mesh.default_providers.tracing
    if not entries and not defaults:
        return None
    spec: dict[str, dict[str, Any]] = {m: {"provider": None, "disabled": False, "sampling": None,
                                           "custom_tags": None, "use_request_id_for_trace_sampling": True}
                                       for m in MODES}
    if defaults:
        for m in MODES:
            spec[m]["provider"] = fetch_provider(mesh, defaults[0])
    for e in entries:
        names = provider_names(e)
        for m in _modes(e):
            s = spec[m]
            if names:
                s["provider"] = fetch_provider(mesh, names[0])
            if e.get("disableSpanReporting") is not None:
                s["disabled"] = bool(e["disableSpanReporting"])
            if e.get("customTags") is not None:
                s["custom_tags"] = custom_tags(_map(e["customTags"]))
            if e.get("randomSamplingPercentage") is not None:
                s["sampling"] = float(e["randomSamplingPercentage"])
            if e.get("useRequestIdForTraceSampling") is not None:
                s["use_request_id_for_trace_sampling"] = bool(e["useRequestIdForTraceSampling"])
    for s in spec.values():
        if s["provider"] is None:
            s["disabled"] = True
    return TracingConfig(client=TracingSpec(**spec[CLIENT]), server=TracingSpec(**spec[SERVER]))


def resolve_logging(levels: Sequence[Sequence[Mapping[str, Any]]], mesh: MeshConfig,
                    mode: str) -> tuple[LogSink, ...] | None:
    """Istio's mergeLogs for one mode over the `accessLogging` lists of each scope that has any."""
    defaults = list(mesh.default_providers.access_logging)
    if not levels and not defaults:
        return None
    chosen: dict[str, str] = {}
    if not levels:
        chosen = dict.fromkeys(defaults, "")
    else:
        names: list[str] = defaults
        filters: dict[str, str] = {}
        for level in levels:
            here: list[str] = []
            for e in level:
                for p in provider_names(e):
                    if p not in here:
                        here.append(p)
                    filters[p] = str(_map(e.get("filter")).get("expression") or "")
            if here:
                names = here
        in_scope = set(names)
        parent = defaults
        for level in levels:
            for e in level:
                ps = provider_names(e) or parent
                parent = ps
                for p in ps:
                    if p not in in_scope or mode not in _modes(e):
                        continue
                    if e.get("disabled"):
                        chosen.pop(p, None)
                        continue
                    chosen[p] = filters.get(p, "")
    out = []
    for name, expr in sorted(chosen.items()):
        prov = fetch_provider(mesh, name)
        if prov is not None:
            out.append(LogSink(prov, expr))
    return tuple(out)


def resolve_metrics(entries: Sequence[Mapping[str, Any]], mesh: MeshConfig) -> dict[str, MetricsConfig]:
    """Istio's mergeMetrics: provider -> normalized client/server overrides, sorted by metric name. Without
    `defaultProviders.metrics` the provider is `prometheus` (Istio's default installation sets it)."""
    defaults = list(mesh.default_providers.metrics) or [DEFAULT_METRICS_PROVIDER]
    acc: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    if not entries:
        for p in defaults:
            acc[p] = {}
    names = defaults
    interval: float | None = None
    for e in entries:
        if provider_names(e):
            names = provider_names(e)
        if e.get("reportingInterval") is not None:  # the most specific scope's (applies to TCP metrics)
            interval = _seconds(e["reportingInterval"], interval)
    in_scope = set(names)
    parent = defaults
    all_off: dict[str, set[str]] = {}
    for e in entries:
        ps = provider_names(e) or parent
        parent = ps
        for p in ps:
            if p not in in_scope:
                continue
            modes = acc.setdefault(p, {CLIENT: {}, SERVER: {}})
            for o in (_map(x) for x in _list(e.get("overrides"))):
                match = _map(o.get("match"))
                custom = match.get("customMetric")
                metric = str(match.get("metric") or "ALL_METRICS")
                override_modes = _modes({"match": {"mode": match.get("mode")}})
                if not custom and metric == "ALL_METRICS" and o.get("disabled") is True:
                    all_off.setdefault(p, set()).update(override_modes)
                    continue
                all_off.get(p, set()).difference_update(override_modes)
                selected = [str(custom)] if custom else (list(ISTIO_METRICS) if metric == "ALL_METRICS" else [metric])
                for mode in override_modes:
                    for name in selected:
                        cur = modes.setdefault(mode, {}).setdefault(name, {"disabled": None, "tags": {}})
                        if o.get("disabled") is not None:
                            cur["disabled"] = bool(o["disabled"])
                        for tag, tov in _map(o.get("tagOverrides")).items():
                            cur["tags"][str(tag)] = _map(tov)
    out: dict[str, MetricsConfig] = {}
    for p, modes in acc.items():
        off = all_off.get(p, set())
        if off >= set(MODES):
            continue
        sides: dict[str, list[MetricOverride]] = {CLIENT: [], SERVER: []}
        for mode, metrics in modes.items():
            if mode in off:  # ALL_METRICS disabled on this side only: every metric off there
                sides[mode] = [MetricOverride(name, True) for name in ISTIO_METRICS]
                continue
            for name, cur in metrics.items():
                tags = tuple(TagOverride(t, remove=str(v.get("operation")) == "REMOVE",
                                         value="" if str(v.get("operation")) == "REMOVE" else str(v.get("value", "")))
                             for t, v in sorted(cur["tags"].items()))
                sides[mode].append(MetricOverride(name, bool(cur["disabled"]), tags))
        for mode in off:
            if not sides[mode]:
                sides[mode] = [MetricOverride(name, True) for name in ISTIO_METRICS]
        out[p] = MetricsConfig(client=tuple(sorted(sides[CLIENT], key=lambda m: m.name)),
                               server=tuple(sorted(sides[SERVER], key=lambda m: m.name)),
                               reporting_interval=interval)
    return out


def _seconds(value: Any, fallback: float | None) -> float | None:
    try:
        return parse_duration(value)
    except BadValue:
        return fallback  # validation reports it; the previous scope's interval stays


def effective(telemetries: Iterable[Resource], mesh: MeshConfig, namespace: str,
              labels: Mapping[str, str]) -> EffectiveTelemetry:
    """The effective telemetry of a proxy in `namespace` with `labels` (the one entry point)."""
    ts = applicable(telemetries, mesh.root_namespace, namespace, labels)
    tracing = [_map(e) for t in ts for e in _list(t.spec.get("tracing"))]
    levels = [[_map(e) for e in _list(t.spec.get("accessLogging"))] for t in ts]
    levels = [lv for lv in levels if lv]
    metrics = [_map(e) for t in ts for e in _list(t.spec.get("metrics"))]
    logging: dict[str, tuple[LogSink, ...]] | None = None
    per_mode = {m: resolve_logging(levels, mesh, m) for m in MODES}
    if any(v is not None for v in per_mode.values()):
        logging = {m: v or () for m, v in per_mode.items()}
    return EffectiveTelemetry(
        tracing=resolve_tracing(tracing, mesh), access_logging=logging, metrics=resolve_metrics(metrics, mesh),
        applied=tuple(f"{t.namespace}/{t.name}" for t in ts),
    )


def for_proxy(snapshot: MeshSnapshot, proxy: ProxyView) -> EffectiveTelemetry:
    """effective() for a proxy of a snapshot."""
    return effective(snapshot.of_kind("Telemetry"), snapshot.mesh_config, proxy.namespace, proxy.labels)


def unenforced(t: Resource, mesh: MeshConfig) -> list[str]:
    """Fields of one Telemetry that sailmesh accepts but does not act on (to report, never to drop silently)."""
    out: list[str] = []
    kinds = attachment.unbound_kinds(attachment.target_refs(t.spec))
    if kinds:
        out.append(f"targetRef(s) of kind {', '.join(kinds)} (they bind waypoints, which sailmesh does not run; a "
                   "Gateway targetRef binds that Gateway's proxy)")
    for i, e in enumerate(_map(x) for x in _list(t.spec.get("tracing"))):
        for p in provider_names(e):
            prov = fetch_provider(mesh, p)
            if prov is not None and prov.kind not in TRACING_KINDS:
                out.append(f"tracing[{i}].providers {p} (kind {prov.kind})")
        for key in ("enableIstioTags", "disableContextPropagation"):
            if key in e:
                out.append(f"tracing[{i}].{key}")
    for i, e in enumerate(_map(x) for x in _list(t.spec.get("accessLogging"))):
        for p in provider_names(e):
            prov = fetch_provider(mesh, p)
            if prov is not None and prov.kind not in LOGGING_KINDS:
                out.append(f"accessLogging[{i}].providers {p} (kind {prov.kind})")
    for i, e in enumerate(_map(x) for x in _list(t.spec.get("metrics"))):
        for p in provider_names(e):
            prov = fetch_provider(mesh, p)
            if prov is not None and prov.kind not in METRICS_KINDS:
                out.append(f"metrics[{i}].providers {p} (kind {prov.kind})")
        for j, o in enumerate(_map(x) for x in _list(e.get("overrides"))):
            match = _map(o.get("match"))
            if match.get("customMetric"):
                out.append(f"metrics[{i}].overrides[{j}].match.customMetric (custom metrics are not defined)")
    return [f"{t.namespace}/{t.name}: {x}" for x in out]
