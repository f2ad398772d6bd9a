"""RequestAuthentication -> envoy.filters.http.jwt_authn, checked on the listeners the Generator makes.

The rules matched are Istio's: pilot/pkg/security/authn/policy_applier.go (convertToEnvoyJwtConfig: providers
`origins-<i>`, the requirement shapes, bypass_cors_preflight, local_jwks, FakeJwks when keys are missing) and
pilot/pkg/model/authentication.go (every matching RequestAuthentication applies: mesh, namespace, workload).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from sailmesh.api.change import Change
from sailmesh.api.resource import ResourceKey
from sailmesh.generate import authn
from sailmesh.generate.affect import affected_types
from sailmesh.generate.filters.jwt import FAKE_JWKS, JWT_FILTER
from sailmesh.registry.jwks import jwks_key, wanted_uris
from sailmesh.snapshot.model import MeshSnapshot, ProxyView
from sailmesh.xds.types import LISTENER
from tests.conftest import CONFORMANCE
from tests.unit.test_generate_support import bookinfo, gateway_proxy, generated, resources, sidecar

JWKS = (CONFORMANCE / "security" / "jwt" / "jwks.json").read_text() if CONFORMANCE.is_dir() else \
    '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'
GATEWAY = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
"""
REVIEWS = sidecar("reviews-v1-0", "127.0.1.3", app="reviews", version="v1")


def ra(name: str, ns: str, issuer: str, selector: dict[str, str] | None = None, **rule: object) -> str:
    spec: dict[str, object] = {"jwtRules": [{"issuer": issuer, **({"jwks": JWKS} | rule)}]}
    if selector is not None:
        spec["selector"] = {"matchLabels": selector}
    return json.dumps({"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
                       "metadata": {"name": name, "namespace": ns}, "spec": spec})


def chains(snap: MeshSnapshot, proxy: ProxyView) -> dict[str, list[hcm_pb2.HttpFilter]]:
    """listener name -> the HTTP filters of its connection manager (HTTP listeners only)."""
    out = {}
    for name, lis in generated(snap, proxy, LISTENER, listener_pb2.Listener).items():
        for fc in lis.filter_chains:
            for f in fc.filters:
                h = hcm_pb2.HttpConnectionManager()
                if f.typed_config.Unpack(h):
                    out[name] = list(h.http_filters)
    return out


MX_PREFIX = "istio.metadata_exchange."
MX = [MX_PREFIX + "read", MX_PREFIX + "add"]


def jwt_config(snap: MeshSnapshot, proxy: ProxyView) -> jwt_pb2.JwtAuthentication | None:
    """The jwt_authn config of the proxy's inbound (sidecar) or server (gateway) listeners; all must agree."""
    found = []
    for name, filters in chains(snap, proxy).items():
        if name == "virtualOutbound":
            assert JWT_FILTER not in [f.name for f in filters]  # Istio: never on outbound
            continue
        cfg = [f for f in filters if f.name == JWT_FILTER]
        if cfg:
            # after Istio's metadata exchange, before RBAC and fault (Istio's order)
            assert next(f.name for f in filters if not f.name.startswith(MX_PREFIX)) == JWT_FILTER
            c = jwt_pb2.JwtAuthentication()
            assert cfg[0].typed_config.Unpack(c)
            found.append(c)
    if not found:
        return None
    assert all(c == found[0] for c in found)
    return found[0]


def test_no_request_authentication_no_filter() -> None:
    assert jwt_config(bookinfo(), REVIEWS) is None
    assert jwt_config(bookinfo(), gateway_proxy()) is None


def test_one_rule_every_field_as_istio_maps_it() -> None:
    snap = bookinfo(ra("jwt", "default", "issuer-foo", {"app": "reviews"},
                       audiences=["aud-a", "aud-b"], forwardOriginalToken=True, outputPayloadToHeader="x-payload",
                       fromHeaders=[{"name": "x-jwt", "prefix": "Bearer "}], fromParams=["token"],
                       fromCookies=["session"], outputClaimToHeaders=[{"header": "x-sub", "claim": "sub"}],
                       spaceDelimitedClaims=["roles"]))
    cfg = jwt_config(snap, REVIEWS)
    assert cfg is not None
    p = cfg.providers["origins-0"]
    assert p.issuer == "issuer-foo" and list(p.audiences) == ["aud-a", "aud-b"]
    assert p.forward and p.forward_payload_header == "x-payload"
    assert [(h.name, h.value_prefix) for h in p.from_headers] == [("x-jwt", "Bearer ")]
    assert list(p.from_params) == ["token"] and list(p.from_cookies) == ["session"]
    assert [(c.header_name, c.claim_name) for c in p.claim_to_headers] == [("x-sub", "sub")]
    # Istio's buildSpaceDelimitedClaims: scope and permission always, plus the rule's, sorted
    assert list(p.normalize_payload_in_metadata.space_delimited_claims) == ["permission", "roles", "scope"]
    assert p.payload_in_metadata == "payload"  # Istio: every payload under `payload` (RBAC reads [payload, iss])
    assert p.local_jwks.inline_string == JWKS
    # one provider: {provider OR allow_missing}, for every path; CORS preflight bypassed
    (rule,) = cfg.rules
    assert rule.match.prefix == "/"
    assert [r.WhichOneof("requires_type") for r in rule.requires.requires_any.requirements] == \
        ["provider_name", "allow_missing"]
    assert rule.requires.requires_any.requirements[0].provider_name == "origins-0"
    assert cfg.bypass_cors_preflight
    # not for another workload of the namespace (selector), nor the gateway
    assert jwt_config(snap, sidecar()) is None
    assert jwt_config(snap, gateway_proxy()) is None


def test_mesh_namespace_and_workload_policies_all_apply_sorted_by_issuer() -> None:
    # Istio merges every matching RequestAuthentication (no override, unlike PeerAuthentication)
    snap = bookinfo(GATEWAY, ra("mesh", "istio-system", "c-mesh"), ra("ns", "default", "a-namespace"),
                    ra("wl", "default", "b-workload", {"app": "reviews"}),
                    ra("other-ns", "foo", "z-foo"), ra("other-wl", "default", "y-ratings", {"app": "ratings"}))
    cfg = jwt_config(snap, REVIEWS)
    assert cfg is not None
    assert [cfg.providers[f"origins-{i}"].issuer for i in range(3)] == ["a-namespace", "b-workload", "c-mesh"]
    assert len(cfg.providers) == 3
    # several providers: OR{P0, P1, P2, AND{OR{P0, missing}, OR{P1, missing}, OR{P2, missing}}}
    outer = cfg.rules[0].requires.requires_any.requirements
    assert [r.provider_name for r in outer[:3]] == ["origins-0", "origins-1", "origins-2"]
    inner = outer[3].requires_all.requirements
    assert [[r.WhichOneof("requires_type") for r in i.requires_any.requirements] for i in inner] == \
        [["provider_name", "allow_missing"]] * 3
    assert [i.requires_any.requirements[0].provider_name for i in inner] == ["origins-0", "origins-1", "origins-2"]
    # the mesh-wide policy reaches the gateway too (root namespace, no selector)
    gw = jwt_config(snap, gateway_proxy())
    assert gw is not None and [p.issuer for p in gw.providers.values()] == ["c-mesh"]


def test_conformance_gateway_policy_with_unfetched_jwks_uri_fails_closed(conformance: pathlib.Path) -> None:
    # istio.io authn-policy task, section 5: a RequestAuthentication on the ingress gateway with a jwksUri
    docs = [r for r in resources(conformance / "security" / "policies" / "authn-policy.yaml")
            if r.kind == "RequestAuthentication"]
    snap = bookinfo(GATEWAY)
    snap = dataclasses.replace(snap, config={**snap.config, "RequestAuthentication": tuple(docs)})
    uri = "https://raw.githubusercontent.com/istio/istio/master/security/tools/jwt/samples/jwks.json"
    assert wanted_uris(docs) == {uri: 5.0}  # Istio's default fetch timeout
    cfg = jwt_config(snap, gateway_proxy())
    assert cfg is not None
    # not fetched yet: a key set nobody can sign for (Istio's FakeJwks), so every token is rejected
    assert cfg.providers["origins-0"].local_jwks.inline_string == FAKE_JWKS
    assert "d" not in json.loads(FAKE_JWKS)["keys"][0]  # no private part shipped
    # fetched: the control plane's copy is inlined
    fetched = dataclasses.replace(snap, jwks={uri: JWKS})
    cfg = jwt_config(fetched, gateway_proxy())
    assert cfg is not None and cfg.providers["origins-0"].local_jwks.inline_string == JWKS
    assert jwt_config(snap, REVIEWS) is None  # the selector picks the gateway only


def test_inline_jwks_wins_over_jwks_uri_and_is_never_fetched() -> None:
    docs = resources(ra("jwt", "default", "iss", jwksUri="http://127.0.0.1:1/jwks"))
    assert wanted_uris(docs) == {}
    snap = bookinfo(ra("jwt", "default", "iss", jwksUri="http://127.0.0.1:1/jwks"))
    cfg = jwt_config(snap, REVIEWS)
    assert cfg is not None and cfg.providers["origins-0"].local_jwks.inline_string == JWKS


def test_target_ref_is_accepted_not_enforced() -> None:
    text = ra("gw", "default", "iss")
    doc = json.loads(text)
    doc["spec"]["targetRef"] = {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "gw"}
    snap = bookinfo(json.dumps(doc))
    assert jwt_config(snap, REVIEWS) is None
    (line,) = authn.not_enforced(snap.of_kind("RequestAuthentication"))
    assert "targetRef" in line and "not enforced" in line


def test_chain_order_inbound_and_gateway() -> None:
    snap = bookinfo(GATEWAY, ra("mesh", "istio-system", "iss"))
    # Istio's order: metadata exchange, then authn (jwt_authn), then fault ...
    gateway = {n: [f.name for f in fs] for n, fs in chains(snap, gateway_proxy()).items()}
    assert gateway and all(fs[:4] == [*MX, JWT_FILTER, "envoy.filters.http.fault"] for fs in gateway.values())
    inbound = {n: [f.name for f in fs] for n, fs in chains(snap, REVIEWS).items() if n != "virtualOutbound"}
    assert inbound and all(fs == [*MX, JWT_FILTER, "envoy.filters.http.router"] for fs in inbound.values())


def test_request_authentication_and_key_sets_push_listeners_only() -> None:
    snap = bookinfo()
    ra_change = Change.of(ResourceKey("RequestAuthentication", "default", "jwt"))
    assert affected_types(ra_change, snap, snap) == {LISTENER}
    assert affected_types(Change.of(jwks_key("http://keys/jwks.json")), snap, snap) == {LISTENER}
