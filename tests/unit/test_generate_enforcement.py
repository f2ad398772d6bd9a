"""The one list of what is accepted but not enforced: each gap named with its field, translated config says nothing."""

from __future__ import annotations

from sailmesh.api.parse import parse_text
from sailmesh.generate.enforcement import not_enforced


def notes(text: str) -> list[str]:
    [r] = parse_text(text).resources
    return not_enforced(r)


def test_fields_not_translated_are_named() -> None:
    vs = notes("""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r, namespace: default}
spec:
  hosts: [r]
  http:
  - {delegate: {name: d}}
  - {route: [{destination: {host: r}}], retries: {attempts: 2, retryRemoteLocalities: true}}
  tls: [{match: [{sniHosts: [r], destinationSubnets: [10.0.0.0/8]}], route: [{destination: {host: r}}]}]
""")
    # delegate (generate/delegate.py) and retryRemoteLocalities (httproute.retry_policy) are translated
    assert vs == [
        "VirtualService default/r: accepted, not enforced: spec.tls[0].match[0].destinationSubnets (matched by "
        "captured sidecars only: an explicit-proxy sidecar skips the match)"]
    dr = notes("""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r, namespace: default}
spec:
  host: r
  trafficPolicy: {loadBalancer: {localityLbSetting: {enabled: true}}}
  subsets: [{name: v1, labels: {v: "1"}, trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}}]
""")
    # localityLbSetting: generate/locality.py; PASSTHROUGH: clusters.py (test_generate_passthrough_lb.py)
    assert dr == []
    assert notes("""apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: f, namespace: default}
spec: {configPatches: [{applyTo: BOOTSTRAP, patch: {operation: MERGE, value: {}}},
                       {applyTo: CLUSTER, patch: {operation: ADD, value: {name: x}}},
                       {applyTo: EXTENSION_CONFIG, patch: {operation: ADD, value: {name: y}}},
                       {applyTo: EXTENSION_CONFIG, patch: {operation: MERGE, value: {name: y}}}]}
""") == ["EnvoyFilter default/f: accepted, not enforced: spec.configPatches[0].applyTo: BOOTSTRAP (ignored, as Istio "
         "ignores it), spec.configPatches[3].patch.operation: MERGE (EXTENSION_CONFIG: Istio serves ADD only)"]


def test_translated_config_has_no_note() -> None:
    assert notes("""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r, namespace: default}
spec:
  hosts: [r]
  http: [{route: [{destination: {host: r, subset: v1}, weight: 90}, {destination: {host: r, subset: v2}, weight: 10}],
          retries: {attempts: 3}, timeout: 2s, fault: {abort: {httpStatus: 500, percentage: {value: 10}}}}]
""") == []
    assert notes("""apiVersion: v1
kind: Service
metadata: {name: r, namespace: default}
spec: {ports: [{port: 80}]}
""") == []


def test_telemetry_fields_not_applied_are_named() -> None:
    # Telemetry is applied (tracing, access logging, standard-metric overrides, reportingInterval); custom
    # metrics and targetRefs are not yet
    assert notes("""apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging: [{providers: [{name: envoy}]}]
  metrics: [{overrides: [{match: {metric: REQUEST_COUNT}, disabled: true},
                         {match: {metric: ALL_METRICS}, tagOverrides: {x: {value: request.host}}}],
             reportingInterval: 10s}]
""") == []
    assert notes("""apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  metrics: [{overrides: [{match: {customMetric: my_total}, disabled: true}]}]
""") == ["Telemetry istio-system/mesh-default: accepted, not enforced: metrics[0].overrides[0].match.customMetric "
         "(custom metrics are not defined)"]


def test_gateway_tls_is_translated_and_its_gaps_named() -> None:
    """Gateway TLS servers (AUTO_PASSTHROUGH included) and VirtualService `tls` routes bound to a gateway are
    translated (no note); destinationSubnets is named where it cannot act (explicit-proxy sidecars)."""
    assert notes("""apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: g, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"], tls: {httpsRedirect: true}}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: MUTUAL, credentialName: a, minProtocolVersion: TLSV1_2, cipherSuites: [ECDHE-RSA-AES256-GCM-SHA384]}
  - {port: {number: 443, name: tls, protocol: TLS}, hosts: [b.example.com], tls: {mode: PASSTHROUGH}}
""") == []
    assert notes("""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r, namespace: default}
spec:
  hosts: [b.example.com]
  gateways: [g]
  tls: [{match: [{sniHosts: [b.example.com]}], route: [{destination: {host: b}}]}]
""") == []
    assert notes("""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r, namespace: default}
spec:
  hosts: [b.example.com]
  tls: [{match: [{sniHosts: [b.example.com], destinationSubnets: [10.0.0.0/8]}], route: [{destination: {host: b}}]}]
""") == ["VirtualService default/r: accepted, not enforced: spec.tls[0].match[0].destinationSubnets (matched by "
        "captured sidecars only: an explicit-proxy sidecar skips the match)"]
    assert notes("""apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: g, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: 15443, name: tls, protocol: TLS}, hosts: ["*.local"], tls: {mode: AUTO_PASSTHROUGH}}
""") == []  # generate/gateway.py ChainSpec.auto_passthrough + clusters.sni_dnat_clusters


def test_destination_rule_workload_selector_is_enforced() -> None:
    """The lookup honours workloadSelector (snapshot/index.destination_rule; test_generate_dr_selector.py), and with
    it client credentialName at the selected sidecars."""
    assert notes("""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r, namespace: default}
spec:
  host: r
  workloadSelector: {matchLabels: {app: a}}
  trafficPolicy: {tls: {mode: MUTUAL, credentialName: c}}
""") == []


def test_audit_gaps_of_destination_rules_and_http_routes_are_named() -> None:
    """The field-by-field audit (docs/translation.md "Audit"): DestinationRule traffic-policy fields Istio's cluster
    builder reads and sailmesh does not yet, at every level (policy, subsets, port-level), and HTTPRoute fault /
    redirect fields, are named instead of being dropped silently; retries' `backoff` and `retryIgnorePreviousHosts`
    are translated (no note)."""
    assert notes("""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r, namespace: default}
spec:
  host: r
  trafficPolicy:
    retryBudget: {percent: {value: 10}}
    portLevelSettings: [{port: {number: 80}, outlierDetection: {outlierDetectionHttpErrorCodes: [500]}}]
  subsets: [{name: v1, trafficPolicy: {tls: {mode: SIMPLE, caCrl: /x}}}]
""") == ["DestinationRule default/r: accepted, not enforced: spec.trafficPolicy.retryBudget (without a connectionPool: "
         "Istio ignores it too)"]
    assert notes("""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r, namespace: default}
spec:
  host: r
  trafficPolicy: {tls: {mode: SIMPLE, credentialName: c, caCrl: /crl.pem}}
""") == ["DestinationRule default/r: accepted, not enforced: spec.trafficPolicy.tls.caCrl (with credentialName or "
         "insecureSkipVerify: Istio ignores it too)"]
    assert notes("""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r, namespace: default}
spec:
  hosts: [r]
  http:
  - route: [{destination: {host: r}}]
    retries: {attempts: 2, backoff: 1s, retryIgnorePreviousHosts: false}
    fault: {abort: {http2Error: CANCEL, percentage: {value: 1}}}
""") == ["VirtualService default/r: accepted, not enforced: spec.http[0].fault.abort.http2Error (ignored, as Istio "
         "ignores it)"]


def test_retry_backoff_and_ignore_previous_hosts_as_istio() -> None:
    """Istio's retry.ConvertPolicy: `backoff` -> retry_back_off.base_interval; `retryIgnorePreviousHosts: false`
    removes the default previous_hosts predicate, true (or unset) keeps it."""
    from sailmesh.api.models.networking import HTTPRetry
    from sailmesh.generate.httproute import retry_policy

    p = retry_policy(HTTPRetry(attempts=2, backoff="250ms", retry_ignore_previous_hosts=False))
    assert p is not None and p.retry_back_off.base_interval.ToMilliseconds() == 250
    assert list(p.retry_host_predicate) == []
    kept = retry_policy(HTTPRetry(attempts=2, retry_ignore_previous_hosts=True))
    assert kept is not None and [h.name for h in kept.retry_host_predicate] == [
        "envoy.retry_host_predicates.previous_hosts"]
    assert not kept.HasField("retry_back_off")


def test_retry_budget_as_istio_apply_retry_budget() -> None:
    """Istio's applyRetryBudget, called from applyConnectionPool: beside a connectionPool the default thresholds get
    the budget (percent, default 20; minRetryConcurrency, default 3); a subset's budget replaces the policy's
    (MergeTrafficPolicy); without a connectionPool nothing is set (and the note says Istio ignores it too)."""
    from envoy.config.cluster.v3 import cluster_pb2

    from sailmesh.xds.types import CLUSTER
    from tests.unit.test_generate_support import bookinfo, generated, sidecar

    dr = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 10}}
    retryBudget: {percent: {value: 35}}
  subsets:
  - {name: v2, labels: {version: v2}, trafficPolicy: {retryBudget: {minRetryConcurrency: 7, budgetInterval: 2s}}}
"""
    clusters = generated(bookinfo(dr), sidecar(), CLUSTER, cluster_pb2.Cluster)
    top = clusters["outbound|9080||reviews.default.svc.cluster.local"].circuit_breakers.thresholds[0].retry_budget
    assert (top.budget_percent.value, top.min_retry_concurrency.value) == (35.0, 3)
    v2 = clusters["outbound|9080|v2|reviews.default.svc.cluster.local"].circuit_breakers.thresholds[0].retry_budget
    assert (v2.budget_percent.value, v2.min_retry_concurrency.value) == (20.0, 7)
    assert notes(dr) == ["DestinationRule default/reviews: accepted, not enforced: "
                         "spec.subsets[0].trafficPolicy.retryBudget.budgetInterval"]
    bare = generated(bookinfo(dr.replace("connectionPool: {tcp: {maxConnections: 10}}", "tls: {mode: DISABLE}")),
                     sidecar(), CLUSTER, cluster_pb2.Cluster)
    assert not bare["outbound|9080||reviews.default.svc.cluster.local"].circuit_breakers.thresholds[0].HasField(
        "retry_budget")


def test_redirect_prefix_rewrite_derive_port_and_match_stat_prefix_as_istio() -> None:
    """Istio's translateRedirect: prefixRewrite before uri, derivePort FROM_REQUEST_PORT -> the route's port, no
    explicit :80 for http / :443 for https; translateRoute: a match's statPrefix becomes the route's stat_prefix."""
    from envoy.config.route.v3 import route_pb2

    from sailmesh.xds.types import ROUTE
    from tests.unit.test_generate_support import bookinfo, generated, sidecar

    vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /old}, statPrefix: old-api}]
    redirect: {prefixRewrite: /new, uri: /ignored, derivePort: FROM_REQUEST_PORT}
  - match: [{uri: {prefix: /tls}}]
    redirect: {scheme: https, port: 443}
  - match: [{uri: {prefix: /alt}}]
    redirect: {port: 8443}
  - route: [{destination: {host: reviews}}]
"""
    assert notes(vs) == []
    routes = generated(bookinfo(vs), sidecar(), ROUTE, route_pb2.RouteConfiguration)
    [vh] = [v for v in routes["9080"].virtual_hosts if v.name == "reviews.default.svc.cluster.local:9080"]
    old, tls, alt = vh.routes[:3]
    assert old.stat_prefix == "old-api"
    assert (old.redirect.prefix_rewrite, old.redirect.path_redirect, old.redirect.port_redirect) == ("/new", "", 9080)
    assert (tls.redirect.scheme_redirect, tls.redirect.port_redirect) == ("https", 0)
    assert alt.redirect.port_redirect == 8443 and not alt.stat_prefix


def test_cors_unmatched_preflights_and_direct_response_bytes_as_istio() -> None:
    """Istio's forwardNotMatchingPreflights (IGNORE -> false; otherwise Envoy's default true) and
    translateDirectResponse's HTTPBody_Bytes (inline bytes; base64 in YAML)."""
    from envoy.config.route.v3 import route_pb2
    from envoy.extensions.filters.http.cors.v3 import cors_pb2

    from sailmesh.xds.types import ROUTE
    from tests.unit.test_generate_support import bookinfo, generated, sidecar

    vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /raw}}]
    directResponse: {status: 200, body: {bytes: aGVsbG8=}}
  - route: [{destination: {host: reviews}}]
    corsPolicy: {allowOrigins: [{exact: "https://a.example"}], unmatchedPreflights: IGNORE}
"""
    assert notes(vs) == []
    routes = generated(bookinfo(vs), sidecar(), ROUTE, route_pb2.RouteConfiguration)
    [vh] = [v for v in routes["9080"].virtual_hosts if v.name == "reviews.default.svc.cluster.local:9080"]
    raw, routed = vh.routes[:2]
    assert raw.direct_response.body.inline_bytes == b"hello"
    cors = cors_pb2.CorsPolicy()
    assert routed.typed_per_filter_config["envoy.filters.http.cors"].Unpack(cors)
    assert cors.HasField("forward_not_matching_preflights") and not cors.forward_not_matching_preflights.value


def test_mirror_percent_as_the_crd_spells_it() -> None:
    """The deprecated `mirror_percent` (the CRD's altName; Istio's protojson reads it and `mirrorPercent`): the
    mirror's runtime fraction, as Istio's MirrorPercent."""
    from envoy.config.route.v3 import route_pb2

    from sailmesh.xds.types import ROUTE
    from tests.unit.test_generate_support import bookinfo, generated, sidecar

    vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
    mirror: {host: ratings}
    mirror_percent: 30
"""
    assert notes(vs) == []
    routes = generated(bookinfo(vs), sidecar(), ROUTE, route_pb2.RouteConfiguration)
    [vh] = [v for v in routes["9080"].virtual_hosts if v.name == "reviews.default.svc.cluster.local:9080"]
    [mirror] = vh.routes[0].route.request_mirror_policies
    assert mirror.runtime_fraction.default_value.numerator == 300000  # 30% in millionths


def test_outlier_detection_http_error_codes_as_istio() -> None:
    """Istio's applyOutlierDetectionErrorCodes: the HTTP protocol options' outlier error matcher, a `:status` exact
    match per code, or'ed; one code is the predicate itself."""
    from envoy.config.cluster.v3 import cluster_pb2
    from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo

    from sailmesh.xds.types import CLUSTER
    from tests.unit.test_generate_support import bookinfo, generated, sidecar

    dr = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy: {outlierDetection: {consecutive5xxErrors: 3, outlierDetectionHttpErrorCodes: [500, 503]}}
  subsets:
  - {name: v2, labels: {version: v2}, trafficPolicy: {outlierDetection: {outlierDetectionHttpErrorCodes: [502]}}}
"""
    assert notes(dr) == []
    clusters = generated(bookinfo(dr), sidecar(), CLUSTER, cluster_pb2.Cluster)

    def matcher(name: str) -> object:
        opts = hpo.HttpProtocolOptions()
        clusters[name].typed_extension_protocol_options[
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].Unpack(opts)
        return opts.outlier_detection.error_matcher

    both = matcher("outbound|9080||reviews.default.svc.cluster.local")
    assert [r.http_response_headers_match.headers[0].string_match.exact for r in both.or_match.rules] == [
        "500", "503"]
    one = matcher("outbound|9080|v2|reviews.default.svc.cluster.local")
    assert one.http_response_headers_match.headers[0].name == ":status"
    assert one.http_response_headers_match.headers[0].string_match.exact == "502"


def test_cookie_attributes_and_http2_keepalive_as_istio() -> None:
    """Istio's consistentHashToHashPolicy copies httpCookie.attributes onto the cookie hash policy; its
    applyConnectionPool sets http2KeepAlive's interval/timeout as the HTTP/2 options' connection_keepalive."""
    from envoy.config.cluster.v3 import cluster_pb2
    from envoy.config.route.v3 import route_pb2
    from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo

    from sailmesh.xds.types import CLUSTER, ROUTE
    from tests.unit.test_generate_support import bookinfo, generated, sidecar

    dr = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpCookie: {name: user, ttl: 60s, attributes: [{name: SameSite, value: Strict}]}}
    connectionPool: {http: {h2UpgradePolicy: UPGRADE, http2KeepAlive: {interval: 10s, timeout: 3s}}}
"""
    assert notes(dr) == []
    snap = bookinfo(dr)
    routes = generated(snap, sidecar(), ROUTE, route_pb2.RouteConfiguration)
    [vh] = [v for v in routes["9080"].virtual_hosts if v.name == "reviews.default.svc.cluster.local:9080"]
    [hp] = vh.routes[0].route.hash_policy
    assert [(a.name, a.value) for a in hp.cookie.attributes] == [("SameSite", "Strict")]
    opts = hpo.HttpProtocolOptions()
    generated(snap, sidecar(), CLUSTER, cluster_pb2.Cluster)["outbound|9080||reviews.default.svc.cluster.local"] \
        .typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].Unpack(opts)
    ka = opts.explicit_http_config.http2_protocol_options.connection_keepalive
    assert (ka.interval.seconds, ka.timeout.seconds) == (10, 3)


def test_client_tls_ca_crl_checks_the_servers_certificate() -> None:
    """Istio's buildUpstreamTLSContext (certificate files): `caCrl` joins the validation context."""
    from sailmesh.api.models.networking import ClientTLSSettings
    from sailmesh.generate.tls import file_upstream

    ctx = file_upstream(ClientTLSSettings(mode="SIMPLE", ca_certificates="/ca.pem", ca_crl="/crl.pem"), "a", False)
    assert ctx is not None and ctx.common_tls_context.validation_context.crl.filename == "/crl.pem"
