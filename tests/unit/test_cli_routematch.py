"""routematch: Envoy's virtual host and route selection replayed on RouteConfiguration protos (explain's core)."""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

from sailmesh.explain.routematch import Request, header_match, outcome, select_route, select_virtual_host


def vh(name: str, *domains: str, routes: list[rc.Route] | None = None) -> rc.VirtualHost:
    return rc.VirtualHost(name=name, domains=list(domains), routes=routes or [route("default", prefix="/")])


def route(name: str, cluster: str = "c", **match: object) -> rc.Route:
    return rc.Route(name=name, match=rc.RouteMatch(**match), route=rc.RouteAction(cluster=cluster))  # type: ignore


def exact_header(name: str, value: str, **kw: object) -> rc.HeaderMatcher:
    return rc.HeaderMatcher(name=name, string_match=string_pb2.StringMatcher(exact=value), **kw)  # type: ignore


def test_virtual_host_precedence_exact_then_suffix_then_prefix_then_catch_all() -> None:
    # Envoy's VirtualHost.domains doc: exact, then suffix wildcards, then prefix wildcards, then "*"; longest first
    cfg = route_pb2.RouteConfiguration(name="r", virtual_hosts=[
        vh("any", "*"), vh("pre", "reviews.*"), vh("suf", "*.default.svc.cluster.local:9080"),
        vh("longsuf", "*.svc.cluster.local:9080"), vh("exact", "reviews.default.svc.cluster.local:9080")])
    assert select_virtual_host(cfg, "reviews.default.svc.cluster.local:9080")[0].name == "exact"  # type: ignore
    assert select_virtual_host(cfg, "ratings.default.svc.cluster.local:9080")[0].name == "suf"  # type: ignore
    assert select_virtual_host(cfg, "x.other.svc.cluster.local:9080")[0].name == "longsuf"  # type: ignore
    assert select_virtual_host(cfg, "REVIEWS.example:9080")[0].name == "pre"  # type: ignore  # case-insensitive
    assert select_virtual_host(cfg, "example.com")[0].name == "any"  # type: ignore
    none, why = select_virtual_host(route_pb2.RouteConfiguration(name="r", virtual_hosts=[vh("a", "a:80")]), "b")
    assert none is None and "no virtual host" in why


def test_port_is_part_of_the_host_unless_ignored() -> None:
    cfg = route_pb2.RouteConfiguration(name="r", virtual_hosts=[vh("rev", "reviews")])
    assert select_virtual_host(cfg, "reviews:9080")[0] is None
    cfg.ignore_port_in_host_matching = True
    assert select_virtual_host(cfg, "reviews:9080")[0].name == "rev"  # type: ignore


def test_first_matching_route_wins_and_earlier_ones_say_why_not() -> None:
    # Istio's virtual-service-reviews-test-v2: end-user: jason -> v2, else v1
    jason = route("jason", "outbound|9080|v2|reviews", prefix="/", headers=[exact_header("end-user", "jason")])
    rest = route("rest", "outbound|9080|v1|reviews", prefix="/")
    cfg = route_pb2.RouteConfiguration(name="http_proxy", virtual_hosts=[vh("r", "reviews:9080",
                                                                            routes=[jason, rest])])
    sel = select_route(cfg, Request.from_url("GET", "http://reviews:9080/reviews/0", {"End-User": "jason"}))
    assert sel.chosen is not None and sel.chosen.name == "jason" and len(sel.tried) == 1
    sel = select_route(cfg, Request.from_url("GET", "http://reviews:9080/reviews/0"))
    assert sel.chosen is not None and sel.chosen.name == "rest"
    assert not sel.tried[0].matched and "end-user" in sel.tried[0].reason and "absent" in sel.tried[0].reason
    sel = select_route(cfg, Request.from_url("GET", "http://reviews:9080/reviews/0", {"end-user": "mary"}))
    assert "'mary'" in sel.tried[0].reason


def test_path_specifiers() -> None:
    req = Request.from_url("GET", "http://h/api/v1/items?x=1")
    assert route("p", prefix="/api").match and select_one(route("p", prefix="/api"), req)
    assert not select_one(route("p", prefix="/API"), req)  # case-sensitive by default
    assert select_one(route("p", prefix="/API", case_sensitive=wrappers_pb2.BoolValue(value=False)), req)
    assert select_one(route("e", path="/api/v1/items"), req)  # the query string is not part of the path
    assert not select_one(route("e", path="/api/v1"), req)
    assert select_one(route("r", safe_regex=regex_pb2.RegexMatcher(regex="/api/v[0-9]+/.*")), req)
    assert not select_one(route("r", safe_regex=regex_pb2.RegexMatcher(regex="/api")), req)  # whole path
    assert select_one(route("s", path_separated_prefix="/api/v1"), req)
    assert not select_one(route("s", path_separated_prefix="/api/v"), req)  # segments, not characters
    assert select_one(route("c", connect_matcher=rc.RouteMatch.ConnectMatcher()), Request("CONNECT", "h:443", "/"))


def select_one(r: rc.Route, req: Request) -> bool:
    cfg = route_pb2.RouteConfiguration(name="x", virtual_hosts=[vh("v", "*", routes=[r])])
    return select_route(cfg, req).chosen is not None


def test_header_matchers() -> None:
    req = Request.from_url("GET", "http://h/", {"x-a": "hello", "x-n": "7"})
    ok = [rc.HeaderMatcher(name="x-a", string_match=string_pb2.StringMatcher(prefix="he")),
          rc.HeaderMatcher(name="x-a", string_match=string_pb2.StringMatcher(suffix="LO", ignore_case=True)),
          rc.HeaderMatcher(name="x-a", string_match=string_pb2.StringMatcher(contains="ell")),
          rc.HeaderMatcher(name="x-a", string_match=string_pb2.StringMatcher(
              safe_regex=regex_pb2.RegexMatcher(regex="h.*o"))),
          rc.HeaderMatcher(name="x-a", present_match=True),
          rc.HeaderMatcher(name="x-b", present_match=False),
          rc.HeaderMatcher(name="x-b", string_match=string_pb2.StringMatcher(exact="q"), invert_match=True),
          rc.HeaderMatcher(name=":method", string_match=string_pb2.StringMatcher(exact="GET")),
          rc.HeaderMatcher(name="x-b", string_match=string_pb2.StringMatcher(exact=""),
                           treat_missing_header_as_empty=True)]
    for m in ok:
        assert header_match(m, req)[0], m
    bad = [rc.HeaderMatcher(name="x-a", string_match=string_pb2.StringMatcher(exact="HELLO")),
           rc.HeaderMatcher(name="x-b", present_match=True),
           rc.HeaderMatcher(name="x-b", string_match=string_pb2.StringMatcher(exact="q")),
           rc.HeaderMatcher(name="x-a", string_match=string_pb2.StringMatcher(exact="hello"), invert_match=True)]
    for m in bad:
        assert not header_match(m, req)[0], m


def test_query_parameters() -> None:
    r = route("q", prefix="/", query_parameters=[rc.QueryParameterMatcher(
        name="u", string_match=string_pb2.StringMatcher(exact="jason"))])
    assert select_one(r, Request.from_url("GET", "http://h/?u=jason"))
    assert not select_one(r, Request.from_url("GET", "http://h/?u=mary"))
    assert not select_one(r, Request.from_url("GET", "http://h/"))
    p = route("q", prefix="/", query_parameters=[rc.QueryParameterMatcher(name="u", present_match=True)])
    assert select_one(p, Request.from_url("GET", "http://h/?u="))


def test_outcome_weights_timeout_retries_faults() -> None:
    action = rc.RouteAction(weighted_clusters=rc.WeightedCluster(clusters=[
        rc.WeightedCluster.ClusterWeight(name="v1", weight=wrappers_pb2.UInt32Value(value=80)),
        rc.WeightedCluster.ClusterWeight(name="v2", weight=wrappers_pb2.UInt32Value(value=20))]),
        timeout=duration_pb2.Duration(seconds=10),
        retry_policy=rc.RetryPolicy(retry_on="5xx", num_retries=wrappers_pb2.UInt32Value(value=3),
                                    per_try_timeout=duration_pb2.Duration(seconds=2)))
    fault = fault_pb2.HTTPFault()
    fault.delay.fixed_delay.seconds = 7
    fault.delay.percentage.CopyFrom(percent_pb2.FractionalPercent(numerator=100))
    fault.abort.http_status = 500
    fault.abort.percentage.CopyFrom(percent_pb2.FractionalPercent(numerator=10))
    packed = any_pb2.Any()
    packed.Pack(fault)
    r = rc.Route(match=rc.RouteMatch(prefix="/"), route=action,
                 typed_per_filter_config={"envoy.filters.http.fault": packed})
    oc = outcome(r)
    assert [(d.cluster, d.percent) for d in oc.destinations] == [("v1", 80.0), ("v2", 20.0)]
    assert oc.timeout == "10s" and oc.retries == "3 on 5xx, 2s per try"
    assert oc.faults == ("delay 7s for 100% of requests (response flag DI)",
                         "abort with HTTP 500 for 10% of requests (response flag FI)")
    # Envoy's defaults: no timeout field = 15 s; 0s disables it; no retry policy = none; vhost policy inherited
    bare = outcome(route("b"))
    assert bare.timeout.startswith("15s") and bare.retries == "none"
    vhost = rc.VirtualHost(retry_policy=rc.RetryPolicy(retry_on="connect-failure"))
    assert outcome(route("b"), vhost).retries == "1 on connect-failure"
    zero = rc.Route(route=rc.RouteAction(cluster="c", timeout=duration_pb2.Duration()))
    assert outcome(zero).timeout.startswith("none")


def test_request_from_url() -> None:
    r = Request.from_url("get", "reviews:9080/reviews/0?a=b", {"Host": "other"})
    assert (r.method, r.authority, r.path, r.path_only, r.query()) == ("GET", "other", "/reviews/0?a=b",
                                                                       "/reviews/0", {"a": "b"})
    assert Request.from_url("GET", "http://reviews").path == "/"
