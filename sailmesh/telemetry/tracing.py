"""Tracing: the HCM's Envoy tracer (Zipkin or OpenTelemetry over OTLP gRPC), sampling and Istio's span tags, from
the Telemetry API (resolve.py) or the legacy mesh config, and the collector clusters a proxy's tracer needs.

Istio's rules matched (pilot/pkg/networking/core/tracing.go): server spec on inbound HCMs, client spec on
outbound and gateway HCMs; a disabled spec configures no tracing; sampling precedence provider sampler >
`randomSamplingPercentage` > `defaultConfig.tracing.sampling` (a value over 100 means 1) > PILOT_TRACE_SAMPLING
(1%); client and overall sampling 100%; tags `istio.canonical_revision`, `istio.canonical_service`,
`istio.mesh_id`, `istio.namespace`, `istio.cluster_id` (literals) plus the dry-run authorization tags (RBAC
metadata), then the Telemetry custom tags (else `defaultConfig.tracing.customTags`), sorted by name; Zipkin: v2
JSON to `/api/v2/spans`, 128-bit trace ids unless `enable64bitTraceId`, no shared span context, B3 (or B3+W3C with
`USE_B3_WITH_W3C_PROPAGATION`); OpenTelemetry: OTLP gRPC with the proxy's service cluster as service name; the
gateway spawns an upstream span (PILOT_SPAWN_UPSTREAM_SPAN_FOR_GATEWAY, on since Istio 1.28).

Istio finds the collector as a registry service's outbound cluster; sailmesh adds one cluster per collector,
`tracing|<port>||<host>` (STRICT_DNS, or STATIC for an IP), so the collector need not be a mesh service. A DNS
collector does not wait for its first answer (`wait_for_warm_on_init: false`), a Kubernetes short name
(`zipkin.istio-system`) resolves as the service's FQDN, and a name in the mesh's domain that names no service gets a
STATIC cluster without endpoints (no lookup): Istio's default Zipkin address (`zipkin.istio-system:9411`, on unless
the mesh config says `defaultConfig.tracing: {}`) names nothing in a mesh without Zipkin, and the proxy must start
and serve all the same (spans to it are dropped).
"""

from __future__ import annotations

import ipaddress

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, grpc_service_pb2, http_service_pb2, http_uri_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as ec
from envoy.config.trace.v3 import http_tracer_pb2, opentelemetry_pb2, zipkin_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.request_id.uuid.v3 import uuid_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo
from envoy.type.metadata.v3 import metadata_pb2
from envoy.type.tracing.v3 import custom_tag_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2, message, wrappers_pb2

from sailmesh.api.meshconfig import ExtensionProvider, MeshConfig, Zipkin
from sailmesh.snapshot.model import MeshSnapshot, ProxyView
from sailmesh.telemetry.resolve import CLIENT, SERVER, CustomTag, EffectiveTelemetry, TracingSpec, custom_tags

ZIPKIN = "envoy.tracers.zipkin"
OPENTELEMETRY = "envoy.tracers.opentelemetry"
ZIPKIN_PATH = "/api/v2/spans"
PILOT_TRACE_SAMPLING = 1.0  # Istio's default random sampling percentage
CLUSTER_ID = "Kubernetes"  # the agent's default CLUSTER_ID (Istio's default cluster name)
COLLECTOR_TIMEOUT_S = 5  # Istio's default Zipkin collector timeout
HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
RBAC = "envoy.filters.http.rbac"
# Istio's optionalPolicyTags: the AuthorizationPolicy dry-run results from the RBAC filter's metadata
DRY_RUN_TAGS = (
    ("istio.authorization.dry_run.allow_policy.name", "istio_dry_run_allow_shadow_effective_policy_id"),
    ("istio.authorization.dry_run.allow_policy.result", "istio_dry_run_allow_shadow_engine_result"),
    ("istio.authorization.dry_run.deny_policy.name", "istio_dry_run_deny_shadow_effective_policy_id"),
    ("istio.authorization.dry_run.deny_policy.result", "istio_dry_run_deny_shadow_engine_result"),
)


def _pack(m: message.Message) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(m)
    return a


def canonical_service(labels: dict[str, str] | object, workload_name: str) -> tuple[str, str]:
    """Istio's canonical service and revision as its injector derives them from the workload's labels."""
    get = getattr(labels, "get", lambda _k: None)
    name = (get("service.istio.io/canonical-name") or get("app.kubernetes.io/name") or get("app")
            or workload_name or "unknown")
    rev = get("service.istio.io/canonical-revision") or get("app.kubernetes.io/version") or get("version") or "latest"
    return str(name), str(rev)


def collector(prov: ExtensionProvider) -> tuple[str, int, bool] | None:
    """(host, port, grpc) of a tracing provider's collector; None if the kind has no sailmesh tracer."""
    if prov.zipkin is not None:
        svc, port, grpc = prov.zipkin.service, prov.zipkin.port, False
    elif prov.opentelemetry is not None:
        svc, port, grpc = prov.opentelemetry.service, prov.opentelemetry.port, prov.opentelemetry.http is None
    else:
        return None
    host = svc.rpartition("/")[2]  # Istio accepts `namespace/hostname`
    return (host, port, grpc) if host and port else None


def collector_cluster_name(host: str, port: int) -> str:
    return f"tracing|{port}||{host}"


def legacy_zipkin(mesh: MeshConfig) -> ExtensionProvider | None:
    """`defaultConfig.tracing.zipkin.address` (host:port) as a Zipkin provider (Istio's bootstrap tracer)."""
    t = mesh.default_config.tracing
    if t is None or t.zipkin is None or not t.zipkin.address:
        return None
    host, _, port = t.zipkin.address.rpartition(":")
    if not host or not port.isdigit():
        return None
    return ExtensionProvider(name="zipkin (defaultConfig)", zipkin=Zipkin(service=host, port=int(port)))


def sampling_default(mesh: MeshConfig) -> float:
    """Istio's proxyConfigSamplingValue."""
    t = mesh.default_config.tracing
    if t is not None and t.sampling:
        return 1.0 if t.sampling > 100.0 else float(t.sampling)
    return PILOT_TRACE_SAMPLING


def _custom_tag(t: CustomTag) -> custom_tag_pb2.CustomTag:
    if t.kind == "environment":
        return custom_tag_pb2.CustomTag(tag=t.tag, environment=custom_tag_pb2.CustomTag.Environment(
            name=t.value, default_value=t.default))
    if t.kind == "header":
        return custom_tag_pb2.CustomTag(tag=t.tag, request_header=custom_tag_pb2.CustomTag.Header(
            name=t.value, default_value=t.default))
    if t.kind == "formatter":
        return custom_tag_pb2.CustomTag(tag=t.tag, value=t.value)
    return custom_tag_pb2.CustomTag(tag=t.tag, literal=custom_tag_pb2.CustomTag.Literal(value=t.value))


def istio_tags(mesh: MeshConfig, namespace: str, labels: object, workload_name: str) -> list[custom_tag_pb2.CustomTag]:
    """Istio's buildServiceTags + optionalPolicyTags."""
    service, revision = canonical_service(labels, workload_name)
    lit = custom_tag_pb2.CustomTag.Literal
    tags = [
        custom_tag_pb2.CustomTag(tag="istio.canonical_revision", literal=lit(value=revision)),
        custom_tag_pb2.CustomTag(tag="istio.canonical_service", literal=lit(value=service)),
        custom_tag_pb2.CustomTag(tag="istio.mesh_id", literal=lit(value=mesh.trust_domain or "unknown")),
        custom_tag_pb2.CustomTag(tag="istio.namespace", literal=lit(value=namespace or "default")),
        custom_tag_pb2.CustomTag(tag="istio.cluster_id", literal=lit(value=CLUSTER_ID)),
    ]
    for tag, key in DRY_RUN_TAGS:
        md = custom_tag_pb2.CustomTag.Metadata(
            kind=metadata_pb2.MetadataKind(request=metadata_pb2.MetadataKind.Request()),
            metadata_key=metadata_pb2.MetadataKey(key=RBAC, path=[metadata_pb2.MetadataKey.PathSegment(key=key)]))
        tags.append(custom_tag_pb2.CustomTag(tag=tag, metadata=md))
    return tags


def _provider(prov: ExtensionProvider, service_cluster: str) -> hcm_pb2.HttpConnectionManager.Tracing | None:
    c = collector(prov)
    if c is None:
        return None
    host, port, grpc = c
    cluster = collector_cluster_name(host, port)
    timeout = duration_pb2.Duration(seconds=COLLECTOR_TIMEOUT_S)
    t = hcm_pb2.HttpConnectionManager.Tracing()
    if prov.zipkin is not None:
        z = prov.zipkin
        zc = zipkin_pb2.ZipkinConfig(
            collector_endpoint_version=zipkin_pb2.ZipkinConfig.HTTP_JSON,
            trace_id_128bit=not z.enable64bit_trace_id,
            shared_span_context=wrappers_pb2.BoolValue(value=False),
            collector_service=http_service_pb2.HttpService(http_uri=http_uri_pb2.HttpUri(
                uri=f"http://{host}{ZIPKIN_PATH}", cluster=cluster, timeout=timeout)),
            trace_context_option=(zipkin_pb2.ZipkinConfig.USE_B3_WITH_W3C_PROPAGATION
                                  if z.trace_context_option == "USE_B3_WITH_W3C_PROPAGATION"
                                  else zipkin_pb2.ZipkinConfig.USE_B3),
        )
        t.provider.CopyFrom(http_tracer_pb2.Tracing.Http(name=ZIPKIN, typed_config=_pack(zc)))
        max_len = z.max_tag_length
    else:
        o = prov.opentelemetry
        assert o is not None
        oc = opentelemetry_pb2.OpenTelemetryConfig(service_name=service_cluster)
        if grpc:
            oc.grpc_service.CopyFrom(grpc_service_pb2.GrpcService(
                envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=cluster, authority=host)))
            if o.grpc is not None and o.grpc.timeout is not None:
                oc.grpc_service.timeout.FromTimedelta(o.grpc.timeout)
        else:
            assert o.http is not None
            oc.http_service.CopyFrom(http_service_pb2.HttpService(http_uri=http_uri_pb2.HttpUri(
                uri=f"{host}/{o.http.path.lstrip('/')}", cluster=cluster, timeout=timeout)))
        t.provider.CopyFrom(http_tracer_pb2.Tracing.Http(name=OPENTELEMETRY, typed_config=_pack(oc)))
        max_len = o.max_tag_length
    if max_len:
        t.max_path_tag_length.value = max_len
    return t


def configure(h: hcm_pb2.HttpConnectionManager, eff: EffectiveTelemetry, mesh: MeshConfig, mode: str, *,
              namespace: str, labels: object, workload_name: str, gateway: bool = False) -> None:
    """Set h.tracing (and the request-id extension) for an HCM on the `mode` side (CLIENT or SERVER)."""
    service, _ = canonical_service(labels, workload_name)
    service_cluster = f"{service}.{namespace}"
    pc = mesh.default_config.tracing
    legacy_tags = custom_tags(pc.custom_tags or {}) if pc is not None else ()
    if eff.tracing is None:  # no Telemetry tracing: the legacy mesh config
        if not mesh.enable_tracing:
            return
        prov = legacy_zipkin(mesh)
        t = _provider(prov, service_cluster) if prov is not None else None
        h.tracing.CopyFrom(t or hcm_pb2.HttpConnectionManager.Tracing())
        sampling, tags = sampling_default(mesh), legacy_tags
    else:
        spec: TracingSpec = eff.tracing.for_mode(SERVER if mode == SERVER else CLIENT)
        if spec.disabled or spec.provider is None:
            return
        t = _provider(spec.provider, service_cluster)
        if t is None:
            return  # a provider kind without a tracer (reported by resolve.unenforced)
        h.tracing.CopyFrom(t)
        sampling = spec.sampling if spec.sampling is not None else sampling_default(mesh)
        tags = spec.custom_tags if spec.custom_tags else legacy_tags
        h.request_id_extension.typed_config.CopyFrom(_pack(uuid_pb2.UuidRequestIdConfig(
            pack_trace_reason=wrappers_pb2.BoolValue(value=True),
            use_request_id_for_trace_sampling=wrappers_pb2.BoolValue(value=spec.use_request_id_for_trace_sampling))))
    if gateway and h.tracing.HasField("provider"):
        h.tracing.spawn_upstream_span.value = True
    h.tracing.client_sampling.CopyFrom(percent_pb2.Percent(value=100.0))
    h.tracing.overall_sampling.CopyFrom(percent_pb2.Percent(value=100.0))
    h.tracing.random_sampling.CopyFrom(percent_pb2.Percent(value=sampling))
    all_tags = istio_tags(mesh, namespace, labels, workload_name) + [_custom_tag(x) for x in tags]
    del h.tracing.custom_tags[:]
    h.tracing.custom_tags.extend(sorted(all_tags, key=lambda x: x.tag))
    if not h.tracing.HasField("max_path_tag_length") and pc is not None and pc.max_path_tag_length:
        h.tracing.max_path_tag_length.value = pc.max_path_tag_length


def _providers_in_use(eff: EffectiveTelemetry, mesh: MeshConfig) -> list[ExtensionProvider]:
    if eff.tracing is None:
        prov = legacy_zipkin(mesh) if mesh.enable_tracing else None
        return [prov] if prov is not None else []
    return [s.provider for s in (eff.tracing.client, eff.tracing.server) if not s.disabled and s.provider is not None]


def dns_name(snapshot: MeshSnapshot, host: str) -> str | None:
    """The name a collector's DNS cluster resolves for `host`: a mesh service's hostname as it is; a Kubernetes
    short name `name.namespace` of a mesh service as its FQDN (what the pod's search path makes of it; Envoy's
    resolver has none); None for a name in the mesh's domain (`*.svc.<suffix>`, or `name.namespace` with the root
    namespace or a namespace of the mesh's services) that names no service: it resolves nowhere, so no lookup is
    made (each failing lookup also pushes the mesh's DNS server behind the system's in Envoy's c-ares channel, and
    then mesh-only names stop resolving). Any other name (outside the mesh) as it is."""
    services = snapshot.services
    if host in services:
        return host
    suffix = f".svc.{snapshot.mesh.domain_suffix}"
    name, dot, namespace = host.partition(".")
    if dot and namespace and "." not in namespace:
        if name + "." + namespace + suffix in services:
            return name + "." + namespace + suffix
        if namespace == snapshot.mesh_config.root_namespace or snapshot.index.services_in(namespace):
            return None
    return None if host.endswith(suffix) else host


def collector_clusters(eff: EffectiveTelemetry, mesh: MeshConfig,
                       snapshot: MeshSnapshot | None = None) -> list[cluster_pb2.Cluster]:
    """The clusters the proxy's tracers send spans to (HTTP/2 for OTLP gRPC); with the snapshot, a DNS collector's
    name as `dns_name` resolves it (a STATIC cluster without endpoints when it names nothing: spans are dropped)."""
    out: dict[str, cluster_pb2.Cluster] = {}
    for prov in _providers_in_use(eff, mesh):
        c = collector(prov)
        if c is None:
            continue
        host, port, grpc = c
        name = collector_cluster_name(host, port)
        if name in out:
            continue
        cl = cluster_pb2.Cluster(name=name, connect_timeout=duration_pb2.Duration(seconds=COLLECTOR_TIMEOUT_S))
        address: str | None = host
        try:
            ipaddress.ip_address(host)
            cl.type = cluster_pb2.Cluster.STATIC
        except ValueError:
            address = dns_name(snapshot, host) if snapshot is not None else host
            cl.type = cluster_pb2.Cluster.STATIC if address is None else cluster_pb2.Cluster.STRICT_DNS
            if address is not None:
                cl.dns_lookup_family = cluster_pb2.Cluster.V4_ONLY
                # a collector whose name does not resolve (yet) must not hold the proxy's initialization: the
                # cluster is ready before its first DNS answer
                cl.wait_for_warm_on_init.value = False
        cl.load_assignment.cluster_name = name
        if address is not None:
            cl.load_assignment.endpoints.append(ec.LocalityLbEndpoints(lb_endpoints=[ec.LbEndpoint(
                endpoint=ec.Endpoint(address=address_pb2.Address(
                    socket_address=address_pb2.SocketAddress(address=address, port_value=port))))]))
        if grpc:
            opts = hpo.HttpProtocolOptions(explicit_http_config=hpo.HttpProtocolOptions.ExplicitHttpConfig(
                http2_protocol_options=protocol_pb2.Http2ProtocolOptions()))
            cl.typed_extension_protocol_options[HTTP_OPTIONS_KEY].CopyFrom(_pack(opts))
        out[name] = cl
    return list(out.values())


def inbound_operation(snapshot: MeshSnapshot, proxy: ProxyView, port: int) -> str:
    """Istio's inbound span name `<service host>:<service port>/*` (the first service in the proxy's namespace
    that selects it on this target port), else `<workload>:<port>/*`."""
    for svc in snapshot.index.services_in(proxy.namespace):
        if svc.selector and all(proxy.labels.get(k) == v for k, v in svc.selector.items()):
            for p in svc.ports:
                if (p.target_port or p.port) == port and not p.target_port_name:
                    return f"{svc.hostname}:{p.port}/*"
    return f"{proxy.workload_name or proxy.ip}:{port}/*"
