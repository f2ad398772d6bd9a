"""Istio's ValidateAuthorizationPolicy / RequestAuthentication / PeerAuthentication (validation.go, config/security)."""

from __future__ import annotations

import json
import re
import urllib.parse
from typing import Any

from sailmesh.api.issue import IssueSink
from sailmesh.api.rules.values import (
    STRICT_HEADER_NAME_RE,
    dict_of,
    duration_error,
    ip_subnet_error,
    list_of,
    workload_selector_issues,
)

# security.IsValidLiteral: RFC 3986 pchar, the literal segments of a path template
_PCHAR = re.compile(r"^[a-zA-Z0-9\-._~%!$&'()+,;:@=]+$")
MATCH_ONE, MATCH_ANY = "{*}", "{**}"
SOURCE_FIELDS = ("principals", "requestPrincipals", "namespaces", "ipBlocks", "remoteIpBlocks", "notPrincipals",
                 "notRequestPrincipals", "notNamespaces", "notIpBlocks", "notRemoteIpBlocks", "serviceAccounts",
                 "notServiceAccounts", "trustDomains", "notTrustDomains")
TCP_SOURCE_FIELDS = ("notPrincipals", "principals", "ipBlocks", "notIpBlocks", "namespaces", "notNamespaces",
                     "remoteIpBlocks", "notRemoteIpBlocks", "serviceAccounts", "notServiceAccounts")
OPERATION_FIELDS = ("ports", "methods", "paths", "hosts", "notPorts", "notMethods", "notPaths", "notHosts")
CUSTOM_UNSUPPORTED_SOURCES = ("namespaces", "notNamespaces", "serviceAccounts", "notServiceAccounts", "trustDomains",
                              "notTrustDomains", "principals", "notPrincipals", "requestPrincipals",
                              "notRequestPrincipals")
CUSTOM_UNSUPPORTED_KEYS = ("source.namespace", "source.serviceAccount", "source.trustDomain", "source.principal")
# security.ValidateAttribute: keys with no value check, and keys Istio refuses with a reason
_PLAIN_KEYS = frozenset({"source.namespace", "source.principal", "request.auth.principal", "request.auth.audiences",
                         "request.auth.presenter", "connection.sni"})


def _strs(v: Any) -> list[str]:
    return [x if isinstance(x, str) else str(x) for x in list_of(v)]


def empty_values_error(key: str, values: list[str]) -> str | None:
    """security.CheckEmptyValues."""
    return f"empty value not allowed, found in {key}" if "" in values else None


def ips_error(values: list[str]) -> str | None:
    """security.ValidateIPs (multierror of every bad one; the first is enough to reject)."""
    for v in values:
        if "/" in v:
            if ip_subnet_error(v):
                return f"bad CIDR range ({v})"
        elif ip_subnet_error(v):
            return f"bad IP address ({v})"
    return None


def ports_error(values: list[str]) -> str | None:
    """security.ValidatePorts: unsigned integers up to 65535 (0 is allowed)."""
    for v in values:
        if not (v.isascii() and v.isdigit()) or int(v) > 65535:
            return f"bad port ({v})"
    return None


def service_account_error(key: str, values: list[str]) -> str | None:
    """security.CheckServiceAccount: at most 16, `sa` or `ns/sa`, no wildcards, at most 320 characters."""
    if len(values) > 16:
        return "may not have more than 16 values"
    for v in values:
        if v == "":
            return f"empty value not allowed, found in {key}"
        if "*" in v:
            return f"wildcard not allowed, found in {key}"
        if v.count("/") > 1:
            return f"expected format 'serviceAccount' or 'namespace/serviceAccount', found {v!r} in {key}"
        if len(v) > 320:
            return f"value cannot exceed 320 characters, found {v!r} in {key}"
        ns, sep, sa = v.partition("/")
        if sep and not ns:
            return f"expected format 'serviceAccount' or 'namespace/serviceAccount', found empty namespace {v!r} " \
                   f"in {key}"
        if sep and not sa:
            return f"expected format 'serviceAccount' or 'namespace/serviceAccount', found empty serviceAccount " \
                   f"{v!r} in {key}"
    return None


def wildcard_values_error(key: str, values: list[str]) -> str | None:
    """security.CheckWildcardValues: one `*` at most, only at the start or end."""
    err = empty_values_error(key, values)
    if err:
        return err
    for v in values:
        n = v.count("*")
        if n > 1:
            return f"at most one wildcard is allowed, found in {key}: {v!r}"
        if n == 1 and v != "*" and not v.startswith("*") and not v.endswith("*"):
            return f"wildcard is only allowed at the start or end, found in {key}: {v!r}"
    return None


def trust_domain_error(key: str, values: list[str]) -> str | None:
    """security.CheckTrustDomainValues."""
    err = wildcard_values_error(key, values)
    if err:
        return err
    for v in values:
        if "/" in v:
            return f"trust domain must not contain '/', found in {key}: {v!r}"
    return None


def path_template_error(key: str, paths: list[str]) -> str | None:
    """security.CheckValidPathTemplate: `{*}` and `{**}` whole segments, `{**}` last, literal pchar segments."""
    for path in paths:
        has_template = MATCH_ONE in path or MATCH_ANY in path
        trimmed = path.strip("/")
        found_any = False
        for glob in trimmed.split("/"):
            if glob == MATCH_ONE and not found_any:
                continue
            if glob == MATCH_ANY and not found_any:
                found_any = True
                continue
            if glob in (MATCH_ONE, MATCH_ANY) and found_any:
                return f"invalid or unsupported path {trimmed}, found in {key}. {{**}} is not the last operator"
            if "{" in glob or "}" in glob:
                return f"invalid or unsupported path {trimmed}, found in {key}. Contains '{{' or '}}' beyond a " \
                       "supported path template"
            if has_template and not _PCHAR.match(glob):
                return f"invalid or unsupported path {trimmed}, found in {key}. Contains segment {glob} with " \
                       "invalid string literal"
    return None


def _map_key_error(key: str) -> str | None:
    open_ = key.find("[")
    if key.endswith("]") and 0 < open_ < len(key) - 2:
        return None
    return f"bad key ({key}): should have format a[b]"


def attribute_error(key: str, values: list[str]) -> str | None:
    """security.ValidateAttribute."""
    err = empty_values_error(key, values)
    if err:
        return err
    if key.startswith("request.headers") or key.startswith("request.auth.claims") or \
            key.startswith("experimental.envoy.filters."):
        return _map_key_error(key)
    if key in ("source.ip", "remote.ip", "destination.ip"):
        return ips_error(values)
    if key == "source.serviceAccount":
        return service_account_error(key, values)
    if key == "source.trustDomain":
        return wildcard_values_error(key, values)
    if key == "destination.port":
        return ports_error(values)
    if key in _PLAIN_KEYS:
        return None
    if key == "destination.namespace":
        return f"attribute {key} is replaced by the metadata.namespace"
    if key.startswith("destination.labels"):
        return f"attribute {key} is replaced by the workload selector"
    if key in ("destination.name", "destination.user"):
        return f"deprecated attribute {key}: only supported in v1alpha1"
    return f"unknown attribute: {key}"


def check_policy_selectors(sink: IssueSink, spec: dict[str, Any]) -> None:
    """validateOneOfSelectorType, validateWorkloadSelector and validatePolicyTargetReference(s)."""
    if sum((spec.get("selector") is not None, spec.get("targetRef") is not None,
            bool(list_of(spec.get("targetRefs"))))) > 1:
        sink.add("spec", "only one of targetRefs or workloadSelector can be set")
    workload_selector_issues(sink, "spec.selector", spec.get("selector"), "matchLabels")
    refs = [("spec.targetRef", spec.get("targetRef"))] if spec.get("targetRef") is not None else []
    refs += [(f"spec.targetRefs[{i}]", r) for i, r in enumerate(list_of(spec.get("targetRefs")))]
    for path, ref in refs:
        r = dict_of(ref)
        if not r.get("name"):
            sink.add(f"{path}.name", "targetRef name must be set")
        if r.get("namespace"):
            sink.add(f"{path}.namespace", "targetRef namespace must not be set; cross namespace referencing is not "
                                          "supported")
        group, kind = str(r.get("group", "") or "core"), str(r.get("kind", ""))
        allowed = {("core", "Service"), ("networking.istio.io", "ServiceEntry"),
                   ("gateway.networking.k8s.io", "Gateway"), ("gateway.networking.k8s.io", "GatewayClass")}
        if (group, kind) not in allowed:
            sink.add(path, f"targetRef must be to one of [Service ServiceEntry Gateway GatewayClass] but was "
                           f"{r.get('group', '')}/{kind}")


def _check_source(sink: IssueSink, p: str, src: dict[str, Any], i: int) -> bool:
    """The `from.source` part of ValidateAuthorizationPolicy; True when it holds TCP attributes."""
    n = {f: _strs(src.get(f)) for f in SOURCE_FIELDS}
    if sum(len(n[f]) for f in ("principals", "notPrincipals", "namespaces", "notNamespaces")) and \
            len(n["serviceAccounts"]) + len(n["notServiceAccounts"]):
        sink.add(p, f"cannot set serviceAccounts with namespaces or principals, found at rule {i}")
    if not any(n.values()):
        sink.add(p, f"`from.source` must not be empty, found at rule {i}")
    for f in ("ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks"):
        err = ips_error(n[f])
        if err:
            sink.add(f"{p}.{f}", err)
    for f in SOURCE_FIELDS:
        key = f[0].upper() + f[1:]
        if f in ("serviceAccounts", "notServiceAccounts"):
            err = service_account_error(key, n[f])
        elif f in ("trustDomains", "notTrustDomains"):
            err = trust_domain_error(key, n[f])
        else:
            err = empty_values_error(key, n[f])
        if err:
            sink.add(f"{p}.{f}", err)
    return any(src.get(f) is not None for f in TCP_SOURCE_FIELDS)


def _check_operation(sink: IssueSink, p: str, op: dict[str, Any], i: int) -> bool:
    """The `to.operation` part of ValidateAuthorizationPolicy; True when it names ports."""
    n = {f: _strs(op.get(f)) for f in OPERATION_FIELDS}
    if not any(n.values()):
        sink.add(p, f"`to.operation` must not be empty, found at rule {i}")
    for f in ("ports", "notPorts"):
        err = ports_error(n[f])
        if err:
            sink.add(f"{p}.{f}", err)
    for f in OPERATION_FIELDS:
        err = empty_values_error(f[0].upper() + f[1:], n[f])
        if err:
            sink.add(f"{p}.{f}", err)
    for f in ("paths", "notPaths"):
        err = path_template_error(f[0].upper() + f[1:], n[f])
        if err:
            sink.add(f"{p}.{f}", err)
    return op.get("ports") is not None or op.get("notPorts") is not None


def _check_custom(sink: IssueSink, spec: dict[str, Any]) -> None:
    """The CUSTOM-action constraints of ValidateAuthorizationPolicy."""
    if spec.get("rules") is None:
        sink.add("spec.rules", "CUSTOM action without `rules` is meaningless as it will never be triggered, add an "
                               "empty rule `{}` if you want it be triggered for every request")
    elif not dict_of(spec.get("provider")).get("name"):
        sink.add("spec.provider.name", "`provider.name` must not be empty")
    for i, rule in enumerate(list_of(spec.get("rules"))):
        rd = dict_of(rule)
        for j, f in enumerate(list_of(rd.get("from"))):
            src = dict_of(dict_of(f).get("source"))
            for field in CUSTOM_UNSUPPORTED_SOURCES:
                if list_of(src.get(field)):
                    sink.add(f"spec.rules[{i}].from[{j}].source.{field}",
                             f"From.{field[0].upper() + field[1:]} is currently not supported with CUSTOM action")
        for j, w in enumerate(list_of(rd.get("when"))):
            if w is None:
                sink.add(f"spec.rules[{i}].when[{j}]", "when field cannot be nil")
                continue
            key = str(dict_of(w).get("key", ""))
            if key in CUSTOM_UNSUPPORTED_KEYS or key.startswith("request.auth."):
                sink.add(f"spec.rules[{i}].when[{j}].key", f"{key} is currently not supported with CUSTOM action")


def check_authorization_policy(sink: IssueSink, spec: dict[str, Any]) -> None:
    """ValidateAuthorizationPolicy (the error prefix `invalid policy NAME.NAMESPACE:` is left out)."""
    check_policy_selectors(sink, spec)
    action = spec.get("action", "ALLOW")
    if action == "CUSTOM":
        _check_custom(sink, spec)
    if spec.get("provider") is not None and action != "CUSTOM":
        sink.add("spec.provider", f"`provider` must not be with non CUSTOM action, found {action}")
    if action == "DENY" and spec.get("rules") is None:
        sink.add("spec.rules", "DENY action without `rules` is meaningless as it will never be triggered, add an "
                               "empty rule `{}` if you want it be triggered for every request")
    for i, rule in enumerate(list_of(spec.get("rules"))):
        rp = f"spec.rules[{i}]"
        if rule is None:
            sink.add(rp, f"`rule` must not be nil, found at rule {i}")
            continue
        rd = dict_of(rule)
        tcp_from = tcp_to = from_exists = to_exists = False
        for side, inner in (("from", "source"), ("to", "operation")):
            if rd.get(side) is not None and not list_of(rd.get(side)):
                sink.add(f"{rp}.{side}", f"`{side}` must not be empty, found at rule {i}")
            for j, item in enumerate(list_of(rd.get(side))):
                p = f"{rp}.{side}[{j}]"
                if item is None:
                    sink.add(p, f"`{side}` must not be nil, found at rule {i}")
                    continue
                body = dict_of(item).get(inner)
                if body is None:
                    sink.add(f"{p}.{inner}", f"`{side}.{inner}` must not be nil, found at rule {i}")
                elif side == "from":
                    from_exists = True
                    tcp_from = _check_source(sink, f"{p}.{inner}", dict_of(body), i) or tcp_from
                else:
                    to_exists = True
                    tcp_to = _check_operation(sink, f"{p}.{inner}", dict_of(body), i) or tcp_to
        for j, cond in enumerate(list_of(rd.get("when"))):
            cd, p = dict_of(cond), f"{rp}.when[{j}]"
            key = cd.get("key", "")
            if not key:
                sink.add(f"{p}.key", "`key` must not be empty")
                continue
            values, not_values = _strs(cd.get("values")), _strs(cd.get("notValues"))
            if not values and not not_values:
                sink.add(p, f"at least one of `values` or `notValues` must be set for key {key}")
                continue
            for field, vals, what in (("values", values, "value"), ("notValues", not_values, "notValue")):
                err = attribute_error(str(key), vals)
                if err:
                    sink.add(f"{p}.{field}" if vals else f"{p}.key", f"invalid `{what}` for `key` {key}: {err}")
        if action == "DENY" and ((from_exists and not to_exists and not tcp_from) or (to_exists and not tcp_to)):
            sink.warn(rp, "configured AuthorizationPolicy will deny all traffic to TCP ports under its scope due to "
                          "the use of only HTTP attributes in a DENY rule; it is recommended to explicitly specify "
                          "the port")


def jwks_uri_error(uri: str) -> str | None:
    """security.ParseJwksURI: an http or https URL (the port, when given, a number)."""
    try:
        u = urllib.parse.urlsplit(uri)
        u.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as e:
        return str(e)
    if u.scheme not in ("http", "https"):
        return f'URI scheme "{u.scheme}" is not supported'
    return None


def _jwks_error(jwks: str) -> str | None:
    """jwk.Parse accepts a JSON key set ({"keys": [...]}) or a single key ({"kty": ...})."""
    try:
        doc = json.loads(jwks)
    except ValueError as e:
        return f"jwks parse error: {e}"
    if not isinstance(doc, dict) or not ("keys" in doc or "kty" in doc):
        return "jwks parse error: failed to parse jwk set"
    return None


def check_jwt_rule(sink: IssueSink, p: str, rd: dict[str, Any]) -> None:
    """validateJwtRule."""
    for j, aud in enumerate(list_of(rd.get("audiences"))):
        if aud == "":
            sink.add(f"{p}.audiences[{j}]", "audience must be non-empty string")
    if not rd.get("issuer") and not rd.get("jwksUri"):
        sink.add(p, "issuer or jwksUri must be non-empty string")
    if isinstance(rd.get("jwksUri"), str) and rd["jwksUri"]:
        err = jwks_uri_error(rd["jwksUri"])
        if err:
            sink.add(f"{p}.jwksUri", err)
    if isinstance(rd.get("jwks"), str) and rd["jwks"]:
        err = _jwks_error(rd["jwks"])
        if err:
            sink.add(f"{p}.jwks", err)
    for j, loc in enumerate(list_of(rd.get("fromHeaders"))):
        if loc is None:
            sink.add(f"{p}.fromHeaders[{j}]", "location header name must be non-null")
        elif not dict_of(loc).get("name"):
            sink.add(f"{p}.fromHeaders[{j}].name", "location header name must be non-empty string")
    for field, msg in (("fromParams", "location query must be non-empty string"),
                       ("fromCookies", "cookie name must be non-empty string")):
        for j, v in enumerate(list_of(rd.get(field))):
            if v == "":
                sink.add(f"{p}.{field}[{j}]", msg)
    for j, ch in enumerate(list_of(rd.get("outputClaimToHeaders"))):
        cp = f"{p}.outputClaimToHeaders[{j}]"
        if ch is None:
            sink.add(cp, "outputClaimToHeaders must not be null")
            continue
        cd = dict_of(ch)
        if not cd.get("claim") or not cd.get("header"):
            sink.add(cp, "outputClaimToHeaders header and claim value must be non-empty string")
        elif not (isinstance(cd["header"], str) and STRICT_HEADER_NAME_RE.match(cd["header"])):
            sink.add(f"{cp}.header", f"header name {cd['header']} is not a valid header name")
    if rd.get("timeout") is not None:
        err = duration_error(rd["timeout"])
        if err:
            sink.add(f"{p}.timeout", err)


def check_request_authentication(sink: IssueSink, spec: dict[str, Any]) -> None:
    """ValidateRequestAuthentication (+ warnPrivateJwksKeys)."""
    check_policy_selectors(sink, spec)
    for i, rule in enumerate(list_of(spec.get("jwtRules"))):
        if rule is None:
            continue
        rd, p = dict_of(rule), f"spec.jwtRules[{i}]"
        check_jwt_rule(sink, p, rd)
        if isinstance(rd.get("jwks"), str) and rd["jwks"] and not _jwks_error(rd["jwks"]):
            doc = json.loads(rd["jwks"])
            keys = doc.get("keys", [doc]) if isinstance(doc, dict) else []
            for k, key in enumerate(keys if isinstance(keys, list) else []):
                kd = dict_of(key)
                if kd.get("kty") == "oct" or "d" in kd:
                    sink.warn(f"{p}.jwks", f"jwks key at index {k} contains private key material; only public keys "
                                           "are used for verification")


def check_peer_authentication(sink: IssueSink, spec: dict[str, Any]) -> None:
    """ValidatePeerAuthentication."""
    selector = spec.get("selector")
    empty = selector is None or not dict_of(dict_of(selector).get("matchLabels"))
    levels = spec.get("portLevelMtls")
    if empty and dict_of(levels):
        sink.add("spec.portLevelMtls", "mesh/namespace peer authentication cannot have port level mTLS")
    if levels is not None and not dict_of(levels):
        sink.add("spec.portLevelMtls", "port level mTLS, if defined, must have at least one element")
    for key in dict_of(levels):
        port = int(key) if str(key).isdigit() else -1
        if port <= 0 or port > 65535:
            sink.add(f"spec.portLevelMtls.{key}", "port must be in range 1..65535")
    workload_selector_issues(sink, "spec.selector", selector, "matchLabels")
