"""Clusters: outbound per service port and DestinationRule subset, inbound per container port, and the specials."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeAlias

import msgspec
from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.common.matcher.v3 import matcher_pb2
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.clusters.dynamic_forward_proxy.v3 import cluster_pb2 as dfp_cluster_pb2
from envoy.extensions.common.dynamic_forward_proxy.v3 import dns_cache_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo
from envoy.type.matcher.v3 import string_pb2
from envoy.type.v3 import percent_pb2

from sailmesh.api.models import model_of
from sailmesh.api.models.networking import (
    ConnectionPoolHTTP,
    ConnectionPoolSettings,
    ConnectionPoolTCP,
    DestinationRule,
    LoadBalancerSettings,
    OutlierDetection,
    PortTrafficPolicy,
    RetryBudget,
    Sidecar,
    WarmupConfiguration,
)
from sailmesh.api.resource import Resource
from sailmesh.generate import capture, locality, names
from sailmesh.generate.alpn import is_sniffed
from sailmesh.generate.common import MAX_UINT32, Prepacked, ads, duration, go_duration, pack, u32
from sailmesh.generate.endpoints import (
    LocalityShape,
    assignment,
    authority_reaches,
    discovery,
    is_passthrough,
    locality_lb,
    select,
    shaped_endpoints,
    subset_labels,
    unique_ports,
)
from sailmesh.generate.gateway import has_auto_passthrough
from sailmesh.generate.memo import Memos
from sailmesh.generate.peer_authn import namespace_mode
from sailmesh.generate.policy import effective_policy
from sailmesh.generate.scope import destination_rule, inbound_endpoints, visible_services
from sailmesh.generate.tls import apply_upstream_tls, auto_mtls_enabled, has_mesh_identity, sni_for
from sailmesh.generate.upstream_l4 import apply_proxy_protocol
from sailmesh.snapshot.model import Endpoint, MeshSnapshot, ProxyView, Service, ServicePort
from sailmesh.telemetry import resolve, tracing

Cluster: TypeAlias = cluster_pb2.Cluster
DEFAULT_CONNECT_TIMEOUT_S = 10.0  # MeshConfig.connectTimeout default
DEFAULT_RING_SIZE = 1024  # Istio's minimumRingSize default
HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
DFP_CACHE = "dynamic_forward_proxy_cache_config"
# A PASSTHROUGH forward proxy cluster's short names: filter_metadata[PASSTHROUGH_METADATA][PASSTHROUGH_HOSTS] maps
# each alias a client may write (`reviews:9080`, `reviews.default:9080`, ...) to `<FQDN>:<port>`, the name the
# outbound HCM's set_filter_state gives the forward proxy to resolve (filters/basic.py: passthrough_host)
PASSTHROUGH_METADATA = "sailmesh"
PASSTHROUGH_HOSTS = "passthrough_hosts"
NO_WARMUP = WarmupConfiguration()
NO_TCP_POOL = ConnectionPoolTCP()
NO_HTTP_POOL = ConnectionPoolHTTP()
SIMPLE_LB = {
    "ROUND_ROBIN": Cluster.ROUND_ROBIN,
    "LEAST_REQUEST": Cluster.LEAST_REQUEST,
    "LEAST_CONN": Cluster.LEAST_REQUEST,
    "RANDOM": Cluster.RANDOM,
    "UNSPECIFIED": Cluster.LEAST_REQUEST,
}


def dns_cache_config() -> dns_cache_pb2.DnsCacheConfig:
    """The DNS cache shared by PassthroughCluster and the outbound dynamic forward proxy filter."""
    return dns_cache_pb2.DnsCacheConfig(name=DFP_CACHE, dns_lookup_family=cluster_pb2.Cluster.V4_ONLY)


def default_thresholds() -> circuit_breaker_pb2.CircuitBreakers:
    """Istio's default circuit breakers: every limit at MaxUint32, remaining tracked."""
    return circuit_breaker_pb2.CircuitBreakers(
        thresholds=[
            circuit_breaker_pb2.CircuitBreakers.Thresholds(
                max_connections=u32(MAX_UINT32),
                max_pending_requests=u32(MAX_UINT32),
                max_requests=u32(MAX_UINT32),
                max_retries=u32(MAX_UINT32),
                track_remaining=True,
            )
        ]
    )


def _base(name: str) -> Cluster:
    c = Cluster(name=name, connect_timeout=duration(DEFAULT_CONNECT_TIMEOUT_S))
    c.circuit_breakers.CopyFrom(default_thresholds())
    return c


def _apply_lb(c: Cluster, lb: LoadBalancerSettings | None) -> None:
    c.lb_policy = Cluster.LEAST_REQUEST  # Istio's default since 1.14
    if lb is None:
        return
    if lb.simple in SIMPLE_LB:
        c.lb_policy = SIMPLE_LB[lb.simple]
    warmup = lb.warmup or NO_WARMUP
    window = warmup.duration or lb.warmup_duration_secs
    if window and c.lb_policy in (Cluster.ROUND_ROBIN, Cluster.LEAST_REQUEST):
        cfg = c.round_robin_lb_config if c.lb_policy == Cluster.ROUND_ROBIN else c.least_request_lb_config
        ss = cfg.slow_start_config
        ss.slow_start_window.CopyFrom(go_duration(window))
        if warmup.aggression is not None:
            ss.aggression.default_value = warmup.aggression
            ss.aggression.runtime_key = "sailmesh.slow_start.aggression"
        if warmup.minimum_percent is not None:
            ss.min_weight_percent.value = warmup.minimum_percent
    ch = lb.consistent_hash
    if ch is not None:
        if ch.maglev is not None:
            c.lb_policy = Cluster.MAGLEV
            if ch.maglev.table_size:
                c.maglev_lb_config.table_size.value = ch.maglev.table_size
        else:
            c.lb_policy = Cluster.RING_HASH
            ring = ch.ring_hash.minimum_ring_size if ch.ring_hash is not None else None
            c.ring_hash_lb_config.minimum_ring_size.value = ring or ch.minimum_ring_size or DEFAULT_RING_SIZE


def _apply_outlier(c: Cluster, od: OutlierDetection | None) -> None:
    """Istio's applyOutlierDetection (success-rate ejection off, panic threshold = minHealthPercent)."""
    if od is None:
        return
    out = outlier_detection_pb2.OutlierDetection(enforcing_success_rate=u32(0))
    five = od.consecutive_5xx_errors if od.consecutive_5xx_errors is not None else od.consecutive_errors
    for v, field, enforce in (
        (five, "consecutive_5xx", "enforcing_consecutive_5xx"),
        (od.consecutive_gateway_errors, "consecutive_gateway_failure", "enforcing_consecutive_gateway_failure"),
    ):
        if v is not None:
            getattr(out, field).value = v
            getattr(out, enforce).value = 100 if v > 0 else 0
    if od.interval:
        out.interval.CopyFrom(go_duration(od.interval))
    if od.base_ejection_time:
        out.base_ejection_time.CopyFrom(go_duration(od.base_ejection_time))
    if od.max_ejection_percent:
        out.max_ejection_percent.value = od.max_ejection_percent
    if od.split_external_local_origin_errors:
        out.split_external_local_origin_errors = True
        if od.consecutive_local_origin_failures is not None:
            out.consecutive_local_origin_failure.value = od.consecutive_local_origin_failures
    c.outlier_detection.CopyFrom(out)
    c.common_lb_config.healthy_panic_threshold.CopyFrom(percent_pb2.Percent(value=float(od.min_health_percent or 0)))


def _protocol_options(protocol: str, pool: ConnectionPoolSettings | None,
                      sniffed: bool = False) -> hpo.HttpProtocolOptions | None:
    """The cluster's HTTP options; `sniffed`: a captured sidecar's port whose protocol the proxy detects, which
    speaks upstream the protocol the client spoke (Istio's setUpstreamProtocol: setUseDownstreamProtocol for a
    sidecar's IsUnsupported port; a TCP connection on the same cluster ignores it)."""
    http = (pool.http if pool is not None else None) or NO_HTTP_POOL
    tcp = (pool.tcp if pool is not None else None) or NO_TCP_POOL
    if not names.is_http(protocol) and not sniffed:
        return None
    opts = hpo.HttpProtocolOptions()
    common = opts.common_http_protocol_options
    if http.idle_timeout:
        common.idle_timeout.CopyFrom(go_duration(http.idle_timeout))
    if http.max_requests_per_connection:
        common.max_requests_per_connection.value = http.max_requests_per_connection
    if tcp.max_connection_duration:
        common.max_connection_duration.CopyFrom(go_duration(tcp.max_connection_duration))
    h2 = protocol.upper() in names.H2_PROTOCOLS or http.h2_upgrade_policy == "UPGRADE"
    if sniffed:  # Istio's shouldH2Upgrade upgrades declared HTTP ports only
        opts.use_downstream_protocol_config.http_protocol_options.SetInParent()
        opts.use_downstream_protocol_config.http2_protocol_options.SetInParent()
    elif http.use_client_protocol:
        opts.use_downstream_protocol_config.SetInParent()
    elif h2:
        h2opts = opts.explicit_http_config.http2_protocol_options
        h2opts.SetInParent()
        if http.max_concurrent_streams:
            h2opts.max_concurrent_streams.value = http.max_concurrent_streams
        keepalive = http.http2_keep_alive or {}  # Istio's applyConnectionPool: HTTP/2 PING keepalive
        for key in ("interval", "timeout"):
            if keepalive.get(key):
                getattr(h2opts.connection_keepalive, key).CopyFrom(go_duration(str(keepalive[key])))
    else:
        opts.explicit_http_config.http_protocol_options.SetInParent()
    return opts


def _apply_pool(c: Cluster, protocol: str, pool: ConnectionPoolSettings | None, sniffed: bool = False) -> None:
    tcp = (pool.tcp if pool is not None else None) or NO_TCP_POOL
    http = (pool.http if pool is not None else None) or NO_HTTP_POOL
    t = c.circuit_breakers.thresholds[0]
    for value, field in (
        (tcp.max_connections, "max_connections"),
        (http.http1_max_pending_requests, "max_pending_requests"),
        (http.http2_max_requests, "max_requests"),
        (http.max_retries, "max_retries"),
    ):
        if value:
            getattr(t, field).value = value
    if tcp.connect_timeout:
        c.connect_timeout.CopyFrom(go_duration(tcp.connect_timeout))
    ka = tcp.tcp_keepalive
    if ka is not None:
        k = c.upstream_connection_options.tcp_keepalive
        k.SetInParent()
        if ka.probes:
            k.keepalive_probes.value = ka.probes
        if ka.time:
            k.keepalive_time.value = int(go_duration(ka.time).seconds)
        if ka.interval:
            k.keepalive_interval.value = int(go_duration(ka.interval).seconds)
    opts = _protocol_options(protocol, pool, sniffed)
    if opts is not None:
        c.typed_extension_protocol_options[HTTP_OPTIONS_KEY].CopyFrom(pack(opts))


def _apply_policy(c: Cluster, protocol: str, policy: PortTrafficPolicy, sniffed: bool = False) -> None:
    _apply_lb(c, policy.load_balancer)
    _apply_pool(c, protocol, policy.connection_pool, sniffed)
    _apply_outlier(c, policy.outlier_detection)
    if policy.connection_pool is not None and policy.retry_budget is not None:
        _apply_retry_budget(c, policy.retry_budget)
    codes = policy.outlier_detection.outlier_detection_http_error_codes if policy.outlier_detection else None
    if codes and HTTP_OPTIONS_KEY in c.typed_extension_protocol_options:
        _apply_outlier_error_codes(c, codes)


def _apply_outlier_error_codes(c: Cluster, codes: tuple[int, ...]) -> None:
    """Istio's applyOutlierDetectionErrorCodes: the HTTP protocol options' outlier error matcher, a `:status` exact
    match per code (or'ed). On HTTP clusters (a TCP cluster sees no status to match)."""
    rules = [matcher_pb2.MatchPredicate(http_response_headers_match=matcher_pb2.HttpHeadersMatch(headers=[
        rc.HeaderMatcher(name=":status", string_match=string_pb2.StringMatcher(exact=str(code)))])) for code in codes]
    predicate = rules[0] if len(rules) == 1 else matcher_pb2.MatchPredicate(
        or_match=matcher_pb2.MatchPredicate.MatchSet(rules=rules))
    opts = hpo.HttpProtocolOptions()
    c.typed_extension_protocol_options[HTTP_OPTIONS_KEY].Unpack(opts)
    opts.outlier_detection.error_matcher.CopyFrom(predicate)
    c.typed_extension_protocol_options[HTTP_OPTIONS_KEY].CopyFrom(pack(opts))


def _apply_retry_budget(c: Cluster, budget: RetryBudget) -> None:
    """Istio's applyRetryBudget (only beside a connectionPool, as applyConnectionPool calls it): the budget's
    percent (default 20) and minRetryConcurrency (default 3) on the default thresholds; Envoy 1.40 has no
    budget_interval (reported)."""
    rb = c.circuit_breakers.thresholds[0].retry_budget
    rb.budget_percent.value = budget.percent.value if budget.percent is not None else 20.0
    rb.min_retry_concurrency.value = budget.min_retry_concurrency or 3


def is_http2(c: Cluster) -> bool:
    """Istio's isHttp2Cluster: the cluster speaks HTTP/2 upstream (explicitly)."""
    if HTTP_OPTIONS_KEY not in c.typed_extension_protocol_options:
        return False
    opts = hpo.HttpProtocolOptions()
    c.typed_extension_protocol_options[HTTP_OPTIONS_KEY].Unpack(opts)
    return bool(opts.explicit_http_config.HasField("http2_protocol_options"))


def _dns_endpoints(
    svc: Service, port: ServicePort, eps: tuple[Endpoint, ...], labels: Mapping[str, str],
) -> list[Endpoint]:
    chosen = select(eps, labels)
    if not chosen and not eps:
        # A DNS ServiceEntry without endpoints resolves its own host (Istio's behaviour).
        chosen = [Endpoint(svc.hostname, port.port, svc.hostname, port.target_port or port.port)]
    return chosen


def _dns_assignment(name: str, svc: Service, chosen: list[Endpoint],
                    shaped_for: tuple[ProxyView, LocalityShape] | None) -> ClusterLoadAssignment:
    """A DNS cluster's inline load assignment: its endpoints grouped by locality and, for a proxy locality load
    balancing applies to (`shaped_for`), with that proxy's priorities and weights, as the EDS path gives them
    (Istio's applyLocalityLoadBalancer applies ApplyLocalityLoadBalancer to the cluster's LoadAssignment when it
    has one; since Istio 1.30 failoverPriority too, #58674). LOGICAL_DNS (DNS_ROUND_ROBIN) takes exactly one
    endpoint in one locality (Envoy refuses the cluster otherwise; Istio's validation refuses more than one
    endpoint), so it is left as it is: priorities renumber to 0 and a weight among one locality changes nothing,
    and a `distribute` not naming its locality would leave it no endpoint (Istio empties it; Envoy then rejects
    the cluster)."""
    if svc.resolution == "DNS_ROUND_ROBIN":
        return assignment(name, chosen[:1])
    if shaped_for is None:
        return assignment(name, chosen)
    proxy, shape = shaped_for
    return ClusterLoadAssignment(cluster_name=name, endpoints=shaped_endpoints(chosen, proxy, shape))


def _short_names(c: Cluster, svc: Service, port: ServicePort, proxy_namespace: str, suffix: str) -> None:
    """Record on a forward proxy PASSTHROUGH cluster the aliases of the service a client in `proxy_namespace` may
    write (Istio's generateVirtualHostDomains: the names that reach its virtual host), each with and without the
    port, mapped to `<FQDN>:<port>`: what a pod's search list (`<ns>.svc.<suffix> svc.<suffix> <suffix>`) would
    resolve them to. Envoy's resolver has no search list, so the forward proxy resolves the FQDN instead of the
    name as written (the Host header is left as the client sent it)."""
    target = f"{svc.hostname}:{port.port}"
    aliases = names.host_aliases(svc.hostname, svc.namespace, proxy_namespace, suffix)[1:]
    if not aliases:
        return
    hosts = {alias: target for alias in names.domains_with_port(aliases, port.port, plain=True)}
    c.metadata.filter_metadata[PASSTHROUGH_METADATA].update({PASSTHROUGH_HOSTS: hosts})


def _original_destination(c: Cluster, svc: Service, port: ServicePort, captured: bool) -> None:
    """Istio's PASSTHROUGH (an ORIGINAL_DST cluster): the connection goes to the address the caller asked for, at
    the port the caller dialled, with no load balancing over the service's endpoints (docs/translation.md).

    Captured (istio-iptables redirects the app's connection): Istio's plain ORIGINAL_DST cluster, the connection's
    original destination. Explicitly proxied, the connection's destination is the sidecar itself, so what the
    caller asked for is the request's authority: on an HTTP port of a service with addresses (VIPs the vhost
    matches) a dynamic forward proxy cluster connects to that authority, an address as is, a name through the
    mesh's DNS. Otherwise only the service's names reach the cluster: a LOGICAL_DNS cluster on
    `<host>:<service port>` resolves the name as the caller would (the mesh's DNS, the first address). No
    ClusterLoadAssignment is sent for any of them.
    """
    if captured:
        c.type = Cluster.ORIGINAL_DST
    elif authority_reaches(svc, port):
        _forward_proxy(c)
    else:
        c.type = Cluster.LOGICAL_DNS
        c.dns_lookup_family = Cluster.V4_ONLY
        c.respect_dns_ttl = True
        c.load_assignment.CopyFrom(assignment(c.name, [Endpoint(svc.hostname, port.port, svc.hostname, port.port)]))


def outbound_cluster(
    snapshot: MeshSnapshot, svc: Service, port: ServicePort, subset: str, labels: Mapping[str, str],
    policy: PortTrafficPolicy, *, client_has_identity: bool = False, service_mode: str | None = None,
    credentials: bool = False, captured: bool = False, proxy_namespace: str = "",
    shaped_for: tuple[ProxyView, LocalityShape] | None = None,
) -> Cluster:
    """One `outbound|port|subset|host` cluster; TLS as tls.apply_upstream_tls decides (DestinationRule, auto mTLS).
    `captured`: the proxy's traffic is intercepted (PASSTHROUGH is then Istio's plain ORIGINAL_DST);
    `proxy_namespace`: the client's, for the short names an explicit PASSTHROUGH cluster resolves; `shaped_for`:
    the proxy and its endpoints.locality_lb shape, for a DNS cluster's inline endpoints (_dns_assignment)."""
    name = names.outbound_cluster(port.port, subset, svc.hostname)
    c = _base(name)
    kind = discovery(snapshot, svc)
    if kind != "forward" and is_passthrough(policy):
        kind = "passthrough"
        _original_destination(c, svc, port, captured)
        if c.HasField("cluster_type"):  # the forward proxy (explicit mode, HTTP port of a service with addresses)
            _short_names(c, svc, port, proxy_namespace, snapshot.mesh.domain_suffix)
    elif kind == "forward":
        _forward_proxy(c)
    elif kind == "dns":
        c.type = Cluster.STRICT_DNS if svc.resolution == "DNS" else Cluster.LOGICAL_DNS
        c.dns_lookup_family = Cluster.V4_ONLY
        c.respect_dns_ttl = True
        eps = snapshot.endpoints.get((svc.hostname, port.port), ())
        c.load_assignment.CopyFrom(_dns_assignment(name, svc, _dns_endpoints(svc, port, eps, labels), shaped_for))
    else:
        c.type = Cluster.EDS
        c.eds_cluster_config.eds_config.CopyFrom(ads())
        c.eds_cluster_config.service_name = name
    c.metadata.filter_metadata["istio"].update(
        {"services": [{"host": svc.hostname, "name": svc.name, "namespace": svc.namespace}], "subset": subset}
    )
    _apply_policy(c, port.protocol, policy, captured and is_sniffed(port.protocol))
    lb = locality.setting(snapshot, policy, svc)
    if isinstance(lb, locality.ZoneAwareSetting):  # Istio's ZoneAwareLBSettings.ApplyToCluster
        zone = c.common_lb_config.zone_aware_lb_config
        zone.SetInParent()
        if lb.min_cluster_size is not None:
            zone.min_cluster_size.value = lb.min_cluster_size
        if not lb.enabled:
            zone.routing_enabled.value = 0  # suppresses Envoy's own zone-aware routing
    elif snapshot.mesh.locality_weighted_lb_config or (lb is not None and (lb.distribute or (
            (c.HasField("outlier_detection") or lb.force_failover) and (lb.failover or lb.failover_priority)))):
        # Istio's LocalityLBSettings.ApplyToCluster: locality-weighted LB with `distribute`, and with failover
        # enabled (outlier detection, or forced by a traffic distribution) when `failover` or `failoverPriority` is
        # set; with ENABLE_LOCALITY_WEIGHTED_LB_CONFIG always, also when locality LB is off (Istio skips only its
        # DYNAMIC_DNS forward proxy clusters, which sailmesh does not build; its ORIGINAL_DST ones get it, and so
        # do the forward proxy clusters standing in for them here)
        c.common_lb_config.locality_weighted_lb_config.SetInParent()
    if kind == "forward":
        c.lb_policy = Cluster.CLUSTER_PROVIDED  # the forward proxy picks the host itself
    elif kind == "passthrough":
        # ORIGINAL_DST and forward proxy clusters pick the host themselves; LOGICAL_DNS has one (nothing to balance)
        c.lb_policy = Cluster.ROUND_ROBIN if c.type == Cluster.LOGICAL_DNS else Cluster.CLUSTER_PROVIDED
    # forward proxy and passthrough clusters have no endpoints to match (Istio's ORIGINAL_DST hosts carry no
    # tlsMode metadata either, so auto mTLS sends them plaintext)
    apply_upstream_tls(c, snapshot, svc, port.port, subset, policy.tls,
                       client_has_identity=client_has_identity and kind not in ("forward", "passthrough"),
                       service_mode=service_mode, http2=is_http2(c), credentials=credentials)
    apply_proxy_protocol(c, policy.proxy_protocol)
    return c


def build_outbound(snapshot: MeshSnapshot, proxy: ProxyView, memos: Memos) -> list[Cluster | Prepacked]:
    """Every outbound cluster of the services visible to the proxy, plus BlackHole and Passthrough."""
    catch_all = original_dst_passthrough if capture.is_captured(proxy) else passthrough
    out: list[Cluster | Prepacked] = [_fixed(memos, blackhole), _fixed(memos, catch_all)]
    identity = has_mesh_identity(proxy)
    auto = auto_mtls_enabled(snapshot)
    router = proxy.type == "router"  # gateways originate TLS with DestinationRule credentialNames (Istio)
    captured = capture.is_captured(proxy)
    for svc in visible_services(snapshot, proxy):
        dr = destination_rule(snapshot, proxy.namespace, svc, proxy.labels)
        # a cluster depends on the service, its DestinationRule, its endpoints (DNS clusters, NONE; the service
        # accounts mTLS verifies), the mesh and its mesh config (locality settings, TLS defaults), and for mTLS on the
        # client's identity and the service's namespace mode
        eps = tuple(snapshot.endpoints.get((svc.hostname, p.port), ()) for p in svc.ports)
        held = (svc, dr, snapshot.mesh, snapshot.mesh_config, *eps)
        mode = namespace_mode(snapshot, svc.namespace) if identity else None
        # Istio reads a rule's client credentialName at gateways, and at sidecars only for rules with a
        # workloadSelector (buildUpstreamClusterTLSContext)
        credentials = router or (dr is not None and model_of(dr, DestinationRule).workload_selector is not None)
        # the proxy's namespace matters only to a PASSTHROUGH cluster's short names (the service's own namespace)
        short = svc.namespace == proxy.namespace if svc.addresses and _names_passthrough(dr) else None
        ids = (*map(id, held), identity, auto, mode, credentials, captured, short)
        dns = discovery(snapshot, svc) == "dns"
        for port in unique_ports(svc):
            for subset, labels in subset_labels(snapshot, proxy.namespace, svc, proxy.labels):
                # a DNS cluster's inline endpoints carry the proxy's locality priorities (its locality and the
                # labels failoverPriority reads, in the shape)
                shape = locality_lb(snapshot, proxy, svc, dr, subset, port.port) if dns else None
                key = (port.port, subset, ids, shape)
                c = memos.clusters.get(key, held)
                if c is None:
                    policy = effective_policy(dr, subset, port.port)
                    msg = outbound_cluster(snapshot, svc, port, subset, labels, policy,
                                           client_has_identity=identity, service_mode=mode, credentials=credentials,
                                           captured=captured, proxy_namespace=proxy.namespace,
                                           shaped_for=(proxy, shape) if shape is not None else None)
                    if dr is not None:  # Istio's AddConfigInfoMetadata: istioctl's DESTINATION RULE column
                        msg.metadata.filter_metadata["istio"].update({"config": dr_config_path(dr)})
                    c = Prepacked.of(msg.name, msg)
                    memos.clusters.put(key, held, c)
                out.append(c)
    return out


def dr_config_path(dr: Resource) -> str:
    """Istio's `istio.config` cluster metadata: the DestinationRule a cluster's policy comes from."""
    return f"/apis/networking.istio.io/v1/namespaces/{dr.namespace}/destination-rule/{dr.name}"


def _names_passthrough(dr: Resource | None) -> bool:
    """Whether a DestinationRule says `loadBalancer.simple: PASSTHROUGH` anywhere (top level, a port, a subset)."""
    if dr is None:
        return False
    spec = model_of(dr, DestinationRule)
    for tp in (spec.traffic_policy, *(s.traffic_policy for s in spec.subsets or ())):
        if tp is not None and any(lb is not None and lb.simple == "PASSTHROUGH" for lb in (
                tp.load_balancer, *(p.load_balancer for p in tp.port_level_settings or ()))):
            return True
    return False


def _fixed(memos: Memos, make: Callable[[], Cluster]) -> Prepacked:
    """A cluster that depends on nothing, packed once per Memos (so parts holding it can be shared by identity)."""
    hit: Prepacked | None = memos.clusters.get(make.__name__, ())
    if hit is None:
        msg = make()
        hit = Prepacked.of(msg.name, msg)
        memos.clusters.put(make.__name__, (), hit)
    return hit


def build_inbound(snapshot: MeshSnapshot, proxy: ProxyView) -> list[Cluster]:
    """The proxy's own clusters: inbound ones, its tracers' collectors (telemetry.tracing), and a router's SNI-DNAT
    clusters when one of its Gateways has an AUTO_PASSTHROUGH server."""
    eff = resolve.for_proxy(snapshot, proxy)
    dnat = sni_dnat_clusters(snapshot, proxy) if proxy.type == "router" and has_auto_passthrough(snapshot, proxy) \
        else []
    passthrough = [capture.bind_source(capture.original_dst(_base(names.INBOUND_PASSTHROUGH_CLUSTER)), proxy)
                   ] if capture.is_captured(proxy) else []  # Istio's buildInboundPassthroughCluster
    return [*_inbound(snapshot, proxy), *passthrough, *tracing.collector_clusters(eff, snapshot.mesh_config, snapshot),
            *dnat]


def sni_dnat_clusters(snapshot: MeshSnapshot, proxy: ProxyView) -> list[Cluster]:
    """Istio's buildOutboundSniDnatClusters: per visible service port and subset a cluster named as the SNI an
    AUTO_PASSTHROUGH server routes by, `outbound_.PORT_.SUBSET_.HOST`, the outbound cluster's discovery and
    traffic policy without TLS (the client's TLS passes through). EDS clusters read the outbound cluster's
    endpoints (`service_name` `outbound|PORT|SUBSET|HOST`, which the router's EDS already carries)."""
    out = []
    for svc in visible_services(snapshot, proxy):
        dr = destination_rule(snapshot, proxy.namespace, svc, proxy.labels)
        for port in unique_ports(svc):
            for subset, labels in subset_labels(snapshot, proxy.namespace, svc, proxy.labels):
                shape = locality_lb(snapshot, proxy, svc, dr, subset, port.port)
                c = outbound_cluster(snapshot, svc, port, subset, labels, effective_policy(dr, subset, port.port),
                                     shaped_for=(proxy, shape) if shape is not None else None)
                c.name = sni_for(port.port, subset, svc.hostname)
                c.ClearField("transport_socket")
                c.ClearField("transport_socket_matches")
                if c.HasField("load_assignment"):
                    c.load_assignment.cluster_name = c.name
                out.append(c)
    return out


def _inbound(snapshot: MeshSnapshot, proxy: ProxyView) -> list[Cluster]:
    """`inbound|port||` per inbound port, pointing at the app on proxy.ip:app_port, or at a Sidecar ingress
    listener's defaultEndpoint (sidecars only)."""
    if proxy.type != "sidecar":
        return []
    out = []
    captured = capture.is_captured(proxy)
    for port, address, app_port, protocol in inbound_endpoints(snapshot, proxy):
        name = names.inbound_cluster(port)
        c = _base(name)
        c.type = Cluster.STATIC
        capture.bind_source(c, proxy)  # 127.0.0.6 (and ::6) when REDIRECT-captured (capture.py)
        c.load_assignment.CopyFrom(
            assignment(name, [Endpoint("", port, address, app_port)])  # a Sidecar ingress's defaultEndpoint
        )
        sniffed = captured and is_sniffed(protocol)  # the app is spoken to in the client's protocol
        opts = _protocol_options(protocol, None, sniffed)
        if opts is not None:
            c.typed_extension_protocol_options[HTTP_OPTIONS_KEY].CopyFrom(pack(opts))
        pool = _inbound_pool(snapshot, proxy, port)
        if pool is not None:
            _apply_pool(c, protocol, pool, sniffed)
        out.append(c)
    return out


def _inbound_pool(snapshot: MeshSnapshot, proxy: ProxyView, port: int) -> ConnectionPoolSettings | None:
    """An inbound cluster's connection pool as Istio's buildInboundCluster picks it: the Sidecar ingress listener's
    on that port, else the Sidecar's `inboundConnectionPool` (SidecarScope.InboundConnectionPoolForPort), else the
    port-level merged `connectionPool` of the DestinationRule of a service of the proxy's namespace selecting it on
    that port (the first by host name; Istio: "choice of inbound cluster is arbitrary"). Inbound clusters take only
    the pool's limits, timeouts and keepalive, not an HTTP/2 upgrade (Istio applies that outbound only)."""
    sc = snapshot.index.sidecar(proxy)
    pool: ConnectionPoolSettings | None = None
    if sc is not None:
        spec = model_of(sc, Sidecar)
        pool = next((il.connection_pool for il in spec.ingress or ()
                     if il.port is not None and il.port.number == port and il.connection_pool is not None),
                    spec.inbound_connection_pool)
    if pool is None:
        for svc in sorted(snapshot.index.services_in(proxy.namespace), key=lambda s: s.hostname):
            if not svc.selector or any(proxy.labels.get(k) != v for k, v in svc.selector.items()):
                continue
            sp = next((p for p in svc.ports if (p.target_port or p.port) == port), None)
            dr = destination_rule(snapshot, proxy.namespace, svc, proxy.labels) if sp is not None else None
            if sp is not None and dr is not None:
                pool = effective_policy(dr, "", sp.port).connection_pool
                break
    if pool is None or pool.http is None or not pool.http.h2_upgrade_policy:
        return pool
    return msgspec.structs.replace(pool, http=msgspec.structs.replace(pool.http, h2_upgrade_policy=None))


def blackhole() -> Cluster:
    """`BlackHoleCluster`: STATIC with no endpoints, so every request to it fails (503/reset)."""
    c = Cluster(name=names.BLACKHOLE_CLUSTER, type=Cluster.STATIC, connect_timeout=duration(DEFAULT_CONNECT_TIMEOUT_S))
    return c


def passthrough() -> Cluster:
    """`PassthroughCluster` for explicit proxying: a dynamic forward proxy to the Host the client asked for.

    Istio's ORIGINAL_DST cluster needs iptables redirection (the original destination of an explicitly
    proxied connection is the proxy itself), so embedded mode resolves the request's host instead.
    """
    c = _base(names.PASSTHROUGH_CLUSTER)
    _forward_proxy(c)
    return c


def original_dst_passthrough() -> Cluster:
    """A captured sidecar's `PassthroughCluster`: Istio's ORIGINAL_DST cluster (capture.py)."""
    return capture.original_dst(_base(names.PASSTHROUGH_CLUSTER))


def _forward_proxy(c: Cluster) -> None:
    """Make c a dynamic forward proxy cluster (the HCM's dynamic_forward_proxy filter resolves the Host)."""
    c.lb_policy = Cluster.CLUSTER_PROVIDED
    c.cluster_type.name = "envoy.clusters.dynamic_forward_proxy"
    # Plain HTTP upstreams: no SNI/SAN to derive from the Host, so Envoy wants this acknowledged.
    config = dfp_cluster_pb2.ClusterConfig(dns_cache_config=dns_cache_config(), allow_insecure_cluster_options=True)
    c.cluster_type.typed_config.CopyFrom(pack(config))
