"""Istio's host, FQDN and exportTo semantics, shared by the generators and the analyzers."""

from __future__ import annotations

from collections.abc import Iterable


def fqdn(host: str, namespace: str, domain_suffix: str) -> str:
    """Istio's ResolveShortnameToFQDN: a name without dots is a service in `namespace`."""
    if not host or host == "*" or "." in host:
        return host
    return f"{host}.{namespace}.svc.{domain_suffix}"


def host_matches(host: str, pattern: str) -> bool:
    """Whether a concrete or wildcard `host` falls under `pattern` (`*`, `*.suffix` or exact)."""
    if pattern == "*" or pattern == host:
        return True
    if pattern.startswith("*."):
        suffix = pattern[1:]
        if host.startswith("*."):
            return host[1:].endswith(suffix)
        return host.endswith(suffix)
    return False


def hosts_intersect(a: str, b: str) -> bool:
    """Istio's host.Name.Matches: either side may be a wildcard."""
    return host_matches(a, b) or host_matches(b, a)


def exported_to(export_to: Iterable[str], owner_ns: str, viewer_ns: str) -> bool:
    """Istio exportTo: `*` (default) everyone, `.` the owner's namespace, names listed, `~` nobody."""
    values = list(export_to) or ["*"]
    for v in values:
        if v == "*" or v == viewer_ns or (v == "." and owner_ns == viewer_ns):
            return True
    return False
