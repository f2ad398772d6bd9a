"""Istio's host, FQDN, exportTo and label-selector rules: the one home for generate/, analysis/ and registry/.

Every function names the Istio rule it implements. Host arguments come first and patterns second,
as in Istio's `host.Name(n).SubsetOf(o)`: `host_subset_of(host, pattern)` reads "host is covered by pattern".

A host is *wildcarded* when it starts with `*` (Istio's `IsWildCarded`): `*`, `*.example.com` and also
`*example.com`, which the validator accepts; the rest of the name after the `*` is the suffix it covers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

DEFAULT_DOMAIN_SUFFIX = "cluster.local"


def is_wildcard(host: str) -> bool:
    """Istio's host.Name.IsWildCarded: the host starts with `*`."""
    return host.startswith("*")


def resolve_short_name(host: str, namespace: str, domain_suffix: str = DEFAULT_DOMAIN_SUFFIX) -> str:
    """Istio's ResolveShortnameToFQDN (pilot): a name without dots is a service of `namespace`.

    `reviews` in `default` is `reviews.default.svc.cluster.local`; empty, `*`, names with a dot (FQDNs,
    `reviews.default`, `*.example.com`, IPv4 addresses) and IPv6 addresses stay as written. A dotless
    wildcard such as `*foo` is qualified like any other short name, as pilot does.
    """
    if not host or host == "*" or "." in host or ":" in host:
        return host
    return f"{host}.{namespace}.svc.{domain_suffix}"


def analyzer_fqdn(host: str, namespace: str, domain_suffix: str = DEFAULT_DOMAIN_SUFFIX) -> str:
    """Istio's analyzer rule util.ConvertHostToFQDN: like resolve_short_name, but any wildcard stays as written.

    Istio's `istioctl analyze` qualifies hosts with this rule, pilot with ResolveShortnameToFQDN; they differ
    only for a dotless wildcard (`*foo`) and IPv6 addresses. Analyzers use this one to report what Istio reports.
    """
    if not host or host.startswith("*") or "." in host:
        return host
    return f"{host}.{namespace}.svc.{domain_suffix}"


def host_subset_of(host: str, pattern: str) -> bool:
    """Istio's host.Name.SubsetOf: whether every name `host` covers is also covered by `pattern`.

    Concrete names match themselves; `*` covers everything; `*.example.com` covers `a.example.com`,
    `a.b.example.com` and `*.b.example.com`, not `example.com` nor `*.com`. A wildcard host is never a
    subset of a concrete pattern.
    """
    if pattern == host or pattern == "*":
        return True
    if pattern.startswith("*"):
        suffix = pattern[1:]
        if host.startswith("*"):
            return host[1:].endswith(suffix)
        return host.endswith(suffix)
    return False


def hosts_match(a: str, b: str) -> bool:
    """Istio's host.Name.Matches: the two hosts overlap (either one covers the other; either may be a wildcard)."""
    return host_subset_of(a, b) or host_subset_of(b, a)


def exported_to(export_to: Iterable[str], owner_ns: str, viewer_ns: str) -> bool:
    """Istio's exportTo visibility: whether a resource of `owner_ns` is visible from `viewer_ns`.

    `*` (also the default, when the list is empty) exports to every namespace, `.` to the owner's own
    namespace, a name to that namespace; `~` exports to none. The owner's namespace sees the resource only
    through `*`, `.` or its own name, as in Istio.
    """
    values = list(export_to) or ["*"]
    for v in values:
        if v == "*" or v == viewer_ns or (v == "." and owner_ns == viewer_ns):
            return True
    return False


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Kubernetes equality-based label selection (labels.SelectorFromSet(selector).Matches(labels)).

    Every selector key must be present in `labels` with an equal value; keys and values compare as strings
    (YAML may read `version: 1` as a number). An empty or missing selector matches everything: callers
    where Istio gives an empty selector another meaning (a Service without a selector has no endpoints,
    a Sidecar without a workloadSelector is the namespace default) decide that themselves. A selector
    that is not a mapping reads as missing (schema validation reports it).
    """
    if not isinstance(selector, Mapping):
        return True
    return all(labels.get(str(k)) == str(v) for k, v in selector.items())
