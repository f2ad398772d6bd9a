"""The dashboard in a real headless chromium, over real HTTP: the real dashboard application and fake sidecars.

The sidecars here are small HTTP servers on their own loopback addresses serving Istio's standard metrics in
Prometheus text (Bookinfo's hops, counters growing with time); the dashboard scrapes them exactly as it scrapes
real agents on :15020/stats/prometheus. tests/e2e/test_dashboard_bookinfo.py does the same through real Envoy.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from typing import Any

import pytest
from aiohttp import web

from sailmesh.dashboard.app import DashboardOptions
from sailmesh.dashboard.app import make_app as dashboard_app
from sailmesh.processes import free_port
from sailmesh.testing.waiting import random_loopback_block, wait_for
from tests.browser import chromium_page, keep_screenshot
from tests.dashboard_metrics import NS, PP, RATINGS, REVIEWS, bookinfo

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

pytestmark = pytest.mark.e2e

NAME: web.AppKey[str] = web.AppKey("name", str)
PROXIES = {"gw": ("router", "istio-ingressgateway-0.istio-system"), "pp": ("sidecar", "productpage-v1-0.default"),
           "rv2": ("sidecar", "reviews-v2-0.default"), "ratings": ("sidecar", "ratings-v1-0.default")}
BAD_VS = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
          "metadata": {"name": "ratings", "namespace": NS},
          "spec": {"hosts": ["ratings"], "http": [{"route": [{"destination": {"host": "ratings-nowhere"}}]}]}}


class FakeMesh:
    """The dashboard app on a control-plane-like server, plus one fake sidecar per Bookinfo proxy."""

    def __init__(self, rps: float = 8.0) -> None:
        block = random_loopback_block()
        self.ips = {name: f"{block}.{i + 1}" for i, name in enumerate(PROXIES)}
        self.metrics_port = free_port()
        self.http_port = free_port()
        self.rps = rps
        self.abort_share = 0.0
        self.requests = 0.0
        self.aborted = 0.0
        self._last = time.monotonic()
        self._lock = threading.Lock()
        self._runners: list[web.AppRunner] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dashboard/"

    # the backend the dashboard reads (controlplane.app.ControlPlane in the real process)
    def sync_status(self) -> list[dict[str, Any]]:
        synced = {"sent": "3", "acked": "3", "nack": "", "resources": 4, "error": ""}
        return [{"proxy": f"{kind}~{self.ips[k]}~{pod}~{NS}.svc.cluster.local", "name": pod, "type": kind,
                 "version": 3, "delta": False, "connectedAt": time.time(),
                 "types": {t: dict(synced) for t in ("CDS", "LDS", "EDS", "RDS")}}
                for k, (kind, pod) in PROXIES.items()]

    def list_resources(self, kind: str, namespace: str, name: str) -> list[dict[str, Any]]:
        return [BAD_VS]

    def rejected(self) -> list[str]:
        return []

    def set_abort(self, share: float) -> None:
        with self._lock:
            self._advance()
            self.abort_share = share

    def _advance(self) -> None:
        now = time.monotonic()
        n = self.rps * (now - self._last)
        self._last = now
        self.requests += n
        self.aborted += n * self.abort_share

    async def _metrics(self, request: web.Request) -> web.Response:
        with self._lock:
            self._advance()
            pages = bookinfo(self.requests, self.aborted)
        return web.Response(text=pages[request.app[NAME]], content_type="text/plain")

    async def _start(self) -> None:
        for name, ip in self.ips.items():
            sidecar = web.Application()
            sidecar[NAME] = name
            sidecar.router.add_get("/stats/prometheus", self._metrics)
            await self._serve(sidecar, ip, self.metrics_port)
        root = web.Application()
        root.add_subapp("/dashboard/", dashboard_app(self, DashboardOptions(interval=1.0,
                                                                            metrics_port=self.metrics_port)))
        await self._serve(root, "127.0.0.1", self.http_port)

    async def _serve(self, app: web.Application, host: str, port: int) -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        self._runners.append(runner)

    async def _stop(self) -> None:
        for r in reversed(self._runners):
            await r.cleanup()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def fake_mesh() -> Any:
    m = FakeMesh()
    yield m
    m.stop()


STROKE = "getComputedStyle(e.querySelector('path.line')).stroke"
GREEN, RED = "rgb(62, 134, 53)", "rgb(201, 25, 11)"  # Kiali's (PatternFly's) healthy and failure colours


def edge_selector(source: str, destination: str) -> str:
    return f'#graph [data-edge="{source}->{destination}"]'


def wait_edge(page: Any, selector: str, check: str, timeout_s: float = 30) -> None:
    page.wait_for_function(f"sel => {{ const e = document.querySelector(sel); return e && ({check}); }}",
                           arg=selector, timeout=timeout_s * 1000)


def test_graph_page_shows_rates_and_turns_the_ratings_edge_red(fake_mesh: FakeMesh, tmp_path: Any) -> None:
    # The JSON API first: what scripts read.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    graph = wait_for(lambda: (g := json.loads(opener.open(fake_mesh.url + "api/graph", timeout=15).read()))
                     and g["edges"] and g, timeout=20, what="a graph from two scrapes")
    assert {"source", "destination", "rps", "error_rate", "p99_ms", "mtls"} <= set(graph["edges"][0])

    pp_reviews = edge_selector(f"workload:{NS}/productpage-v1", f"service:{REVIEWS}")
    rv2_ratings = edge_selector(f"workload:{NS}/reviews-v2", f"service:{RATINGS}")
    with chromium_page() as page:
        page.goto(fake_mesh.url)
        wait_edge(page, pp_reviews, "Number(e.dataset.rps) > 0")
        wait_edge(page, rv2_ratings, "Number(e.dataset.rps) > 0 && e.dataset.health === 'healthy'")
        for src, dst in ((f"workload:{NS}/istio-ingressgateway", f"service:{PP}"),
                         (f"service:{REVIEWS}", f"workload:{NS}/reviews-v2")):
            assert page.query_selector(edge_selector(src, dst)) is not None
        assert page.get_attribute(pp_reviews, "data-mtls") == "true"
        assert page.query_selector(pp_reviews + " .lock") is not None  # the hop is mTLS: a lock on the edge
        # Colour and health read in one evaluation: the page redraws the graph every 2 s.
        wait_edge(page, rv2_ratings, f"e.dataset.health === 'healthy' && {STROKE} === '{GREEN}'")

        fake_mesh.set_abort(1.0)  # every ratings call now fails at the client sidecar (fault abort 500)
        wait_edge(page, rv2_ratings, f"e.dataset.health === 'failure' && {STROKE} === '{RED}'")
        assert page.get_attribute(pp_reviews, "data-health") == "healthy"
        shot = keep_screenshot(page, tmp_path, "dashboard-graph-fixture.png")
        assert shot.stat().st_size > 10_000

        # The service page: request-rate and latency charts drawn from the kept windows.
        page.goto(fake_mesh.url + "#/service/" + RATINGS)
        page.wait_for_selector("#charts .chart path", timeout=15_000)
        assert page.inner_text("#inbound").count("failure") >= 1

        # Proxies with their xDS sync state.
        page.goto(fake_mesh.url + "#/proxies")
        page.wait_for_selector("tr[data-proxy]", timeout=15_000)
        assert len(page.query_selector_all("tr[data-proxy]")) == 4
        assert page.inner_text("#proxies").count("SYNCED") == 16

        # The config, with analyze's message next to the resource it concerns.
        page.goto(fake_mesh.url + "#/config")
        card = page.wait_for_selector(f'[data-resource="VirtualService {NS}/ratings"]', timeout=30_000)
        assert "IST0101" in card.inner_text()  # ReferencedResourceNotFound: host ratings-nowhere


def get_json(url: str) -> Any:
    with NO_PROXY.open(url, timeout=20) as r:
        return json.loads(r.read())


@pytest.fixture
def prometheus(fake_mesh: FakeMesh, tmp_path: Any) -> Any:
    """Debian's Prometheus scraping the fake sidecars every second (Istio's path, /stats/prometheus)."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not found: install Debian's prometheus package (scripts/test does, as root)")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    targets = [f"{ip}:{fake_mesh.metrics_port}" for ip in fake_mesh.ips.values()]
    config.write_text(json.dumps({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                                  "scrape_configs": [{"job_name": "envoy-stats", "metrics_path": "/stats/prometheus",
                                                      "static_configs": [{"targets": targets}]}]}))
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: NO_PROXY.open(url + "/-/ready", timeout=2).status == 200, timeout=60, interval=0.2,
                 what="Prometheus ready")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_the_same_graph_from_a_real_prometheus(fake_mesh: FakeMesh, prometheus: str, tmp_path: Any) -> None:
    api = fake_mesh.url + "api/graph?" + urllib.parse.urlencode({"prometheus": prometheus})

    def rated(source: str, destination: str, check: Any) -> Any:
        g = get_json(api)
        e = next((e for e in g["edges"] if (e["source"], e["destination"]) == (source, destination)), None)
        return e if e is not None and check(e) else None

    pp = (f"workload:{NS}/productpage-v1", f"service:{REVIEWS}")
    # Prometheus scrapes the client's and the server's sidecar at different moments: wait for both reports.
    e = wait_for(lambda: rated(*pp, lambda e: e["rps"] > 0 and e["p99_ms"] and e["mtls"]), timeout=60,
                 interval=0.5, what="productpage -> reviews from PromQL, with the destination's mTLS report")
    assert 0 < e["rps"] < 20 and 10 < e["p99_ms"] <= 25
    assert get_json(api)["source"] == "prometheus"
    fake_mesh.set_abort(1.0)
    ratings = (f"workload:{NS}/reviews-v2", f"service:{RATINGS}")
    e = wait_for(lambda: rated(*ratings, lambda e: e["health"] == "failure"), timeout=60, interval=0.5,
                 what="the ratings edge failing in PromQL's window")
    assert e["codes"].get("500", 0) > 0
    with chromium_page() as page:  # the page keeps ?prometheus= on every call it makes
        page.goto(fake_mesh.url + "?" + urllib.parse.urlencode({"prometheus": prometheus}))
        page.wait_for_function(
            "sel => { const e = document.querySelector(sel); return e && e.dataset.health === 'failure'; }",
            arg=edge_selector(*ratings), timeout=30_000)
        assert "Prometheus" in page.inner_text("#source")
        keep_screenshot(page, tmp_path, "dashboard-graph-prometheus.png")
