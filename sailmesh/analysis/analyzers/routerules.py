"""Unreachable and ineffective VirtualService rules (Istio's analyzeUnreachable*Rules validation warnings)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sailmesh.analysis.shapes import as_list

Report = Callable[..., None]


def _route_name(route: Mapping[str, Any], n: int) -> str:
    name = route.get("name")
    return json.dumps(str(name)) if name else f"#{n}"


def _match_key(match: Any) -> str:
    """The match as canonical JSON without its `name` (only traffic-routing fields count)."""
    if isinstance(match, Mapping):
        match = {k: v for k, v in match.items() if k != "name"}
    return json.dumps(match, sort_keys=True, default=str)


def unreachable_rules(
    routes: Iterable[Any], unreachable: Callable[[str, str], None], ineffective: Callable[[str, str, str], None],
    check_prefix_overlap: bool = False,
) -> None:
    """Rules after a match-less rule, rules whose matches all repeat earlier ones, repeated matches."""
    routes = [r for r in routes if isinstance(r, Mapping)]
    seen: dict[str, int] = {}
    empty_seen = -1
    prefixes: list[tuple[str, str, str, str, str]] = []  # (prefix, method, rest, route name, match name)
    for n, route in enumerate(routes):
        matches = as_list(route.get("match"))
        if not matches:
            if empty_seen >= 0:
                unreachable(_route_name(route, n), "only the last rule can have no matches")
            empty_seen = n
            continue
        dups = 0
        for m, match in enumerate(matches):
            key = _match_key(match)
            match_name = json.dumps(str(match["name"])) if isinstance(match, Mapping) and match.get("name") \
                else f"#{m}"
            if key in seen:
                ineffective(_route_name(route, n), match_name, _route_name(routes[seen[key]], seen[key]))
                dups += 1
            else:
                seen[key] = n
            if check_prefix_overlap and isinstance(match, Mapping):
                uri = match.get("uri")
                if isinstance(uri, Mapping) and uri.get("prefix"):
                    method = match.get("method")
                    rest = {k: v for k, v in match.items() if k not in ("name", "uri", "method")}
                    prefixes.append((str(uri["prefix"]), json.dumps(method, sort_keys=True) if method else "",
                                     json.dumps(rest, sort_keys=True, default=str), _route_name(route, n), match_name))
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
