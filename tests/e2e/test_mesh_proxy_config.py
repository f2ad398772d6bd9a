"""Proxy `concurrency` through real Envoy: the embedded platform reads the control plane's ProxyConfigs and mesh
config as each proxy starts and runs its Envoy with the worker count Istio's EffectiveProxyConfig picks (istio.io
ProxyConfig reference; pilot/pkg/model/proxy_config.go: workload selector > namespace > root namespace >
meshConfig.defaultConfig), as Envoy's own /server_info reports it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from sailmesh.testing.mesh import RunningMesh
from tests.e2e.traffic_support import NO_PROXY, WEB_AND_CLIENT, admin_ip, running

pytestmark = pytest.mark.e2e

MESH = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    defaultConfig:
      concurrency: 3
---
apiVersion: networking.istio.io/v1beta1
kind: ProxyConfig
metadata: {name: default-ns, namespace: default}
spec:
  concurrency: 1
---
apiVersion: networking.istio.io/v1beta1
kind: ProxyConfig
metadata: {name: web, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  concurrency: 4
---
""" + WEB_AND_CLIENT


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    with running(tmp_path_factory, "proxyconfig", MESH) as (m, _):
        yield m


def _workers(ip: str) -> int:
    with NO_PROXY.open(f"http://{ip}:15000/server_info", timeout=5) as r:
        return int(json.loads(r.read())["command_line_options"]["concurrency"])


def test_each_proxy_runs_its_effective_worker_count(mesh: RunningMesh) -> None:
    """web's workload ProxyConfig (4) wins over its namespace's (1), which client gets; the ingress gateway, in
    istio-system where no ProxyConfig applies, gets the mesh config's defaultConfig.concurrency (3). Without
    ProxyConfig support every proxy runs the agent's default of 2 workers; without the mesh config's default, the
    gateway does."""
    assert _workers(admin_ip(mesh, "web")) == 4
    assert _workers(admin_ip(mesh, "client")) == 1
    assert _workers(mesh.gateway_ip) == 3
