"""JWT claim-based routing as Istio generates it (istio.io "Copy JWT Claims to HTTP Headers" / "JWT claim based
routing" task; pilot route.go translateMetadataMatch, authz MetadataMatcherForJWTClaims with Envoy's jwt_authn):
a VirtualService `headers` / `withoutHeaders` key `@request.auth.claims.<a>.<b>` (or `[a][b]`) is a dynamic-metadata
match on jwt_authn's verified payload (`envoy.filters.http.jwt_authn` / payload / a / b: a list holding a match, or
a matching value), not a header; gateways' jwt_authn providers clear the route cache after verifying (istio/istio
#35747: claim routing is for gateways, sidecars do not re-route)."""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc

from sailmesh.api.models import model_of
from sailmesh.api.models.networking import VirtualService
from sailmesh.explain.routematch import Request, route_match
from sailmesh.generate.httproute import route_match as translate_match
from tests.unit.test_generate_jwt import GATEWAY, jwt_config, ra
from tests.unit.test_generate_support import bookinfo, gateway_proxy, resources, sidecar

VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: claims, namespace: default}
spec:
  hosts: [claims.example]
  gateways: [gw]
  http:
  - match:
    - uri: {prefix: /headers}
      headers:
        "@request.auth.claims.groups": {exact: group1}
        x-plain: {exact: "yes"}
      withoutHeaders:
        "@request.auth.claims[nested.key][level]": {prefix: "2"}
    route: [{destination: {host: httpbin}}]
"""


def translated() -> rc.RouteMatch:
    [res] = resources(VS)
    spec = model_of(res, VirtualService)
    return translate_match(spec.http[0].match[0])  # type: ignore[index]


def test_claims_become_metadata_matchers_not_headers() -> None:
    m = translated()
    assert [h.name for h in m.headers] == ["x-plain"]  # an ordinary header stays a header
    groups, nested = sorted(m.dynamic_metadata, key=lambda d: len(d.path))
    assert groups.filter == "envoy.filters.http.jwt_authn"
    assert [s.key for s in groups.path] == ["payload", "groups"] and not groups.invert
    one_of_list, plain = groups.value.or_match.value_matchers  # a list holding "group1", or the string itself
    assert one_of_list.list_match.one_of.string_match.exact == "group1"
    assert plain.string_match.exact == "group1"
    assert [s.key for s in nested.path] == ["payload", "nested.key", "level"] and nested.invert  # withoutHeaders


def test_the_explained_route_follows_the_verified_payload() -> None:
    route = rc.Route(match=translated())
    req = Request.from_url("GET", "http://claims.example/headers", {"x-plain": "yes"})

    def payload(**claims: object) -> dict[str, dict[str, object]]:
        return {"envoy.filters.http.jwt_authn": {"payload": claims}}
    assert route_match(route, req, payload(groups=["group1", "group2"]))[0]
    assert route_match(route, req, payload(groups="group1"))[0]
    assert not route_match(route, req, payload(groups=["group2"]))[0]
    assert not route_match(route, req, {})[0]  # no token: no payload, no claim
    nested = {"nested.key": {"level": "20"}}  # withoutHeaders: a claim starting with "2" keeps the route out
    assert not route_match(route, req, payload(groups=["group1"], **nested))[0]


def test_gateways_clear_the_route_cache_sidecars_do_not() -> None:
    snap = bookinfo(GATEWAY, ra("gw-jwt", "istio-system", "https://iss.example", {"istio": "ingressgateway"}),
                    ra("pp-jwt", "default", "https://iss.example", {"app": "productpage"}))
    gw = jwt_config(snap, gateway_proxy())
    side = jwt_config(snap, sidecar())
    assert gw is not None and side is not None
    assert all(p.clear_route_cache for p in gw.providers.values())
    assert not any(p.clear_route_cache for p in side.providers.values())
