"""Istio's standard metrics, counted by the agent from its Envoy's access-log stream (gRPC ALS on a Unix socket).

Envoy streams one entry per request (HTTP) and per connection event (TCP) in batches (sailmesh/telemetry/
standard.py); `IstioMetrics` counts them under Istio's names, labels and buckets, and the status port serves
them with Envoy's own stats. The reporter and the destination service candidates come from the stream's log
name; the peer's identity from its x-envoy-peer-metadata header (kept in dynamic metadata by Envoy); the
principals from the connection's TLS peer certificate (the destination reporter's view, as in Istio).
Per entry the work is a few field reads and dict lookups: label sets are resolved once per distinct raw key.
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
from sailmesh.telemetry import peer
from sailmesh.telemetry.names import DESTINATION, SOURCE, parse_log_name
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
# envoy.config.core.v3.RequestMethod CONNECT; envoy.data.accesslog.v3.AccessLogType TcpUpstreamConnected and
# TcpConnectionEnd (numbers, so the protos load only with the server; a unit test checks them against the protos).
CONNECT_METHOD = 6
TCP_UPSTREAM_CONNECTED, TCP_CONNECTION_END = 1, 3
_BUCKETS = tuple(float(b) for b in ENVOY_DEFAULT_BUCKETS)
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


def _ms(d: Any) -> float:
    return float(d.seconds * 1000.0 + d.nanos / 1e6)


class IstioMetrics:
    """Counts access-log entries into Istio's standard metrics for the workload `local` (a prometheus collector)."""

    def __init__(self, local: WorkloadInfo, domain_suffix: str = "cluster.local") -> None:
        self.local = local
        self.domain_suffix = domain_suffix
        # labels -> [requests, (duration, request bytes, response bytes) bucket counts and sums]
        self._http: dict[tuple[str, ...], list[Any]] = {}
        # labels -> [opened, closed, sent bytes, received bytes]
        self._tcp: dict[tuple[str, ...], list[int]] = {}
        self._resolved: dict[tuple[Any, ...], tuple[str, ...]] = {}
        self.entries = 0

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
        if reporter == SOURCE:  # the client cannot see the server's TLS policy in its log (Istio: unknown)
            src_principal = dst_principal = policy = UNKNOWN
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

    @staticmethod
    def _peer_md(common: Any) -> str:
        fm = common.metadata.filter_metadata
        if peer.PEER_NAMESPACE not in fm:
            return ""
        v = fm[peer.PEER_NAMESPACE].fields.get(peer.PEER_KEY)
        return v.string_value if v is not None else ""

    # -- entries ------------------------------------------------------------------------------------
    def record_http(self, reporter: str, services: tuple[str, ...], e: al.HTTPAccessLogEntry) -> None:
        """One request."""
        self.entries += 1
        cp, req, resp = e.common_properties, e.request, e.response
        tls = cp.tls_properties
        peer_uri = _spiffe(tls.peer_certificate_properties.subject_alt_name) if cp.HasField("tls_properties") else ""
        own_uri = _spiffe(tls.local_certificate_properties.subject_alt_name) if peer_uri else ""
        if req.request_method == CONNECT_METHOD:  # a TCP stream tunnelled through the explicit proxy: TCP metrics
            raw = (reporter, services, self._peer_md(cp), cp.upstream_cluster, req.authority, "tcp", "", "",
                   response_flags(cp.response_flags), peer_uri, own_uri)
            t = self._tcp_row(self._resolve(raw, False))
            t[0] += 1
            t[1] += 1
            t[2] += resp.response_body_bytes
            t[3] += req.request_body_bytes
            return
        ctype = req.request_headers.get("content-type", "")
        grpc_status = resp.response_trailers.get("grpc-status") or resp.response_headers.get("grpc-status") or ""
        raw = (reporter, services, self._peer_md(cp), cp.upstream_cluster, req.authority,
               "grpc" if ctype.startswith("application/grpc") else "http", str(resp.response_code.value),
               grpc_status, response_flags(cp.response_flags), peer_uri, own_uri)
        labels = self._resolve(raw, True)
        row = self._http.get(labels)
        if row is None:
            row = self._http[labels] = [0, [0] * _NB, 0.0, [0] * _NB, 0.0, [0] * _NB, 0.0]
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

    def _tcp_row(self, labels: tuple[str, ...]) -> list[int]:
        row = self._tcp.get(labels)
        if row is None:
            row = self._tcp[labels] = [0, 0, 0, 0]
        return row

    def record_tcp(self, reporter: str, services: tuple[str, ...], e: al.TCPAccessLogEntry) -> None:
        """A connection event: upstream connected (opened) or the end (closed, with its bytes)."""
        self.entries += 1
        cp = e.common_properties
        kind = cp.access_log_type
        if kind not in (TCP_UPSTREAM_CONNECTED, TCP_CONNECTION_END):
            return
        tls = cp.tls_properties
        peer_uri = _spiffe(tls.peer_certificate_properties.subject_alt_name) if cp.HasField("tls_properties") else ""
        own_uri = _spiffe(tls.local_certificate_properties.subject_alt_name) if peer_uri else ""
        raw = (reporter, services, "", cp.upstream_cluster, "", "tcp", "", "", response_flags(cp.response_flags),
               peer_uri, own_uri)
        row = self._tcp_row(self._resolve(raw, False))
        if kind == TCP_UPSTREAM_CONNECTED:
            row[0] += 1
            return
        if not cp.HasField("upstream_remote_address"):  # never connected upstream: opened and closed at once
            row[0] += 1
        row[1] += 1
        row[2] += e.connection_properties.sent_bytes
        row[3] += e.connection_properties.received_bytes

    # -- exposition ---------------------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        """prometheus_client's Collector interface: Istio's eight standard metrics."""
        http = list(self._http.items())
        requests = CounterMetricFamily("istio_requests_total", "Requests by Istio's standard labels.",
                                       labels=HTTP_LABELS)
        for labels, row in http:
            requests.add_metric(list(labels), row[0])
        yield requests
        for name, i, text in (("istio_request_duration_milliseconds", 1, "Request duration (ms)."),
                              ("istio_request_bytes", 3, "Request size: headers and body (bytes)."),
                              ("istio_response_bytes", 5, "Response size: headers and body (bytes).")):
            yield histogram_family(name, text, HTTP_LABELS, _BUCKETS,
                                   ((labels, row[i], row[i + 1]) for labels, row in http))
        tcp = list(self._tcp.items())
        for name, i, text in (("istio_tcp_connections_opened_total", 0, "TCP connections opened."),
                              ("istio_tcp_connections_closed_total", 1, "TCP connections closed."),
                              ("istio_tcp_sent_bytes_total", 2, "Bytes sent to the downstream on TCP connections."),
                              ("istio_tcp_received_bytes_total", 3,
                               "Bytes received from the downstream on TCP connections.")):
            fam = CounterMetricFamily(name, text, labels=TCP_LABELS)
            for labels, row in tcp:
                fam.add_metric(list(labels), row[i])
            yield fam


def _servicer(metrics: IstioMetrics) -> Any:
    """The AccessLogService implementation (built on first use: gRPC and the protos load here)."""
    from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

    class Servicer(als_pb2_grpc.AccessLogServiceServicer):  # type: ignore[misc]  # base has no stubs
        async def StreamAccessLogs(self, request_iterator: AsyncIterator[Any], context: Any) -> Any:
            stream: tuple[str, tuple[str, ...]] | None = None
            m = metrics
            async for msg in request_iterator:
                if msg.HasField("identifier"):
                    stream = parse_log_name(msg.identifier.log_name)
                if stream is None:
                    continue  # not a metrics stream (another logger on the same cluster)
                reporter, services = stream
                if msg.HasField("http_logs"):
                    for e in msg.http_logs.log_entry:
                        m.record_http(reporter, services, e)
                elif msg.HasField("tcp_logs"):
                    for t in msg.tcp_logs.log_entry:
                        m.record_tcp(reporter, services, t)
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


__all__ = ["DESTINATION", "SOURCE", "AccessLogServer", "IstioMetrics", "local_workload", "response_flags"]
