"""Istio's resolution rules inside the analyzers: default namespace, short names, wildcards, exportTo."""

from __future__ import annotations

from sailmesh.analysis.context import fqdn, host_matches, hosts_overlap
from sailmesh.analysis.registry import analyze, by_name
from sailmesh.api.parse import parse_text


def run(analyzer: str, text: str) -> set[tuple[str, str]]:
    res = parse_text(text, "t.yaml")
    assert not res.errors
    a = by_name(analyzer)
    assert a is not None
    return {(d.code, d.origin) for d in analyze(res.resources, {}, [a])}


def test_short_name_resolves_in_resource_namespace():
    """`reviews` in namespace default is reviews.default.svc.cluster.local (Istio host resolution)."""
    assert fqdn("reviews", "default") == "reviews.default.svc.cluster.local"
    assert fqdn("reviews.other.svc.cluster.local", "default") == "reviews.other.svc.cluster.local"
    assert fqdn("*.example.com", "default") == "*.example.com"


def test_wildcard_host_matching():
    assert host_matches("*.eu.bookinfo.com", "reviews.eu.bookinfo.com")
    assert not host_matches("*.eu.bookinfo.com", "reviews.us.bookinfo.com")
    assert hosts_overlap("*.productpage.d", "*.d")
    assert not hosts_overlap("a.com", "b.com")


SVC_OTHER = """apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: other}
spec: {ports: [{name: http, port: 80}]}
"""


def test_destination_short_name_in_other_namespace_is_not_found():
    """A resource without namespace is in `default`, so `reviews` does not reach other/reviews."""
    vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r}
spec:
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: fq}
spec:
  http: [{route: [{destination: {host: reviews.other.svc.cluster.local}}]}]
"""
    got = run("virtualservice.DestinationHostAnalyzer", SVC_OTHER + "---\n" + vs)
    assert got == {("IST0101", "VirtualService default/r")}


def test_service_entry_export_to_dot_is_private():
    se = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: other}
spec: {hosts: [api.example.com], exportTo: ["."]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: v}
spec:
  http: [{route: [{destination: {host: api.example.com}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: v, namespace: other}
spec:
  http: [{route: [{destination: {host: api.example.com}}]}]
"""
    assert run("virtualservice.DestinationHostAnalyzer", se) == {("IST0101", "VirtualService default/v")}


def test_missing_gateway_and_mesh_keyword():
    vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: v}
spec:
  hosts: ["*"]
  gateways: [mesh, nope]
"""
    got = run("virtualservice.GatewayAnalyzer", vs)
    assert ("IST0101", "VirtualService default/v") in got


def test_sidecar_selector_matching_nothing():
    sc = """apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: s}
spec:
  workloadSelector: {labels: {app: ghost}}
"""
    assert run("sidecar.SelectorAnalyzer", sc) == {("IST0101", "Sidecar default/s")}
