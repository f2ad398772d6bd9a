"""RateLimit (policy.sailmesh.io/v1alpha1): sailmesh's rate-limit API, parsed into typed rules with every problem
named by field (docs/ratelimit.md)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sailmesh.api.types import BadValue, parse_duration

GROUP = "policy.sailmesh.io"
KIND = "RateLimit"
MIN_INTERVAL = 0.05  # Envoy's token bucket refuses a fill interval under 50 ms
KEYS = ("header", "remoteAddress", "sourcePrincipal")
STRING_MATCH = ("exact", "prefix", "regex")
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
HEADER_NAME = re.compile(r"^:?[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


@dataclass(frozen=True)
class StringMatch:
    """Istio's StringMatch: exactly one of exact, prefix, regex."""

    kind: str
    value: str


@dataclass(frozen=True)
class RequestMatch:
    """Which requests a rule counts (all conditions must hold); empty: every request."""

    uri: StringMatch | None = None
    method: StringMatch | None = None
    headers: tuple[tuple[str, StringMatch], ...] = ()


@dataclass(frozen=True)
class Rule:
    """One token bucket per key value: `requests` tokens, `tokens_per_fill` added every `per` seconds."""

    name: str
    match: RequestMatch
    requests: int
    per: float
    tokens_per_fill: int
    key: str = ""  # "", "header", "remoteAddress", "sourcePrincipal"
    header: str = ""  # the header whose value is the key (key == "header")


@dataclass(frozen=True)
class RateLimitSpec:
    selector: tuple[tuple[str, str], ...]
    rules: tuple[Rule, ...]
    status: int
    headers: tuple[tuple[str, str], ...]
    provider: str = ""  # an envoyRateLimit extensionProvider: global limits counted by that service


# A global limit is a fixed window of one of the units of Envoy's RLS protocol
GLOBAL_UNITS = {1.0: "SECOND", 60.0: "MINUTE", 3600.0: "HOUR", 86400.0: "DAY"}


def _string_match(value: Any, path: str, problems: list[tuple[str, str]]) -> StringMatch | None:
    if not isinstance(value, Mapping) or len(value) != 1 or next(iter(value)) not in STRING_MATCH:
        problems.append((path, "must set exactly one of exact, prefix, regex"))
        return None
    kind, text = next(iter(value.items()))
    if not isinstance(text, str):
        problems.append((f"{path}.{kind}", "must be a string"))
        return None
    if kind == "regex":
        try:
            re.compile(text)
        except re.error as e:
            problems.append((f"{path}.regex", f"invalid regular expression: {e}"))
            return None
    return StringMatch(kind, text)


def _unknown(value: Mapping[str, Any], allowed: tuple[str, ...], path: str, problems: list[tuple[str, str]]) -> None:
    for k in value:
        if k not in allowed:
            where = f"{path}.{k}" if path else str(k)
            problems.append((where, f"unknown field (allowed: {', '.join(allowed)})"))


def _match(value: Any, path: str, problems: list[tuple[str, str]]) -> RequestMatch:
    if value is None:
        return RequestMatch()
    if not isinstance(value, Mapping):
        problems.append((path, "must be an object with uri, method, headers"))
        return RequestMatch()
    _unknown(value, ("uri", "method", "headers"), path, problems)
    uri = _string_match(value["uri"], f"{path}.uri", problems) if "uri" in value else None
    method = _string_match(value["method"], f"{path}.method", problems) if "method" in value else None
    headers = []
    raw = value.get("headers")
    if raw is not None and not isinstance(raw, Mapping):
        problems.append((f"{path}.headers", "must map header names to string matches"))
    for name, m in (raw or {}).items() if isinstance(raw, Mapping) else ():
        if not isinstance(name, str) or not HEADER_NAME.match(name):
            problems.append((f"{path}.headers.{name}", "invalid header name"))
            continue
        sm = _string_match(m, f"{path}.headers.{name}", problems)
        if sm is not None:
            headers.append((name.lower(), sm))
    return RequestMatch(uri, method, tuple(headers))


def _positive_int(value: Any, path: str, problems: list[tuple[str, str]]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value > 4294967295:
        problems.append((path, "must be an integer from 1 to 4294967295"))
        return 1
    return value


def _rule(i: int, value: Any, names: set[str], problems: list[tuple[str, str]]) -> Rule | None:
    path = f"spec.rules[{i}]"
    if not isinstance(value, Mapping):
        problems.append((path, "must be an object with match, limit, key"))
        return None
    _unknown(value, ("name", "match", "limit", "key"), path, problems)
    name = value.get("name", f"rule-{i}")
    if not isinstance(name, str) or not NAME.match(name):
        problems.append((f"{path}.name", "must be a DNS label (lower-case letters, digits, '-')"))
        name = f"rule-{i}"
    elif name in names:
        problems.append((f"{path}.name", f"duplicate rule name {name!r}"))
    names.add(name)
    limit = value.get("limit")
    if not isinstance(limit, Mapping):
        problems.append((f"{path}.limit", "required: {requests: N, per: DURATION}"))
        return None
    _unknown(limit, ("requests", "per", "tokensPerFill"), f"{path}.limit", problems)
    requests = _positive_int(limit.get("requests"), f"{path}.limit.requests", problems)
    per = MIN_INTERVAL
    try:
        per = parse_duration(limit.get("per"))
        if per < MIN_INTERVAL:
            problems.append((f"{path}.limit.per", "must be at least 50ms (Envoy's shortest fill interval)"))
    except BadValue as e:
        problems.append((f"{path}.limit.per", str(e)))
    fill = _positive_int(limit["tokensPerFill"], f"{path}.limit.tokensPerFill", problems) \
        if "tokensPerFill" in limit else requests
    key, header = "", ""
    raw_key = value.get("key")
    if raw_key is not None:
        if not isinstance(raw_key, Mapping) or len(raw_key) > 1:
            problems.append((f"{path}.key", f"must set at most one of {', '.join(KEYS)}"))
        elif raw_key:
            key = str(next(iter(raw_key)))
            if key not in KEYS:
                problems.append((f"{path}.key.{key}", f"unknown key (allowed: {', '.join(KEYS)})"))
                key = ""
            elif key == "header":
                header = raw_key["header"]
                if not isinstance(header, str) or not HEADER_NAME.match(header) or header.startswith(":"):
                    problems.append((f"{path}.key.header", "must be a header name"))
                    header = ""
                header = header.lower()
            elif raw_key[key] not in (None, {}):
                problems.append((f"{path}.key.{key}", "takes no value ({})"))
    return Rule(str(name), _match(value.get("match"), f"{path}.match", problems), requests, per, fill, key, header)


def parse(spec: Any) -> tuple[RateLimitSpec, list[tuple[str, str]]]:
    """The typed spec and every problem as (field path, message); the spec is usable only without problems."""
    problems: list[tuple[str, str]] = []
    if not isinstance(spec, Mapping):
        return RateLimitSpec((), (), 429, ()), [("spec", "required: an object with selector, rules, response")]
    _unknown(spec, ("selector", "rules", "response", "provider"), "spec", problems)
    provider = ""
    raw_provider = spec.get("provider")
    if raw_provider is not None:
        if not isinstance(raw_provider, Mapping) or not isinstance(raw_provider.get("name"), str) \
                or not raw_provider.get("name"):
            problems.append(("spec.provider", "must be {name: <an envoyRateLimit extensionProvider>}"))
        else:
            _unknown(raw_provider, ("name",), "spec.provider", problems)
            provider = raw_provider["name"]
    selector: list[tuple[str, str]] = []
    sel = spec.get("selector")
    if sel is not None:
        labels = sel.get("matchLabels") if isinstance(sel, Mapping) else None
        if not isinstance(sel, Mapping) or (sel and not isinstance(labels, Mapping)):
            problems.append(("spec.selector", "must be {matchLabels: {label: value}}"))
        else:
            _unknown(sel, ("matchLabels",), "spec.selector", problems)
            for k, v in (labels or {}).items():
                if not isinstance(v, str) or not k or "*" in str(k) or "*" in v:
                    problems.append((f"spec.selector.matchLabels.{k}", "must be a label and its value, no wildcard"))
                else:
                    selector.append((str(k), v))
    rules: list[Rule] = []
    raw_rules = spec.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        problems.append(("spec.rules", "required: at least one rule"))
    else:
        names: set[str] = set()
        for i, r in enumerate(raw_rules):
            rule = _rule(i, r, names, problems)
            if rule is not None:
                rules.append(rule)
    status, headers = 429, []
    resp = spec.get("response")
    if resp is not None:
        if not isinstance(resp, Mapping):
            problems.append(("spec.response", "must be an object with status, headers"))
        else:
            _unknown(resp, ("status", "headers"), "spec.response", problems)
            s = resp.get("status", 429)
            from envoy.type.v3 import http_status_pb2  # Envoy's protos load only for a response status

            if isinstance(s, bool) or not isinstance(s, int) or not 400 <= s <= 599 or \
                    s not in http_status_pb2.StatusCode.values():
                problems.append(("spec.response.status", "must be an HTTP error status Envoy knows (400-599)"))
            else:
                status = s
            hs = resp.get("headers") or {}
            if not isinstance(hs, Mapping):
                problems.append(("spec.response.headers", "must map header names to values"))
            else:
                for k, v in hs.items():
                    if not isinstance(k, str) or not HEADER_NAME.match(k) or k.startswith(":") or \
                            not isinstance(v, str):
                        problems.append((f"spec.response.headers.{k}", "must be a header name and a string value"))
                    else:
                        headers.append((k.lower(), v))
    if provider:
        for i, rule in enumerate(rules):
            if rule.per not in GLOBAL_UNITS:
                problems.append((f"spec.rules[{i}].limit.per", "with a provider must be 1s, 1m, 1h or 24h "
                                 "(the units of Envoy's rate-limit service protocol)"))
            if rule.tokens_per_fill != rule.requests:
                problems.append((f"spec.rules[{i}].limit.tokensPerFill", "with a provider must equal requests "
                                 "(the service counts fixed windows)"))
    return RateLimitSpec(tuple(sorted(selector)), tuple(rules), status, tuple(headers), provider), problems
