"""Istio's Go validators, rule by rule: each case names the function in istio/istio pkg/config/validation
(validation.go, virtualservice.go, agent/validation.go, envoyfilter/envoyfilter.go) or pkg/config/security it
follows, at the commit the CRDs in ../shared/conformance/crds come from (86c9f01f). `None` = Istio accepts it;
`"warn: ..."` = accepted with that warning; any other string = rejected with a message containing it."""

from __future__ import annotations

import pytest

from sailmesh.api.parse import parse_text
from sailmesh.api.validate import validate

GROUP = {"VirtualService": "networking.istio.io/v1", "DestinationRule": "networking.istio.io/v1",
         "Gateway": "networking.istio.io/v1", "ServiceEntry": "networking.istio.io/v1",
         "Sidecar": "networking.istio.io/v1", "WorkloadEntry": "networking.istio.io/v1",
         "WorkloadGroup": "networking.istio.io/v1", "EnvoyFilter": "networking.istio.io/v1alpha3",
         "ProxyConfig": "networking.istio.io/v1beta1", "AuthorizationPolicy": "security.istio.io/v1",
         "RequestAuthentication": "security.istio.io/v1", "PeerAuthentication": "security.istio.io/v1",
         "Telemetry": "telemetry.istio.io/v1", "WasmPlugin": "extensions.istio.io/v1alpha1"}


def check(kind: str, spec: str, expected: str | None, name: str = "r", labels: str = "") -> None:
    text = f"apiVersion: {GROUP[kind]}\nkind: {kind}\nmetadata:\n  name: {name}\n  namespace: ns\n{labels}spec:\n"
    text += "".join(f"  {line}\n" for line in spec.strip("\n").split("\n"))
    r = parse_text(text, "t.yaml")
    assert not r.errors and len(r.resources) == 1, r.errors
    found = validate(r.resources[0])
    errors = [str(i) for i in found if i.severity == "error"]
    warnings = [str(i) for i in found if i.severity == "warning"]
    if expected is None:
        assert errors == [], errors
    elif expected.startswith("warn: "):
        assert errors == [], errors
        assert any(expected[6:] in w for w in warnings), warnings
    else:
        assert any(expected in e for e in errors), (errors, warnings)
        # every error names file, line, resource and field
        assert all(e.startswith("t.yaml:") and f"{kind} ns/{name}: spec" in e for e in errors), errors


def vs_http(route: str, hosts: str = "[reviews]", extra: str = "") -> str:
    body = "\n".join("  " + x for x in route.strip("\n").split("\n"))
    return f"hosts: {hosts}\n{extra}http:\n{body}"


R = "- route:\n  - destination: {host: reviews}\n"

VIRTUAL_SERVICE = [
    # validateWeight: >= 0 only; the "<= 100, sum to 100" rule was removed in Istio 1.15 (a sum != 100 is a
    # sailmesh-only warning)
    (vs_http("- route:\n  - destination: {host: a}\n    weight: 250\n"), "warn: sum to 250"),
    (vs_http("- route:\n  - destination: {host: a}\n    weight: 250\n  - destination: {host: b}\n    weight: 50"),
     "warn: sum to 300"),
    (vs_http("- route:\n  - destination: {host: a}\n    weight: -1\n"), "weight -1 < 0"),
    # validateHTTPRouteDestinations: several destinations with total weight 0
    (vs_http("- route:\n  - destination: {host: a}\n    weight: 0\n  - destination: {host: b}\n    weight: 0"),
     "total destination weight = 0"),
    # validateHTTPRouteMatchRequest / ValidateHTTPHeaderNameOrJwtClaimRoute: any RFC 7230 token, upper case too
    # (the docs say "must be lowercase"; the code accepts: Istio's code is followed)
    (vs_http("- match:\n  - headers: {X-User: {exact: a}}\n  route:\n  - destination: {host: a}"), None),
    (vs_http("- match:\n  - headers: {':authority': {exact: a}}\n  route:\n  - destination: {host: a}"), None),
    (vs_http("- match:\n  - headers: {'x user': {exact: a}}\n  route:\n  - destination: {host: a}"),
     "is not a valid header name"),
    (vs_http("- match:\n  - headers: {x-a: {prefix: ''}}\n  route:\n  - destination: {host: a}"),
     "prefix string match should not be empty"),
    (vs_http("- match:\n  - uri: {prefix: ''}\n  route:\n  - destination: {host: a}"), None),
    (vs_http("- match:\n  - withoutHeaders: {x-a: {regex: '*'}}\n  route:\n  - destination: {host: a}"), None),
    (vs_http("- match:\n  - sourceNamespace: Bad_ns\n  route:\n  - destination: {host: a}"),
     "sourceNamespace match Bad_ns is invalid"),
    (vs_http("- match:\n  - sourceLabels: {'a b': c}\n  route:\n  - destination: {host: a}"), "invalid tag key"),
    # JWT claim routing only for gateways (ValidateVirtualService)
    (vs_http("- match:\n  - headers: {'@request.auth.claims.group': {exact: a}}\n  route:\n  - destination: {host: a}"),
     "JWT claim based routing"),
    (vs_http("- match:\n  - headers: {'@request.auth.claims.group': {exact: a}}\n  route:\n  - destination: {host: a}",
             extra="gateways: [ns/gw]\n"), None),
    # validateSubsetName: labels.IsDNS1123Label accepts upper case
    (vs_http("- route:\n  - destination: {host: a, subset: V1}\n"), None),
    (vs_http("- route:\n  - destination: {host: a, subset: v_1}\n"), "subset name is invalid: v_1"),
    # validateHTTPRedirect: any 3xx, one of uri/prefixRewrite, something to redirect to, scheme http(s)
    (vs_http("- redirect: {uri: /x, redirectCode: 305}\n"), "warn: Envoy redirects only with 301, 302, 303"),
    (vs_http("- redirect: {uri: /x, redirectCode: 308}\n"), None),
    (vs_http("- redirect: {uri: /x, redirectCode: 399}\n"), None),
    (vs_http("- redirect: {uri: /x, redirectCode: 400}\n"), "400 is not a valid redirect code, must be 3xx"),
    (vs_http("- redirect: {uri: /x, prefixRewrite: /y}\n"), "only specify one of uri or prefix_rewrite"),
    (vs_http("- redirect: {redirectCode: 301}\n"), "redirect must specify URI, authority, scheme, or port"),
    (vs_http("- redirect: {scheme: ftp}\n"), 'invalid redirect scheme, must be "http" or "https"'),
    (vs_http("- match:\n  - uri: {exact: /a}\n  redirect: {prefixRewrite: /b}\n"),
     "redirect prefix_rewrite requires all URI matches to use prefix match type"),
    # validateHTTPRouteConflict
    (vs_http("- redirect: {uri: /x}\n  fault: {abort: {httpStatus: 500}}\n"), "both fault and redirect"),
    (vs_http("- directResponse: {status: 503}\n  rewrite: {uri: /x}\n"), "both rewrite and direct_response"),
    (vs_http("- delegate: {name: d}\n  route:\n  - destination: {host: a}\n"), "must not specify route"),
    ("http:\n- delegate: {name: d}\n", "delegate HTTP route cannot contain delegate"),
    ("tcp:\n- route:\n  - destination: {host: a}\n", "delegate virtual service must have no tcp route"),
    (vs_http(R + "  mirror: {host: m}\n  mirrors:\n  - destination: {host: n}\n"), "both mirror and mirrors"),
    # validateHTTPDirectResponse: status 200..600 (the message says 200-599; the code allows 600)
    (vs_http("- directResponse: {status: 600}\n"), None),
    (vs_http("- directResponse: {status: 199}\n"), "HTTP status 199 is not in range 200-599"),
    # agent.ValidateDuration: >= 1ms and ms precision
    (vs_http(R + "  timeout: 1.5ms\n"), "only durations to ms precision are supported"),
    (vs_http(R + "  timeout: 1500us\n"), "only durations to ms precision are supported"),
    (vs_http(R + "  timeout: 2ms\n"), None),
    (vs_http(R + "  timeout: 0.5s\n"), None),
    # agent.ValidateHTTPRetry
    (vs_http(R + "  retries: {attempts: 0, retryOn: 5xx}\n"), "attempts are set to 0 (disabled)"),
    (vs_http(R + "  retries: {attempts: 2, retryOn: '5xx,reset,503'}\n"), None),
    (vs_http(R + "  retries: {attempts: 2, retryOn: '5xx, reset'}\n"), '" reset" is not a valid retryOn policy'),
    (vs_http(R + "  retries: {attempts: 2, retryOn: '599'}\n"), '"599" is not a valid retryOn policy'),
    (vs_http(R + "  retries: {attempts: 2, perTryTimeout: 1.5ms}\n"), "ms precision"),
    # validateHTTPFaultInjection (+ Abort, Delay), validatePercentage
    (vs_http(R + "  fault: {}\n"), "must have an abort and/or a delay"),
    (vs_http(R + "  fault: {abort: {grpcStatus: NOT_FOUND}}\n"), None),
    (vs_http(R + "  fault: {abort: {grpcStatus: BOGUS}}\n"), 'gRPC status \'BOGUS\' is not supported'),
    (vs_http(R + "  fault: {abort: {percentage: {value: 10}}}\n"), "warn: abort configured, but error type not set"),
    (vs_http(R + "  fault: {abort: {httpStatus: 500, percentage: {value: 0.00001}}}\n"), "is neither 0.0, nor"),
    (vs_http(R + "  fault: {delay: {exponentialDelay: 1s}}\n"), "exponentialDelay not supported yet"),
    # validateCORSPolicy / validateAllowOrigins / validateCORSHTTPMethod / ValidateCORSHTTPHeaderName
    (vs_http(R + "  corsPolicy: {allowOrigins: [{exact: ''}]}\n"), "is not a valid match type for CORS allow origins"),
    (vs_http(R + "  corsPolicy: {allowMethods: [GET, get]}\n"), '"get" is not a supported HTTP method'),
    (vs_http(R + "  corsPolicy: {allowHeaders: ['*', X-Custom], exposeHeaders: [x-b]}\n"), None),
    (vs_http(R + "  corsPolicy: {allowHeaders: ['bad header']}\n"), "is not a valid header name"),
    (vs_http(R + "  corsPolicy: {maxAge: 1500ms}\n"), "max_age duration is accurate only to seconds precision"),
    # header operations: ValidateHTTPHeaderWithAuthorityOperationName / OperationName / Value
    (vs_http(R + "  headers: {request: {set: {':path': /x}}}\n"), 'header cannot have ":" prefix'),
    (vs_http(R + "  headers: {request: {set: {host: h}}}\n"), None),
    (vs_http(R + "  headers: {request: {remove: [host]}}\n"), "cannot set Host header"),
    (vs_http(R + "  headers: {response: {add: {':status': '200'}}}\n"), 'header cannot have ":" prefix'),
    (vs_http(R + "  headers: {request: {set: {x-a: '%HOSTNAME%'}}}\n"), None),
    (vs_http(R + "  headers: {request: {set: {x-a: '100%'}}}\n"), "Un-escaped %"),
    (vs_http(R + "  headers: {request: {set: {x-a: '%START_TIME'}}}\n"), "Un-terminated variable expression"),
    # validateAuthorityRewrite
    (vs_http(R + "  rewrite: {authority: a}\n  headers: {request: {set: {':authority': b}}}\n"),
     "authority header cannot be set multiple times"),
    # validateHTTPRewrite / validateURIRegexRewrite
    (vs_http(R + "  rewrite: {}\n"), "rewrite must specify at least one of URI, UriRegexRewrite, or authority"),
    (vs_http(R + "  rewrite: {uriRegexRewrite: {match: a}}\n"), "requires both Rewrite and Match"),
    # mirror percentages (validateHTTPRoute, validateHTTPMirrors)
    (vs_http(R + "  mirrors:\n  - destination: {host: m}\n    percentage: {value: 150}\n"),
     "mirror percentage must have a max value of 100"),
    # hosts: ValidateWildcardDomain, `*` refused for the mesh, duplicates (host.Name.Matches)
    (vs_http(R, hosts="['*']"), "wildcard host * is not allowed for virtual services bound to the mesh gateway"),
    (vs_http(R, hosts="['*']", extra="gateways: [ns/gw]\n"), None),
    (vs_http(R, hosts="['*.foo.com', 'a.foo.com']"), "duplicate hosts in virtual service"),
    (vs_http(R, hosts="[my_svc.example.com]"), "invalid (label 'my_svc' invalid)"),
    (vs_http(R, hosts="[10.0.0.1]"), None),
    # validateGatewayNames: upper case is a valid DNS label for Istio; legacy FQDN names are warned
    (vs_http(R, extra="gateways: [NS/GW]\n"), None),
    (vs_http(R, extra="gateways: [gw.ns.svc.cluster.local]\n"), "warn: legacy gatewayName format"),
    # validateTLSRoute / validateTLSMatch / validateSniHost; validateTCPMatch
    ("hosts: ['*.example.com']\ntls:\n- match:\n  - sniHosts: [a.example.com]\n  route:\n  - destination: {host: a}",
     None),
    ("hosts: [a.example.com]\ntls:\n- match:\n  - sniHosts: [b.example.com]\n  route:\n  - destination: {host: a}",
     "is not a compatible subset of any of the virtual service hosts"),
    ("hosts: [a.example.com]\ntls:\n- route:\n  - destination: {host: a}", "TLS route must have at least one match"),
    ("hosts: [a]\ntcp:\n- match:\n  - destinationSubnets: [10.0.0.0/33]\n  route:\n  - destination: {host: a}",
     "is not a valid CIDR block"),
    ("hosts: [a]\ntcp:\n- match:\n  - destinationSubnets: [10.0.0.0/8, 10.1.1.1]\n  route:\n  - destination: {host: a}",
     None),
    # validateExportTo
    (vs_http(R, extra="exportTo: [ns, '.']\n"), "duplicate entries in exportTo: . and current namespace ns"),
    (vs_http(R, extra="exportTo: ['.', ns]\n"), "duplicate entries in exportTo for entry ns"),
    (vs_http(R, extra="exportTo: ['~']\n"), "exportTo ~ (none) is not allowed for Istio configuration objects"),
]


@pytest.mark.parametrize(("spec", "expected"), VIRTUAL_SERVICE)
def test_virtual_service(spec, expected):
    check("VirtualService", spec, expected)


def dr_tp(body: str) -> str:
    return "host: reviews\ntrafficPolicy:\n" + "\n".join("  " + x for x in body.strip("\n").split("\n"))


DESTINATION_RULE = [
    # validateSubsetName via labels.IsDNS1123Label (upper case allowed), duplicate subsets
    ("host: r\nsubsets:\n- {name: V1, labels: {version: v1}}", None),
    ("host: r\nsubsets:\n- {name: a, labels: {version: v1}}\n- {name: a, labels: {version: v2}}",
     "duplicate subset names: a"),
    ("host: r\nsubsets:\n- {name: a, labels: {version: 'v 1'}}", "invalid tag value"),
    # ValidateWildcardDomain on the host
    ("host: '*'", None),
    ("host: 'a.*.com'", "domain name '*.com' invalid (label '*' invalid)"),
    # validateTrafficPolicy
    ("host: r\ntrafficPolicy: {}", "traffic policy must have at least one field"),
    (dr_tp("tunnel: {targetHost: h.example.com, targetPort: 8080}\nproxyProtocol: {version: V1}"),
     "tunnel and proxyProtocol must not be set together"),
    # validateTunnelSettings
    (dr_tp("tunnel: {protocol: GET, targetHost: h.example.com, targetPort: 8080}"),
     'tunnel protocol must be "CONNECT" or "POST"'),
    (dr_tp("tunnel: {protocol: CONNECT, targetHost: 'bad host', targetPort: 8080}"),
     "tunnel target host must be valid FQDN or IP address"),
    (dr_tp("tunnel: {protocol: POST, targetHost: 10.0.0.1, targetPort: 0}"), "tunnel target port is invalid"),
    # validateOutlierDetection
    (dr_tp("outlierDetection: {consecutiveLocalOriginFailures: 5}"),
     "split external local origin errors is set to false"),
    (dr_tp("outlierDetection: {consecutiveLocalOriginFailures: 5, splitExternalLocalOriginErrors: true}"), None),
    (dr_tp("outlierDetection: {interval: 1.5ms}"), "ms precision"),
    # validateConnectionPool
    (dr_tp("connectionPool: {}"), "connection pool must have at least one field"),
    (dr_tp("connectionPool: {http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}"),
     "use client protocol must not be true when H2UpgradePolicy is UPGRADE"),
    (dr_tp("connectionPool: {http: {http2KeepAlive: {interval: 10s}}}"), "http2 keepalive timeout is required"),
    (dr_tp("connectionPool: {tcp: {idleTimeout: 0s}}"), None),
    (dr_tp("connectionPool: {tcp: {maxConnectionDuration: 0.5ms}}"), "duration must be greater than 1ms"),
    (dr_tp("connectionPool: {tcp: {tcpKeepalive: {time: 7200s, interval: 75s}}}"), None),
    # validateLoadBalancer: consistent hash
    (dr_tp("loadBalancer: {consistentHash: {httpCookie: {ttl: 0s}}}"), "name required for HttpCookie"),
    (dr_tp("loadBalancer: {consistentHash: {httpCookie: {name: c, attributes: [{name: a}, {name: a}]}}}"),
     "duplicate cookie attribute name: a"),
    (dr_tp("loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 65537}}}"), None),
    (dr_tp("loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 1000}}}"),
     "tableSize must be a prime number for maglev"),
    (dr_tp("loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 5000011}}}"),
     "tableSize must be less than 5000011 for maglev"),
    (dr_tp("loadBalancer: {consistentHash: {useSourceIp: true, minimumRingSize: 1024}}"),
     "warn: MinimumRingSize is deprecated"),
    # agent.ValidateLocalityLbSetting
    (dr_tp("loadBalancer:\n  localityLbSetting:\n    distribute:\n    - from: us-east/*\n      to: {us-east/*: 80, "
           "us-west/*: 20}\noutlierDetection: {consecutive5xxErrors: 5}"), None),
    (dr_tp("loadBalancer:\n  localityLbSetting:\n    distribute:\n    - from: us-east/*\n      to: {us-east/*: 80, "
           "us-west/*: 30}"), "total locality weight 110 != 100"),
    (dr_tp("loadBalancer:\n  localityLbSetting:\n    distribute:\n    - from: us-east/*\n      to: {us-east/*: 0, "
           "us-west/*: 100}"), "locality weight must be in range [1, 100]"),
    (dr_tp("loadBalancer:\n  localityLbSetting:\n    distribute:\n    - from: 'us-*/a'\n      to: {us-east: 100}"),
     "wildcard '*' number can not exceed 1 and must be in the end"),
    (dr_tp("loadBalancer:\n  localityLbSetting:\n    distribute:\n    - from: us-east\n      to: {us-east: 100}\n"
           "    - from: us-east/a\n      to: {us-east: 100}"), "overlap with previous specified ones"),
    (dr_tp("loadBalancer:\n  localityLbSetting:\n    distribute:\n    - from: us-east\n      to: {us-east: 100}\n"
           "    failover:\n    - {from: us-east, to: us-west}"), "can not simultaneously specify 'distribute' and "),
    (dr_tp("loadBalancer:\n  localityLbSetting:\n    failover:\n    - {from: us-east, to: us-east}\n"
           "outlierDetection: {consecutive5xxErrors: 5}"), "must specify different regions"),
    (dr_tp("loadBalancer:\n  localityLbSetting:\n    failover:\n    - {from: us-east/a, to: us-west}\n"
           "outlierDetection: {consecutive5xxErrors: 5}"), "locality lb failover only specify region"),
    (dr_tp("loadBalancer:\n  localityLbSetting:\n    failover:\n    - {from: us-east, to: us-west}"),
     "warn: outlier detection policy must be provided for failover"),
    (dr_tp("loadBalancer:\n  localityLbSetting:\n    failover:\n    - {from: us-east, to: us-west}\n"
           "    failoverPriority: [topology.kubernetes.io/zone]\noutlierDetection: {consecutive5xxErrors: 5}"),
     "can not simultaneously set 'failover' and topology label"),
    (dr_tp("loadBalancer:\n  localityLbSetting:\n    failoverPriority: [topology.kubernetes.io/zone, my-label]\n"
           "outlierDetection: {consecutive5xxErrors: 5}"), None),
    # warmup
    (dr_tp("loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 10s, aggression: 0}}"),
     "aggression should be greater than 0"),
    # agent.ValidateTLS (client side)
    (dr_tp("tls: {mode: MUTUAL, credentialName: c}"), None),
    (dr_tp("tls: {mode: SIMPLE, credentialName: c, caCertificates: /ca.pem}"),
     "cannot specify client certificates or CA certificate or CA CRL If credentialName is set"),
    (dr_tp("tls: {mode: SIMPLE, insecureSkipVerify: true, caCertificates: /ca.pem}"),
     "cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true"),
    (dr_tp("tls: {mode: MUTUAL, privateKey: /k.pem}"), "client certificate required for mutual tls"),
    # validatePortTrafficPolicies
    (dr_tp("portLevelSettings:\n- port: {number: 80}"), "port traffic policy must have at least one field"),
    (dr_tp("portLevelSettings:\n- tls: {mode: SIMPLE}"), "portTrafficPolicy must have valid port"),
    # validateExportTo with a workload selector
    ("host: r\nworkloadSelector: {matchLabels: {app: a}}\nexportTo: ['*']",
     "destination rule with workload selector cannot have exportTo beyond current namespace"),
    ("host: r\nworkloadSelector: {matchLabels: {app: a}}\nexportTo: ['.']", None),
]


@pytest.mark.parametrize(("spec", "expected"), DESTINATION_RULE)
def test_destination_rule(spec, expected):
    check("DestinationRule", spec, expected)


def gw_server(server: str) -> str:
    return "selector: {istio: ingressgateway}\nservers:\n" + "\n".join("  " + x for x in server.strip("\n").split("\n"))


HTTPS = "- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: ['*.example.com']\n"
GATEWAY = [
    # validateTLSOptions
    (gw_server(HTTPS + "  tls: {mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}"), None),
    (gw_server(HTTPS + "  tls: {mode: SIMPLE, serverCertificate: /c.pem}"), "SIMPLE TLS requires a private key"),
    (gw_server(HTTPS + "  tls: {mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem}"),
     "MUTUAL TLS requires a client CA bundle"),
    (gw_server(HTTPS + "  tls: {mode: MUTUAL, credentialName: c}"), None),
    (gw_server(HTTPS + "  tls: {mode: SIMPLE, credentialName: c, serverCertificate: /c.pem, privateKey: /k.pem}"),
     "only one of credential_name, credential_names, server_certificate/private_key, tls_certificates"),
    (gw_server(HTTPS + "  tls: {mode: ISTIO_MUTUAL, credentialName: c}"),
     "ISTIO_MUTUAL TLS cannot have associated credentialName"),
    (gw_server(HTTPS + "  tls: {mode: PASSTHROUGH, credentialName: c}"),
     "warn: PASSTHROUGH mode does not use certificates"),
    # with credentialName, validateTLSOptions returns before its CRL checks: accepted
    (gw_server(HTTPS + "  tls: {mode: SIMPLE, credentialName: c, caCrl: /crl.pem}"), None),
    (gw_server(HTTPS + "  tls: {mode: SIMPLE, serverCertificate: /c, privateKey: /k, caCrl: /crl.pem}"),
     "CRL is not supported with SIMPLE TLS"),
    (gw_server(HTTPS + "  tls: {mode: SIMPLE, credentialName: c, minProtocolVersion: TLSV1_1}"),
     "warn: TLS version below TLSV1_2 require setting compatible ciphers"),
    (gw_server(HTTPS + "  tls: {mode: SIMPLE, credentialName: c, cipherSuites: [NOT-A-CIPHER]}"),
     "warn: ignoring invalid cipher suites"),
    # sailmesh, not Istio: an ECDH curve this Envoy does not know would make it reject the whole listener
    (gw_server(HTTPS + "  tls: {mode: SIMPLE, credentialName: c, ecdhCurves: [P-384, X25519MLKEM768]}"), None),
    (gw_server(HTTPS + "  tls: {mode: SIMPLE, credentialName: c, ecdhCurves: [P-224]}"), "unknown ECDH curve(s) P-224"),
    # validateServer: TLS settings against the port protocol
    (gw_server("- port: {number: 80, name: http, protocol: HTTP}\n  hosts: ['*']\n  tls: {httpsRedirect: true}"), None),
    (gw_server("- port: {number: 80, name: http, protocol: HTTP}\n  hosts: ['*']\n  tls: {mode: SIMPLE, "
               "credentialName: c}"), "server cannot have TLS settings for plain text HTTP ports"),
    (gw_server("- port: {number: 9000, name: tcp, protocol: TCP}\n  hosts: ['*']\n  tls: {mode: PASSTHROUGH}"),
     "server cannot have TLS settings for non HTTPS/TLS ports"),
    (gw_server("- port: {number: 443, name: tls, protocol: TLS}\n  hosts: ['*']"),
     "server must have TLS settings for HTTPS/TLS protocols"),
    (gw_server("- port: {number: 443, name: tls, protocol: TLS}\n  hosts: ['*']\n  tls: {mode: AUTO_PASSTHROUGH}"),
     None),
    # ValidateGateway: httpsRedirect on a non-HTTP server is a warning
    (gw_server(HTTPS + "  tls: {mode: SIMPLE, credentialName: c, httpsRedirect: true}"),
     "warn: tls.httpsRedirect should only be used with http servers"),
    # validateServerPort / validateServerBind
    (gw_server("- port: {number: 80, name: x, protocol: THRIFT}\n  hosts: ['*']"), 'invalid protocol "THRIFT"'),
    (gw_server("- port: {number: 80, name: http, protocol: HTTP}\n  hosts: ['*']\n  bind: 10.0.0.300"),
     "is not a valid IP"),
    (gw_server("- port: {number: 0, name: uds, protocol: HTTP}\n  hosts: ['*']\n  bind: unix:///var/run/gw.sock"),
     None),
    (gw_server("- port: {number: 80, name: uds, protocol: HTTP}\n  hosts: ['*']\n  bind: unix:///var/run/gw.sock"),
     "port number must be 0 for unix domain socket"),
    # ValidateNamespaceSlashWildcardHostname (gateway): IPs, `ns/host`, no short names, no partial wildcards
    (gw_server("- port: {number: 80, name: http, protocol: HTTP}\n  hosts: ['10.0.0.1', 'NS/a.example.com']"), None),
    (gw_server("- port: {number: 80, name: http, protocol: HTTP}\n  hosts: [reviews]"),
     "short names (non FQDN) are not allowed"),
    (gw_server("- port: {number: 80, name: http, protocol: HTTP}\n  hosts: ['*a.example.com']"),
     "partial wildcard '*a.example.com' not allowed"),
    ("selector: {istio: ingressgateway}\nservers: []", "gateway must have at least one server"),
]


@pytest.mark.parametrize(("spec", "expected"), GATEWAY)
def test_gateway(spec, expected):
    check("Gateway", spec, expected)


def test_gateway_name_is_a_dns_label():
    """ValidateGateway: the Gateway's own name must be a DNS label (no dots)."""
    spec = gw_server("- port: {number: 80, name: http, protocol: HTTP}\n  hosts: ['*']")
    text = ("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: my.gw, namespace: ns}\nspec:\n"
            + "".join(f"  {line}\n" for line in spec.split("\n")))
    found = [str(i) for i in validate(parse_text(text, "t.yaml").resources[0]) if i.severity == "error"]
    assert any('metadata.name: invalid gateway name: "my.gw"' in e for e in found), found


SERVICE_ENTRY = [
    ("hosts: [a.example.com]\nports: [{number: 80, name: http, protocol: HTTP}]\nresolution: DNS", None),
    ("hosts: ['*']\nports: [{number: 80, name: http, protocol: HTTP}]", "invalid host *"),
    ("hosts: ['*a.example.com']\nports: [{number: 80, name: http, protocol: HTTP}]", "warn: partial wildcard"),
    ("hosts: ['*.example.com']\nports: [{number: 80, name: http, protocol: HTTP}]\nresolution: DNS",
     "hosts must be FQDN or contain only prefix wildcards if no endpoints are provided"),
    ("hosts: [a.example.com]\naddresses: [10.0.0.0/8]\nports: [{number: 80, name: http, protocol: HTTP}]\n"
     "resolution: DNS", "CIDR addresses are allowed only for NONE/STATIC resolution types"),
    ("hosts: [a.example.com]\nports: [{number: 80, name: http, protocol: HTTP}, {number: 80, name: http2, "
     "protocol: HTTP}]\nresolution: DNS", "service entry port 80 already defined"),
    ("hosts: [a.example.com]\nports: [{number: 80, name: Http_1, protocol: HTTP}]\nresolution: DNS",
     "invalid port name: Http_1"),
    ("hosts: [a.example.com]\nports: [{number: 80, name: http, protocol: SPDY}]\nresolution: DNS",
     "unsupported protocol: SPDY"),
    ("hosts: [a.example.com]\nports: [{number: 5432, name: tcp, protocol: TCP}]",
     "warn: addresses are required for ports serving TCP"),
    ("hosts: [a.example.com]\nports: [{number: 80, name: http, protocol: HTTP}]\nendpoints: [{address: 1.1.1.1}]",
     "no endpoints should be provided for resolution type none"),
    ("hosts: [a.example.com]\nports: [{number: 80, name: http}]\nresolution: STATIC\n"
     "endpoints: [{address: a.example.com}]", 'endpoint address "a.example.com" is not a valid IP address'),
    ("hosts: [a.example.com]\nports: [{number: 80, name: http}]\nresolution: STATIC\n"
     "endpoints: [{address: 'unix:///var/run/a.sock'}]", None),
    ("hosts: [a.example.com]\nports: [{number: 80, name: http}]\nresolution: STATIC\n"
     "endpoints: [{address: 'unix:///var/run/a.sock', ports: {http: 80}}]", "must not include ports"),
    ("hosts: [a.example.com]\nports: [{number: 80, name: http}]\nresolution: DNS\n"
     "endpoints: [{address: b.example.com, ports: {web: 8080}}]", "endpoint port 8080 is not defined by the service"),
    ("hosts: [a.example.com, b.example.com]\nports: [{number: 9000, name: tcp, protocol: TCP}]\nresolution: DNS",
     "multiple hosts provided with non-HTTP, non-TLS ports"),
    ("hosts: [a.example.com, b.example.com]\nports: [{number: 9000, name: tcp, protocol: TCP}]", None),
    ("hosts: [a.example.com]\nports: [{number: 80, name: http, protocol: HTTP}]\nresolution: DNS\n"
     "workloadSelector: {labels: {'a*': b}}", "wildcard is not supported in selector"),
    ("hosts: [a.example.com]\nports: [{number: 80, name: http, protocol: HTTP}]\nresolution: DNS\nexportTo: ['~']",
     None),
    ("hosts: [a.example.com]\nports: [{number: 80, name: http, protocol: HTTP}]\nresolution: DNS\n"
     "exportTo: ['~', ns]", "cannot export service entry to no one (~) and someone"),
]


@pytest.mark.parametrize(("spec", "expected"), SERVICE_ENTRY)
def test_service_entry(spec, expected):
    check("ServiceEntry", spec, expected)


SIDECAR = [
    ("egress:\n- hosts: ['./*', 'istio-system/*']", None),
    ("egress:\n- hosts: ['~/*']", None),
    ("egress:\n- hosts: [reviews.default.svc.cluster.local]", "host must be of form namespace/dnsName"),
    ("egress:\n- hosts: ['ns/reviews']", "short names (non FQDN) are not allowed"),
    ("egress:\n- hosts: ['ns/*a.example.com']", "partial wildcard"),
    ("egress:\n- hosts: ['*/*', 'ns/a.example.com']", "warn: `*/*` host select all resources"),
    ("egress:\n- hosts: ['ns/a.example.com', 'ns/a.example.com']", "warn: duplicated egress host"),
    ("egress:\n- hosts: ['*/*']\n- port: {number: 80, name: http, protocol: HTTP}\n  hosts: ['*/*']",
     "the egress listener with empty port should be the last listener"),
    ("egress:\n- port: {number: 80, protocol: HTTP}\n  hosts: ['*/*']\n- port: {number: 80, protocol: HTTP}\n"
     "  hosts: ['*/*']", "ports on IP bound listeners must be unique"),
    ("egress:\n- port: {number: 0, protocol: HTTP}\n  bind: 10.0.0.1\n  hosts: ['*/*']",
     "ports with 0 value must have a unix domain socket bind address"),
    ("egress:\n- port: {number: 0, protocol: HTTP}\n  bind: unix:///var/run/a.sock\n  captureMode: IPTABLES\n"
     "  hosts: ['*/*']", "captureMode must be DEFAULT/NONE for unix domain socket listeners"),
    ("egress:\n- port: {number: 9080, protocol: HTTP}\n  bind: 127.0.0.2\n  captureMode: NONE\n  hosts: ['*/*']",
     None),
    ("egress:\n- hosts: ['*/*']\n  port: {number: 80, protocol: HTTP, targetPort: 8080}",
     "targetPort has no impact on Sidecars"),
    ("ingress:\n- port: {number: 9080, protocol: HTTP, name: http}\n  defaultEndpoint: 127.0.0.1:8080", None),
    ("ingress:\n- port: {number: 9080, protocol: HTTP, name: http}\n  defaultEndpoint: 10.1.1.1:8080",
     "defaultEndpoint must be of form 127.0.0.1:<port>"),
    ("ingress:\n- port: {number: 9080, protocol: HTTP, name: http}\n  defaultEndpoint: 'unix:///var/run/a.sock'", None),
    ("ingress:\n- defaultEndpoint: 127.0.0.1:8080", "port is required for ingress listeners"),
    ("ingress:\n- port: {number: 9443, protocol: HTTPS, name: https}\n  defaultEndpoint: 127.0.0.1:8080\n"
     "  tls: {mode: ISTIO_MUTUAL}", "cannot set mode to ISTIO_MUTUAL in sidecar ingress tls"),
    ("ingress:\n- port: {number: 9080, protocol: HTTP, name: http}\n  defaultEndpoint: 127.0.0.1:8080\n"
     "  tls: {mode: SIMPLE, serverCertificate: /c, privateKey: /k}",
     "server cannot have TLS settings for non HTTPS/TLS ports"),
    ("ingress:\n- port: {number: 9080, protocol: TCP, name: tcp}\n  connectionPool: {http: {maxRetries: 3}}",
     "warn: HTTP connection pool settings are configured for port 9080"),
    ("outboundTrafficPolicy: {mode: REGISTRY_ONLY, egressProxy: {host: egress.example.com, port: {number: 80}}}",
     "egress_proxy must be set only with ALLOW_ANY"),
    ("outboundTrafficPolicy: {mode: ALLOW_ANY, egressProxy: {host: egress.example.com}}",
     "egress_proxy port must be non-nil"),
    ("outboundTrafficPolicy: {mode: ALLOW_ANY, egressProxy: {host: egress.example.com, port: {number: 80}}}", None),
    ("inboundConnectionPool: {}", "connection pool must have at least one field"),
    ("workloadSelector: {labels: {}}\negress:\n- hosts: ['*/*']", "warn: workload selector specified without labels"),
]


@pytest.mark.parametrize(("spec", "expected"), SIDECAR)
def test_sidecar(spec, expected):
    check("Sidecar", spec, expected)


WORKLOADS = [
    ("WorkloadEntry", "address: 10.0.0.1\nports: {http: 8080}\nlabels: {app: a}", None),
    ("WorkloadEntry", "address: vm1.example.com", None),
    ("WorkloadEntry", "network: n1", "warn: address is unset with network"),
    ("WorkloadEntry", "labels: {app: a}", "address is required"),
    ("WorkloadEntry", "address: 'bad host'", "is not a valid FQDN or an IP address"),
    ("WorkloadEntry", "address: 'unix:///var/run/a.sock'\nports: {http: 80}", "must not include ports"),
    ("WorkloadEntry", "address: 10.0.0.1\nports: {Http_1: 80}", "invalid port name: Http_1"),
    ("WorkloadEntry", "address: 10.0.0.1\nlabels: {'a b': c}", "invalid tag key"),
    ("WorkloadGroup", "template: {ports: {http: 80}}\nprobe: {httpGet: {port: 8080, path: /ready}}", None),
    ("WorkloadGroup", "metadata: {labels: {app: a}}", "template is required"),
    ("WorkloadGroup", "template: {}\nprobe: {periodSeconds: 5}", "unknown health check method"),
    ("WorkloadGroup", "template: {}\nprobe: {httpGet: {port: 8080, httpHeaders: [{name: 'x_y', value: a}]}}",
     "header name x_y is not a valid header name"),
    ("WorkloadGroup", "template: {}\nprobe: {exec: {command: []}}", "exec.command is required"),
    ("WorkloadGroup", "template: {}\nmetadata: {labels: {'a b': c}}", "invalid labels"),
]


@pytest.mark.parametrize(("kind", "spec", "expected"), WORKLOADS)
def test_workload_entry_and_group(kind, spec, expected):
    """validateWorkloadEntry (FQDN addresses allowed), ValidateWorkloadGroup / validateReadinessProbe."""
    check(kind, spec, expected)


AUTHORIZATION_POLICY = [
    # CUSTOM constraints
    ("action: CUSTOM\nprovider: {name: ext}\nrules:\n- to: [{operation: {paths: [/a]}}]", None),
    ("action: CUSTOM\nprovider: {name: ext}", "CUSTOM action without `rules` is meaningless"),
    ("action: CUSTOM\nprovider: {name: ext}\nrules:\n- from: [{source: {principals: [a]}}]",
     "From.Principals is currently not supported with CUSTOM action"),
    ("action: CUSTOM\nprovider: {name: ext}\nrules:\n- when: [{key: 'request.auth.claims[iss]', values: [a]}]",
     "request.auth.claims[iss] is currently not supported with CUSTOM action"),
    ("action: CUSTOM\nprovider: {name: ext}\nrules:\n- from: [{source: {ipBlocks: [10.0.0.0/8]}}]", None),
    # DENY constraints
    ("action: DENY", "DENY action without `rules` is meaningless"),
    ("action: DENY\nrules: [{}]", None),
    ("action: DENY\nrules:\n- to: [{operation: {paths: [/admin]}}]", "warn: will deny all traffic to TCP ports"),
    ("action: DENY\nrules:\n- to: [{operation: {paths: [/admin], ports: ['8080']}}]", None),
    # source: serviceAccounts, trust domains, IPs, empty values
    ("rules:\n- from: [{source: {serviceAccounts: [ns/sa], namespaces: [ns]}}]",
     "cannot set serviceAccounts with namespaces or principals"),
    ("rules:\n- from: [{source: {serviceAccounts: ['ns/*']}}]", "wildcard not allowed, found in ServiceAccounts"),
    ("rules:\n- from: [{source: {serviceAccounts: [a/b/c]}}]", "expected format 'serviceAccount' or"),
    ("rules:\n- from: [{source: {trustDomains: ['*.local', 'td*']}}]", None),
    ("rules:\n- from: [{source: {trustDomains: ['a*b']}}]", "wildcard is only allowed at the start or end"),
    ("rules:\n- from: [{source: {trustDomains: [a/b]}}]", "trust domain must not contain '/'"),
    ("rules:\n- from: [{source: {remoteIpBlocks: [10.0.0.0/40]}}]", "bad CIDR range (10.0.0.0/40)"),
    ("rules:\n- from: [{source: {principals: ['']}}]", "empty value not allowed, found in Principals"),
    # operation: ports (0 allowed by ValidatePorts), path templates (CheckValidPathTemplate)
    ("rules:\n- to: [{operation: {ports: ['0']}}]", None),
    ("rules:\n- to: [{operation: {paths: ['/api/{*}/x/{**}']}}]", None),
    ("rules:\n- to: [{operation: {paths: ['/api/{**}/x/{*}']}}]", "{**} is not the last operator"),
    ("rules:\n- to: [{operation: {paths: ['/api/{id}']}}]", "Contains '{' or '}' beyond a supported path template"),
    ("rules:\n- to: [{operation: {paths: ['/a b/{*}']}}]", "with invalid string literal"),
    ("rules:\n- to: [{operation: {}}]", "`to.operation` must not be empty"),
    # conditions: security.ValidateAttribute
    ("rules:\n- when: [{key: source.serviceAccount, values: [ns/sa]}]", None),
    ("rules:\n- when: [{key: destination.port, values: ['80', '65536']}]", "bad port (65536)"),
    ("rules:\n- when: [{key: 'request.headers[]', values: [a]}]", "should have format a[b]"),
    ("rules:\n- when: [{key: destination.namespace, values: [a]}]", "is replaced by the metadata.namespace"),
    ("rules:\n- when: [{key: 'destination.labels[app]', values: [a]}]", "is replaced by the workload selector"),
    ("rules:\n- when: [{key: destination.user, values: [a]}]", "only supported in v1alpha1"),
    ("rules:\n- when: [{key: source.trustDomain, values: ['a*b']}]", "wildcard is only allowed at the start or end"),
    # selectors and targetRefs (validateOneOfSelectorType, validatePolicyTargetReference)
    ("selector: {matchLabels: {app: a}}\ntargetRefs: [{kind: Service, group: '', name: s}]",
     "only one of targetRefs or workloadSelector can be set"),
    ("targetRefs: [{kind: Service, group: '', name: s}]", None),
    ("targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: g}", None),
    ("targetRefs: [{kind: Deployment, group: apps, name: d}]", "targetRef must be to one of"),
    ("selector: {matchLabels: {}}", "warn: workload selector specified without labels"),
]


@pytest.mark.parametrize(("spec", "expected"), AUTHORIZATION_POLICY)
def test_authorization_policy(spec, expected):
    check("AuthorizationPolicy", spec, expected)


REQUEST_AUTHENTICATION = [
    # validateJwtRule: issuer OR jwksUri (a jwksUri without issuer is valid)
    ("jwtRules:\n- jwksUri: https://example.com/.well-known/jwks.json", None),
    ("jwtRules:\n- audiences: [a]", "issuer or jwksUri must be non-empty string"),
    ("jwtRules:\n- issuer: a\n  jwksUri: 'ftp://example.com/jwks'", "is not supported"),
    ("jwtRules:\n- issuer: a\n  jwks: '{\"keys\": []}'", None),
    ("jwtRules:\n- issuer: a\n  jwks: '[1]'", "jwks parse error"),
    ("jwtRules:\n- issuer: a\n  jwks: '{\"keys\": [{\"kty\": \"oct\", \"k\": \"c2VjcmV0\"}]}'",
     "warn: contains private key material"),
    ("jwtRules:\n- issuer: a\n  fromHeaders: [{name: ''}]", "location header name must be non-empty string"),
    ("jwtRules:\n- issuer: a\n  fromHeaders: [{name: Authorization, prefix: 'Bearer '}]", None),
    ("jwtRules:\n- issuer: a\n  fromCookies: ['']", "cookie name must be non-empty string"),
    ("jwtRules:\n- issuer: a\n  outputClaimToHeaders: [{header: 'x:bad', claim: sub}]",
     "header name x:bad is not a valid header name"),
    ("jwtRules:\n- issuer: a\n  timeout: 1.5ms", "ms precision"),
]


@pytest.mark.parametrize(("spec", "expected"), REQUEST_AUTHENTICATION)
def test_request_authentication(spec, expected):
    check("RequestAuthentication", spec, expected)


PEER_AUTHENTICATION = [
    ("selector: {matchLabels: {app: a}}\nportLevelMtls: {'8080': {mode: DISABLE}}", None),
    ("mtls: {mode: STRICT}\nportLevelMtls: {'8080': {mode: DISABLE}}",
     "mesh/namespace peer authentication cannot have port level mTLS"),
    ("selector: {matchLabels: {}}\nmtls: {mode: STRICT}", "warn: workload selector specified without labels"),
]


@pytest.mark.parametrize(("spec", "expected"), PEER_AUTHENTICATION)
def test_peer_authentication(spec, expected):
    """ValidatePeerAuthentication."""
    check("PeerAuthentication", spec, expected)


def ef(patch: str) -> str:
    return "configPatches:\n" + "\n".join("  " + x for x in patch.strip("\n").split("\n"))


ENVOY_FILTER = [
    # the standing warning every EnvoyFilter gets
    (ef("- applyTo: HTTP_FILTER\n  patch: {operation: REMOVE}"), "warn: EnvoyFilter exposes internal implementation"),
    (ef("- applyTo: HTTP_FILTER\n  match: {listener: {filterChain: {filter: {subFilter: {name: envoy.filters.http."
        "router}}}}}\n  patch: {operation: REMOVE}"), "filter match has no name to match on"),
    (ef("- applyTo: NETWORK_FILTER\n  match: {listener: {filterChain: {filter: {name: envoy.filters.network.http_"
        "connection_manager, subFilter: {name: a}}}}}\n  patch: {operation: REMOVE}"),
     "subfilter match can be used with applyTo HTTP_FILTER only"),
    (ef("- applyTo: HTTP_FILTER\n  match: {listener: {filterChain: {filter: {name: envoy.filters.network.tcp_proxy, "
        "subFilter: {name: a}}}}}\n  patch: {operation: REMOVE}"), "subfilter match requires filter match with"),
    (ef("- applyTo: FILTER_CHAIN\n  match: {listener: {filterChain: {filter: {name: envoy.filters.network.tcp_proxy}}"
        "}}\n  patch: {operation: REMOVE}"), "warn: filter match has no effect when used with FILTER_CHAIN"),
    (ef("- applyTo: HTTP_FILTER\n  match: {listener: {filterChain: {filter: {name: envoy.http_connection_manager}}}}\n"
        "  patch: {operation: REMOVE}"), "warn: using deprecated filter name"),
    (ef("- applyTo: CLUSTER\n  match: {proxy: {proxyVersion: '1\\.2[0-'}}\n  patch: {operation: MERGE, value: {}}"),
     "invalid regex for proxy version"),
    (ef("- applyTo: VIRTUAL_HOST\n  match: {cluster: {service: a}}\n  patch: {operation: REMOVE}"),
     "cannot have non route configuration match"),
    (ef("- applyTo: CLUSTER\n  patch: {operation: INSERT_FIRST, value: {name: x}}"), "warn: INSERT_FIRST is ignored"),
    (ef("- applyTo: HTTP_FILTER\n  match: {context: WAYPOINT, waypoint: {}}\n  patch: {operation: ADD}"), None),
]


@pytest.mark.parametrize(("spec", "expected"), ENVOY_FILTER)
def test_envoy_filter(spec, expected):
    """envoyfilter.validateEnvoyFilter (the patch value is not checked against Envoy's protos)."""
    check("EnvoyFilter", spec, expected)


TELEMETRY = [
    ("metrics:\n- providers: [{name: prometheus}]\n  overrides:\n  - tagOverrides: {request_host: {operation: UPSERT, "
     "value: request.host}}", None),
    ("metrics:\n- overrides:\n  - tagOverrides: {request_host: {operation: UPSERT}}",
     "tagOverrides.value must be set when operation is UPSERT"),
    ("metrics:\n- overrides:\n  - tagOverrides: {request_host: {operation: REMOVE, value: x}}",
     "tagOverrides.value may only be set when operation is UPSERT"),
    ("tracing:\n- providers: [{name: a}, {name: b}]", "warn: multiple providers is not currently supported"),
    ("tracing:\n- customTags: {t: {literal: {value: ''}}}", "literal tag value may not be empty"),
    ("accessLogging:\n- filter: {expression: 'response.code >= 400'}", None),
    ("accessLogging:\n- filter: {expression: 'response.code >= (400'}", "must be a valid CEL expression"),
]


@pytest.mark.parametrize(("spec", "expected"), TELEMETRY)
def test_telemetry(spec, expected):
    """ValidateTelemetry (validateTelemetryMetrics / Tracing / AccessLogging)."""
    check("Telemetry", spec, expected)


def test_proxy_config_concurrency():
    """ValidateProxyConfig: concurrency >= 0."""
    check("ProxyConfig", "concurrency: 2", None)
    check("ProxyConfig", "concurrency: -1", "concurrency must be greater than or equal to 0")


@pytest.mark.parametrize(("kind", "spec", "annotations", "expected"), [
    ("AuthorizationPolicy", "action: DENY\nrules: [{}]", "istio.io/dry-run: 'true'", None),
    ("AuthorizationPolicy", "action: DENY\nrules: [{}]", "istio.io/dry-run: 'yes'", "with invalid value (yes)"),
    ("AuthorizationPolicy", "action: CUSTOM\nprovider: {name: e}\nrules: [{}]", "istio.io/dry-run: 'true'",
     "only supports action ALLOW/DENY"),
    ("VirtualService", vs_http(R), "istio.io/dry-run: 'true'", "has unsupported annotation istio.io/dry-run"),
    ("VirtualService", vs_http(R), "internal.istio.io/parents: x", "may not be set by users"),
])
def test_metadata_annotations(kind, spec, annotations, expected):
    """validateMetadata / checkDryRunAnnotation (run before every kind's own checks)."""
    text = (f"apiVersion: {GROUP[kind]}\nkind: {kind}\nmetadata:\n  name: r\n  namespace: ns\n"
            f"  annotations: {{{annotations}}}\nspec:\n" + "".join(f"  {line}\n" for line in spec.split("\n")))
    found = [str(i) for i in validate(parse_text(text, "t.yaml").resources[0]) if i.severity == "error"]
    if expected is None:
        assert found == [], found
    else:
        assert any(expected in e and "metadata.annotations" in e for e in found), found


@pytest.mark.parametrize(("spec", "expected"), [
    ("url: oci://ghcr.io/istio/filter:1.0\nselector: {matchLabels: {app: a}}", None),
    ("url: ghcr.io/istio/filter:1.0", None),
    ("url: ftp://example.com/f.wasm", "url contains unsupported scheme: ftp"),
    ("url: oci://x/y\nsha256: ABC", "sha256 field must be 64 characters long"),
    ("url: oci://x/y\nvmConfig: {env: [{name: A, value: b}, {name: A, value: c}]}", "duplicate env"),
    ("url: oci://x/y\nvmConfig: {env: [{name: A, valueFrom: HOST, value: b}]}",
     "value may only be set when valueFrom is INLINE"),
])
def test_wasm_plugin(spec, expected):
    """ValidateWasmPlugin (validateWasmPluginURL / SHA / VMConfig / Match)."""
    check("WasmPlugin", spec, expected)


@pytest.mark.parametrize(("value", "expected"), [
    ("{name: c, connect_timeout: 1s}", None),
    ("{name: c, no_such_field: 1}", "warn: no_such_field"),
    ("{name: c, connect_timeout: [1]}", "Envoy filter:"),
])
def test_envoy_filter_values(value, expected):
    """envoyfilter.validateEnvoyFilter: BuildXDSObjectFromStruct non-strict failure is an error, strict a warning."""
    check("EnvoyFilter", ef(f"- applyTo: CLUSTER\n  patch:\n    operation: MERGE\n    value: {value}"), expected)
