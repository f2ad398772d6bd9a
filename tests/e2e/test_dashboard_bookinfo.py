"""The dashboard on the real embedded Bookinfo mesh (real Envoy sidecars and gateway), in headless chromium.

Demo traffic runs through the ingress gateway while the browser watches the graph: the Bookinfo hops appear with
non-zero rates; a VirtualService fault abort (HTTP 500 on ratings, Istio's fault-injection API) turns the
reviews -> ratings edges red. The screenshot is kept under the test's tmp dir (path printed).
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest

from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.browser import chromium_page, keep_screenshot

pytestmark = pytest.mark.e2e

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
NS = "default"
REVIEWS = "reviews.default.svc.cluster.local"
RATINGS = "ratings.default.svc.cluster.local"
# Istio's fault-injection API: every ratings call aborted with HTTP 500 by the calling sidecar.
ABORT_RATINGS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  http:
  - fault:
      abort:
        percentage: {value: 100.0}
        httpStatus: 500
    route:
    - destination: {host: ratings, subset: v1}
"""


class Traffic:
    """Requests /productpage through the gateway in a loop until stopped (one client, as a user would)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with NO_PROXY.open(self.url, timeout=10) as r:
                    r.read()
            except (urllib.error.URLError, OSError):
                pass
            self.sent += 1
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Any:
    m = RunningMesh(str(tmp_path_factory.mktemp("dashboard-mesh")), demo=True)
    yield m
    m.stop()


def api_graph(base: str, token: str) -> dict[str, Any]:
    req = urllib.request.Request(base + "api/graph", headers={"Authorization": f"Bearer {token}"})
    with NO_PROXY.open(req, timeout=30) as r:
        return json.loads(r.read())


def edge(graph: dict[str, Any], source: str, destination: str) -> dict[str, Any] | None:
    return next((e for e in graph["edges"] if e["source"] == source and e["destination"] == destination), None)


def test_dashboard_shows_bookinfo_and_an_abort_turns_ratings_red(mesh: RunningMesh, tmp_path: Any) -> None:
    r = mesh.cli("dashboard", "--url", check=True)
    url = r.stdout.strip()  # the browser logs in with the API token in the URL once (then an HttpOnly cookie)
    token = mesh.api_headers["Authorization"].removeprefix("Bearer ")
    assert url == mesh.api_url + "/dashboard/?token=" + token
    base = url.split("?")[0]
    with pytest.raises(urllib.error.HTTPError) as denied:  # without the token: 401
        NO_PROXY.open(base + "api/graph", timeout=30)
    assert denied.value.code == 401
    traffic = Traffic(mesh.gateway_url() + "/productpage")
    try:
        # The JSON API first (what scripts read): every Bookinfo hop with a rate, from the sidecars' own metrics.
        hops = [(f"workload:{NS}/productpage-v1", f"service:{REVIEWS}"),
                (f"workload:{NS}/productpage-v1", "service:details.default.svc.cluster.local"),
                (f"service:{REVIEWS}", f"workload:{NS}/reviews-v1"),
                (f"workload:{NS}/reviews-v2", f"service:{RATINGS}"),
                (f"workload:{NS}/reviews-v3", f"service:{RATINGS}"),
                (f"service:{RATINGS}", f"workload:{NS}/ratings-v1")]

        last: list[dict[str, Any]] = [{}]

        def all_hops() -> dict[str, Any] | None:
            g = last[0] = api_graph(base, token)
            # the latency comes from the duration histogram, which Envoy publishes at its stats flush, up to a flush
            # after the request counter (CI saw productpage's rate with no p99 yet): wait for both
            first = edge(g, *hops[0])
            return g if all((e := edge(g, *h)) and e["rps"] > 0 for h in hops) and first is not None \
                and first["p99_ms"] is not None else None

        try:
            graph = wait_for(all_hops, timeout=90, interval=1.0, what="every Bookinfo hop in /api/graph")
        except AssertionError as e:
            g = last[0]
            raise AssertionError(f"{e}\nlast graph: {g.get('targets')} proxies scraped, down: {g.get('down')}, "
                                 f"edges: {[(x['source'], x['destination'], x['rps']) for x in g.get('edges', [])]}, "
                                 f"{traffic.sent} requests sent") from None
        pr = edge(graph, *hops[0])
        assert pr is not None and pr["error_rate"] == 0 and pr["p99_ms"] is not None and pr["p99_ms"] > 0

        rv2 = f'#graph [data-edge="workload:{NS}/reviews-v2->service:{RATINGS}"]'
        with chromium_page() as page:
            page.goto(url)
            page.wait_for_function(
                "sel => { const e = document.querySelector(sel); return e && Number(e.dataset.rps) > 0; }",
                arg=f'#graph [data-edge="workload:{NS}/productpage-v1->service:{REVIEWS}"]', timeout=60_000)
            page.wait_for_function(
                "sel => { const e = document.querySelector(sel); return e && e.dataset.health === 'healthy'; }",
                arg=rv2, timeout=60_000)
            keep_screenshot(page, tmp_path, "dashboard-bookinfo-healthy.png")

            abort = tmp_path / "abort.yaml"
            abort.write_text(ABORT_RATINGS)
            mesh.cli("apply", "-f", str(abort), check=True)
            # Health and colour read in one evaluation (the page redraws the graph every 2 s): Kiali's failure red.
            page.wait_for_function(
                "sel => { const e = document.querySelector(sel); return e && e.dataset.health === 'failure'"
                " && getComputedStyle(e.querySelector('path.line')).stroke === 'rgb(201, 25, 11)'; }",
                arg=rv2, timeout=90_000)
            shot = keep_screenshot(page, tmp_path, "dashboard-bookinfo-abort.png")
            assert shot.stat().st_size > 10_000
            g = api_graph(base, token)
            e = edge(g, f"workload:{NS}/reviews-v2", f"service:{RATINGS}")
            assert e is not None and e["error_rate"] > 0.1 and "500" in e["codes"]

            page.goto(base + "#/proxies")
            page.wait_for_selector("tr[data-proxy]", timeout=30_000)
            assert len(page.query_selector_all("tr[data-proxy]")) >= 7  # 6 Bookinfo workloads + the gateway
            assert "SYNCED" in page.inner_text("#proxies")
    finally:
        traffic.stop()
