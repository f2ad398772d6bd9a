"""The mesh config's TLS settings through real Envoy and real handshakes (Istio's MeshConfig.TLSConfig):
`meshMTLS.minProtocolVersion: TLSV1_3` makes a sidecar's inbound mTLS refuse a TLS 1.2 client while sidecar-to-sidecar
traffic (TLS 1.3) still flows; `tlsDefaults.ecdhCurves` limits the groups of a gateway server that sets none ("for all
traffic except for ISTIO_MUTUAL mode"). Both reach the proxies live, from the ConfigMap `istio` in istio-system."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization

from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.e2e.test_mesh_gateway_tls import HTTPBIN, b64, issue, make_ca, needs_curl

pytestmark = pytest.mark.e2e

MESH_CONFIG = """apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    meshMTLS:
      minProtocolVersion: TLSV1_3
    tlsDefaults:
      ecdhCurves: [P-384]
"""

SLEEP = """apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: sleep, namespace: default, labels: {app: sleep}}
spec:
  command: ["python", "-m", "sailmesh.samples.httpbin.sleep"]
---
"""


def gateway(cert: bytes, key: bytes) -> str:
    return f"""apiVersion: v1
kind: Secret
type: kubernetes.io/tls
metadata: {{name: plain-credential, namespace: istio-system}}
data: {{tls.crt: {b64(cert)}, tls.key: {b64(key)}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: plain, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: [plain.example.com]
    tls: {{mode: SIMPLE, credentialName: plain-credential}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: plain, namespace: default}}
spec:
  hosts: [plain.example.com]
  gateways: [plain]
  http:
  - route: [{{destination: {{host: httpbin, port: {{number: 8000}}}}}}]
"""


@pytest.fixture(scope="module")
def ca_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("tls-mesh-ca") / "ca.pem")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, ca_path: str) -> Iterator[RunningMesh]:
    config = tmp_path_factory.mktemp("tls-mesh-config")
    ca = make_ca("example.com")
    cert, key = issue(ca, "plain.example.com")
    with open(ca_path, "wb") as f:
        f.write(ca[0].public_bytes(serialization.Encoding.PEM))
    (config / "mesh.yaml").write_text(HTTPBIN + SLEEP + gateway(cert, key))
    (config / "mesh-config.yaml").write_text(MESH_CONFIG)
    m = RunningMesh(str(tmp_path_factory.mktemp("tls-mesh-state")), dirs=[str(config)])
    try:
        yield m
    finally:
        m.stop()


def workload_ip(mesh: RunningMesh, name: str) -> str:
    items = json.loads(mesh.cli("get", "workloads", "-o", "json", check=True).stdout)
    return str(next(i["address"] for i in items if i["workload"] == name))


def handshake(ip: str, port: int, *args: str) -> str:
    """`openssl s_client` against ip:port with Istio's mesh ALPN: its output (stdout + stderr)."""
    r = subprocess.run(["openssl", "s_client", "-connect", f"{ip}:{port}", "-alpn", "istio-peer-exchange,istio",
                        *args], input="", capture_output=True, text=True, timeout=30)
    return r.stdout + r.stderr


def test_mesh_mtls_min_version_refuses_tls12_and_sidecars_still_talk(mesh: RunningMesh) -> None:
    """meshMTLS.minProtocolVersion TLSV1_3 (Istio's BuildInboundTLS minimum): a TLS 1.2 ClientHello to the
    sidecar's inbound port gets a protocol_version alert; TLS 1.3 gets the server's certificate; a sidecar client
    (TLS 1.3 between sidecars) is still answered."""
    ip = workload_ip(mesh, "httpbin")
    wait_for(lambda: "alert protocol version" in handshake(ip, 8080, "-tls1_2"), timeout=90, interval=0.5,
             what="TLS 1.2 refused by the inbound mTLS chain")
    out = handshake(ip, 8080, "-tls1_3")
    assert "Protocol: TLSv1.3" in out or "TLSv1.3" in out, out[-2000:]
    assert "alert protocol version" not in out, out[-2000:]

    def answered() -> bool:
        r = subprocess.run([sys.executable, "-m", "sailmesh", "exec", "sleep", "--state-dir", mesh.state_dir, "--",
                            sys.executable, "-m", "sailmesh", "x", "load", "-c", "1", "-n", "1", "-o", "json",
                            "http://httpbin:8000/get"], capture_output=True, text=True, timeout=60)
        return r.returncode == 0 and json.loads(r.stdout)["codes"] == {"200": 1}
    wait_for(answered, timeout=60, interval=0.5, what="sleep -> httpbin over mTLS 1.3")


@needs_curl
def test_tls_defaults_ecdh_curves_limit_a_gateway_server_setting_none(mesh: RunningMesh, ca_path: str) -> None:
    """tlsDefaults.ecdhCurves [P-384] on a SIMPLE gateway server without its own ecdhCurves: a client offering
    only X25519 is refused, one offering P-384 is served."""
    def curl(curves: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
                               "--noproxy", "*", "--resolve", f"plain.example.com:8443:{mesh.gateway_ip}",
                               "--cacert", ca_path, "--curves", curves,
                               "https://plain.example.com:8443/status/418"], capture_output=True, text=True,
                              timeout=30)
    wait_for(lambda: curl("P-384").stdout == "418", timeout=90, interval=0.5, what="P-384 client served")
    r = curl("X25519")
    assert r.stdout == "000" and r.returncode != 0, (r.stdout, r.stderr)


def test_no_mesh_config_gap_reported(mesh: RunningMesh) -> None:
    """Both keys are acted on: the control plane reports no unmodelled mesh config key for them."""
    wait_for(lambda: workload_ip(mesh, "httpbin"), timeout=30, interval=0.5, what="workloads")
    assert "mesh config: accepted, not enforced" not in mesh.output()
