"""Envoy's RBAC filter replayed on its config protos: the decision for one request, and the rules in words.

Pure functions of envoy.extensions.filters.http.rbac.v3.RBAC (and the network filter's RBAC), following
envoy/config/rbac/v3/rbac.proto: a policy matches when any of its permissions and any of its principals match;
an ALLOW config lets a request through only when some policy matches, a DENY config stops it when one does, a LOG
config only marks it. Istio's HTTP chain runs ext_authz (CUSTOM), then AUDIT, DENY, ALLOW filters
(Istio: "CUSTOM, DENY, ALLOW" precedence, istio.io/latest/docs/concepts/security/#implicit-enablement); with no
ALLOW filter every request that no DENY stopped is allowed. Metadata matchers read the dynamic metadata earlier
filters wrote (jwt_authn's verified payload: requestPrincipals and request.auth.claims rules), each check
recorded in words; facts the simulation cannot know (other metadata, the filter state) count as "not matching"
and are said so.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from envoy.config.core.v3 import address_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.matcher.v3 import string_pb2, value_pb2

from sailmesh.explain.routematch import Request, header_match, string_match
from sailmesh.explain.routematch import lookup_metadata as _lookup
from sailmesh.explain.routematch import metadata_match as metadata_match
from sailmesh.explain.routematch import value_match as value_match

JWT_FILTER = "envoy.filters.http.jwt_authn"  # its verified payload is metadata the simulation knows
ACTIONS = {rbac_pb2.RBAC.ALLOW: "ALLOW", rbac_pb2.RBAC.DENY: "DENY", rbac_pb2.RBAC.LOG: "AUDIT"}


@dataclass(frozen=True)
class Connection:
    """What the destination proxy knows about the connection: the peer's mTLS identity, addresses, SNI."""

    principal: str = ""  # spiffe://... when the hop is mutual TLS, "" when plaintext
    source_ip: str = ""
    destination_ip: str = ""
    destination_port: int = 0
    sni: str = ""
    unknown: list[str] = field(default_factory=list)  # facts a matcher needed that the simulation does not have
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)  # dynamic metadata by filter name
    checks: list[str] = field(default_factory=list)  # every metadata (claim) check made, in words, in order


def _in_cidr(ip: str, r: address_pb2.CidrRange) -> bool:
    try:
        net = ipaddress.ip_network(f"{r.address_prefix}/{r.prefix_len.value if r.HasField('prefix_len') else 32}",
                                   strict=False)
        return ipaddress.ip_address(ip) in net
    except ValueError:
        return False


_LOGIC: dict[str, tuple[str, Callable[[Iterable[bool]], bool]]] = {
    "and_rules": ("rules", all), "or_rules": ("rules", any), "and_ids": ("ids", all), "or_ids": ("ids", any)}


def _logic(m: rbac_pb2.Permission | rbac_pb2.Principal, kind: str | None,
           leaf: Callable[[Any], bool]) -> bool | None:
    """any / and / or / not of a Permission or Principal (they share the shape); None for a leaf matcher."""
    if kind == "any":
        return bool(m.any)
    if kind in _LOGIC:
        field, op = _LOGIC[kind]
        return op(leaf(x) for x in getattr(getattr(m, kind), field))
    if kind in ("not_rule", "not_id"):
        return not leaf(getattr(m, kind))
    return None


def matches(m: rbac_pb2.Permission | rbac_pb2.Principal, req: Request, conn: Connection) -> bool:
    """A Permission or a Principal against the request and its connection."""
    kind = m.WhichOneof("rule") if isinstance(m, rbac_pb2.Permission) else m.WhichOneof("identifier")
    combined = _logic(m, kind, lambda x: matches(x, req, conn))
    if combined is not None:
        return combined
    if kind == "header":
        return header_match(m.header, req)[0]
    if kind == "url_path":
        return string_match(m.url_path.path, req.path_only)
    if isinstance(m, rbac_pb2.Permission):
        if kind == "destination_ip":
            return _in_cidr(conn.destination_ip, m.destination_ip)
        if kind == "destination_port":
            return bool(conn.destination_port == m.destination_port)
        if kind == "destination_port_range":
            return bool(m.destination_port_range.start <= conn.destination_port < m.destination_port_range.end)
        if kind == "requested_server_name":
            return string_match(m.requested_server_name, conn.sni)
    elif kind == "authenticated":
        if not conn.principal:
            return False  # plaintext: no peer certificate, nothing authenticated
        return not m.authenticated.HasField("principal_name") or string_match(m.authenticated.principal_name,
                                                                                conn.principal)
    elif kind in ("source_ip", "direct_remote_ip", "remote_ip"):
        return _in_cidr(conn.source_ip, getattr(m, kind))
    if kind == "metadata" and (m.metadata.filter in conn.metadata or m.metadata.filter == JWT_FILTER):
        ok = metadata_match(m.metadata, conn.metadata)
        value = _lookup(conn.metadata, m.metadata)
        shown = "absent" if value is None else f"is {value!r}"
        conn.checks.append(f"{describe(m)} ({shown}): {'matches' if ok else 'does not match'}")
        return ok
    conn.unknown.append(f"{type(m).__name__.lower()} {kind}")
    return False


def policy_matches(policy: rbac_pb2.Policy, req: Request, conn: Connection) -> bool:
    return any(matches(p, req, conn) for p in policy.permissions) and \
        any(matches(p, req, conn) for p in policy.principals)


@dataclass(frozen=True)
class Decision:
    """One RBAC config's verdict: its action, whether the request passes, and the policy that decided."""

    action: str
    allowed: bool
    policy: str  # the matching policy (ALLOW/DENY/AUDIT), "" when none matched
    reason: str
    checks: tuple[str, ...] = ()  # per policy rule, the claim (metadata) checks made, in words


def decide(rules: rbac_pb2.RBAC, req: Request, conn: Connection) -> Decision:
    """envoy.config.rbac.v3.RBAC against one request (policies tried in name order, as Envoy's map)."""
    action = ACTIONS.get(rules.action, rbac_pb2.RBAC.Action.Name(rules.action))
    matched, checks = "", []
    for name, pol in sorted(rules.policies.items()):
        start = len(conn.checks)
        ok = policy_matches(pol, req, conn)
        if len(conn.checks) > start:
            checks.append(f"{rule_label(name)}: {'; '.join(conn.checks[start:])}")
        if ok:
            matched = name
            break
    return _decision(rules, action, matched, tuple(checks))


def _decision(rules: rbac_pb2.RBAC, action: str, matched: str, checks: tuple[str, ...]) -> Decision:
    by = f"AuthorizationPolicy {rule_label(matched)}"
    if rules.action == rbac_pb2.RBAC.ALLOW:
        if matched:
            return Decision(action, True, matched, f"allowed by {by}", checks)
        return Decision(action, False, "", "no ALLOW policy matches (" +
                        ", ".join(sorted({policy_label(n) for n in rules.policies})) + ")", checks)
    if rules.action == rbac_pb2.RBAC.DENY:
        if matched:
            return Decision(action, False, matched, f"denied by {by}", checks)
        return Decision(action, True, "", "no DENY policy matches", checks)
    return Decision(action, True, matched, f"audited by {by}" if matched else "no AUDIT policy matches", checks)


def rule_label(name: str) -> str:
    """`ns[default]-policy[reviews-viewer]-rule[0]` as `reviews-viewer.default, rule 0`."""
    rule = name.rsplit("-rule[", 1)[1].rstrip("]") if "-rule[" in name else ""
    return policy_label(name) + (f", rule {rule}" if rule else "")


def policy_label(name: str) -> str:
    """Istio's `ns[default]-policy[reviews-viewer]-rule[0]` as `reviews-viewer.default` (istioctl's form)."""
    if "ns[" in name and "-policy[" in name:
        ns = name.split("ns[", 1)[1].split("]", 1)[0]
        pol = name.split("-policy[", 1)[1].split("]", 1)[0]
        return f"{pol}.{ns}"
    return name


def _string(m: string_pb2.StringMatcher) -> str:
    kind = m.WhichOneof("match_pattern")
    value = m.safe_regex.regex if kind == "safe_regex" else getattr(m, kind or "exact", "")
    return {"exact": f"{value}", "prefix": f"{value}*", "suffix": f"*{value}", "contains": f"*{value}*",
            "safe_regex": f"~{value}"}.get(kind or "", str(value))


def _describe_logic(m: rbac_pb2.Permission | rbac_pb2.Principal, kind: str | None, leaf: Callable[[Any], str],
                    everything: str, nothing: str) -> str | None:
    """any / and / or / not in words (Permission and Principal share the shape); None for a leaf matcher."""
    if kind == "any":
        return everything
    if kind in _LOGIC:
        field, op = _LOGIC[kind]
        joined = (" and " if op is all else " or ").join(_group(leaf(x)) for x in getattr(getattr(m, kind), field))
        return joined or everything
    if kind in ("not_rule", "not_id"):
        inner = leaf(getattr(m, kind))
        return nothing if inner == everything else f"not ({inner})"
    return None


def describe(m: rbac_pb2.Permission | rbac_pb2.Principal) -> str:
    """A Permission (`method GET and path /api/*`) or a Principal (`peer spiffe://...`) in words."""
    permission = isinstance(m, rbac_pb2.Permission)
    kind = m.WhichOneof("rule") if isinstance(m, rbac_pb2.Permission) else m.WhichOneof("identifier")
    combined = _describe_logic(m, kind, describe, *(("any request", "nothing") if permission else ("anyone", "no one")))
    if combined is not None:
        return combined
    if kind == "header":
        return _header(m.header)
    if kind == "url_path":
        return f"path {_string(m.url_path.path)}"
    if kind in ("source_ip", "direct_remote_ip", "remote_ip", "destination_ip"):
        r = getattr(m, kind)
        return f"{kind.replace('_', ' ')} {r.address_prefix}/{r.prefix_len.value}"
    if kind == "destination_port":
        return f"port {getattr(m, kind)}"
    if kind == "requested_server_name":
        return f"SNI {_string(getattr(m, kind))}"
    if kind == "authenticated":
        a = getattr(m, kind)
        return f"peer {_string(a.principal_name)}" if a.HasField("principal_name") else "any authenticated peer"
    if kind == "metadata":
        md = getattr(m, kind)
        keys = [s.key for s in md.path]
        where = f"token claim {'.'.join(keys[1:])}" if md.filter == JWT_FILTER and len(keys) > 1 \
            else f"metadata {md.filter}:{'.'.join(keys)}"
        return f"{where}{' not' if md.invert else ''} {_value(md.value)}"
    return str(kind)


def _value(v: value_pb2.ValueMatcher) -> str:
    """A ValueMatcher in words (`'admin'`, `has 'group1'`, `'a' or has 'a'`)."""
    kind = v.WhichOneof("match_pattern")
    if kind == "string_match":
        return repr(_string(v.string_match))
    if kind == "list_match":
        return f"has {_value(v.list_match.one_of)}"
    if kind == "or_match":
        ms = list(v.or_match.value_matchers)
        if len(ms) == 2 and ms[0].WhichOneof("match_pattern") == "list_match" and ms[0].list_match.one_of == ms[1]:
            return f"{_value(ms[1])} (or a list holding it)"  # Istio's claim matcher: a value or a list
        return " or ".join(dict.fromkeys(_value(x) for x in ms))
    if kind == "present_match":
        return "present"
    return str(getattr(v, kind or "null_match"))


def _header(h: rc.HeaderMatcher) -> str:
    name = h.name
    kind = h.WhichOneof("header_match_specifier")
    value = _string(h.string_match) if kind == "string_match" else str(getattr(h, kind or "name"))
    label = {":method": "method", ":authority": "host", ":path": "path"}.get(name, f"header {name}")
    return f"{label} {value}" if kind != "present_match" else f"header {name} present"


def _group(text: str) -> str:
    return f"({text})" if (" or " in text or " and " in text) and not text.startswith("(") else text


@dataclass(frozen=True)
class RuleRow:
    """One row of `x authz check`: action, policy, rule index, its `from` and `to` in words."""

    action: str
    policy: str
    rule: str
    principals: str
    permissions: str
    dry_run: bool


def rule_rows(rules: rbac_pb2.RBAC, dry_run: bool = False) -> Iterator[RuleRow]:
    """Every policy of an RBAC config, readable."""
    action = ACTIONS.get(rules.action, str(rules.action))
    for name, pol in sorted(rules.policies.items()):
        rule = name.rsplit("-rule[", 1)[1].rstrip("]") if "-rule[" in name else "-"
        yield RuleRow(action, policy_label(name), rule,
                      " or ".join(_group(describe(p)) for p in pol.principals) or "no one",
                      " or ".join(_group(describe(p)) for p in pol.permissions) or "nothing",
                      dry_run)
