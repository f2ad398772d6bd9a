"""One AuthorizationPolicy rule -> one Envoy RBAC Policy, as Istio's pilot/pkg/security/authz/model builds it.

Istio's model (model.go, generator.go, matcher/*.go at istio/istio 86c9f01f), mirrored key by key so the output
equals Istio's golden files (tests/unit/test_authz_conformance.py):
- `when` conditions become the base permission (destination.ip/port, connection.sni, experimental.envoy.filters.*)
  or the base principal (source.*, remote.ip, request.headers[...], request.auth.*), each appended in order;
  every `from.source` / `to.operation` is a copy of the base with its fields inserted in front (so the last field
  inserted comes first: principals, requestPrincipals, serviceAccounts, trustDomains, namespaces, remoteIpBlocks,
  ipBlocks; hosts, methods, paths, ports).
- A field is AND-ed: `values` become an OR of matchers, `notValues` a NOT of an OR; a rule is the AND of its fields
  (`any: true` when it has none).
- A value a matcher cannot express for this chain (an HTTP-only field on a TCP chain, a bad CIDR) is an error; Istio's
  `rule.checkError` decides what it does: for ALLOW the whole rule is dropped (the allow policy gets narrower, so the
  rule matches nothing), for DENY and AUDIT only that value is dropped (the rule gets wider: more is denied/audited).

The JWT keys (`requestPrincipals`, `request.auth.principal/audiences/presenter/claims[...]`) go through one hook,
`request_auth_principal`, which matches the claims jwt_authn writes to the dynamic metadata of
`envoy.filters.http.jwt_authn` under `payload` (Istio's EnvoyJwtFilterPayload).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from envoy.config.core.v3 import address_pb2, extension_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.path.match.uri_template.v3 import uri_template_match_pb2
from envoy.type.matcher.v3 import metadata_pb2, path_pb2, regex_pb2, string_pb2, value_pb2
from google.protobuf import wrappers_pb2

from sailmesh.api.models.security import Rule
from sailmesh.generate.common import pack

Permission: TypeAlias = rbac_pb2.Permission
Principal: TypeAlias = rbac_pb2.Principal
StringMatcher: TypeAlias = string_pb2.StringMatcher
ValueMatcher: TypeAlias = value_pb2.ValueMatcher
MetadataMatcher: TypeAlias = metadata_pb2.MetadataMatcher

SPIFFE_PREFIX = "spiffe://"
JWT_FILTER = "envoy.filters.http.jwt_authn"
JWT_PAYLOAD = "payload"  # Istio's filters.EnvoyJwtFilterPayload: jwt_authn payload_in_metadata
METHOD_HEADER = ":method"
HOST_HEADER = ":authority"
# `when` keys that read the verified JWT (Istio: attrRequestPrincipal/Audiences/Presenter/Claims).
REQUEST_AUTH_KEYS = ("request.auth.principal", "request.auth.audiences", "request.auth.presenter",
                     "request.auth.claims")


class Unsupported(Exception):
    """A value this chain cannot match (HTTP-only on TCP, a bad address): Istio's generator error."""


# --- string and header matchers (Istio matcher/string.go, header.go) -------------------------------------------

def exact(v: str, ignore_case: bool = False) -> StringMatcher:
    return StringMatcher(exact=v, ignore_case=ignore_case)


def prefix(v: str, ignore_case: bool = False) -> StringMatcher:
    return StringMatcher(prefix=v, ignore_case=ignore_case)


def suffix(v: str, ignore_case: bool = False) -> StringMatcher:
    return StringMatcher(suffix=v, ignore_case=ignore_case)


def regex(r: str) -> StringMatcher:
    return StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=r))


def go_quote_meta(s: str) -> str:
    """Go's regexp.QuoteMeta: a backslash before each of `\\.+*?()|[]{}^$`."""
    return re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\1", s)


def string_matcher(v: str, with_prefix: str = "") -> StringMatcher:
    """Istio's StringMatcherWithPrefix: `*` any (regex .+), `*x` suffix, `x*` prefix, else exact."""
    if v == "*":
        return regex(".+")
    if v.startswith("*"):
        if not with_prefix:
            return suffix(v[1:])
        return regex(with_prefix + ".*" + go_quote_meta(v[1:]))
    if v.endswith("*"):
        return prefix(with_prefix + v[:-1])
    return exact(with_prefix + v)


def header_matcher(name: str, v: str, ignore_case: bool = False) -> rc.HeaderMatcher:
    """Istio's HeaderMatcher / HostMatcher: `*` presence, `*x` suffix, `x*` prefix, else exact."""
    if v == "*":
        return rc.HeaderMatcher(name=name, present_match=True)
    if v.startswith("*"):
        return rc.HeaderMatcher(name=name, string_match=suffix(v[1:], ignore_case))
    if v.endswith("*"):
        return rc.HeaderMatcher(name=name, string_match=prefix(v[:-1], ignore_case))
    return rc.HeaderMatcher(name=name, string_match=exact(v, ignore_case))


def or_value(matchers: Sequence[ValueMatcher]) -> ValueMatcher:
    """Istio's OrMatcher: one matcher as is, several in an or_match."""
    if len(matchers) == 1:
        return matchers[0]
    return ValueMatcher(or_match=value_pb2.OrMatcher(value_matchers=list(matchers)))


def string_or(values: Sequence[str]) -> ValueMatcher:
    return or_value([ValueMatcher(string_match=string_matcher(v)) for v in values])


def metadata_path(filter_name: str, keys: Sequence[str], value: ValueMatcher) -> MetadataMatcher:
    return MetadataMatcher(filter=filter_name, path=[MetadataMatcher.PathSegment(key=k) for k in keys], value=value)


def metadata_list(filter_name: str, keys: Sequence[str], value: ValueMatcher, extended: bool) -> MetadataMatcher:
    """Istio's MetadataListValueMatcher: a list containing a match; extended (JWT) also a plain value."""
    lst = ValueMatcher(list_match=value_pb2.ListMatcher(one_of=value))
    if extended:
        lst = ValueMatcher(or_match=value_pb2.OrMatcher(value_matchers=[lst, value]))
    return metadata_path(filter_name, keys, lst)


def cidr(value: str) -> address_pb2.CidrRange:
    """Istio's AddrStrToCidrRange: an address (a /32 or /128) or a CIDR, the address as written."""
    try:
        if "/" in value:
            net = ipaddress.ip_network(value, strict=False)
            addr = ipaddress.ip_address(value.partition("/")[0])
            return address_pb2.CidrRange(address_prefix=str(addr), prefix_len=wrappers_pb2.UInt32Value(
                value=net.prefixlen))
        ip = ipaddress.ip_address(value)
    except ValueError as e:
        raise Unsupported(f"invalid address {value!r}: {e}") from None
    return address_pb2.CidrRange(address_prefix=str(ip), prefix_len=wrappers_pb2.UInt32Value(value=ip.max_prefixlen))


def port_number(value: str) -> int:
    if not value.isdigit() or int(value) > 65535:
        raise Unsupported(f"invalid port {value}")
    return int(value)


def bracket_name(s: str) -> str:
    """Istio's extractNameInBrackets: `[NAME]` -> NAME."""
    if not (s.startswith("[") and s.endswith("]")):
        raise Unsupported(f"expecting format [<NAME>], but found {s}")
    return s[1:-1]


def nested_bracket_names(s: str) -> list[str]:
    """Istio's extractNameInNestedBrackets: `[a][b]` -> [a, b]; `[a.b]` -> [a.b]."""
    claims: list[str] = []
    begin = 0
    while begin < len(s):
        end = -1
        if s[begin] == "[":
            for i in range(begin + 1, len(s)):
                if s[i] == "[":
                    break
                if s[i] == "]":
                    end = i
                    break
        if end == -1:
            return [bracket_name(s)]
        claims.append(s[begin + 1:end])
        begin = end + 1
    return claims


# --- principals (Istio generator.go, principal side) ------------------------------------------------------------

def authenticated(m: StringMatcher) -> Principal:
    """The peer certificate's identity (URI SAN, else subject), proven by mTLS."""
    return Principal(authenticated=Principal.Authenticated(principal_name=m))


def namespace_principal(value: str) -> Principal:
    """`foo` -> regex `.*/ns/foo/.*` on the SPIFFE ID (`*` in the value: `.*`)."""
    ns = ".*".join(go_quote_meta(p) for p in value.split("*"))
    return authenticated(regex(f".*/ns/{ns}/.*"))


def service_account_principal(policy_ns: str, value: str) -> Principal:
    ns, sep, sa = value.partition("/")
    if not sep:
        ns, sa = policy_ns, value
    return authenticated(regex(f"spiffe://.+/ns/{go_quote_meta(ns)}/(.+/|)sa/{go_quote_meta(sa)}(/.+)?"))


def trust_domain_principal(value: str) -> Principal:
    if value == "*":
        return authenticated(prefix(SPIFFE_PREFIX))
    if "*" not in value:
        return authenticated(prefix(f"{SPIFFE_PREFIX}{value}/"))
    head, _, tail = value.partition("*")
    return authenticated(regex(f"spiffe://{go_quote_meta(head)}[^/]*{go_quote_meta(tail)}/.*"))


def jwt_claim(claim: str, m: StringMatcher) -> Principal:
    return Principal(metadata=metadata_path(JWT_FILTER, [JWT_PAYLOAD, claim], ValueMatcher(string_match=m)))


MATCH_ANY = regex(".+")


def request_principals(values: Sequence[str]) -> Principal | None:
    """`iss/sub` values (issuer up to the last `/`), with Istio's wildcards on either side."""
    out = []
    for value in values:
        idx = value.rfind("/")
        found = idx >= 0
        iss, sub = (value[:idx], value[idx + 1:]) if found else (value, "")
        if value == "*":
            m_iss, m_sub = MATCH_ANY, MATCH_ANY
        elif value.startswith("*"):
            if found:
                m_iss = MATCH_ANY if iss == "*" else suffix(iss[1:])
                m_sub = exact(sub)
            else:
                m_iss, m_sub = MATCH_ANY, suffix(value[1:])
        elif value.endswith("*"):
            if found:
                m_iss = exact(iss)
                m_sub = MATCH_ANY if sub == "*" else prefix(sub[:-1])
            else:
                m_iss, m_sub = prefix(value[:-1]), MATCH_ANY
        else:
            m_iss, m_sub = exact(iss), exact(sub)
        out.append(Principal(and_ids=Principal.Set(ids=[jwt_claim("iss", m_iss), jwt_claim("sub", m_sub)])))
    if len(out) == 1:
        return out[0]
    return Principal(or_ids=Principal.Set(ids=out)) if out else None


def request_auth_principal(key: str, values: Sequence[str], for_tcp: bool) -> Principal | None:
    """THE JWT hook: a `requestPrincipals` / `request.auth.*` key and its values -> a principal over the claims
    jwt_authn put in metadata (`envoy.filters.http.jwt_authn` / `payload` / claim...). HTTP only."""
    if for_tcp:
        raise Unsupported(f"{key!r} is HTTP only")
    if key == "request.auth.principal":
        return request_principals(values)
    if key == "request.auth.audiences":
        return Principal(metadata=metadata_list(JWT_FILTER, [JWT_PAYLOAD, "aud"], string_or(values), True))
    if key == "request.auth.presenter":
        return Principal(metadata=metadata_list(JWT_FILTER, [JWT_PAYLOAD, "azp"], string_or(values), True))
    if key.startswith("request.auth.claims"):
        claims = nested_bracket_names(key[len("request.auth.claims"):])
        return Principal(metadata=metadata_list(JWT_FILTER, [JWT_PAYLOAD, *claims], string_or(values), True))
    raise Unsupported(f"unknown attribute {key}")


def _principal_gen(key: str, policy_ns: str) -> Callable[[str, bool], Principal]:
    if key == "source.ip":
        return lambda v, _t: Principal(direct_remote_ip=cidr(v))
    if key == "remote.ip":
        return lambda v, _t: Principal(remote_ip=cidr(v))
    if key == "source.namespace":
        return lambda v, _t: namespace_principal(v)
    if key == "source.trustDomain":
        return lambda v, _t: trust_domain_principal(v)
    if key == "source.serviceAccount":
        return lambda v, _t: service_account_principal(policy_ns, v)
    if key == "source.principal":
        return lambda v, _t: authenticated(string_matcher(v, SPIFFE_PREFIX))
    if key.startswith("request.headers"):
        name = key[len("request.headers"):]

        def header(v: str, for_tcp: bool) -> Principal:
            if for_tcp:
                raise Unsupported(f"{key!r} is HTTP only")
            return Principal(header=header_matcher(bracket_name(name), v))
        return header
    raise Unsupported(f"unknown attribute {key}")


# --- permissions (Istio generator.go, permission side) ----------------------------------------------------------

def _http_only(key: str, for_tcp: bool) -> None:
    if for_tcp:
        raise Unsupported(f"{key!r} is HTTP only")


def path_permission(v: str) -> Permission:
    """Istio's path matcher: `{*}`/`{**}` templates -> uri_template; else exact, `x*` prefix, `*x` suffix, `*`."""
    if "{*}" in v or "{**}" in v:
        tmpl = v.replace("{**}", "**").replace("{*}", "*")
        cfg = uri_template_match_pb2.UriTemplateMatchConfig(path_template=tmpl)
        return Permission(uri_template=extension_pb2.TypedExtensionConfig(name="uri-template", typed_config=pack(cfg)))
    return Permission(url_path=path_pb2.PathMatcher(path=string_matcher(v)))


def envoy_filter_value(key: str, values: Sequence[str]) -> Permission:
    """experimental.envoy.filters.a.b[c]: metadata of filter envoy.filters.a.b at key c; `[v]` values in a list."""
    parts = key.removeprefix("experimental.").removesuffix("]").split("[", 1)
    if len(parts) != 2:
        raise Unsupported(f"invalid key: {key}")
    matchers = []
    for v in values:
        if v.startswith("[") and v.endswith("]"):
            sm = ValueMatcher(string_match=string_matcher(v.strip("[]")))
            matchers.append(ValueMatcher(list_match=value_pb2.ListMatcher(one_of=sm)))
        else:
            matchers.append(ValueMatcher(string_match=string_matcher(v)))
    return Permission(metadata=metadata_path(parts[0], [parts[1]], or_value(matchers)))


def _permission_gen(key: str) -> Callable[[str, bool], Permission]:
    if key == "destination.ip":
        return lambda v, _t: Permission(destination_ip=cidr(v))
    if key == "destination.port":
        return lambda v, _t: Permission(destination_port=port_number(v))
    if key == "connection.sni":
        return lambda v, _t: Permission(requested_server_name=string_matcher(v))
    if key == HOST_HEADER:
        def host(v: str, for_tcp: bool) -> Permission:
            _http_only(key, for_tcp)
            return Permission(header=header_matcher(HOST_HEADER, v, ignore_case=True))
        return host
    if key == METHOD_HEADER:
        def method(v: str, for_tcp: bool) -> Permission:
            _http_only(key, for_tcp)
            return Permission(header=header_matcher(METHOD_HEADER, v))
        return method
    if key == "path-matcher":
        def path(v: str, for_tcp: bool) -> Permission:
            _http_only(key, for_tcp)
            return path_permission(v)
        return path
    raise Unsupported(f"unknown attribute {key}")


# --- the model ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Field:
    """One key of a rule with its values and notValues; `extended` keys build one matcher from all values."""

    key: str
    values: tuple[str, ...]
    not_values: tuple[str, ...]
    principal_side: bool
    extended: bool = False


class Rejected(Exception):
    """A rule Istio skips (its message is Istio's reason)."""


def _field(key: str, values: Sequence[str] | None, not_values: Sequence[str] | None, principal_side: bool,
           extended: bool = False) -> Field | None:
    if not values and not not_values:
        return None
    return Field(key, tuple(values or ()), tuple(not_values or ()), principal_side, extended)


PERMISSION_WHEN = ("destination.ip", "destination.port", "connection.sni")
PRINCIPAL_WHEN = ("source.ip", "remote.ip", "source.namespace", "source.trustDomain", "source.serviceAccount",
                  "source.principal")


def when_field(key: str, values: Sequence[str] | None, not_values: Sequence[str] | None) -> Field | None:
    """A `when` condition as a field on its side (Istio model.New's switch); Rejected for an unknown key."""
    if key in PERMISSION_WHEN:
        return _field(key, values, not_values, False)
    if key.startswith("experimental.envoy.filters."):
        return _field(key, values, not_values, False, extended=True)
    if key in PRINCIPAL_WHEN or key.startswith("request.headers"):
        return _field(key, values, not_values, True)
    if key in REQUEST_AUTH_KEYS[:3] or key.startswith("request.auth.claims"):
        return _field(key, values, not_values, True, extended=True)
    raise Rejected(f"unknown attribute {key}")


@dataclass(frozen=True)
class RuleModel:
    """A rule as Istio's Model: an OR of permission field lists and an OR of principal field lists."""

    permissions: tuple[tuple[Field, ...], ...]
    principals: tuple[tuple[Field, ...], ...]

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(f.key for fl in (*self.permissions, *self.principals) for f in fl)


def rule_model(rule: Rule, trust_domains: Sequence[str] = ()) -> RuleModel:
    """Istio's model.New (+ MigrateTrustDomain when trust domain aliases are configured)."""
    base_perm: list[Field] = []
    base_princ: list[Field] = []
    for cond in rule.when or ():
        f = when_field(cond.key or "", cond.values, cond.not_values)
        if f is not None:
            (base_princ if f.principal_side else base_perm).append(f)
    principals = []
    for frm in rule.from_ or ():
        merged = list(base_princ)
        s = frm.source
        if s is not None:
            front = [
                _field("source.ip", s.ip_blocks, s.not_ip_blocks, True),
                _field("remote.ip", s.remote_ip_blocks, s.not_remote_ip_blocks, True),
                _field("source.namespace", s.namespaces, s.not_namespaces, True),
                _field("source.trustDomain", s.trust_domains, s.not_trust_domains, True),
                _field("source.serviceAccount", s.service_accounts, s.not_service_accounts, True),
                _field("request.auth.principal", s.request_principals, s.not_request_principals, True, True),
                _field("source.principal", s.principals, s.not_principals, True),
            ]
            for f in front:
                if f is not None:
                    merged.insert(0, f)
        principals.append(tuple(merged))
    if not rule.from_:
        principals.append(tuple(base_princ))
    permissions = []
    for to in rule.to or ():
        merged = list(base_perm)
        o = to.operation
        if o is not None:
            for f in (_field("destination.port", o.ports, o.not_ports, False),
                      _field("path-matcher", o.paths, o.not_paths, False),
                      _field(METHOD_HEADER, o.methods, o.not_methods, False),
                      _field(HOST_HEADER, o.hosts, o.not_hosts, False)):
                if f is not None:
                    merged.insert(0, f)
        permissions.append(tuple(merged))
    if not rule.to:
        permissions.append(tuple(base_perm))
    if trust_domains:
        principals = [tuple(migrate_trust_domain(f, trust_domains) for f in fl) for fl in principals]
    return RuleModel(tuple(permissions), tuple(principals))


def migrate_trust_domain(f: Field, trust_domains: Sequence[str]) -> Field:
    """Istio's Model.MigrateTrustDomain for one field: principals get every alias, trust domains expand."""
    if f.key == "source.principal":
        return Field(f.key, replace_trust_domain_aliases(f.values, trust_domains),
                     replace_trust_domain_aliases(f.not_values, trust_domains), f.principal_side)
    if f.key == "source.trustDomain":
        return Field(f.key, expand_trust_domains(f.values, trust_domains),
                     expand_trust_domains(f.not_values, trust_domains), f.principal_side)
    return f


def replace_trust_domain_aliases(principals: Sequence[str], trust_domains: Sequence[str]) -> tuple[str, ...]:
    """Istio's Bundle.ReplaceTrustDomainAliases: a principal of the local trust domain (or cluster.local) is
    repeated for each trust domain and alias; `*` trust domains and foreign ones stay as they are."""
    out: list[str] = []
    for p in principals:
        parts = p.split("/")
        if len(parts) != 5 or parts[0] == "*":
            out.append(p)
            continue
        td = parts[0]
        if _string_match(td, trust_domains) or td == "cluster.local":
            seen: list[str] = []
            for t in trust_domains:
                new = p if _suffix_match(t, td) else "/".join([t, *parts[1:]])
                if new not in seen:
                    seen.append(new)
            out.extend(seen)
        else:
            out.append(p)
    return tuple(out)


def _string_match(a: str, patterns: Sequence[str]) -> bool:
    """Istio trustdomain stringMatch: equal, `*`, or a prefix/suffix wildcard on either side."""
    return any(a == s or s == "*" or _prefix_match(a, s) or _prefix_match(s, a) or _suffix_match(a, s)
               or _suffix_match(s, a) for s in patterns)


def _prefix_match(a: str, pattern: str) -> bool:
    return pattern.endswith("*") and a.startswith(pattern[:-1])


def _suffix_match(a: str, pattern: str) -> bool:
    """Istio trustdomain suffixMatch: `*x` in the pattern matches a trust domain ending in x."""
    return pattern.startswith("*") and a.endswith(pattern[1:])


def expand_trust_domains(values: Sequence[str], trust_domains: Sequence[str]) -> tuple[str, ...]:
    out: list[str] = []
    for v in values:
        for x in (trust_domains if v in trust_domains else (v,)):
            if x not in out:
                out.append(x)
    return tuple(out)


# --- generation (Istio Model.Generate) --------------------------------------------------------------------------

ALLOW = rbac_pb2.RBAC.ALLOW


def _check(action: int, err: Unsupported) -> None:
    """Istio's rule.checkError: ALLOW propagates (the rule is dropped); DENY/AUDIT drop only the value."""
    if action == ALLOW:
        raise err


def _permissions_of(f: Field, for_tcp: bool, action: int) -> list[Permission]:
    out: list[Permission] = []
    if f.extended:
        for vals, negate in ((f.values, False), (f.not_values, True)):
            if not vals:
                continue
            try:
                p = envoy_filter_value(f.key, vals)
            except Unsupported as e:
                _check(action, e)
                continue
            out.append(Permission(not_rule=p) if negate else p)
        return out
    gen = _permission_gen(f.key)
    for vals, negate in ((f.values, False), (f.not_values, True)):
        ors = []
        for v in vals:
            try:
                ors.append(gen(v, for_tcp))
            except Unsupported as e:
                _check(action, e)
        if ors:
            p = Permission(or_rules=Permission.Set(rules=ors))
            out.append(Permission(not_rule=p) if negate else p)
    return out


RequestAuthMatcher = Callable[[str, Sequence[str]], "Principal | None"]


def _principals_of(f: Field, for_tcp: bool, action: int, policy_ns: str,
                   request_auth: RequestAuthMatcher | None) -> list[Principal]:
    out: list[Principal] = []
    if f.extended:
        for vals, negate in ((f.values, False), (f.not_values, True)):
            if not vals:
                continue
            try:
                p = request_auth_principal(f.key, vals, for_tcp) if request_auth is None or for_tcp \
                    else request_auth(f.key, vals)
            except Unsupported as e:
                _check(action, e)
                continue
            if p is not None:
                out.append(Principal(not_id=p) if negate else p)
        return out
    gen = _principal_gen(f.key, policy_ns)
    for vals, negate in ((f.values, False), (f.not_values, True)):
        ors = []
        for v in vals:
            try:
                ors.append(gen(v, for_tcp))
            except Unsupported as e:
                _check(action, e)
        if ors:
            p = Principal(or_ids=Principal.Set(ids=ors))
            out.append(Principal(not_id=p) if negate else p)
    return out


def generate(model: RuleModel, for_tcp: bool, action: int, policy_ns: str,
             request_auth: RequestAuthMatcher | None = None) -> rbac_pb2.Policy:
    """Istio's Model.Generate (useAuthenticated: principals from the peer certificate). Raises Unsupported when
    an ALLOW rule cannot be expressed for this chain (Istio skips the rule). `request_auth` replaces Istio's
    JWT matchers (request_auth_principal) for the request.auth keys when given."""
    policy = rbac_pb2.Policy()
    for fields in model.permissions:
        perms = [p for f in fields for p in _permissions_of(f, for_tcp, action)] or [Permission(any=True)]
        policy.permissions.append(Permission(and_rules=Permission.Set(rules=perms)))
    for fields in model.principals:
        ids = [p for f in fields for p in _principals_of(f, for_tcp, action, policy_ns, request_auth)]
        ids = ids or [Principal(any=True)]
        policy.principals.append(Principal(and_ids=Principal.Set(ids=ids)))
    return policy


def match_never() -> rbac_pb2.Policy:
    """Istio's rbacPolicyMatchNever: the policy of a rule-less AuthorizationPolicy (`spec: {}`)."""
    return rbac_pb2.Policy(permissions=[Permission(not_rule=Permission(any=True))],
                           principals=[Principal(not_id=Principal(any=True))])
