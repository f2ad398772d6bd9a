"""Basic parsing: multi-document YAML with file and line positions."""

from __future__ import annotations

from sailmesh.api.parse import parse_text

DOC = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination:
        host: reviews
      weight: 100
---
apiVersion: v1
kind: Namespace
metadata:
  name: prod
"""


def test_multi_document_with_lines() -> None:
    r = parse_text(DOC, "x.yaml")
    assert not r.errors
    vs, ns = r.resources
    assert str(vs.key) == "VirtualService default/reviews"
    assert vs.source.line == 1
    assert vs.source.line_of("spec.http[0].route[0].weight") == 11
    assert ns.namespace == "" and str(ns.key) == "Namespace prod"


def test_bad_yaml_reports_line() -> None:
    r = parse_text("a: [1, 2\nb: c\n", "bad.yaml")
    assert not r.resources
    assert r.errors and "bad.yaml:" in str(r.errors[0])
