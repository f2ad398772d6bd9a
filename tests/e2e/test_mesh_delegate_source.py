"""VirtualService delegation and source matches through real Envoy.

Delegation (Istio's mergeVirtualServicesIfNeeded): a root VirtualService in `default` delegates `/api` requests
with `x-team: blue` to a delegate VirtualService in namespace `team`; the delegate's routes are merged with the
root's match and take the root's request headers; requests outside the root's match take the root's other route.

Source matches (Istio: only the routes whose sourceLabels / sourceNamespace match the proxy are kept for it): two
clients with different labels in different namespaces call the same host and land on different versions; each
client's Envoy holds only its own route."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.e2e.traffic_support import APP, admin_ip, route_dump, via

pytestmark = pytest.mark.e2e

MESH = """\
apiVersion: v1
kind: Namespace
metadata: {name: team}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{name: http, port: 8000, targetPort: 8000}]
  selector: {app: web}
---
apiVersion: v1
kind: Service
metadata: {name: shop}
spec:
  ports: [{name: http, port: 9000, targetPort: 8000}]
  selector: {app: web}
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: web-v1, labels: {app: web, version: v1}}
spec:
  command: ["python", "{APP}"]
  ports: [{name: http, containerPort: 8000}]
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: web-v2, labels: {app: web, version: v2}}
spec:
  command: ["python", "{APP}"]
  ports: [{name: http, containerPort: 8000}]
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: client, labels: {app: client, role: tester}}
spec:
  command: ["python", "-m", "sailmesh.samples.httpbin.sleep"]
---
apiVersion: local.sailmesh.io/v1alpha1
kind: LocalWorkload
metadata: {name: client-b, namespace: team, labels: {app: client-b}}
spec:
  command: ["python", "-m", "sailmesh.samples.httpbin.sleep"]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: shop}
spec:
  host: shop
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"""

ROUTING = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web-root}
spec:
  hosts: [web]
  http:
  - name: blue
    match:
    - uri: {prefix: /api}
      headers: {x-team: {exact: blue}}
    headers:
      request:
        set: {x-root: "yes"}
    delegate: {name: web-blue, namespace: team}
  - route:
    - destination: {host: web, subset: v1}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web-blue, namespace: team}
spec:
  http:
  - name: v2
    match:
    - uri: {prefix: /api/v2}
    route:
    - destination: {host: web.default.svc.cluster.local, subset: v2}
  - name: rest
    route:
    - destination: {host: web.default.svc.cluster.local, subset: v1}
      headers:
        request:
          set: {x-delegate: rest}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop}
spec:
  hosts: [shop]
  http:
  - name: testers
    match:
    - sourceLabels: {role: tester}
    route:
    - destination: {host: shop, subset: v2}
  - name: from-team
    match:
    - sourceNamespace: team
    route:
    - destination: {host: shop, subset: v1}
    headers:
      request:
        set: {x-from-team: "yes"}
  - route:
    - destination: {host: shop, subset: v1}
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    config = tmp_path_factory.mktemp("delegate-config")
    app = config / "app.py"
    app.write_text(APP)
    (config / "mesh.yaml").write_text(MESH.replace("{APP}", str(app)))
    (config / "routing.yaml").write_text(ROUTING)
    with RunningMesh(str(tmp_path_factory.mktemp("delegate-state")), dirs=[str(config)]) as m:
        yield m


def pods(get, url: str, headers: dict[str, str] | None = None, n: int = 6) -> set[str]:  # type: ignore[no-untyped-def]
    out = set()
    for _ in range(n):
        status, body = get(url, headers)
        assert status == 200, (status, body)
        out.add(body["pod"])
    return out


def test_delegate_routes_merged_with_the_root(mesh: RunningMesh) -> None:
    get = via(mesh, "client")
    blue = {"x-team": "blue"}
    wait_for(lambda: get("http://web:8000/api/v2/items", blue)[1].get("pod") == "web-v2-0", timeout=30,
             interval=0.3, what="the delegate's v2 route")
    assert pods(get, "http://web:8000/api/v2/items", blue) == {"web-v2-0"}
    _, body = get("http://web:8000/api/v2/items", blue)
    assert body["headers"].get("x-root") == "yes"  # the root's request headers, inherited
    # the delegate's second route (no match of its own): the root's match, the delegate's headers (its own win)
    assert pods(get, "http://web:8000/api/other", blue) == {"web-v1-0"}
    _, body = get("http://web:8000/api/other", blue)
    assert body["headers"].get("x-delegate") == "rest" and body["headers"].get("x-root") == "yes"
    # outside the root's match (no x-team: blue): the root's own catch-all, none of the delegate's headers
    assert pods(get, "http://web:8000/api/v2/items") == {"web-v1-0"}
    _, body = get("http://web:8000/api/v2/items")
    assert "x-root" not in body["headers"] and "x-delegate" not in body["headers"]


def test_source_labels_and_namespace_pick_routes_per_client(mesh: RunningMesh) -> None:
    tester, team = via(mesh, "client"), via(mesh, "client-b", "team")
    wait_for(lambda: tester("http://shop.default:9000/")[1].get("pod") == "web-v2-0", timeout=30, interval=0.3,
             what="the tester's route")
    assert pods(tester, "http://shop.default:9000/") == {"web-v2-0"}  # sourceLabels role=tester
    assert pods(team, "http://shop.default:9000/") == {"web-v1-0"}  # sourceNamespace team
    _, body = team("http://shop.default:9000/")
    assert body["headers"].get("x-from-team") == "yes"
    _, body = tester("http://shop.default:9000/")
    assert "x-from-team" not in body["headers"]
    # each proxy holds only the routes whose source matches it
    mine, theirs = route_dump(admin_ip(mesh, "client")), route_dump(admin_ip(mesh, "client-b", "team"))
    assert '"name": "testers"' in mine and '"name": "from-team"' not in mine
    assert '"name": "from-team"' in theirs and '"name": "testers"' not in theirs
