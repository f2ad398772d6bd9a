"""Istio's standard metrics, counted by the agent from its Envoy's access-log stream (gRPC ALS on a Unix socket).

Envoy streams one entry per request (HTTP) and per connection event (TCP) in batches (sailmesh/telemetry/
standard.py); `IstioMetrics` counts them under Istio's names, labels and buckets, and the status port serves
them with Envoy's own stats. The reporter, the destination service candidates and the Telemetry metric
overrides (telemetry/overrides.py) come from the stream's log name; the peer's identity from its
x-envoy-peer-metadata header (kept in dynamic metadata by Envoy); the principals from the downstream TLS peer
certificate (destination reporter) or the upstream one's URI SANs in the entry's custom tags (source reporter).
TCP connections (and CONNECT tunnels) report periodically while open with their totals so far: the agent
counts the difference. Per entry the work is a few field reads and dict lookups: label sets are resolved once
per distinct raw key; the overrides are applied per series when the page is served.
"""

from __future__ import annotations

import bisect
import logging
import os
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, Metric

from sailmesh.errors import AgentError
from sailmesh.metrics import ENVOY_DEFAULT_BUCKETS, histogram_family
from sailmesh.telemetry import overrides, peer
from sailmesh.telemetry.names import (
    DESTINATION,
    GRPC_STATS_FILTER,
    SOURCE,
    UPSTREAM_LOCAL_TAG,
    UPSTREAM_PEER_TAG,
    parse_stream,
)
from sailmesh.telemetry.peer import UNKNOWN, WorkloadInfo

if TYPE_CHECKING:  # the protobuf and gRPC modules load when the server starts, not with the agent (start-up time)
    import grpc
    from envoy.data.accesslog.v3 import accesslog_pb2 as al

log = logging.getLogger(__name__)

HTTP_LABELS = (
    "reporter", "source_workload", "source_canonical_service", "source_canonical_revision",
    "source_workload_namespace", "source_principal", "source_app", "source_version", "source_cluster",
    "destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
    "destination_version", "destination_service", "destination_canonical_service",
    "destination_canonical_revision", "destination_service_name", "destination_service_namespace",
    "destination_cluster", "request_protocol", "response_code", "grpc_response_status", "response_flags",
    "connection_security_policy",
)  # fmt: skip
TCP_LABELS = tuple(n for n in HTTP_LABELS if n not in ("response_code", "grpc_response_status"))

# Envoy's short response flags, in Envoy's order (ResponseFlagUtils), by the access-log proto's field names.
_FLAG_CODES = {
    "failed_local_healthcheck": "LH", "no_healthy_upstream": "UH", "upstream_request_timeout": "UT",
    "local_reset": "LR", "upstream_remote_reset": "UR", "upstream_connection_failure": "UF",
    "upstream_connection_termination": "UC", "upstream_overflow": "UO", "no_route_found": "NR",
    "delay_injected": "DI", "fault_injected": "FI", "rate_limited": "RL", "unauthorized_details": "UAEX",
    "rate_limit_service_error": "RLSE", "downstream_connection_termination": "DC",
    "upstream_retry_limit_exceeded": "URX", "stream_idle_timeout": "SI", "invalid_envoy_request_headers": "IH",
    "downstream_protocol_error": "DPE", "upstream_max_stream_duration_reached": "UMSDR",
    "response_from_cache_filter": "RFCF", "no_filter_config_found": "NFCF", "duration_timeout": "DT",
    "upstream_protocol_error": "UPE", "no_cluster_found": "NC", "overload_manager": "OM",
    "dns_resolution_failure": "DF", "downstream_remote_reset": "DR",
}  # fmt: skip
# envoy.config.core.v3.RequestMethod CONNECT; envoy.data.accesslog.v3.AccessLogType
# TcpPeriodic, TcpConnectionEnd, DownstreamPeriodic (numbers, so the protos load only with the server; a unit
# test checks them against the protos).
CONNECT_METHOD = 6
TCP_PERIODIC, TCP_CONNECTION_END, DOWNSTREAM_PERIODIC = 2, 3, 5
_MAX_OPEN = 100_000  # connections whose byte counts so far are remembered (periodic reports)
_BUCKETS = tuple(float(b) for b in ENVOY_DEFAULT_BUCKETS)
ISTIO_BUCKETS = _BUCKETS  # Istio's (Envoy's default) histogram buckets
_NB = len(_BUCKETS) + 1


def response_flags(flags: al.ResponseFlags) -> str:
    """Envoy's `%RESPONSE_FLAGS%` text: `-` for none, else the short codes joined by commas."""
    fields = flags.ListFields()
    if not fields:
        return "-"
    return ",".join(_FLAG_CODES[f.name] for f, v in fields if v and f.name in _FLAG_CODES) or "-"


def service_name_namespace(host: str) -> tuple[str, str]:
    """`reviews.default.svc.cluster.local` -> (reviews, default); any other host is its own name."""
    parts = host.split(".")
    if len(parts) >= 3 and parts[2] == "svc":
        return parts[0], parts[1]
    return host, UNKNOWN


def _spiffe(sans: Any) -> str:
    return next((s.uri for s in sans if s.uri), "")


def _first_uri(sans: str) -> str:
    """The first URI SAN of Envoy's comma-joined %UPSTREAM_*_URI_SAN% value."""
    return sans.split(",", 1)[0].strip()


def grpc_message_counts(state: Any) -> tuple[int, int]:
    """(request, response) message counts from the grpc_stats filter state in an access-log entry (an Any)."""
    from envoy.extensions.filters.http.grpc_stats.v3 import config_pb2

    obj = config_pb2.FilterObject()
    if not state.Unpack(obj):
        return 0, 0
    return int(obj.request_message_count), int(obj.response_message_count)


def _ms(d: Any) -> float:
    return float(d.seconds * 1000.0 + d.nanos / 1e6)


class IstioMetrics:
    """Counts access-log entries into Istio's standard metrics for the workload `local` (a prometheus collector)."""

    def __init__(self, local: WorkloadInfo, domain_suffix: str = "cluster.local") -> None:
        self.local = local
        self.domain_suffix = domain_suffix
        # (labels, overrides, their values) -> [requests, (duration, request bytes, response bytes) bucket counts
        # and sums, gRPC request messages, gRPC response messages]
        self._http: dict[tuple[Any, ...], list[Any]] = {}
        # (labels, overrides, their values) -> [opened, closed, sent bytes, received bytes]
        self._tcp: dict[tuple[Any, ...], list[int]] = {}
        self._resolved: dict[tuple[Any, ...], tuple[str, ...]] = {}
        # open connections reported periodically -> (sent, received) bytes reported so far
        self._open: dict[tuple[Any, ...], tuple[int, int]] = {}
        self._policies: dict[str, str] = {}  # reporter -> the overrides of its newest stream
        self.entries = 0
        # HTTP rows kept by Envoy's stats access logger, read at the last scrape (agent/istio_stats.py)
        self.envoy_http: dict[tuple[Any, ...], list[Any]] = {}

    # -- labels -------------------------------------------------------------------------------------
    def _fqdn(self, host: str) -> str:
        """A host as the client wrote it, expanded as Kubernetes DNS would from the client's namespace."""
        if not host or host[0].isdigit() or host.endswith("." + self.domain_suffix):
            return host
        dots = host.count(".")
        if dots == 0:
            return f"{host}.{self.local.namespace}.svc.{self.domain_suffix}"
        if dots == 1:
            return f"{host}.svc.{self.domain_suffix}"
        return f"{host}.{self.domain_suffix}" if host.endswith(".svc") else host

    def _destination_service(self, reporter: str, services: tuple[str, ...], cluster: str,
                             authority: str) -> tuple[str, str, str]:
        host = authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority
        if reporter == SOURCE:
            parts = cluster.split("|")
            if len(parts) == 4 and parts[0] == "outbound":
                return (parts[3], *service_name_namespace(parts[3]))
            if cluster in ("PassthroughCluster", "BlackHoleCluster"):
                return host or UNKNOWN, cluster, UNKNOWN
            # No upstream cluster (a fault injected before routing, no route): the service the client asked for.
            fqdn = self._fqdn(host)
            return (fqdn, *service_name_namespace(fqdn)) if fqdn else (UNKNOWN, UNKNOWN, UNKNOWN)
        for fqdn in services:  # the workload's services: the one the client asked for, else the first
            if host and (fqdn == host or fqdn.startswith(host + ".")):
                return (fqdn, *service_name_namespace(fqdn))
        if services:
            return (services[0], *service_name_namespace(services[0]))
        return (host or UNKNOWN, *service_name_namespace(host)) if host else (UNKNOWN, UNKNOWN, UNKNOWN)

    def _resolve(self, raw: tuple[Any, ...], http: bool) -> tuple[str, ...]:
        labels = self._resolved.get(raw)
        if labels is not None:
            return labels
        reporter, services, peer_md, cluster, authority, protocol, code, grpc_status, flags, peer_uri, own_uri = raw
        other = peer.decode(peer_md)
        src, dst = (self.local, other) if reporter == SOURCE else (other, self.local)
        service, service_name, service_ns = self._destination_service(reporter, services, cluster, authority)
        if reporter == SOURCE:  # the upstream TLS peer's principals; the server's policy is unknown (Istio's rule)
            src_principal, dst_principal, policy = own_uri or UNKNOWN, peer_uri or UNKNOWN, UNKNOWN
        else:
            src_principal, dst_principal = peer_uri or UNKNOWN, own_uri or UNKNOWN
            policy = "mutual_tls" if peer_uri else "none"
        values = [
            reporter, src.workload, src.canonical_service, src.canonical_revision, src.namespace, src_principal,
            src.app, src.version, src.cluster, dst.workload, dst.namespace, dst_principal, dst.app, dst.version,
            service, dst.canonical_service, dst.canonical_revision, service_name, service_ns, dst.cluster, protocol,
        ]
        values += [code, grpc_status, flags, policy] if http else [flags, policy]
        labels = tuple(values)
        if len(self._resolved) < 100_000:
            self._resolved[raw] = labels
        return labels

    def resolve(self, raw: tuple[Any, ...], http: bool) -> tuple[str, ...]:
        """Istio's label values from a raw key (reporter, services, peer metadata, cluster, authority, protocol,
        code, gRPC status, flags, peer URI, own URI)."""
        return self._resolve(raw, http)

    @staticmethod
    def _peer_md(common: Any) -> str:
        md = common.metadata.filter_metadata.get(peer.PEER_NAMESPACE)
        if md is None:
            return ""
        v = md.fields.get(peer.PEER_KEY)
        return v.string_value if v is not None else ""

    def use_policy(self, reporter: str, policy: str) -> None:
        """A stream of `reporter` with these overrides began (new listener config): series counted under other
        overrides are dropped, so a disabled metric or removed label leaves the page (a counter reset)."""
        if self._policies.get(reporter, "") == policy:
            return
        self._policies[reporter] = policy
        for store in (self._http, self._tcp):
            for key in [k for k in store if k[0][0] == reporter and k[1] != policy]:
                del store[key]

    # -- entries ------------------------------------------------------------------------------------
    @staticmethod
    def _principals(reporter: str, cp: Any) -> tuple[str, str]:
        """(peer, own) SPIFFE ids: the downstream TLS peer (destination reporter) or the upstream one, from the
        entry's custom tags (source reporter: Envoy's %UPSTREAM_PEER_URI_SAN% / %UPSTREAM_LOCAL_URI_SAN%)."""
        if reporter == SOURCE:
            tags = cp.custom_tags
            if UPSTREAM_PEER_TAG not in tags:
                return "", ""
            return _first_uri(tags[UPSTREAM_PEER_TAG]), _first_uri(tags.get(UPSTREAM_LOCAL_TAG, ""))
        if not cp.HasField("tls_properties"):
            return "", ""
        tls = cp.tls_properties
        peer_uri = _spiffe(tls.peer_certificate_properties.subject_alt_name)
        return peer_uri, _spiffe(tls.local_certificate_properties.subject_alt_name) if peer_uri else ""

    def _progress(self, conn: tuple[Any, ...], sent: int, received: int, end: bool) -> tuple[bool, int, int]:
        """(first report of this connection, bytes sent and received since its last report): periodic entries
        carry the connection's totals so far."""
        last = self._open.pop(conn, None) if end else self._open.get(conn)
        if not end and (last is not None or len(self._open) < _MAX_OPEN):
            self._open[conn] = (sent, received)
        if last is None:
            return True, sent, received
        return False, sent - last[0], received - last[1]

    def record_http(self, reporter: str, services: tuple[str, ...], e: al.HTTPAccessLogEntry,
                    policy: str = "") -> None:
        """One request (a CONNECT tunnel: a TCP connection, reported periodically while open)."""
        self.entries += 1
        cp, req, resp = e.common_properties, e.request, e.response
        connect = req.request_method == CONNECT_METHOD
        periodic = cp.access_log_type == DOWNSTREAM_PERIODIC
        if periodic and not connect:
            return  # Istio reports a request once, when it ends
        peer_uri, own_uri = self._principals(reporter, cp)
        extra = overrides.extras(overrides.decode(policy), cp.custom_tags) if policy else ()
        if connect:  # a TCP stream tunnelled through the explicit proxy: TCP metrics
            raw = (reporter, services, self._peer_md(cp), cp.upstream_cluster, req.authority, "tcp", "", "",
                   response_flags(cp.response_flags), peer_uri, own_uri)
            t = self._tcp_row((self._resolve(raw, False), policy, extra))
            first, sent, received = self._progress(("h", cp.stream_id), resp.response_body_bytes,
                                                   req.request_body_bytes, not periodic)
            t[0] += first
            t[1] += not periodic
            t[2] += sent
            t[3] += received
            return
        grpc = req.request_headers.get("content-type", "").startswith("application/grpc")
        grpc_status = resp.response_trailers.get("grpc-status") or resp.response_headers.get("grpc-status") or "" \
            if grpc else ""  # Istio: empty for requests that are not gRPC
        flags = response_flags(cp.response_flags) if cp.HasField("response_flags") else "-"
        raw = (reporter, services, self._peer_md(cp), cp.upstream_cluster, req.authority, "grpc" if grpc else "http",
               str(resp.response_code.value), grpc_status, flags, peer_uri, own_uri)
        key = (self._resolve(raw, True), policy, extra)
        row = self._http.get(key)
        if row is None:
            row = self._http[key] = [0, [0] * _NB, 0.0, [0] * _NB, 0.0, [0] * _NB, 0.0, 0, 0]
        row[0] += 1
        d = cp.duration if cp.HasField("duration") else cp.time_to_last_downstream_tx_byte
        ms = _ms(d)
        row[1][bisect.bisect_left(_BUCKETS, ms)] += 1
        row[2] += ms
        n = req.request_headers_bytes + req.request_body_bytes
        row[3][bisect.bisect_left(_BUCKETS, n)] += 1
        row[4] += n
        n = resp.response_headers_bytes + resp.response_body_bytes
        row[5][bisect.bisect_left(_BUCKETS, n)] += 1
        row[6] += n
        if grpc:  # Istio's gRPC message counts, from the grpc_stats filter's state (telemetry/standard.py)
            messages = cp.filter_state_objects.get(GRPC_STATS_FILTER)
            if messages is not None:
                req_msgs, resp_msgs = grpc_message_counts(messages)
                row[7] += req_msgs
                row[8] += resp_msgs

    def _tcp_row(self, key: tuple[Any, ...]) -> list[int]:
        row = self._tcp.get(key)
        if row is None:
            row = self._tcp[key] = [0, 0, 0, 0]
        return row

    def record_tcp(self, reporter: str, services: tuple[str, ...], e: al.TCPAccessLogEntry, policy: str = "") -> None:
        """A connection's periodic report (bytes so far) or its end (closed). It counts as opened at its first
        report: an entry at upstream connect would come before the downstream TLS handshake has finished, without
        the peer certificate (so under the wrong principals)."""
        self.entries += 1
        cp = e.common_properties
        kind = cp.access_log_type
        if kind not in (TCP_PERIODIC, TCP_CONNECTION_END):
            return
        peer_uri, own_uri = self._principals(reporter, cp)
        extra = overrides.extras(overrides.decode(policy), cp.custom_tags) if policy else ()
        raw = (reporter, services, "", cp.upstream_cluster, "", "tcp", "", "", response_flags(cp.response_flags),
               peer_uri, own_uri)
        row = self._tcp_row((self._resolve(raw, False), policy, extra))
        end = kind == TCP_CONNECTION_END
        ds, dl = cp.downstream_remote_address.socket_address, cp.downstream_local_address.socket_address
        conn = ("t", cp.stream_id, ds.address, ds.port_value, dl.address, dl.port_value)
        first, sent, received = self._progress(conn, e.connection_properties.sent_bytes,
                                               e.connection_properties.received_bytes, end)
        row[0] += first
        row[1] += end
        row[2] += sent
        row[3] += received

    # -- exposition ---------------------------------------------------------------------------------
    @staticmethod
    def _series(rows: list[tuple[tuple[Any, ...], list[Any]]], metric: str,
                names: tuple[str, ...]) -> Iterator[tuple[tuple[tuple[str, str], ...], list[Any]]]:
        """(label pairs, row) per stored series after the Telemetry overrides (None pairs: metric disabled)."""
        for (labels, policy, extra), row in rows:
            pairs = overrides.labels_for(overrides.decode(policy), metric, names, labels, extra) if policy \
                else tuple(zip(names, labels, strict=True))
            if pairs is not None:
                yield pairs, row

    def collect(self) -> Iterator[Metric]:
        """prometheus_client's Collector interface: Istio's eight standard metrics, after the overrides (a
        removed label merges the series that differed only by it)."""
        http = list(self._http.items()) + list(self.envoy_http.items())
        grpc = [item for item in http if item[0][0][_PROTOCOL] == "grpc"]
        for metric, i, text in _HTTP_METRICS:
            merged: dict[tuple[tuple[str, str], ...], list[Any]] = {}
            counter = i in _COUNTERS
            for pairs, row in self._series(grpc if i in _GRPC_ONLY else http, metric, HTTP_LABELS):
                cur = merged.get(pairs)
                if counter:
                    merged[pairs] = [(cur or [0])[0] + row[i]]
                elif cur is None:
                    merged[pairs] = [list(row[i]), row[i + 1]]
                else:
                    cur[0] = [a + b for a, b in zip(cur[0], row[i], strict=True)]
                    cur[1] += row[i + 1]
            yield _family(overrides.METRIC_NAMES[metric], text, counter, merged)
        tcp = list(self._tcp.items())
        for metric, i, text in _TCP_METRICS:
            totals: dict[tuple[tuple[str, str], ...], list[Any]] = {}
            for pairs, row in self._series(tcp, metric, TCP_LABELS):
                totals[pairs] = [totals.get(pairs, [0])[0] + row[i]]
            yield _family(overrides.METRIC_NAMES[metric], text, True, totals)


_HTTP_METRICS = (  # Istio's metric (overrides.METRIC_NAMES has its exported name), the row index, the help text
    ("REQUEST_COUNT", 0, "Requests by Istio's standard labels."),
    ("REQUEST_DURATION", 1, "Request duration (ms)."),
    ("REQUEST_SIZE", 3, "Request size: headers and body (bytes)."),
    ("RESPONSE_SIZE", 5, "Response size: headers and body (bytes)."),
    ("GRPC_REQUEST_MESSAGES", 7, "gRPC messages the client sent (gRPC requests only)."),
    ("GRPC_RESPONSE_MESSAGES", 8, "gRPC messages the server sent (gRPC requests only)."),
)
_COUNTERS = (0, 7, 8)
_GRPC_ONLY = (7, 8)  # Istio exports the message counts for gRPC requests only
_PROTOCOL = HTTP_LABELS.index("request_protocol")
_TCP_METRICS = (
    ("TCP_OPENED_CONNECTIONS", 0, "TCP connections opened."),
    ("TCP_CLOSED_CONNECTIONS", 1, "TCP connections closed."),
    ("TCP_SENT_BYTES", 2, "Bytes sent to the downstream on TCP connections."),
    ("TCP_RECEIVED_BYTES", 3, "Bytes received from the downstream on TCP connections."),
)


def _family(name: str, text: str, counter: bool, series: dict[tuple[tuple[str, str], ...], list[Any]]) -> Metric:
    """One family from series whose label names may differ (overrides): one sub-family per label-name set."""
    groups: dict[tuple[str, ...], list[tuple[tuple[str, ...], list[Any]]]] = {}
    for pairs, v in series.items():
        groups.setdefault(tuple(k for k, _ in pairs), []).append((tuple(x for _, x in pairs), v))
    out: Metric | None = None
    for names, rows in groups.items() or [((), [])]:
        if counter:
            fam: Metric = CounterMetricFamily(name, text, labels=names)
            for values, v in rows:
                fam.add_metric(list(values), v[0])  # type: ignore[attr-defined]
        else:
            fam = histogram_family(name, text, names, _BUCKETS, ((values, v[0], v[1]) for values, v in rows))
        if out is None:
            out = fam
        else:
            out.samples.extend(fam.samples)
    assert out is not None
    return out


def _servicer(metrics: IstioMetrics) -> Any:
    """The AccessLogService implementation (built on first use: gRPC and the protos load here)."""
    from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

    class Servicer(als_pb2_grpc.AccessLogServiceServicer):  # type: ignore[misc]  # base has no stubs
        async def StreamAccessLogs(self, request_iterator: AsyncIterator[Any], context: Any) -> Any:
            stream: tuple[str, tuple[str, ...], str] | None = None
            m = metrics
            async for msg in request_iterator:
                if msg.HasField("identifier"):
                    stream = parse_stream(msg.identifier.log_name)
                    if stream is not None:
                        m.use_policy(stream[0], stream[2])
                if stream is None:
                    continue  # not a metrics stream (another logger on the same cluster)
                reporter, services, policy = stream
                if msg.HasField("http_logs"):
                    for e in msg.http_logs.log_entry:
                        m.record_http(reporter, services, e, policy)
                elif msg.HasField("tcp_logs"):
                    for t in msg.tcp_logs.log_entry:
                        m.record_tcp(reporter, services, t, policy)
            return als_pb2.StreamAccessLogsResponse()

    return Servicer()


class AccessLogServer:
    """The agent's gRPC access-log service on a Unix socket (private to the agent's state directory)."""

    def __init__(self, metrics: IstioMetrics, socket_path: str) -> None:
        self.metrics = metrics
        self.socket_path = socket_path
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        import grpc
        from envoy.service.accesslog.v3 import als_pb2_grpc

        abstract = self.socket_path.startswith("@")  # Envoy's spelling of an abstract socket
        if not abstract and os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        server = grpc.aio.server()
        als_pb2_grpc.add_AccessLogServiceServicer_to_server(_servicer(self.metrics), server)
        address = "unix-abstract:" + self.socket_path[1:] if abstract else "unix:" + self.socket_path
        if not server.add_insecure_port(address):
            raise AgentError(f"cannot serve access logs on {self.socket_path}")
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(None)  # Envoy is gone by now: nothing left to read
            self._server = None
        if not self.socket_path.startswith("@") and os.path.exists(self.socket_path):
            os.unlink(self.socket_path)


def local_workload(pod: str, namespace: str, labels: dict[str, str], cluster: str) -> WorkloadInfo:
    """This agent's workload as Istio's labels name it."""
    return peer.workload_info(peer.workload_of_pod(pod), namespace, labels, cluster)


__all__ = ["DESTINATION", "ISTIO_BUCKETS", "SOURCE", "AccessLogServer", "IstioMetrics", "local_workload",
           "response_flags"]
