"""The shared metrics registry renders the Prometheus text exposition format (written by prometheus_client:
labels sorted by name, values as Go floats)."""

from __future__ import annotations

import pytest

from sailmesh.metrics import Registry


def test_counter_gauge_histogram_render():
    r = Registry()
    c = r.counter("pushes_total", "Pushes.", ["type"])
    c.inc(type="cds")
    c.inc(2, type="cds")
    c.inc(type='we"ird')
    g = r.gauge("connected", "Connected.")
    g.inc()
    g.inc()
    g.dec()
    h = r.histogram("latency_seconds", "Latency.", [0.1, 1.0], ["type"])
    h.observe(0.05, type="rds")
    h.observe(0.1, type="rds")  # le is inclusive
    h.observe(5, type="rds")
    text = r.render()
    assert "# TYPE pushes_total counter" in text
    assert 'pushes_total{type="cds"} 3.0' in text
    assert 'pushes_total{type="we\\"ird"} 1.0' in text
    assert "connected 1.0" in text.splitlines()
    assert 'latency_seconds_bucket{le="0.1",type="rds"} 2.0' in text
    assert 'latency_seconds_bucket{le="1.0",type="rds"} 2.0' in text
    assert 'latency_seconds_bucket{le="+Inf",type="rds"} 3.0' in text
    assert 'latency_seconds_sum{type="rds"} 5.15' in text
    assert 'latency_seconds_count{type="rds"} 3.0' in text
    assert "_created" not in text  # Istio's metrics have no creation timestamps
    assert h.count(type="rds") == 3


def test_labels_must_match_and_names_are_unique():
    r = Registry()
    c = r.counter("x", "X.", ["type"])
    with pytest.raises(ValueError):
        c.inc(kind="a")
    assert r.counter("x", "X.", ["type"]) is c
    with pytest.raises(ValueError):
        r.gauge("x", "X.", ["type"])


def test_a_metric_can_read_its_value_from_its_owner():
    r = Registry()
    restarts = [0]
    c = r.counter("restarts_total", "Restarts.")
    c.set_function(lambda: restarts[0])
    assert "restarts_total 0.0" in r.render().splitlines()
    restarts[0] = 3
    assert "restarts_total 3.0" in r.render().splitlines() and c.value() == 3
    with pytest.raises(ValueError):
        r.counter("by_type", "By type.", ["type"]).set_function(lambda: 1)


def test_counters_keep_istios_names_without_total():
    # Istio exports pilot_xds_pushes and citadel_server_csr_count under exactly these names (no `_total`).
    r = Registry()
    r.counter("pilot_xds_pushes", "Pushes.", ["type"]).inc(type="cds")
    text = r.render()
    assert 'pilot_xds_pushes{type="cds"} 1.0' in text.splitlines()
    assert "pilot_xds_pushes_total" not in text
