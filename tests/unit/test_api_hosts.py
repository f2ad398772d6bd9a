"""Istio's host, FQDN, exportTo and selector rules (sailmesh/api/hosts.py), one test per rule, cases from Istio."""

from __future__ import annotations

import pytest

from sailmesh.api.hosts import (
    analyzer_fqdn,
    exported_to,
    host_subset_of,
    hosts_match,
    is_wildcard,
    resolve_short_name,
    selector_matches,
)


def test_is_wildcard_is_a_leading_star() -> None:
    assert is_wildcard("*") and is_wildcard("*.example.com") and is_wildcard("*example.com")
    assert not is_wildcard("example.com") and not is_wildcard("")


@pytest.mark.parametrize(
    ("host", "want"),
    [
        ("reviews", "reviews.default.svc.cluster.local"),  # a short name is a service of the namespace
        ("reviews.other", "reviews.other"),  # a dot: taken as written
        ("reviews.other.svc.cluster.local", "reviews.other.svc.cluster.local"),
        ("*", "*"),
        ("*.example.com", "*.example.com"),
        ("*foo", "*foo.default.svc.cluster.local"),  # pilot qualifies a dotless wildcard
        ("10.0.0.1", "10.0.0.1"),
        ("2001:db8::1", "2001:db8::1"),  # IP addresses are never qualified
        ("", ""),
    ],
)
def test_resolve_short_name_is_pilots_rule(host: str, want: str) -> None:
    assert resolve_short_name(host, "default", "cluster.local") == want


def test_resolve_short_name_uses_the_domain_suffix() -> None:
    assert resolve_short_name("reviews", "prod", "mesh.example") == "reviews.prod.svc.mesh.example"


@pytest.mark.parametrize(
    ("host", "want"),
    [
        ("reviews", "reviews.default.svc.cluster.local"),
        ("reviews.other.svc.cluster.local", "reviews.other.svc.cluster.local"),
        ("*.example.com", "*.example.com"),
        ("*foo", "*foo"),  # the analyzers keep any wildcard as written (util.ConvertHostToFQDN)
        ("*", "*"),
        ("", ""),
    ],
)
def test_analyzer_fqdn_is_the_analyzers_rule(host: str, want: str) -> None:
    assert analyzer_fqdn(host, "default") == want


@pytest.mark.parametrize(
    ("host", "pattern", "want"),
    [
        # Istio pkg/config/host name_test.go (SubsetOf)
        ("foo.com", "foo.com", True),
        ("foo.com", "bar.com", False),
        ("foo.com", "*.com", True),
        ("foo.com", "*", True),
        ("*.com", "foo.com", False),  # a wildcard is never a subset of a concrete name
        ("*.com", "*.com", True),
        ("*.foo.com", "*.com", True),
        ("*.com", "*.foo.com", False),
        ("*", "*.com", False),
        ("*", "*", True),
        ("com", "*.com", False),  # `*.com` needs a label before `.com`
        ("a.b.example.com", "*.example.com", True),
        ("reviews.bar.svc.cluster.local", "*.default.svc.cluster.local", False),
        # a wildcard without a dot after the star covers any name ending in the rest
        ("barfoo.com", "*foo.com", True),
        ("*barfoo.com", "*foo.com", True),
        ("*foo.com", "*barfoo.com", False),
    ],
)
def test_host_subset_of_is_istios_subset_of(host: str, pattern: str, want: bool) -> None:
    assert host_subset_of(host, pattern) is want


@pytest.mark.parametrize(
    ("a", "b", "want"),
    [
        # Istio pkg/config/host name_test.go (Matches): symmetric overlap
        ("foo.com", "foo.com", True),
        ("foo.com", "*.com", True),
        ("*.com", "foo.com", True),
        ("*", "foo.com", True),
        ("*", "*.com", True),
        ("*.com", "*.foo.com", True),
        ("*.foo.com", "*.com", True),
        ("*.productpage.d", "*.d", True),
        ("a.com", "b.com", False),
        ("*.foo.com", "*.bar.com", False),
        ("*.foo.com", "bar.com", False),
    ],
)
def test_hosts_match_is_istios_matches(a: str, b: str, want: bool) -> None:
    assert hosts_match(a, b) is want
    assert hosts_match(b, a) is want


@pytest.mark.parametrize(
    ("export_to", "owner", "viewer", "want"),
    [
        ([], "a", "b", True),  # unset: `*`
        (["*"], "a", "b", True),
        (["."], "a", "a", True),
        (["."], "a", "b", False),
        (["b"], "a", "b", True),
        (["b"], "a", "a", False),  # the owner's namespace is not implied
        (["a", "c"], "a", "a", True),
        (["~"], "a", "a", False),  # exported nowhere
        (["~"], "a", "b", False),
    ],
)
def test_exported_to_is_istios_export_to_rule(export_to: list[str], owner: str, viewer: str, want: bool) -> None:
    assert exported_to(export_to, owner, viewer) is want


@pytest.mark.parametrize(
    ("selector", "labels", "want"),
    [
        ({"app": "a"}, {"app": "a", "v": "1"}, True),
        ({"app": "a", "v": "1"}, {"app": "a"}, False),  # every selector label must be present
        ({"app": "a"}, {"app": "b"}, False),
        ({"v": 1}, {"v": "1"}, True),  # values compare as strings (YAML numbers)
        ({}, {"app": "a"}, True),  # empty selects everything (labels.SelectorFromSet(nil))
        (None, {}, True),
        ([], {"app": "a"}, True),  # not a mapping: read as missing
    ],
)
def test_selector_matches_is_kubernetes_equality_selection(selector: object, labels: dict[str, str],
                                                             want: bool) -> None:
    assert selector_matches(selector, labels) is want  # type: ignore[arg-type]
