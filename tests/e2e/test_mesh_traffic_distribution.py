"""A Kubernetes Service's `trafficDistribution: PreferClose` through real Envoy: a client in r1/z1 calls a service
with endpoints in r1/z1, r1/z2 and r2/z1, with no DestinationRule and no outlier detection. Istio (1.23+, sidecars)
turns the field into locality failover priorities [network, region, zone] with failover forced: every request
stays in the caller's zone; when that zone's endpoint is not ready, traffic goes to the caller's region, not
another region; a DestinationRule's `localityLbSetting` replaces the field (`enabled: false`: spread again)."""

from __future__ import annotations

import pathlib
from collections import Counter
from collections.abc import Iterator

import pytest

from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.e2e.traffic_support import CLIENT_IN_R1Z1, Get, failing_while, located_web, pods, running, via

pytestmark = pytest.mark.e2e

MESH = located_web((("r1z1", "r1/z1"), ("r1z2", "r1/z2"), ("r2z1", "r2/z1")), "PreferClose",
                   failing=True) + "---\n" + CLIENT_IN_R1Z1

LOCALITY_OFF = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  trafficPolicy:
    loadBalancer:
      localityLbSetting: {enabled: false}
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningMesh, pathlib.Path]]:
    with running(tmp_path_factory, "distribution", MESH) as mesh_and_config:
        yield mesh_and_config


def _pods(get: Get, n: int) -> Counter[str]:
    return pods(get, "http://web:8000/", n)


def test_prefer_close_keeps_traffic_in_the_callers_zone(mesh: tuple[RunningMesh, pathlib.Path]) -> None:
    """Istio's GetLocalityLbSetting(PreferClose): failoverPriority [network, region, zone], forceFailover: the
    caller's zone alone has priority 0, without any DestinationRule. Without the field 60 requests would spread over
    three endpoints (all 60 in r1/z1 with probability (1/3)^60)."""
    m, _ = mesh
    get = via(m, "client")
    wait_for(lambda: _pods(get, 5) == {"web-r1z1-0": 5}, timeout=90, interval=0.5, what="r1/z1 answering alone")
    assert _pods(get, 60) == {"web-r1z1-0": 60}


def test_fails_over_to_the_callers_region_then_comes_back(mesh: tuple[RunningMesh, pathlib.Path]) -> None:
    """The zone's endpoint fails its readiness probe and leaves EDS: priority 1 (the caller's region, r1/z2) takes
    every request, never r2 (priority 2); ready again, the caller's zone has it all back."""
    m, config = mesh
    get = via(m, "client")
    with failing_while(config, "r1z1"):
        wait_for(lambda: _pods(get, 5) == {"web-r1z2-0": 5}, timeout=60, interval=0.5, what="failover to r1/z2")
        assert _pods(get, 40) == {"web-r1z2-0": 40}
    wait_for(lambda: _pods(get, 5) == {"web-r1z1-0": 5}, timeout=60, interval=0.5, what="back to r1/z1")


def test_a_destination_rules_locality_setting_wins(mesh: tuple[RunningMesh, pathlib.Path],
                                                   tmp_path: pathlib.Path) -> None:
    """A DestinationRule's localityLbSetting replaces the Service's distribution: `enabled: false` spreads the
    requests over every zone and region again (r2's share of 90 is 0 with probability (2/3)^90 < 1e-15)."""
    m, _ = mesh
    get = via(m, "client")
    m.apply_text(tmp_path, "locality-off", LOCALITY_OFF)
    try:
        wait_for(lambda: len(_pods(get, 30)) == 3, timeout=60, interval=0.5, what="all three endpoints answering")
        got = _pods(get, 90)
        assert set(got) == {"web-r1z1-0", "web-r1z2-0", "web-r2z1-0"} and sum(got.values()) == 90, got
    finally:
        m.delete_text(tmp_path, "locality-off")
    wait_for(lambda: _pods(get, 5) == {"web-r1z1-0": 5}, timeout=60, interval=0.5, what="back to r1/z1 alone")
