"""Malformed documents (wrong types anywhere) never crash the analyzers: no exception, no IST0001."""

from __future__ import annotations

import copy

import pytest

from sailmesh.analysis.registry import analyze
from sailmesh.api.parse import parse_text, resource_from_dict

BASE = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs}
spec:
  hosts: [reviews]
  gateways: [gw, mesh]
  http:
  - match: [{uri: {prefix: /a}, headers: {"@request.auth.claims.x": {exact: y}}}]
    route: [{destination: {host: reviews, subset: v1, port: {number: 80}}}]
    mirror: {host: reviews}
    fault: {delay: {percent: 5}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: 443, name: https, protocol: HTTPS}, hosts: [reviews], tls: {mode: SIMPLE, credentialName: c}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr}
spec:
  host: reviews
  trafficPolicy: {tls: {mode: SIMPLE}, portLevelSettings: [{port: {number: 80}, tls: {mode: MUTUAL}}]}
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec: {hosts: [a.com], ports: [{number: 80, name: tcp, protocol: TCP}], exportTo: ["."]}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec: {workloadSelector: {labels: {app: x}}, outboundTrafficPolicy: {egressProxy: {host: e}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap}
spec:
  selector: {matchLabels: {app: x}}
  rules: [{from: [{source: {namespaces: [foo]}}]}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: t}
spec:
  selector: {matchLabels: {app: x}}
  accessLogging: [{filter: {expression: "true"}}]
  tracing: [{providers: [{name: z}]}]
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: ef}
spec: {configPatches: [{applyTo: HTTP_ROUTE, match: {proxy: {}}, patch: {operation: REMOVE}}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, annotations: {networking.istio.io/exportTo: "."}}
spec: {selector: {app: reviews}, ports: [{port: 80, targetPort: 8080}], type: ClusterIP}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  template:
    metadata: {labels: {app: reviews}, annotations: {sidecar.istio.io/inject: "true"}}
    spec: {securityContext: {runAsUser: 1337}, containers: [{name: app, image: a}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: default, labels: {istio-injection: enabled}}
"""
WEIRD = ["x", 7, None, [], [1, "a"], {"a": 1}, True, [None]]


def _paths(node: object, prefix: tuple = ()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield (*prefix, i)
            yield from _paths(v, (*prefix, i))


def _set(doc: dict, path: tuple, value: object) -> None:
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


@pytest.mark.parametrize("weird", WEIRD, ids=[repr(w) for w in WEIRD])
def test_every_field_replaced_by_a_wrong_type(weird):
    """Each field of each document, one at a time, replaced by a value of the wrong type."""
    base = parse_text(BASE, "base.yaml").resources
    assert len(base) == 11
    for res in base:
        raw = dict(res.raw)
        for path in _paths(raw.get("spec") or {}, ("spec",)):
            doc = copy.deepcopy(raw)
            _set(doc, path, weird)
            others = [r for r in base if r is not res]
            diags = analyze([*others, resource_from_dict(doc)], {})
            internal = [d.message for d in diags if d.code == "IST0001"]
            assert not internal, (res.kind, path, internal)
