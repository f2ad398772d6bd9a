"""RBAC principals for the JWT side of AuthorizationPolicy: requestPrincipals and the request.auth.* `when` keys.

They read what jwt_authn writes (generate/filters/jwt.py): each verified payload in dynamic metadata
`envoy.filters.http.jwt_authn` under the key = its issuer. So every matcher is an OR over the issuers the proxy
verifies (`authn.issuers(snapshot, proxy)`): a request carries a payload under key I only if a token from issuer I
was valid, and a proxy without RequestAuthentication has no payload at all (its matchers never match, so a
`requestPrincipals` ALLOW denies and a `notRequestPrincipals: ["*"]` DENY denies, as in Istio).

Keys (Istio's AuthorizationPolicy conditions reference), values with Istio's string forms (exact, `prefix*`,
`*suffix`, `*` = present and not empty):
- `request.auth.principal` / source `requestPrincipals`: the string `<iss>/<sub>`. Issuers are usually URLs full of
  '/', and subjects may hold '/' too, so splitting the string at a '/' is ambiguous (Istio splits at the last one);
  instead each configured issuer that is a prefix of the value (`<issuer>/`) is tried, and the rest is matched
  against the `sub` claim under that issuer's key. A wildcard value matches exactly the principals whose string
  has that prefix or suffix.
- `request.auth.audiences` (claim `aud`), `request.auth.presenter` (claim `azp`), `request.auth.claims[name]` and
  nested `request.auth.claims[a][b]`: the claim under each issuer's key, as a string or as a list holding one
  matching element (Istio's MetadataListValueMatcher: or_match{list_match{one_of}, the string}).
Values are ORed; the caller wraps notValues / notRequestPrincipals in not_id, as Istio does.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.rbac.v3 import rbac_pb2
from envoy.type.matcher.v3 import metadata_pb2, regex_pb2, string_pb2, value_pb2

from sailmesh.errors import GenerationError
from sailmesh.generate.filters.jwt import METADATA_NAMESPACE

PRINCIPAL = "request.auth.principal"
AUDIENCES = "request.auth.audiences"
PRESENTER = "request.auth.presenter"
CLAIMS = "request.auth.claims"
KEYS = frozenset({PRINCIPAL, AUDIENCES, PRESENTER})  # plus every request.auth.claims[...] key; all HTTP only
CLAIM_OF = {AUDIENCES: "aud", PRESENTER: "azp"}


def handles(key: str) -> bool:
    """Whether `key` is one of the request.auth.* keys this module translates."""
    return key in KEYS or key.startswith(CLAIMS + "[")


def claim_path(key: str) -> list[str]:
    """`request.auth.claims[a][b]` -> ["a", "b"]; `[a.b]` is one claim named "a.b" (Istio's
    extractNameInNestedBrackets). Raises GenerationError for anything else."""
    rest = key.removeprefix(CLAIMS)
    names: list[str] = []
    while rest.startswith("["):
        end = rest.find("]")
        if end < 0 or "[" in rest[1:end]:
            break
        names.append(rest[1:end])
        rest = rest[end + 1:]
    if rest or not names or not all(names):
        raise GenerationError(f"invalid key {key!r}: expected {CLAIMS}[<name>] or {CLAIMS}[<name>][<nested>]")
    return names


def string_matcher(value: str) -> string_pb2.StringMatcher:
    """Istio's matcher.StringMatcher: `*` present (regex .+), `*suffix`, `prefix*`, otherwise exact."""
    if value == "*":
        return _present()
    if value.startswith("*"):
        return string_pb2.StringMatcher(suffix=value[1:])
    if value.endswith("*"):
        return string_pb2.StringMatcher(prefix=value[:-1])
    return string_pb2.StringMatcher(exact=value)


def _present() -> string_pb2.StringMatcher:
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=".+"))


def _metadata(path: Sequence[str], value: value_pb2.ValueMatcher) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(metadata=metadata_pb2.MetadataMatcher(
        filter=METADATA_NAMESPACE, path=[metadata_pb2.MetadataMatcher.PathSegment(key=k) for k in path],
        value=value))


def _or(ids: Sequence[rbac_pb2.Principal]) -> rbac_pb2.Principal:
    """One principal for any of `ids`; with none, one that never matches (no issuer, no payload)."""
    if not ids:
        return rbac_pb2.Principal(not_id=rbac_pb2.Principal(any=True))
    if len(ids) == 1:
        return ids[0]
    return rbac_pb2.Principal(or_ids=rbac_pb2.Principal.Set(ids=list(ids)))


def _subject_matchers(value: str, issuer: str) -> list[string_pb2.StringMatcher]:
    """Matchers on `sub` (under `issuer`'s key) for the principals `<issuer>/<sub>` that `value` matches."""
    head = issuer + "/"
    if value == "*":
        return [_present()]
    if value.startswith("*"):  # the principal ends with `suffix`
        suffix = value[1:]
        out = [string_pb2.StringMatcher(suffix=suffix)]  # the whole suffix lies in sub
        for k, ch in enumerate(suffix):  # or it starts inside the issuer: sub is exactly what follows a '/'
            if ch == "/" and issuer.endswith(suffix[:k]):
                out.append(string_pb2.StringMatcher(exact=suffix[k + 1:]))
        return out
    if value.endswith("*"):  # the principal starts with `prefix`
        prefix = value[:-1]
        if prefix.startswith(head):
            rest = prefix[len(head):]
            return [string_pb2.StringMatcher(prefix=rest) if rest else _present()]
        return [_present()] if head.startswith(prefix) else []
    return [string_pb2.StringMatcher(exact=value[len(head):])] if value.startswith(head) else []


def request_principals(values: Sequence[str], issuers: Sequence[str]) -> rbac_pb2.Principal:
    """`requestPrincipals` / `request.auth.principal` values as one principal (any value, any issuer)."""
    ids = [_metadata([issuer, "sub"], value_pb2.ValueMatcher(string_match=m))
           for value in values for issuer in issuers for m in _subject_matchers(value, issuer)]
    return _or(ids)


def claim_principal(claims: Sequence[str], values: Sequence[str], issuers: Sequence[str]) -> rbac_pb2.Principal:
    """A claim (path of nested names) equal to, or a list holding, one of `values`, under any issuer's payload."""
    any_value = value_pb2.ValueMatcher(or_match=value_pb2.OrMatcher(
        value_matchers=[value_pb2.ValueMatcher(string_match=string_matcher(v)) for v in values]))
    value = value_pb2.ValueMatcher(or_match=value_pb2.OrMatcher(value_matchers=[
        value_pb2.ValueMatcher(list_match=value_pb2.ListMatcher(one_of=any_value)), any_value]))
    return _or([_metadata([issuer, *claims], value) for issuer in issuers] if values else [])


def principal(key: str, values: Sequence[str], issuers: Sequence[str]) -> rbac_pb2.Principal:
    """The principal for a request.auth.* `when` key (or requestPrincipals with key PRINCIPAL): any of `values`,
    reading the payloads of `issuers`. Raises GenerationError for a key this module does not handle."""
    if key == PRINCIPAL:
        return request_principals(values, issuers)
    if key in CLAIM_OF:
        return claim_principal([CLAIM_OF[key]], values, issuers)
    if key.startswith(CLAIMS + "["):
        return claim_principal(claim_path(key), values, issuers)
    raise GenerationError(f"{key!r} is not a request.auth key")
