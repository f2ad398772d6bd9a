"""ProxyConfig `concurrency` through real Envoy: the embedded platform reads the control plane's ProxyConfigs as
each proxy starts and runs its Envoy with the most specific one's worker count (Istio's EffectiveProxyConfig:
workload selector > namespace > root namespace), as Envoy's own /server_info reports it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from sailmesh.testing.mesh import RunningMesh
from tests.e2e.traffic_support import NO_PROXY, WEB_AND_CLIENT, admin_ip, running

pytestmark = pytest.mark.e2e

MESH = """\
apiVersion: networking.istio.io/v1beta1
kind: ProxyConfig
metadata: {name: mesh-wide, namespace: istio-system}
spec:
  concurrency: 1
---
apiVersion: networking.istio.io/v1beta1
kind: ProxyConfig
metadata: {name: web, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  concurrency: 3
---
""" + WEB_AND_CLIENT


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    with running(tmp_path_factory, "proxyconfig", MESH) as (m, _):
        yield m


def _workers(ip: str) -> int:
    with NO_PROXY.open(f"http://{ip}:15000/server_info", timeout=5) as r:
        return int(json.loads(r.read())["command_line_options"]["concurrency"])


def test_each_proxy_runs_its_proxy_configs_worker_count(mesh: RunningMesh) -> None:
    """web's workload ProxyConfig (3) wins over the root namespace's (1); client has only the root namespace's.
    Without ProxyConfig support both run the agent's default of 2 workers."""
    assert _workers(admin_ip(mesh, "web")) == 3
    assert _workers(admin_ip(mesh, "client")) == 1
