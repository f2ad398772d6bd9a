"""Schema validation analyzers (Istio's schemaValidation.CollectionValidationAnalyzer), one per kind.

Per-resource validation comes from `sailmesh.api.validate` when that module is present (errors are IST0106,
warnings IST0133); VirtualService rules that can never match are IST0130/IST0131 as in Istio.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any

from sailmesh.analysis import messages as msg
from sailmesh.analysis.analyzer import Analyzer, diag
from sailmesh.analysis.analyzers.routerules import Route, unreachable_rules
from sailmesh.analysis.context import Context
from sailmesh.analysis.diagnostic import Diagnostic
from sailmesh.api.models.networking import VirtualService
from sailmesh.api.resource import Resource

ISTIO_KINDS = (
    "VirtualService", "DestinationRule", "Gateway", "ServiceEntry", "Sidecar", "WorkloadEntry", "WorkloadGroup",
    "EnvoyFilter", "ProxyConfig", "AuthorizationPolicy", "PeerAuthentication", "RequestAuthentication",
    "Telemetry", "WasmPlugin",
)


def _validator() -> Callable[[Resource], list[Any]] | None:
    """sailmesh.api.validate.validate, when the api layer provides it."""
    try:
        mod = importlib.import_module("sailmesh.api.validate")
    except ImportError:
        return None
    fn = getattr(mod, "validate", None)
    return fn if callable(fn) else None


def virtual_service_rule_warnings(vs: Resource, spec: VirtualService) -> Iterable[Diagnostic]:
    out: list[Diagnostic] = []
    sections: tuple[tuple[str, tuple[Route, ...] | None, bool], ...] = (
        ("http", spec.http, True), ("tcp", spec.tcp, False), ("tls", spec.tls, False))
    for section, routes, overlap in sections:
        def unreachable(rule: str, reason: str, section: str = section) -> None:
            out.append(diag(msg.VirtualServiceUnreachableRule, vs, rule, reason, path=f"spec.{section}"))

        def ineffective(rule: str, match: str, dup: str, section: str = section) -> None:
            out.append(diag(msg.VirtualServiceIneffectiveMatch, vs, rule, match, dup, path=f"spec.{section}"))

        unreachable_rules(routes or (), unreachable, ineffective, check_prefix_overlap=overlap)
    return out


class SchemaValidationAnalyzer(Analyzer):
    """Runs per-resource validation for one kind and reports it with Istio's codes."""

    messages = (msg.SchemaValidationError, msg.SchemaWarning, msg.VirtualServiceUnreachableRule,
                msg.VirtualServiceIneffectiveMatch)

    def __init__(self, kind: str) -> None:
        self.kind = kind

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"schemaValidation.{self.kind}"

    def analyze(self, ctx: Context) -> Iterable[Diagnostic]:
        validate = _validator()
        for r in ctx.of(self.kind):
            if validate is not None:
                for issue in validate(r):
                    text = f"{issue.field}: {issue.message}" if getattr(issue, "field", "") else str(issue.message)
                    mtype = msg.SchemaWarning if getattr(issue, "severity", "error") == "warning" \
                        else msg.SchemaValidationError
                    yield diag(mtype, r, text, path=getattr(issue, "field", ""))
            spec = ctx.model(r, VirtualService) if self.kind == "VirtualService" else None
            if spec is not None:  # as in Istio, rules are checked on a spec that converts to the typed model
                yield from virtual_service_rule_warnings(r, spec)


def schema_analyzers() -> list[Analyzer]:
    return [SchemaValidationAnalyzer(k) for k in ISTIO_KINDS]
