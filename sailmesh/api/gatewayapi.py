"""The Kubernetes Gateway API kinds: validation of their specs (the CRDs' schema and CEL rules) with field paths.

gateway.networking.k8s.io v1 GatewayClass, Gateway (stored as "KubernetesGateway"), HTTPRoute, GRPCRoute; v1alpha2
TCPRoute, TLSRoute; v1beta1 ReferenceGrant. What they mean to the mesh is in generate/gatewayapi/ (converted to
Istio's Gateway and VirtualService, as Istio's pilot/pkg/config/kube/gateway does). Rules and messages follow the
Gateway API CRDs (OpenAPI enums, bounds and their x-kubernetes-validations) so a file the API server would refuse
is refused here too, naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from sailmesh.api.kinds import KUBERNETES_GATEWAY

Problems = list[tuple[str, str]]

LISTENER_PROTOCOLS = ("HTTP", "HTTPS", "TLS", "TCP", "UDP")
PATH_TYPES = ("Exact", "PathPrefix", "RegularExpression")
VALUE_TYPES = ("Exact", "RegularExpression")
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
HTTP_FILTERS = {"RequestHeaderModifier": "requestHeaderModifier", "ResponseHeaderModifier": "responseHeaderModifier",
                "RequestRedirect": "requestRedirect", "URLRewrite": "urlRewrite", "RequestMirror": "requestMirror",
                "CORS": "cors", "ExtensionRef": "extensionRef"}
GRPC_FILTERS = {k: v for k, v in HTTP_FILTERS.items() if k in (
    "RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror", "ExtensionRef")}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Gateway API's Hostname: an RFC 1123 name, optionally with a leading "*." label; no IPs, no port
_HOSTNAME = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")
MAX_WEIGHT = 1_000_000
_GRPC_SERVICE = re.compile(r"^\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$", re.I)


def _obj(node: Any, path: str, problems: Problems, required: bool = False) -> dict[str, Any]:
    if node is None:
        if required:
            problems.append((path, "required"))
        return {}
    if not isinstance(node, dict):
        problems.append((path, f"must be an object, not {type(node).__name__}"))
        return {}
    return node


def _list(node: Any, path: str, problems: Problems, lo: int = 0, hi: int = 0) -> list[Any]:
    if node is None:
        if lo:
            problems.append((path, f"required: at least {lo} item{'s' if lo > 1 else ''}"))
        return []
    if not isinstance(node, list):
        problems.append((path, f"must be a list, not {type(node).__name__}"))
        return []
    if len(node) < lo:
        problems.append((path, f"must have at least {lo} item{'s' if lo > 1 else ''}"))
    if hi and len(node) > hi:
        problems.append((path, f"must have at most {hi} items (has {len(node)})"))
    return node


def _str(node: dict[str, Any], key: str, path: str, problems: Problems, required: bool = False,
         enum: tuple[str, ...] = ()) -> str:
    value = node.get(key)
    where = f"{path}.{key}"
    if value is None:
        if required:
            problems.append((where, "required"))
        return ""
    if not isinstance(value, str):
        problems.append((where, f"must be a string, not {type(value).__name__}"))
        return ""
    if enum and value not in enum:
        problems.append((where, f"unsupported value {value!r}: one of {', '.join(enum)}"))
    return value


def _int(node: dict[str, Any], key: str, path: str, problems: Problems, lo: int, hi: int,
         required: bool = False) -> int | None:
    value = node.get(key)
    where = f"{path}.{key}"
    if value is None:
        if required:
            problems.append((where, "required"))
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        problems.append((where, f"must be an integer, not {type(value).__name__}"))
        return None
    if not lo <= value <= hi:
        problems.append((where, f"must be between {lo} and {hi} (is {value})"))
    return value


def _hostname(value: Any, path: str, problems: Problems) -> None:
    if not isinstance(value, str) or not _HOSTNAME.match(value) or len(value) > 253:
        problems.append((path, f"invalid hostname {value!r}: an RFC 1123 name, optionally starting with '*.' "
                               "(no IP address, no port)"))


# ---- shared parts -------------------------------------------------------------------------------------------


def _parent_refs(spec: dict[str, Any], problems: Problems) -> None:
    for i, ref in enumerate(_list(spec.get("parentRefs"), "spec.parentRefs", problems, hi=32)):
        path = f"spec.parentRefs[{i}]"
        ref = _obj(ref, path, problems)
        _str(ref, "name", path, problems, required=True)
        _str(ref, "group", path, problems)
        _str(ref, "kind", path, problems)
        _str(ref, "namespace", path, problems)
        _str(ref, "sectionName", path, problems)
        _int(ref, "port", path, problems, 1, 65535)


def _backend_refs(refs: Any, path: str, problems: Problems, lo: int = 0, filters: dict[str, str] | None = None) -> None:
    for i, ref in enumerate(_list(refs, path, problems, lo=lo, hi=16)):
        where = f"{path}[{i}]"
        ref = _obj(ref, where, problems)
        _str(ref, "name", where, problems, required=True)
        group, kind = _str(ref, "group", where, problems), _str(ref, "kind", where, problems)
        _str(ref, "namespace", where, problems)
        port = _int(ref, "port", where, problems, 1, 65535)
        _int(ref, "weight", where, problems, 0, MAX_WEIGHT)
        if port is None and group in ("", "core") and kind in ("", "Service"):
            problems.append((where, "Must have port for Service reference"))  # the CRD's CEL rule, its words
        if filters is not None:
            _filters(ref.get("filters"), f"{where}.filters", problems, filters)


def _header_modifier(node: Any, path: str, problems: Problems) -> None:
    node = _obj(node, path, problems, required=True)
    names: set[str] = set()
    for op in ("set", "add"):
        for i, h in enumerate(_list(node.get(op), f"{path}.{op}", problems, hi=16)):
            where = f"{path}.{op}[{i}]"
            h = _obj(h, where, problems)
            name = _str(h, "name", where, problems, required=True)
            _str(h, "value", where, problems, required=True)
            if name and not _HEADER_NAME.match(name):
                problems.append((f"{where}.name", f"invalid header name {name!r}"))
            if name.lower() in names:
                problems.append((f"{where}.name", f"header {name!r} is named twice (names are case-insensitive)"))
            names.add(name.lower())
    for i, name in enumerate(_list(node.get("remove"), f"{path}.remove", problems, hi=16)):
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            problems.append((f"{path}.remove[{i}]", f"invalid header name {name!r}"))


def _path_modifier(node: Any, path: str, problems: Problems) -> None:
    node = _obj(node, path, problems)
    if not node:
        return
    kind = _str(node, "type", path, problems, required=True, enum=("ReplaceFullPath", "ReplacePrefixMatch"))
    if kind == "ReplaceFullPath" and "replaceFullPath" not in node:
        problems.append((path, "replaceFullPath must be specified when type is set to 'ReplaceFullPath'"))
    if kind == "ReplacePrefixMatch" and "replacePrefixMatch" not in node:
        problems.append((path, "replacePrefixMatch must be specified when type is set to 'ReplacePrefixMatch'"))


def _filters(filters: Any, path: str, problems: Problems, allowed: dict[str, str]) -> None:
    for i, f in enumerate(_list(filters, path, problems, hi=16)):
        where = f"{path}[{i}]"
        f = _obj(f, where, problems)
        kind = _str(f, "type", where, problems, required=True, enum=tuple(allowed))
        field = allowed.get(kind)
        for other in set(HTTP_FILTERS.values()) - {field}:
            if other in f:
                problems.append((f"{where}.{other}", f"must not be set for filter type {kind!r}"))
        if field is None:
            continue
        if field not in f:
            problems.append((f"{where}.{field}", f"required for filter type {kind!r}"))
            continue
        if field in ("requestHeaderModifier", "responseHeaderModifier"):
            _header_modifier(f[field], f"{where}.{field}", problems)
        elif field == "requestRedirect":
            r = _obj(f[field], f"{where}.{field}", problems)
            _str(r, "scheme", f"{where}.{field}", problems, enum=("http", "https"))
            _int(r, "port", f"{where}.{field}", problems, 1, 65535)
            _int(r, "statusCode", f"{where}.{field}", problems, 301, 308)
            if r.get("statusCode") not in (None, 301, 302, 303, 307, 308):
                problems.append((f"{where}.{field}.statusCode", "unsupported value: one of 301, 302, 303, 307, 308"))
            if r.get("hostname") is not None:
                _hostname(r["hostname"], f"{where}.{field}.hostname", problems)
            _path_modifier(r.get("path"), f"{where}.{field}.path", problems)
        elif field == "urlRewrite":
            r = _obj(f[field], f"{where}.{field}", problems)
            if r.get("hostname") is not None:
                _hostname(r["hostname"], f"{where}.{field}.hostname", problems)
            _path_modifier(r.get("path"), f"{where}.{field}.path", problems)
        elif field == "requestMirror":
            m = _obj(f[field], f"{where}.{field}", problems)
            _backend_refs([m.get("backendRef")] if m.get("backendRef") is not None else None,
                          f"{where}.{field}.backendRef", problems, lo=1)


def _value_matches(items: Any, path: str, problems: Problems) -> None:
    seen: set[str] = set()
    for i, h in enumerate(_list(items, path, problems, hi=16)):
        where = f"{path}[{i}]"
        h = _obj(h, where, problems)
        name = _str(h, "name", where, problems, required=True)
        _str(h, "type", where, problems, enum=VALUE_TYPES)
        _str(h, "value", where, problems, required=True)
        if name.lower() in seen:
            problems.append((f"{where}.name", f"{name!r} is matched twice"))
        seen.add(name.lower())


# ---- kinds --------------------------------------------------------------------------------------------------


def check_gateway_class(spec: dict[str, Any], problems: Problems) -> None:
    name = _str(spec, "controllerName", "spec", problems, required=True)
    if name and "/" not in name:
        problems.append(("spec.controllerName", "must be a domain-prefixed path, e.g. istio.io/gateway-controller"))


def check_gateway(spec: dict[str, Any], problems: Problems) -> None:
    _str(spec, "gatewayClassName", "spec", problems, required=True)
    names: set[str] = set()
    for i, listener in enumerate(_list(spec.get("listeners"), "spec.listeners", problems, lo=1, hi=64)):
        path = f"spec.listeners[{i}]"
        listener = _obj(listener, path, problems)
        name = _str(listener, "name", path, problems, required=True)
        if name and not _DNS_LABEL.match(name):
            problems.append((f"{path}.name", f"invalid name {name!r}: a DNS label (lower case, digits, '-')"))
        if name in names:
            problems.append((f"{path}.name", f"Listener name must be unique within the Gateway ({name!r} repeats)"))
        names.add(name)
        _int(listener, "port", path, problems, 1, 65535, required=True)
        protocol = _str(listener, "protocol", path, problems, required=True)
        if protocol and protocol not in LISTENER_PROTOCOLS and "/" not in protocol:
            problems.append((f"{path}.protocol", f"unsupported value {protocol!r}: one of "
                                                 f"{', '.join(LISTENER_PROTOCOLS)} (or a domain-prefixed name)"))
        if listener.get("hostname") is not None:
            _hostname(listener["hostname"], f"{path}.hostname", problems)
            if protocol in ("TCP", "UDP"):
                problems.append((f"{path}.hostname", "hostname must not be specified for protocols ['TCP', 'UDP']"))
        tls = _obj(listener.get("tls"), f"{path}.tls", problems)
        if protocol in ("HTTPS", "TLS") and not tls:
            problems.append((f"{path}.tls", f"tls must be specified for protocols ['HTTPS', 'TLS'] ({protocol})"))
        if protocol in ("HTTP", "TCP", "UDP") and tls:
            problems.append((f"{path}.tls", "tls mode must be set for protocol HTTPS/TLS only"))
        if tls:
            mode = _str(tls, "mode", f"{path}.tls", problems, enum=("Terminate", "Passthrough")) or "Terminate"
            refs = _list(tls.get("certificateRefs"), f"{path}.tls.certificateRefs", problems, hi=64)
            if mode == "Terminate" and not refs and not tls.get("options"):
                problems.append((f"{path}.tls", "certificateRefs or options must be specified when mode is Terminate"))
            if mode == "Passthrough" and protocol == "HTTPS":
                problems.append((f"{path}.tls.mode", "Passthrough is for protocol TLS; HTTPS listeners terminate"))
            for j, ref in enumerate(refs):
                where = f"{path}.tls.certificateRefs[{j}]"
                ref = _obj(ref, where, problems)
                _str(ref, "name", where, problems, required=True)
                _str(ref, "kind", where, problems)
                _str(ref, "namespace", where, problems)
        allowed = _obj(listener.get("allowedRoutes"), f"{path}.allowedRoutes", problems)
        ns = _obj(allowed.get("namespaces"), f"{path}.allowedRoutes.namespaces", problems)
        origin = _str(ns, "from", f"{path}.allowedRoutes.namespaces", problems, enum=("All", "Same", "Selector"))
        if origin == "Selector" and not isinstance(ns.get("selector"), dict):
            problems.append((f"{path}.allowedRoutes.namespaces.selector", "required when from is Selector"))
        for j, k in enumerate(_list(allowed.get("kinds"), f"{path}.allowedRoutes.kinds", problems, hi=8)):
            _str(_obj(k, f"{path}.allowedRoutes.kinds[{j}]", problems), "kind", f"{path}.allowedRoutes.kinds[{j}]",
                 problems, required=True)
    for i, a in enumerate(_list(spec.get("addresses"), "spec.addresses", problems, hi=16)):
        _str(_obj(a, f"spec.addresses[{i}]", problems), "value", f"spec.addresses[{i}]", problems)


def _route_common(spec: dict[str, Any], problems: Problems, hostnames: bool = True) -> None:
    _parent_refs(spec, problems)
    if hostnames:
        for i, h in enumerate(_list(spec.get("hostnames"), "spec.hostnames", problems, hi=16)):
            _hostname(h, f"spec.hostnames[{i}]", problems)


def _rules(spec: dict[str, Any], problems: Problems) -> Iterator[tuple[str, dict[str, Any]]]:
    """The parentRefs and hostnames checked, then (path, rule) of each HTTP/GRPC rule."""
    _route_common(spec, problems)
    for i, rule in enumerate(_list(spec.get("rules"), "spec.rules", problems, hi=16)):
        yield f"spec.rules[{i}]", _obj(rule, f"spec.rules[{i}]", problems)


def _matches(rule: dict[str, Any], path: str, problems: Problems) -> Iterator[tuple[str, dict[str, Any]]]:
    for j, m in enumerate(_list(rule.get("matches"), f"{path}.matches", problems, hi=64)):
        yield f"{path}.matches[{j}]", _obj(m, f"{path}.matches[{j}]", problems)


def check_http_route(spec: dict[str, Any], problems: Problems) -> None:
    for path, rule in _rules(spec, problems):
        for where, m in _matches(rule, path, problems):
            p = _obj(m.get("path"), f"{where}.path", problems)
            kind = _str(p, "type", f"{where}.path", problems, enum=PATH_TYPES) or "PathPrefix"
            value = _str(p, "value", f"{where}.path", problems)
            if p and kind != "RegularExpression" and value and not value.startswith("/"):
                problems.append((f"{where}.path.value", "value must be an absolute path and start with '/' when "
                                                        "type one of ['Exact', 'PathPrefix']"))
            if p and kind != "RegularExpression" and ("//" in value or "/./" in value or "/../" in value):
                problems.append((f"{where}.path.value", "must not contain '//', '/./' or '/../'"))
            if kind == "RegularExpression" and value:
                try:
                    re.compile(value)
                except re.error as e:
                    problems.append((f"{where}.path.value", f"invalid regular expression: {e}"))
            _value_matches(m.get("headers"), f"{where}.headers", problems)
            _value_matches(m.get("queryParams"), f"{where}.queryParams", problems)
            _str(m, "method", where, problems, enum=METHODS)
        filters = rule.get("filters")
        _filters(filters, f"{path}.filters", problems, HTTP_FILTERS)
        types = [f.get("type") for f in filters or () if isinstance(f, dict)]
        if "RequestRedirect" in types and "URLRewrite" in types:
            problems.append((f"{path}.filters", "May specify either httpRouteFilterRequestRedirect or "
                                                "httpRouteFilterRequestRewrite, but not both"))
        for t in ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite"):
            if types.count(t) > 1:
                problems.append((f"{path}.filters", f"{t} filter cannot be repeated"))
        _backend_refs(rule.get("backendRefs"), f"{path}.backendRefs", problems, filters=HTTP_FILTERS)
        timeouts = _obj(rule.get("timeouts"), f"{path}.timeouts", problems)
        for key in ("request", "backendRequest"):
            dur = timeouts.get(key)
            if dur is not None and not (isinstance(dur, str) and re.match(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$", dur)):
                problems.append((f"{path}.timeouts.{key}", f"invalid duration {dur!r} (e.g. 10s, 1m30s, 500ms)"))


def check_grpc_route(spec: dict[str, Any], problems: Problems) -> None:
    for path, rule in _rules(spec, problems):
        for where, m in _matches(rule, path, problems):
            method = _obj(m.get("method"), f"{where}.method", problems)
            kind = _str(method, "type", f"{where}.method", problems, enum=VALUE_TYPES) or "Exact"
            service = _str(method, "service", f"{where}.method", problems)
            name = _str(method, "method", f"{where}.method", problems)
            if method and not service and not name:
                problems.append((f"{where}.method", "One or both of 'service' or 'method' must be specified"))
            if kind == "Exact" and service and not _GRPC_SERVICE.match(service):
                problems.append((f"{where}.method.service", f"invalid gRPC service name {service!r}"))
            if kind == "Exact" and name and not re.match(r"^[A-Za-z_][A-Za-z_0-9]*$", name):
                problems.append((f"{where}.method.method", f"invalid gRPC method name {name!r}"))
            _value_matches(m.get("headers"), f"{where}.headers", problems)
        _filters(rule.get("filters"), f"{path}.filters", problems, GRPC_FILTERS)
        _backend_refs(rule.get("backendRefs"), f"{path}.backendRefs", problems, filters=GRPC_FILTERS)


def check_tcp_route(spec: dict[str, Any], problems: Problems) -> None:
    _route_common(spec, problems, hostnames=False)
    for i, rule in enumerate(_list(spec.get("rules"), "spec.rules", problems, lo=1, hi=16)):
        path = f"spec.rules[{i}]"
        _backend_refs(_obj(rule, path, problems).get("backendRefs"), f"{path}.backendRefs", problems, lo=1)


def check_tls_route(spec: dict[str, Any], problems: Problems) -> None:
    _route_common(spec, problems)
    for i, rule in enumerate(_list(spec.get("rules"), "spec.rules", problems, lo=1, hi=16)):
        path = f"spec.rules[{i}]"
        _backend_refs(_obj(rule, path, problems).get("backendRefs"), f"{path}.backendRefs", problems, lo=1)


def check_reference_grant(spec: dict[str, Any], problems: Problems) -> None:
    for side in ("from", "to"):
        for i, ref in enumerate(_list(spec.get(side), f"spec.{side}", problems, lo=1, hi=16)):
            where = f"spec.{side}[{i}]"
            ref = _obj(ref, where, problems)
            _str(ref, "group", where, problems, required=True)
            _str(ref, "kind", where, problems, required=True)
            if side == "from":
                _str(ref, "namespace", where, problems, required=True)
            else:
                _str(ref, "name", where, problems)


def check_backend_tls_policy(spec: dict[str, Any], problems: Problems) -> None:
    """v1alpha3 BackendTLSPolicy: targetRefs (1-16, group/kind/name), validation.hostname, and exactly one of
    caCertificateRefs (at most 8) and wellKnownCACertificates (System) - the CRD's schema and CEL rules."""
    for i, ref in enumerate(_list(spec.get("targetRefs"), "spec.targetRefs", problems, lo=1, hi=16)):
        where = f"spec.targetRefs[{i}]"
        ref = _obj(ref, where, problems)
        _str(ref, "group", where, problems, required=True)
        _str(ref, "kind", where, problems, required=True)
        _str(ref, "name", where, problems, required=True)
    validation = _obj(spec.get("validation"), "spec.validation", problems, required=True)
    _str(validation, "hostname", "spec.validation", problems, required=True)
    refs = _list(validation.get("caCertificateRefs"), "spec.validation.caCertificateRefs", problems, hi=8)
    known = _str(validation, "wellKnownCACertificates", "spec.validation", problems, enum=("System",))
    if refs and known:
        problems.append(("spec.validation", "must not contain both CACertificateRefs and WellKnownCACertificates"))
    if not refs and not known:
        problems.append(("spec.validation", "must specify either CACertificateRefs or WellKnownCACertificates"))
    for i, san in enumerate(_list(validation.get("subjectAltNames"), "spec.validation.subjectAltNames", problems,
                                  hi=5)):
        where = f"spec.validation.subjectAltNames[{i}]"
        san = _obj(san, where, problems)
        kind = _str(san, "type", where, problems, required=True, enum=("Hostname", "URI"))
        if kind and not san.get(kind.lower() if kind == "Hostname" else "uri"):
            problems.append((where, f"SubjectAltName element must contain {kind}, if Type is set to {kind}"))


CHECKS: dict[str, Callable[[dict[str, Any], Problems], None]] = {
    "GatewayClass": check_gateway_class,
    KUBERNETES_GATEWAY: check_gateway,
    "HTTPRoute": check_http_route,
    "GRPCRoute": check_grpc_route,
    "TCPRoute": check_tcp_route,
    "TLSRoute": check_tls_route,
    "ReferenceGrant": check_reference_grant,
    "BackendTLSPolicy": check_backend_tls_policy,
}


def check(kind: str, spec: Any) -> Problems:
    """Every problem in one Gateway API spec as (field path, message); [] for a valid one (or another kind)."""
    fn = CHECKS.get(kind)
    if fn is None:
        return []
    problems: Problems = []
    if not isinstance(spec, dict):
        return [("spec", "required: an object")]
    fn(spec, problems)
    return problems
