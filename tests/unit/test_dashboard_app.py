"""The dashboard server: mounted in a real control plane, its JSON API, the PromQL source, `sailmesh dashboard`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import aiohttp
import pytest
from aiohttp import web

from sailmesh.cli.dashboard import dashboard_url
from sailmesh.controlplane.app import ControlPlane, ControlPlaneOptions
from sailmesh.dashboard.app import config_with_messages, make_app, proxy_ip, scrape_targets, sync_word
from sailmesh.dashboard.collect import (
    GRAPH_LABELS,
    Collector,
    PrometheusSource,
    SourceError,
    prometheus_url,
    promql_queries,
    rates_from_promql,
)
from sailmesh.dashboard.graph import Rate, build_graph
from sailmesh.processes import free_port
from sailmesh.settings import Settings
from sailmesh.testing.waiting import await_for
from tests.conftest import ROOT

BOOKINFO = ROOT / "sailmesh" / "samples" / "bookinfo"


async def test_control_plane_serves_the_dashboard_under_its_monitoring_port(tmp_path) -> None:
    (tmp_path / "vs.yaml").write_text(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ratings, namespace: default}\n"
        "spec:\n  hosts: [ratings]\n  http:\n  - route:\n    - destination: {host: ratings-nowhere}\n")
    port = free_port()
    cp = ControlPlane(ControlPlaneOptions(config_dirs=[str(tmp_path)], xds_port=0, http_port=port, xds_tls_port=0,
                                          ca_port=0, state_dir=str(tmp_path / "cp")), Settings())
    cp.mount("/dashboard/", make_app)
    await cp.start()
    token = cp.identity.api_token
    try:
        # the browser's login: without the API token 401; `?token=` once sets an HttpOnly cookie that then suffices
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}",
                                         cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            async with browser.get("/dashboard/api/proxies") as r:
                assert r.status == 401 and "sailmesh dashboard" in (await r.json())["errors"][0]
            async with browser.get("/dashboard/", params={"token": token}) as r:
                assert r.status == 200 and "HttpOnly" in r.headers["Set-Cookie"]
            async with browser.get("/dashboard/api/proxies") as r:
                assert r.status == 200
            async with browser.get("/api/v1/live") as r:  # the cookie is for the dashboard's pages only
                assert r.status == 401
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}",
                                         headers={"Authorization": f"Bearer {token}"}) as http:
            async with http.get("/dashboard/") as r:
                assert r.status == 200 and "sailmesh dashboard" in await r.text()
            async with http.get("/dashboard", allow_redirects=False) as r:
                assert r.status == 302 and r.headers["Location"] == "/dashboard/"
            for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
                async with http.get(f"/dashboard/{name}") as r:
                    assert r.status == 200 and r.content_type == kind
            async with http.get("/dashboard/../metrics.py") as r:
                assert r.status == 404
            async with http.get("/dashboard/api/proxies") as r:
                assert (await r.json()) == {"proxies": []}
            async with http.get("/dashboard/api/config") as r:
                body = await r.json()
            [vs] = [i for i in body["resources"] if i["key"] == "VirtualService default/ratings"]
            assert [m["code"] for m in vs["messages"]] == ["IST0101"]  # ReferencedResourceNotFound
            async with http.get("/dashboard/api/graph") as r:  # no proxy connected: an empty graph, no error
                graph = await r.json()
            assert graph["nodes"] == [] and graph["edges"] == [] and graph["source"] == "sidecars"
            async with http.get("/dashboard/api/graph", params={"prometheus": "file:///etc/passwd"}) as r:
                assert r.status == 400 and "http(s)" in (await r.json())["errors"][0]
            async with http.get("/ready") as r:  # the control plane's own API is unchanged
                assert r.status == 200
    finally:
        await cp.stop()


def test_scrape_targets_are_every_proxys_merged_metrics_page() -> None:
    status = [{"proxy": "sidecar~127.0.10.2~reviews-v1-0.default~default.svc.cluster.local"},
              {"proxy": "router~127.0.0.1~istio-ingressgateway-0.istio-system~istio-system.svc.cluster.local"},
              {"proxy": "sidecar~127.0.10.2~reviews-v1-1.default~default.svc.cluster.local"},
              {"proxy": "not-an-istio-node-id"}]
    assert scrape_targets(status, 15020, "/stats/prometheus") == [
        "http://127.0.0.1:15020/stats/prometheus", "http://127.0.10.2:15020/stats/prometheus"]
    assert proxy_ip("sidecar~fd00::1~a.b~b.svc.cluster.local") == "fd00::1"
    assert scrape_targets([{"proxy": "sidecar~fd00::1~a.b~b.svc.cluster.local"}], 15020, "/m") == [
        "http://[fd00::1]:15020/m"]


def test_sync_words_are_istios() -> None:
    assert sync_word({"sent": "3", "acked": "3"}) == "SYNCED"
    assert sync_word({"sent": "3", "acked": "2"}) == "STALE"
    assert sync_word({"sent": "3", "acked": "2", "nack": "bad route"}) == "STALE (NACK)"
    assert sync_word(None) == "NOT SENT"
    assert sync_word({"sent": "3", "acked": "3", "error": "no cluster"}) == "STALE (ERROR)"


def test_config_messages_sit_next_to_their_resources() -> None:
    docs = [{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
             "metadata": {"name": "r", "namespace": "default"},
             "spec": {"hosts": ["r"], "gateways": ["missing-gw"],
                      "http": [{"route": [{"destination": {"host": "r"}}]}]}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "r", "namespace": "default"},
             "spec": {"ports": [{"port": 80, "name": "http"}]}}]
    out = config_with_messages(docs)
    by_key = {r["key"]: r for r in out["resources"]}
    messages = {m["code"]: m["message"] for m in by_key["VirtualService default/r"]["messages"]}
    assert "missing-gw" in messages["IST0101"]  # ReferencedResourceNotFound: the gateway
    assert by_key["Service default/r"]["messages"] == []


def test_prometheus_source_queries_build_the_same_graph() -> None:
    q = promql_queries("1m")
    assert q["requests"].startswith("sum by (reporter, source_workload,") and "rate(istio_requests_total[1m])" in q[
        "requests"]
    assert "le" in q["buckets"] and "istio_request_duration_milliseconds_bucket[1m]" in q["buckets"]
    labels = {k: "" for k in GRAPH_LABELS} | {
        "reporter": "source", "source_workload": "reviews-v2", "source_workload_namespace": "default",
        "destination_service": "ratings.default.svc.cluster.local", "destination_workload": "unknown",
        "response_code": "500", "request_protocol": "http"}
    vec = [{"metric": labels, "value": [1.0, "4"]}]
    buckets = [{"metric": labels | {"le": le}, "value": [1.0, v]} for le, v in (("1", "4"), ("+Inf", "4"))]
    g = build_graph(rates_from_promql(vec, [{"metric": labels, "value": [1.0, "400"]}], buckets))
    [e] = g["edges"]
    assert e["source"] == "workload:default/reviews-v2"
    assert e["destination"] == "service:ratings.default.svc.cluster.local"
    assert (e["rps"], e["error_rate"], e["health"]) == (4.0, 1.0, "failure")
    assert e["p99_ms"] == pytest.approx(0.99)


async def test_prometheus_source_against_an_http_server_speaking_prometheus_api() -> None:
    seen: list[str] = []

    async def query(request: web.Request) -> web.Response:
        seen.append(request.query["query"])
        if "bucket" in request.query["query"]:
            return web.json_response({"status": "error", "errorType": "bad_data", "error": "parse error"}, status=400)
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": []}})

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as session:
            src = PrometheusSource(f"http://127.0.0.1:{port}/", session)
            with pytest.raises(SourceError, match="parse error"):
                await src.sample()
            assert len(seen) == 3 and src.status()["error"]
    finally:
        await runner.cleanup()


def test_prometheus_url_is_checked() -> None:
    assert prometheus_url("http://127.0.0.1:9090/") == "http://127.0.0.1:9090"
    for bad in ("127.0.0.1:9090", "ftp://x", "http://x/?q=1", "http://"):
        with pytest.raises(SourceError):
            prometheus_url(bad)


def test_dashboard_url_and_the_cli_verb(tmp_path) -> None:
    assert dashboard_url("http://127.0.0.1:15014") == "http://127.0.0.1:15014/dashboard/"
    assert dashboard_url("http://127.0.0.1:15014/", "http://p:9090") == (
        "http://127.0.0.1:15014/dashboard/?prometheus=http%3A%2F%2Fp%3A9090")
    state = tmp_path / "state"
    state.mkdir()
    (state / "mesh.json").write_text(json.dumps({"supervisor_pid": 1, "api_url": "http://127.0.0.1:1234",
                                                 "xds_address": "127.0.0.1:1"}))
    r = subprocess.run([sys.executable, "-m", "sailmesh", "dashboard", "--url", "--state-dir", str(state)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "http://127.0.0.1:1234/dashboard/"
    r = subprocess.run([sys.executable, "-m", "sailmesh", "dashboard", "--state-dir", str(tmp_path / "none")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "no running mesh" in r.stderr


class CountingSource:
    """A source that needs two observations, like the sidecar scraper; counts its calls."""

    name = "fake"

    def __init__(self) -> None:
        self.calls = 0
        self.resets = 0

    async def sample(self) -> list[Rate] | None:
        self.calls += 1
        if self.calls == 1:
            return None
        labels = {"reporter": "source", "source_workload": "a", "source_workload_namespace": "ns",
                  "destination_service": "b.ns.svc.cluster.local", "response_code": "200"}
        return [Rate("istio_requests_total", labels, float(self.calls))]

    def reset(self) -> None:
        self.resets += 1

    def status(self) -> dict[str, object]:
        return {"source": self.name}


async def test_collector_polls_while_someone_looks_and_stops_when_nobody_does() -> None:
    src = CountingSource()
    c = Collector(src, interval=0.05, keep=3, idle=0.5, first_interval=0.01)
    c.touch()
    await c.first_graph(timeout=5)
    assert c.latest() is not None and c.latest()["edges"][0]["source"] == "workload:ns/a"
    await await_for(lambda: asyncio.sleep(0, len(c.history) == 3), timeout=5, what="three kept graphs")
    await await_for(lambda: asyncio.sleep(0, not c.running), timeout=5, what="polling to stop when idle")
    calls = src.calls
    await asyncio.sleep(0.2)
    assert src.calls == calls  # stopped: no more polling
    c.touch()  # someone looks again: polling resumes, with no rate across the pause
    await await_for(lambda: asyncio.sleep(0, src.resets == 2 and src.calls > calls), timeout=5, what="a resumed poll")
    assert c.running
    await c.stop()
    assert not c.running


def test_the_graph_reads_only_labels_the_sidecars_export() -> None:
    from sailmesh.agent.telemetry import HTTP_LABELS

    assert set(GRAPH_LABELS) <= set(HTTP_LABELS)
