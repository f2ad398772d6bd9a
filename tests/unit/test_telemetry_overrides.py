"""Telemetry API metric overrides (disable, REMOVE, UPSERT from CEL), periodic TCP reports and the source
reporter's principals: the generated access-log stream and the agent's counting."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2 as al
from envoy.extensions.access_loggers.grpc.v3 import als_pb2 as als_cfg
from envoy.extensions.access_loggers.stats.v3 import stats_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from sailmesh.agent.telemetry import IstioMetrics, local_workload
from sailmesh.telemetry import overrides
from sailmesh.telemetry.names import UPSTREAM_LOCAL_TAG, UPSTREAM_PEER_TAG, parse_stream
from sailmesh.telemetry.resolve import MetricOverride, TagOverride
from sailmesh.telemetry.standard import DESTINATION, SOURCE
from tests.unit.test_generate_listeners import hcm_of, listeners
from tests.unit.test_generate_support import bookinfo, sidecar
from tests.unit.test_telemetry import telemetry
from tests.unit.test_telemetry_metrics import REVIEWS_V2, _entry, _samples

# Istio's "customize metrics" task: remove grpc_response_status from REQUEST_COUNT, add a tag from a request
# attribute, disable REQUEST_DURATION.
POLICY = overrides.build([
    MetricOverride("REQUEST_COUNT", tags=(TagOverride("grpc_response_status", remove=True),
                                          TagOverride("request_host", value="request.host"))),
    MetricOverride("REQUEST_DURATION", disabled=True),
    MetricOverride("REQUEST_SIZE", tags=(TagOverride("request_host", value="request.host"),
                                         TagOverride("x_user", value="request.headers['x-user']"))),
])


def test_policy_round_trips_through_the_log_name() -> None:
    assert POLICY.expressions == ("request.host", "request.headers['x-user']")
    decoded = overrides.decode(POLICY.encode())
    assert decoded.disabled == POLICY.disabled and decoded.tags == POLICY.tags and len(decoded.expressions) == 2
    assert overrides.decode("") == overrides.NO_POLICY and overrides.decode("{broken") == overrides.NO_POLICY
    assert overrides.NO_POLICY.encode() == ""
    # custom metrics are not defined: nothing to apply; the gRPC message counts are Istio metrics like the others
    assert not overrides.build([MetricOverride("my_custom_count", disabled=True)])
    assert overrides.build([MetricOverride("GRPC_REQUEST_MESSAGES", disabled=True)]).disabled == {
        "GRPC_REQUEST_MESSAGES"}


def test_agent_applies_disable_remove_and_upsert() -> None:
    m = IstioMetrics(local_workload("productpage-v1-0", "default", {"app": "productpage", "version": "v1"}, "K"))
    policy = POLICY.encode()
    t0, t1 = overrides.tag_key(0), overrides.tag_key(1)
    for host, user in (("reviews:9080", "jason"), ("reviews:9080", "jason"), ("reviews.default:9080", "")):
        e = _entry(peer_md=REVIEWS_V2)
        e.common_properties.custom_tags[t0] = host
        if user:
            e.common_properties.custom_tags[t1] = user
        m.record_http(SOURCE, (), e, policy)
    s = _samples(m)
    counts = {lab["request_host"]: v for lab, v in s["istio_requests_total"]}
    assert counts == {"reviews:9080": 2, "reviews.default:9080": 1}
    assert all("grpc_response_status" not in lab and lab["response_code"] == "200"
               for lab, _ in s["istio_requests_total"])
    assert "istio_request_duration_milliseconds_bucket" not in s  # disabled
    # REQUEST_SIZE: its own tags; an expression Envoy had no value for is `unknown` (Istio's stats filter)
    sizes = {(lab["request_host"], lab["x_user"]) for lab, _ in s["istio_request_bytes_count"]}
    assert sizes == {("reviews:9080", "jason"), ("reviews.default:9080", "unknown")}
    # RESPONSE_SIZE: untouched, the standard labels
    (resp,) = s["istio_response_bytes_count"]
    assert "request_host" not in resp[0] and "grpc_response_status" in resp[0] and resp[1] == 3


def test_removing_a_label_merges_the_series_it_told_apart() -> None:
    m = IstioMetrics(local_workload("productpage-v1-0", "default", {"app": "productpage"}, "K"))
    drop_code = overrides.build([MetricOverride("REQUEST_COUNT", tags=(TagOverride("response_code", remove=True),))])
    for code in (200, 200, 503):
        m.record_http(SOURCE, (), _entry(code=code, peer_md=REVIEWS_V2), drop_code.encode())
    [(labels, n)] = _samples(m)["istio_requests_total"]
    assert n == 3 and "response_code" not in labels


def test_source_reporter_principals_come_from_the_upstream_tls_peer() -> None:
    # Istio's source reporter: source_principal is our certificate's, destination_principal the server's;
    # connection_security_policy stays unknown (the client cannot see the server's policy).
    m = IstioMetrics(local_workload("productpage-v1-0", "default", {"app": "productpage"}, "K"))
    e = _entry(peer_md=REVIEWS_V2)
    e.common_properties.custom_tags[UPSTREAM_PEER_TAG] = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
    e.common_properties.custom_tags[UPSTREAM_LOCAL_TAG] = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
    m.record_http(SOURCE, (), e)
    [(lab, _)] = _samples(m)["istio_requests_total"]
    assert lab["destination_principal"] == "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
    assert lab["source_principal"] == "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
    assert lab["connection_security_policy"] == "unknown"


def _tcp(kind: str, sent: int, received: int, port: int = 40000) -> al.TCPAccessLogEntry:
    t = al.TCPAccessLogEntry()
    cp = t.common_properties
    cp.access_log_type = al.AccessLogType.Value(kind)
    cp.upstream_remote_address.socket_address.address = "127.0.0.9"
    cp.downstream_remote_address.socket_address.address = "127.0.0.1"
    cp.downstream_remote_address.socket_address.port_value = port
    t.connection_properties.sent_bytes, t.connection_properties.received_bytes = sent, received
    return t


def test_periodic_tcp_reports_count_bytes_before_the_close() -> None:
    m = IstioMetrics(local_workload("ratings-v1-0", "default", {"app": "ratings"}, "K"))
    svc = ("ratings.default.svc.cluster.local",)

    def totals() -> tuple[float, ...]:
        s = _samples(m)
        return tuple(s[n][0][1] if n in s else 0.0 for n in (
            "istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total",
            "istio_tcp_sent_bytes_total", "istio_tcp_received_bytes_total"))

    m.record_tcp(DESTINATION, svc, _tcp("TcpUpstreamConnected", 0, 0))  # before the TLS handshake: not used
    assert totals() == (0, 0, 0, 0)
    m.record_tcp(DESTINATION, svc, _tcp("TcpPeriodic", 100, 10))  # totals so far, as Envoy reports them
    assert totals() == (1, 0, 100, 10)  # opened at its first report
    m.record_tcp(DESTINATION, svc, _tcp("TcpPeriodic", 250, 30))
    m.record_tcp(DESTINATION, svc, _tcp("TcpPeriodic", 7, 7, port=40001))  # another connection, in between
    assert totals() == (2, 0, 257, 37)
    m.record_tcp(DESTINATION, svc, _tcp("TcpConnectionEnd", 300, 30))
    assert totals() == (2, 1, 307, 37)  # the close adds only what the periodic reports had not
    m.record_tcp(DESTINATION, svc, _tcp("TcpConnectionEnd", 5, 0, port=40002))  # short: opened and closed at once
    assert totals() == (3, 2, 312, 37)


def test_connect_tunnels_are_reported_periodically_and_requests_once() -> None:
    m = IstioMetrics(local_workload("productpage-v1-0", "default", {"app": "productpage"}, "K"))
    tunnel = _entry(cluster="outbound|3306||mysql.default.svc.cluster.local", authority="mysql:3306")
    tunnel.request.request_method = base_pb2.RequestMethod.Value("CONNECT")
    tunnel.common_properties.stream_id = "s1"
    tunnel.common_properties.access_log_type = al.AccessLogType.Value("DownstreamPeriodic")
    tunnel.request.request_body_bytes, tunnel.response.response_body_bytes = 10, 40
    m.record_http(SOURCE, (), tunnel)
    s = _samples(m)
    assert s["istio_tcp_connections_opened_total"][0][1] == 1 and s["istio_tcp_sent_bytes_total"][0][1] == 40
    assert s["istio_tcp_connections_closed_total"][0][1] == 0
    tunnel.common_properties.access_log_type = al.AccessLogType.Value("DownstreamEnd")
    tunnel.request.request_body_bytes, tunnel.response.response_body_bytes = 15, 90
    m.record_http(SOURCE, (), tunnel)
    s = _samples(m)
    assert [s[n][0][1] for n in ("istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total",
                                 "istio_tcp_sent_bytes_total", "istio_tcp_received_bytes_total")] == [1, 1, 90, 15]
    slow = _entry(peer_md=REVIEWS_V2)
    slow.common_properties.access_log_type = al.AccessLogType.Value("DownstreamPeriodic")
    m.record_http(SOURCE, (), slow)  # a long request's periodic entry is not a request
    assert "istio_requests_total" not in _samples(m)


def _stream(log: object) -> tuple[als_cfg.CommonGrpcAccessLogConfig, tuple[str, tuple[str, ...], str]]:
    cfg = als_cfg.HttpGrpcAccessLogConfig()
    if not log.typed_config.Unpack(cfg):  # type: ignore[attr-defined]
        tcfg = als_cfg.TcpGrpcAccessLogConfig()
        assert log.typed_config.Unpack(tcfg)  # type: ignore[attr-defined]
        cfg.common_config.CopyFrom(tcfg.common_config)
    parsed = parse_stream(cfg.common_config.log_name)
    assert parsed is not None
    return cfg.common_config, parsed


def test_generated_streams_carry_the_sides_overrides() -> None:
    tel = telemetry("m", "istio-system", """
metrics:
- providers: [{name: prometheus}]
  overrides:
  - match: {metric: REQUEST_COUNT, mode: CLIENT}
    tagOverrides: {request_host: {value: request.host}, request_protocol: {operation: REMOVE}}
  - match: {metric: REQUEST_DURATION, mode: SERVER}
    disabled: true
  reportingInterval: 2s
""")
    ls = listeners(bookinfo(tel), sidecar("reviews-v2-0", "127.0.1.4", app="reviews", version="v2"))
    out = hcm_of(ls["virtualOutbound"])
    common, (reporter, _, policy) = _stream(out.access_log[-1])
    assert reporter == SOURCE and overrides.decode(policy).tags == {"REQUEST_COUNT": (("request_host", 0),
                                                                                      ("request_protocol", -1))}
    tags = {t.tag: t.value for t in common.custom_tags}
    assert tags == {overrides.tag_key(0): "%CEL(request.host)%", UPSTREAM_PEER_TAG: "%UPSTREAM_PEER_URI_SAN%",
                    UPSTREAM_LOCAL_TAG: "%UPSTREAM_LOCAL_URI_SAN%"}
    assert out.access_log_options.access_log_flush_interval.seconds == 2  # CONNECT tunnels: periodic
    stats = stats_pb2.Config()  # the requests themselves: Envoy's stats logger, the overrides as tags
    assert out.access_log[0].typed_config.Unpack(stats)
    tags = {t.name: t.value_format for t in stats.counters[0].stat.tags}
    assert tags["x0"] == "%CEL(request.host)%" and overrides.decode(tags["ov"]) == overrides.decode(policy)
    (inbound_listener,) = [lo for lo in ls.values() if lo.traffic_direction == base_pb2.INBOUND]
    inbound = hcm_of(inbound_listener)
    assert inbound.access_log[-1].typed_config.Unpack(stats) and not inbound.HasField("access_log_options")
    tags = {t.name: t.value_format for t in stats.counters[0].stat.tags}
    assert tags["k"].startswith(DESTINATION + "\n") and overrides.decode(tags["ov"]).disabled == {"REQUEST_DURATION"}
    assert "request_duration_milliseconds" not in {h.stat.name for h in stats.histograms}
    assert set(tags) == {"k", "ov", "gm"}  # no expression on the SERVER side


def test_metrics_off_when_all_metrics_disabled_and_tcp_reports_every_5s_by_default() -> None:
    off = telemetry("m", "istio-system", "metrics: [{overrides: [{match: {metric: ALL_METRICS}, disabled: true}]}]")
    ls = listeners(bookinfo(off), sidecar("reviews-v2-0", "127.0.1.4", app="reviews", version="v2"))
    assert not [a for a in hcm_of(ls["virtualOutbound"]).access_log if "grpc" in a.name or "stats" in a.name]
    ls = listeners(bookinfo(), sidecar("reviews-v2-0", "127.0.1.4", app="reviews", version="v2"))
    assert hcm_of(ls["virtualOutbound"]).access_log_options.access_log_flush_interval.seconds == 5
    assert tcp_proxy_pb2.TcpProxy.TcpAccessLogOptions().access_log_flush_interval is not None


def test_a_new_policy_drops_the_series_counted_under_the_old_one() -> None:
    m = IstioMetrics(local_workload("productpage-v1-0", "default", {"app": "productpage"}, "K"))
    m.record_http(SOURCE, (), _entry(peer_md=REVIEWS_V2))
    m.record_http(DESTINATION, (), _entry(cluster="inbound|9080||"))
    off = overrides.build([MetricOverride("REQUEST_DURATION", disabled=True)]).encode()
    m.use_policy(SOURCE, off)  # Envoy opened the source stream of the new listener config
    m.record_http(SOURCE, (), _entry(peer_md=REVIEWS_V2), off)
    s = _samples(m)
    assert {lab["reporter"] for lab, _ in s["istio_request_duration_milliseconds_count"]} == {"destination"}
    assert sorted((lab["reporter"], v) for lab, v in s["istio_requests_total"]) == [("destination", 1), ("source", 1)]
