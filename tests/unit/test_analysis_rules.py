"""Istio's resolution rules inside the analyzers: default namespace, short names, wildcards, exportTo."""

from __future__ import annotations

from sailmesh.analysis.registry import analyze, by_name
from sailmesh.api.parse import parse_text, resource_from_dict


def run(analyzer: str, text: str) -> set[tuple[str, str]]:
    res = parse_text(text, "t.yaml")
    assert not res.errors
    a = by_name(analyzer)
    assert a is not None
    return {(d.code, d.origin) for d in analyze(res.resources, {}, [a])}


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


def test_annotations_unknown_misplaced_invalid():
    text = """apiVersion: v1
kind: Service
metadata:
  name: s
  annotations: {networking.istio.io/exportThree: x, example.com/other: y}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: p
  annotations: {readiness.status.sidecar.istio.io/periodSeconds: soon, networking.istio.io/exportTo: "."}
spec: {containers: [{name: app, image: app}]}
"""
    got = run("annotations.K8sAnalyzer", text)
    assert got == {
        ("IST0108", "Service default/s"),  # unknown istio.io annotation; foreign domains ignored
        ("IST0125", "Pod default/p"),  # int expected
        ("IST0107", "Pod default/p"),  # exportTo belongs on Services
    }


def test_deployment_template_counts_as_workload_for_subsets():
    """Offline there are no Pods: a Deployment's pod template selects DestinationRule subsets."""
    text = """apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1}
spec:
  selector: {matchLabels: {app: reviews, version: v1}}
  template:
    metadata: {labels: {app: reviews, version: v1}}
    spec: {containers: [{name: reviews, image: reviews}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"""
    res = parse_text(text, "t.yaml").resources
    diags = analyze(res, {}, [by_name("destinationrule.PodNotSelectedAnalyzer")])
    assert [(d.code, d.message) for d in diags] == [
        ("IST0173", "The Subset v2 defined in the DestinationRule does not select any pods. "
                    "Which may lead to 503 UH (NoHealthyUpstream).")
    ]


def test_list_items_are_analyzed_and_bad_items_reported():
    """A `kind: List` reaching the analysis (whatever the parser does with it) is expanded item by item."""
    doc = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "networking.istio.io/v1", "kind": "Sidecar", "metadata": {"name": "s"},
             "spec": {"workloadSelector": {"labels": {"app": "ghost"}}}},
            {"kind": "Sidecar"},
        ],
    }
    res = [resource_from_dict(doc)]
    got = {(d.code, d.origin) for d in analyze(res, {}, [by_name("sidecar.SelectorAnalyzer")])}
    assert got == {("IST0101", "Sidecar default/s"), ("IST0106", "List")}


def test_default_ingress_gateway_is_assumed_but_never_reported():
    """As istioctl offline: Gateways selecting istio=ingressgateway resolve to istio-system."""
    gw = """apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: g}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
"""
    res = parse_text(gw, "t.yaml").resources
    assert analyze(res, {}, [by_name("gateway.IngressGatewayPortAnalyzer")]) == []
    assert {(d.code, d.origin) for d in analyze(res, {}, [by_name("gateway.IngressGatewayPortAnalyzer")],
                                                 include_defaults=False)} == {("IST0101", "Gateway default/g")}
    all_diags = analyze(res, {})
    assert not [d for d in all_diags if d.resource is not None and d.resource.source.file == "<default>"]
