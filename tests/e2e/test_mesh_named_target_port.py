"""A Service whose targetPort is a container port *name* gets endpoints and traffic in the embedded mesh,
with the LocalWorkload's locality and weight on its endpoints in Envoy."""

from __future__ import annotations

import json
import pathlib
import urllib.request

from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.unit.test_platform_workloads import NAMED_TARGET_PORT

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

INGRESS = """\
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: details}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route:
    - destination: {host: details, port: {number: 80}}
"""


def get(url: str) -> str | None:
    try:
        with NO_PROXY.open(url, timeout=5) as r:
            return r.read().decode() if r.status == 200 else None
    except OSError:
        return None


def test_named_target_port_gets_endpoints_and_traffic(tmp_path: pathlib.Path) -> None:
    config = tmp_path / "mesh"
    config.mkdir()
    (config / "mesh.yaml").write_text(NAMED_TARGET_PORT + INGRESS)
    with RunningMesh(str(tmp_path / "state"), dirs=[str(config)]) as mesh:
        body = wait_for(lambda: get(mesh.gateway_url() + "/details/0"), timeout=20, interval=0.2,
                        what="details through a named targetPort")
        assert json.loads(body)["id"] == 0
        # The gateway's Envoy holds the endpoint at the named containerPort, with its locality and weight.
        clusters = get(f"http://{mesh.gateway_ip}:15000/clusters") or ""
        ep = f"outbound|80||details.default.svc.cluster.local::{mesh.base_ip}:9080::"
        assert f"{ep}weight::3" in clusters and f"{ep}zone::zone-a" in clusters, clusters
