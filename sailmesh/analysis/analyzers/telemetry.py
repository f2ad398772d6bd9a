"""Telemetry analyzers: entries with no provider, deprecated Lightstep provider."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sailmesh.analysis import messages as msg
from sailmesh.analysis.analyzer import Analyzer, diag
from sailmesh.analysis.context import Context
from sailmesh.analysis.diagnostic import Diagnostic
from sailmesh.analysis.shapes import as_list, as_map

SECTIONS = {"accessLogging": "accessLogging", "tracing": "tracing", "metrics": "metrics"}


class ProviderAnalyzer(Analyzer):
    """Telemetry entries without providers (and without mesh default providers) are ignored."""

    name = "telemetry.ProviderAnalyzer"
    messages = (msg.InvalidTelemetryProvider,)

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        defaults = as_map(ctx.mesh_config.get("defaultProviders"))
        for t in ctx.of("Telemetry"):
            for section, default_key in SECTIONS.items():
                if isinstance(defaults, Mapping) and defaults.get(default_key):
                    continue
                entries = [e for e in as_list(t.spec.get(section)) if isinstance(e, Mapping)]
                if any(not e.get("providers") and not e.get("disabled") for e in entries):
                    yield diag(msg.InvalidTelemetryProvider, t, t.name, t.namespace, path=f"spec.{section}")
                    break


class LightstepAnalyzer(Analyzer):
    """The Lightstep tracing provider is deprecated (use OpenTelemetry)."""

    name = "telemetry.LightstepAnalyzer"
    messages = (msg.Deprecated,)

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        lightstep = {
            str(p.get("name")) for p in as_list(ctx.mesh_config.get("extensionProviders"))
            if isinstance(p, Mapping) and "lightstep" in p
        }
        for t in ctx.of("Telemetry"):
            for i, tr in enumerate(as_list(t.spec.get("tracing"))):
                names = {str(p.get("name")) for p in as_list(tr.get("providers")) if isinstance(p, Mapping)} \
                    if isinstance(tr, Mapping) else set()
                if names & lightstep:
                    yield diag(msg.Deprecated, t, "The Lightstep provider has been deprecated in favor of "
                               "OpenTelemetry and will be removed in a future release.", path=f"spec.tracing[{i}]")
                    break
