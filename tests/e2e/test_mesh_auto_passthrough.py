"""Gateway `tls.mode: AUTO_PASSTHROUGH` through real Envoy, as Istio's multi-network east-west gateway uses it
(istio.io/latest/docs/setup/install/multicluster/multi-primary_multi-network: `cross-network-gateway`, port 15443,
hosts `*.local`): a client's TLS whose SNI is `outbound_.PORT_.SUBSET_.HOST` reaches that cluster's endpoints
unterminated, with no VirtualService.

The embedded mesh has no east-west gateway, so the Gateway selects the ingress gateway (`istio: ingressgateway`
instead of `istio: eastwestgateway`), otherwise Istio's YAML. The backend is a TLS server outside the mesh (a
ServiceEntry with one endpoint labelled version v1); the test plays the remote network's sidecar: it opens TLS
to the gateway with the SNI a remote sidecar sends."""

from __future__ import annotations

import json
import pathlib
import socket
import ssl
from collections.abc import Iterator

import pytest

from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.e2e.test_mesh_egress_gateway import External

pytestmark = pytest.mark.e2e

CONFIG = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: cross-network-gateway
  namespace: istio-system
spec:
  selector:
    istio: ingressgateway
  servers:
    - port:
        number: 15443
        name: tls
        protocol: TLS
      tls:
        mode: AUTO_PASSTHROUGH
      hosts:
        - "*.local"
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cnn, namespace: default}
spec:
  hosts: [edition.cnn.local]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: STATIC
  endpoints:
  - {address: {ADDRESS}, ports: {https: {PORT}}, labels: {version: v1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cnn, namespace: default}
spec:
  host: edition.cnn.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""


@pytest.fixture(scope="module")
def external(tmp_path_factory: pytest.TempPathFactory) -> Iterator[External]:
    ext = External(tmp_path_factory.mktemp("auto-passthrough-external"))
    try:
        yield ext
    finally:
        ext.close()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, external: External) -> Iterator[RunningMesh]:
    config = tmp_path_factory.mktemp("auto-passthrough-config")
    (config / "config.yaml").write_text(CONFIG.replace("{ADDRESS}", external.address)
                                        .replace("{PORT}", str(external.port("https"))))
    with RunningMesh(str(tmp_path_factory.mktemp("auto-passthrough-state")), dirs=[str(config)]) as m:
        yield m


def _get_with_sni(mesh: RunningMesh, sni: str, ca_file: str) -> dict | None:  # type: ignore[type-arg]
    """GET / over TLS to the gateway's 15443 with `sni`; the server's certificate (edition.cnn.com, the test CA)
    is verified, so only the real backend can answer. None when the gateway closes the connection."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.check_hostname = False  # the SNI names a cluster, not the server's certificate name
    try:
        with socket.create_connection((mesh.gateway_ip, 15443), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname=sni) as s:
            s.sendall(b"GET /via-sni HTTP/1.1\r\nHost: edition.cnn.com\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except (OSError, ssl.SSLError):
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    return json.loads(body) if head.startswith(b"HTTP/1.1 200") else None


def test_sni_names_the_cluster(mesh: RunningMesh, external: External) -> None:
    body = wait_for(lambda: _get_with_sni(mesh, "outbound_.443_._.edition.cnn.local", external.ca_file),
                    timeout=60, interval=0.5, what="TLS through the AUTO_PASSTHROUGH server")
    # the backend terminated the client's TLS itself: the gateway passed it through
    assert body["scheme"] == "https" and body["path"] == "/via-sni"
    assert _get_with_sni(mesh, "outbound_.443_.v1_.edition.cnn.local", external.ca_file) is not None


def test_subset_without_endpoints_and_unknown_sni_fail(mesh: RunningMesh, external: External,
                                                       tmp_path: pathlib.Path) -> None:
    wait_for(lambda: _get_with_sni(mesh, "outbound_.443_._.edition.cnn.local", external.ca_file),
             timeout=60, interval=0.5, what="the gateway to route by SNI")
    assert _get_with_sni(mesh, "outbound_.443_.v2_.edition.cnn.local", external.ca_file) is None  # no v2 endpoint
    assert _get_with_sni(mesh, "outbound_.443_._.nothing.default.svc.cluster.local", external.ca_file) is None
    assert _get_with_sni(mesh, "edition.cnn.com", external.ca_file) is None  # outside the server's *.local
