"""Istio's Go-side checks for EnvoyFilter, Telemetry, WasmPlugin and ProxyConfig."""

from __future__ import annotations

from typing import Any

from sailmesh.api.envoyfilter_values import VALUE_TYPES, build_value
from sailmesh.api.issue import IssueSink
from sailmesh.api.rules.common import check_selector_labels
from sailmesh.errors import PatchError

LISTENER_CLASS = frozenset({"LISTENER", "FILTER_CHAIN", "NETWORK_FILTER", "HTTP_FILTER", "LISTENER_FILTER"})
ROUTE_CLASS = frozenset({"ROUTE_CONFIGURATION", "VIRTUAL_HOST", "HTTP_ROUTE"})
INSERT_OPS = frozenset({"INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST"})
INSERTABLE = frozenset({"NETWORK_FILTER", "HTTP_FILTER", "HTTP_ROUTE", "LISTENER_FILTER"})
ADDABLE = frozenset({"LISTENER", "FILTER_CHAIN", "NETWORK_FILTER", "HTTP_FILTER", "ROUTE_CONFIGURATION",
                     "VIRTUAL_HOST", "HTTP_ROUTE", "CLUSTER", "EXTENSION_CONFIG", "LISTENER_FILTER"})


def check_envoy_filter(sink: IssueSink, spec: dict[str, Any]) -> None:
    """Istio's validateEnvoyFilter: every patch has applyTo, operation, a value unless REMOVE, a matching class."""
    patches = spec.get("configPatches")
    for i, cp in enumerate(patches if isinstance(patches, list) else []):
        p = f"spec.configPatches[{i}]"
        if not isinstance(cp, dict):
            sink.add(p, "Envoy filter: null config patch")
            continue
        apply_to = cp.get("applyTo", "INVALID")
        if not isinstance(apply_to, str):
            continue  # the schema reports the type
        if apply_to == "INVALID":
            sink.add(f"{p}.applyTo", "Envoy filter: missing applyTo")
        patch = cp.get("patch")
        if not isinstance(patch, dict):
            sink.add(f"{p}.patch", "Envoy filter: missing patch")
            continue
        op = patch.get("operation", "INVALID")
        if not isinstance(op, str):
            continue
        if op == "INVALID":
            sink.add(f"{p}.patch.operation", "Envoy filter: missing patch operation")
        if op != "REMOVE" and op != "INVALID" and patch.get("value") is None:
            sink.add(f"{p}.patch.value", "Envoy filter: missing patch value for non-remove operation")
        if op in INSERT_OPS and apply_to not in INSERTABLE:
            sink.add(f"{p}.patch.operation", f"Envoy filter: {op} is not supported for {apply_to}")
        if op == "ADD" and apply_to not in ADDABLE:
            sink.add(f"{p}.patch.operation", f"Envoy filter: ADD is not supported for {apply_to}")
        if op not in ("REMOVE", "INVALID") and isinstance(patch.get("value"), dict) and apply_to in VALUE_TYPES:
            try:  # Istio's validation builds the value strictly (xds.BuildXDSObjectFromStruct(..., true))
                build_value(apply_to, patch["value"], strict=True)
            except PatchError as e:
                sink.add(f"{p}.patch.value", f"Envoy filter: {e}")
        match = cp.get("match")
        if isinstance(match, dict):
            if apply_to in LISTENER_CLASS and ("routeConfiguration" in match or "cluster" in match):
                sink.add(f"{p}.match",
                         "Envoy filter: applyTo for listener class objects cannot have non listener match")
            if apply_to in ROUTE_CLASS and ("listener" in match or "cluster" in match):
                sink.add(f"{p}.match", "Envoy filter: applyTo for http route class objects cannot have non route "
                                       "configuration match")
            if apply_to == "CLUSTER" and ("listener" in match or "routeConfiguration" in match):
                sink.add(f"{p}.match", "Envoy filter: applyTo for cluster class objects cannot have non cluster match")
    check_selector_labels(sink, "spec.workloadSelector.labels",
                          (spec.get("workloadSelector") or {}).get("labels")
                          if isinstance(spec.get("workloadSelector"), dict) else None)


def check_telemetry(sink: IssueSink, spec: dict[str, Any]) -> None:
    """Provider names non-empty; tag overrides checked by the CRD rules."""
    for section in ("tracing", "metrics", "accessLogging"):
        items = spec.get(section)
        for i, item in enumerate(items if isinstance(items, list) else []):
            providers = item.get("providers") if isinstance(item, dict) else None
            for j, prov in enumerate(providers if isinstance(providers, list) else []):
                if isinstance(prov, dict) and not prov.get("name"):
                    sink.add(f"spec.{section}[{i}].providers[{j}].name", "provider name must not be empty")
