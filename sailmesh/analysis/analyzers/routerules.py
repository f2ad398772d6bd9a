"""Unreachable and ineffective VirtualService rules (Istio's analyzeUnreachable*Rules validation warnings)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from sailmesh.api.models.networking import (
    HTTPMatchRequest,
    HTTPRoute,
    L4MatchAttributes,
    TCPRoute,
    TLSMatchAttributes,
    TLSRoute,
)

Route = HTTPRoute | TCPRoute | TLSRoute
Match = HTTPMatchRequest | L4MatchAttributes | TLSMatchAttributes


def _route_name(route: Route, n: int) -> str:
    name = route.name if isinstance(route, HTTPRoute) else None  # only HTTP routes have names
    return json.dumps(name) if name else f"#{n}"


def _match_name(match: Match, m: int) -> str:
    name = match.name if isinstance(match, HTTPMatchRequest) else None
    return json.dumps(name) if name else f"#{m}"


def _fields(match: Match) -> dict[str, Any]:
    """The match's set fields as written (camelCase), without its `name` (only traffic-routing fields count)."""
    out: dict[str, Any] = dict(msgspec.to_builtins(match, enc_hook=str))
    out.pop("name", None)
    return out


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def unreachable_rules(
    routes: Iterable[Route], unreachable: Callable[[str, str], None], ineffective: Callable[[str, str, str], None],
    check_prefix_overlap: bool = False,
) -> None:
    """Rules after a match-less rule, rules whose matches all repeat earlier ones, repeated matches."""
    routes = list(routes)
    seen: dict[str, int] = {}
    empty_seen = -1
    prefixes: list[tuple[str, str, str, str, str]] = []  # (prefix, method, rest, route name, match name)
    for n, route in enumerate(routes):
        matches: tuple[Match, ...] = route.match or ()
        if not matches:
            if empty_seen >= 0:
                unreachable(_route_name(route, n), "only the last rule can have no matches")
            empty_seen = n
            continue
        dups = 0
        for m, match in enumerate(matches):
            fields = _fields(match)
            key = _key(fields)
            match_name = _match_name(match, m)
            if key in seen:
                ineffective(_route_name(route, n), match_name, _route_name(routes[seen[key]], seen[key]))
                dups += 1
            else:
                seen[key] = n
            if check_prefix_overlap and isinstance(match, HTTPMatchRequest) and match.uri and match.uri.prefix:
                method = fields.get("method")
                others = {k: v for k, v in fields.items() if k not in ("uri", "method")}
                prefixes.append((match.uri.prefix, _key(method) if method else "", _key(others),
                                 _route_name(route, n), match_name))
        if dups == len(matches):
            unreachable(_route_name(route, n), "all matches used by prior rules")
    # A later prefix match covered by an earlier, shorter prefix with the same other conditions never matches.
    for i, (prefix, method, rest, route_name, _) in enumerate(prefixes):
        for later in prefixes[i + 1:]:
            lprefix, lmethod, lrest, lroute, lmatch = later
            if lprefix == prefix or not lprefix.startswith(prefix) or lrest != rest:
                continue
            if not method or method == lmethod:
                ineffective(lroute, lmatch, route_name)
