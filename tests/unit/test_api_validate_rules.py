"""Istio's Go-side validation semantics and the schema checks, each case naming the rule it checks."""

from __future__ import annotations

import pytest

from sailmesh.api.issue import Issue
from sailmesh.api.parse import parse_text
from sailmesh.api.validate import errors_only, is_valid, validate


def issues(text: str, file: str = "t.yaml") -> list[Issue]:
    r = parse_text(text, file)
    assert not r.errors, r.errors
    assert len(r.resources) == 1
    return validate(r.resources[0])


def errs(text: str) -> list[str]:
    return [str(i) for i in errors_only(issues(text))]


def vs(http: str, extra: str = "") -> str:
    return ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\n"
            f"spec:\n  hosts: [reviews]\n{extra}  http:\n{http}")


GOOD_ROUTE = "  - route:\n    - destination: {host: reviews, subset: v1}\n"
MATCHED_ROUTE = "    route:\n    - destination: {host: reviews, subset: v1}\n"


def test_issue_format_names_file_line_resource_field():
    """The documented format: file:line: Kind ns/name: field: message."""
    text = vs("  - route:\n    - destination: {host: reviews, subset: v1}\n      weight: 90\n"
              "    - destination: {host: reviews, subset: v2}\n      weight: -1\n")
    found = errors_only(issues(text, "reviews.yaml"))
    assert "reviews.yaml:12: VirtualService default/reviews: spec.http[0].route[1].weight: " \
           "weight -1 < 0" in [str(i) for i in found]
    d = found[0].to_dict()
    assert set(d) >= {"file", "line", "resource", "field", "message"}


def test_valid_virtual_service():
    assert errs(vs(GOOD_ROUTE)) == []
    # Istio's validateDestination accepts wildcard domains; validateGatewayNames accepts ns/name and mesh
    assert errs(vs("  - route:\n    - destination: {host: '*.eu.example.com'}\n",
                   "  gateways: [mesh, istio-system/ingress]\n")) == []


@pytest.mark.parametrize(("gateway", "needle"), [
    ("bad_ns/gw", "invalid value for namespace"),
    ("ns/gw~auto", "invalid value for gateway name"),
    ("ns/", "cannot be empty"),
])
def test_gateway_names(gateway, needle):
    found = errs(vs(GOOD_ROUTE, f"  gateways: ['{gateway}']\n"))
    assert any(needle in e for e in found), found


@pytest.mark.parametrize(("http", "needle"), [
    # HTTPRouteDestination weights: total 0 with several destinations is rejected (validateHTTPRouteDestinations)
    ("  - route:\n    - destination: {host: a}\n      weight: 0\n    - destination: {host: b}\n      weight: 0\n",
     "total destination weight = 0"),
    ("  - route:\n    - destination: {host: a}\n      weight: -1\n", "weight -1 < 0"),
    # durations: Go duration syntax, timeouts >= 1ms for perTryTimeout
    (GOOD_ROUTE + "    timeout: 10 seconds\n", "invalid duration"),
    (GOOD_ROUTE + "    retries: {attempts: 3, perTryTimeout: 0s}\n", "duration must be greater than 1ms"),
    (GOOD_ROUTE + "    retries: {attempts: -1}\n", "attempts cannot be negative"),
    (GOOD_ROUTE + "    retries: {attempts: 3, retryOn: '5xx,bogus'}\n", '"bogus" is not a valid retryOn policy'),
    # match regexes are RE2 (Envoy's safe_regex): lookahead / backreferences are refused
    ("  - match:\n    - uri: {regex: '^/(?=api)'}\n" + MATCHED_ROUTE, "invalid regex"),
    ("  - match:\n    - uri: {regex: '(unclosed'}\n" + MATCHED_ROUTE, "invalid regex"),
    ("  - match:\n    - headers: {'x user': {exact: a}}\n" + MATCHED_ROUTE, "is not a valid header name"),
    # a route needs route/redirect/directResponse/delegate; redirect and route are exclusive
    ("  - timeout: 1s\n", "HTTP route, redirect or direct_response is required"),
    (GOOD_ROUTE + "    redirect: {uri: /x}\n", "both route and redirect"),
    ("  - redirect: {uri: /x, redirectCode: 404}\n", "404 is not a valid redirect code, must be 3xx"),
    # fault injection
    (GOOD_ROUTE + "    fault: {abort: {httpStatus: 700, percentage: {value: 10}}}\n", "HTTP status 700 is not"),
    (GOOD_ROUTE + "    fault: {delay: {percentage: {value: 150}, fixedDelay: 1s}}\n", "is neither 0.0, nor"),
    (GOOD_ROUTE + "    mirror: {host: m}\n    mirrorPercentage: {value: 101}\n", "max value of 100"),
    # the CRD's altName spelling of the deprecated mirrorPercent (Istio's protojson reads both)
    (GOOD_ROUTE + "    mirror: {host: m}\n    mirror_percent: 101\n", "max value of 100"),
    ("  - route:\n    - destination: {host: reviews, subset: V_1}\n", "subset name is invalid: V_1"),
    ("  - route:\n    - destination: {host: '*'}\n", "invalid destination host *"),
    ("  - route:\n    - destination: {host: reviews, port: {number: 70000}}\n", "range 1..65535"),
    (GOOD_ROUTE + "    rewrite: {uri: /a, uriRegexRewrite: {match: a, rewrite: b}}\n", "one of URI or UriRegexRewrite"),
    (GOOD_ROUTE + "    corsPolicy: {allowOrigins: [{regex: '(('}]}\n", "invalid regex"),
])
def test_virtual_service_rules(http, needle):
    found = errs(vs(http))
    assert any(needle in e for e in found), found


def test_empty_spec_runs_istios_go_validator():
    """Istio's webhook validates a missing spec as an empty message: an AuthorizationPolicy is then allow-nothing
    (valid), a Sidecar is refused (ValidateSidecar: "empty configuration provided"), a ServiceEntry too (CRD)."""
    assert any("sidecar: empty configuration provided" in e
               for e in errs("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default}\n"))
    assert errs("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: none}\n") == []
    assert any("spec: Required value" in e
               for e in errs("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: s}\n"))


def test_delay_without_length_warns():
    found = issues(vs(GOOD_ROUTE + "    fault: {delay: {percentage: {value: 10}}}\n"))
    assert not errors_only(found) and any("injects no delay" in i.message for i in found)


def test_weights_not_summing_to_100_warn():
    """Istio accepts relative weights (only total 0 is an error); sailmesh warns when the sum is not 100."""
    text = vs("  - route:\n    - destination: {host: a}\n      weight: 30\n    - destination: {host: b}\n"
              "      weight: 30\n")
    found = issues(text)
    assert not errors_only(found)
    assert any(i.severity == "warning" and "sum to 60" in i.message for i in found)


def test_schema_checks_types_enums_unknown_fields():
    text = vs("  - route:\n    - destination: {host: reviews}\n      weight: ten\n      colour: red\n")
    found = errs(text)
    assert any("weight: Invalid value" in e and "must be of type integer" in e for e in found)
    assert any('unknown field "spec.http[0].route[0].colour"' in e for e in found)


def test_deprecated_fields_warn():
    """consecutiveErrors is still in Istio's schema but deprecated (consecutive5xxErrors replaces it): a warning."""
    text = ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\nspec:\n  host: r\n"
            "  trafficPolicy:\n    outlierDetection: {consecutiveErrors: 5}\n")
    found = issues(text)
    assert not errors_only(found)
    assert any("consecutive5xxErrors" in i.message and i.severity == "warning" for i in found)


def dr(body: str) -> str:
    return "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\nspec:\n  host: r\n" + body


@pytest.mark.parametrize(("body", "needle"), [
    ("  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v1, labels: {version: v2}}\n", "duplicate subset"),
    ("  subsets:\n  - {name: v_1, labels: {version: v1}}\n", "subset name is invalid: v_1"),
    ("  trafficPolicy:\n    outlierDetection: {interval: 1x}\n", "invalid duration"),
    ("  trafficPolicy:\n    tls: {mode: MUTUAL}\n", "client certificate required for mutual tls"),
    ("  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN, consistentHash: {httpHeaderName: x}}\n", "oneOf"),
    ("  trafficPolicy:\n    portLevelSettings:\n    - port: {number: 0}\n", "must have at least one field"),
    ("  exportTo: ['*', foo]\n", "cannot have both public (*) and non-public exportTo values"),
])
def test_destination_rule_rules(body, needle):
    found = errs(dr(body))
    assert any(needle in e for e in found), found


def gw(server: str) -> str:
    return ("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n"
            f"  selector: {{istio: ingressgateway}}\n  servers:\n{server}")


@pytest.mark.parametrize(("server", "needle"), [
    ("  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: ['*']\n", "must have TLS settings"),
    ("  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: ['*']\n    tls: {mode: SIMPLE}\n",
     "SIMPLE TLS requires a server certificate"),
    ("  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['bad/ns/x']\n", "short names (non FQDN)"),
    ("  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['Bad_NS/*']\n", "invalid namespace value"),
    ("  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['a..b']\n", "(label '' invalid)"),
    ("  - port: {number: 0, name: http, protocol: HTTP}\n    hosts: ['*']\n", "range 1..65535"),
    ("  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: []\n", "at least one host"),
    ("  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n"
     "  - port: {number: 81, name: http, protocol: HTTP}\n    hosts: ['*']\n", "port names in servers must be unique"),
])
def test_gateway_rules(server, needle):
    found = errs(gw(server))
    assert any(needle in e for e in found), found


def test_gateway_https_redirect_and_credential_ok():
    ok = gw("  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n    tls: {httpsRedirect: true}\n"
            "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: ['ns1/*.example.com']\n"
            "    tls: {mode: SIMPLE, credentialName: cert}\n")
    assert errs(ok) == []


def se(body: str) -> str:
    return "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: s}\nspec:\n" + body


@pytest.mark.parametrize(("body", "needle"), [
    ("  hosts: [a.com]\n  addresses: [300.1.1.1]\n  resolution: STATIC\n", "is not a valid IP"),
    ("  hosts: [a.com]\n  resolution: STATIC\n  ports: [{number: 80, name: http}]\n"
     "  endpoints: [{address: 1.1.1.1, ports: {web: 8080}}]\n", "is not defined by the service entry"),
    ("  hosts: [a.com]\n  resolution: STATIC\n  endpoints: [{address: not-an-ip}]\n", "is not a valid IP address"),
    ("  hosts: ['*.a.com']\n  resolution: DNS\n  ports: [{number: 80, name: http}]\n", "hosts must be FQDN"),
    ("  hosts: [a.com]\n  resolution: DNS\n  endpoints: [{address: a}, {address: b}]\n", None),
    ("  hosts: [a.com]\n  resolution: DNS_ROUND_ROBIN\n  endpoints: [{address: a}, {address: b}]\n",
     "DNS_ROUND_ROBIN mode cannot have multiple endpoints"),
])
def test_service_entry_rules(body, needle):
    found = errs(se(body))
    if needle is None:
        assert found == []
    else:
        assert any(needle in e for e in found), found


@pytest.mark.parametrize(("egress", "needle"), [
    ("  - hosts: [reviews.default.svc.cluster.local]\n", "namespace/dnsName"),
    ("  - hosts: ['Bad_NS/*']\n", "invalid namespace"),
    ("  - hosts: ['./*', 'istio-system/*', '~/*', '*/foo.com']\n", None),
])
def test_sidecar_egress_hosts(egress, needle):
    found = errs("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: s}\nspec:\n  egress:\n"
                 + egress)
    assert (found == []) if needle is None else any(needle in e for e in found), found


def ap(body: str) -> str:
    return "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p}\nspec:\n" + body


@pytest.mark.parametrize(("body", "needle"), [
    ("  action: CUSTOM\n  rules: [{to: [{operation: {paths: [/a]}}]}]\n", "`provider.name` must not be empty"),
    ("  action: DENY\n  provider: {name: ext}\n  rules: [{}]\n", "`provider` must not be with non CUSTOM action"),
    ("  action: ALLOW\n  rules: [{from: [{source: {ipBlocks: [1.2.3.400]}}]}]\n", "bad IP address (1.2.3.400)"),
    ("  rules: [{to: [{operation: {ports: ['99999']}}]}]\n", "bad port (99999)"),
    ("  rules: [{when: [{key: request.bogus, values: [a]}]}]\n", "unknown attribute"),
    ("  rules: [{when: [{key: 'request.headers[x-a]'}]}]\n", "at least one of `values` or `notValues`"),
    ("  rules: [{from: [{source: {principals: []}}]}]\n", "`from.source` must not be empty"),
    ("  action: BLOCK\n", 'Unsupported value: "BLOCK"'),
])
def test_authorization_policy_rules(body, needle):
    found = errs(ap(body))
    assert any(needle in e for e in found), found


def test_authorization_policy_valid_forms():
    assert errs(ap("  action: CUSTOM\n  provider: {name: ext-authz}\n  rules: [{to: [{operation: {paths: [/a]}}]}]\n"
                   )) == []
    assert errs(ap("  {}\n")) == []  # allow-nothing policy
    assert errs(ap("  action: DENY\n  rules: [{from: [{source: {notNamespaces: [foo]}}]}]\n")) == []


@pytest.mark.parametrize(("rule", "needle"), [
    ("{issuer: a, jwksUri: 'ftp://x'}", "url must have scheme"),
    ("{issuer: a, jwksUri: 'https://x', jwks: '{}'}", "only one of jwks or jwksUri"),
    ("{issuer: a, jwks: 'not json'}", "jwks parse error"),
    ("{issuer: a, timeout: 0.5ms}", "greater than 1ms"),
])
def test_request_authentication_jwt_rules(rule, needle):
    text = ("apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: j}\nspec:\n"
            f"  jwtRules:\n  - {rule}\n")
    found = errs(text)
    assert any(needle in e for e in found), found


def lw(spec: str) -> str:
    return ("apiVersion: local.sailmesh.io/v1alpha1\nkind: LocalWorkload\nmetadata:\n  name: reviews-v2\n"
            f"  labels: {{app: reviews, version: v2}}\nspec:\n{spec}")


def test_local_workload_valid():
    text = lw("  command: [python, -m, sailmesh.samples.bookinfo.reviews]\n  env: {STARS: black}\n"
              "  serviceAccount: bookinfo-reviews\n  ports:\n  - {name: http, containerPort: 9080, protocol: HTTP}\n"
              "  replicas: 1\n  sidecar: true\n")
    assert errs(text) == []


@pytest.mark.parametrize(("spec", "needle"), [
    ("  command: []\n", "non-empty list of non-empty strings"),
    ("  command: python app.py\n", "non-empty list"),
    ("  command: [python, 3]\n", "non-empty list"),
    ("  ports: [{containerPort: 80}]\n", "spec.command: Required value"),
    ("  command: [a]\n  replicas: -1\n", "replicas must be an integer >= 0"),
    ("  command: [a]\n  ports: [{containerPort: 0}]\n", "between 1 and 65535"),
    ("  command: [a]\n  ports: [{port: 80}]\n", 'unknown field "spec.ports[0].port"'),
    ("  command: [a]\n  replica: 2\n", 'unknown field "spec.replica"'),
])
def test_local_workload_rules(spec, needle):
    found = errs(lw(spec))
    assert any(needle in e for e in found), found


def test_service_rules():
    base = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  selector: {app: a}\n  ports:\n"
    assert errs(base + "  - {name: http, port: 80, targetPort: 8080}\n") == []
    assert any("between 1 and 65535" in e for e in errs(base + "  - {name: http, port: 70000}\n"))
    assert any("port name is required" in e for e in errs(base + "  - {port: 80}\n  - {port: 81}\n"))


def test_metadata_name_and_namespace():
    text = vs(GOOD_ROUTE).replace("name: reviews\n", "name: Reviews_1\n  namespace: Bad\n", 1)
    found = errs(text)
    assert any("metadata.name" in e for e in found) and any("metadata.namespace" in e for e in found)


def test_legacy_websocket_upgrade_is_a_warning_only():
    text = vs(GOOD_ROUTE + "    websocketUpgrade: true\n")
    found = issues(text)
    assert not errors_only(found) and any("websocketUpgrade" in i.message for i in found)


def test_older_api_versions_validate_with_their_own_schema():
    text = vs(GOOD_ROUTE).replace("networking.istio.io/v1", "networking.istio.io/v1alpha3")
    r = parse_text(text, "x.yaml")
    assert is_valid(r.resources[0])


def test_regexes_are_checked_with_re2():
    """google-re2 (a declared dependency) is the engine, as in Envoy: Python-only syntax is refused."""
    from sailmesh.api.rules import common

    assert common._re2 is not None
    assert common.regex_error(r"^/api/v[0-9]+/.*$") is None
    assert "invalid" in (common.regex_error(r"(?P<x>a)(?P=x)") or "")


@pytest.mark.parametrize(("patch", "needle"), [
    ("  - applyTo: HTTP_FILTER\n    patch: {operation: INSERT_BEFORE}\n", "missing patch value"),
    ("  - applyTo: HTTP_FILTER\n", "missing patch"),
    ("  - patch: {operation: MERGE, value: {}}\n", "missing applyTo"),
    ("  - applyTo: CLUSTER\n    match: {listener: {portNumber: 80}}\n    patch: {operation: MERGE, value: {a: 1}}\n",
     "cannot have non cluster match"),
    ("  - applyTo: HTTP_FILTER\n    match: {routeConfiguration: {vhost: {name: a}}}\n"
     "    patch: {operation: REMOVE}\n", "non listener match"),
])
def test_envoy_filter_rules(patch, needle):
    """Istio's validateEnvoyFilter semantics."""
    text = ("apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: f}\nspec:\n"
            "  configPatches:\n" + patch)
    found = errs(text)
    assert any(needle in e for e in found), found


DEPLOY = """apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, version: v1}}
    spec:
      containers:
      - {name: web, image: nginx, ports: [{containerPort: 80}]}
"""


@pytest.mark.parametrize(("old", "new", "needle"), [
    ("app: web, version", "app: other, version", "`selector` does not match template `labels`"),
    ("replicas: 2", "replicas: -2", "replicas must be an integer >= 0"),
    ("image: nginx, ", "", "image: Required value"),
    ("containerPort: 80", "containerPort: 0", "between 1 and 65535"),
    ("selector: {matchLabels: {app: web}}", "selector: {}", "spec.selector: Required value"),
])
def test_deployment_rules(old, new, needle):
    """Kubernetes apps/v1 Deployment basics (selector must match the template labels, containers need images)."""
    assert errs(DEPLOY) == []
    found = errs(DEPLOY.replace(old, new))
    assert any(needle in e for e in found), found


def test_config_map_and_secret_values():
    assert any("quote numbers" in e for e in errs("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
                                                  "data: {port: 8080}\n"))
    assert errs("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {k: aGVsbG8=}\n") == []
    assert any("base64" in e for e in errs("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {k: hello!}\n"))


def test_retry_policy_with_zero_attempts_is_an_error():
    """Istio's agent.ValidateHTTPRetry: perTryTimeout/retryOn with attempts 0 is an error (AppendErrors)."""
    found = errors_only(issues(vs(GOOD_ROUTE + "    retries: {attempts: 0, perTryTimeout: 2s}\n")))
    assert any("attempts are set to 0" in i.message for i in found)
