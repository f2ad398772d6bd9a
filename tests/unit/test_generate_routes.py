"""Routes: Bookinfo's VirtualServices, every HTTPRoute feature, Istio's defaults, gateway binding."""

from __future__ import annotations

import pathlib

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.v3 import percent_pb2

from sailmesh.xds.types import ROUTE
from tests.unit.test_generate_support import (
    bookinfo,
    gateway_proxy,
    generated,
    make_snapshot,
    resources,
    service,
    sidecar,
)

REVIEWS = "reviews.default.svc.cluster.local"
RATINGS = "ratings.default.svc.cluster.local"


@pytest.fixture
def bi(conformance: pathlib.Path) -> pathlib.Path:
    return conformance / "bookinfo"


def configs(snapshot, proxy=None) -> dict[str, route_pb2.RouteConfiguration]:
    return generated(snapshot, proxy or sidecar(), ROUTE, route_pb2.RouteConfiguration)


def vhost(snapshot, host: str = REVIEWS, port: int = 9080, proxy=None, config: str = "") -> rc.VirtualHost:
    rcfg = configs(snapshot, proxy)[config or str(port)]
    return next(v for v in rcfg.virtual_hosts if v.name == f"{host}:{port}")


def vs(http: str, host: str = "reviews", extra: str = "") -> str:
    """A VirtualService for `host` with the given (indented) http list."""
    return (f"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs-{host}}}\n"
            f"spec:\n  hosts: [{host}]\n{extra}  http:\n{http}")


# ---- defaults ------------------------------------------------------------------------------------------


def test_default_route_without_virtual_service() -> None:
    r = vhost(bookinfo()).routes[0]
    assert r.match.prefix == "/" and r.name == "default"
    a = r.route
    assert a.cluster == f"outbound|9080||{REVIEWS}"
    assert a.timeout.seconds == 0 and a.timeout.nanos == 0  # Istio: no timeout by default
    assert a.max_stream_duration.grpc_timeout_header_max.seconds == 0
    # Istio's default retry policy
    rp = a.retry_policy
    assert rp.retry_on == "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    assert rp.num_retries.value == 2 and list(rp.retriable_status_codes) == [503]
    assert rp.retry_host_predicate[0].name == "envoy.retry_host_predicates.previous_hosts"
    assert rp.host_selection_retry_max_attempts == 5
    assert r.decorator.operation == f"{REVIEWS}:9080/*"


def test_port_route_config_domains_and_allow_any() -> None:
    cfg = configs(bookinfo())["9080"]
    v = next(v for v in cfg.virtual_hosts if v.name == f"{REVIEWS}:9080")
    assert list(v.domains) == [REVIEWS, f"{REVIEWS}:9080", "reviews", "reviews:9080", "reviews.default.svc",
                               "reviews.default.svc:9080", "reviews.default", "reviews.default:9080"]
    last = cfg.virtual_hosts[-1]
    assert last.name == "allow_any" and list(last.domains) == ["*"]
    assert last.routes[0].route.cluster == "PassthroughCluster"
    assert last.routes[0].route.HasField("timeout") and last.routes[0].route.timeout.seconds == 0
    assert not cfg.validate_clusters.value


def test_http_proxy_route_config_carries_ports_and_plain_names_for_80() -> None:
    snap = make_snapshot(services=[service("reviews"), service("web", ports=[(80, "HTTP"), (8080, "HTTP")])])
    cfg = configs(snap)["http_proxy"]
    by_name = {v.name: list(v.domains) for v in cfg.virtual_hosts}
    assert "reviews:9080" in by_name[f"{REVIEWS}:9080"] and "reviews" not in by_name[f"{REVIEWS}:9080"]
    assert "web" in by_name["web.default.svc.cluster.local:80"]  # port 80: Host has no port
    assert "web:80" in by_name["web.default.svc.cluster.local:80"]
    assert "web" not in by_name["web.default.svc.cluster.local:8080"]
    all_domains = [d for v in cfg.virtual_hosts for d in v.domains]
    assert len(all_domains) == len(set(all_domains))  # Envoy rejects duplicate domains


def test_other_namespace_sidecar_gets_no_short_name() -> None:
    v = vhost(bookinfo(), proxy=sidecar(ns="bar"))
    assert "reviews" not in v.domains and "reviews.default" in v.domains


# ---- Bookinfo's own VirtualServices --------------------------------------------------------------------


def test_all_v1(bi: pathlib.Path) -> None:
    snap = bookinfo(bi / "destination-rule-all.yaml", bi / "virtual-service-all-v1.yaml")
    for host in ("reviews", "ratings", "details", "productpage"):
        r = vhost(snap, f"{host}.default.svc.cluster.local").routes
        assert [x.route.cluster for x in r] == [f"outbound|9080|v1|{host}.default.svc.cluster.local"]
        assert r[0].match.prefix == "/"


def test_reviews_test_v2_header_match(bi: pathlib.Path) -> None:
    snap = bookinfo(bi / "destination-rule-all.yaml", bi / "virtual-service-reviews-test-v2.yaml")
    routes = vhost(snap).routes
    assert len(routes) == 2
    h = routes[0].match.headers[0]
    assert h.name == "end-user" and h.string_match.exact == "jason"
    assert routes[0].route.cluster == f"outbound|9080|v2|{REVIEWS}"
    assert routes[1].route.cluster == f"outbound|9080|v1|{REVIEWS}" and routes[1].match.prefix == "/"


def test_reviews_90_10_weighted(bi: pathlib.Path) -> None:
    snap = bookinfo(bi / "destination-rule-all.yaml", bi / "virtual-service-reviews-90-10.yaml")
    wc = vhost(snap).routes[0].route.weighted_clusters
    assert [(c.name, c.weight.value) for c in wc.clusters] == [
        (f"outbound|9080|v1|{REVIEWS}", 90), (f"outbound|9080|v2|{REVIEWS}", 10)]


def test_fault_abort_details(bi: pathlib.Path) -> None:
    snap = bookinfo(bi / "fault-injection-details-v1.yaml")
    routes = vhost(snap, "details.default.svc.cluster.local").routes
    f = fault_pb2.HTTPFault()
    assert routes[0].typed_per_filter_config["envoy.filters.http.fault"].Unpack(f)
    assert f.abort.http_status == 555
    pct = f.abort.percentage
    assert (pct.numerator, pct.denominator) == (1_000_000, percent_pb2.FractionalPercent.MILLION)
    assert "envoy.filters.http.fault" not in routes[1].typed_per_filter_config


def test_ratings_delay_and_abort(bi: pathlib.Path) -> None:
    f = fault_pb2.HTTPFault()
    vhost(bookinfo(bi / "virtual-service-ratings-test-delay.yaml"), RATINGS).routes[0].typed_per_filter_config[
        "envoy.filters.http.fault"].Unpack(f)
    assert f.delay.fixed_delay.seconds == 7 and f.delay.percentage.numerator == 1_000_000
    f = fault_pb2.HTTPFault()
    vhost(bookinfo(bi / "virtual-service-ratings-test-abort.yaml"), RATINGS).routes[0].typed_per_filter_config[
        "envoy.filters.http.fault"].Unpack(f)
    assert f.abort.http_status == 500


def test_fault_percentage_fraction() -> None:
    snap = bookinfo(vs("  - fault: {delay: {fixedDelay: 1.5s, percentage: {value: 0.1}}}\n"
                       "    route: [{destination: {host: reviews}}]\n"))
    f = fault_pb2.HTTPFault()
    vhost(snap).routes[0].typed_per_filter_config["envoy.filters.http.fault"].Unpack(f)
    assert f.delay.percentage.numerator == 1000 and f.delay.fixed_delay.ToMilliseconds() == 1500


# ---- HTTPRoute features --------------------------------------------------------------------------------


def test_match_conditions() -> None:
    http = """  - match:
    - uri: {prefix: /api}
      ignoreUriCase: true
      method: {exact: GET}
      authority: {prefix: reviews}
      headers: {x-a: {regex: "a+"}, x-b: {prefix: p}, x-present: {}}
      withoutHeaders: {x-no: {exact: "1"}}
      queryParams: {q: {exact: v}, r: {regex: "\\\\d+"}}
    - uri: {regex: "/r/[0-9]+"}
    - uri: {exact: /only}
    route: [{destination: {host: reviews}}]
"""
    routes = vhost(bookinfo(vs(http))).routes
    assert len(routes) == 3  # one Envoy route per match, in order
    m = routes[0].match
    assert m.prefix == "/api" and m.case_sensitive.value is False
    hs = {h.name: h for h in m.headers}
    assert hs[":method"].string_match.exact == "GET"
    assert hs[":authority"].string_match.prefix == "reviews"
    assert hs["x-a"].string_match.safe_regex.regex == "a+"
    assert hs["x-b"].string_match.prefix == "p"
    assert hs["x-present"].present_match
    assert hs["x-no"].invert_match and hs["x-no"].string_match.exact == "1"
    qs = {q.name: q for q in m.query_parameters}
    assert qs["q"].string_match.exact == "v" and qs["r"].string_match.safe_regex.regex == "\\d+"
    assert routes[1].match.safe_regex.regex == "/r/[0-9]+"
    assert routes[2].match.path == "/only"


def test_source_labels_and_port_matches_filter_routes() -> None:
    http = """  - match: [{sourceLabels: {app: productpage}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{port: 1234}]
    route: [{destination: {host: reviews, subset: v3}}]
  - route: [{destination: {host: reviews, subset: v1}}]
"""
    snap = bookinfo(vs(http))
    from_pp = [r.route.cluster for r in vhost(snap).routes]
    assert from_pp == [f"outbound|9080|v2|{REVIEWS}", f"outbound|9080|v1|{REVIEWS}"]
    from_ratings = [r.route.cluster for r in vhost(snap, proxy=sidecar("ratings-v1-0", "127.0.1.6")).routes]
    assert from_ratings == [f"outbound|9080|v1|{REVIEWS}"]


def test_timeout_retries_rewrite_headers_mirror() -> None:
    http = """  - timeout: 0.5s
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: "gateway-error,connect-failure,503,504"}
    rewrite: {uri: /v2, authority: new.example}
    headers:
      request: {set: {x-set: a}, add: {x-add: b}, remove: [x-gone]}
      response: {set: {x-resp: c}, remove: [server]}
    mirror: {host: ratings}
    mirrorPercentage: {value: 25}
    route: [{destination: {host: reviews, subset: v1}, headers: {request: {set: {x-dest: d}}}}]
"""
    r = vhost(bookinfo(vs(http))).routes[0]
    a = r.route
    assert a.timeout.ToMilliseconds() == 500 and a.max_stream_duration.grpc_timeout_header_max.ToMilliseconds() == 500
    rp = a.retry_policy
    assert rp.num_retries.value == 3 and rp.per_try_timeout.seconds == 2
    assert rp.retry_on == "gateway-error,connect-failure,retriable-status-codes"
    assert list(rp.retriable_status_codes) == [503, 504]
    assert a.prefix_rewrite == "/v2" and a.host_rewrite_literal == "new.example"
    req = {h.header.key: (h.header.value, h.append_action) for h in r.request_headers_to_add}
    assert req["x-set"] == ("a", base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD)  # set
    assert req["x-add"] == ("b", base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD)  # add
    assert "x-dest" in req  # a single destination's headers merge into the route
    assert list(r.request_headers_to_remove) == ["x-gone"]
    assert [h.header.key for h in r.response_headers_to_add] == ["x-resp"]
    assert list(r.response_headers_to_remove) == ["server"]
    m = a.request_mirror_policies[0]
    assert m.cluster == f"outbound|9080||{RATINGS}" and m.runtime_fraction.default_value.numerator == 250000


def test_attempts_zero_disables_retries() -> None:
    r = vhost(bookinfo(vs("  - retries: {attempts: 0}\n    route: [{destination: {host: reviews}}]\n"))).routes[0]
    assert not r.route.HasField("retry_policy")


def test_redirect_and_direct_response() -> None:
    http = """  - match: [{uri: {exact: /old}}]
    redirect: {uri: /new, authority: other, redirectCode: 302}
  - directResponse: {status: 418, body: {string: teapot}}
"""
    routes = vhost(bookinfo(vs(http))).routes
    red = routes[0].redirect
    assert red.path_redirect == "/new" and red.host_redirect == "other" and red.response_code == rc.RedirectAction.FOUND
    assert routes[1].direct_response.status == 418 and routes[1].direct_response.body.inline_string == "teapot"


def test_cors_policy() -> None:
    http = """  - corsPolicy:
      allowOrigins: [{exact: "https://a.example"}, {regex: ".*\\\\.b\\\\.example"}]
      allowMethods: [GET, POST]
      allowHeaders: [x-a]
      exposeHeaders: [x-b]
      maxAge: 24h
      allowCredentials: true
    route: [{destination: {host: reviews}}]
"""
    c = cors_pb2.CorsPolicy()
    vhost(bookinfo(vs(http))).routes[0].typed_per_filter_config["envoy.filters.http.cors"].Unpack(c)
    assert c.allow_origin_string_match[0].exact == "https://a.example"
    assert c.allow_origin_string_match[1].safe_regex.regex == ".*\\.b\\.example"
    assert (c.allow_methods, c.allow_headers, c.expose_headers, c.max_age) == ("GET,POST", "x-a", "x-b", "86400")
    assert c.allow_credentials.value


def test_consistent_hash_goes_on_the_route() -> None:
    dr = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}
"""
    hp = vhost(bookinfo(dr)).routes[0].route.hash_policy
    assert hp[0].header.header_name == "x-user"


def test_destination_port_selection() -> None:
    snap = make_snapshot(
        resources(vs("  - route: [{destination: {host: multi, port: {number: 9090}}}]\n", host="multi")),
        [service("multi", ports=[(8080, "HTTP"), (9090, "HTTP")])])
    cfg = configs(snap)
    # explicit port wins on every listener port of the host
    for port in (8080, 9090):
        v = next(v for v in cfg[str(port)].virtual_hosts if v.name.endswith(f":{port}"))
        assert v.routes[0].route.cluster == "outbound|9090||multi.default.svc.cluster.local"
    snap = make_snapshot(resources(vs("  - route: [{destination: {host: multi}}]\n", host="multi")),
                         [service("multi", ports=[(8080, "HTTP"), (9090, "HTTP")])])
    v = next(v for v in configs(snap)["8080"].virtual_hosts if v.name.endswith(":8080"))
    assert v.routes[0].route.cluster == "outbound|8080||multi.default.svc.cluster.local"  # the listener's port


def test_oldest_virtual_service_wins_for_a_host() -> None:
    def named(name: str, ts: str, subset: str) -> str:
        return (f"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, "
                f"creationTimestamp: '{ts}'}}\nspec:\n  hosts: [reviews]\n  http:\n"
                f"  - route: [{{destination: {{host: reviews, subset: {subset}}}}}]\n")
    snap = bookinfo(named("a-new", "2024-02-01T00:00:00Z", "v2"), named("z-old", "2024-01-01T00:00:00Z", "v3"))
    assert vhost(snap).routes[0].route.cluster == f"outbound|9080|v3|{REVIEWS}"


def test_wildcard_and_fqdn_hosts() -> None:
    wild = ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: w}\nspec:\n"
            "  hosts: ['*.default.svc.cluster.local']\n"
            "  http:\n  - route: [{destination: {host: reviews, subset: v2}}]\n")
    snap = bookinfo(wild)
    assert vhost(snap).routes[0].route.cluster == f"outbound|9080|v2|{REVIEWS}"
    assert vhost(snap, RATINGS).routes[0].route.cluster == f"outbound|9080|v2|{REVIEWS}"


def test_gateway_only_virtual_service_does_not_apply_to_sidecars(bi: pathlib.Path) -> None:
    snap = bookinfo(bi / "bookinfo-gateway.yaml")
    # bookinfo's VS has hosts "*" but gateways [bookinfo-gateway]: sidecars keep the default route
    assert vhost(snap, "productpage.default.svc.cluster.local").routes[0].name == "default"
    mesh_and_gw = vs("  - route: [{destination: {host: reviews, subset: v2}}]\n",
                     extra="  gateways: [mesh, bookinfo-gateway]\n")
    assert vhost(bookinfo(mesh_and_gw)).routes[0].route.cluster == f"outbound|9080|v2|{REVIEWS}"


# ---- gateways ------------------------------------------------------------------------------------------


def test_bookinfo_gateway_routes(bi: pathlib.Path) -> None:
    cfg = configs(bookinfo(bi / "bookinfo-gateway.yaml"), gateway_proxy())
    assert set(cfg) == {"http.8080"}
    [v] = cfg["http.8080"].virtual_hosts
    assert v.name == "*:8080" and list(v.domains) == ["*"]
    ms = [(r.match.WhichOneof("path_specifier"), r.match.path or r.match.prefix) for r in v.routes]
    assert ms == [("path", "/productpage"), ("prefix", "/static"), ("path", "/login"), ("path", "/logout"),
                  ("prefix", "/api/v1/products")]
    assert {r.route.cluster for r in v.routes} == {"outbound|9080||productpage.default.svc.cluster.local"}


def test_gateway_host_intersection_and_binding() -> None:
    gw = """apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*.example.com"]
"""
    bound = ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec:\n"
             "  hosts: [shop.example.com, other.org]\n  gateways: [istio-system/gw]\n"
             "  http:\n  - route: [{destination: {host: reviews}}]\n")
    unbound = ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: b}\nspec:\n"
               "  hosts: [x.example.com]\n  gateways: [gw]\n  http:\n  - route: [{destination: {host: ratings}}]\n")
    cfg = configs(bookinfo(gw, bound, unbound), gateway_proxy())["http.80"]
    # `gw` in the VS's namespace means default/gw, not istio-system/gw; other.org is outside the server hosts
    assert [(v.name, list(v.domains)) for v in cfg.virtual_hosts] == [
        ("shop.example.com:80", ["shop.example.com", "shop.example.com:*"])]
    assert cfg.virtual_hosts[0].routes[0].route.cluster == f"outbound|9080||{REVIEWS}"


def test_gateway_without_virtual_services_returns_404() -> None:
    gw = ("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n"
          "  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 8080, name: http, protocol: HTTP}\n"
          "    hosts: ['*']\n")
    [v] = configs(bookinfo(gw), gateway_proxy())["http.8080"].virtual_hosts
    assert v.routes[0].direct_response.status == 404


def test_gateway_selector_must_match() -> None:
    gw = ("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n"
          "  selector: {istio: egressgateway}\n  servers:\n  - port: {number: 8080, name: http, protocol: HTTP}\n"
          "    hosts: ['*']\n")
    assert configs(bookinfo(gw), gateway_proxy()) == {}


def test_virtual_service_host_that_is_no_service_gets_virtual_hosts() -> None:
    # Istio adds a virtual host per HTTP port for VirtualService hosts missing from the registry.
    snap = bookinfo(vs("  - route: [{destination: {host: reviews, subset: v2}}]\n", host="reviews.example.com"))
    v = vhost(snap, "reviews.example.com")
    assert list(v.domains) == ["reviews.example.com", "reviews.example.com:9080"]
    assert v.routes[0].route.cluster == f"outbound|9080|v2|{REVIEWS}"
    pv = vhost(snap, "reviews.example.com", config="http_proxy")
    assert list(pv.domains) == ["reviews.example.com:9080"]


def test_star_host_virtual_service_does_not_duplicate_allow_any() -> None:
    snap = bookinfo(vs("  - route: [{destination: {host: reviews, subset: v3}}]\n", host="'*'"))
    for cfg in configs(snap).values():
        domains = [d for v in cfg.virtual_hosts for d in v.domains]
        assert len(domains) == len(set(domains))
    assert vhost(snap, RATINGS).routes[0].route.cluster == f"outbound|9080|v3|{REVIEWS}"  # `*` matches every host


def test_gateway_https_redirect_requires_tls() -> None:
    gw = ("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n"
          "  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n"
          "    hosts: ['*']\n    tls: {httpsRedirect: true}\n")
    bound = ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec:\n"
             "  hosts: [shop.example.com]\n  gateways: [gw]\n  http:\n  - route: [{destination: {host: reviews}}]\n")
    [v] = configs(bookinfo(gw, bound), gateway_proxy())["http.80"].virtual_hosts
    assert v.require_tls == rc.VirtualHost.ALL  # Istio: 301 to https for every request
    plain = gw.replace("    tls: {httpsRedirect: true}\n", "")
    [v] = configs(bookinfo(plain, bound), gateway_proxy())["http.80"].virtual_hosts
    assert v.require_tls == rc.VirtualHost.NONE


def test_http_proxy_tunnels_connect_to_tcp_services_and_passthrough() -> None:
    snap = make_snapshot(services=[service("reviews"), service("db", ports=[(5432, "TCP")])])
    cfg = configs(snap)["http_proxy"]
    db = next(v for v in cfg.virtual_hosts if v.name == "db.default.svc.cluster.local:5432")
    assert "db:5432" in db.domains and "db" not in db.domains  # CONNECT authority always has a port
    r = db.routes[0]
    assert r.match.HasField("connect_matcher")
    assert r.route.cluster == "outbound|5432||db.default.svc.cluster.local"
    assert r.route.upgrade_configs[0].upgrade_type == "CONNECT"
    allow_any = cfg.virtual_hosts[-1]
    assert allow_any.routes[0].match.HasField("connect_matcher")
    assert allow_any.routes[0].route.cluster == "PassthroughCluster"


def test_tcp_routes_pick_the_connect_tunnel_clusters() -> None:
    tcp_vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db}
spec:
  hosts: [db]
  tcp:
  - match: [{port: 9999}]
    route: [{destination: {host: db, subset: never}}]
  - match: [{port: 5432}]
    route:
    - {destination: {host: db, subset: v1}, weight: 80}
    - {destination: {host: db, subset: v2}, weight: 20}
"""
    snap = make_snapshot(resources(tcp_vs), [service("db", ports=[(5432, "TCP")])])
    cfg = configs(snap)["http_proxy"]
    db = next(v for v in cfg.virtual_hosts if v.name == "db.default.svc.cluster.local:5432")
    wc = db.routes[0].route.weighted_clusters.clusters
    assert [(c.name, c.weight.value) for c in wc] == [
        ("outbound|5432|v1|db.default.svc.cluster.local", 80), ("outbound|5432|v2|db.default.svc.cluster.local", 20)]


def test_export_to_hides_virtual_services_from_gateways_in_other_namespaces(bi: pathlib.Path) -> None:
    text = (bi / "bookinfo-gateway.yaml").read_text().replace(
        "  gateways:\n  - bookinfo-gateway\n", "  gateways:\n  - bookinfo-gateway\n  exportTo: [\".\"]\n")
    assert 'exportTo: ["."]' in text
    [v] = configs(bookinfo(text), gateway_proxy(ns="istio-system"))["http.8080"].virtual_hosts
    assert v.name == "blackhole:8080"  # the VS is private to namespace default
    [v] = configs(bookinfo(text), gateway_proxy(ns="default"))["http.8080"].virtual_hosts
    assert v.name == "*:8080"
