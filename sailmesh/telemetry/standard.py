"""Istio's standard metrics in Envoy config: peer-metadata headers, Envoy's stats logger, the access-log stream.

Upstream Envoy has no `istio.stats` filter. HTTP requests are counted by Envoy's stats access logger
(telemetry/stats_logger.py; the agent renames the series at scrape time, agent/istio_stats.py). TCP connections
and CONNECT tunnels stream one access-log entry per connection event (Envoy's gRPC access-log service, batched)
to the agent, which counts them (sailmesh/agent/telemetry.py): their periodic reports carry totals so far. The log
name tells the agent who reports: `istio|source` (a sidecar's outbound listener, a gateway) or
`istio|destination|<service FQDNs>` (an inbound listener and the services its workload backs, to name
`destination_service`).

Metadata exchange with two stock filters (Istio's `istio.metadata_exchange` does the same in one):
header_mutation sets this proxy's `x-envoy-peer-metadata(-id)` on requests (outbound) or responses (inbound),
overwriting anything the app sent, and removes the peer's two headers from the other direction, so the app never
sees them; before that, the peer's x-envoy-peer-metadata is kept for the stats key: inbound by set_filter_state
(filter state `sailmesh.peer`), outbound by header_to_metadata (dynamic metadata `sailmesh.peer`, also logged
with the CONNECT tunnels' entries).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2, grpc_service_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.data.accesslog.v3 import accesslog_pb2 as data_accesslog_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.extensions.filters.common.set_filter_state.v3 import value_pb2 as sfs_value
from envoy.extensions.filters.http.grpc_stats.v3 import config_pb2 as grpc_stats_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.http.header_to_metadata.v3 import header_to_metadata_pb2 as h2m
from envoy.extensions.filters.http.set_filter_state.v3 import set_filter_state_pb2 as sfs
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.matcher.v3 import string_pb2
from envoy.type.tracing.v3 import custom_tag_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

from sailmesh.api.meshconfig import MeshConfig
from sailmesh.telemetry import overrides, peer, stats_logger
from sailmesh.telemetry.names import (
    ALS_CLUSTER,
    DESTINATION,
    GRPC_STATS_FILTER,
    LOG_PREFIX,
    SOURCE,
    UPSTREAM_LOCAL_TAG,
    UPSTREAM_PEER_TAG,
    log_name,
    parse_log_name,
)
from sailmesh.telemetry.resolve import CLIENT, METRICS_KINDS, EffectiveTelemetry, fetch_provider

__all__ = ["ALS_CLUSTER", "DESTINATION", "LOG_PREFIX", "SOURCE", "exclude_periodic", "http_access_log",
           "http_metrics_logs", "log_name",
           "metadata_exchange_filters", "metrics_policy", "parse_log_name", "tcp_access_log"]

HTTP_GRPC_LOGGER = "envoy.access_loggers.http_grpc"
TCP_GRPC_LOGGER = "envoy.access_loggers.tcp_grpc"
MX_ADD_FILTER = "istio.metadata_exchange.add"  # header_mutation: our identity to the peer
MX_READ_FILTER = "istio.metadata_exchange.read"  # the peer's identity kept (set_filter_state / header_to_metadata)
FLUSH_INTERVAL_S = 1  # entries reach the agent within about a second
TCP_REPORTING_INTERVAL_S = 5.0  # Istio's default reporting interval of TCP metrics (open connections)
PERIODIC_TYPES = ("TcpPeriodic", "DownstreamPeriodic")  # the periodic entries only the metrics stream wants
# or sooner when this much is buffered (Envoy's default is 16 KiB; 64 KiB cut the agents' CPU per request by
# 40 %, the Envoys' within the noise: `python -m bench.dataplane.ablation --features metrics`, docs/benchmarks.md)
BUFFER_BYTES = 65536
# Headers the agent reads besides Envoy's standard fields: gRPC detection and status.
REQUEST_HEADERS = ("content-type",)
RESPONSE_HEADERS = ("grpc-status",)
RESPONSE_TRAILERS = ("grpc-status",)


def _pack(msg: object) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)  # type: ignore[arg-type]
    return a


def metrics_policy(eff: EffectiveTelemetry, mesh: MeshConfig, mode: str) -> overrides.Policy | None:
    """The metric overrides of one side from the first enabled prometheus provider; None: no standard metrics
    (no prometheus provider in effect, or ALL_METRICS disabled on both sides)."""
    for name, cfg in sorted(eff.metrics.items()):
        prov = fetch_provider(mesh, name)
        if prov is not None and prov.kind in METRICS_KINDS:
            return overrides.build(cfg.client if mode == CLIENT else cfg.server)
    return None


def reporting_interval(eff: EffectiveTelemetry) -> float:
    """Seconds between reports of an open TCP connection (Telemetry `reportingInterval`, else Istio's 5 s)."""
    got = [c.reporting_interval for c in eff.metrics.values() if c.reporting_interval]
    return got[0] if got else TCP_REPORTING_INTERVAL_S


def _not_periodic() -> accesslog_pb2.AccessLogFilter:
    types = [data_accesslog_pb2.AccessLogType.Value(t) for t in PERIODIC_TYPES]
    return accesslog_pb2.AccessLogFilter(log_type_filter=accesslog_pb2.LogTypeFilter(types=types, exclude=True))


def exclude_periodic(al: accesslog_pb2.AccessLog) -> None:
    """Keep a user's access log to one line per request / connection when periodic flushing is on for metrics."""
    not_periodic = _not_periodic()
    if al.HasField("filter"):
        both = accesslog_pb2.AccessLogFilter()
        both.and_filter.filters.extend([al.filter, not_periodic])
        al.filter.CopyFrom(both)
    else:
        al.filter.CopyFrom(not_periodic)


def _common(reporter: str, services: Sequence[str],
            policy: overrides.Policy = overrides.NO_POLICY) -> als_pb2.CommonGrpcAccessLogConfig:
    """The stream's config: the log name (reporter, services, overrides), each override expression as a CEL
    custom tag, and (source reporter) the upstream TLS peer's and our own URI SANs for the principals."""
    tags = [custom_tag_pb2.CustomTag(tag=overrides.tag_key(i), value=f"%CEL({expr})%")
            for i, expr in enumerate(policy.expressions)]
    if reporter == SOURCE:
        tags += [custom_tag_pb2.CustomTag(tag=UPSTREAM_PEER_TAG, value="%UPSTREAM_PEER_URI_SAN%"),
                 custom_tag_pb2.CustomTag(tag=UPSTREAM_LOCAL_TAG, value="%UPSTREAM_LOCAL_URI_SAN%")]
    return als_pb2.CommonGrpcAccessLogConfig(
        custom_tags=tags,
        log_name=log_name(reporter, services, policy.encode()),
        grpc_service=grpc_service_pb2.GrpcService(
            envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=ALS_CLUSTER)),
        transport_api_version=config_source_pb2.V3,
        buffer_flush_interval=duration_pb2.Duration(seconds=FLUSH_INTERVAL_S),
        buffer_size_bytes=wrappers_pb2.UInt32Value(value=BUFFER_BYTES),
    )


def http_access_log(reporter: str, services: Sequence[str] = (),
                    policy: overrides.Policy = overrides.NO_POLICY) -> accesslog_pb2.AccessLog:
    """The HTTP connection manager's access log to the agent's metrics (one entry per request; gRPC requests
    carry the grpc_stats filter's message counts)."""
    common = _common(reporter, services, policy)
    common.filter_state_objects_to_log.append(GRPC_STATS_FILTER)
    cfg = als_pb2.HttpGrpcAccessLogConfig(
        common_config=common,
        additional_request_headers_to_log=list(REQUEST_HEADERS),
        additional_response_headers_to_log=list(RESPONSE_HEADERS),
        additional_response_trailers_to_log=list(RESPONSE_TRAILERS),
    )
    return accesslog_pb2.AccessLog(name=HTTP_GRPC_LOGGER, typed_config=_pack(cfg))


def tcp_access_log(reporter: str, services: Sequence[str] = (),
                   policy: overrides.Policy = overrides.NO_POLICY) -> accesslog_pb2.AccessLog:
    """tcp_proxy's access log to the agent's metrics: one entry when the upstream connects, periodic ones while
    the connection is open (tcp_proxy's access_log_flush_interval), one at the close."""
    cfg = als_pb2.TcpGrpcAccessLogConfig(common_config=_common(reporter, services, policy))
    return accesslog_pb2.AccessLog(name=TCP_GRPC_LOGGER, typed_config=_pack(cfg))


def _connect(invert: bool) -> accesslog_pb2.AccessLogFilter:
    """Requests whose method is (or, inverted, is not) CONNECT: a tunnelled TCP stream."""
    match = route_components_pb2.HeaderMatcher(name=":method", invert_match=invert,
                                               string_match=string_pb2.StringMatcher(exact="CONNECT"))
    return accesslog_pb2.AccessLogFilter(header_filter=accesslog_pb2.HeaderFilter(header=match))


def http_metrics_logs(reporter: str, services: Sequence[str] = (), policy: overrides.Policy = overrides.NO_POLICY,
                      tunnels: bool = False) -> list[accesslog_pb2.AccessLog]:
    """An HTTP connection manager's loggers for Istio's metrics: Envoy's stats access logger counts requests
    (telemetry/stats_logger.py); where CONNECT tunnels TCP streams (`tunnels`), those stay on the stream to the
    agent (TCP metrics, reported periodically), and the stats logger skips them and the periodic entries."""
    if not tunnels:
        return [stats_logger.http_stats_log(reporter, services, policy)]
    requests_only = accesslog_pb2.AccessLogFilter()
    requests_only.and_filter.filters.extend([_connect(invert=True), _not_periodic()])
    stream = http_access_log(reporter, services, policy)
    stream.filter.CopyFrom(_connect(invert=False))
    return [stats_logger.http_stats_log(reporter, services, policy, requests_only), stream]


def grpc_stats_filter() -> hcm_pb2.HttpFilter:
    """Envoy's grpc_stats as Istio configures it: no per-method stats, the message counts in filter state (read
    from the access-log entry by the agent for istio_request_messages_total / istio_response_messages_total)."""
    cfg = grpc_stats_pb2.FilterConfig(emit_filter_state=True,
                                      stats_for_all_methods=wrappers_pb2.BoolValue(value=False))
    return hcm_pb2.HttpFilter(name=GRPC_STATS_FILTER, typed_config=_pack(cfg))


def _set_headers(pod: str, namespace: str, labels: Mapping[str, str], node_id: str,
                 cluster: str) -> list[mutation_rules_pb2.HeaderMutation]:
    value = peer.encode(pod, namespace, labels, cluster=cluster)
    overwrite = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    return [
        mutation_rules_pb2.HeaderMutation(append=base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=key, value=v), append_action=overwrite))
        for key, v in ((peer.PEER_ID_HEADER, node_id), (peer.PEER_METADATA_HEADER, value))
    ]


def _remove(*headers: str) -> list[mutation_rules_pb2.HeaderMutation]:
    return [mutation_rules_pb2.HeaderMutation(remove=h) for h in headers]


def _keep_peer() -> sfs.Config:
    """The client's x-envoy-peer-metadata as a string in filter state (the destination's stats key reads it)."""
    value = sfs_value.FilterStateValue(object_key=peer.PEER_FILTER_STATE, factory_key="envoy.string",
                                       skip_if_empty=True)
    value.format_string.text_format_source.inline_string = f"%REQ({peer.PEER_METADATA_HEADER})%"
    value.format_string.omit_empty_values = True
    return sfs.Config(on_request_headers=[value])


def metadata_exchange_filters(
    inbound: bool, pod: str, namespace: str, labels: Mapping[str, str], node_id: str,
    cluster: str = peer.DEFAULT_CLUSTER_ID,
) -> list[hcm_pb2.HttpFilter]:
    """Istio's metadata exchange: inbound reads the client's identity from the request and answers with ours;
    outbound (and gateways) send ours with the request and read the server's from the response. The peer's two
    headers are removed by the filter that adds ours (on the other direction); only x-envoy-peer-metadata is kept
    (nothing reads the id): inbound in filter state (set_filter_state, cheaper than header_to_metadata's dynamic
    metadata), outbound in dynamic metadata (header_to_metadata: Envoy sets filter state from requests only; the
    CONNECT tunnels' access-log entries carry it too). Cheaper per request than storing both headers with
    header_to_metadata on both sides (docs/benchmarks.md, session 14); the same headers on the wire."""
    own = _set_headers(pod, namespace, labels, node_id, cluster)
    theirs = _remove(peer.PEER_METADATA_HEADER, peer.PEER_ID_HEADER)
    if inbound:
        add = header_mutation_pb2.HeaderMutation(mutations=header_mutation_pb2.Mutations(
            request_mutations=theirs, response_mutations=own))
        return [hcm_pb2.HttpFilter(name=MX_READ_FILTER, typed_config=_pack(_keep_peer())),
                hcm_pb2.HttpFilter(name=MX_ADD_FILTER, typed_config=_pack(add))]
    add = header_mutation_pb2.HeaderMutation(mutations=header_mutation_pb2.Mutations(
        request_mutations=own, response_mutations=theirs[1:]))
    read = h2m.Config(response_rules=[h2m.Config.Rule(
        header=peer.PEER_METADATA_HEADER, remove=True,
        on_header_present=h2m.Config.KeyValuePair(metadata_namespace=peer.PEER_NAMESPACE, key=peer.PEER_KEY))])
    return [hcm_pb2.HttpFilter(name=MX_ADD_FILTER, typed_config=_pack(add)),
            hcm_pb2.HttpFilter(name=MX_READ_FILTER, typed_config=_pack(read))]
