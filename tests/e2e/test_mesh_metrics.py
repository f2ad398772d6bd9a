"""Istio's standard metrics from a running Bookinfo mesh: both reporters of every hop, a fault's flag, and a real
Prometheus scraping the sidecars' :15020/stats/prometheus and the control plane's :15014/metrics."""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sailmesh.processes import free_port
from sailmesh.telemetry.standard import FLUSH_INTERVAL_S
from sailmesh.testing.mesh import RunningMesh
from sailmesh.testing.waiting import wait_for
from tests.conftest import CONFORMANCE

BOOKINFO = CONFORMANCE / "bookinfo"
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
Series = tuple[tuple[str, str], ...]  # sorted label pairs
ISTIO_HTTP_LABELS = {
    "reporter", "source_workload", "source_workload_namespace", "source_principal", "source_app", "source_version",
    "source_cluster", "destination_workload", "destination_workload_namespace", "destination_principal",
    "destination_app", "destination_version", "destination_service", "destination_service_name",
    "destination_service_namespace", "destination_cluster", "request_protocol", "response_code", "response_flags",
    "grpc_response_status", "connection_security_policy", "source_canonical_service", "source_canonical_revision",
    "destination_canonical_service", "destination_canonical_revision",
}  # fmt: skip


def get(url: str, timeout: float = 10.0) -> tuple[int, str]:
    return get_with(url, {}, timeout)


def get_with(url: str, headers: dict[str, str], timeout: float = 10.0) -> tuple[int, str]:
    try:
        with NO_PROXY.open(urllib.request.Request(url, headers=headers), timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def proxies(mesh: RunningMesh) -> dict[str, str]:
    """Workload instance (or gateway) name -> its address, from the mesh's state file."""
    state = json.loads(Path(mesh.state_dir, "mesh.json").read_text())
    return {p["name"].removesuffix(".default.sidecar"): p["address"] for p in state["processes"]
            if p.get("role") in ("agent", "gateway")}


def istio_samples(ip: str) -> dict[str, dict[Series, float]]:
    """The istio_* samples of one proxy's merged page, parsed by prometheus_client's parser."""
    status, text = get(f"http://{ip}:15020/stats/prometheus")
    assert status == 200, text
    lines = "\n".join(line for line in text.splitlines() if line.startswith(("istio_", "# TYPE istio_")))
    out: dict[str, dict[Series, float]] = collections.defaultdict(dict)
    for fam in text_string_to_metric_families(lines + "\n"):
        for s in fam.samples:
            out[s.name][tuple(sorted(s.labels.items()))] = s.value
    return out


def requests_by(ip: str, **match: str) -> dict[Series, float]:
    """istio_requests_total series of one proxy whose labels include `match`."""
    return {k: v for k, v in istio_samples(ip)["istio_requests_total"].items()
            if all(dict(k).get(n) == v2 for n, v2 in match.items())}


def total(ip: str, **match: str) -> float:
    return sum(requests_by(ip, **match).values())


def by_label(ip: str, label: str, **match: str) -> collections.Counter[str]:
    out: collections.Counter[str] = collections.Counter()
    for k, v in requests_by(ip, **match).items():
        out[dict(k)[label]] += int(v)
    return out


def settle(mesh: RunningMesh) -> None:
    """Wait until every earlier request is reported: the mesh-wide count stays the same for two flush intervals
    (Envoy sends access logs to the agent every second), so baselines taken next are final."""
    addresses = list(proxies(mesh).values())
    last: list[float] = [-1.0, time.monotonic()]

    def quiet() -> bool:
        now = sum(sum(istio_samples(a)["istio_requests_total"].values()) for a in addresses)
        if now != last[0]:
            last[:] = [now, time.monotonic()]
        return time.monotonic() - last[1] >= 2 * FLUSH_INTERVAL_S
    wait_for(quiet, timeout=30, interval=0.2, what="the access-log streams to go quiet")


def delta(after: collections.Counter[str], before: collections.Counter[str]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    if not BOOKINFO.is_dir():
        pytest.skip(f"Istio's Bookinfo YAMLs not found at {BOOKINFO} (needs ../shared)")
    m = RunningMesh(str(tmp_path_factory.mktemp("metrics-mesh")), demo=True)
    try:
        wait_for(lambda: get(m.gateway_url() + "/productpage")[0] == 200, timeout=60, what="productpage")
        yield m
    finally:
        m.stop()


def test_both_reporters_of_every_hop_count_the_same_requests_with_istios_labels(mesh: RunningMesh) -> None:
    ip = proxies(mesh)
    gw, pp = ip["istio-ingressgateway"], ip["productpage-v1-0"]
    reviews = {v: ip[f"reviews-{v}-0"] for v in ("v1", "v2", "v3")}
    ratings = ip["ratings-v1-0"]
    settle(mesh)
    before_gw = total(gw, reporter="source", destination_workload="productpage-v1")
    before_pp_in = total(pp, reporter="destination", source_workload="istio-ingressgateway")
    before_pp_out = by_label(pp, "destination_version", reporter="source", destination_service_name="reviews")
    before_rv_in = {v: total(a, reporter="destination", source_workload="productpage-v1") for v, a in reviews.items()}
    before_rv_out = {v: total(a, reporter="source", destination_workload="ratings-v1") for v, a in reviews.items()}
    before_rt_in = by_label(ratings, "source_workload", reporter="destination")

    n = 30
    for _ in range(n):
        status, page = get(mesh.gateway_url() + "/productpage")
        assert status == 200 and "Book Reviews" in page

    # gateway -> productpage: the gateway reports as the source (Istio's gateways do), productpage as destination.
    wait_for(lambda: total(gw, reporter="source", destination_workload="productpage-v1") - before_gw == n,
             timeout=15, what="the gateway's source report")
    wait_for(lambda: total(pp, reporter="destination", source_workload="istio-ingressgateway") - before_pp_in == n,
             timeout=15, what="productpage's destination report")
    # productpage -> reviews: one call per page, spread over v1/v2/v3; each reviews sidecar reports its share.
    def hop_reviews() -> dict[str, int] | None:
        out = delta(by_label(pp, "destination_version", reporter="source", destination_service_name="reviews"),
                    before_pp_out)
        inbound = {v: int(total(a, reporter="destination", source_workload="productpage-v1") - before_rv_in[v])
                   for v, a in reviews.items()}
        return out if sum(out.values()) == n and {k: v for k, v in inbound.items() if v} == out else None
    per_version = wait_for(hop_reviews, timeout=15, what="productpage -> reviews from both reporters")
    assert set(per_version) == {"v1", "v2", "v3"}, per_version  # no routing rule: all three versions
    # reviews v2/v3 -> ratings: one call per page they serve (v1 never calls ratings); ratings reports each source.
    def hop_ratings() -> bool:
        out = {f"reviews-{v}": int(total(a, reporter="source", destination_workload="ratings-v1") - before_rv_out[v])
               for v, a in reviews.items()}
        inbound = delta(by_label(ratings, "source_workload", reporter="destination"), before_rt_in)
        return out == {"reviews-v1": 0, "reviews-v2": per_version["v2"], "reviews-v3": per_version["v3"]} and \
            inbound == {k: v for k, v in out.items() if v}
    wait_for(hop_ratings, timeout=15, what="reviews -> ratings from both reporters")

    # Every label Istio defines, with the values Istio gives them. The hop is auto mTLS: the destination reporter
    # knows both SPIFFE IDs and says connection_security_policy "mutual_tls" (Istio's value); the source reporter
    # knows them from the upstream TLS peer and says "unknown" for the policy (Istio's rule: the client cannot see
    # the server's policy).
    ((series, _),) = requests_by(reviews["v2"], reporter="destination", source_workload="productpage-v1").items()
    labels = dict(series)
    assert set(labels) == ISTIO_HTTP_LABELS
    assert labels == {
        "reporter": "destination", "source_workload": "productpage-v1", "source_workload_namespace": "default",
        "source_principal": "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
        "source_app": "productpage", "source_version": "v1",
        "source_cluster": "Kubernetes", "source_canonical_service": "productpage", "source_canonical_revision": "v1",
        "destination_workload": "reviews-v2", "destination_workload_namespace": "default",
        "destination_principal": "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
        "destination_app": "reviews", "destination_version": "v2",
        "destination_service": "reviews.default.svc.cluster.local", "destination_service_name": "reviews",
        "destination_service_namespace": "default", "destination_cluster": "Kubernetes",
        "destination_canonical_service": "reviews", "destination_canonical_revision": "v2",
        "request_protocol": "http", "response_code": "200", "response_flags": "-", "grpc_response_status": "",
        "connection_security_policy": "mutual_tls",
    }
    ((series, _),) = requests_by(reviews["v2"], reporter="source", destination_workload="ratings-v1").items()
    src = dict(series)
    assert (src["source_workload"], src["destination_service"], src["connection_security_policy"]) == (
        "reviews-v2", "ratings.default.svc.cluster.local", "unknown")
    assert (src["source_principal"], src["destination_principal"]) == (
        "spiffe://cluster.local/ns/default/sa/bookinfo-reviews", "spiffe://cluster.local/ns/default/sa/bookinfo-ratings")
    # The histograms count the same requests, in Istio's (Envoy's default) buckets. Envoy keeps them (its stats
    # access logger) and merges histograms into its page at each stats flush (every second here): wait for it.
    def histogram_caught_up() -> dict[str, dict[Series, float]] | None:
        got = istio_samples(reviews["v2"])
        return got if got["istio_request_duration_milliseconds_count"].get(series) == \
            got["istio_requests_total"][series] else None
    samples = wait_for(histogram_caught_up, timeout=20, what="the duration histogram to count the same requests")
    buckets = sorted(float(dict(k)["le"]) for k in samples["istio_request_duration_milliseconds_bucket"]
                     if dict(k)["reporter"] == "source")
    assert buckets[:5] == [0.5, 1, 5, 10, 25] and buckets[-2:] == [3600000, float("inf")]
    assert samples["istio_response_bytes_sum"][series] > 0


def _prometheus_config(mesh: RunningMesh, path: Path) -> None:
    # Istio's documented scrape configuration (samples/addons/prometheus.yaml: job `istiod` on the monitoring port,
    # pods' merged metrics at :15020/stats/prometheus), with static targets instead of Kubernetes discovery.
    pods = sorted(f"{a}:15020" for a in proxies(mesh).values())
    cp = mesh.api_url.removeprefix("http://")
    path.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "istiod", "metrics_path": "/metrics", "static_configs": [{"targets": [cp]}]},
            {"job_name": "kubernetes-pods", "metrics_path": "/stats/prometheus",
             "static_configs": [{"targets": pods}]},
        ],
    }))


def _query(base: str, promql: str) -> list[dict[str, object]]:
    status, body = get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
    assert status == 200, body
    result: list[dict[str, object]] = json.loads(body)["data"]["result"]
    return result


def _by(result: list[dict[str, object]], label: str) -> dict[str, float]:
    return {str(r["metric"].get(label, "")): float(r["value"][1]) for r in result}  # type: ignore[attr-defined]


def test_prometheus_scrapes_the_mesh_and_istios_queries_answer(mesh: RunningMesh, tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("Debian's `prometheus` package is not installed (scripts/test installs it)")
    _prometheus_config(mesh, tmp_path / "prometheus.yml")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with open(tmp_path / "prometheus.log", "wb") as log:
        proc = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: get(f"{base}/-/ready", timeout=2)[0] == 200, timeout=30, what="prometheus ready")

        seen_up: set[str] = set()  # a 1 s scrape of a busy machine may time out now and then: each once is enough

        def all_up() -> bool:
            targets = json.loads(get(f"{base}/api/v1/targets")[1])["data"]["activeTargets"]
            seen_up.update(t["scrapeUrl"] for t in targets if t["health"] == "up")
            return len(targets) == len(proxies(mesh)) + 1 and len(seen_up) == len(targets)
        wait_for(all_up, timeout=60, what="every target scraped")
        for _ in range(30):
            assert get(mesh.gateway_url() + "/productpage")[0] == 200
        settle(mesh)  # every request reported by the sidecars before their counts become the expectation
        ip = proxies(mesh)
        expected = {v: sum(requests_by(ip[f"reviews-{v}-0"], reporter="destination").values())
                    for v in ("v1", "v2", "v3")}
        # The count query matches what the sidecars serve (once Prometheus has scraped past the last request).
        count_q = 'sum(istio_requests_total{reporter="destination",destination_service_name="reviews"}) ' \
                  "by (destination_version)"
        wait_for(lambda: _by(_query(base, count_q), "destination_version") == expected, timeout=60,
                 what=f"Prometheus's counts to reach {expected}")
        # Istio's rate query: every version that served requests has a positive per-second rate.
        rate_q = 'sum(rate(istio_requests_total{reporter="destination",destination_service_name="reviews"}[1m])) ' \
                 "by (destination_version)"
        rates = wait_for(lambda: (r := _by(_query(base, rate_q), "destination_version")) and
                         set(r) == set(expected) and all(v > 0 for v in r.values()) and r,
                         timeout=60, what="per-version request rates")
        assert set(rates) == {"v1", "v2", "v3"}
        # The control plane's own metrics, under Istio's names: every proxy is connected.
        connected = _by(_query(base, 'pilot_xds{job="istiod"}'), "job")
        assert connected == {"istiod": float(len(ip))}
        assert float(_query(base, "sum(pilot_xds_pushes)")[0]["value"][1]) > 0  # type: ignore[index]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def test_an_injected_abort_is_a_500_with_flag_fi_on_the_source_reporter(mesh: RunningMesh) -> None:
    """Istio's fault-injection task: jason is on reviews v2, whose calls to ratings are aborted with 500 by the
    client-side sidecar (the request never reaches ratings): reported by reviews-v2 as 500, flags FI."""
    for name in ("destination-rule-all.yaml", "virtual-service-all-v1.yaml", "virtual-service-reviews-test-v2.yaml",
                 "virtual-service-ratings-test-abort.yaml"):
        mesh.cli("apply", "-f", str(BOOKINFO / name), check=True)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor())
    form = urllib.parse.urlencode({"username": "jason", "passwd": "x"}).encode()
    wait_for(lambda: opener.open(urllib.request.Request(mesh.gateway_url() + "/login", data=form),
                                 timeout=10).status == 200, timeout=15, what="login through the gateway")

    def page() -> str:
        with opener.open(mesh.gateway_url() + "/productpage", timeout=30) as r:
            return str(r.read().decode())

    wait_for(lambda: "Ratings service is currently unavailable" in page(), timeout=15, what="abort on ratings")
    ip = proxies(mesh)
    rv2, ratings = ip["reviews-v2-0"], ip["ratings-v1-0"]
    faults = {"reporter": "source", "destination_service_name": "ratings", "response_code": "500",
              "response_flags": "FI"}
    settle(mesh)
    before, before_ratings = total(rv2, **faults), total(ratings, reporter="destination", source_workload="reviews-v2")
    m = 10
    for _ in range(m):
        assert "Ratings service is currently unavailable" in page()
    wait_for(lambda: total(rv2, **faults) - before == m, timeout=15, what=f"{m} more FI aborts")
    labels = dict(next(iter(requests_by(rv2, **faults))))
    assert labels["source_workload"] == "reviews-v2" and labels["destination_service"] == \
        "ratings.default.svc.cluster.local"
    assert labels["destination_workload"] == "unknown"  # no response from ratings: no peer metadata
    # ratings never saw them.
    assert total(ratings, reporter="destination", source_workload="reviews-v2") == before_ratings


OVERRIDES = """apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_DURATION}
      disabled: true
    - match: {metric: REQUEST_COUNT, mode: CLIENT}
      tagOverrides:
        request_protocol: {operation: REMOVE}
        x_user: {value: "request.headers['x-user']"}
        request_host: {value: request.host}
"""


def test_telemetry_overrides_disable_remove_and_add_labels(mesh: RunningMesh, tmp_path: Path) -> None:
    """Istio's "Customizing Istio Metrics with Telemetry API" task at mesh scope: REQUEST_DURATION disabled
    everywhere; on the client side (the gateway reports as the source) REQUEST_COUNT loses request_protocol and
    gains x_user from the request's header and request_host from request.host."""
    ip = proxies(mesh)
    gw, pp = ip["istio-ingressgateway"], ip["productpage-v1-0"]
    (tmp_path / "t.yaml").write_text(OVERRIDES)
    mesh.cli("apply", "-f", str(tmp_path / "t.yaml"), check=True)
    try:
        def overridden() -> bool:  # poll with traffic: the new listeners' streams replace the old series
            status, _ = get_with(mesh.gateway_url() + "/productpage", {"x-user": "alice"})
            assert status == 200
            gws, pps = istio_samples(gw), istio_samples(pp)
            counted = [dict(k) for k in gws["istio_requests_total"] if dict(k).get("x_user") == "alice"]
            return bool(counted) and "istio_request_duration_milliseconds_count" not in gws and \
                "istio_request_duration_milliseconds_count" not in pps
        wait_for(overridden, timeout=60, interval=1.0, what="the overrides on the gateway's and productpage's pages")
        settle(mesh)
        before, before_unknown = total(gw, x_user="alice"), total(gw, x_user="unknown")
        for _ in range(5):
            assert get_with(mesh.gateway_url() + "/productpage", {"x-user": "alice"})[0] == 200
        assert get_with(mesh.gateway_url() + "/productpage", {})[0] == 200
        # both reported: the header-less request is the last one sent, and Envoy's access-log flush (every second)
        # can fall between it and the five before it (it failed once in a clean-clone run)
        wait_for(lambda: total(gw, x_user="alice") - before == 5 and total(gw, x_user="unknown") > before_unknown,
                 timeout=15, what="5 requests tagged alice and the header-less one reported")
        series = [dict(k) for k in istio_samples(gw)["istio_requests_total"]]
        alice = next(lab for lab in series if lab.get("x_user") == "alice")
        assert "request_protocol" not in alice and alice["request_host"].startswith(mesh.gateway_ip)
        assert alice["reporter"] == "source" and alice["destination_workload"] == "productpage-v1"
        assert any(lab.get("x_user") == "unknown" for lab in series)  # no header: Istio's "unknown"
        # SERVER side (productpage's destination reports): no tag changes, only the duration is gone
        inbound = [dict(k) for k in istio_samples(pp)["istio_requests_total"] if dict(k)["reporter"] == "destination"]
        assert inbound and all("x_user" not in lab and "request_protocol" in lab for lab in inbound)
    finally:
        mesh.cli("delete", "-f", str(tmp_path / "t.yaml"), check=True)
