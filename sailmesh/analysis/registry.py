"""The list of analyzers `sailmesh analyze` runs, and the entry point that runs them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sailmesh.analysis import messages as msg
from sailmesh.analysis.analyzer import Analyzer
from sailmesh.analysis.analyzers import annotations as annotation_analyzers
from sailmesh.analysis.analyzers import (
    authn,
    authz,
    deployment,
    deprecation,
    destinationrule,
    envoyfilter,
    gateway,
    injection,
    k8sgateway,
    multicluster,
    ratelimit,
    schema,
    selectors,
    service,
    serviceentry,
    telemetry,
    virtualservice,
)
from sailmesh.analysis.context import Context
from sailmesh.analysis.defaults import default_resources, is_default
from sailmesh.analysis.diagnostic import Diagnostic
from sailmesh.api.parse import resource_from_dict
from sailmesh.api.resource import Resource, Source
from sailmesh.errors import ParseError

ANALYZERS: list[Analyzer] = [
    virtualservice.DestinationHostAnalyzer(),
    virtualservice.DestinationRuleAnalyzer(),
    virtualservice.GatewayAnalyzer(),
    virtualservice.ConflictingMeshGatewayHostsAnalyzer(),
    virtualservice.JWTClaimRouteAnalyzer(),
    gateway.IngressGatewayPortAnalyzer(),
    gateway.SecretAnalyzer(),
    gateway.CertificateAnalyzer(),
    gateway.ConflictingGatewayAnalyzer(),
    selectors.SidecarSelectorAnalyzer(),
    selectors.TelemetrySelectorAnalyzer(),
    selectors.TelemetryDefaultSelectorAnalyzer(),
    destinationrule.CaCertificateAnalyzer(),
    destinationrule.PodNotSelectedAnalyzer(),
    serviceentry.ProtocolAddressesAnalyzer(),
    serviceentry.ConflictingServiceEntryProtocolAnalyzer(),
    envoyfilter.EnvoyPatchAnalyzer(),
    ratelimit.RateLimitSelectorAnalyzer(),
    ratelimit.RateLimitProviderAnalyzer(),
    service.PortNameAnalyzer(),
    deployment.ServiceAssociationAnalyzer(),
    deployment.ApplicationUIDAnalyzer(),
    injection.InjectionAnalyzer(),
    injection.ImageAnalyzer(),
    telemetry.ProviderAnalyzer(),
    telemetry.LightstepAnalyzer(),
    authn.BlockedCIDRsAnalyzer(),
    authz.AuthorizationPoliciesAnalyzer(),
    deprecation.FieldAnalyzer(),
    k8sgateway.SelectorAnalyzer(),
    multicluster.MeshNetworksAnalyzer(),
    multicluster.ServiceAnalyzer(),
    annotation_analyzers.K8sAnalyzer(),
    *schema.schema_analyzers(),
]


def by_name(name: str) -> Analyzer | None:
    """The analyzer with Istio's name (`virtualservice.GatewayAnalyzer`), or None."""
    for a in ANALYZERS:
        if a.name == name:
            return a
    return None


def analyze(
    resources: list[Resource],
    mesh_config: Mapping[str, Any] | None = None,
    analyzers: Iterable[Analyzer] | None = None,
    mesh_networks: Mapping[str, Any] | None = None,
    include_defaults: bool = True,
) -> list[Diagnostic]:
    """Run analyzers over resources; messages are de-duplicated and sorted as istioctl prints them.

    Like istioctl analyze without a cluster, Istio's default ingress gateway Pod and Service are assumed
    present (messages about those defaults themselves are dropped).
    """
    resources, problems = expand_lists(resources)
    extra = default_resources(resources) if include_defaults else []
    ctx = Context([*resources, *extra], dict(mesh_config or {}), dict(mesh_networks or {}))
    seen: set[tuple[str, str, str]] = set()
    out: list[Diagnostic] = list(problems)
    for a in ANALYZERS if analyzers is None else analyzers:
        for d in _run_one(a, ctx):
            k = (d.code, d.origin, d.message)
            if d.resource is not None and is_default(d.resource):
                continue
            if k not in seen:
                seen.add(k)
                out.append(d)
    out.sort(key=lambda d: (-_rank(d.level), d.origin, d.code, d.message))
    return out


# What a malformed document (a string where a list is expected, ...) can raise inside an analyzer.
MALFORMED_INPUT_ERRORS = (AttributeError, TypeError, KeyError, ValueError, IndexError)


def _run_one(a: Analyzer, ctx: Context) -> list[Diagnostic]:
    """One analyzer's messages; if malformed input trips it, what it found so far plus IST0001 (never a traceback)."""
    found: list[Diagnostic] = []
    try:
        for d in a.analyze(ctx):
            found.append(d)
    except MALFORMED_INPUT_ERRORS as e:
        found.append(Diagnostic(msg.InternalError, (f"analyzer {a.name} stopped on malformed input: {e}",),
                                origin_override=f"analyzer {a.name}"))
    return found


def expand_lists(resources: list[Resource]) -> tuple[list[Resource], list[Diagnostic]]:
    """Replace `kind: List` documents (kubectl's wrapper) by their items; bad items become IST0106."""
    out: list[Resource] = []
    problems: list[Diagnostic] = []
    for r in resources:
        if r.kind != "List" or not isinstance(r.raw.get("items"), list):
            out.append(r)
            continue
        for i, item in enumerate(r.raw["items"]):
            src = Source(r.source.file, r.source.line_of(f"items[{i}]"), {})
            try:
                out.append(resource_from_dict(item, src))
            except ParseError as e:
                problems.append(Diagnostic(msg.SchemaValidationError, (f"items[{i}]: {e.message}",), r, f"items[{i}]",
                                           origin_override="List"))
    return out, problems


def _rank(level: str) -> int:
    return {"Error": 2, "Warning": 1, "Info": 0}.get(level, 0)
