"""DestinationRule `loadBalancer.zoneAwareLbSetting` through real Envoy: a client in r1/z1 calls a service with
endpoints in r1/z1, r1/z2 and r2/z1. Istio's zone-aware settings keep traffic in the caller's region (every zone
of it at priority 0, other regions behind), without outlier detection; the cluster carries Envoy's
zone_aware_lb_config. (Envoy's zone-level routing inside the region needs the proxy's own service as a bootstrap
local cluster, Istio's opt-in self-discovery: not built here, as Istio's default.)"""

from __future__ import annotations

import json
import pathlib
from collections import Counter
from collections.abc import Iterator

import pytest

from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.e2e.traffic_support import CLIENT_IN_R1Z1, NO_PROXY, Get, admin_ip, located_web, pods, running, via

pytestmark = pytest.mark.e2e

MESH = located_web((("r1z1", "r1/z1"), ("r1z2", "r1/z2"), ("r2z1", "r2/z1"))) + "---\n" + CLIENT_IN_R1Z1

ZONE_AWARE = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  trafficPolicy:
    loadBalancer:
      zoneAwareLbSetting: {minClusterSize: 1}
"""
CLUSTER = "outbound|8000||web.default.svc.cluster.local"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    with running(tmp_path_factory, "zone", MESH) as (m, _):
        yield m


def _pods(get: Get, n: int) -> Counter[str]:
    return pods(get, "http://web:8000/", n)


def _zone_config(ip: str) -> dict | None:  # type: ignore[type-arg]
    with NO_PROXY.open(f"http://{ip}:15000/config_dump?resource=dynamic_active_clusters", timeout=5) as r:
        clusters = [c["cluster"] for c in json.loads(r.read())["configs"]]
    (web,) = [c for c in clusters if c["name"] == CLUSTER]
    return web.get("common_lb_config", {}).get("zone_aware_lb_config")


def test_zone_aware_keeps_traffic_in_the_callers_region(mesh: RunningMesh, tmp_path: pathlib.Path) -> None:
    """Istio's ZoneAwareLBSettings (ApplyZoneAwareLoadBalancer: regional failover forced, no outlier detection
    needed; ApplyToCluster: zone_aware_lb_config with minClusterSize). Without the rule 90 requests spread over all
    three endpoints (r2's share is 0 with probability (2/3)^90 < 1e-15 under an even spread); with it none reaches
    r2 and both zones of r1 answer."""
    get = via(mesh, "client")
    wait_for(lambda: len(_pods(get, 30)) == 3, timeout=90, interval=0.5, what="all three endpoints answering")
    before = _pods(get, 90)
    assert before["web-r2z1-0"] > 0 and sum(before.values()) == 90, before
    mesh.apply_text(tmp_path, "zone-aware", ZONE_AWARE)
    try:
        wait_for(lambda: "web-r2z1-0" not in _pods(get, 20), timeout=60, interval=0.5, what="r2 left out")
        got = _pods(get, 90)
        assert set(got) == {"web-r1z1-0", "web-r1z2-0"} and sum(got.values()) == 90, got
        assert _zone_config(admin_ip(mesh, "client")) == {"min_cluster_size": "1"}
    finally:
        mesh.delete_text(tmp_path, "zone-aware")
