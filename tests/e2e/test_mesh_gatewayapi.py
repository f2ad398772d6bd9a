"""Istio's Bookinfo tasks with the Kubernetes Gateway API, its YAMLs unchanged (../shared/conformance/bookinfo/
gateway-api/), through real Envoy: the Gateway gets a gateway process of its own (`bookinfo-gateway-istio`, as
Istio deploys it), and HTTPRoutes whose parentRef is a Service route the mesh's traffic (GAMMA).

Weighted splits are counted over 1,000 requests each; the bands are about 4 standard deviations of the binomial
(50/50: sd 1.6 %, band +-6.5 %; 90/10: sd 0.95 %, band +-4 %), so a wrong split (100/0, 50/50 for 90/10, 80/20)
cannot meet them by chance.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sailmesh.platform.state import MeshState
from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.conftest import CONFORMANCE
from tests.e2e.test_mesh_bookinfo import get

BOOKINFO = CONFORMANCE / "bookinfo"
GATEWAY_API = BOOKINFO / "gateway-api"
SPLIT_N = 1000


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> RunningMesh:
    if not GATEWAY_API.is_dir():
        pytest.skip(f"Istio's Bookinfo Gateway API YAMLs not found at {GATEWAY_API} (needs ../shared)")
    m = RunningMesh(str(tmp_path_factory.mktemp("gwapi-mesh")), demo=True, extra=["--no-routing"])
    yield m
    m.stop()


def apply(mesh: RunningMesh, path: Path) -> None:
    mesh.cli("apply", "-f", str(path), check=True)


def resource(mesh: RunningMesh, kind: str, name: str) -> dict[str, Any]:
    out = mesh.cli("get", kind, name, "-o", "json", check=True)
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def gateway_address(mesh: RunningMesh) -> str:
    """The address of bookinfo-gateway's own gateway, from its status (as `kubectl get gateway` shows it)."""
    def found() -> str:
        addresses = resource(mesh, "gateway.gateway.networking.k8s.io", "bookinfo-gateway").get(
            "status", {}).get("addresses") or []
        return str(addresses[0]["value"]) if addresses else ""
    return str(wait_for(found, timeout=30, what="bookinfo-gateway's address in its status"))


def reviews_version(url: str, opener: urllib.request.OpenerDirector | None = None) -> str:
    """v1 (no ratings), v2 (black stars) or v3 (red stars), from productpage's reviews API."""
    if opener is None:
        status, body = get(url + "/api/v1/products/0/reviews")
        assert status == 200, body
    else:
        with opener.open(url + "/api/v1/products/0/reviews", timeout=10) as r:
            body = r.read().decode()
    rating = json.loads(body)["reviews"][0].get("rating")
    return "v1" if not rating else {"black": "v2", "red": "v3"}[rating["color"]]


def versions(url: str, n: int) -> Counter[str]:
    return Counter(reviews_version(url) for _ in range(n))


def conditions(status: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status.get("conditions", ())}


def test_bookinfo_gateway_gets_a_gateway_of_its_own(mesh: RunningMesh) -> None:
    apply(mesh, GATEWAY_API / "bookinfo-gateway.yaml")
    url = f"http://{gateway_address(mesh)}:8080"  # listener port 80 -> 8080, as the ingress gateway maps it
    _, page = wait_for(lambda: (r := get(url + "/productpage")) and r[0] == 200 and r, timeout=30,
                       what="productpage through bookinfo-gateway-istio")
    assert "Book Details" in page and "Book Reviews" in page
    assert get(url + "/static/nothing-here")[0] != 500  # PathPrefix /static is routed (to productpage)
    assert get(url + "/not-routed")[0] == 404  # no HTTPRoute rule matches
    # the shared ingress gateway has no Istio Gateway here: only the Gateway's own process serves it
    with pytest.raises(OSError):
        get(mesh.gateway_url() + "/productpage", timeout=3)

    gw = resource(mesh, "gateway.gateway.networking.k8s.io", "bookinfo-gateway")
    assert conditions(gw["status"]) == {"Accepted": "True", "Programmed": "True"}
    assert gw["status"]["listeners"][0]["attachedRoutes"] == 1
    programmed = next(c for c in gw["status"]["conditions"] if c["type"] == "Programmed")
    assert "bookinfo-gateway-istio.default.svc.cluster.local:80" in programmed["message"]
    assert ":8080" in programmed["message"]
    route = resource(mesh, "httproute", "bookinfo")
    assert conditions(route["status"]["parents"][0]) == {"Accepted": "True", "ResolvedRefs": "True"}
    yaml_out = mesh.cli("get", "gateway.gateway.networking.k8s.io", "bookinfo-gateway", "-o", "yaml",
                        check=True).stdout
    assert "attachedRoutes: 1" in yaml_out and "type: IPAddress" in yaml_out


def test_missing_backend_answers_500(mesh: RunningMesh, tmp_path: Path) -> None:
    # HTTPBackendRef: a request that would go to a backend that does not exist gets a 500 (not a 503)
    mesh.apply_text(tmp_path, "missing", """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: missing-backend
spec:
  parentRefs:
  - name: bookinfo-gateway
  rules:
  - matches:
    - path: {type: Exact, value: /gone}
    backendRefs:
    - {name: no-such-service, port: 9080}
""")
    url = f"http://{gateway_address(mesh)}:8080"
    wait_for(lambda: get(url + "/gone")[0] == 500, timeout=20, what="a 500 for the missing backend")
    status = resource(mesh, "httproute", "missing-backend")["status"]["parents"][0]
    resolved = next(c for c in status["conditions"] if c["type"] == "ResolvedRefs")
    assert (resolved["status"], resolved["reason"]) == ("False", "BackendNotFound")
    mesh.delete_text(tmp_path, "missing")


def test_mesh_routing_tasks_with_service_parent_refs(mesh: RunningMesh, tmp_path: Path) -> None:
    """Istio's request-routing and traffic-shifting tasks, Gateway API tab: HTTPRoutes with a Service parentRef
    after platform-kube/bookinfo-versions.yaml (whose Services select app + version, as the demo's workloads are
    labelled: reviews-v1 ... select the demo's reviews-v1 ... instances as they are)."""
    apply(mesh, GATEWAY_API / "bookinfo-gateway.yaml")
    url = f"http://{gateway_address(mesh)}:8080"
    wait_for(lambda: get(url + "/productpage")[0] == 200, timeout=30, what="productpage through the gateway")
    apply(mesh, BOOKINFO / "platform-kube" / "bookinfo-versions.yaml")

    apply(mesh, GATEWAY_API / "route-all-v1.yaml")
    wait_for(lambda: versions(url, 10) == {"v1": 10}, timeout=30, what="every request on reviews v1")
    assert versions(url, 50) == {"v1": 50}
    status, page = get(url + "/productpage")
    assert status == 200 and "Sorry, product details are currently unavailable" not in page

    apply(mesh, GATEWAY_API / "route-reviews-v3.yaml")
    wait_for(lambda: versions(url, 10) == {"v3": 10}, timeout=30, what="every request on reviews v3")
    assert versions(url, 50) == {"v3": 50}

    apply(mesh, GATEWAY_API / "route-reviews-v1.yaml")
    wait_for(lambda: versions(url, 10) == {"v1": 10}, timeout=30, what="back on reviews v1")

    # Istio's request-routing task: user jason (productpage sets end-user after login) goes to v2
    mesh.apply_text(tmp_path, "jason", """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: reviews
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: reviews
    port: 9080
  rules:
  - matches:
    - headers:
      - name: end-user
        value: jason
    backendRefs:
    - name: reviews-v2
      port: 9080
  - backendRefs:
    - name: reviews-v1
      port: 9080
""")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor())
    form = urllib.parse.urlencode({"username": "jason", "passwd": "x"}).encode()
    opener.open(urllib.request.Request(url + "/login", data=form), timeout=10).read()
    wait_for(lambda: reviews_version(url, opener) == "v2", timeout=30, what="jason on reviews v2")
    assert all(reviews_version(url, opener) == "v2" for _ in range(20))
    assert versions(url, 20) == {"v1": 20}  # everybody else

    # traffic shifting, 50/50 between v1 and v3
    apply(mesh, GATEWAY_API / "route-reviews-50-v3.yaml")
    wait_for(lambda: "v3" in versions(url, 30), timeout=30, what="some traffic on v3")
    counts = versions(url, SPLIT_N)
    print(f"route-reviews-50-v3.yaml over {SPLIT_N} requests: {dict(counts)}")  # shown with pytest -s
    assert set(counts) == {"v1", "v3"}, counts
    assert abs(counts["v3"] / SPLIT_N - 0.5) <= 0.065, counts

    # 90/10 between v1 and v2
    apply(mesh, GATEWAY_API / "route-reviews-90-10.yaml")
    wait_for(lambda: "v3" not in versions(url, 30), timeout=30, what="v3 out of the split")
    counts = versions(url, SPLIT_N)
    print(f"route-reviews-90-10.yaml over {SPLIT_N} requests: {dict(counts)}")
    assert set(counts) <= {"v1", "v2"}, counts
    assert abs(counts["v2"] / SPLIT_N - 0.1) <= 0.04, counts


def test_deleting_the_gateway_stops_its_gateway(mesh: RunningMesh) -> None:
    url = f"http://{gateway_address(mesh)}:8080"
    assert get(url + "/productpage")[0] == 200
    mesh.cli("delete", "-f", str(GATEWAY_API / "bookinfo-gateway.yaml"), check=True)

    def refused() -> bool:
        try:
            get(url + "/productpage", timeout=3)
        except OSError:
            return True
        return False

    wait_for(refused, timeout=60, what="bookinfo-gateway's listener to go")  # its Istio Gateway goes first

    def names() -> list[str]:  # the supervisor's processes (its state file: what `sailmesh down` stops)
        return [p.name for p in MeshState.load(mesh.state_dir).processes]

    wait_for(lambda: "bookinfo-gateway-istio.default" not in names(), timeout=60,
             what="the supervisor to stop bookinfo-gateway-istio with its Gateway")
    assert "controlplane" in names()
    assert "stopping gateway default/bookinfo-gateway-istio" in mesh.output()
