"""Istio's "Circuit Breaking" task (istio.io tasks/traffic-management/circuit-breaking) through real Envoy: httpbin,
a fortio client and the task's DestinationRule (maxConnections 1, http1MaxPendingRequests 1,
maxRequestsPerConnection 1, outlierDetection). One call answers 200; under concurrent load (`sailmesh x load`, the
task's `fortio load -c 3 -qps 0 -n 30`) some calls answer 503 while others pass, the client sidecar's
`upstream_rq_pending_overflow` for the httpbin cluster is above zero, and the 503s carry response flag UO (Envoy's
`x-envoy-overloaded` header on the response, `response_flags="UO"` on the client's istio_requests_total).

The task's DestinationRule also limits httpbin's own sidecar: Istio applies a service's DestinationRule
`connectionPool` to its workloads' inbound cluster too when no Sidecar names an inbound pool (buildInboundCluster:
"circuit breakers ... need to be set on the receiver end as well"), so the server sidecar allows one connection to
the app and one pending request. The client's connection close reaches the server a moment after the client opened
the next connection, so under load the server sidecar queued two and answered one 503 UO itself (measured: 1 of
1,201 requests at load 15; the app never failed). The client's outlierDetection (consecutive5xxErrors 1, 100 %, 3 m)
counts that upstream 503 and ejects the only host: every later call is 503 UH (CI: 3 UO + 24 UH of 30). The
breaker under test is the client's, so httpbin's Sidecar gives its inbound cluster room (`inboundConnectionPool`,
which Istio prefers to the DestinationRule's for inbound): every 503 must then be the client's overflow."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for

pytestmark = pytest.mark.e2e
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
CLUSTER = "outbound|8000||httpbin.default.svc.cluster.local"

MESH = """\
apiVersion: v1
kind: Service
metadata: {name: httpbin, labels: {app: httpbin, service: httpbin}}
spec:
  ports: [{name: http, port: 8000, targetPort: 8080}]
  selector: {app: httpbin}
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: httpbin, labels: {app: httpbin, version: v1}}
spec:
  command: ["python", "-m", "sailmesh.samples.httpbin.app"]
  ports: [{name: http, containerPort: 8080, protocol: HTTP}]
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: fortio, labels: {app: fortio}}
spec:
  command: ["python", "-m", "sailmesh.samples.httpbin.sleep"]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: httpbin}
spec:
  workloadSelector: {labels: {app: httpbin}}
  inboundConnectionPool:
    tcp: {maxConnections: 100}
    http: {http1MaxPendingRequests: 100}
"""

# The task's DestinationRule, unchanged.
CIRCUIT_BREAKER = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: httpbin
spec:
  host: httpbin
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 1
      http:
        http1MaxPendingRequests: 1
        maxRequestsPerConnection: 1
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 3m
      maxEjectionPercent: 100
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    config = tmp_path_factory.mktemp("cb-config")
    (config / "mesh.yaml").write_text(MESH)
    (config / "destination-rule.yaml").write_text(CIRCUIT_BREAKER)
    with RunningMesh(str(tmp_path_factory.mktemp("cb-state")), dirs=[str(config)]) as m:
        yield m


def load(mesh: RunningMesh, concurrency: int, requests: int) -> dict:  # type: ignore[type-arg]
    """`sailmesh exec fortio -- sailmesh x load -c C -n N http://httpbin:8000/get`, its JSON summary."""
    r = subprocess.run([sys.executable, "-m", "sailmesh", "exec", "fortio", "--state-dir", mesh.state_dir, "--",
                        sys.executable, "-m", "sailmesh", "x", "load", "-c", str(concurrency), "-n", str(requests),
                        "-o", "json", "http://httpbin:8000/get"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def workload_ip(mesh: RunningMesh, name: str) -> str:
    items = json.loads(mesh.cli("get", "workloads", "-o", "json", check=True).stdout)
    return str(next(i["address"] for i in items if i["workload"] == name))


def fortio_ip(mesh: RunningMesh) -> str:
    return workload_ip(mesh, "fortio")


def text(url: str) -> str:
    with NO_PROXY.open(url, timeout=5) as r:
        return r.read().decode()


def cluster_stat(ip: str, stat: str) -> int:
    """The client sidecar's counter `cluster.<httpbin>.<stat>` from its admin `/stats`."""
    for line in text(f"http://{ip}:15000/stats?filter={stat}").splitlines():
        name, _, value = line.partition(": ")
        if name == f"cluster.{CLUSTER}.{stat}":
            return int(value)
    raise AssertionError(f"no {stat} stat for {CLUSTER}")


def server_5xx(ip: str) -> int:
    """httpbin's sidecar: 5xx its inbound listener answered (`http.inbound_0.0.0.0_8080.downstream_rq_5xx`)."""
    for line in text(f"http://{ip}:15000/stats?filter=downstream_rq_5xx").splitlines():
        name, _, value = line.partition(": ")
        if name == "http.inbound_0.0.0.0_8080.downstream_rq_5xx":
            return int(value)
    raise AssertionError("no inbound downstream_rq_5xx stat on httpbin's sidecar")


def overflow_count(ip: str) -> int:
    """The client sidecar's `cluster.<httpbin>.upstream_rq_pending_overflow` (the task's `pilot-agent request GET
    stats | grep httpbin | grep pending`)."""
    return cluster_stat(ip, "upstream_rq_pending_overflow")


def uo_requests(ip: str) -> float:
    """istio_requests_total of the client sidecar (reporter source) for httpbin with 503 and flag UO."""
    total = 0.0
    for family in text_string_to_metric_families(text(f"http://{ip}:15020/stats/prometheus")):
        for s in family.samples:
            if s.name.startswith("istio_requests_total") and s.labels.get("reporter") == "source" \
                    and s.labels.get("response_code") == "503" and s.labels.get("response_flags") == "UO" \
                    and s.labels.get("destination_service_name") == "httpbin":
                total += s.value
    return total


def test_single_call_passes(mesh: RunningMesh) -> None:
    """The task's first step: one call through the circuit breaker answers 200."""
    result = wait_for(lambda: (lambda r: r if r["codes"] == {"200": 1} else None)(load(mesh, 1, 1)),
                      timeout=30, interval=0.5, what="httpbin answering fortio")
    assert result["overloaded"] == 0


def test_concurrent_load_trips_the_breaker(mesh: RunningMesh) -> None:
    """Concurrent connections overflow the one pending request: a mix of 200 and 503, the overflow counted. Every
    503 is the client sidecar's overflow (x-envoy-overloaded), none an upstream failure: no outlier ejection, and
    httpbin's sidecar answered no 503 (its inbound pool is the Sidecar's, see the module docstring)."""
    ip, server = fortio_ip(mesh), workload_ip(mesh, "httpbin")
    before = overflow_count(ip)
    ejections_before = cluster_stat(ip, "outlier_detection.ejections_enforced_total")
    result: dict = {}  # type: ignore[type-arg]
    for _ in range(5):  # scheduling on a busy machine can serialise a round; the breaker must show within five
        result = load(mesh, 3, 30)
        if result["codes"].get("503") and result["codes"].get("200"):
            break
    codes = result["codes"]
    ejected = cluster_stat(ip, "outlier_detection.ejections_enforced_total") - ejections_before
    print("load -c 3 -n 30:", result, "overflow stat:", overflow_count(ip) - before, "ejections:", ejected,
          "server sidecar 5xx:", server_5xx(server))
    assert set(codes) == {"200", "503"}, result
    assert result["overloaded"] == codes["503"], result
    assert ejected == 0 and server_5xx(server) == 0, result
    assert overflow_count(ip) > before
    wait_for(lambda: uo_requests(ip) > 0, timeout=20, interval=0.5, what="503 with flag UO in the client's metrics")
