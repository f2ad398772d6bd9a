"""Istio's standard metrics: peer metadata, the Envoy config that streams access logs, and the agent's counting."""

from __future__ import annotations

import base64
import os
import tempfile

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2 as al
from envoy.extensions.access_loggers.grpc.v3 import als_pb2 as als_cfg
from envoy.extensions.access_loggers.stats.v3 import stats_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.http.header_to_metadata.v3 import header_to_metadata_pb2 as h2m
from envoy.extensions.filters.http.set_filter_state.v3 import set_filter_state_pb2 as sfs
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from google.protobuf import struct_pb2
from prometheus_client.parser import text_string_to_metric_families

from sailmesh.agent.telemetry import AccessLogServer, IstioMetrics, local_workload, response_flags
from sailmesh.metrics import Registry
from sailmesh.telemetry import peer
from sailmesh.telemetry.standard import (
    DESTINATION,
    SOURCE,
    http_access_log,
    log_name,
    metadata_exchange_filters,
    parse_log_name,
)
from sailmesh.telemetry.stats_logger import key_format
from tests.unit.test_generate_listeners import hcm_of, listeners
from tests.unit.test_generate_support import bookinfo, sidecar

PRODUCTPAGE = peer.encode("productpage-v1-0", "default", {"app": "productpage", "version": "v1"})
REVIEWS_V2 = peer.encode("reviews-v2-0", "default", {"app": "reviews", "version": "v2"})


def test_peer_metadata_is_istios_base64_struct_and_round_trips() -> None:
    s = struct_pb2.Struct.FromString(base64.b64decode(PRODUCTPAGE))
    assert s["NAME"] == "productpage-v1-0" and s["NAMESPACE"] == "default"
    assert s["WORKLOAD_NAME"] == "productpage-v1" and s["CLUSTER_ID"] == "Kubernetes"
    assert dict(s["LABELS"]) == {"app": "productpage", "version": "v1"}
    info = peer.decode(PRODUCTPAGE)
    assert (info.workload, info.namespace, info.app, info.version, info.cluster) == (
        "productpage-v1", "default", "productpage", "v1", "Kubernetes")
    # A forged or truncated header makes the peer unknown, nothing worse.
    assert peer.decode("not base64!") == peer.UNKNOWN_WORKLOAD and peer.decode("") == peer.UNKNOWN_WORKLOAD


def test_canonical_service_and_revision_follow_istios_label_order() -> None:
    # Istio: canonical-name label, then app.kubernetes.io/name, then app, then the workload name; the revision:
    # canonical-revision, app.kubernetes.io/version, version, then "latest".
    w = peer.workload_info("reviews-v2", "ns", {"app": "reviews", "version": "v2"}, "c")
    assert (w.canonical_service, w.canonical_revision) == ("reviews", "v2")
    w = peer.workload_info("x", "ns", {"app": "a", "app.kubernetes.io/name": "k", "service.istio.io/canonical-name":
                                       "canon", "app.kubernetes.io/version": "9"}, "c")
    assert (w.canonical_service, w.canonical_revision, w.app, w.version) == ("canon", "9", "a", "unknown")
    w = peer.workload_info("bare", "ns", {}, "c")
    assert (w.canonical_service, w.canonical_revision, w.app) == ("bare", "latest", "unknown")
    assert peer.workload_of_pod("reviews-v2-0") == "reviews-v2" and peer.workload_of_pod("solo") == "solo"


def test_the_agents_numeric_constants_are_the_protos() -> None:
    from sailmesh.agent import telemetry

    assert telemetry.CONNECT_METHOD == base_pb2.RequestMethod.Value("CONNECT")
    assert telemetry.TCP_CONNECTION_END == al.AccessLogType.Value("TcpConnectionEnd")
    assert telemetry.TCP_PERIODIC == al.AccessLogType.Value("TcpPeriodic")
    assert telemetry.DOWNSTREAM_PERIODIC == al.AccessLogType.Value("DownstreamPeriodic")


def test_response_flags_are_envoys_short_codes() -> None:
    assert response_flags(al.ResponseFlags()) == "-"
    assert response_flags(al.ResponseFlags(fault_injected=True)) == "FI"
    assert response_flags(al.ResponseFlags(no_healthy_upstream=True, upstream_retry_limit_exceeded=True)) == "UH,URX"


def test_metadata_exchange_strips_the_peer_header_and_overwrites_ours() -> None:
    """Istio's wire protocol: both x-envoy-peer-metadata and x-envoy-peer-metadata-id go out with every request
    (outbound) and response (inbound), and the peer's are stripped before the app sees them. Only the metadata
    is kept: outbound in dynamic metadata, inbound in filter state (cheaper; session 14)."""
    outbound = metadata_exchange_filters(False, "productpage-v1-0", "default", {"app": "productpage"}, "sidecar~x")
    add = header_mutation_pb2.HeaderMutation()
    outbound[0].typed_config.Unpack(add)
    keys = {m.append.header.key: m.append for m in add.mutations.request_mutations}
    assert set(keys) == {"x-envoy-peer-metadata", "x-envoy-peer-metadata-id"}
    assert all(v.append_action == base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD for v in keys.values())
    assert [m.remove for m in add.mutations.response_mutations] == ["x-envoy-peer-metadata-id"]
    read = h2m.Config()
    outbound[1].typed_config.Unpack(read)
    assert [(r.header, r.remove, r.on_header_present.metadata_namespace, r.on_header_present.key)
            for r in read.response_rules] == [("x-envoy-peer-metadata", True, "sailmesh.peer", "metadata")]
    inbound = metadata_exchange_filters(True, "reviews-v2-0", "default", {}, "sidecar~y")
    assert [f.name for f in inbound] == ["istio.metadata_exchange.read", "istio.metadata_exchange.add"]
    keep = sfs.Config()
    assert inbound[0].typed_config.Unpack(keep)  # set_filter_state, before the add filter removes the header
    (value,) = keep.on_request_headers
    assert (value.object_key, value.factory_key, value.skip_if_empty) == ("sailmesh.peer", "envoy.string", True)
    assert value.format_string.text_format_source.inline_string == "%REQ(x-envoy-peer-metadata)%"
    add = header_mutation_pb2.HeaderMutation()
    inbound[1].typed_config.Unpack(add)
    assert [m.remove for m in add.mutations.request_mutations] == ["x-envoy-peer-metadata", "x-envoy-peer-metadata-id"]
    assert {m.append.header.key for m in add.mutations.response_mutations} == set(keys)


def test_listeners_keep_istios_http_metrics_in_envoys_stats_logger_naming_the_reporter() -> None:
    ls = listeners(bookinfo(), sidecar("reviews-v2-0", "127.0.1.4", app="reviews", version="v2"))
    out = hcm_of(ls["virtualOutbound"])
    stats, stream = out.access_log  # the explicit proxy: requests in Envoy's stats, CONNECT tunnels on the stream
    cfg = stats_pb2.Config()
    assert stats.name == "envoy.access_loggers.stats" and stats.typed_config.Unpack(cfg)
    tags = {t.name: t.value_format for t in cfg.counters[0].stat.tags}
    assert tags["k"] == key_format(SOURCE, ()) and tags["gm"] == "%FILTER_STATE(envoy.filters.http.grpc_stats:PLAIN)%"
    methods = [f.header_filter.header for f in stats.filter.and_filter.filters if f.HasField("header_filter")]
    assert [(h.name, h.string_match.exact, h.invert_match) for h in methods] == [(":method", "CONNECT", True)]
    grpc_cfg = als_cfg.HttpGrpcAccessLogConfig()
    stream.typed_config.Unpack(grpc_cfg)
    assert stream.name == "envoy.access_loggers.http_grpc" and grpc_cfg.common_config.log_name == "istio|source"
    assert grpc_cfg.common_config.grpc_service.envoy_grpc.cluster_name == "sailmesh_als"
    assert not stream.filter.header_filter.header.invert_match  # CONNECT only
    (inbound_listener,) = [lo for lo in ls.values() if lo.traffic_direction == base_pb2.INBOUND]
    (log,) = hcm_of(inbound_listener).access_log
    assert log.typed_config.Unpack(cfg) and not log.HasField("filter")
    key = {t.name: t.value_format for t in cfg.counters[0].stat.tags}["k"]
    assert key == key_format(DESTINATION, ["reviews.default.svc.cluster.local"])


def test_log_names_round_trip() -> None:
    assert parse_log_name(log_name(SOURCE)) == (SOURCE, ())
    assert parse_log_name(log_name(DESTINATION, ["a.ns.svc.cluster.local", "b"])) == (
        DESTINATION, ("a.ns.svc.cluster.local", "b"))
    assert parse_log_name("my-own-logger") is None
    assert http_access_log(SOURCE).name == "envoy.access_loggers.http_grpc"
    assert tcp_proxy_pb2.TcpProxy().access_log_options is not None


REVIEWS_CLUSTER = "outbound|9080||reviews.default.svc.cluster.local"


def _entry(code: int = 200, cluster: str = REVIEWS_CLUSTER, authority: str = "reviews:9080", peer_md: str = "",
           ms: int = 7, fault: bool = False, spiffe: str = "") -> al.HTTPAccessLogEntry:
    e = al.HTTPAccessLogEntry()
    cp = e.common_properties
    cp.upstream_cluster = cluster
    cp.duration.FromMilliseconds(ms)
    cp.response_flags.fault_injected = fault
    if peer_md:
        cp.metadata.filter_metadata[peer.PEER_NAMESPACE].update({peer.PEER_KEY: peer_md})
    if spiffe:
        cp.tls_properties.peer_certificate_properties.subject_alt_name.add(uri=spiffe)
        cp.tls_properties.local_certificate_properties.subject_alt_name.add(uri="spiffe://cluster.local/ns/default/sa/me")
    e.request.authority = authority
    e.request.request_headers_bytes, e.request.request_body_bytes = 100, 0
    e.response.response_code.value = code
    e.response.response_headers_bytes, e.response.response_body_bytes = 50, 950
    return e


def _samples(metrics: IstioMetrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    r = Registry()
    r.add_collector(metrics)
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(r.render()):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_source_reporter_counts_requests_with_the_servers_identity() -> None:
    m = IstioMetrics(local_workload("productpage-v1-0", "default", {"app": "productpage", "version": "v1"}, "K"))
    for _ in range(3):
        m.record_http(SOURCE, (), _entry(peer_md=REVIEWS_V2))
    m.record_http(SOURCE, (), _entry(code=500, cluster="", authority="ratings:9080", fault=True))
    s = _samples(m)
    [(ok, n_ok), (fi, n_fi)] = sorted(s["istio_requests_total"], key=lambda x: x[0]["response_code"])
    assert n_ok == 3 and n_fi == 1
    assert ok["destination_workload"] == "reviews-v2" and ok["destination_version"] == "v2"
    assert ok["destination_service"] == "reviews.default.svc.cluster.local" and ok["destination_service_name"] == \
        "reviews"
    assert ok["source_workload"] == "productpage-v1" and ok["source_cluster"] == "K" and ok["reporter"] == "source"
    assert ok["connection_security_policy"] == "unknown" and ok["source_principal"] == "unknown"
    # A fault injected before routing: no upstream, no peer; the service is the one the client named (Kubernetes
    # DNS from the client's namespace), the flag is Envoy's FI.
    assert (fi["response_flags"], fi["destination_service"], fi["destination_workload"]) == (
        "FI", "ratings.default.svc.cluster.local", "unknown")
    # Envoy's default buckets (Istio sets none); le is inclusive; sizes are headers + body.
    buckets = {float(lab["le"]): v for lab, v in s["istio_request_duration_milliseconds_bucket"]
               if lab["response_code"] == "200"}
    assert buckets[5.0] == 0 and buckets[10.0] == 3 and buckets[float("inf")] == 3
    assert [v for lab, v in s["istio_response_bytes_sum"] if lab["response_code"] == "200"] == [3000.0]


def test_destination_reporter_takes_principals_from_the_client_certificate() -> None:
    m = IstioMetrics(local_workload("reviews-v2-0", "default", {"app": "reviews", "version": "v2"}, "K"))
    services = ("reviews.default.svc.cluster.local", "reviews-v2.default.svc.cluster.local")
    m.record_http(DESTINATION, services, _entry(cluster="inbound|9080||", peer_md=PRODUCTPAGE,
                                                spiffe="spiffe://cluster.local/ns/default/sa/bookinfo-productpage"))
    m.record_http(DESTINATION, services, _entry(cluster="inbound|9080||", authority="reviews-v2:9080"))
    s = _samples(m)
    [(mtls, _), (plain, _)] = sorted(s["istio_requests_total"], key=lambda x: x[0]["connection_security_policy"])
    assert mtls["connection_security_policy"] == "mutual_tls"
    assert mtls["source_principal"] == "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
    assert mtls["destination_principal"] == "spiffe://cluster.local/ns/default/sa/me"
    assert mtls["source_workload"] == "productpage-v1" and mtls["destination_workload"] == "reviews-v2"
    assert mtls["destination_service"] == "reviews.default.svc.cluster.local"
    # Plaintext (Istio: policy "none", principals unknown); the service the client asked for among the workload's.
    assert (plain["connection_security_policy"], plain["source_principal"], plain["source_workload"]) == (
        "none", "unknown", "unknown")
    assert plain["destination_service"] == "reviews-v2.default.svc.cluster.local"


def test_tcp_connections_and_connect_tunnels_count_as_tcp() -> None:
    m = IstioMetrics(local_workload("ratings-v1-0", "default", {"app": "ratings"}, "K"))
    up = al.TCPAccessLogEntry()
    up.common_properties.access_log_type = al.AccessLogType.Value("TcpUpstreamConnected")
    up.common_properties.upstream_remote_address.socket_address.address = "127.0.0.9"
    end = al.TCPAccessLogEntry()
    end.CopyFrom(up)
    end.common_properties.access_log_type = al.AccessLogType.Value("TcpConnectionEnd")
    end.connection_properties.sent_bytes, end.connection_properties.received_bytes = 300, 20
    m.record_tcp(DESTINATION, ("ratings.default.svc.cluster.local",), up)
    m.record_tcp(DESTINATION, ("ratings.default.svc.cluster.local",), end)
    tunnel = _entry(cluster="outbound|3306||mysql.default.svc.cluster.local", authority="mysql:3306")
    tunnel.request.request_method = base_pb2.RequestMethod.Value("CONNECT")
    tunnel.request.request_body_bytes, tunnel.response.response_body_bytes = 10, 40
    m.record_http(SOURCE, (), tunnel)
    s = _samples(m)
    names = ("opened", "closed", "sent_bytes", "received_bytes")
    full = {"opened": "istio_tcp_connections_opened_total", "closed": "istio_tcp_connections_closed_total",
            "sent_bytes": "istio_tcp_sent_bytes_total", "received_bytes": "istio_tcp_received_bytes_total"}
    by = {(lab["reporter"], n): v for n in names for lab, v in s[full[n]]}
    assert by == {("destination", "opened"): 1, ("destination", "closed"): 1, ("destination", "sent_bytes"): 300,
                  ("destination", "received_bytes"): 20, ("source", "opened"): 1, ("source", "closed"): 1,
                  ("source", "sent_bytes"): 40, ("source", "received_bytes"): 10}
    assert all(lab["request_protocol"] == "tcp" and "response_code" not in lab
               for lab, _ in s["istio_tcp_connections_opened_total"])
    assert "istio_requests_total" not in s  # a tunnel is not an HTTP request in Istio's metrics


async def test_the_agent_counts_what_envoy_streams_over_grpc() -> None:
    m = IstioMetrics(local_workload("productpage-v1-0", "default", {"app": "productpage"}, "K"))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "als.sock")
        server = AccessLogServer(m, path)
        await server.start()
        try:
            async with grpc.aio.insecure_channel("unix:" + path) as channel:
                stub = als_pb2_grpc.AccessLogServiceStub(channel)

                async def messages():  # what Envoy sends: the identifier first, then batches
                    first = als_pb2.StreamAccessLogsMessage()
                    first.identifier.log_name = "istio|source"
                    first.http_logs.log_entry.extend([_entry(peer_md=REVIEWS_V2)] * 2)
                    yield first
                    later = als_pb2.StreamAccessLogsMessage()
                    later.http_logs.log_entry.append(_entry(peer_md=REVIEWS_V2))
                    yield later

                await stub.StreamAccessLogs(messages())
            assert m.entries == 3  # the call returns once the server has read the whole stream
            [(labels, value)] = _samples(m)["istio_requests_total"]
            assert value == 3 and labels["destination_workload"] == "reviews-v2"
        finally:
            await server.stop()
        assert not os.path.exists(path)



def test_grpc_requests_count_their_messages_from_the_grpc_stats_state() -> None:
    # Istio's istio_request_messages_total / istio_response_messages_total: gRPC requests only, from Envoy's
    # grpc_stats filter state (emit_filter_state), which the access-log entry carries.
    from envoy.extensions.filters.http.grpc_stats.v3 import config_pb2

    m = IstioMetrics(local_workload("reviews-v2-0", "default", {"app": "reviews", "version": "v2"}, "K"))
    for req_msgs, resp_msgs in ((3, 1), (1, 5)):
        e = _entry(cluster="inbound|9080||", peer_md=PRODUCTPAGE)
        e.request.request_headers["content-type"] = "application/grpc"
        e.response.response_trailers["grpc-status"] = "0"
        e.common_properties.filter_state_objects["envoy.filters.http.grpc_stats"].Pack(
            config_pb2.FilterObject(request_message_count=req_msgs, response_message_count=resp_msgs))
        m.record_http(DESTINATION, ("reviews.default.svc.cluster.local",), e)
    m.record_http(DESTINATION, ("reviews.default.svc.cluster.local",), _entry(cluster="inbound|9080||"))  # HTTP
    s = _samples(m)
    [(labels, sent)] = s["istio_request_messages_total"]
    assert sent == 4 and labels["request_protocol"] == "grpc" and labels["grpc_response_status"] == "0"
    assert [v for _, v in s["istio_response_messages_total"]] == [6]
    assert len(s["istio_requests_total"]) == 2  # the plain HTTP request is counted, with no message counts
