"""`sailmesh explain` on config the generator really produced (as /debug/config_dump serves it): JWT, CUSTOM,
TCP/TLS routes, fault percentages and local rate limits. Pure: no Envoy, the answers are explain's."""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from typing import Any

import yaml
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from google.protobuf import json_format

from sailmesh.api import meshconfig
from sailmesh.cli import explain
from sailmesh.explain import explain_steps, explain_tcp
from sailmesh.explain.routematch import Request
from sailmesh.generate.generator import Generator
from sailmesh.snapshot.model import MeshSnapshot, ProxyView
from sailmesh.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE
from tests.unit.test_generate_support import (
    bookinfo_services,
    bookinfo_workloads,
    gateway_proxy,
    make_snapshot,
    resources,
    service,
    sidecar,
    workload,
)

ISS = "https://issuer.sailmesh.test"
PRODUCTPAGE = sidecar("productpage-v1-0", "127.0.1.1")
REVIEWS_IP = "127.0.1.3"
REVIEWS = sidecar("reviews-v1-0", REVIEWS_IP, app="reviews", version="v1")
NAMES = {"127.0.1.1": "productpage-v1-0.default", REVIEWS_IP: "reviews-v1-0.default"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks() -> str:
    n = KEY.public_key().public_numbers().n
    return json.dumps({"keys": [{"kty": "RSA", "alg": "RS256", "kid": "k1", "e": "AQAB",
                                 "n": b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))}]})


def token(key: rsa.RSAPrivateKey = KEY, **claims: Any) -> str:
    payload = {"iss": ISS, "sub": "alice", "exp": int(time.time()) + 3600, **claims}
    head = f"{b64(json.dumps({'alg': 'RS256', 'kid': 'k1'}).encode())}.{b64(json.dumps(payload).encode())}"
    return f"{head}.{b64(key.sign(head.encode(), padding.PKCS1v15(), hashes.SHA256()))}"


def dump(snap: MeshSnapshot, proxy: ProxyView) -> dict[str, Any]:
    """What the control plane's /debug/config_dump answers for a proxy (controlplane/app.py config_dump)."""
    g = Generator()
    types = {"clusters": CLUSTER, "listeners": LISTENER, "routes": ROUTE, "endpoints": ENDPOINT}
    return {name: {k: json_format.MessageToDict(v, preserving_proto_field_name=True)
                   for k, v in sorted(g.resources(snap, proxy, url).items())} for name, url in types.items()}


def walk(snap: MeshSnapshot, req: Request, source: ProxyView = PRODUCTPAGE) -> dict[str, Any]:
    dests = {REVIEWS_IP: dump(snap, REVIEWS)}
    return explain_steps.explain(req, dump(snap, source), {}, "", source.ip, dests, NAMES, source.type == "sidecar")


def reviews_only(*config: str) -> MeshSnapshot:
    wls = [w for w in bookinfo_workloads() if w.name in ("productpage-v1-0", "reviews-v1-0")]
    return make_snapshot(resources(*config), bookinfo_services(), wls)


JWT = f"""\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: default}}
spec:
  selector: {{matchLabels: {{app: reviews}}}}
  jwtRules: [{{issuer: "{ISS}", jwks: '{jwks()}'}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: require-group, namespace: default}}
spec:
  selector: {{matchLabels: {{app: reviews}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{requestPrincipals: ["{ISS}/alice"]}}}}]
    when: [{{key: "request.auth.claims[groups]", values: ["group1"]}}]
"""


def reviews(snap: MeshSnapshot, **headers: str) -> dict[str, Any]:
    out = walk(snap, Request.from_url("GET", "http://reviews:9080/reviews/0", headers))
    return dict(out["clusters"][0]["endpoints"][0]["authorization"])


def test_jwt_without_with_invalid_and_with_valid_tokens_and_the_claim_rule() -> None:
    snap = reviews_only(JWT)
    # Istio: a request without a token passes jwt_authn; the ALLOW rule on requestPrincipals then denies it (403)
    none = reviews(snap)
    assert none["allowed"] is False and none["status"] == 403, none
    assert "no token" in none["steps"][0]["decision"]
    assert any("token claim iss" in c and "absent" in c for c in none["steps"][-1]["checks"]), none
    # a token signed by another key, an expired one, one of another issuer: Envoy's 401 and jwt_verify_lib's words
    bad = reviews(snap, authorization=f"Bearer {token(OTHER_KEY, groups=['group1'])}")
    assert bad["status"] == 401 and "Jwt verification fails" in bad["decision"], bad
    expired = reviews(snap, authorization=f"Bearer {token(exp=int(time.time()) - 600)}")
    assert expired["status"] == 401 and "Jwt is expired" in expired["decision"], expired
    # Envoy's JwtProvider.clock_skew_seconds defaults to 60 (Istio leaves it unset): 10 s past exp still passes
    recent = reviews(snap, authorization=f"Bearer {token(exp=int(time.time()) - 10, groups=['group1'])}")
    assert recent["allowed"] is True, recent
    other = reviews(snap, authorization=f"Bearer {token(iss='https://elsewhere')}")
    assert other["status"] == 401 and "issuer is not configured" in other["decision"], other
    # valid, with the claim: allowed, and the claim rule is named as the one that matched
    ok = reviews(snap, authorization=f"Bearer {token(groups=['group1', 'group2'])}")
    assert ok["allowed"] is True, ok
    rbac = ok["steps"][-1]
    assert rbac["policy"] == "require-group.default" and "allowed by AuthorizationPolicy require-group.default, " \
        "rule 0" in rbac["decision"], rbac
    checks = " ".join(rbac["checks"])
    assert "token claim iss 'https://issuer.sailmesh.test' (is 'https://issuer.sailmesh.test'): matches" in checks
    assert "token claim groups 'group1' (or a list holding it) (is ['group1', 'group2']): matches" in checks, checks
    # valid, without the claim: 403, and the failing claim check is said
    no_group = reviews(snap, authorization=f"Bearer {token(groups=['group2'])}")
    assert no_group["status"] == 403, no_group
    checks = " ".join(no_group["steps"][-1]["checks"])
    assert "token claim groups 'group1' (or a list holding it) (is ['group2']): does not match" in checks, checks


CUSTOM = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  action: CUSTOM
  provider: {name: checker}
  rules: [{to: [{operation: {paths: ["/admin*"]}}]}]
"""
MESH_CUSTOM = """
extensionProviders:
- name: checker
  envoyExtAuthzHttp:
    service: ext-authz.default.svc.cluster.local
    port: 8000
    includeRequestHeadersInCheck: [x-ext-authz]
"""


def test_custom_says_when_the_provider_is_asked_and_what_the_outcome_depends_on() -> None:
    snap = make_snapshot(resources(CUSTOM), [*bookinfo_services(), service("ext-authz", ports=[(8000, "HTTP")])],
                         [w for w in bookinfo_workloads() if w.name in ("productpage-v1-0", "reviews-v1-0")])
    snap = dataclasses.replace(snap, mesh_config=meshconfig.from_mapping(yaml.safe_load(MESH_CUSTOM)))
    # Istio sends only requests a CUSTOM rule matches to the provider
    out = walk(snap, Request.from_url("GET", "http://reviews:9080/reviews/0"))
    authz = out["clusters"][0]["endpoints"][0]["authorization"]
    step = next(s for s in authz["steps"] if s["filter"].startswith("ext_authz"))
    assert step["consulted"] is False and "not consulted" in step["decision"], step
    assert "external" not in authz and "if the external authorizer" not in out["result"]
    admin = walk(snap, Request.from_url("GET", "http://reviews:9080/admin/x"))
    authz = admin["clusters"][0]["endpoints"][0]["authorization"]
    step = next(s for s in authz["steps"] if s["filter"].startswith("ext_authz"))
    assert step["consulted"] is True and "outbound|8000||ext-authz.default.svc.cluster.local" in step["provider"], step
    assert "x-ext-authz" in step["decision"] and "depends on its answer" in step["decision"], step
    assert "unreachable or timed out: 403" in step["decision"], step  # failOpen unset: fails closed
    assert "if the external authorizer allows it" in admin["result"], admin["result"]


FAULT = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - fault:
      abort: {httpStatus: 503, percentage: {value: 25}}
      delay: {fixedDelay: 2s, percentage: {value: 50}}
    route: [{destination: {host: reviews}}]
"""


def test_fault_percentages_below_100_are_probabilities() -> None:
    out = walk(reviews_only(FAULT), Request.from_url("GET", "http://reviews:9080/reviews/0"))
    assert "forwarded to reviews-v1-0.default" in out["result"], out["result"]
    assert "each request has a 25% chance of abort with HTTP 503 instead" in out["result"], out["result"]
    assert "50% chance of a delay 2s first" in out["result"], out["result"]


RATELIMIT = """\
apiVersion: policy.sailmesh.io/v1alpha1
kind: RateLimit
metadata: {name: reviews-limit, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  rules:
  - name: per-user
    match: {uri: {prefix: /reviews}}
    key: {header: x-user}
    limit: {requests: 2, per: 1m}
"""
ENVOYFILTER = """\
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: filter-local-ratelimit-svc, namespace: default}
spec:
  workloadSelector: {labels: {app: reviews}}
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: SIDECAR_INBOUND
      listener: {filterChain: {filter: {name: envoy.filters.network.http_connection_manager}}}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          value:
            stat_prefix: http_local_rate_limiter
            token_bucket: {max_tokens: 4, tokens_per_fill: 4, fill_interval: 60s}
            filter_enabled:
              runtime_key: local_rate_limit_enabled
              default_value: {numerator: 100, denominator: HUNDRED}
            filter_enforced:
              runtime_key: local_rate_limit_enforced
              default_value: {numerator: 100, denominator: HUNDRED}
            response_headers_to_add:
            - append_action: APPEND_IF_EXISTS_OR_ADD
              header: {key: x-local-rate-limit, value: 'true'}
"""


def test_local_rate_limits_from_the_ratelimit_api_and_an_envoyfilter() -> None:
    # RateLimit: a bucket per x-user value for /reviews, nothing for other paths
    snap = reviews_only(RATELIMIT)
    limited = reviews(snap, **{"x-user": "jason"})
    step = next(s for s in limited["steps"] if s["filter"] == "local rate limit")
    assert step["limited"] and "a bucket of 2 tokens" in step["bucket"] and "a bucket per value" in step["bucket"]
    assert "429" in step["decision"] and "RL" in step["decision"], step
    other = walk(snap, Request.from_url("GET", "http://reviews:9080/health"))
    step = next(s for s in other["clusters"][0]["endpoints"][0]["authorization"]["steps"]
                if s["filter"] == "local rate limit")
    assert not step["limited"] and "not limited" in step["decision"], step
    # Istio's local rate limit task (EnvoyFilter, TypedStruct): the filter's own bucket, 100% enabled and enforced
    out = walk(reviews_only(ENVOYFILTER), Request.from_url("GET", "http://reviews:9080/reviews/0"))
    step = next(s for s in out["clusters"][0]["endpoints"][0]["authorization"]["steps"]
                if s["filter"] == "local rate limit")
    assert step["bucket"] == "a bucket of 4 tokens, 4 added every 60s", step
    assert "enabled for 100% of requests, enforced for 100%" in step["decision"], step
    assert "x-local-rate-limit: true" in step["decision"] and "429 (RL) once" in out["result"], out["result"]


TCP = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: default}
spec:
  hosts: [db]
  tcp:
  - match: [{port: 27017}]
    route: [{destination: {host: db, subset: v2}, weight: 100}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: default}
spec:
  host: db
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"""

def gateway_and_vs(server: str, vs: str, hosts: str) -> str:
    """The ingress gateway's Gateway `gw` with one server, and VirtualService `vs` bound to it (its routes follow)."""
    return f"""\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec: {{selector: {{istio: ingressgateway}}, servers: [{server}]}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {vs}, namespace: default}}
spec:
  hosts: [{hosts}]
  gateways: [istio-system/gw]
"""


GW_TLS = gateway_and_vs('{port: {number: 8443, name: tls, protocol: TLS}, hosts: ["*.example.com"], '
                        'tls: {mode: PASSTHROUGH}}', "db-tls", '"db.example.com"') + """\
  tls:
  - match: [{sniHosts: [db.example.com], port: 8443}]
    route: [{destination: {host: db, port: {number: 27017}}}]
"""


def db_snapshot(*config: str) -> MeshSnapshot:
    wls = [workload("productpage-v1-0", "127.0.1.1", app="productpage", version="v1"),
           workload("db-v1-0", "127.0.1.7", app="db", version="v1"),
           workload("db-v2-0", "127.0.1.8", app="db", version="v2")]
    return make_snapshot(resources(*config), [service("productpage"), service("db", ports=[(27017, "TCP")])], wls)


def test_tcp_routes_through_the_sidecar_tunnel_to_the_tcp_route_subset() -> None:
    snap = db_snapshot(TCP)
    db2 = sidecar("db-v2-0", "127.0.1.8", app="db", version="v2", app_ports={27017: 41001})
    out = explain_tcp.explain(explain_tcp.tcp_request("tcp://db:27017"), dump(snap, PRODUCTPAGE), {}, "",
                              "127.0.1.1", {"127.0.1.8": dump(snap, db2)}, {"127.0.1.8": "db-v2-0.default"}, True)
    assert [c["name"] for c in out["clusters"]] == ["outbound|27017|v2|db.default.svc.cluster.local"], out
    assert "db-v2-0.default" in out["result"] and "db-v1" not in out["result"], out["result"]
    assert out["clusters"][0]["endpoints"][0]["inbound"]["listener"] == "127.0.1.8_27017", out
    # the tunnel's route names its VirtualService (Istio's `istio.config` route metadata), as HTTP routes do
    assert out["route"]["config"] == "db.default", out["route"]
    out["source"], out["notes"] = {"proxy": "productpage-v1-0", "identity": "-"}, []
    assert "   route from VirtualService db.default" in explain.render(out), explain.render(out)
    # no TCP route for the port: the default cluster of the service
    plain = explain_tcp.explain(explain_tcp.tcp_request("tcp://db:27017"), dump(db_snapshot(), PRODUCTPAGE), {},
                                "", "127.0.1.1", {}, {}, True)
    assert plain["clusters"][0]["name"] == "outbound|27017||db.default.svc.cluster.local", plain
    assert plain["route"]["config"] == "-", plain["route"]
    missing = explain_tcp.explain(explain_tcp.tcp_request("tcp://nowhere:1"), dump(snap, PRODUCTPAGE), {}, "",
                                  "127.0.1.1", {}, {}, True)
    # not a mesh service: outboundTrafficPolicy ALLOW_ANY (Istio's default) passes it through
    assert "PassthroughCluster: sent to the original destination" in missing["result"], missing


def test_tls_passthrough_at_a_gateway_by_sni() -> None:
    snap = db_snapshot(GW_TLS)
    gw = dump(snap, gateway_proxy())
    out = explain_tcp.explain(explain_tcp.tcp_request("tls://127.0.0.1:8443", sni="db.example.com"), gw, {}, "",
                              "127.0.0.1", {}, {}, False)
    assert out["clusters"][0]["name"] == "outbound|27017||db.default.svc.cluster.local", out
    assert "server name 'db.example.com'" in out["filter_chain"]["reason"], out
    assert out["route"]["config"] == "db-tls.default", out["route"]  # the chain's `istio.config` metadata
    other = explain_tcp.explain(explain_tcp.tcp_request("tls://127.0.0.1:8443", sni="www.other.org"), gw, {}, "",
                                "127.0.0.1", {}, {}, False)
    assert "no filter chain" in other["result"], other


GW_TCP = gateway_and_vs('{port: {number: 31400, name: tcp, protocol: TCP}, hosts: ["*"]}', "db-gw", '"*"') + """\
  tcp:
  - match: [{port: 31400}]
    route: [{destination: {host: db, subset: v1, port: {number: 27017}}}]
"""


def test_a_gateway_tcp_server_names_the_virtual_service_of_its_tcp_proxy() -> None:
    """Issue 11: a gateway's tcp_proxy chain (Gateway TCP server + VirtualService `tcp` route) carries Istio's
    `istio.config` filter chain metadata (util.BuildConfigInfoMetadata, as Istio sets on TCP/TLS route chains), so
    explain names the VirtualService as it does for HTTP routes and sidecar tunnels."""
    snap = db_snapshot(GW_TCP, TCP)
    gw = dump(snap, gateway_proxy())
    chain = next(lis for lis in gw["listeners"].values() if lis["address"]["socket_address"]["port_value"] == 31400)
    assert chain["filter_chains"][0]["metadata"]["filter_metadata"]["istio"]["config"] == \
        "/apis/networking.istio.io/v1/namespaces/default/virtual-service/db-gw", chain
    out = explain_tcp.explain(explain_tcp.tcp_request("tcp://127.0.0.1:31400"), gw, {}, "", "127.0.0.1", {}, {},
                              False)
    assert [c["name"] for c in out["clusters"]] == ["outbound|27017|v1|db.default.svc.cluster.local"], out
    assert out["route"]["config"] == "db-gw.default", out["route"]
    out["source"], out["notes"] = {"proxy": "istio-ingressgateway", "identity": "-"}, []
    assert "   route from VirtualService db-gw.default" in explain.render(out), explain.render(out)
    # a TLS server terminating TLS into the VirtualService's tcp route: the same on its chain
    term = gateway_and_vs('{port: {number: 9443, name: tls, protocol: TLS}, hosts: ["*"], '
                          'tls: {mode: SIMPLE, credentialName: db-cert}}', "db-term", '"*"') + """\
  tcp:
  - match: [{port: 9443}]
    route: [{destination: {host: db, port: {number: 27017}}}]
"""
    gw = dump(db_snapshot(term), gateway_proxy())
    out = explain_tcp.explain(explain_tcp.tcp_request("tls://127.0.0.1:9443", sni="db.example.com"), gw, {}, "",
                              "127.0.0.1", {}, {}, False)
    assert out["route"]["config"] == "db-term.default", out
