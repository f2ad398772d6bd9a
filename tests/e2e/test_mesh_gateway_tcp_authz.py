"""AuthorizationPolicy on an ingress gateway's TCP server, through real Envoy: Istio puts the policy's TCP filters
(CUSTOM, AUDIT, DENY, ALLOW) before the tcp_proxy of a gateway's TCP and TLS filter chains, as on a sidecar's TCP
port. A Gateway TCP server (31400, Istio's tcp-echo task) routes to a TCP echo workload; a DENY policy on the
gateway for the client's address closes the connection, an ALLOW for this port lets the bytes through again, and an
ALLOW naming another port denies what it does not name."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.e2e.test_mesh_tcp_metrics import ECHO, TCP_ECHO

pytestmark = pytest.mark.e2e

MESH = TCP_ECHO + """apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: tcp-echo-gateway}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 31400, name: tcp, protocol: TCP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-echo}
spec:
  hosts: ["*"]
  gateways: [tcp-echo-gateway]
  tcp: [{match: [{port: 31400}], route: [{destination: {host: tcp-echo, port: {number: 9000}}}]}]
"""


def policy(action: str, rule: str) -> str:
    return f"""apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: gateway-tcp, namespace: istio-system}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  action: {action}
  rules: [{rule}]
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    d = tmp_path_factory.mktemp("gateway-tcp-authz")
    (d / "echo.py").write_text(ECHO)
    (d / "mesh.yaml").write_text(MESH)
    m = RunningMesh(str(tmp_path_factory.mktemp("gateway-tcp-authz-state")), dirs=[str(d)])
    try:
        yield m
    finally:
        m.stop()


def echoed(mesh: RunningMesh) -> bool:
    """Whether a line sent to the gateway's TCP server comes back (False: refused, closed or reset)."""
    try:
        with socket.create_connection((mesh.gateway_ip, 31400), timeout=5) as s:
            s.sendall(b"ping\n")
            return s.recv(64) == b"ping\n"
    except OSError:
        return False


def test_policies_apply_to_the_gateways_tcp_server(mesh: RunningMesh, tmp_path: Path) -> None:
    wait_for(lambda: echoed(mesh), timeout=60, interval=0.3, what="tcp-echo through the gateway's TCP server")
    file = tmp_path / "policy.yaml"

    def apply(text: str) -> None:
        file.write_text(text)
        mesh.cli("apply", "-f", str(file), check=True)

    apply(policy("DENY", '{from: [{source: {ipBlocks: ["127.0.0.0/8"]}}]}'))
    wait_for(lambda: not echoed(mesh), timeout=30, interval=0.3, what="DENY closing the gateway's TCP connection")
    apply(policy("ALLOW", '{to: [{operation: {ports: ["31400"]}}]}'))
    wait_for(lambda: echoed(mesh), timeout=30, interval=0.3, what="ALLOW for the TCP server's port")
    apply(policy("ALLOW", '{to: [{operation: {ports: ["31401"]}}]}'))  # another port: this one is denied
    wait_for(lambda: not echoed(mesh), timeout=30, interval=0.3, what="ALLOW for another port only")
