"""One Gateway API route rule -> Istio VirtualService routes (dicts, camelCase), as Istio's conversion.go does.

convertHTTPRoute / convertGRPCRoute / convertTCPRoute / convertTLSRoute: matches, filters, backendRefs with weights,
ReferenceGrant checks. A backend that cannot be used (no such Service, another kind, a cross-namespace reference no
ReferenceGrant allows) gets the share of requests the Gateway API gives it a 500 for: every backend invalid -> a
direct 500 response; some invalid -> an HTTP fault abort of 500 for exactly their share of the weight.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

PREFIX_REDIRECT = "%PREFIX()%"  # Istio's marker for a prefix-rewriting redirect `uri` (generate/httproute.py)

CORE_GROUPS = ("", "core")
SERVICE = "Service"
ISTIO_NETWORKING, HOSTNAME = "networking.istio.io", "Hostname"  # Istio's synthetic backendRef kind


@dataclass
class RefProblem:
    """Why a backendRef cannot be used: a ResolvedRefs reason of the Gateway API and Istio's message."""

    reason: str  # BackendNotFound, RefNotPermitted, InvalidKind
    message: str


@dataclass
class RuleContext:
    """What converting a route's rules needs from the rest of the config."""

    namespace: str  # the route's namespace
    route_kind: str  # HTTPRoute, GRPCRoute, TCPRoute, TLSRoute
    domain_suffix: str
    service_exists: Callable[[str, str], bool]  # (namespace, name)
    grant_allows: Callable[[str, str, str, str, str], bool]  # (from kind, from ns, to kind, to ns, to name)
    host_exists: Callable[[str, str], bool] = lambda _host, _ns: False  # (hostname, route namespace)
    problems: list[RefProblem] = field(default_factory=list)


def service_host(name: str, namespace: str, suffix: str) -> str:
    return f"{name}.{namespace}.svc.{suffix}"


def destination(ref: Mapping[str, Any], ctx: RuleContext) -> dict[str, Any] | None:
    """Istio's buildDestination: a Service backendRef -> {host, port}; None (and a problem) when it cannot be used."""
    group, kind = ref.get("group") or "", ref.get("kind") or SERVICE
    name, ns = str(ref.get("name") or ""), str(ref.get("namespace") or ctx.namespace)
    if group == ISTIO_NETWORKING and kind == HOSTNAME:
        return _hostname_destination(ref, name, ctx)
    if group not in CORE_GROUPS or kind != SERVICE:
        ctx.problems.append(RefProblem("InvalidKind", f"referencing unsupported backendRef: group {group!r} kind "
                                                      f"{kind!r}"))
        return None
    if ns != ctx.namespace and not ctx.grant_allows(ctx.route_kind, ctx.namespace, SERVICE, ns, name):
        ctx.problems.append(RefProblem("RefNotPermitted", f"backendRef {name}/{ns} not accessible to a "
                                                          f"{ctx.route_kind} in namespace {ctx.namespace!r} "
                                                          "(missing a ReferenceGrant?)"))
        return None
    host = service_host(name, ns, ctx.domain_suffix)
    if not ctx.service_exists(ns, name):
        ctx.problems.append(RefProblem("BackendNotFound", f"backend({host}) not found"))
        return None
    out: dict[str, Any] = {"host": host}
    if ref.get("port"):
        out["port"] = {"number": int(ref["port"])}
    return out


def _hostname_destination(ref: Mapping[str, Any], name: str, ctx: RuleContext) -> dict[str, Any] | None:
    """Istio's synthetic `networking.istio.io/Hostname` backendRef: the name is the destination host (a ServiceEntry's
    host, say), its port required, no namespace allowed; a host the route's namespace does not see is not found."""
    if ref.get("port") is None or ref.get("namespace") is not None:
        message = "port is required in backendRef" if ref.get("port") is None \
            else "namespace may not be set with Hostname type"
        ctx.problems.append(RefProblem("UnsupportedValue", message))
        return None
    if not ctx.host_exists(name, ctx.namespace):
        ctx.problems.append(RefProblem("BackendNotFound", f"backend({name}) not found"))
        return None
    return {"host": name, "port": {"number": int(ref["port"])}}


def header_ops(mod: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Istio's createHeadersFilter: set/add as maps, remove as a list."""
    if not mod:
        return None
    out: dict[str, Any] = {}
    for op in ("set", "add"):
        if mod.get(op):
            out[op] = {h["name"]: h["value"] for h in mod[op]}
    if mod.get("remove"):
        out["remove"] = list(mod["remove"])
    return out or None


def weighted(refs: list[Mapping[str, Any]], ctx: RuleContext, with_filters: bool
             ) -> tuple[list[dict[str, Any]], int, int]:
    """(route destinations, weight of the usable backends, weight of the unusable ones); zero weights dropped and
    a single backend unweighted, as buildHTTPDestination does."""
    good: list[dict[str, Any]] = []
    good_w = bad_w = 0
    for ref in refs:
        w = int(ref.get("weight", 1))
        if w == 0:
            continue
        dest = destination(ref, ctx)
        if dest is None:
            bad_w += w
            continue
        rd: dict[str, Any] = {"destination": dest, "weight": w}
        if with_filters:
            headers: dict[str, Any] = {}
            for f in ref.get("filters") or ():
                key = {"RequestHeaderModifier": "request", "ResponseHeaderModifier": "response"}.get(f.get("type"))
                ops = header_ops(f.get("requestHeaderModifier") or f.get("responseHeaderModifier"))
                if key and ops:  # other backendRef filter types refuse the rule (backend_filter_error)
                    headers[key] = ops
            if headers:
                rd["headers"] = headers
        good.append(rd)
        good_w += w
    if len(good) == 1 and not bad_w:
        good[0].pop("weight")
    return good, good_w, bad_w


def _path_matches(path: Mapping[str, Any] | None) -> list[dict[str, str]]:
    """Istio's createURIMatch: Exact -> exact, RegularExpression -> regex; PathPrefix matches element by element
    (`/foo` matches `/foo` and `/foo/bar`, never `/foobar`; a trailing `/` is ignored), which Istio's prefix
    cannot say on its own: exact `/foo` or prefix `/foo/`; none or `/` -> prefix `/`."""
    if not path:
        return [{"prefix": "/"}]
    kind, value = path.get("type") or "PathPrefix", str(path.get("value", "/"))
    if kind == "Exact":
        return [{"exact": value}]
    if kind == "RegularExpression":
        return [{"regex": value}]
    value = value.rstrip("/")
    return [{"exact": value}, {"prefix": value + "/"}] if value else [{"prefix": "/"}]


def _value_map(items: Any) -> dict[str, dict[str, str]] | None:
    out = {}
    for h in items or ():
        out[str(h["name"])] = {"regex" if h.get("type") == "RegularExpression" else "exact": str(h["value"])}
    return out or None


def http_matches(rule: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rule's matches as Istio HTTPMatchRequests (one per Gateway API match; none -> match everything)."""
    out = []
    for m in rule.get("matches") or ():
        match: dict[str, Any] = {}
        if (headers := _value_map(m.get("headers"))) is not None:
            match["headers"] = {k.lower(): v for k, v in headers.items()}
        if (params := _value_map(m.get("queryParams"))) is not None:
            match["queryParams"] = params
        if m.get("method"):
            match["method"] = {"exact": str(m["method"])}
        out += [{"uri": uri, **match} for uri in _path_matches(m.get("path"))]
    return out


def grpc_matches(rule: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Istio's createGRPCURIMatch: service+method -> exact /svc/method, service -> prefix /svc/, method -> regex."""
    out = []
    for m in rule.get("matches") or ():
        match: dict[str, Any] = {}
        method = m.get("method") or {}
        svc, name = method.get("service"), method.get("method")
        if method.get("type") == "RegularExpression":
            match["uri"] = {"regex": f"/{svc or '[^/]+'}/{name or '.+'}"}
        elif svc and name:
            match["uri"] = {"exact": f"/{svc}/{name}"}
        elif svc:
            match["uri"] = {"prefix": f"/{svc}/"}
        elif name:
            match["uri"] = {"regex": f"/[^/]+/{name}"}
        if (headers := _value_map(m.get("headers"))) is not None:
            match["headers"] = {k.lower(): v for k, v in headers.items()}
        out.append(match)
    return out


def _path_rewrite(path: Mapping[str, Any] | None) -> dict[str, Any]:
    if not path:
        return {}
    if path.get("type") == "ReplaceFullPath":
        return {"uriRegexRewrite": {"match": "/.*", "rewrite": str(path.get("replaceFullPath", "/"))}}
    return {"uri": str(path.get("replacePrefixMatch", "/"))}


def cors_policy(cors: Mapping[str, Any]) -> dict[str, Any]:
    """Istio's createCorsFilter: origins as exact matches (a `*` wildcard as a regex), credentials, methods,
    headers, exposed headers, maxAge in seconds."""
    out: dict[str, Any] = {}
    origins = []
    for origin in cors.get("allowOrigins") or ():
        text = str(origin)
        if "*" in text:
            origins.append({"regex": ".*" if text == "*" else re.escape(text).replace(r"\*", "[^/]+")})
        elif text:
            origins.append({"exact": text})
    if origins:
        out["allowOrigins"] = origins
    if cors.get("allowCredentials"):
        out["allowCredentials"] = True
    for key in ("allowMethods", "allowHeaders", "exposeHeaders"):
        if cors.get(key):
            out[key] = [str(v) for v in cors[key]]
    if cors.get("maxAge"):
        out["maxAge"] = f"{int(cors['maxAge'])}s"
    return out


def _filters(route: dict[str, Any], rule: Mapping[str, Any], ctx: RuleContext) -> str | None:
    """Apply the rule's filters to an Istio HTTPRoute; an unsupported filter type -> its message (route refused)."""
    for f in rule.get("filters") or ():
        kind = f.get("type")
        if kind == "RequestHeaderModifier" and (ops := header_ops(f.get("requestHeaderModifier"))):
            route.setdefault("headers", {})["request"] = ops
        elif kind == "ResponseHeaderModifier" and (ops := header_ops(f.get("responseHeaderModifier"))):
            route.setdefault("headers", {})["response"] = ops
        elif kind == "RequestRedirect":
            r = f.get("requestRedirect") or {}
            red: dict[str, Any] = {"redirectCode": int(r.get("statusCode") or 302)}  # Istio: 302 unless set
            if r.get("scheme"):
                red["scheme"] = r["scheme"]
            if r.get("hostname"):
                red["authority"] = r["hostname"]
            if r.get("port"):
                red["port"] = int(r["port"])
            path = r.get("path")
            if path and path.get("type") == "ReplacePrefixMatch":
                # Istio's createRedirectFilter: `%PREFIX()%<replacement>`, a prefix rewrite (generate/httproute.py)
                red["uri"] = PREFIX_REDIRECT + str(path.get("replacePrefixMatch") or "/")
            elif path:
                red["uri"] = str(path.get("replaceFullPath") or "/")
            route["redirect"] = red
        elif kind == "URLRewrite":
            r = f.get("urlRewrite") or {}
            rw = _path_rewrite(r.get("path"))
            if r.get("hostname"):
                rw["authority"] = r["hostname"]
            if rw:
                route["rewrite"] = rw
        elif kind == "RequestMirror":
            m = f.get("requestMirror") or {}
            dest = destination(m.get("backendRef") or {}, ctx)
            if dest is None:
                continue
            mirror: dict[str, Any] = {"destination": dest}
            if m.get("percent") is not None:
                mirror["percentage"] = {"value": float(m["percent"])}
            elif m.get("fraction"):
                frac = m["fraction"]
                mirror["percentage"] = {"value": 100.0 * float(frac["numerator"]) / float(frac.get("denominator", 100))}
            route.setdefault("mirrors", []).append(mirror)
        elif kind in ("RequestHeaderModifier", "ResponseHeaderModifier"):
            continue
        elif kind == "CORS":
            route["corsPolicy"] = cors_policy(f.get("cors") or {})
        else:
            return f"unsupported filter type {kind!r}"
    return None


BACKEND_FILTERS = ("RequestHeaderModifier", "ResponseHeaderModifier")


def backend_filter_error(rule: Mapping[str, Any]) -> str | None:
    """Istio's buildHTTPDestination / buildGRPCDestination take only header modifiers as backendRef filters; any
    other type refuses the route ("unsupported filter type"), as a rule filter Istio does not know does."""
    for ref in rule.get("backendRefs") or ():
        for f in ref.get("filters") or ():
            if f.get("type") not in BACKEND_FILTERS:
                return f"unsupported filter type {f.get('type')!r}"
    return None


def _backends(route: dict[str, Any], refs: list[Mapping[str, Any]], ctx: RuleContext) -> None:
    """route + the Gateway API's 500 for the share of requests that would go to unusable backends."""
    if "redirect" in route:
        return
    dests, good_w, bad_w = weighted(refs, ctx, with_filters=True)
    if not dests:
        route["directResponse"] = {"status": 500}  # "the spec requires us to return 500" (Istio's words)
        return
    route["route"] = dests
    if bad_w:
        share = 100.0 * bad_w / (good_w + bad_w)
        route["fault"] = {"abort": {"httpStatus": 500, "percentage": {"value": round(share, 6)}}}


def _timeouts(route: dict[str, Any], rule: Mapping[str, Any]) -> None:
    """timeouts.request -> timeout; retry -> retries (Istio's defaults: 2 attempts, connection errors retried);
    timeouts.backendRequest -> perTryTimeout with retries, else timeout."""
    retry = rule.get("retry")
    if retry:
        retry_on = ["connect-failure", "refused-stream", "unavailable", "cancelled",
                    *(str(c) for c in retry.get("codes") or ())]
        route["retries"] = {"attempts": int(retry.get("attempts", 2)), "retryOn": ",".join(retry_on)}
    t = rule.get("timeouts") or {}
    if t.get("request") and t["request"] not in ("0s", "0"):
        route["timeout"] = t["request"]
    if t.get("backendRequest") and t["backendRequest"] not in ("0s", "0"):
        if "retries" in route:
            route["retries"]["perTryTimeout"] = t["backendRequest"]
        else:
            route["timeout"] = t["backendRequest"]


def http_routes(route_name: str, rule: Mapping[str, Any], index: int, ctx: RuleContext,
                grpc: bool = False) -> tuple[list[dict[str, Any]], str | None]:
    """The Istio HTTPRoutes of one rule: one per match (Istio sorts on match[0], so each route has one), all
    sharing the rule's actions; the second value is why the rule is refused (unsupported filter), else None."""
    base: dict[str, Any] = {"name": str(rule.get("name") or f"{ctx.namespace}.{route_name}.{index}")}
    error = _filters(base, rule, ctx) or backend_filter_error(rule)
    if error:
        return [], error
    _backends(base, list(rule.get("backendRefs") or ()), ctx)
    if not grpc:
        _timeouts(base, rule)
    matches = grpc_matches(rule) if grpc else http_matches(rule)
    if not matches:
        return [_prefix_rewrite({**base}, "/")], None
    return [_prefix_rewrite({**base, "match": [m]}, (m.get("uri") or {}).get("prefix")) if m else dict(base)
            for m in matches], None


def _prefix_rewrite(route: dict[str, Any], prefix: str | None) -> dict[str, Any]:
    """ReplacePrefixMatch (URLRewrite, RequestRedirect) on a route matching prefix `/p/` (PathPrefix `/p`
    element-wise, or `/`): Envoy swaps the matched `/p/`, so the replacement keeps its trailing `/` (`/p/x` ->
    `/new/x`, not `/newx`)."""
    if not prefix or not prefix.endswith("/"):
        return route
    uri = (route.get("rewrite") or {}).get("uri")
    if uri is not None:
        route["rewrite"] = {**route["rewrite"], "uri": uri.rstrip("/") + "/"}
    red = str((route.get("redirect") or {}).get("uri") or "")
    if red.startswith(PREFIX_REDIRECT):
        route["redirect"] = {**route["redirect"], "uri": red.rstrip("/") + "/"}
    return route


def l4_routes(rule: Mapping[str, Any], ctx: RuleContext) -> list[dict[str, Any]]:
    """A TCPRoute/TLSRoute rule's destinations; with none usable Istio routes to a cluster that does not exist
    (the connection is refused), as convertTCPRoute does."""
    dests, _, _ = weighted(list(rule.get("backendRefs") or ()), ctx, with_filters=False)
    if not dests:
        return [{"destination": {"host": "internal.cluster.local", "subset": "zero-weight",
                                 "port": {"number": 65535}}, "weight": 0}]
    return dests
