"""Istio's Go-side checks for security.istio.io kinds (AuthorizationPolicy, RequestAuthentication, ...)."""

from __future__ import annotations

import re
from typing import Any

from sailmesh.api.issue import IssueSink
from sailmesh.api.rules.common import check_duration, check_port, check_selector_labels, is_cidr

# Condition keys AuthorizationPolicy `when` accepts (Istio docs: "Authorization Policy Conditions").
_WHEN_KEYS = frozenset({
    "source.ip", "remote.ip", "source.namespace", "source.principal", "source.trustDomain",
    "source.serviceAccount", "request.auth.principal",
    "request.auth.audiences", "request.auth.presenter", "destination.ip", "destination.port",
    "connection.sni", "experimental.envoy.filters.network.mysql_proxy",
})
_WHEN_PREFIXES = ("request.headers[", "request.auth.claims[", "experimental.envoy.filters.")
_HEADER_NAME = re.compile(r"^[-_A-Za-z0-9]+$")


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _check_values(sink: IssueSink, path: str, values: Any, kind: str) -> None:
    for i, v in enumerate(_list(values)):
        if isinstance(v, str) and v == "":
            sink.add(f"{path}[{i}]", "empty value is not allowed")
        if kind in ("ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks") and isinstance(v, str):
            if not is_cidr(v):
                sink.add(f"{path}[{i}]", f"invalid IP address or CIDR {v!r}")
        if kind in ("ports", "notPorts") and isinstance(v, str):
            if not v.isdigit() or not 0 < int(v) <= 65535:
                sink.add(f"{path}[{i}]", f"invalid port {v!r}: must be between 1 and 65535")


def check_authorization_policy(sink: IssueSink, spec: dict[str, Any]) -> None:
    action = spec.get("action", "ALLOW")
    provider = spec.get("provider")
    if action == "CUSTOM":
        if not _dict(provider).get("name"):
            sink.add("spec.provider", "CUSTOM action requires a provider with a name")
        for i, r in enumerate(_list(spec.get("rules"))):
            if not r:
                sink.add(f"spec.rules[{i}]", "CUSTOM action does not support an empty rule")
    elif provider is not None:
        sink.add("spec.provider", f"provider can only be used with CUSTOM action, not {action}")
    if action == "AUDIT" and not spec.get("rules"):
        sink.warn("spec.rules", "AUDIT policy without rules audits nothing")
    for i, rule in enumerate(_list(spec.get("rules"))):
        rp = f"spec.rules[{i}]"
        rd = _dict(rule)
        for side, inner in (("from", "source"), ("to", "operation")):
            if side in rd and not _list(rd.get(side)):
                sink.add(f"{rp}.{side}", f"rule.{side} must not be empty")
            for j, item in enumerate(_list(rd.get(side))):
                body = _dict(item).get(inner)
                p = f"{rp}.{side}[{j}].{inner}"
                if not body:
                    sink.add(p, f"{side}.{inner} must not be empty")
                    continue
                for k, vals in _dict(body).items():
                    if isinstance(vals, list) and not vals:
                        sink.add(f"{p}.{k}", f"{k} must not be an empty list")
                    _check_values(sink, f"{p}.{k}", vals, k)
        for j, cond in enumerate(_list(rd.get("when"))):
            cd, p = _dict(cond), f"{rp}.when[{j}]"
            key = cd.get("key")
            if isinstance(key, str) and key not in _WHEN_KEYS and not key.startswith(_WHEN_PREFIXES):
                sink.add(f"{p}.key", f"unknown attribute {key!r}")
            elif isinstance(key, str) and key.startswith(("request.headers[", "request.auth.claims[")):
                if not key.endswith("]") or key.endswith("[]"):
                    sink.add(f"{p}.key", f"invalid attribute {key!r}: expected {key.split('[')[0]}[NAME]")
            if not cd.get("values") and not cd.get("notValues"):
                sink.add(p, "at least one of values or notValues must be set")
            if key in ("destination.port",):
                for v in _list(cd.get("values")) + _list(cd.get("notValues")):
                    if not str(v).isdigit() or not 0 < int(str(v)) <= 65535:
                        sink.add(p, f"invalid port {v!r} in condition")
            if key in ("source.ip", "remote.ip", "destination.ip"):
                for v in _list(cd.get("values")) + _list(cd.get("notValues")):
                    if isinstance(v, str) and not is_cidr(v):
                        sink.add(p, f"invalid IP address or CIDR {v!r} in condition")
    check_selector_labels(sink, "spec.selector.matchLabels", _dict(spec.get("selector")).get("matchLabels"))


def check_request_authentication(sink: IssueSink, spec: dict[str, Any]) -> None:
    issuers: set[str] = set()
    for i, rule in enumerate(_list(spec.get("jwtRules"))):
        rd, p = _dict(rule), f"spec.jwtRules[{i}]"
        issuer = rd.get("issuer")
        if isinstance(rule, dict) and "issuer" not in rd:
            sink.add(f"{p}.issuer", "Required value: issuer must be set")
        if isinstance(issuer, str):
            if not issuer:
                sink.add(f"{p}.issuer", "issuer must not be empty")
            elif issuer in issuers:
                sink.warn(f"{p}.issuer", f"issuer {issuer!r} appears in more than one rule")
            issuers.add(issuer)
        jwks = rd.get("jwks")
        if isinstance(jwks, str) and jwks and not jwks.lstrip().startswith("{"):
            sink.add(f"{p}.jwks", "jwks must be an inline JSON Web Key Set")
        if "timeout" in rd:
            check_duration(sink, f"{p}.timeout", rd["timeout"])
        for j, h in enumerate(_list(rd.get("fromHeaders"))):
            name = _dict(h).get("name")
            if isinstance(name, str) and name and not _HEADER_NAME.match(name):
                sink.add(f"{p}.fromHeaders[{j}].name", f"invalid header name {name!r}")
    check_selector_labels(sink, "spec.selector.matchLabels", _dict(spec.get("selector")).get("matchLabels"))


def check_peer_authentication(sink: IssueSink, spec: dict[str, Any]) -> None:
    for key in _dict(spec.get("portLevelMtls")):
        if str(key).isdigit():
            check_port(sink, f"spec.portLevelMtls.{key}", int(key))
    check_selector_labels(sink, "spec.selector.matchLabels", _dict(spec.get("selector")).get("matchLabels"))
