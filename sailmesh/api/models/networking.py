"""Typed networking.istio.io models: VirtualService, DestinationRule, Gateway, ServiceEntry, Sidecar, Workload*.

Field names follow Istio's API (snake_case attributes, camelCase on the wire). Unset fields are None: Istio's
defaults are applied where the config is used (the generators), not here.
Fields left as `Mapping[str, Any]` are passed through as written (nothing reads inside them yet).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from sailmesh.api.models.base import Duration, Model, Percent


class StringMatch(Model, frozen=True):
    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None


class PortSelector(Model, frozen=True):
    number: int | None = None


class Destination(Model, frozen=True):
    host: str | None = None
    subset: str | None = None
    port: PortSelector | None = None


class HeaderOperations(Model, frozen=True):
    set: Mapping[str, str] | None = None
    add: Mapping[str, str] | None = None
    remove: tuple[str, ...] | None = None


class Headers(Model, frozen=True):
    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


class HTTPRouteDestination(Model, frozen=True):
    destination: Destination | None = None
    weight: int | None = None
    headers: Headers | None = None


class RouteDestination(Model, frozen=True):
    destination: Destination | None = None
    weight: int | None = None


class HTTPMatchRequest(Model, frozen=True):
    name: str | None = None
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: Mapping[str, StringMatch] | None = None
    port: int | None = None
    source_labels: Mapping[str, str] | None = None
    gateways: tuple[str, ...] | None = None
    query_params: Mapping[str, StringMatch] | None = None
    ignore_uri_case: bool | None = None
    without_headers: Mapping[str, StringMatch] | None = None
    source_namespace: str | None = None
    stat_prefix: str | None = None


class HTTPRetry(Model, frozen=True):
    attempts: int | None = None
    per_try_timeout: Duration | None = None
    retry_on: str | None = None
    retry_remote_localities: bool | None = None
    retry_ignore_previous_hosts: bool | None = None
    backoff: Duration | None = None


class Delay(Model, frozen=True):
    fixed_delay: Duration | None = None
    percentage: Percent | None = None
    percent: int | None = None  # deprecated integer percentage


class Abort(Model, frozen=True):
    http_status: int | None = None
    grpc_status: str | None = None
    percentage: Percent | None = None


class HTTPFaultInjection(Model, frozen=True):
    delay: Delay | None = None
    abort: Abort | None = None


class RegexRewrite(Model, frozen=True):
    match: str | None = None
    rewrite: str | None = None


class HTTPRewrite(Model, frozen=True):
    uri: str | None = None
    authority: str | None = None
    uri_regex_rewrite: RegexRewrite | None = None


class HTTPRedirect(Model, frozen=True):
    uri: str | None = None
    prefix_rewrite: str | None = None
    authority: str | None = None
    port: int | None = None
    derive_port: str | None = None
    scheme: str | None = None
    redirect_code: int | None = None

    @property
    def effective_code(self) -> int:
        return self.redirect_code or 301  # Istio: default 301 Moved Permanently


class HTTPBody(Model, frozen=True):
    string: str | None = None
    bytes: str | None = None  # base64


class HTTPDirectResponse(Model, frozen=True):
    status: int | None = None
    body: HTTPBody | None = None


class CorsPolicy(Model, frozen=True):
    allow_origins: tuple[StringMatch, ...] | None = None
    allow_origin: tuple[str, ...] | None = None  # deprecated exact list
    allow_methods: tuple[str, ...] | None = None
    allow_headers: tuple[str, ...] | None = None
    expose_headers: tuple[str, ...] | None = None
    max_age: Duration | None = None
    allow_credentials: bool | None = None
    unmatched_preflights: str | None = None


class HTTPMirrorPolicy(Model, frozen=True):
    destination: Destination | None = None
    percentage: Percent | None = None


class Delegate(Model, frozen=True):
    name: str | None = None
    namespace: str | None = None


class HTTPRoute(Model, frozen=True):
    name: str | None = None
    match: tuple[HTTPMatchRequest, ...] | None = None
    route: tuple[HTTPRouteDestination, ...] | None = None
    redirect: HTTPRedirect | None = None
    direct_response: HTTPDirectResponse | None = None
    delegate: Delegate | None = None
    rewrite: HTTPRewrite | None = None
    timeout: Duration | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirrors: tuple[HTTPMirrorPolicy, ...] | None = None
    mirror_percentage: Percent | None = None
    mirror_percent: int | None = None  # deprecated; the JSON name protojson reads
    # the same field as the CRD names it (`+kubebuilder:altName=mirror_percent`; Istio's protojson reads both)
    mirror_percent_alt: int | None = msgspec.field(default=None, name="mirror_percent")
    cors_policy: CorsPolicy | None = None
    headers: Headers | None = None


class L4MatchAttributes(Model, frozen=True):
    destination_subnets: tuple[str, ...] | None = None
    port: int | None = None
    source_labels: Mapping[str, str] | None = None
    gateways: tuple[str, ...] | None = None
    source_namespace: str | None = None


class TLSMatchAttributes(Model, frozen=True):
    sni_hosts: tuple[str, ...] | None = None
    destination_subnets: tuple[str, ...] | None = None
    port: int | None = None
    source_labels: Mapping[str, str] | None = None
    gateways: tuple[str, ...] | None = None
    source_namespace: str | None = None


class TCPRoute(Model, frozen=True):
    match: tuple[L4MatchAttributes, ...] | None = None
    route: tuple[RouteDestination, ...] | None = None


class TLSRoute(Model, frozen=True):
    match: tuple[TLSMatchAttributes, ...] | None = None
    route: tuple[RouteDestination, ...] | None = None


class VirtualService(Model, frozen=True):
    hosts: tuple[str, ...] | None = None
    gateways: tuple[str, ...] | None = None
    http: tuple[HTTPRoute, ...] | None = None
    tls: tuple[TLSRoute, ...] | None = None
    tcp: tuple[TCPRoute, ...] | None = None
    export_to: tuple[str, ...] | None = None


# ---------------------------------------------------------------- DestinationRule

class TcpKeepalive(Model, frozen=True):
    probes: int | None = None
    time: Duration | None = None
    interval: Duration | None = None


class ConnectionPoolTCP(Model, frozen=True):
    max_connections: int | None = None
    connect_timeout: Duration | None = None
    tcp_keepalive: TcpKeepalive | None = None
    max_connection_duration: Duration | None = None
    idle_timeout: Duration | None = None


class ConnectionPoolHTTP(Model, frozen=True):
    http1_max_pending_requests: int | None = msgspec.field(default=None, name="http1MaxPendingRequests")
    http2_max_requests: int | None = msgspec.field(default=None, name="http2MaxRequests")
    max_requests_per_connection: int | None = None
    max_retries: int | None = None
    idle_timeout: Duration | None = None
    h2_upgrade_policy: str | None = msgspec.field(default=None, name="h2UpgradePolicy")
    use_client_protocol: bool | None = None
    max_concurrent_streams: int | None = None
    http2_keep_alive: Mapping[str, Any] | None = msgspec.field(default=None, name="http2KeepAlive")


class ConnectionPoolSettings(Model, frozen=True):
    tcp: ConnectionPoolTCP | None = None
    http: ConnectionPoolHTTP | None = None


class OutlierDetection(Model, frozen=True):
    consecutive_errors: int | None = None  # deprecated
    consecutive_5xx_errors: int | None = msgspec.field(default=None, name="consecutive5xxErrors")
    consecutive_gateway_errors: int | None = None
    consecutive_local_origin_failures: int | None = None
    split_external_local_origin_errors: bool | None = None
    interval: Duration | None = None
    base_ejection_time: Duration | None = None
    max_ejection_percent: int | None = None
    min_health_percent: int | None = None
    outlier_detection_http_error_codes: tuple[int, ...] | None = None


class CookieAttribute(Model, frozen=True):
    name: str | None = None
    value: str | None = None


class HTTPCookie(Model, frozen=True):
    name: str | None = None
    path: str | None = None
    ttl: Duration | None = None
    attributes: tuple[CookieAttribute, ...] | None = None


class RingHash(Model, frozen=True):
    minimum_ring_size: int | None = None


class MagLev(Model, frozen=True):
    table_size: int | None = None


class ConsistentHashLB(Model, frozen=True):
    http_header_name: str | None = None
    http_cookie: HTTPCookie | None = None
    use_source_ip: bool | None = None
    http_query_parameter_name: str | None = None
    ring_hash: RingHash | None = None
    maglev: MagLev | None = None
    minimum_ring_size: int | None = None  # deprecated: ringHash.minimumRingSize


class WarmupConfiguration(Model, frozen=True):
    duration: Duration | None = None
    minimum_percent: float | None = None
    aggression: float | None = None


class LoadBalancerSettings(Model, frozen=True):
    simple: str | None = None
    consistent_hash: ConsistentHashLB | None = None
    locality_lb_setting: Mapping[str, Any] | None = None
    zone_aware_lb_setting: Mapping[str, Any] | None = None
    warmup_duration_secs: Duration | None = None
    warmup: WarmupConfiguration | None = None


class ClientTLSSettings(Model, frozen=True):
    mode: str | None = None
    client_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    credential_name: str | None = None
    subject_alt_names: tuple[str, ...] | None = None
    sni: str | None = None
    insecure_skip_verify: bool | None = None
    ca_crl: str | None = None
    # not Istio's: set only on the rules generated for a Gateway API Gateway's backendTLS.clientCertificateRef
    # (generate/gatewayapi/backend_client.py), the client certificate beside a `configmap://` CA credentialName
    client_credential_name: str | None = None


class RetryBudget(Model, frozen=True):
    percent: Percent | None = None
    min_retry_concurrency: int | None = None
    budget_interval: Duration | None = None


class PortTrafficPolicy(Model, frozen=True):
    port: PortSelector | None = None
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    # not port-level fields in Istio: set on the merged policy only (generate/policy.effective_policy)
    retry_budget: RetryBudget | None = None
    proxy_protocol: Mapping[str, Any] | None = None


class TrafficPolicy(Model, frozen=True):
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    port_level_settings: tuple[PortTrafficPolicy, ...] | None = None
    retry_budget: RetryBudget | None = None
    tunnel: Mapping[str, Any] | None = None
    proxy_protocol: Mapping[str, Any] | None = None


class Subset(Model, frozen=True):
    name: str | None = None
    labels: Mapping[str, str] | None = None
    traffic_policy: TrafficPolicy | None = None


class WorkloadSelector(Model, frozen=True):
    match_labels: Mapping[str, str] | None = None


class DestinationRule(Model, frozen=True):
    host: str | None = None
    traffic_policy: TrafficPolicy | None = None
    subsets: tuple[Subset, ...] | None = None
    export_to: tuple[str, ...] | None = None
    workload_selector: WorkloadSelector | None = None

    def subset(self, name: str) -> Subset | None:
        return next((s for s in self.subsets or () if s.name == name), None)


# ---------------------------------------------------------------- Gateway

class Port(Model, frozen=True):
    number: int | None = None
    protocol: str | None = None
    name: str | None = None
    target_port: int | None = None


class ServerTLSCertificate(Model, frozen=True):
    """One entry of `tls.tlsCertificates` (files; Istio reads the server's own caCertificates, not this one's)."""

    server_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None


class ServerTLSSettings(Model, frozen=True):
    https_redirect: bool | None = None
    mode: str | None = None
    server_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    credential_name: str | None = None
    credential_names: tuple[str, ...] | None = None
    ca_cert_credential_name: str | None = None
    ca_crl: str | None = None
    subject_alt_names: tuple[str, ...] | None = None
    verify_certificate_spki: tuple[str, ...] | None = None
    verify_certificate_hash: tuple[str, ...] | None = None
    min_protocol_version: str | None = None
    max_protocol_version: str | None = None
    cipher_suites: tuple[str, ...] | None = None
    ecdh_curves: tuple[str, ...] | None = None
    tls_certificates: tuple[ServerTLSCertificate, ...] | None = None
    insecure_skip_verify: bool | None = None


class Server(Model, frozen=True):
    port: Port | None = None
    bind: str | None = None
    hosts: tuple[str, ...] | None = None
    tls: ServerTLSSettings | None = None
    default_endpoint: str | None = None
    name: str | None = None


class Gateway(Model, frozen=True):
    servers: tuple[Server, ...] | None = None
    selector: Mapping[str, str] | None = None


# ---------------------------------------------------------------- ServiceEntry / Workload*

class WorkloadEntry(Model, frozen=True):
    address: str | None = None
    ports: Mapping[str, int] | None = None
    labels: Mapping[str, str] | None = None
    network: str | None = None
    locality: str | None = None
    weight: int | None = None
    service_account: str | None = None


class EntryWorkloadSelector(Model, frozen=True):
    labels: Mapping[str, str] | None = None


class ServiceEntry(Model, frozen=True):
    hosts: tuple[str, ...] | None = None
    addresses: tuple[str, ...] | None = None
    ports: tuple[Port, ...] | None = None
    location: str | None = None
    resolution: str | None = None
    endpoints: tuple[WorkloadEntry, ...] | None = None
    workload_selector: EntryWorkloadSelector | None = None
    export_to: tuple[str, ...] | None = None
    subject_alt_names: tuple[str, ...] | None = None


class WorkloadGroup(Model, frozen=True):
    metadata: Mapping[str, Any] | None = None
    template: WorkloadEntry | None = None
    probe: Mapping[str, Any] | None = None


# ---------------------------------------------------------------- Sidecar

class IstioEgressListener(Model, frozen=True):
    port: Port | None = None
    bind: str | None = None
    capture_mode: str | None = None
    hosts: tuple[str, ...] | None = None


class IstioIngressListener(Model, frozen=True):
    port: Port | None = None
    bind: str | None = None
    capture_mode: str | None = None
    default_endpoint: str | None = None
    tls: ServerTLSSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None


class OutboundTrafficPolicy(Model, frozen=True):
    mode: str | None = None
    egress_proxy: Destination | None = None


class Sidecar(Model, frozen=True):
    workload_selector: EntryWorkloadSelector | None = None
    ingress: tuple[IstioIngressListener, ...] | None = None
    egress: tuple[IstioEgressListener, ...] | None = None
    outbound_traffic_policy: OutboundTrafficPolicy | None = None
    inbound_connection_pool: ConnectionPoolSettings | None = None
