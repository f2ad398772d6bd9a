"""The Gateway API's hostname intersection of a listener and a route (HTTPRouteSpec.hostnames, TLSRouteSpec).

A wildcard (`*.example.com`) is a suffix match of one or more labels: it matches `test.example.com` and
`foo.test.example.com`, never `example.com`. A listener without a hostname takes every route hostname; a route
without hostnames takes the listener's; route hostnames that meet no listener hostname are ignored, and a route
with none left is not attached (reason NoMatchingListenerHostname).
"""

from __future__ import annotations


def _matches(wild: str, host: str) -> bool:
    """`*.example.com` matches `host` (a name or a narrower wildcard) with at least one more label."""
    suffix = wild[1:]  # ".example.com"
    return host.endswith(suffix) and len(host) > len(suffix)


def intersect(listener: str, route: list[str]) -> list[str]:
    """The hostnames a route gets on a listener (the narrower of each intersecting pair); [] when none meet."""
    if not listener:
        return list(dict.fromkeys(route)) or ["*"]
    if not route:
        return [listener]
    out: list[str] = []
    for h in route:
        if h == listener:
            out.append(h)
        elif listener.startswith("*.") and _matches(listener, h):
            out.append(h)  # the route's name (or its narrower wildcard) is inside the listener's wildcard
        elif h.startswith("*.") and _matches(h, listener):
            out.append(listener)  # the listener's name is inside the route's wildcard
    return list(dict.fromkeys(out))
