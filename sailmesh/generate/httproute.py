"""One VirtualService HTTPRoute -> Envoy routes: match, destinations, retries, faults, rewrites, CORS, headers.

Reads the typed models (api.models.networking) the store built when the VirtualService entered it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import previous_priorities_config_pb2
from envoy.type.matcher.v3 import metadata_pb2, regex_pb2, string_pb2, value_pb2
from google.protobuf import wrappers_pb2

from sailmesh.api.hosts import resolve_short_name, selector_matches
from sailmesh.api.models import Percent, model_of
from sailmesh.api.models.networking import (
    CorsPolicy,
    Destination,
    HeaderOperations,
    Headers,
    HTTPFaultInjection,
    HTTPMatchRequest,
    HTTPRetry,
    HTTPRoute,
    PortTrafficPolicy,
    StringMatch,
    VirtualService,
)
from sailmesh.api.resource import Resource
from sailmesh.api.rules.values import routing_claims
from sailmesh.generate import names
from sailmesh.generate.alpn import ALPN_FILTER, is_sniffed
from sailmesh.generate.authz_model import JWT_FILTER, JWT_PAYLOAD, metadata_list
from sailmesh.generate.common import duration, fractional, go_duration, pack, u32
from sailmesh.generate.delegate import is_root, merged_http
from sailmesh.generate.endpoints import forwards_by_authority
from sailmesh.generate.policy import effective_policy
from sailmesh.generate.scope import destination_rule
from sailmesh.snapshot.index import MESH_GATEWAY, gateway_ref
from sailmesh.snapshot.model import MeshSnapshot, ProxyView, Service, ServicePort

FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"
# disabled in the outbound chain (filters/basic.py: passthrough_host); enabled by routes to PASSTHROUGH forward proxies
SET_FILTER_STATE_FILTER = "envoy.filters.http.set_filter_state"
DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
DEFAULT_RETRY_ATTEMPTS = 2
REDIRECT_CODES = {
    301: rc.RedirectAction.MOVED_PERMANENTLY,
    302: rc.RedirectAction.FOUND,
    303: rc.RedirectAction.SEE_OTHER,
    307: rc.RedirectAction.TEMPORARY_REDIRECT,
    308: rc.RedirectAction.PERMANENT_REDIRECT,
}
PREFIX_REDIRECT = "%PREFIX()%"  # Istio's marker: a redirect `uri` starting with it is a prefix rewrite
SET = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
ADD = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD


@dataclass(frozen=True)
class RouteContext:
    """Where routes are being built: for which proxy, on which port, for which gateway (`mesh` for sidecars)."""

    snapshot: MeshSnapshot
    proxy: ProxyView
    port: int
    gateway: str = MESH_GATEWAY
    tls: bool = False  # a gateway server with `tls` (Istio's RouteOptions.IsTLS): redirects default to https

    @property
    def suffix(self) -> str:
        return self.snapshot.mesh.domain_suffix


# ---- matches -------------------------------------------------------------------------------------------


def string_matcher(spec: StringMatch, ignore_case: bool = False) -> string_pb2.StringMatcher | None:
    """Istio StringMatch (exact/prefix/regex) -> Envoy StringMatcher; None when it names no match type."""
    m = string_pb2.StringMatcher(ignore_case=ignore_case)
    if spec.exact is not None:
        m.exact = spec.exact
    elif spec.prefix is not None:
        m.prefix = spec.prefix
    elif spec.regex is not None:
        m.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex=spec.regex))
        m.ignore_case = False
    else:
        return None
    return m


def header_matcher(name: str, spec: StringMatch | None, invert: bool = False) -> rc.HeaderMatcher:
    """A header condition; an empty StringMatch means "present" (Istio)."""
    h = rc.HeaderMatcher(name=name, invert_match=invert)
    sm = string_matcher(spec) if spec is not None else None
    if sm is None:
        h.present_match = True
    else:
        h.string_match.CopyFrom(sm)
    return h


def claim_matcher(claims: list[str], spec: StringMatch | None, invert: bool) -> metadata_pb2.MetadataMatcher:
    """`@request.auth.claims.<a>.<b>` as Istio's MetadataMatcherForJWTClaims (with Envoy's jwt_authn): the claim
    under the verified payload jwt_authn wrote (`envoy.filters.http.jwt_authn` / payload / a / b), a list holding a
    match or a matching value; an empty StringMatch means "present"; `withoutHeaders` inverts it. Only gateways
    re-select the route after jwt_authn (clear_route_cache, filters/jwt.py), as in Istio."""
    sm = string_matcher(spec) if spec is not None else None
    value = value_pb2.ValueMatcher(present_match=True) if sm is None else value_pb2.ValueMatcher(string_match=sm)
    out = metadata_list(JWT_FILTER, [JWT_PAYLOAD, *claims], value, True)
    out.invert = invert
    return out


def _match_applies(m: HTTPMatchRequest, ctx: RouteContext, vs_ns: str) -> bool:
    if m.port and m.port != ctx.port:
        return False
    if not selector_matches(m.source_labels, ctx.proxy.labels):
        return False
    if m.source_namespace and m.source_namespace != ctx.proxy.namespace:
        return False
    return not m.gateways or ctx.gateway in {gateway_ref(g, vs_ns) for g in m.gateways}


def route_match(m: HTTPMatchRequest) -> rc.RouteMatch:
    """Istio HTTPMatchRequest -> Envoy RouteMatch."""
    out = rc.RouteMatch()
    uri = m.uri or StringMatch()
    if uri.exact is not None:
        out.path = uri.exact
    elif uri.prefix is not None:
        out.prefix = uri.prefix
    elif uri.regex is not None:
        out.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex=uri.regex))
    else:
        out.prefix = "/"
    if m.ignore_uri_case:
        out.case_sensitive.value = False
    for spec, header in ((m.method, ":method"), (m.authority, ":authority"), (m.scheme, ":scheme")):
        if spec is not None:
            out.headers.append(header_matcher(header, spec))
    for headers, invert in ((m.headers, False), (m.without_headers, True)):
        for name, sm in sorted((headers or {}).items()):
            claims = routing_claims(name)
            if claims is None:
                out.headers.append(header_matcher(name, sm, invert=invert))
            else:  # JWT claim-based routing (Istio's translateMetadataMatch): the verified payload, not a header
                out.dynamic_metadata.append(claim_matcher(claims, sm, invert))
    for name, sm in sorted((m.query_params or {}).items()):
        q = rc.QueryParameterMatcher(name=name)
        matcher = string_matcher(sm)
        if matcher is None:
            q.present_match = True
        else:
            q.string_match.CopyFrom(matcher)
        out.query_parameters.append(q)
    return out


# ---- destinations --------------------------------------------------------------------------------------


def destination_cluster(dest: Destination, vs_ns: str, ctx: RouteContext) -> str:
    """`outbound|port|subset|host` for a Destination; the port defaults to the service's only port, else ctx.port."""
    host = resolve_short_name(dest.host or "", vs_ns, ctx.suffix)
    port = dest.port.number if dest.port is not None else None
    if not port:
        svc = ctx.snapshot.services.get(host)
        port = svc.ports[0].port if svc is not None and len(svc.ports) == 1 else ctx.port
    return names.outbound_cluster(port, dest.subset or "", host)


def _destination(cluster: str, ctx: RouteContext) -> tuple[Service, int, PortTrafficPolicy] | None:
    """An `outbound|port|subset|host` cluster's service, port and the DestinationRule policy the proxy applies to it
    (subset and port aware); None for an unknown service."""
    _, port, subset, host = names.parse_cluster(cluster)
    svc = ctx.snapshot.services.get(host)
    if svc is None:
        return None
    dr = destination_rule(ctx.snapshot, ctx.proxy.namespace, svc, ctx.proxy.labels)
    return svc, port, effective_policy(dr, subset, port)


def hash_policies(cluster: str, ctx: RouteContext) -> list[rc.RouteAction.HashPolicy]:
    """The consistentHash of the destination's DestinationRule (subset and port aware) as route hash policies."""
    dest = _destination(cluster, ctx)
    if dest is None:
        return []
    lb = dest[2].load_balancer
    ch = lb.consistent_hash if lb is not None else None
    if ch is None:
        return []
    hp = rc.RouteAction.HashPolicy()
    if ch.http_header_name:
        hp.header.header_name = ch.http_header_name
    elif ch.http_cookie is not None:
        cookie = ch.http_cookie
        hp.cookie.name = cookie.name or ""
        if cookie.path:
            hp.cookie.path = cookie.path
        if cookie.ttl:
            hp.cookie.ttl.CopyFrom(go_duration(cookie.ttl))
        for attr in cookie.attributes or ():  # Istio's consistentHashToHashPolicy: the generated cookie's attributes
            hp.cookie.attributes.add(name=attr.name or "", value=attr.value or "")
    elif ch.use_source_ip:
        hp.connection_properties.source_ip = True
    elif ch.http_query_parameter_name:
        hp.query_parameter.name = ch.http_query_parameter_name
    else:
        return []
    return [hp]


def header_ops(spec: HeaderOperations | None) -> tuple[list[base_pb2.HeaderValueOption], list[str]]:
    """Istio Headers.HeaderOperations {set, add, remove} -> (headers to add, names to remove)."""
    if spec is None:
        return [], []
    adds = [
        base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=k, value=v), append_action=SET)
        for k, v in sorted((spec.set or {}).items())
    ]
    adds += [
        base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=k, value=v), append_action=ADD)
        for k, v in sorted((spec.add or {}).items())
    ]
    return adds, list(spec.remove or ())


def _headers(holder: Any, headers: Headers | None) -> None:
    if headers is None:
        return
    add, rm = header_ops(headers.request)
    holder.request_headers_to_add.extend(add)
    holder.request_headers_to_remove.extend(rm)
    add, rm = header_ops(headers.response)
    holder.response_headers_to_add.extend(add)
    holder.response_headers_to_remove.extend(rm)


# ---- policies ------------------------------------------------------------------------------------------


def retry_policy(spec: HTTPRetry | None) -> rc.RetryPolicy | None:
    """Istio's retry.ConvertPolicy: the default policy unless overridden; `attempts: 0` disables retries;
    `retryIgnorePreviousHosts: false` drops the previous_hosts predicate, `backoff` is the base interval."""
    if spec is not None and spec.attempts == 0:
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
    if spec is None:
        return p
    if spec.retry_remote_localities:
        # Istio's buildPreviousPrioritiesConfig: retries move to the next priority (remote localities)
        p.retry_priority.name = "envoy.retry_priorities.previous_priorities"
        p.retry_priority.typed_config.CopyFrom(pack(previous_priorities_config_pb2.PreviousPrioritiesConfig(
            update_frequency=2)))
    if spec.attempts:
        p.num_retries.value = spec.attempts
    if spec.per_try_timeout:
        p.per_try_timeout.CopyFrom(go_duration(spec.per_try_timeout))
    if spec.retry_on:
        on, codes = [], []
        for part in spec.retry_on.split(","):
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
    if spec.retry_ignore_previous_hosts is False:  # set: honoured (true keeps the default previous_hosts predicate)
        del p.retry_host_predicate[:]
    if spec.backoff:
        p.retry_back_off.base_interval.CopyFrom(go_duration(spec.backoff))
    return p


def _percent(p: Percent | None, fallback: float) -> float:
    return p.value if p is not None else fallback


def fault_config(spec: HTTPFaultInjection | None) -> fault_pb2.HTTPFault | None:
    """Istio HTTPFaultInjection -> HTTPFault (percentages over a million; unset percentage = 0 as in Istio)."""
    if spec is None:
        return None
    out = fault_pb2.HTTPFault()
    delay, abort = spec.delay, spec.abort
    if delay is not None:
        if delay.fixed_delay:
            out.delay.fixed_delay.CopyFrom(go_duration(delay.fixed_delay))
        out.delay.percentage.CopyFrom(fractional(_percent(delay.percentage, float(delay.percent or 0))))
    if abort is not None:
        if abort.http_status:
            out.abort.http_status = abort.http_status
        elif abort.grpc_status:
            out.abort.grpc_status = _grpc_code(abort.grpc_status)
        out.abort.percentage.CopyFrom(fractional(_percent(abort.percentage, 0.0)))
    if not out.HasField("delay") and not out.HasField("abort"):
        return None
    return out


GRPC_CODES = (
    "OK CANCELLED UNKNOWN INVALID_ARGUMENT DEADLINE_EXCEEDED NOT_FOUND ALREADY_EXISTS PERMISSION_DENIED "
    "RESOURCE_EXHAUSTED FAILED_PRECONDITION ABORTED OUT_OF_RANGE UNIMPLEMENTED INTERNAL UNAVAILABLE DATA_LOSS "
    "UNAUTHENTICATED"
).split()


def _grpc_code(value: str) -> int:
    s = value.upper()
    return GRPC_CODES.index(s) if s in GRPC_CODES else int(value)


def cors_policy(spec: CorsPolicy | None) -> cors_pb2.CorsPolicy | None:
    """Istio CorsPolicy -> the CORS filter's per-route config."""
    if spec is None:
        return None
    out = cors_pb2.CorsPolicy()
    for origin in spec.allow_origins or ():
        sm = string_matcher(origin)
        if sm is not None:
            out.allow_origin_string_match.append(sm)
    for exact in spec.allow_origin or ():  # deprecated exact list
        out.allow_origin_string_match.append(string_pb2.StringMatcher(exact=exact))
    if spec.allow_methods:
        out.allow_methods = ",".join(spec.allow_methods)
    if spec.allow_headers:
        out.allow_headers = ",".join(spec.allow_headers)
    if spec.expose_headers:
        out.expose_headers = ",".join(spec.expose_headers)
    if spec.max_age:
        out.max_age = str(int(spec.max_age.seconds))
    if spec.allow_credentials is not None:
        out.allow_credentials.CopyFrom(wrappers_pb2.BoolValue(value=spec.allow_credentials))
    if (spec.unmatched_preflights or "").upper() == "IGNORE":  # Istio's forwardNotMatchingPreflights (else true,
        out.forward_not_matching_preflights.value = False    # Envoy's default, left unset here)
    out.filter_enabled.default_value.CopyFrom(fractional(100.0))
    return out


def _mirrors(http: HTTPRoute, vs_ns: str, ctx: RouteContext) -> list[rc.RouteAction.RequestMirrorPolicy]:
    specs: list[tuple[Destination, Percent | None]] = []
    if http.mirror is not None:
        specs.append((http.mirror, http.mirror_percentage))
    for m in http.mirrors or ():
        if m.destination is not None:
            specs.append((m.destination, m.percentage))
    out = []
    for dest, pct in specs:
        p = rc.RouteAction.RequestMirrorPolicy(cluster=destination_cluster(dest, vs_ns, ctx))
        legacy = http.mirror_percent if http.mirror_percent is not None else http.mirror_percent_alt
        fallback = float(legacy if legacy is not None else 100)
        p.runtime_fraction.default_value.CopyFrom(fractional(_percent(pct, fallback)))
        out.append(p)
    return out


# ---- whole routes --------------------------------------------------------------------------------------


def _destination_port(cluster: str, ctx: RouteContext) -> tuple[Service, ServicePort, PortTrafficPolicy] | None:
    """_destination with the service port itself; None for a cluster that is no known service's port."""
    dest = _destination(cluster, ctx) if "|" in cluster else None
    if dest is None:
        return None
    svc, port, policy = dest
    sp = next((p for p in svc.ports if p.port == port), None)
    return (svc, sp, policy) if sp is not None else None


def _route_clusters(route: rc.Route) -> list[str]:
    action = route.route
    return [action.cluster] if action.cluster else [c.name for c in action.weighted_clusters.clusters]


def _enable_filter(route: rc.Route, name: str) -> None:
    """Envoy's FilterConfig with an empty `config`: enables for this route a filter the connection manager marks
    `disabled`; chains without the filter ignore the entry (`is_optional`)."""
    enable = rc.FilterConfig(is_optional=True)
    enable.config.SetInParent()
    route.typed_per_filter_config[name].CopyFrom(pack(enable))


def _resolves_short_names(cluster: str, ctx: RouteContext) -> bool:
    """Whether `cluster` is a PASSTHROUGH service's dynamic forward proxy (explicit mode), whose short names the
    outbound chain's set_filter_state maps to the FQDN (clusters._short_names)."""
    dest = _destination_port(cluster, ctx)
    return dest is not None and forwards_by_authority(ctx.snapshot, *dest)


def enable_short_names(route: rc.Route, ctx: RouteContext) -> None:
    """Turn on the outbound chain's set_filter_state (disabled there by default, so no other request pays its CEL
    look-up) for a route to a PASSTHROUGH forward proxy cluster. Chains without the filter (captured sidecars,
    gateways) ignore the entry."""
    if any(_resolves_short_names(c, ctx) for c in _route_clusters(route)):
        _enable_filter(route, SET_FILTER_STATE_FILTER)


def _sniffed_mesh_destination(cluster: str, ctx: RouteContext) -> bool:
    """Whether `cluster` is a service port whose protocol the server sniffs, reached over mesh mTLS when TLS is used
    at all (no DestinationRule `tls`, or ISTIO_MUTUAL): its upstream connection may take Istio's HTTP ALPN."""
    dest = _destination_port(cluster, ctx)
    if dest is None:
        return False
    _svc, sp, policy = dest
    return is_sniffed(sp.protocol) and (policy.tls is None or policy.tls.mode == "ISTIO_MUTUAL")


def enable_alpn_override(route: rc.Route, ctx: RouteContext) -> None:
    """Istio's `istio.alpn` at a gateway, for a route whose every cluster is a sniffed service port over mesh mTLS:
    the gateway's HCM carries the filter disabled (filters/basic.py: gateway_alpn) and this route enables it, so the
    upstream connection offers `istio-http/1.1, istio` (a gateway's cluster for such a port speaks HTTP/1.1: Istio's
    setUpstreamProtocol uses the downstream protocol for sidecars only) and a sniffing server serves it on its HTTP
    chain. Istio's filter skips clusters whose TLS is not Istio's by their metadata; here no other route enables it."""
    if ctx.proxy.type != "router":
        return
    clusters = _route_clusters(route)
    if clusters and all(_sniffed_mesh_destination(c, ctx) for c in clusters):
        _enable_filter(route, ALPN_FILTER)


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
    route = rc.Route(
        name="default",
        match=rc.RouteMatch(prefix="/"),
        route=action,
        decorator=rc.Decorator(operation=f"{decorator_host}:{ctx.port}/*"),
    )
    enable_short_names(route, ctx)
    return route


def _action(http: HTTPRoute, vs_ns: str, ctx: RouteContext, route: rc.Route) -> None:
    """Fill route.route, route.redirect or route.direct_response."""
    if http.redirect is not None:
        r = http.redirect
        red = route.redirect
        if r.prefix_rewrite:  # Istio's translateRedirect: prefixRewrite before uri
            red.prefix_rewrite = r.prefix_rewrite
        elif r.uri and r.uri.startswith(PREFIX_REDIRECT):
            # Istio's translateRedirect: `%PREFIX()%/x` swaps the matched prefix (the Gateway API's RequestRedirect
            # ReplacePrefixMatch, which Istio's gateway conversion writes so)
            red.prefix_rewrite = r.uri[len(PREFIX_REDIRECT):]
        elif r.uri:
            red.path_redirect = r.uri
        if r.authority:
            red.host_redirect = r.authority
        if r.port or r.derive_port:
            # Istio: FROM_REQUEST_PORT is the port the routes are built for (FROM_PROTOCOL_DEFAULT: Envoy's default),
            # and an explicit :80 for http or :443 for https is left out (the scheme: the redirect's, else https
            # on a gateway server with `tls`, else http)
            port = r.port or (ctx.port if r.derive_port == "FROM_REQUEST_PORT" else 0)
            if (port, r.scheme or ("https" if ctx.tls else "http")) not in ((80, "http"), (443, "https")):
                red.port_redirect = port
        if r.scheme:
            red.scheme_redirect = r.scheme
        red.response_code = REDIRECT_CODES.get(r.effective_code, rc.RedirectAction.MOVED_PERMANENTLY)
        return
    if http.direct_response is not None:
        direct = http.direct_response
        route.direct_response.status = direct.status or 200
        if direct.body is not None and direct.body.string:
            route.direct_response.body.inline_string = direct.body.string
        elif direct.body is not None and direct.body.bytes:  # Istio's HTTPBody_Bytes: inline bytes (base64 in YAML)
            route.direct_response.body.inline_bytes = base64.b64decode(direct.body.bytes)
        return
    dests = [(d, d.destination) for d in http.route or () if d.destination is not None]
    action = route.route
    weighted = [(d, dest, d.weight or 0) for d, dest in dests]
    if len(dests) > 1:
        weighted = [(d, dest, w) for d, dest, w in weighted if w > 0]
    if len(weighted) == 1:
        d, dest, _ = weighted[0]
        action.cluster = destination_cluster(dest, vs_ns, ctx)
        _headers(route, d.headers)
    elif weighted:
        for d, dest, w in weighted:
            cw = rc.WeightedCluster.ClusterWeight(name=destination_cluster(dest, vs_ns, ctx), weight=u32(w))
            _headers(cw, d.headers)
            action.weighted_clusters.clusters.append(cw)
    else:
        action.cluster = names.BLACKHOLE_CLUSTER
    first = action.cluster or (action.weighted_clusters.clusters[0].name if action.weighted_clusters.clusters else "")
    if first and first != names.BLACKHOLE_CLUSTER:
        action.hash_policy.extend(hash_policies(first, ctx))
    route_action_defaults(action, http.timeout.seconds if http.timeout else 0)
    retry = retry_policy(http.retries)
    if retry is not None:
        action.retry_policy.CopyFrom(retry)
    rewrite = http.rewrite
    if rewrite is not None:
        if rewrite.uri:
            action.prefix_rewrite = rewrite.uri
        elif rewrite.uri_regex_rewrite is not None:
            rr = rewrite.uri_regex_rewrite
            action.regex_rewrite.pattern.regex = rr.match or ""
            action.regex_rewrite.substitution = rr.rewrite or ""
        if rewrite.authority:
            action.host_rewrite_literal = rewrite.authority
    action.request_mirror_policies.extend(_mirrors(http, vs_ns, ctx))
    enable_short_names(route, ctx)
    enable_alpn_override(route, ctx)
    if first:
        _, port, _, host = names.parse_cluster(first) if "|" in first else ("", ctx.port, "", first)
        route.decorator.operation = f"{host}:{port}/*"


_CATCH_ALL = HTTPMatchRequest()


def translate_http(vs: Resource, http: HTTPRoute, ctx: RouteContext) -> list[rc.Route]:
    """Envoy routes for one VirtualService http[] entry: one per applicable match (or one catch-all)."""
    matches = http.match or ()
    applicable = [m for m in matches if _match_applies(m, ctx, vs.namespace)] if matches else [_CATCH_ALL]
    if not applicable:
        return []
    template = rc.Route()
    _action(http, vs.namespace, ctx, template)
    _headers(template, http.headers)
    fault = fault_config(http.fault)
    if fault is not None:
        template.typed_per_filter_config[FAULT_FILTER].CopyFrom(pack(fault))
    cors = cors_policy(http.cors_policy)
    if cors is not None:
        template.typed_per_filter_config[CORS_FILTER].CopyFrom(pack(cors))
    template.metadata.filter_metadata["istio"].update({"config": config_path(vs)})
    out = []
    for m in applicable:
        r = rc.Route()
        r.CopyFrom(template)
        r.match.CopyFrom(route_match(m))
        base = http.name or ""
        mname = m.name or ""
        r.name = f"{base}.{mname}" if base and mname else (base or mname)
        if m.stat_prefix:  # Istio's translateRoute: the match's statPrefix names the route's stats
            r.stat_prefix = m.stat_prefix
        out.append(r)
    return out


def config_path(vs: Resource) -> str:
    """Istio's `istio.config` route metadata: the VirtualService a route comes from (istioctl describe reads it)."""
    return f"/apis/networking.istio.io/v1/namespaces/{vs.namespace}/virtual-service/{vs.name}"


def virtual_service_routes(vs: Resource, ctx: RouteContext) -> list[rc.Route]:
    """Envoy routes for every http[] entry of a VirtualService, in order (a root's delegating entries replaced by
    its delegates' routes, merged as Istio merges them: generate/delegate.py)."""
    http = merged_http(ctx.snapshot, vs) if is_root(vs) else model_of(vs, VirtualService).http or ()
    return [r for route in http for r in translate_http(vs, route, ctx)]
