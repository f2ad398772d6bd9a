"""Envoy's HTTP route selection, replayed on a RouteConfiguration proto for one request: pure, no I/O.

What `sailmesh explain` needs to answer "which route, and why not the earlier ones", following Envoy's documented
rules (envoy/config/route/v3/route.proto, route_components.proto; source/common/router/config_impl.cc):
- virtual host: the `:authority` (Host) lowercased, port stripped when the RouteConfiguration says
  `ignore_port_in_host_matching`; an exact domain wins, then the longest suffix wildcard (`*.example.com`), then
  the longest prefix wildcard (`example.*`), then `*`.
- routes are tried in order; the first whose every condition holds wins. A route's conditions: its path specifier
  (prefix, exact path, safe_regex over the whole path without the query string, path_separated_prefix, CONNECT),
  `case_sensitive` (default true, path only), every header matcher (absent header: no match unless
  `treat_missing_header_as_empty`; `invert_match` flips the result), every query parameter matcher.
- the action: one cluster, or weighted clusters (each picked with weight/total), or a redirect / direct response;
  per route timeout (unset: Envoy's 15 s; 0 s: none), retry policy (route, else the virtual host's) and the
  `envoy.filters.http.fault` per-filter config (Istio's fault injection).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.matcher.v3 import metadata_pb2, string_pb2, value_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import duration_pb2

FAULT_FILTER = "envoy.filters.http.fault"
ENVOY_DEFAULT_TIMEOUT = "15s"  # RouteAction.timeout unset (Envoy's default)


@dataclass(frozen=True)
class Request:
    """The request as the first Envoy sees it: method, authority, path with query, lowercased header names."""

    method: str
    authority: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    scheme: str = "http"  # tcp / tls: a connection (explain_tcp), not an HTTP request
    sni: str = ""  # the TLS server name a tls:// connection sends

    @staticmethod
    def from_url(method: str, url: str, headers: Mapping[str, str] | None = None) -> Request:
        """`GET http://reviews:9080/reviews/0` as an HTTP client sends it through a proxy (Host = host[:port])."""
        u = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
        if not u.hostname:
            raise ValueError(f"{url!r} has no host")
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        hdrs = {k.lower(): v for k, v in (headers or {}).items()}
        authority = hdrs.pop("host", None) or u.netloc.rpartition("@")[2]
        return Request(method.upper(), authority, path, hdrs, u.scheme or "http")

    def header(self, name: str) -> str | None:
        """A header's value as Envoy's matchers see it, pseudo-headers included."""
        name = name.lower()
        pseudo = {":method": self.method, ":authority": self.authority, "host": self.authority,
                  ":path": self.path, ":scheme": self.scheme}
        return pseudo[name] if name in pseudo else self.headers.get(name)

    @property
    def path_only(self) -> str:
        return self.path.split("?", 1)[0]

    def query(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(self.path.partition("?")[2], keep_blank_values=True))


@dataclass(frozen=True)
class Verdict:
    """One route tried: whether it matched, and in words why (or why not)."""

    index: int
    name: str
    matched: bool
    reason: str
    route: rc.Route


@dataclass(frozen=True)
class Destination:
    cluster: str
    weight: int  # of `total`; 1 of 1 for a single cluster
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.weight / self.total if self.total else 0.0


@dataclass(frozen=True)
class Outcome:
    """The route's action in words: where the request goes and what happens on the way."""

    destinations: tuple[Destination, ...]
    timeout: str
    retries: str
    faults: tuple[str, ...]
    other: tuple[str, ...]  # redirect, direct response, rewrites, mirrors


@dataclass(frozen=True)
class Selection:
    """The outcome of route selection: the virtual host, every route tried, the one chosen (None: 404 NR)."""

    virtual_host: rc.VirtualHost | None
    host_reason: str
    tried: tuple[Verdict, ...]
    chosen: Verdict | None


def _domain_rank(domain: str, host: str) -> tuple[int, int] | None:
    """Envoy's preference for a domain matching `host`: (class, length), higher wins; None: no match."""
    d = domain.lower()
    if d == host:
        return (4, len(d))
    if d == "*":
        return (1, 0)
    if d.startswith("*") and host.endswith(d[1:]) and len(host) > len(d) - 1:
        return (3, len(d))
    if d.endswith("*") and host.startswith(d[:-1]) and len(host) > len(d) - 1:
        return (2, len(d))
    return None


def select_virtual_host(config: route_pb2.RouteConfiguration, authority: str) -> tuple[rc.VirtualHost | None, str]:
    """The virtual host Envoy picks for this authority, with the rule that picked it."""
    host = authority.lower()
    if config.ignore_port_in_host_matching and not host.startswith("["):
        host = host.rsplit(":", 1)[0]
    best: tuple[tuple[int, int], rc.VirtualHost, str] | None = None
    for vh in config.virtual_hosts:
        for d in vh.domains:
            rank = _domain_rank(d, host)
            if rank and (best is None or rank > best[0]):
                best = (rank, vh, d)
    if best is None:
        return None, f"no virtual host of route config {config.name!r} has a domain matching {host!r}"
    kinds = {4: "exact domain", 3: "suffix wildcard", 2: "prefix wildcard", 1: "catch-all domain"}
    return best[1], f"{kinds[best[0][0]]} {best[2]!r} matches host {host!r}"


def string_match(m: string_pb2.StringMatcher, value: str) -> bool:
    """envoy.type.matcher.v3.StringMatcher."""
    v, ignore = (value.lower(), True) if m.ignore_case else (value, False)

    def norm(s: str) -> str:
        return s.lower() if ignore else s

    kind = m.WhichOneof("match_pattern")
    if kind == "exact":
        return v == norm(m.exact)
    if kind == "prefix":
        return v.startswith(norm(m.prefix))
    if kind == "suffix":
        return v.endswith(norm(m.suffix))
    if kind == "contains":
        return norm(m.contains) in v
    if kind == "safe_regex":
        return re.fullmatch(m.safe_regex.regex, value) is not None
    return False


def _describe_string(m: string_pb2.StringMatcher) -> str:
    kind = m.WhichOneof("match_pattern") or "?"
    value = m.safe_regex.regex if kind == "safe_regex" else getattr(m, kind, "")
    return f"{'regex' if kind == 'safe_regex' else kind} {value!r}" + (" (any case)" if m.ignore_case else "")


def header_match(h: rc.HeaderMatcher, req: Request) -> tuple[bool, str]:
    """One HeaderMatcher against the request, with its description."""
    value = req.header(h.name)
    kind = h.WhichOneof("header_match_specifier")
    if kind == "present_match":
        ok, what = (value is not None) == h.present_match, "present" if h.present_match else "absent"
    elif value is None and not h.treat_missing_header_as_empty:
        what = _header_desc(h, kind)
        return h.invert_match, f"header {h.name} {'not ' if h.invert_match else ''}{what}: header absent"
    else:
        v = value or ""
        what = _header_desc(h, kind)
        if kind == "string_match":
            ok = string_match(h.string_match, v)
        elif kind == "exact_match":
            ok = v == h.exact_match
        elif kind == "safe_regex_match":
            ok = re.fullmatch(h.safe_regex_match.regex, v) is not None
        elif kind == "prefix_match":
            ok = v.startswith(h.prefix_match)
        elif kind == "suffix_match":
            ok = v.endswith(h.suffix_match)
        elif kind == "contains_match":
            ok = h.contains_match in v
        elif kind == "range_match":
            ok = v.lstrip("-").isdigit() and h.range_match.start <= int(v) < h.range_match.end
        else:
            ok = value is not None  # no specifier: presence
    ok = ok != h.invert_match
    shown = f" (is {value!r})" if value is not None else " (absent)"
    return ok, f"header {h.name} {'not ' if h.invert_match else ''}{what}{shown}"


def _header_desc(h: rc.HeaderMatcher, kind: str | None) -> str:
    if kind == "string_match":
        return _describe_string(h.string_match)
    if kind == "safe_regex_match":
        return f"regex {h.safe_regex_match.regex!r}"
    if kind == "present_match":
        return "present" if h.present_match else "absent"
    if kind == "range_match":
        return f"in [{h.range_match.start}, {h.range_match.end})"
    return f"{(kind or 'present').removesuffix('_match')} {getattr(h, kind) if kind else ''!r}"


def path_match(m: rc.RouteMatch, req: Request) -> tuple[bool, str]:
    """The route's path specifier against the request's path (without the query string)."""
    path = req.path_only
    sensitive = m.case_sensitive.value if m.HasField("case_sensitive") else True
    p, norm = (path, str) if sensitive else (path.lower(), str.lower)
    kind = m.WhichOneof("path_specifier")
    if kind == "prefix":
        return p.startswith(norm(m.prefix)), f"path prefix {m.prefix!r}"
    if kind == "path":
        return p == norm(m.path), f"exact path {m.path!r}"
    if kind == "safe_regex":
        flags = 0 if sensitive else re.IGNORECASE
        return re.fullmatch(m.safe_regex.regex, path, flags) is not None, f"path regex {m.safe_regex.regex!r}"
    if kind == "path_separated_prefix":
        pre = norm(m.path_separated_prefix)
        return (p == pre or p.startswith(pre + "/")), f"path segment prefix {m.path_separated_prefix!r}"
    if kind == "connect_matcher":
        return req.method == "CONNECT", "CONNECT requests"
    return False, f"path specifier {kind} (not simulated)"


def query_match(q: rc.QueryParameterMatcher, req: Request) -> tuple[bool, str]:
    params = req.query()
    value = params.get(q.name)
    if q.HasField("present_match"):
        return (value is not None) == q.present_match, f"query {q.name} {'present' if q.present_match else 'absent'}"
    if value is None:
        return False, f"query {q.name} {_describe_string(q.string_match)}: parameter absent"
    return string_match(q.string_match, value), f"query {q.name} {_describe_string(q.string_match)} (is {value!r})"


def lookup_metadata(metadata: Mapping[str, Mapping[str, Any]], md: metadata_pb2.MetadataMatcher) -> Any:
    node: Any = metadata.get(md.filter)
    for seg in md.path:
        node = node.get(seg.key) if isinstance(node, Mapping) else None
    return node


def value_match(v: value_pb2.ValueMatcher, value: Any) -> bool:
    """envoy.type.matcher.v3.ValueMatcher against a metadata value (JSON-like)."""
    kind = v.WhichOneof("match_pattern")
    if kind == "null_match":
        return value is None
    if kind == "present_match":
        return value is not None
    if kind == "string_match":
        return isinstance(value, str) and string_match(v.string_match, value)
    if kind == "bool_match":
        return isinstance(value, bool) and value == v.bool_match
    if kind == "double_match":
        if not isinstance(value, int | float) or isinstance(value, bool):
            return False
        d = v.double_match
        return bool(value == d.exact if d.WhichOneof("match_pattern") == "exact"
                    else d.range.start <= value < d.range.end)
    if kind == "list_match":
        return isinstance(value, list) and any(value_match(v.list_match.one_of, x) for x in value)
    if kind == "or_match":
        return any(value_match(x, value) for x in v.or_match.value_matchers)
    return False


def metadata_match(md: metadata_pb2.MetadataMatcher, metadata: Mapping[str, Mapping[str, Any]]) -> bool:
    """A MetadataMatcher against the dynamic metadata (missing value: only null/absent matchers hold)."""
    return bool(value_match(md.value, lookup_metadata(metadata, md)) != md.invert)


def route_match(route: rc.Route, req: Request,
                metadata: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[bool, str]:
    """All of a route's conditions; the reason names the first that failed, or every one that held. `metadata`:
    the dynamic metadata the filters before the router wrote (a gateway's jwt_authn payload: claim routes)."""
    m = route.match
    ok, what = path_match(m, req)
    held = [what]
    if not ok:
        return False, f"{what} does not match {req.path_only!r}"
    for h in m.headers:
        ok, what = header_match(h, req)
        if not ok:
            return False, f"{what} does not match"
        held.append(what)
    for q in m.query_parameters:
        ok, what = query_match(q, req)
        if not ok:
            return False, f"{what} does not match"
        held.append(what)
    for md in m.dynamic_metadata:
        path = "/".join(seg.key for seg in md.path)
        value = lookup_metadata(metadata or {}, md)
        shown = "absent" if value is None else repr(value)
        what = f"{'no ' if md.invert else ''}{md.filter} metadata {path} (JWT claim; {shown})"
        if not metadata_match(md, metadata or {}):
            return False, f"{what} does not match"
        held.append(what)
    if m.HasField("grpc"):
        ok = (req.header("content-type") or "").startswith("application/grpc")
        if not ok:
            return False, "gRPC requests only (content-type application/grpc)"
        held.append("gRPC")
    if m.HasField("runtime_fraction"):
        held.append(f"runtime fraction {_fraction(m.runtime_fraction.default_value)} (assumed to hold)")
    return True, "; ".join(held)


def select_route(config: route_pb2.RouteConfiguration, req: Request,
                 metadata: Mapping[str, Mapping[str, Any]] | None = None) -> Selection:
    """Envoy's route selection for `req`: virtual host by authority, then the first matching route."""
    vh, why = select_virtual_host(config, req.authority)
    if vh is None:
        return Selection(None, why, (), None)
    tried = []
    for i, r in enumerate(vh.routes):
        ok, reason = route_match(r, req, metadata)
        verdict = Verdict(i, r.name or f"#{i}", ok, reason, r)
        tried.append(verdict)
        if ok:
            return Selection(vh, why, tuple(tried), verdict)
    return Selection(vh, why, tuple(tried), None)


def _fraction(p: percent_pb2.FractionalPercent) -> str:
    denominators = {percent_pb2.FractionalPercent.HUNDRED: 100, percent_pb2.FractionalPercent.TEN_THOUSAND: 10_000,
                    percent_pb2.FractionalPercent.MILLION: 1_000_000}
    return f"{100.0 * p.numerator / denominators[p.denominator]:g}%"


def _duration(d: duration_pb2.Duration) -> str:
    return f"{d.seconds + d.nanos / 1e9:g}s"


def _timeout(action: rc.RouteAction) -> str:
    if not action.HasField("timeout"):
        return f"{ENVOY_DEFAULT_TIMEOUT} (Envoy's default)"
    if action.timeout.seconds == 0 and action.timeout.nanos == 0:
        return "none (0s: disabled)"
    return _duration(action.timeout)


def _retries(policy: rc.RetryPolicy | None) -> str:
    if policy is None:
        return "none"
    n = policy.num_retries.value if policy.HasField("num_retries") else 1
    if n == 0:
        return "none (0 attempts)"
    text = f"{n} on {policy.retry_on or '(no condition)'}"
    if policy.retriable_status_codes:
        text += " (status " + ",".join(str(c) for c in policy.retriable_status_codes) + ")"
    if policy.HasField("per_try_timeout"):
        text += f", {_duration(policy.per_try_timeout)} per try"
    return text


def faults(route: rc.Route, vh: rc.VirtualHost | None = None) -> tuple[str, ...]:
    """Istio's fault injection (HTTPFault in the route's, else the virtual host's, per-filter config) in words."""
    any_msg = route.typed_per_filter_config.get(FAULT_FILTER) if FAULT_FILTER in route.typed_per_filter_config \
        else (vh.typed_per_filter_config[FAULT_FILTER] if vh and FAULT_FILTER in vh.typed_per_filter_config else None)
    if any_msg is None:
        return ()
    fault = fault_pb2.HTTPFault()
    if not any_msg.Unpack(fault):
        return (f"fault filter config of type {any_msg.type_url} (not simulated)",)
    out = []
    if fault.HasField("delay"):
        out.append(f"delay {_duration(fault.delay.fixed_delay)} for {_fraction(fault.delay.percentage)} of requests"
                   " (response flag DI)")
    if fault.HasField("abort"):
        code = fault.abort.http_status or fault.abort.grpc_status
        kind = "HTTP" if fault.abort.http_status else "gRPC"
        out.append(f"abort with {kind} {code} for {_fraction(fault.abort.percentage)} of requests (response flag FI)")
    return tuple(out)


def outcome(route: rc.Route, vh: rc.VirtualHost | None = None) -> Outcome:
    """What the chosen route does with the request."""
    other: list[str] = []
    if route.HasField("redirect"):
        r = route.redirect
        target = (r.host_redirect or "(same host)") + (r.path_redirect or r.prefix_rewrite or "")
        other.append(f"redirect to {target} (HTTP {rc.RedirectAction.RedirectResponseCode.Name(r.response_code)})")
        return Outcome((), "-", "none", faults(route, vh), tuple(other))
    if route.HasField("direct_response"):
        other.append(f"direct response HTTP {route.direct_response.status}")
        return Outcome((), "-", "none", faults(route, vh), tuple(other))
    a = route.route
    kind = a.WhichOneof("cluster_specifier")
    if kind == "weighted_clusters":
        cs = a.weighted_clusters.clusters
        total = sum(c.weight.value for c in cs)
        dests = tuple(Destination(c.name, c.weight.value, total) for c in cs)
    elif kind == "cluster":
        dests = (Destination(a.cluster, 1, 1),)
    else:
        dests = ()
        other.append(f"cluster chosen by {kind} (not simulated)")
    if a.prefix_rewrite:
        other.append(f"path prefix rewritten to {a.prefix_rewrite!r}")
    if a.HasField("regex_rewrite"):
        other.append(f"path rewritten by regex {a.regex_rewrite.pattern.regex!r} -> {a.regex_rewrite.substitution!r}")
    if a.host_rewrite_literal:
        other.append(f"authority rewritten to {a.host_rewrite_literal!r}")
    for m in a.request_mirror_policies:
        other.append(f"mirrored to {m.cluster} ({_fraction(m.runtime_fraction.default_value)})"
                     if m.HasField("runtime_fraction") else f"mirrored to {m.cluster}")
    policy = a.retry_policy if a.HasField("retry_policy") else (
        vh.retry_policy if vh is not None and vh.HasField("retry_policy") else None)
    return Outcome(dests, _timeout(a), _retries(policy), faults(route, vh), tuple(other))
