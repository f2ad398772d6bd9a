"""envoy.filters.http.jwt_authn from the RequestAuthentications that apply to a proxy, as Istio builds it.

Istio's translation (pilot/pkg/security/authn/policy_applier.go, convertToEnvoyJwtConfig), rule by rule:
- every jwtRule of every applying policy (generate/authn.py) is one provider `origins-<i>`, in issuer order, with
  issuer, audiences, forward (forwardOriginalToken), forward_payload_header (outputPayloadToHeader),
  claim_to_headers (outputClaimToHeaders), from_headers (name + value_prefix), from_params, from_cookies, and
  normalize_payload_in_metadata with `scope` and `permission` always space-delimited (plus spaceDelimitedClaims);
- the keys are always inline (local_jwks): the rule's `jwks`, else the key set the control plane fetched from its
  `jwksUri` (registry/jwks.py, carried by the snapshot), else a key set nobody has a private key for, so every
  token is rejected while the keys are missing (Istio inlines its FakeJwks for the same reason; its private key is
  published in Istio's source, ours was discarded when the key was made);
- one rule for every path: a token, if present, must be valid: one provider is requires_any{provider,
  allow_missing}; several are requires_any{P1, ..., Pn, requires_all{any{P1, allow_missing}, ...}} (the outer OR
  lets providers that share a token location pass); a request without a token passes (an AuthorizationPolicy with
  requestPrincipals is what requires one); an invalid token gets Envoy's 401. bypass_cors_preflight is on.

At gateways every provider clears the route cache after verifying (Istio's JWT claim-based routing, gateways only),
so a VirtualService match on `@request.auth.claims.*` (httproute.claim_matcher) is decided on the verified payload.

Every verified payload goes to dynamic metadata `envoy.filters.http.jwt_authn` under the key `payload`, as Istio
writes it, so AuthorizationPolicy's requestPrincipals and request.auth.* keys read `[payload, iss]`,
`[payload, sub]`, ... exactly as Istio's generated RBAC does (../shared/conformance/authz-builder goldens).
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import empty_pb2

from sailmesh.api.models.security import JWTRule
from sailmesh.generate import authn
from sailmesh.generate.common import pack
from sailmesh.generate.filters.context import Direction, FilterContext
from sailmesh.registry.jwks import parse_key_set, rule_key
from sailmesh.snapshot.model import MeshSnapshot

JWT_FILTER = "envoy.filters.http.jwt_authn"
METADATA_NAMESPACE = JWT_FILTER  # dynamic metadata namespace jwt_authn writes payloads to
PAYLOAD_KEY = "payload"  # Istio's key for the verified payload in that namespace
DEFAULT_SPACE_DELIMITED = ("permission", "scope")  # Istio's buildSpaceDelimitedClaims defaults

# Fails closed: an RSA public key whose private key was discarded when it was made (sailmesh's own, not Istio's
# FakeJwks, whose private key is public). Static, so the generated config stays the same across restarts.
FAKE_JWKS = (
    '{"keys":[{"kty":"RSA","e":"AQAB","kid":"sailmesh-no-key","alg":"RS256","n":"'
    "wPOD80mbbA5Xu_4ybWkeEdwP_QQAol0EFsotcBm5Kjf6njFq5WMXY1XUfysNEVa_gV37v4jMiL0zlK_5N6ZecKb_T81bR2TC6w_D8_zq41i-"
    "mbTvFsPFRm6HW2NlRU52frH3INrqZiGtXNHWUK6ba8I9RN6gICd28e5Zz03EqUWLlBX9MZXyHzDeQfLDlQwAabsdxm9xcvP71ht_ZPtZOe4fnE"
    "QcDmrXVq1rqJOdaXd7J78wBm71VJiemDyWzMExTPx82fi03XJpPMl65Ccss1qsbjOswuPco5cvC11ZIFsRTbn7VMWjIlQLiCX8KF6f08RX5EDh"
    '5nrHq58avSzJNw"}]}'
)


def key_set(rule: JWTRule, snapshot: MeshSnapshot) -> str:
    """The JWKS text inlined for a rule: its `jwks`, the fetched key set of its `jwksUri` (or of its issuer's OpenID
    discovery document), else FAKE_JWKS."""
    key = rule_key(rule.jwks, rule.jwks_uri, rule.issuer)
    text = rule.jwks or (snapshot.jwks.get(key) if key is not None else None)
    if not text:
        return FAKE_JWKS
    try:
        return parse_key_set(text.encode())
    except ValueError:  # an inline key set validation let through that is not one: reject tokens, keep the proxy
        return FAKE_JWKS


def provider(rule: JWTRule, snapshot: MeshSnapshot, clear_route_cache: bool = False) -> jwt_pb2.JwtProvider:
    """One rule as a jwt_authn provider (Istio's field mapping, the payload under `payload`); `clear_route_cache`
    at gateways, so routes matching `@request.auth.claims` see the verified payload (istio/istio#35747: JWT
    claim-based routing is for gateways; sidecars keep the route they picked)."""
    p = jwt_pb2.JwtProvider(
        clear_route_cache=clear_route_cache,
        issuer=rule.issuer or "",
        audiences=list(rule.audiences or ()),
        forward=bool(rule.forward_original_token),
        forward_payload_header=rule.output_payload_to_header or "",
        payload_in_metadata=PAYLOAD_KEY,
        normalize_payload_in_metadata=jwt_pb2.JwtProvider.NormalizePayload(
            space_delimited_claims=sorted({*DEFAULT_SPACE_DELIMITED, *(rule.space_delimited_claims or ())})),
        local_jwks=base_pb2.DataSource(inline_string=key_set(rule, snapshot)),
        from_params=list(rule.from_params or ()),
        from_cookies=list(rule.from_cookies or ()),
    )
    for h in rule.from_headers or ():
        p.from_headers.add(name=h.name or "", value_prefix=h.prefix or "")
    for c in rule.output_claim_to_headers or ():
        p.claim_to_headers.add(header_name=c.header or "", claim_name=c.claim or "")
    return p


def _name(i: int) -> jwt_pb2.JwtRequirement:
    return jwt_pb2.JwtRequirement(provider_name=f"origins-{i}")


def _any(*reqs: jwt_pb2.JwtRequirement) -> jwt_pb2.JwtRequirement:
    return jwt_pb2.JwtRequirement(requires_any=jwt_pb2.JwtRequirementOrList(requirements=list(reqs)))


def authentication(rules: tuple[JWTRule, ...], snapshot: MeshSnapshot,
                   clear_route_cache: bool = False) -> jwt_pb2.JwtAuthentication | None:
    """The filter config for these rules (in issuer order), None when there are none."""
    if not rules:
        return None
    allow_missing = jwt_pb2.JwtRequirement(allow_missing=empty_pb2.Empty())
    inner = [_any(_name(i), allow_missing) for i in range(len(rules))]
    if len(inner) == 1:
        requires = inner[0]
    else:
        every = jwt_pb2.JwtRequirement(requires_all=jwt_pb2.JwtRequirementAndList(requirements=inner))
        requires = _any(*(_name(i) for i in range(len(rules))), every)
    return jwt_pb2.JwtAuthentication(
        providers={f"origins-{i}": provider(rule, snapshot, clear_route_cache) for i, rule in enumerate(rules)},
        rules=[jwt_pb2.RequirementRule(match=rc.RouteMatch(prefix="/"), requires=requires)],
        bypass_cors_preflight=True,
    )


def jwt_authn(ctx: FilterContext) -> list[hcm_pb2.HttpFilter]:
    """envoy.filters.http.jwt_authn for the proxy's RequestAuthentications; no filter when none applies."""
    config = authentication(authn.jwt_rules(ctx.snapshot, ctx.proxy), ctx.snapshot,
                            clear_route_cache=ctx.direction == Direction.GATEWAY)
    if config is None:
        return []
    return [hcm_pb2.HttpFilter(name=JWT_FILTER, typed_config=pack(config))]
