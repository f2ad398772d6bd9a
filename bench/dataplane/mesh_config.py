"""The mesh directory set-ups (3) and (4) run: Service bench-backend, a server and a client LocalWorkload."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Literal

Features = Literal["default", "demo", "nometrics", "notelemetry"]

NAMESPACE = "default"
SERVICE = "bench-backend"
SERVICE_PORT = 8080
HOST_HEADER = f"{SERVICE}:{SERVICE_PORT}"
SERVER = "bench-server"  # instance bench-server-0
CLIENT = "bench-client"  # instance bench-client-0
SUBSET = "v1"
SUBSET_CLUSTER = f"outbound|{SERVICE_PORT}|{SUBSET}|{SERVICE}.{NAMESPACE}.svc.cluster.local"

# What "demo" turns on (routing policy of the kind Istio's demo tasks apply), and what it leaves out.
DEMO_RETRIES = {"attempts": 3, "retryOn": "5xx", "perTryTimeout": "2s"}
DEMO_TIMEOUT = "10s"
DEMO_POOL = {"tcp": {"maxConnections": 1024, "connectTimeout": "1s"},
             "http": {"http1MaxPendingRequests": 1024, "maxRequestsPerConnection": 0, "maxRetries": 16}}
NO_METRICS_TELEMETRY = "mesh-default"
NO_MX_ENV = {"PILOT_ENABLE_METADATA_EXCHANGE": "false"}  # Istio's pilot flag: no metadata-exchange filters
DEMO_LEFT_OUT = [
    "AuthorizationPolicy (enforced by the mesh, not applied in this set-up)",
]


def _backend_command() -> list[str]:
    # The supervisor gives the app HOST (its pod IP) and PORT (a free port the sidecar forwards to).
    script = f'exec {shlex.quote(sys.executable)} -m bench.backend --host "$HOST" --port "$PORT"'
    return ["sh", "-c", script]


CLIENT_COMMAND = ["python", "-c", "import signal; signal.pause()"]  # idle: the load generator is the client


def _yaml_list(items: list[str]) -> str:
    return "[" + ", ".join(_q(i) for i in items) + "]"


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def base_yaml() -> str:
    """Service + ServiceAccounts + the two LocalWorkloads (server with the backend app, idle client)."""
    return f"""\
apiVersion: v1
kind: Service
metadata:
  name: {SERVICE}
  namespace: {NAMESPACE}
  labels: {{app: {SERVICE}}}
spec:
  selector: {{app: {SERVICE}}}
  ports:
  - {{name: http, port: {SERVICE_PORT}, targetPort: {SERVICE_PORT}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {SERVER}, namespace: {NAMESPACE}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {CLIENT}, namespace: {NAMESPACE}}}
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata:
  name: {SERVER}
  namespace: {NAMESPACE}
  labels: {{app: {SERVICE}, version: {SUBSET}}}
spec:
  command: {_yaml_list(_backend_command())}
  serviceAccount: {SERVER}
  ports:
  - {{name: http, containerPort: {SERVICE_PORT}, protocol: HTTP}}
  replicas: 1
  sidecar: true
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata:
  name: {CLIENT}
  namespace: {NAMESPACE}
  labels: {{app: {CLIENT}, version: {SUBSET}}}
spec:
  command: {_yaml_list(CLIENT_COMMAND)}
  serviceAccount: {CLIENT}
  replicas: 1
  sidecar: true
"""


def demo_yaml() -> str:
    """VirtualService with retries and a timeout to a DestinationRule subset with connection-pool limits."""
    r, p = DEMO_RETRIES, DEMO_POOL
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: {SERVICE}
  namespace: {NAMESPACE}
spec:
  hosts: [{SERVICE}]
  http:
  - route:
    - destination: {{host: {SERVICE}, subset: {SUBSET}, port: {{number: {SERVICE_PORT}}}}}
    timeout: {DEMO_TIMEOUT}
    retries: {{attempts: {r["attempts"]}, retryOn: {_q(str(r["retryOn"]))}, perTryTimeout: {r["perTryTimeout"]}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: {SERVICE}
  namespace: {NAMESPACE}
spec:
  host: {SERVICE}
  trafficPolicy:
    connectionPool:
      tcp: {{maxConnections: {p["tcp"]["maxConnections"]}, connectTimeout: {p["tcp"]["connectTimeout"]}}}
      http:
        http1MaxPendingRequests: {p["http"]["http1MaxPendingRequests"]}
        maxRequestsPerConnection: {p["http"]["maxRequestsPerConnection"]}
        maxRetries: {p["http"]["maxRetries"]}
  subsets:
  - name: {SUBSET}
    labels: {{version: {SUBSET}}}
"""


def no_metrics_yaml() -> str:
    """A mesh-wide Telemetry turning Istio's standard metrics off, as istio.io's Telemetry API page shows
    ("Disable metrics for all"): the root namespace, the prometheus provider, ALL_METRICS disabled. The
    peer-metadata exchange stays, as it does in Istio whatever Telemetry says."""
    return f"""\
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: {NO_METRICS_TELEMETRY}
  namespace: istio-system
spec:
  metrics:
  - providers:
    - name: prometheus
    overrides:
    - match: {{metric: ALL_METRICS}}
      disabled: true
"""


def write(directory: Path, features: Features) -> None:
    """Write the mesh directory for `features` ("default": the workloads only; "demo": plus routing policy;
    "nometrics": plus a mesh-wide Telemetry turning Istio's metrics off; "notelemetry": the same, and the mesh runs
    with Istio's PILOT_ENABLE_METADATA_EXCHANGE=false, NO_MX_ENV, set by bench/dataplane/mesh.py)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bench.yaml").write_text(base_yaml())
    if features == "demo":
        (directory / "bench-demo.yaml").write_text(demo_yaml())
    if features in ("nometrics", "notelemetry"):
        (directory / "bench-nometrics.yaml").write_text(no_metrics_yaml())
