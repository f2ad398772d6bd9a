"""Istio's HTTP metrics through Envoy's stats access logger: the generated logger config (pure generator output)
and the agent's renaming of Envoy's series into istio_* families with Istio's labels."""

from __future__ import annotations

from envoy.extensions.access_loggers.stats.v3 import stats_pb2

from sailmesh.agent.istio_stats import EnvoyIstioStats, split_page
from sailmesh.agent.telemetry import ISTIO_BUCKETS, IstioMetrics, local_workload
from sailmesh.telemetry import overrides, peer
from sailmesh.telemetry.names import DESTINATION, SOURCE
from sailmesh.telemetry.resolve import MetricOverride, TagOverride
from sailmesh.telemetry.stats_logger import http_stats_config, http_stats_log, key_format
from tests.unit.test_telemetry_metrics import _samples

PRODUCTPAGE = peer.encode("productpage-v1-0", "default", {"app": "productpage", "version": "v1"})
RATINGS_V1 = peer.encode("ratings-v1-0", "default", {"app": "ratings", "version": "v1"})
RATINGS = "ratings.default.svc.cluster.local"


def _tags(stat: stats_pb2.Config.Stat) -> dict[str, str]:
    return {t.name: t.value_format for t in stat.tags}


def test_the_logger_keeps_istios_four_http_metrics_with_one_key_tag_per_reporter() -> None:
    cfg = http_stats_config(SOURCE)
    assert cfg.stat_prefix == "sailmesh_istio"
    assert [c.stat.name for c in cfg.counters] == ["requests_total"] and cfg.counters[0].value_fixed.value == 1
    # Istio's duration (ms, Envoy's %DURATION%) and sizes (request.total_size / response.total_size: headers + body)
    assert [(h.stat.name, h.unit, h.value_format) for h in cfg.histograms] == [
        ("request_duration_milliseconds", stats_pb2.Config.Histogram.Milliseconds, "%DURATION%"),
        ("request_bytes", stats_pb2.Config.Histogram.Bytes, "%CEL(request.total_size)%"),
        ("response_bytes", stats_pb2.Config.Histogram.Bytes, "%CEL(response.total_size)%")]
    key = key_format(SOURCE, ())
    assert key.split("\n") == [
        "source", "", "%DYNAMIC_METADATA(sailmesh.peer:metadata)%", "%UPSTREAM_CLUSTER%", "%REQ(:AUTHORITY)%",
        "%REQ(CONTENT-TYPE):16%", "%RESPONSE_CODE%", "%GRPC_STATUS_NUMBER%", "%RESPONSE_FLAGS%",
        "%UPSTREAM_PEER_URI_SAN%", "%UPSTREAM_LOCAL_URI_SAN%"]
    assert _tags(cfg.counters[0].stat) == {"k": key, "gm": "%FILTER_STATE(envoy.filters.http.grpc_stats:PLAIN)%"}
    assert all(_tags(h.stat) == {"k": key} for h in cfg.histograms)
    # The destination reporter: the downstream TLS peer; no cluster; the authority only to choose among services.
    one = key_format(DESTINATION, [RATINGS]).split("\n")  # the client's metadata: kept in filter state inbound
    assert one[:5] == ["destination", RATINGS, "%FILTER_STATE(sailmesh.peer:PLAIN)%", "", ""]
    assert one[-2:] == ["%DOWNSTREAM_PEER_URI_SAN%", "%DOWNSTREAM_LOCAL_URI_SAN%"]
    assert key_format(DESTINATION, [RATINGS, "r2.default.svc.cluster.local"]).split("\n")[4] == "%REQ(:AUTHORITY)%"
    assert http_stats_log(SOURCE).name == "envoy.access_loggers.stats"


def test_overrides_drop_disabled_metrics_and_tag_expressions() -> None:
    policy = overrides.build([
        MetricOverride("REQUEST_DURATION", disabled=True),
        MetricOverride("REQUEST_COUNT", tags=(TagOverride("x_user", value="request.headers['x-user']"),
                                              TagOverride("request_protocol", remove=True))),
    ])
    cfg = http_stats_config(SOURCE, (), policy)
    assert [h.stat.name for h in cfg.histograms] == ["request_bytes", "response_bytes"]
    tags = _tags(cfg.counters[0].stat)
    assert tags["x0"] == "%CEL(request.headers['x-user'])%" and overrides.decode(tags["ov"]) == overrides.decode(
        policy.encode())
    # REQUEST_COUNT disabled: the counter stays for the gRPC message counts (the agent hides it); all three: gone
    off = overrides.build([MetricOverride(m, disabled=True) for m in ("REQUEST_COUNT", "GRPC_REQUEST_MESSAGES",
                                                                      "GRPC_RESPONSE_MESSAGES")])
    assert not http_stats_config(SOURCE, (), off).counters
    assert http_stats_config(SOURCE, (), overrides.build([MetricOverride("REQUEST_COUNT", disabled=True)])).counters


def _key(reporter: str, services: str = "", peer_md: str = "", cluster: str = "", authority: str = "",
         content_type: str = "", code: str = "200", grpc: str = "", flags: str = "-", peer_uri: str = "",
         own_uri: str = "") -> str:
    raw = "\n".join([reporter, services, peer_md, cluster, authority, content_type, code, grpc, flags, peer_uri,
                     own_uri])
    return raw.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _histogram(name: str, labels: str, values: list[float]) -> list[str]:
    lines = []
    for b in (*ISTIO_BUCKETS, "+Inf"):
        le = "+Inf" if b == "+Inf" else f"{b:g}"
        n = sum(1 for v in values if b == "+Inf" or v <= float(b))
        lines.append(f'envoy_sailmesh_istio_{name}_bucket{{{labels},le="{le}"}} {n}')
    lines.append(f"envoy_sailmesh_istio_{name}_sum{{{labels}}} {sum(values)}")
    lines.append(f"envoy_sailmesh_istio_{name}_count{{{labels}}} {len(values)}")
    return lines


def _page(*lines: str) -> str:
    return "# TYPE envoy_server_live gauge\nenvoy_server_live 1\n" + "\n".join(lines) + "\n"


def test_envoys_series_become_istios_families_with_istios_labels() -> None:
    m = IstioMetrics(local_workload("reviews-v2-0", "default", {"app": "reviews", "version": "v2"}, "Kubernetes"))
    stats = EnvoyIstioStats(m, ISTIO_BUCKETS)
    src = 'k="{}"'.format(_key(SOURCE, peer_md=RATINGS_V1,
                               cluster=f"outbound|9080||{RATINGS}", authority="ratings:9080",
                               peer_uri="spiffe://cluster.local/ns/default/sa/bookinfo-ratings",
                               own_uri="spiffe://cluster.local/ns/default/sa/bookinfo-reviews"))
    dst = 'k="{}"'.format(_key(DESTINATION, services="reviews.default.svc.cluster.local", peer_md=PRODUCTPAGE,
                               peer_uri="spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
                               own_uri="spiffe://cluster.local/ns/default/sa/bookinfo-reviews"))
    grpc = 'k="{}"'.format(_key(DESTINATION, services="reviews.default.svc.cluster.local",
                                content_type="application/grpc", grpc="0"))
    page = _page(
        "# TYPE envoy_sailmesh_istio_requests_total counter",
        f'envoy_sailmesh_istio_requests_total{{{src},gm=""}} 3',
        f'envoy_sailmesh_istio_requests_total{{{dst},gm=""}} 2',
        f'envoy_sailmesh_istio_requests_total{{{grpc},gm="1,4"}} 2',
        f'envoy_sailmesh_istio_requests_total{{{grpc},gm="1,1"}} 1',
        "# TYPE envoy_sailmesh_istio_request_duration_milliseconds histogram",
        *_histogram("request_duration_milliseconds", src, [3, 7, 30]),
    )
    rest = stats.take(page)
    assert rest == "# TYPE envoy_server_live gauge\nenvoy_server_live 1\n"  # Envoy's own stats pass through
    s = _samples(m)
    by = {lab["reporter"] + "/" + lab["request_protocol"]: (lab, v) for lab, v in s["istio_requests_total"]}
    assert {k: v for k, (_, v) in by.items()} == {"source/http": 3, "destination/http": 2, "destination/grpc": 3}
    lab = by["source/http"][0]
    assert (lab["destination_workload"], lab["destination_version"], lab["destination_service"]) == (
        "ratings-v1", "v1", RATINGS)
    assert (lab["source_principal"], lab["destination_principal"], lab["connection_security_policy"]) == (
        "spiffe://cluster.local/ns/default/sa/bookinfo-reviews", "spiffe://cluster.local/ns/default/sa/bookinfo-ratings",
        "unknown")  # Istio: the client cannot see the server's policy
    lab = by["destination/http"][0]
    assert (lab["source_workload"], lab["destination_service_name"], lab["connection_security_policy"],
            lab["response_flags"], lab["grpc_response_status"]) == ("productpage-v1", "reviews", "mutual_tls", "-", "")
    assert by["destination/grpc"][0]["grpc_response_status"] == "0"
    # gRPC messages: 2 calls of 1 request / 4 response messages and 1 of 1/1
    assert [v for _, v in s["istio_request_messages_total"]] == [3] and \
        [v for _, v in s["istio_response_messages_total"]] == [9]
    # the histogram, in Istio's buckets: 3 and 7 ms under 10, 30 under 50
    buckets = {lab["le"]: v for lab, v in s["istio_request_duration_milliseconds_bucket"] if lab["reporter"] == SOURCE}
    assert (buckets["5.0"], buckets["10.0"], buckets["25.0"], buckets["50.0"], buckets["+Inf"]) == (1, 2, 2, 3, 3)
    assert [v for lab, v in s["istio_request_duration_milliseconds_count"] if lab["reporter"] == SOURCE] == [3]
    assert [v for lab, v in s["istio_request_duration_milliseconds_sum"] if lab["reporter"] == SOURCE] == [40]
    # the next scrape replaces these rows (Envoy's counters are totals, not increments)
    stats.take(_page("# TYPE envoy_sailmesh_istio_requests_total counter",
                     f'envoy_sailmesh_istio_requests_total{{{src},gm=""}} 4',
                     "# TYPE envoy_sailmesh_istio_request_duration_milliseconds histogram",
                     *_histogram("request_duration_milliseconds", src, [3, 7, 30, 1])))
    assert [v for lab, v in _samples(m)["istio_requests_total"] if lab["reporter"] == SOURCE] == [4]


def test_the_newest_overrides_win_while_the_old_listener_drains() -> None:
    m = IstioMetrics(local_workload("productpage-v1-0", "default", {"app": "productpage"}, "K"))
    now = [100.0]
    stats = EnvoyIstioStats(m, ISTIO_BUCKETS, clock=lambda: now[0])
    policy = overrides.build([MetricOverride("REQUEST_COUNT", tags=(TagOverride("x_user", value="request.host"),
                                                                    TagOverride("request_protocol", remove=True)))])
    old = 'k="{}"'.format(_key(SOURCE, cluster=f"outbound|9080||{RATINGS}"))
    new = old + ',ov="{}",x0="alice"'.format(policy.encode().replace('"', '\\"'))
    counter = "# TYPE envoy_sailmesh_istio_requests_total counter"
    stats.take(_page(counter, f"envoy_sailmesh_istio_requests_total{{{old}}} 5"))
    assert [v for _, v in _samples(m)["istio_requests_total"]] == [5]
    now[0] += 5  # the new listener's logger counts; the old one (draining) does not
    stats.take(_page(counter, f"envoy_sailmesh_istio_requests_total{{{old}}} 5",
                     f"envoy_sailmesh_istio_requests_total{{{new}}} 1"))
    ((lab, v),) = _samples(m)["istio_requests_total"]
    assert v == 1 and lab["x_user"] == "alice" and "request_protocol" not in lab


def test_a_page_without_the_loggers_series_is_unchanged() -> None:
    page = _page("envoy_cluster_upstream_rq_total{envoy_cluster_name=\"x\"} 3")
    assert split_page(page) == (page, "")


def test_a_series_envoy_freed_with_its_listener_keeps_counting_up() -> None:
    """Envoy frees a drained listener's stats; a new listener's logger starts its counter at zero. Istio's counters
    only go up (Prometheus would see a reset; the e2e deltas would go wrong): the agent adds what was counted."""
    m = IstioMetrics(local_workload("productpage-v1-0", "default", {"app": "productpage"}, "K"))
    stats = EnvoyIstioStats(m, ISTIO_BUCKETS)
    key = _key(SOURCE, cluster=f"outbound|9080||{RATINGS}")
    counter = "# TYPE envoy_sailmesh_istio_requests_total counter"

    def series(n: int) -> str:
        return f'envoy_sailmesh_istio_requests_total{{k="{key}"}} {n}'
    for page, expected in ((_page(counter, series(7)), 7), (_page(), 7), (_page(counter, series(2)), 9),
                           (_page(counter, series(1)), 10), (_page(counter, series(4)), 13)):
        stats.take(page)
        assert [v for _, v in _samples(m)["istio_requests_total"]] == [expected]
