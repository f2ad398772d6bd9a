"""The dashboard's service graph: two scrapes of Istio's standard metrics in, nodes and edges out (pure)."""

from __future__ import annotations

import math

import pytest

from sailmesh.dashboard.graph import (
    Page,
    Rate,
    build_graph,
    graph_from_scrapes,
    health,
    histogram_quantile,
    parse_text,
    rates,
)
from sailmesh.errors import ParseError
from tests.dashboard_metrics import NS, PP, RATINGS, REVIEWS, bookinfo, series


def scrape(t: float, texts: dict[str, str]) -> dict[str, Page]:
    return {target: Page(t, parse_text(text)) for target, text in texts.items()}


def edge(graph: dict, source: str, destination: str) -> dict:
    found = [e for e in graph["edges"] if e["source"] == source and e["destination"] == destination]
    assert len(found) == 1, (source, destination, [(e["source"], e["destination"]) for e in graph["edges"]])
    return found[0]


def wl(name: str) -> str:
    return f"workload:{NS}/{name}"


def test_parse_keeps_only_istio_request_series_and_uses_prometheus_client_parser() -> None:
    samples = parse_text(bookinfo(10)["pp"])
    assert {s.name for s in samples} == {"istio_requests_total", "istio_request_duration_milliseconds_bucket"}
    assert len([s for s in samples if s.name == "istio_requests_total"]) == 2
    counts = [s for s in samples if s.name == "istio_requests_total" and dict(s.labels)["reporter"] == "source"]
    assert counts[0].value == 10.0 and dict(counts[0].labels)["destination_workload"] == "reviews-v2"


def test_parse_rejects_a_malformed_page_with_a_typed_error() -> None:
    with pytest.raises(ParseError):
        parse_text('istio_requests_total{reporter="source" 12\n')


def test_bookinfo_edges_rates_latency_and_mtls() -> None:
    g = graph_from_scrapes(scrape(100.0, bookinfo(100)), scrape(110.0, bookinfo(150)))  # 50 requests in 10 s
    ids = {n["id"]: n for n in g["nodes"]}
    assert set(ids) == {wl("istio-ingressgateway"), wl("productpage-v1"), wl("reviews-v2"), wl("ratings-v1"),
                        f"service:{PP}", f"service:{REVIEWS}", f"service:{RATINGS}"}
    assert ids[f"service:{REVIEWS}"]["kind"] == "service" and ids[f"service:{REVIEWS}"]["name"] == "reviews"
    assert ids[wl("reviews-v2")]["version"] == "v2"

    e = edge(g, wl("productpage-v1"), f"service:{REVIEWS}")
    assert e["rps"] == pytest.approx(5.0)
    assert e["error_rate"] == 0.0 and e["health"] == "healthy"
    assert 10 < e["p99_ms"] <= 25  # every request took 12 ms: inside Istio's (10, 25] bucket
    assert e["mtls"] is True  # the destination reported mutual_tls; the client's own report says "unknown"
    assert edge(g, f"service:{REVIEWS}", wl("reviews-v2"))["rps"] == pytest.approx(5.0)
    assert edge(g, wl("istio-ingressgateway"), f"service:{PP}")["rps"] == pytest.approx(5.0)
    assert ids[f"service:{RATINGS}"]["rps"] == pytest.approx(5.0)


def test_an_abort_on_ratings_turns_the_ratings_edge_red() -> None:
    # 40 more requests, 30 of them aborted with 500 by the client sidecar's fault filter (response flag FI).
    g = graph_from_scrapes(scrape(0.0, bookinfo(100)), scrape(10.0, bookinfo(140, aborted=30)))
    e = edge(g, wl("reviews-v2"), f"service:{RATINGS}")
    assert e["rps"] == pytest.approx(4.0)
    assert e["error_rate"] == pytest.approx(0.75)
    assert e["health"] == "failure"
    assert e["codes"] == {"200": pytest.approx(1.0), "500": pytest.approx(3.0)}
    # What reached ratings was fine; the aborted requests have no destination workload.
    assert edge(g, f"service:{RATINGS}", wl("ratings-v1"))["health"] == "healthy"
    assert edge(g, wl("productpage-v1"), f"service:{REVIEWS}")["health"] == "healthy"


def test_counter_reset_and_new_series_and_new_targets() -> None:
    before = scrape(0.0, {"rv2": bookinfo(100)["rv2"]})
    # reviews-v2's sidecar restarted: its counters start again from zero (Prometheus: count from zero).
    after = scrape(10.0, {"rv2": bookinfo(20)["rv2"], "ratings": bookinfo(20)["ratings"]})
    g = graph_from_scrapes(before, after)
    assert edge(g, wl("reviews-v2"), f"service:{RATINGS}")["rps"] == pytest.approx(2.0)
    # ratings' sidecar was not in the first scrape: no baseline, so nothing from it (no destination report).
    assert edge(g, wl("reviews-v2"), f"service:{RATINGS}")["mtls"] is False
    assert edge(g, wl("productpage-v1"), f"service:{REVIEWS}")["mtls"] is True  # reviews-v2 reported that one
    # A series that appeared between two scrapes of the same target counts from zero.
    first = scrape(0.0, {"rv2": bookinfo(10)["rv2"]})
    second = scrape(5.0, {"rv2": bookinfo(20, aborted=5)["rv2"]})
    assert edge(graph_from_scrapes(first, second), wl("reviews-v2"), f"service:{RATINGS}")["codes"]["500"] == 1.0


def test_idle_edges_stay_with_zero_rate_and_keep_their_lock() -> None:
    g = graph_from_scrapes(scrape(0.0, bookinfo(100)), scrape(10.0, bookinfo(100)))
    e = edge(g, wl("productpage-v1"), f"service:{REVIEWS}")
    assert e["rps"] == 0 and e["health"] == "idle" and e["p99_ms"] is None
    assert e["mtls"] is True  # idle: decided from everything the destination ever reported


def test_traffic_from_outside_the_mesh_uses_the_destination_report() -> None:
    labels = series("destination", "unknown", PP, "productpage-v1", 503, "none")
    g = build_graph([Rate("istio_requests_total", dict(kv.split("=") for kv in labels.replace('"', "").split(",")),
                          2.0, 20.0)])
    e = edge(g, "unknown", f"service:{PP}")
    assert e["rps"] == 2.0 and e["error_rate"] == 1.0 and e["mtls"] is False
    assert {n["id"]: n["kind"] for n in g["nodes"]}["unknown"] == "unknown"


def test_histogram_quantile_matches_prometheus() -> None:
    # Prometheus: linear interpolation within the bucket; the +Inf bucket answers the highest finite bound.
    b = {10.0: 50.0, 25.0: 90.0, 50.0: 100.0, math.inf: 100.0}
    assert histogram_quantile(0.5, b) == pytest.approx(10.0)
    assert histogram_quantile(0.9, b) == pytest.approx(25.0)
    assert histogram_quantile(0.99, b) == pytest.approx(47.5)
    assert histogram_quantile(0.25, b) == pytest.approx(5.0)  # the first bucket starts at 0
    assert histogram_quantile(0.99, {10.0: 0.0, math.inf: 10.0}) == 10.0
    assert histogram_quantile(0.99, {10.0: 0.0, math.inf: 0.0}) is None
    assert histogram_quantile(0.99, {10.0: 3.0}) is None  # no +Inf bucket: not a histogram


def test_health_uses_kialis_default_tolerances() -> None:
    assert health(0, 0, 0) == "idle"
    assert health(100, 0, 0) == "healthy"
    assert health(1000, 1, 0) == "degraded"  # any 5xx (0.1 %)
    assert health(100, 11, 0) == "failure"  # more than 10 % 5xx
    assert health(100, 0, 10) == "healthy" and health(100, 0, 11) == "degraded"  # 4xx: 10 %
    assert health(100, 0, 21) == "failure"  # 4xx: 20 %


def test_rates_skip_targets_without_a_baseline_and_time_going_backwards() -> None:
    text = bookinfo(10)["pp"]
    assert rates({}, scrape(1.0, {"pp": text})) == []
    assert rates(scrape(5.0, {"pp": text}), scrape(5.0, {"pp": text})) == []
