"""RateLimit global mode through real Envoy: a RateLimit naming an `envoyRateLimit` extensionProvider makes the
sidecars of every replica ask the mesh's rate-limit service (Envoy's RLS protocol, `sailmesh.samples.ratelimit`
with no configuration of its own: each descriptor carries its rule's limit), so the limit holds across replicas:
4 requests per hour for `web`, served by 2 replicas, admit 4 requests in all (local buckets would admit 8)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest

from sailmesh.platform.state import MeshState
from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.e2e.traffic_support import APP, NO_PROXY, via

pytestmark = pytest.mark.e2e

MESH = """\
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{name: http, port: 80, targetPort: 8000}]
  selector: {app: web}
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: web, labels: {app: web}}
spec:
  command: ["python", "{APP}"]
  ports: [{name: http, containerPort: 8000}]
  replicas: 2
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: client, labels: {app: client}}
spec:
  command: ["python", "-m", "sailmesh.samples.httpbin.sleep"]
---
apiVersion: v1
kind: Service
metadata: {name: ratelimit, labels: {app: ratelimit}}
spec:
  selector: {app: ratelimit}
  ports: [{name: grpc-server, port: 8081, targetPort: 8081}]
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: ratelimit, labels: {app: ratelimit}}
spec:
  command: ["python", "-m", "sailmesh.samples.ratelimit"]
  ports: [{name: grpc-server, containerPort: 8081, protocol: GRPC}]
  sidecar: false
---
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    extensionProviders:
    - name: global-ratelimit
      envoyRateLimit:
        service: ratelimit.default.svc.cluster.local
        port: 8081
        domain: sailmesh
        timeout: 5s  # Envoy's default is 20ms; the Python sample answers slower on a loaded machine
---
apiVersion: policy.sailmesh.io/v1alpha1
kind: RateLimit
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  provider: {name: global-ratelimit}
  rules:
  - name: all
    limit: {requests: 4, per: 1h}
  response:
    headers: {x-rate-limited: "true"}
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    config = tmp_path_factory.mktemp("global-rl-config")
    app = config / "app.py"
    app.write_text(APP)
    (config / "mesh.yaml").write_text(MESH.replace("{APP}", str(app)))
    with RunningMesh(str(tmp_path_factory.mktemp("global-rl-state")), dirs=[str(config)]) as m:
        yield m


def test_one_limit_across_replicas(mesh: RunningMesh) -> None:
    get = via(mesh, "client")
    seen: Counter[int] = Counter()
    pods: Counter[str] = Counter()

    def first() -> bool:  # until the service answers: 500 while the sidecars cannot reach it (failure_mode_deny)
        status, body = get("http://web/")
        seen[status] += 1
        if status == 200:
            pods[body["pod"]] += 1
        return status in (200, 429)

    # the service counts in fixed clock hours (as envoyproxy/ratelimit does): the whole count must fall in one hour,
    # so it does not start in an hour's last 2 minutes (41 requests take seconds)
    wait_for(lambda: int(time.time()) % 3600 < 3480, timeout=130, interval=1.0, what="not the end of a clock hour")
    hour = int(time.time()) // 3600
    wait_for(first, timeout=60, interval=0.3, what="web behind the global limit")
    for _ in range(40):
        status, body = get("http://web/")
        seen[status] += 1
        if status == 200:
            pods[body["pod"]] += 1
    assert int(time.time()) // 3600 == hour, "a new clock hour began during the count: its limit counts afresh"
    assert seen[200] == 4, seen  # one count for both replicas (4 per replica would admit 8)
    assert seen[429] >= 36, seen
    state = MeshState.load(mesh.state_dir)
    replicas = [i for i in state.instances if i.name.startswith("web-")]
    assert len(replicas) == 2
    # each replica's sidecar asked the service (and was refused) itself: the count is shared, not per sidecar
    over = [_over_limit(i.address) for i in replicas]
    assert all(n > 0 for n in over), (over, pods)


def _over_limit(ip: str) -> int:
    """The OVER_LIMIT answers one sidecar's ratelimit filter got (Envoy's `...ratelimit...over_limit` stats)."""
    with NO_PROXY.open(f"http://{ip}:15000/stats?filter=ratelimit.*over_limit", timeout=5) as r:
        return sum(int(v) for line in r.read().decode().splitlines()
                   if (v := line.rpartition(": ")[2]).isdigit())
