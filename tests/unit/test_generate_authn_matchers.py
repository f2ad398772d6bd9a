"""The JWT keys of AuthorizationPolicy as RBAC principals, evaluated against the metadata jwt_authn writes.

The principals are checked by what they match: `allows` evaluates an envoy.config.rbac.v3 Principal the way Envoy
does for the parts used here (and/or/not ids, metadata matchers with string, list and or matchers). Istio's
rules matched (AuthorizationPolicy reference, "Conditions" and "Source"): request.auth.principal is `iss/sub`;
values are exact, `prefix*`, `*suffix` or `*` (present); claims match a string claim or one element of a list claim
(istio.io authz-jwt task: `request.auth.claims[groups]` with `group1`); nested claims `[a][b]`.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from envoy.config.rbac.v3 import rbac_pb2
from envoy.type.matcher.v3 import string_pb2, value_pb2

from sailmesh.errors import GenerationError
from sailmesh.generate import authn_matchers as am

ISS = "testing@secure.istio.io"
URL_ISS = "https://accounts.example.com"
NESTED_ISS = "https://accounts.example.com/tenant"  # an issuer that extends another one


def _string(m: string_pb2.StringMatcher, v: Any) -> bool:
    if not isinstance(v, str):
        return False
    kind = m.WhichOneof("match_pattern")
    if kind == "exact":
        return v == m.exact
    if kind == "prefix":
        return v.startswith(m.prefix)
    if kind == "suffix":
        return v.endswith(m.suffix)
    if kind == "safe_regex":
        return re.fullmatch(m.safe_regex.regex, v) is not None
    raise AssertionError(kind)


def _value(m: value_pb2.ValueMatcher, v: Any) -> bool:
    kind = m.WhichOneof("match_pattern")
    if kind == "string_match":
        return _string(m.string_match, v)
    if kind == "or_match":
        return any(_value(x, v) for x in m.or_match.value_matchers)
    if kind == "list_match":
        return isinstance(v, list) and any(_value(m.list_match.one_of, e) for e in v)
    raise AssertionError(kind)


def allows(p: rbac_pb2.Principal, metadata: dict[str, Any]) -> bool:
    """Envoy's evaluation of `p` against dynamic metadata {namespace: {key: value}}."""
    kind = p.WhichOneof("identifier")
    if kind == "any":
        return p.any
    if kind == "not_id":
        return not allows(p.not_id, metadata)
    if kind == "or_ids":
        return any(allows(x, metadata) for x in p.or_ids.ids)
    if kind == "and_ids":
        return all(allows(x, metadata) for x in p.and_ids.ids)
    if kind == "metadata":
        node: Any = metadata.get(p.metadata.filter, {})
        for seg in p.metadata.path:
            if not isinstance(node, dict) or seg.key not in node:
                return False
            node = node[seg.key]
        return _value(p.metadata.value, node)
    raise AssertionError(kind)


def payload(iss: str, **claims: Any) -> dict[str, Any]:
    """What jwt_authn writes for a valid token: the payload under its issuer (the contract)."""
    return {"envoy.filters.http.jwt_authn": {iss: {"iss": iss, **claims}}}


def test_exact_principal_is_issuer_slash_subject() -> None:
    # istio.io authz-jwt: requestPrincipals ["testing@secure.istio.io/testing@secure.istio.io"]
    p = am.request_principals([f"{ISS}/{ISS}"], [ISS])
    assert allows(p, payload(ISS, sub=ISS))
    assert not allows(p, payload(ISS, sub="someone-else"))
    assert not allows(p, {})  # no token: no principal


def test_issuers_with_slashes_are_resolved_by_the_configured_issuers() -> None:
    issuers = [URL_ISS, NESTED_ISS]
    p = am.request_principals([f"{NESTED_ISS}/alice"], issuers)
    assert allows(p, payload(NESTED_ISS, sub="alice"))
    assert not allows(p, payload(URL_ISS, sub="alice"))
    # the same string read as issuer URL_ISS and subject "tenant/alice" is also that principal
    assert allows(p, payload(URL_ISS, sub="tenant/alice"))
    # a subject with a '/' (Istio's last-'/' split would take "https://accounts.example.com/team" as the issuer)
    q = am.request_principals([f"{URL_ISS}/team/bob"], [URL_ISS])
    assert allows(q, payload(URL_ISS, sub="team/bob"))


def test_wildcards_match_the_principal_string() -> None:
    any_principal = am.request_principals(["*"], [ISS, URL_ISS])
    assert allows(any_principal, payload(URL_ISS, sub="x")) and allows(any_principal, payload(ISS, sub="y"))
    assert not allows(any_principal, payload(ISS))  # a token without `sub` has no principal
    assert not allows(any_principal, {})
    prefix = am.request_principals([f"{URL_ISS}/adm*"], [URL_ISS, ISS])
    assert allows(prefix, payload(URL_ISS, sub="admin")) and not allows(prefix, payload(URL_ISS, sub="user"))
    assert not allows(prefix, payload(ISS, sub="admin"))
    issuer_prefix = am.request_principals(["https://accounts.*"], [URL_ISS, ISS])
    assert allows(issuer_prefix, payload(URL_ISS, sub="u")) and not allows(issuer_prefix, payload(ISS, sub="u"))
    suffix = am.request_principals(["*/bob"], [URL_ISS])
    assert allows(suffix, payload(URL_ISS, sub="bob")) and allows(suffix, payload(URL_ISS, sub="team/bob"))
    assert not allows(suffix, payload(URL_ISS, sub="alice"))
    across = am.request_principals(["*example.com/bob"], [URL_ISS])  # the suffix starts inside the issuer
    assert allows(across, payload(URL_ISS, sub="bob")) and not allows(across, payload(URL_ISS, sub="bobby"))


def test_no_issuer_means_no_principal() -> None:
    # a proxy without RequestAuthentication never has a request principal: ALLOW never matches, DENY on
    # notRequestPrincipals ["*"] (the caller's not_id) always does
    p = am.request_principals(["*"], [])
    assert not allows(p, payload(ISS, sub="x"))
    assert allows(rbac_pb2.Principal(not_id=p), {})


def test_claims_string_list_and_nested() -> None:
    # istio.io authz-jwt step 2: request.auth.claims[groups] = group1, with groups a list claim
    groups = am.principal("request.auth.claims[groups]", ["group1"], [ISS])
    assert allows(groups, payload(ISS, groups=["group1", "group2"]))
    assert not allows(groups, payload(ISS, groups=["group2"]))
    assert allows(groups, payload(ISS, groups="group1"))
    nested = am.principal("request.auth.claims[nested1][nested2]", ["nest*"], [ISS, URL_ISS])
    assert allows(nested, payload(URL_ISS, nested1={"nested2": "nested"}))
    assert not allows(nested, payload(URL_ISS, nested1={"nested2": "other"}))
    dotted = am.principal("request.auth.claims[a.b]", ["v"], [ISS])
    assert allows(dotted, payload(ISS, **{"a.b": "v"}))
    # the value matcher has Istio's shape: or{list one_of(or{values}), or{values}}
    vm = groups.metadata.value.or_match.value_matchers
    assert vm[0].list_match.one_of.or_match.value_matchers[0].string_match.exact == "group1"
    assert vm[1].or_match.value_matchers[0].string_match.exact == "group1"


def test_audiences_and_presenter() -> None:
    aud = am.principal("request.auth.audiences", ["svc-a", "svc-b"], [ISS])
    assert allows(aud, payload(ISS, aud="svc-b")) and allows(aud, payload(ISS, aud=["x", "svc-a"]))
    assert not allows(aud, payload(ISS, aud="svc-c"))
    azp = am.principal("request.auth.presenter", ["client-*"], [ISS])
    assert allows(azp, payload(ISS, azp="client-1")) and not allows(azp, payload(ISS, azp="server"))
    assert [s.key for s in azp.metadata.path] == [ISS, "azp"]
    assert azp.metadata.filter == "envoy.filters.http.jwt_authn"


def test_bad_keys() -> None:
    assert am.handles("request.auth.claims[x]") and am.handles("request.auth.principal")
    assert not am.handles("request.headers[x]")
    for key in ("request.auth.claims", "request.auth.claims[]", "request.auth.claims[a]b", "request.auth.claims[a"):
        with pytest.raises(GenerationError):
            am.principal(key, ["v"], [ISS])
    with pytest.raises(GenerationError):
        am.principal("source.ip", ["v"], [ISS])
