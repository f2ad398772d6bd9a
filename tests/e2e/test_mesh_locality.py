"""Locality load balancing and failover through real Envoy (Istio's "Locality failover" task, in one region with
two zones): a client in r1/z1 calls a service with endpoints in r1/z1 and r1/z2.

- With outlier detection (Istio turns locality failover on by default then), every request stays in the caller's
  zone; when that zone's endpoint answers 5xx it is ejected and traffic fails over to the other zone.
- distribute: a client in r1/z1 with `{r1/z1/*: 80, r1/z2/*: 20}` sends about 80% of 1,000 requests to z1.
- retryRemoteLocalities: with an ejection threshold never reached, a request whose first attempt fails in the
  local zone is retried in the remote one (client sees 200); without it, retries stay in the local zone (503).
- A DNS ServiceEntry (STRICT_DNS, endpoints inline in the cluster) whose two endpoints are names the mesh's DNS
  resolves to the two zones' workloads, each with its `locality`: with outlier detection the same priorities as EDS
  (Istio's applyLocalityLoadBalancer on the cluster's LoadAssignment): every request stays in the caller's zone
  until that zone's endpoint is ejected, then fails over.
The localities come from LocalWorkload `locality` (servers), ServiceEntry endpoint `locality` (DNS) and the topology
labels (client)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator

import pytest

from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.e2e.traffic_support import APP, CLIENT_IN_R1Z1, NO_PROXY, admin_ip, via

pytestmark = pytest.mark.e2e

SERVICES = "".join(f"""\
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  ports: [{{name: http, port: {port}, targetPort: 8000}}]
  selector: {{app: web}}
""" for name, port in (("web", 8000), ("web-r", 9000), ("web-n", 9100), ("web-d", 9200))) + "".join(f"""\
---
apiVersion: v1
kind: Service
metadata: {{name: web-{zone}}}
spec:
  ports: [{{name: http, port: 8000, targetPort: 8000}}]
  selector: {{app: web, zone: {zone}}}
""" for zone in ("z1", "z2")) + """\
---
# resolved by Envoy through the mesh's DNS (web-z1... answers with web-z1's address): one endpoint per zone
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web-dns}
spec:
  hosts: [web-dns.example.test]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 9300, name: http, protocol: HTTP}]
  endpoints:
  - {address: web-z1.default.svc.cluster.local, ports: {http: 8000}, locality: r1/z1}
  - {address: web-z2.default.svc.cluster.local, ports: {http: 8000}, locality: r1/z2}
"""

MESH = SERVICES + """\
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: web-z1, labels: {app: web, zone: z1}}
spec:
  command: ["python", "{APP}"]
  env: {FAIL_FILE: "{FAIL}"}
  locality: r1/z1
  ports: [{name: http, containerPort: 8000}]
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: web-z2, labels: {app: web, zone: z2}}
spec:
  command: ["python", "{APP}"]
  locality: r1/z2
  ports: [{name: http, containerPort: 8000}]
---
""" + CLIENT_IN_R1Z1

RULES = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 5m, maxEjectionPercent: 100}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web-dns}
spec:
  host: web-dns.example.test
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 5m, maxEjectionPercent: 100}
""" + "".join(f"""\
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}}}
spec:
  host: {name}
  trafficPolicy:
    outlierDetection: {{consecutive5xxErrors: 100000, interval: 1s, baseEjectionTime: 5m}}
""" for name in ("web-r", "web-n")) + """\
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web-d}
spec:
  host: web-d
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        distribute:
        - from: r1/z1/*
          to: {"r1/z1/*": 80, "r1/z2/*": 20}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web-r}
spec:
  hosts: [web-r]
  http:
  - route:
    - destination: {host: web-r}
    retries: {attempts: 2, retryRemoteLocalities: true}
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningMesh, str]]:
    config = tmp_path_factory.mktemp("locality-config")
    fail = str(config / "z1-fails")
    app = config / "app.py"
    app.write_text(APP)
    (config / "mesh.yaml").write_text(MESH.replace("{APP}", str(app)).replace("{FAIL}", fail))
    (config / "rules.yaml").write_text(RULES)
    with RunningMesh(str(tmp_path_factory.mktemp("locality-state")), dirs=[str(config)]) as m:
        yield m, fail


def answers(get, url: str, n: int) -> Counter[tuple[int, str]]:  # type: ignore[no-untyped-def]
    return Counter((status, str(body.get("pod"))) for status, body in (get(url) for _ in range(n)))


def stat(ip: str, name: str) -> int:
    with NO_PROXY.open(f"http://{ip}:15000/stats?filter={name}", timeout=5) as r:
        for line in r.read().decode().splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
    return 0


def test_traffic_stays_in_the_callers_zone(mesh: tuple[RunningMesh, str]) -> None:
    m, _ = mesh
    get = via(m, "client")
    for url in ("http://web:8000/", "http://web-r:9000/", "http://web-n:9100/"):
        wait_for(lambda u=url: get(u)[0] == 200, timeout=30, interval=0.3, what=f"{url} answering")
        # EDS gives z1 priority 0 and z2 priority 1 for this client: z2 gets nothing while z1 is healthy
        assert answers(get, url, 40) == {(200, "web-z1-0"): 40}, url


def test_fails_over_when_the_zone_is_ejected(mesh: tuple[RunningMesh, str]) -> None:
    m, fail = mesh
    get = via(m, "client")
    ip = admin_ip(m, "client")
    with open(fail, "w", encoding="utf-8"):
        pass
    try:
        # web-n: outlier detection never ejects, no retryRemoteLocalities: retries stay in z1, the client sees 503
        assert answers(get, "http://web-n:9100/", 10) == {(503, "web-z1-0"): 10}
        # web-r: the same, but retryRemoteLocalities retries in z2: every request answers 200 from z2
        assert answers(get, "http://web-r:9000/", 20) == {(200, "web-z2-0"): 20}
        # web: z1's endpoint is ejected after its first 5xx and the traffic fails over to z2
        wait_for(lambda: answers(get, "http://web:8000/", 5) == {(200, "web-z2-0"): 5}, timeout=20, interval=0.2,
                 what="failover to z2")
        assert answers(get, "http://web:8000/", 40) == {(200, "web-z2-0"): 40}
        ejected = "cluster.outbound|8000||web.default.svc.cluster.local.outlier_detection.ejections_active"
        assert stat(ip, ejected) == 1
    finally:
        os.unlink(fail)


def test_distribute_splits_by_locality_weight(mesh: tuple[RunningMesh, str]) -> None:
    m, _ = mesh
    get = via(m, "client")
    wait_for(lambda: get("http://web-d:9200/")[0] == 200, timeout=30, interval=0.3, what="web-d answering")
    got = answers(get, "http://web-d:9200/", 1000)
    z1, z2 = got[(200, "web-z1-0")], got[(200, "web-z2-0")]
    assert z1 + z2 == 1000, got
    print(f"distribute 80/20 over 1,000 requests: z1 {z1}, z2 {z2}")
    # 80/20 over 1,000: the standard deviation is 12.6, so +-60 (4.7 sigma) holds by chance with p < 1e-5, and a
    # wrong split (50/50 without distribute, 100/0 with failover priorities) cannot meet it
    assert abs(z1 - 800) <= 60, got


def test_dns_cluster_stays_local_then_fails_over(mesh: tuple[RunningMesh, str]) -> None:
    """A STRICT_DNS cluster's inline endpoints get the EDS locality priorities (Istio's applyLocalityLoadBalancer
    on `c.LoadAssignment`): Envoy resolves both names through the mesh's DNS, keeps z1 at priority 0 for this
    client in r1/z1, and moves to z2 once z1's endpoint answers 5xx and is ejected."""
    m, fail = mesh
    get = via(m, "client")
    url = "http://web-dns.example.test:9300/"
    wait_for(lambda: get(url)[0] == 200, timeout=30, interval=0.3, what=f"{url} answering")
    # both names resolve (Envoy's DNS hosts) before the priorities are judged
    ip = admin_ip(m, "client")
    cluster = "cluster.outbound|9300||web-dns.example.test"
    wait_for(lambda: stat(ip, f"{cluster}.membership_total") == 2, timeout=30, interval=0.3, what="two DNS hosts")
    assert answers(get, url, 40) == {(200, "web-z1-0"): 40}
    with open(fail, "w", encoding="utf-8"):
        pass
    try:
        wait_for(lambda: answers(get, url, 5) == {(200, "web-z2-0"): 5}, timeout=20, interval=0.2,
                 what="DNS cluster failover to z2")
        assert answers(get, url, 40) == {(200, "web-z2-0"): 40}
        assert stat(ip, f"{cluster}.outlier_detection.ejections_active") == 1
    finally:
        os.unlink(fail)
