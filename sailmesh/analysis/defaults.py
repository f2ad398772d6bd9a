"""Resources istioctl analyze assumes offline: the default istio-ingressgateway Pod and Service."""

from __future__ import annotations

from sailmesh.api.parse import parse_text
from sailmesh.api.resource import Resource

# istioctl analyze (without a cluster) adds Istio's default ingress gateway workload so Gateways
# selecting `istio: ingressgateway` resolve to the istio-system namespace.
_DEFAULTS = """
apiVersion: v1
kind: Pod
metadata:
  name: istio-ingressgateway
  namespace: istio-system
  labels:
    istio: ingressgateway
    app: istio-ingressgateway
spec:
  containers:
  - name: istio-proxy
    image: docker.io/istio/proxyv2
---
apiVersion: v1
kind: Service
metadata:
  name: istio-ingressgateway
  namespace: istio-system
spec:
  type: LoadBalancer
  selector:
    istio: ingressgateway
  ports:
  - name: http2
    port: 80
    protocol: TCP
    targetPort: 8080
  - name: https
    port: 443
    protocol: TCP
    targetPort: 8443
"""


def default_resources(existing: list[Resource]) -> list[Resource]:
    """The defaults not already present in `existing` (same kind/namespace/name)."""
    have = {r.key for r in existing}
    return [r for r in parse_text(_DEFAULTS, "<default>").resources if r.key not in have]


def is_default(r: Resource) -> bool:
    return r.source.file == "<default>"
