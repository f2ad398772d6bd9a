"""Sidecar `ingress` and egress `port` through real Envoy.

A Sidecar for `web` declares one ingress listener on port 7000 forwarding to the app's port 8000
(`defaultEndpoint: 0.0.0.0:8000`); the Service `web` targets 7000. A client's request reaches
the app through that listener, and the workload's own port 8000 is no longer served by its sidecar (Istio: with
`ingress`, the inbound listeners are exactly those declared).

The client's Sidecar declares an egress listener on port 8100 (Istio's explicit egress listener, what an app with
captureMode NONE calls): the app connects to its own address:8100 without HTTP_PROXY, and the Host header
`web-alt:8100` routes it to the Service web-alt."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import pytest

from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.e2e.traffic_support import APP, NO_PROXY, admin_ip, via

pytestmark = pytest.mark.e2e

MESH = """\
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{name: http, port: 80, targetPort: 7000}]
  selector: {app: web}
---
apiVersion: v1
kind: Service
metadata: {name: web-alt}
spec:
  ports: [{name: http, port: 8100, targetPort: 7000}]
  selector: {app: web}
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: web, labels: {app: web}}
spec:
  command: ["python", "{APP}"]
  ports: [{name: http, containerPort: 8000}]
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: client, labels: {app: client}}
spec:
  command: ["python", "-m", "sailmesh.samples.httpbin.sleep"]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: web}
spec:
  workloadSelector: {labels: {app: web}}
  ingress:
  - port: {number: 7000, protocol: HTTP, name: http}
    defaultEndpoint: 0.0.0.0:8000
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: client}
spec:
  workloadSelector: {labels: {app: client}}
  egress:
  - port: {number: 8100, protocol: HTTP, name: http}
    captureMode: NONE
    hosts: ["./*"]
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    config = tmp_path_factory.mktemp("ingress-config")
    app = config / "app.py"
    app.write_text(APP)
    (config / "mesh.yaml").write_text(MESH.replace("{APP}", str(app)))
    with RunningMesh(str(tmp_path_factory.mktemp("ingress-state")), dirs=[str(config)]) as m:
        yield m


def test_ingress_listener_serves_the_app(mesh: RunningMesh) -> None:
    get = via(mesh, "client")
    _, body = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(get("http://web/")), timeout=30,
                       interval=0.3, what="web through its ingress listener")
    assert body["pod"] == "web-0"
    ip = admin_ip(mesh, "web")
    with NO_PROXY.open(f"http://{ip}:15000/listeners?format=json", timeout=5) as r:
        names = {entry["name"] for entry in json.loads(r.read())["listener_statuses"]}
    assert f"{ip}_7000" in names and f"{ip}_8000" not in names, names


def test_egress_listener_routes_by_host(mesh: RunningMesh) -> None:
    ip = admin_ip(mesh, "client")

    def call() -> dict | None:  # type: ignore[type-arg]
        req = urllib.request.Request(f"http://{ip}:8100/", headers={"Host": "web-alt:8100"})
        try:
            with NO_PROXY.open(req, timeout=5) as r:
                return json.loads(r.read()) if r.status == 200 else None  # type: ignore[no-any-return]
        except OSError:
            return None

    body = wait_for(call, timeout=30, interval=0.3, what="web-alt through the client's egress listener")
    assert body["pod"] == "web-0"
