"""The legacy Zipkin tracer through real Envoy, in a mesh without Zipkin: Istio's pre-1.22 default address
(`defaultConfig.tracing.zipkin.address: zipkin.istio-system:9411`, set explicitly, as `compatibilityVersion=1.21`
does; Istio 1.22+ has no default tracer) names nothing here, so its collector cluster has no host, and the mesh
serves all the same: listeners up, every request answered (sampled ones too: their spans go nowhere), and the B3
trace context reaches the application."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.e2e.traffic_support import NO_PROXY, WEB_AND_CLIENT, admin_ip, running, via

pytestmark = pytest.mark.e2e

COLLECTOR = "tracing|9411||zipkin.istio-system"
MESH_CONFIG = """apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    defaultConfig:
      tracing:
        zipkin: {address: zipkin.istio-system:9411}
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    with running(tmp_path_factory, "tracing-default", WEB_AND_CLIENT, {"mesh-config.yaml": MESH_CONFIG}) as (m, _):
        yield m


def _admin(ip: str, path: str) -> str:
    with NO_PROXY.open(f"http://{ip}:15000/{path}", timeout=5) as r:
        return r.read().decode()


def test_an_unresolvable_legacy_collector_breaks_nothing(mesh: RunningMesh) -> None:
    """The legacy Zipkin tracer: the collector cluster is there without a host (its name names no
    service), the outbound HCM names it, and 30 requests (10 forced sampled with `x-b3-sampled: 1`) all answer 200
    with the trace id Envoy created reaching the app. (tests/e2e/test_mesh_destination_rule_more.py's PASSTHROUGH
    test failed while this cluster looked the name up: Envoy's resolver then asked the system's DNS first.)"""
    get = via(mesh, "client")
    wait_for(lambda: get("http://web:8000/")[0] == 200, timeout=60, interval=0.5, what="web answering")
    ip = admin_ip(mesh, "client")
    clusters = [c["cluster"] for c in json.loads(_admin(ip, "config_dump?resource=dynamic_active_clusters"))["configs"]]
    (collector,) = [c for c in clusters if c["name"] == COLLECTOR]
    assert collector["type"] == "STATIC"  # zipkin.istio-system names no service here: no host, no DNS lookups
    hosts = [line for line in _admin(ip, "clusters").splitlines()
             if line.startswith(COLLECTOR + "::") and "::health_flags::" in line]
    assert hosts == [], hosts
    assert COLLECTOR in _admin(ip, "config_dump?resource=dynamic_listeners")  # the HCM's Zipkin tracer names it
    answers = [get("http://web:8000/", {"x-b3-sampled": "1"} if i % 3 == 0 else {}) for i in range(30)]
    assert [status for status, _ in answers] == [200] * 30
    traces = {body["headers"].get("X-B3-Traceid") or body["headers"].get("x-b3-traceid") for _, body in answers}
    assert None not in traces and len(traces) == 30, traces  # a new trace per request, propagated to the app
