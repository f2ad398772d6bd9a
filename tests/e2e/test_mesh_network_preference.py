"""The network as a preferred, not required, failover label through real Envoy (Istio 1.31, #60829,
pilot/pkg/networking/core/loadbalancer/loadbalancer.go applyFailoverPriorityPerLocality): a client on network n1 in
r1/z1 calls a `trafficDistribution: PreferClose` service (failoverPriority [network, region, zone]) with endpoints
on n1 in r2/z1 and on n2 in r1/z1 and r2/z1. The network comes first: every request goes to n1 although it is in
another region; when it is not ready the endpoints on n2 are still ordered by region and zone, so every request
goes to n2's r1/z1 and none to n2's r2/z1 (before 1.31 both n2 endpoints shared one priority). The networks are the
LocalWorkloads' `network`, which the platform adds as the `topology.istio.io/network` label (Istio's
AugmentLabels)."""

from __future__ import annotations

import pathlib
from collections import Counter
from collections.abc import Iterator

import pytest

from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.e2e.traffic_support import Get, failing_while, located_web, pods, running, via

pytestmark = pytest.mark.e2e

MESH = located_web((("n1r2", "r2/z1"), ("n2r1", "r1/z1"), ("n2r2", "r2/z1")), "PreferClose", failing=True,
                   networks={"n1r2": "n1", "n2r1": "n2", "n2r2": "n2"}) + """\
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: client, labels: {app: client}}
spec:
  command: ["python", "-m", "sailmesh.samples.httpbin.sleep"]
  locality: r1/z1
  network: n1
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningMesh, pathlib.Path]]:
    with running(tmp_path_factory, "network-preference", MESH) as mesh_and_config:
        yield mesh_and_config


def _pods(get: Get, n: int) -> Counter[str]:
    return pods(get, "http://web:8000/", n)


def test_the_callers_network_first_then_the_closest_on_another(mesh: tuple[RunningMesh, pathlib.Path]) -> None:
    """Priorities for the client: n1 r2 0, n2 r1/z1 1, n2 r2 2. Its own network takes every request (60 of 60;
    spread, n1's share would be about 20); with n1's endpoint not ready, n2's r1/z1 takes every one of 40 (before
    Istio 1.31 it shared a priority with n2's r2: all 40 there with probability 2^-40); ready again, n1 has them."""
    m, config = mesh
    get = via(m, "client")
    wait_for(lambda: _pods(get, 5) == {"web-n1r2-0": 5}, timeout=90, interval=0.5, what="n1 answering alone")
    assert _pods(get, 60) == {"web-n1r2-0": 60}
    with failing_while(config, "n1r2"):
        wait_for(lambda: _pods(get, 5) == {"web-n2r1-0": 5}, timeout=60, interval=0.5, what="failover to n2 r1/z1")
        assert _pods(get, 40) == {"web-n2r1-0": 40}
    wait_for(lambda: _pods(get, 5) == {"web-n1r2-0": 5}, timeout=60, interval=0.5, what="back to n1")
