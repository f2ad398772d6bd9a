"""The embedded mesh's optional egress gateway: Istio's `istio-egressgateway` (a router proxy labelled
`istio: egressgateway`) with its Service in istio-system, so Istio's egress-gateway task applies unchanged."""

from __future__ import annotations

import os

from sailmesh.registry.model import Workload

NAME = "istio-egressgateway"
NAMESPACE = "istio-system"
POD = f"{NAME}-0"
SERVICE_ACCOUNT = "istio-egressgateway-service-account"  # Istio's install names it so
LABELS = {"istio": "egressgateway", "app": NAME}
# Istio's egress gateway Service: http2 80 -> 8080, https 443 -> 8443 (the router binds port + 8000 below 1024)
SERVICE_PORTS = ((80, "http2", "HTTP2", 8080), (443, "https", "HTTPS", 8443))
CONFIG_DIR = "platform-config"  # under the state dir: what the platform installs, as Istio's installer does

SERVICE_YAML = f"""# written by the embedded platform (sailmesh up --egress-gateway): Istio's egress gateway Service
apiVersion: v1
kind: Service
metadata:
  name: {NAME}
  namespace: {NAMESPACE}
  labels: {{istio: egressgateway, app: {NAME}}}
spec:
  selector: {{istio: egressgateway, app: {NAME}}}
  ports:
""" + "".join(f"  - {{name: {name}, port: {port}, protocol: TCP, targetPort: {target}}}\n"
              for port, name, _, target in SERVICE_PORTS)


def default_ip(gateway_ip: str) -> str:
    """The egress gateway's address when none is given: .254 of the ingress gateway's /24 (workloads count up
    from the base address, so they reach it only with more than 250 instances)."""
    head, _, _ = gateway_ip.rpartition(".")
    return f"{head}.254"


def write_config(state_dir: str) -> str:
    """Write the egress gateway's Service into the platform's config directory; returns that directory."""
    folder = os.path.join(state_dir, CONFIG_DIR)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{NAME}.yaml")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(SERVICE_YAML)
    os.replace(tmp, path)
    return folder


def workload(ip: str, healthy: bool = True) -> Workload:
    """The egress gateway's entry in the workload file (its Service's endpoints). Like Istio's gateways it has no
    `security.istio.io/tlsMode` label, so sidecars reach its plain HTTP servers in plain text."""
    return Workload(name=POD, namespace=NAMESPACE, address=ip, labels=dict(LABELS), service_account=SERVICE_ACCOUNT,
                    origin=f"egress gateway {NAMESPACE}/{POD}", healthy=healthy)
