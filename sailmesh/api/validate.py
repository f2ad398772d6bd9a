"""validate(resource) -> issues: CRD schema + CEL rules + Istio's Go-side semantics for every known kind."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sailmesh.api import gatewayapi, kinds, ratelimit
from sailmesh.api.issue import Issue, IssueSink
from sailmesh.api.parse import LoadResult
from sailmesh.api.resource import Resource
from sailmesh.api.rules import core, destinationrule, extensions, networking, security, sidecar, virtualservice
from sailmesh.api.rules.values import metadata_error
from sailmesh.api.schema import validate_document
from sailmesh.api.schemas import schema_for

# Fields Istio once accepted and now ignores (the API server prunes them): reported as warnings, not errors.
# websocketUpgrade: removed in Istio 1.0 (websockets are always allowed); Istio's own testdata still uses it.
IGNORED_LEGACY_FIELDS: dict[str, tuple[str, ...]] = {
    "VirtualService": ("websocketUpgrade",),
}

# Fields Istio still accepts but has deprecated without saying so in the CRD: (kind, field name) -> advice.
DEPRECATED_FIELDS: dict[tuple[str, str], str] = {
    ("DestinationRule", "consecutiveErrors"): "outlierDetection.consecutiveErrors is deprecated and ignored for HTTP;"
                                              " use consecutive5xxErrors (or consecutiveGatewayErrors)",
    ("VirtualService", "mirrorPercent"): "mirrorPercent is deprecated; use mirrorPercentage",
    ("VirtualService", "mirror_percent"): "mirror_percent is deprecated; use mirrorPercentage",
}

SpecCheck = Callable[[IssueSink, dict[str, Any]], None]
GO_CHECKS: dict[str, SpecCheck] = {
    "VirtualService": virtualservice.check_virtual_service,
    "DestinationRule": destinationrule.check_destination_rule,
    "Gateway": networking.check_gateway,
    "ServiceEntry": networking.check_service_entry,
    "Sidecar": sidecar.check_sidecar,
    "WorkloadEntry": networking.check_workload_entry,
    "WorkloadGroup": networking.check_workload_group,
    "AuthorizationPolicy": security.check_authorization_policy,
    "RequestAuthentication": security.check_request_authentication,
    "PeerAuthentication": security.check_peer_authentication,
    "EnvoyFilter": extensions.check_envoy_filter,
    "Telemetry": extensions.check_telemetry,
    "ProxyConfig": extensions.check_proxy_config,
    "WasmPlugin": extensions.check_wasm_plugin,
}


# Core kinds checked on the whole document (data, spec.template, ...).
RAW_CHECKS: dict[str, Callable[[IssueSink, Any], None]] = {
    "ConfigMap": core.check_config_map,
    "Secret": core.check_secret,
    "Pod": core.check_pod,
    "Deployment": core.check_deployment,
}


def _document(resource: Resource) -> dict[str, Any]:
    if resource.raw:
        return dict(resource.raw)
    meta: dict[str, Any] = {"name": resource.name}
    if resource.namespace:
        meta["namespace"] = resource.namespace
    if resource.labels:
        meta["labels"] = dict(resource.labels)
    return {"apiVersion": resource.api_version, "kind": resource.kind, "metadata": meta, "spec": resource.spec}


def validate(resource: Resource) -> list[Issue]:
    """Every problem in one resource (errors and warnings), in document order."""
    sink = IssueSink(resource)
    info = kinds.lookup(resource.api_version, resource.kind)
    if info is None:
        sink.add("", kinds.explain_unknown(resource.api_version, resource.kind))
        return sink.issues
    doc = _document(resource)
    core.check_metadata(sink, doc, info.namespaced)
    if info.istio_crd:
        schema = schema_for(info.group, info.kind, resource.version)
        if schema is None:  # pragma: no cover - the registry and crds.json agree (tested)
            sink.add("", f"no schema for {resource.api_version} {resource.kind}")
            return sink.issues
        legacy = IGNORED_LEGACY_FIELDS.get(resource.kind, ())

        def report(path: str, message: str) -> None:
            name = path.rpartition(".")[2]
            if message.startswith("unknown field") and name in legacy:
                sink.warn(path, f"field {name!r} is deprecated and ignored by Istio")
            elif message.startswith("deprecated: "):
                sink.warn(path, message[len("deprecated: "):])
            else:
                sink.add(path, message)

        validate_document(schema, doc, report)
        _warn_deprecated(sink, resource.kind, doc.get("spec"), "spec")
        spec = doc.get("spec")
        check = GO_CHECKS.get(resource.kind)
        meta = doc.get("metadata")
        annotations = meta.get("annotations") if isinstance(meta, dict) else None
        meta_err = metadata_error(resource.kind, resource.namespace, resource.name, annotations, spec)
        if meta_err:  # Istio's validateMetadata rejects before the kind's own checks run
            sink.add("metadata.annotations", meta_err)
        elif check is not None and (spec is None or isinstance(spec, dict)):
            # Istio's webhook runs the Go validator on every object; a missing spec is an empty message
            _guarded(sink, check, spec or {})
    elif resource.kind in RAW_CHECKS:
        _guarded(sink, RAW_CHECKS[resource.kind], doc)
    elif resource.kind == "Service":
        _guarded(sink, core.check_service, doc.get("spec", {}))
    elif resource.kind == "LocalWorkload":
        _guarded(sink, core.check_local_workload, doc.get("spec"))
    elif resource.kind in gatewayapi.CHECKS and info.group == kinds.GATEWAY_API:
        for path, message in gatewayapi.check(resource.kind, doc.get("spec")):
            sink.add(path, message)
    elif resource.kind == ratelimit.KIND:
        for path, message in ratelimit.parse(doc.get("spec"))[1]:
            sink.add(path, message)
    return _dedupe(sink.issues)


INTERNAL = "internal validator error"


def _guarded(sink: IssueSink, check: Callable[[IssueSink, Any], None], spec: Any) -> None:
    """Run a semantic check; a malformed value it did not expect becomes an issue, never a traceback."""
    try:
        check(sink, spec)
    except (TypeError, AttributeError, ValueError, KeyError, IndexError) as e:
        sink.add("spec", f"{INTERNAL} ({type(e).__name__}: {e}); fix the errors above first")


def _warn_deprecated(sink: IssueSink, kind: str, node: Any, path: str) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            advice = DEPRECATED_FIELDS.get((kind, k))
            if advice:
                sink.warn(f"{path}.{k}", advice)
            _warn_deprecated(sink, kind, v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _warn_deprecated(sink, kind, v, f"{path}[{i}]")


def _dedupe(issues: list[Issue]) -> list[Issue]:
    seen: set[tuple[str, str, str]] = set()
    out = []
    for i in issues:
        k = (i.field, i.message, i.severity)
        if k not in seen:
            seen.add(k)
            out.append(i)
    return out


def errors_only(issues: Iterable[Issue]) -> list[Issue]:
    return [i for i in issues if i.severity == "error"]


def is_valid(resource: Resource) -> bool:
    """True when validate() finds no error (warnings allowed)."""
    return not errors_only(validate(resource))


def issues_from_load(result: LoadResult) -> list[Issue]:
    """Parse errors as Issues, then every resource's issues (unknown kinds appear once, from parsing)."""
    out = [Issue(e.file, e.line, "", "", e.message) for e in result.errors]
    for r in result.resources:
        out.extend(validate(r))
    return out
