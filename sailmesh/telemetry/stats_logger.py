"""Istio's HTTP standard metrics kept by Envoy itself: the stats access logger (`envoy.access_loggers.stats`).

Each HTTP connection manager that reports gets one logger: a counter (`requests_total`) and three histograms
(`request_duration_milliseconds`, `request_bytes`, `response_bytes`) under the prefix `sailmesh_istio`, tagged with
the raw values Istio's labels derive from, joined in one tag (the reporter, the services, the peer's
x-envoy-peer-metadata from dynamic metadata or filter state, the upstream cluster, :authority, content type,
response code, gRPC status, response flags, the TLS peers' URI SANs) and the Telemetry overrides' expression
values in their own. No message per request leaves Envoy: the agent turns these series into
istio_* families with Istio's labels when its status port is scraped (agent/istio_stats.py). Envoy's default
histogram buckets are Istio's (0.5 ms ... 3,600,000), so the bootstrap needs no bucket settings; histograms
reach Envoy's page at each stats flush (the agent's bootstrap: every second).

TCP connections (and CONNECT tunnels) keep the access-log stream (telemetry/standard.py): their periodic reports
carry each connection's totals so far, which a stats counter would add again each time, and a connection counts
as opened at its first report, which needs per-connection state.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.extensions.access_loggers.stats.v3 import stats_pb2
from google.protobuf import any_pb2, wrappers_pb2

from sailmesh.telemetry import overrides, peer
from sailmesh.telemetry.names import (
    ENVOY_PREFIX,
    GRPC_STATS_FILTER,
    KEY_SEPARATOR,
    SOURCE,
    STAT_PREFIX,
    T_EXPR,
    T_GRPC_MESSAGES,
    T_KEY,
    T_POLICY,
)

STATS_LOGGER = "envoy.access_loggers.stats"
CONTENT_TYPE_CHARS = len("application/grpc")  # enough to tell gRPC, few distinct values otherwise

# Istio's metric -> (the logger's stat name, histogram unit or None for the counter, value).
HTTP_STATS: dict[str, tuple[str, int | None, str]] = {
    "REQUEST_COUNT": ("requests_total", None, ""),
    "REQUEST_DURATION": ("request_duration_milliseconds", stats_pb2.Config.Histogram.Milliseconds, "%DURATION%"),
    # Istio's request.total_size / response.total_size: headers and body
    "REQUEST_SIZE": ("request_bytes", stats_pb2.Config.Histogram.Bytes, "%CEL(request.total_size)%"),
    "RESPONSE_SIZE": ("response_bytes", stats_pb2.Config.Histogram.Bytes, "%CEL(response.total_size)%"),
}
GRPC_MESSAGE_METRICS = ("GRPC_REQUEST_MESSAGES", "GRPC_RESPONSE_MESSAGES")


def expr_tag(i: int) -> str:
    return f"{T_EXPR}{i}"


def key_format(reporter: str, services: Sequence[str]) -> str:
    """One tag `k` with every raw input of Istio's labels, newline-separated (no header value, URI SAN or cluster
    name can hold a newline): Envoy formats, interns and joins one tag per stat instead of eleven."""
    side = "UPSTREAM" if reporter == SOURCE else "DOWNSTREAM"
    peer_md = f"%DYNAMIC_METADATA({peer.PEER_NAMESPACE}:{peer.PEER_KEY})%" if reporter == SOURCE \
        else f"%FILTER_STATE({peer.PEER_FILTER_STATE}:PLAIN)%"  # where the metadata exchange keeps it
    fields = [reporter, ",".join(services), peer_md,
              "%UPSTREAM_CLUSTER%" if reporter == SOURCE else "",
              # the service the client asked for: outbound without a cluster, or inbound backing several services
              "%REQ(:AUTHORITY)%" if reporter == SOURCE or len(services) > 1 else "",
              f"%REQ(CONTENT-TYPE):{CONTENT_TYPE_CHARS}%", "%RESPONSE_CODE%", "%GRPC_STATUS_NUMBER%",
              "%RESPONSE_FLAGS%", f"%{side}_PEER_URI_SAN%", f"%{side}_LOCAL_URI_SAN%"]
    return KEY_SEPARATOR.join(fields)


def _tags(reporter: str, services: Sequence[str], policy: overrides.Policy) -> list[stats_pb2.Config.Tag]:
    """The raw inputs of Istio's labels for one reporter (agent/istio_stats.py resolves them)."""
    pairs = [(T_KEY, key_format(reporter, services))]
    if policy:
        pairs.append((T_POLICY, policy.encode()))
        pairs += [(expr_tag(i), f"%CEL({e})%") for i, e in enumerate(policy.expressions)]
    return [stats_pb2.Config.Tag(name=n, value_format=v) for n, v in pairs]


def http_stats_config(reporter: str, services: Sequence[str] = (),
                      policy: overrides.Policy = overrides.NO_POLICY) -> stats_pb2.Config:
    """The logger's config: the enabled metrics of the side, each with the same tags (the requests counter also
    with the grpc_stats filter's message counts `<request>,<response>`, empty for requests that are not gRPC)."""
    tags = _tags(reporter, services, policy)
    cfg = stats_pb2.Config(stat_prefix=STAT_PREFIX)
    grpc_messages = not all(m in policy.disabled for m in GRPC_MESSAGE_METRICS)
    for metric, (name, unit, value) in HTTP_STATS.items():
        counted = metric == "REQUEST_COUNT"
        if metric in policy.disabled and not (counted and grpc_messages):
            continue  # the message counts ride on the requests counter: kept for them (hidden by the agent)
        stat = stats_pb2.Config.Stat(name=name, tags=tags)
        if counted:
            if grpc_messages:
                stat.tags.append(stats_pb2.Config.Tag(name=T_GRPC_MESSAGES,
                                                      value_format=f"%FILTER_STATE({GRPC_STATS_FILTER}:PLAIN)%"))
            cfg.counters.append(stats_pb2.Config.Counter(stat=stat, value_fixed=wrappers_pb2.UInt64Value(value=1)))
        else:
            assert unit is not None
            cfg.histograms.append(stats_pb2.Config.Histogram(stat=stat, unit=unit, value_format=value))
    return cfg


def http_stats_log(reporter: str, services: Sequence[str] = (), policy: overrides.Policy = overrides.NO_POLICY,
                   log_filter: accesslog_pb2.AccessLogFilter | None = None) -> accesslog_pb2.AccessLog:
    """The HTTP connection manager's stats access logger for Istio's HTTP metrics."""
    cfg = any_pb2.Any()
    cfg.Pack(http_stats_config(reporter, services, policy))
    al = accesslog_pb2.AccessLog(name=STATS_LOGGER, typed_config=cfg)
    if log_filter is not None:
        al.filter.CopyFrom(log_filter)
    return al


__all__ = ["ENVOY_PREFIX", "HTTP_STATS", "STATS_LOGGER", "STAT_PREFIX", "expr_tag", "http_stats_config",
           "http_stats_log"]
