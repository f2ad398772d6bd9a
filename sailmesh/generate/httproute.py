"""One VirtualService HTTPRoute -> Envoy routes: match, destinations, retries, faults, rewrites, CORS, headers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import wrappers_pb2

from sailmesh.api.hosts import resolve_short_name, selector_matches
from sailmesh.api.resource import Resource
from sailmesh.api.types import parse_duration, percent
from sailmesh.generate import names
from sailmesh.generate.common import duration, fractional, go_duration, pack, u32
from sailmesh.generate.policy import effective_policy
from sailmesh.generate.scope import destination_rule
from sailmesh.snapshot.index import MESH_GATEWAY, gateway_ref
from sailmesh.snapshot.model import MeshSnapshot, ProxyView

FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"
DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
DEFAULT_RETRY_ATTEMPTS = 2
REDIRECT_CODES = {
    301: rc.RedirectAction.MOVED_PERMANENTLY,
    302: rc.RedirectAction.FOUND,
    303: rc.RedirectAction.SEE_OTHER,
    307: rc.RedirectAction.TEMPORARY_REDIRECT,
    308: rc.RedirectAction.PERMANENT_REDIRECT,
}
SET = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
ADD = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD


@dataclass(frozen=True)
class RouteContext:
    """Where routes are being built: for which proxy, on which port, for which gateway (`mesh` for sidecars)."""

    snapshot: MeshSnapshot
    proxy: ProxyView
    port: int
    gateway: str = MESH_GATEWAY

    @property
    def suffix(self) -> str:
        return self.snapshot.mesh.domain_suffix


# ---- matches -------------------------------------------------------------------------------------------


def string_matcher(spec: Mapping[str, Any], ignore_case: bool = False) -> string_pb2.StringMatcher | None:
    """Istio StringMatch (exact/prefix/regex) -> Envoy StringMatcher; None when it names no match type."""
    m = string_pb2.StringMatcher(ignore_case=ignore_case)
    if "exact" in spec:
        m.exact = str(spec["exact"])
    elif "prefix" in spec:
        m.prefix = str(spec["prefix"])
    elif "regex" in spec:
        m.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex=str(spec["regex"])))
        m.ignore_case = False
    else:
        return None
    return m


def header_matcher(name: str, spec: Any, invert: bool = False) -> rc.HeaderMatcher:
    """A header condition; an empty StringMatch means "present" (Istio)."""
    h = rc.HeaderMatcher(name=name, invert_match=invert)
    sm = string_matcher(spec) if isinstance(spec, Mapping) else None
    if sm is None:
        h.present_match = True
    else:
        h.string_match.CopyFrom(sm)
    return h


def _match_applies(m: Mapping[str, Any], ctx: RouteContext, vs_ns: str) -> bool:
    port = m.get("port")
    if port and int(port) != ctx.port:
        return False
    labels = m.get("sourceLabels")
    if isinstance(labels, Mapping) and not selector_matches(labels, ctx.proxy.labels):
        return False
    src_ns = m.get("sourceNamespace")
    if src_ns and src_ns != ctx.proxy.namespace:
        return False
    gws = m.get("gateways")
    return not gws or ctx.gateway in {gateway_ref(str(g), vs_ns) for g in gws}


def route_match(m: Mapping[str, Any]) -> rc.RouteMatch:
    """Istio HTTPMatchRequest -> Envoy RouteMatch."""
    out = rc.RouteMatch()
    uri = m.get("uri") if isinstance(m.get("uri"), Mapping) else {}
    if "exact" in uri:
        out.path = str(uri["exact"])
    elif "prefix" in uri:
        out.prefix = str(uri["prefix"])
    elif "regex" in uri:
        out.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex=str(uri["regex"])))
    else:
        out.prefix = "/"
    if m.get("ignoreUriCase"):
        out.case_sensitive.value = False
    for key, header in (("method", ":method"), ("authority", ":authority"), ("scheme", ":scheme")):
        if isinstance(m.get(key), Mapping):
            out.headers.append(header_matcher(header, m[key]))
    for name, spec in sorted((m.get("headers") or {}).items()):
        out.headers.append(header_matcher(str(name), spec))
    for name, spec in sorted((m.get("withoutHeaders") or {}).items()):
        out.headers.append(header_matcher(str(name), spec, invert=True))
    for name, spec in sorted((m.get("queryParams") or {}).items()):
        q = rc.QueryParameterMatcher(name=str(name))
        sm = string_matcher(spec) if isinstance(spec, Mapping) else None
        if sm is None:
            q.present_match = True
        else:
            q.string_match.CopyFrom(sm)
        out.query_parameters.append(q)
    return out


# ---- destinations --------------------------------------------------------------------------------------


def destination_cluster(dest: Mapping[str, Any], vs_ns: str, ctx: RouteContext) -> str:
    """`outbound|port|subset|host` for a Destination; the port defaults to the service's only port, else ctx.port."""
    host = resolve_short_name(str(dest.get("host") or ""), vs_ns, ctx.suffix)
    port = (dest.get("port") or {}).get("number")
    if not port:
        svc = ctx.snapshot.services.get(host)
        port = svc.ports[0].port if svc is not None and len(svc.ports) == 1 else ctx.port
    return names.outbound_cluster(int(port), str(dest.get("subset") or ""), host)


def hash_policies(cluster: str, ctx: RouteContext) -> list[rc.RouteAction.HashPolicy]:
    """The consistentHash of the destination's DestinationRule (subset and port aware) as route hash policies."""
    _, port, subset, host = names.parse_cluster(cluster)
    svc = ctx.snapshot.services.get(host)
    if svc is None:
        return []
    lb = effective_policy(destination_rule(ctx.snapshot, ctx.proxy.namespace, svc), subset, port).get(
        "loadBalancer"
    )
    ch = lb.get("consistentHash") if isinstance(lb, Mapping) else None
    if not isinstance(ch, Mapping):
        return []
    hp = rc.RouteAction.HashPolicy()
    if ch.get("httpHeaderName"):
        hp.header.header_name = str(ch["httpHeaderName"])
    elif isinstance(ch.get("httpCookie"), Mapping):
        cookie = ch["httpCookie"]
        hp.cookie.name = str(cookie.get("name") or "")
        if cookie.get("path"):
            hp.cookie.path = str(cookie["path"])
        if cookie.get("ttl"):
            hp.cookie.ttl.CopyFrom(go_duration(cookie["ttl"]))
    elif ch.get("useSourceIp"):
        hp.connection_properties.source_ip = True
    elif ch.get("httpQueryParameterName"):
        hp.query_parameter.name = str(ch["httpQueryParameterName"])
    else:
        return []
    return [hp]


def header_ops(spec: Any) -> tuple[list[base_pb2.HeaderValueOption], list[str]]:
    """Istio Headers.HeaderOperations {set, add, remove} -> (headers to add, names to remove)."""
    if not isinstance(spec, Mapping):
        return [], []
    adds = [
        base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=str(k), value=str(v)), append_action=SET)
        for k, v in sorted((spec.get("set") or {}).items())
    ]
    adds += [
        base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=str(k), value=str(v)), append_action=ADD)
        for k, v in sorted((spec.get("add") or {}).items())
    ]
    return adds, [str(h) for h in spec.get("remove") or []]


def _headers(holder: Any, headers: Any) -> None:
    if not isinstance(headers, Mapping):
        return
    add, rm = header_ops(headers.get("request"))
    holder.request_headers_to_add.extend(add)
    holder.request_headers_to_remove.extend(rm)
    add, rm = header_ops(headers.get("response"))
    holder.response_headers_to_add.extend(add)
    holder.response_headers_to_remove.extend(rm)


# ---- policies ------------------------------------------------------------------------------------------


def retry_policy(spec: Any) -> rc.RetryPolicy | None:
    """Istio's retry.ConvertPolicy: the default policy unless overridden; `attempts: 0` disables retries."""
    if isinstance(spec, Mapping) and spec.get("attempts") is not None and int(spec["attempts"]) == 0:
        return None
    p = rc.RetryPolicy(
        retry_on=DEFAULT_RETRY_ON,
        num_retries=u32(DEFAULT_RETRY_ATTEMPTS),
        retriable_status_codes=[503],
        host_selection_retry_max_attempts=5,
        retry_host_predicate=[
            rc.RetryPolicy.RetryHostPredicate(
                name="envoy.retry_host_predicates.previous_hosts",
                typed_config=pack(previous_hosts_pb2.PreviousHostsPredicate()),
            )
        ],
    )
    if not isinstance(spec, Mapping):
        return p
    if spec.get("attempts"):
        p.num_retries.value = int(spec["attempts"])
    if spec.get("perTryTimeout"):
        p.per_try_timeout.CopyFrom(go_duration(spec["perTryTimeout"]))
    if spec.get("retryOn"):
        on, codes = [], []
        for part in str(spec["retryOn"]).split(","):
            part = part.strip()
            if part.isdigit():
                codes.append(int(part))
            elif part:
                on.append(part)
        if codes and "retriable-status-codes" not in on:
            on.append("retriable-status-codes")
        p.retry_on = ",".join(on)
        del p.retriable_status_codes[:]
        p.retriable_status_codes.extend(codes)
    return p


def fault_config(spec: Any) -> fault_pb2.HTTPFault | None:
    """Istio HTTPFaultInjection -> HTTPFault (percentages over a million; unset percentage = 0 as in Istio)."""
    if not isinstance(spec, Mapping):
        return None
    out = fault_pb2.HTTPFault()
    delay, abort = spec.get("delay"), spec.get("abort")
    if isinstance(delay, Mapping):
        if delay.get("fixedDelay"):
            out.delay.fixed_delay.CopyFrom(go_duration(delay["fixedDelay"]))
        pct = percent(delay["percentage"]) if delay.get("percentage") is not None else float(delay.get("percent") or 0)
        out.delay.percentage.CopyFrom(fractional(pct))
    if isinstance(abort, Mapping):
        if abort.get("httpStatus"):
            out.abort.http_status = int(abort["httpStatus"])
        elif abort.get("grpcStatus"):
            out.abort.grpc_status = _grpc_code(abort["grpcStatus"])
        pct = percent(abort["percentage"]) if abort.get("percentage") is not None else 0.0
        out.abort.percentage.CopyFrom(fractional(pct))
    if not out.HasField("delay") and not out.HasField("abort"):
        return None
    return out


GRPC_CODES = (
    "OK CANCELLED UNKNOWN INVALID_ARGUMENT DEADLINE_EXCEEDED NOT_FOUND ALREADY_EXISTS PERMISSION_DENIED "
    "RESOURCE_EXHAUSTED FAILED_PRECONDITION ABORTED OUT_OF_RANGE UNIMPLEMENTED INTERNAL UNAVAILABLE DATA_LOSS "
    "UNAUTHENTICATED"
).split()


def _grpc_code(value: Any) -> int:
    s = str(value).upper()
    return GRPC_CODES.index(s) if s in GRPC_CODES else int(value)


def cors_policy(spec: Any) -> cors_pb2.CorsPolicy | None:
    """Istio CorsPolicy -> the CORS filter's per-route config."""
    if not isinstance(spec, Mapping):
        return None
    out = cors_pb2.CorsPolicy()
    for origin in spec.get("allowOrigins") or []:
        sm = string_matcher(origin) if isinstance(origin, Mapping) else None
        if sm is not None:
            out.allow_origin_string_match.append(sm)
    for origin in spec.get("allowOrigin") or []:  # deprecated exact list
        out.allow_origin_string_match.append(string_pb2.StringMatcher(exact=str(origin)))
    if spec.get("allowMethods"):
        out.allow_methods = ",".join(str(m) for m in spec["allowMethods"])
    if spec.get("allowHeaders"):
        out.allow_headers = ",".join(str(h) for h in spec["allowHeaders"])
    if spec.get("exposeHeaders"):
        out.expose_headers = ",".join(str(h) for h in spec["exposeHeaders"])
    if spec.get("maxAge"):
        out.max_age = str(int(parse_duration(spec["maxAge"])))
    if spec.get("allowCredentials") is not None:
        out.allow_credentials.CopyFrom(wrappers_pb2.BoolValue(value=bool(spec["allowCredentials"])))
    out.filter_enabled.default_value.CopyFrom(fractional(100.0))
    return out


def _mirrors(http: Mapping[str, Any], vs_ns: str, ctx: RouteContext) -> list[rc.RouteAction.RequestMirrorPolicy]:
    specs: list[tuple[Mapping[str, Any], Any]] = []
    if isinstance(http.get("mirror"), Mapping):
        specs.append((http["mirror"], http.get("mirrorPercentage")))
    for m in http.get("mirrors") or []:
        if isinstance(m, Mapping) and isinstance(m.get("destination"), Mapping):
            specs.append((m["destination"], m.get("percentage")))
    out = []
    for dest, pct in specs:
        p = rc.RouteAction.RequestMirrorPolicy(cluster=destination_cluster(dest, vs_ns, ctx))
        value = percent(pct) if pct is not None else float(http.get("mirrorPercent", 100))
        p.runtime_fraction.default_value.CopyFrom(fractional(value))
        out.append(p)
    return out


# ---- whole routes --------------------------------------------------------------------------------------


def route_action_defaults(action: rc.RouteAction, timeout_s: float) -> None:
    """Istio's timeout handling: route timeout (0s = disabled) also caps gRPC's grpc-timeout header."""
    action.timeout.CopyFrom(duration(timeout_s))
    action.max_stream_duration.max_stream_duration.CopyFrom(duration(timeout_s))
    action.max_stream_duration.grpc_timeout_header_max.CopyFrom(duration(timeout_s))


def default_route(cluster: str, ctx: RouteContext, decorator_host: str) -> rc.Route:
    """The route Istio builds for a service without a VirtualService: everything to its default cluster."""
    action = rc.RouteAction(cluster=cluster, hash_policy=hash_policies(cluster, ctx))
    route_action_defaults(action, 0)
    retry = retry_policy(None)
    if retry is not None:
        action.retry_policy.CopyFrom(retry)
    return rc.Route(
        name="default",
        match=rc.RouteMatch(prefix="/"),
        route=action,
        decorator=rc.Decorator(operation=f"{decorator_host}:{ctx.port}/*"),
    )


def _action(http: Mapping[str, Any], vs_ns: str, ctx: RouteContext, route: rc.Route) -> None:
    """Fill route.route, route.redirect or route.direct_response."""
    if isinstance(http.get("redirect"), Mapping):
        r = http["redirect"]
        red = route.redirect
        if r.get("uri"):
            red.path_redirect = str(r["uri"])
        if r.get("authority"):
            red.host_redirect = str(r["authority"])
        if r.get("port"):
            red.port_redirect = int(r["port"])
        if r.get("scheme"):
            red.scheme_redirect = str(r["scheme"])
        red.response_code = REDIRECT_CODES.get(int(r.get("redirectCode") or 301), rc.RedirectAction.MOVED_PERMANENTLY)
        return
    if isinstance(http.get("directResponse"), Mapping):
        d = http["directResponse"]
        route.direct_response.status = int(d.get("status") or 200)
        body = d.get("body") if isinstance(d.get("body"), Mapping) else {}
        if body.get("string"):
            route.direct_response.body.inline_string = str(body["string"])
        return
    dests = [d for d in http.get("route") or [] if isinstance(d, Mapping) and isinstance(d.get("destination"), Mapping)]
    action = route.route
    weighted = [(d, int(d.get("weight") or 0)) for d in dests]
    if len(dests) > 1:
        weighted = [(d, w) for d, w in weighted if w > 0]
    if len(weighted) == 1:
        d = weighted[0][0]
        action.cluster = destination_cluster(d["destination"], vs_ns, ctx)
        _headers(route, d.get("headers"))
    elif weighted:
        for d, w in weighted:
            cw = rc.WeightedCluster.ClusterWeight(
                name=destination_cluster(d["destination"], vs_ns, ctx), weight=u32(w)
            )
            _headers(cw, d.get("headers"))
            action.weighted_clusters.clusters.append(cw)
    else:
        action.cluster = names.BLACKHOLE_CLUSTER
    first = action.cluster or (action.weighted_clusters.clusters[0].name if action.weighted_clusters.clusters else "")
    if first and first != names.BLACKHOLE_CLUSTER:
        action.hash_policy.extend(hash_policies(first, ctx))
    route_action_defaults(action, parse_duration(http["timeout"]) if http.get("timeout") else 0)
    retry = retry_policy(http.get("retries"))
    if retry is not None:
        action.retry_policy.CopyFrom(retry)
    rewrite = http.get("rewrite") if isinstance(http.get("rewrite"), Mapping) else {}
    if rewrite.get("uri"):
        action.prefix_rewrite = str(rewrite["uri"])
    elif isinstance(rewrite.get("uriRegexRewrite"), Mapping):
        rr = rewrite["uriRegexRewrite"]
        action.regex_rewrite.pattern.regex = str(rr.get("match") or "")
        action.regex_rewrite.substitution = str(rr.get("rewrite") or "")
    if rewrite.get("authority"):
        action.host_rewrite_literal = str(rewrite["authority"])
    action.request_mirror_policies.extend(_mirrors(http, vs_ns, ctx))
    if first:
        _, port, _, host = names.parse_cluster(first) if "|" in first else ("", ctx.port, "", first)
        route.decorator.operation = f"{host}:{port}/*"


def translate_http(vs: Resource, http: Mapping[str, Any], ctx: RouteContext) -> list[rc.Route]:
    """Envoy routes for one VirtualService http[] entry: one per applicable match (or one catch-all)."""
    matches = [m for m in http.get("match") or [] if isinstance(m, Mapping)]
    if http.get("match") and not matches:
        return []
    applicable = [m for m in matches if _match_applies(m, ctx, vs.namespace)] if matches else [{}]
    if not applicable:
        return []
    template = rc.Route()
    _action(http, vs.namespace, ctx, template)
    _headers(template, http.get("headers"))
    fault = fault_config(http.get("fault"))
    if fault is not None:
        template.typed_per_filter_config[FAULT_FILTER].CopyFrom(pack(fault))
    cors = cors_policy(http.get("corsPolicy"))
    if cors is not None:
        template.typed_per_filter_config[CORS_FILTER].CopyFrom(pack(cors))
    template.metadata.filter_metadata["istio"].update({"config": f"/apis/networking.istio.io/v1/namespaces/"
                                                                 f"{vs.namespace}/virtual-service/{vs.name}"})
    out = []
    for m in applicable:
        r = rc.Route()
        r.CopyFrom(template)
        r.match.CopyFrom(route_match(m))
        base = str(http.get("name") or "")
        mname = str(m.get("name") or "")
        r.name = f"{base}.{mname}" if base and mname else (base or mname)
        out.append(r)
    return out
