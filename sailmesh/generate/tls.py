"""Istio mutual TLS in Envoy terms: SDS secret references, the client (upstream) and server (downstream) TLS
contexts, auto mTLS on outbound clusters and the inbound filter chains of each PeerAuthentication mode.

Everything here mirrors Istio's pilot (the functions named in each docstring) with upstream Envoy: Istio's own
filters (metadata exchange, the `istio.alpn` override) do not exist there, so the client offers the ALPN
`istio-peer-exchange`, `istio` (+ `h2`) and the server matches the mTLS filter chain on Istio's ALPN values (a
captured sidecar's sniffed HTTP chains override it with `istio-http/1.1` / `istio-h2`: sniffing.py).

A proxy takes part in mesh mTLS only when it has a mesh identity: its labels carry Istio's injection label
`security.istio.io/tlsMode: istio` (the agent then serves the `default` and `ROOTCA` secrets over SDS on the
bootstrap cluster `sds-grpc`). Without it the proxy keeps plaintext, except that STRICT still refuses
everything: a policy that demands mTLS never opens up because a proxy cannot do it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2, grpc_service_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from google.protobuf import duration_pb2, struct_pb2, wrappers_pb2

from sailmesh.api.identity import spiffe_id
from sailmesh.api.meshconfig import MeshMTLS, TLSDefaults
from sailmesh.api.models.networking import ClientTLSSettings
from sailmesh.generate import names
from sailmesh.generate.common import ads, pack
from sailmesh.generate.peer_authn import DISABLE, STRICT
from sailmesh.registry.model import TLS_MODE_ISTIO, TLS_MODE_LABEL
from sailmesh.snapshot.model import Endpoint, MeshSnapshot, ProxyView, Service

SDS_CLUSTER = "sds-grpc"
DEFAULT_SECRET = "default"  # the workload's certificate chain and key
ROOTCA_SECRET = "ROOTCA"  # the mesh trust bundle
TLS_SOCKET = "envoy.transport_sockets.tls"
RAW_BUFFER_SOCKET = "envoy.transport_sockets.raw_buffer"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
# The transport socket match key on endpoints and clusters (Istio's tlsMode label, registry/model.py).
TLS_MODE_DISABLED = "disabled"
TRANSPORT_SOCKET_MATCH = "envoy.transport_socket_match"
TLS_MODE_KEY = "tlsMode"
# pilot/pkg/networking/util: the client's ALPN towards in-mesh endpoints (metadata exchange on, Istio's default).
ALPN_IN_MESH = ("istio-peer-exchange", "istio")
ALPN_IN_MESH_H2 = ("istio-peer-exchange", "istio", "h2")
ALPN_HTTP = ("h2", "http/1.1")  # the server's ALPN on HTTP ports (ALPNHttp)
ALPN_DOWNSTREAM_WITH_MXC = ("istio-peer-exchange", "h2", "http/1.1")  # the server's ALPN on TCP ports
# without metadata exchange (PILOT_ENABLE_METADATA_EXCHANGE=false): Istio's ALPNInMesh, ALPNInMeshH2, ALPNDownstream
ALPN_IN_MESH_NO_MX, ALPN_IN_MESH_H2_NO_MX, ALPN_DOWNSTREAM = ("istio",), ("istio", "h2"), ("h2", "http/1.1")
ALPN_H2_ONLY = ("h2",)
# pilot/pkg/networking/core/listener.go: what the server's mTLS filter chains match on (allIstioMtlsALPNs).
ALL_ISTIO_MTLS_ALPNS = ("istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2")
# pilot/pkg/security/authn/utils: SupportedCiphers, the server's TLS 1.2 cipher suites (TLS 1.3 has its own).
SUPPORTED_CIPHERS = (
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-GCM-SHA256",
)
TLS_TRANSPORT = "tls"  # set by the tls_inspector
RAW_BUFFER_TRANSPORT = "raw_buffer"  # Envoy's value when no listener filter detects TLS
# The OS trust store used when a DestinationRule's SIMPLE/MUTUAL tls names no caCertificates (Debian/Ubuntu path;
# Envoy's system_root_certs is not accepted together with subjectAltNames checks).
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
TlsParams = common_pb2.TlsParameters


def sds_secret(name: str) -> secret_pb2.SdsSecretConfig:
    """A reference to secret `name` served by the agent over SDS (`sds-grpc`), as Istio's
    ConstructSdsSecretConfig builds it for `default` and `ROOTCA`: node on the first message only, and no
    initial fetch timeout (a listener or cluster waits for its certificate rather than serving without it)."""
    grpc = grpc_service_pb2.GrpcService(envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=SDS_CLUSTER))
    source = config_source_pb2.ConfigSource(
        api_config_source=config_source_pb2.ApiConfigSource(
            api_type=config_source_pb2.ApiConfigSource.GRPC,
            transport_api_version=config_source_pb2.V3,
            grpc_services=[grpc],
            set_node_on_first_message_only=True,
        ),
        initial_fetch_timeout=duration_pb2.Duration(seconds=0),
        resource_api_version=config_source_pb2.V3,
    )
    return secret_pb2.SdsSecretConfig(name=name, sds_config=source)


def has_mesh_identity(proxy: ProxyView) -> bool:
    """Whether the proxy holds a mesh certificate over SDS (its labels carry tlsMode istio, as injected pods)."""
    return proxy.labels.get(TLS_MODE_LABEL) == TLS_MODE_ISTIO


def endpoint_tls_mode(e: Endpoint) -> str:
    """Istio's GetTLSModeFromEndpointLabels: the endpoint's tlsMode label, `disabled` without one."""
    return e.labels.get(TLS_MODE_LABEL) or TLS_MODE_DISABLED


def auto_mtls_enabled(snapshot: MeshSnapshot) -> bool:
    """MeshConfig.enableAutoMtls (Istio's default: true)."""
    return snapshot.mesh_config.enable_auto_mtls


def service_accounts(snapshot: MeshSnapshot, svc: Service) -> list[str]:
    """Istio's PushContext.ServiceAccounts: the SPIFFE IDs of the workloads behind a service (every port),
    sorted; the client verifies the server's certificate against them. Only workloads with a sidecar count
    (the others never present a certificate), so scaling a service without sidecars pushes no clusters."""
    seen: set[str] = set()
    for p in svc.ports:
        for e in snapshot.endpoints.get((svc.hostname, p.port), ()):
            if e.workload and endpoint_tls_mode(e) == TLS_MODE_ISTIO:
                seen.add(spiffe_id(snapshot.mesh.trust_domain, _ns(e, svc), e.service_account))
    return sorted(seen)


def _ns(e: Endpoint, svc: Service) -> str:
    """The namespace of an endpoint's workload ("namespace/name"), else the service's."""
    ns, sep, _ = e.workload.partition("/")
    return ns if sep else svc.namespace


def sni_for(port: int, subset: str, host: str) -> str:
    """Istio's BuildDNSSrvSubsetKey (outbound): the SNI of ISTIO_MUTUAL clusters, `outbound_.9080_.v1_.host`."""
    return f"outbound_.{port}_.{subset}_.{host}"


def _san_matchers(vc: common_pb2.CertificateValidationContext, sans: Iterable[str]) -> None:
    for san in sans:
        kind = common_pb2.SubjectAltNameMatcher.URI if "://" in san else common_pb2.SubjectAltNameMatcher.DNS
        vc.match_typed_subject_alt_names.add(san_type=kind).matcher.exact = san


def _mesh_certificates(common: common_pb2.CommonTlsContext, sans: Iterable[str]) -> None:
    """Istio's ApplyToCommonTLSContext: the workload certificate and the trust bundle over SDS, peer SANs checked."""
    common.tls_certificate_sds_secret_configs.append(sds_secret(DEFAULT_SECRET))
    cvc = common.combined_validation_context
    cvc.default_validation_context.SetInParent()
    _san_matchers(cvc.default_validation_context, sans)
    cvc.validation_context_sds_secret_config.CopyFrom(sds_secret(ROOTCA_SECRET))


def istio_mutual_upstream(sans: Sequence[str], sni: str, http2: bool, mx: bool = True) -> tls_pb2.UpstreamTlsContext:
    """The client side of Istio mTLS (cluster_tls.go, ISTIO_MUTUAL): TLS 1.2-1.3, mesh certificate, the
    server's SPIFFE IDs verified when known, Istio's in-mesh ALPN (`istio-peer-exchange` first unless metadata
    exchange is off, `mx`)."""
    ctx = tls_pb2.UpstreamTlsContext(sni=sni)
    common = ctx.common_tls_context
    common.tls_params.CopyFrom(TlsParams(tls_minimum_protocol_version=TlsParams.TLSv1_2,
                                         tls_maximum_protocol_version=TlsParams.TLSv1_3))
    _mesh_certificates(common, sans)
    if mx:
        common.alpn_protocols.extend(ALPN_IN_MESH_H2 if http2 else ALPN_IN_MESH)
    else:
        common.alpn_protocols.extend(ALPN_IN_MESH_H2_NO_MX if http2 else ALPN_IN_MESH_NO_MX)
    return ctx


def istio_mutual_downstream(http: bool, mtls: MeshMTLS = MeshMTLS(), mx: bool = True) -> tls_pb2.DownstreamTlsContext:
    """The server side of Istio mTLS (authn/utils BuildInboundTLS): client certificate required and verified
    against ROOTCA, TLS 1.2 minimum (the mesh config's `meshMTLS.minProtocolVersion`: TLSV1_3 raises it) to 1.3,
    Istio's cipher suites (`meshMTLS.cipherSuites` replace them)."""
    ctx = tls_pb2.DownstreamTlsContext(require_client_certificate=wrappers_pb2.BoolValue(value=True))
    common = ctx.common_tls_context
    common.alpn_protocols.extend(ALPN_HTTP if http else ALPN_DOWNSTREAM_WITH_MXC if mx else ALPN_DOWNSTREAM)
    minimum = TlsParams.TLSv1_3 if mtls.min_protocol_version == "TLSV1_3" else TlsParams.TLSv1_2
    common.tls_params.CopyFrom(TlsParams(cipher_suites=mtls.cipher_suites or SUPPORTED_CIPHERS,
                                         tls_minimum_protocol_version=minimum,
                                         tls_maximum_protocol_version=TlsParams.TLSv1_3))
    _mesh_certificates(common, ())
    return ctx


def transport_socket(ctx: tls_pb2.UpstreamTlsContext | tls_pb2.DownstreamTlsContext) -> base_pb2.TransportSocket:
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=pack(ctx))


def raw_buffer() -> base_pb2.TransportSocket:
    return base_pb2.TransportSocket(name=RAW_BUFFER_SOCKET, typed_config=pack(raw_buffer_pb2.RawBuffer()))


def _origination(tls: ClientTLSSettings, host: str, defaults: TLSDefaults) -> tls_pb2.UpstreamTlsContext:
    """The part every DestinationRule SIMPLE/MUTUAL context shares: SNI (the rule's, else a host without
    wildcards), TLS 1.2 to 1.3, and the mesh config's `tlsDefaults` ECDH curves and cipher suites (Istio:
    "Configuration of TLS for all traffic except for ISTIO_MUTUAL mode")."""
    ctx = tls_pb2.UpstreamTlsContext()
    sni = tls.sni or ("" if "*" in host else host)
    if sni:
        ctx.sni = sni
    ctx.common_tls_context.tls_params.CopyFrom(TlsParams(tls_minimum_protocol_version=TlsParams.TLSv1_2,
                                                         tls_maximum_protocol_version=TlsParams.TLSv1_3,
                                                         ecdh_curves=defaults.ecdh_curves,
                                                         cipher_suites=defaults.cipher_suites))
    return ctx


def file_upstream(tls: ClientTLSSettings, host: str, http2: bool,
                  defaults: TLSDefaults = TLSDefaults()) -> tls_pb2.UpstreamTlsContext | None:
    """DestinationRule SIMPLE/MUTUAL: TLS origination with the files named in the rule (constructUpstreamTLS).
    None for MUTUAL without a client certificate and key (Istio refuses to build it)."""
    if tls.mode == "MUTUAL" and not (tls.client_certificate and tls.private_key):
        return None
    ctx = _origination(tls, host, defaults)
    common = ctx.common_tls_context
    if not tls.insecure_skip_verify:
        vc = common.validation_context
        # Istio verifies against the OS trust store when no caCertificates are given
        vc.trusted_ca.filename = tls.ca_certificates or SYSTEM_CA_BUNDLE
        _san_matchers(vc, tls.subject_alt_names or ())
        if tls.ca_crl:  # Istio's buildUpstreamTLSContext: the CRL file checks the server's certificate
            vc.crl.filename = tls.ca_crl
    if tls.mode == "MUTUAL":
        cert = common.tls_certificates.add()
        cert.certificate_chain.filename = tls.client_certificate or ""
        cert.private_key.filename = tls.private_key or ""
    if http2:
        common.alpn_protocols.extend(ALPN_H2_ONLY)
    return ctx


CREDENTIAL_PREFIX = "kubernetes://"  # Istio's credentials.KubernetesSecretTypeURI
CREDENTIAL_CA_SUFFIX = "-cacert"  # Istio's SdsCaSuffix


def upstream_credential_names(tls: ClientTLSSettings | None) -> list[str]:
    """The SDS names a DestinationRule's client `credentialName` makes a proxy ask for: `kubernetes://<name>` (the
    client certificate, MUTUAL) and `kubernetes://<name>-cacert` (the CA, unless insecureSkipVerify)."""
    if tls is None or not tls.credential_name or tls.mode not in ("SIMPLE", "MUTUAL"):
        return []
    if "://" in tls.credential_name:  # a BackendTLSPolicy's `configmap://<ns>/<name>` (or `invalid://`): a CA only
        # (MUTUAL: the Gateway API Gateway's backendTLS client certificate beside it, gatewayapi/backend_client.py)
        own = [tls.client_credential_name] if tls.mode == "MUTUAL" and tls.client_credential_name else []
        return own + ([] if tls.insecure_skip_verify else [tls.credential_name + CREDENTIAL_CA_SUFFIX])
    out = [CREDENTIAL_PREFIX + tls.credential_name] if tls.mode == "MUTUAL" else []
    if not tls.insecure_skip_verify:
        out.append(CREDENTIAL_PREFIX + tls.credential_name + CREDENTIAL_CA_SUFFIX)
    return out


def credential_upstream(tls: ClientTLSSettings, host: str, http2: bool,
                        defaults: TLSDefaults = TLSDefaults()) -> tls_pb2.UpstreamTlsContext:
    """DestinationRule SIMPLE/MUTUAL with `credentialName`: Istio's ApplyCustomSDSToClientCommonTLSContext, the
    client certificate (MUTUAL) and the CA (combined validation context, the rule's SANs) over SDS from the
    control plane (`kubernetes://<name>`, `kubernetes://<name>-cacert`), as the gateway's server credentials."""
    ctx = _origination(tls, host, defaults)
    common = ctx.common_tls_context
    for name in upstream_credential_names(tls):
        secret = secret_pb2.SdsSecretConfig(name=name, sds_config=ads())
        if name.endswith(CREDENTIAL_CA_SUFFIX):
            combined = common.combined_validation_context
            combined.default_validation_context.SetInParent()  # required by Envoy's proto, even when empty
            _san_matchers(combined.default_validation_context, tls.subject_alt_names or ())
            combined.validation_context_sds_secret_config.CopyFrom(secret)
        else:
            common.tls_certificate_sds_secret_configs.append(secret)
    if http2:
        common.alpn_protocols.extend(ALPN_H2_ONLY)
    return ctx


def apply_upstream_tls(
    c: cluster_pb2.Cluster, snapshot: MeshSnapshot, svc: Service, port: int, subset: str,
    tls: ClientTLSSettings | None, *, client_has_identity: bool, service_mode: str | None, http2: bool,
    credentials: bool = False,
) -> None:
    """Istio's buildUpstreamTLSSettings + applyUpstreamTLSSettings for one outbound cluster.

    A DestinationRule `tls` decides when present: DISABLE plaintext, SIMPLE/MUTUAL file-based TLS origination
    (with `credentialName`: over SDS where `credentials` is set, i.e. at gateways; at a sidecar no TLS, as Istio's
    buildUpstreamClusterTLSContext for rules without a workloadSelector),
    ISTIO_MUTUAL mesh mTLS to every endpoint. Without one, auto mTLS (mesh config enableAutoMtls, on by default)
    sends mTLS to the endpoints labelled tlsMode istio and plaintext to the others (transport_socket_matches),
    unless the service is mesh-external or its namespace/mesh PeerAuthentication is DISABLE.
    """
    if tls is not None and tls.mode in ("SIMPLE", "MUTUAL"):
        if tls.credential_name:
            # Istio's cluster_tls.go: a ConfigMap CA (a BackendTLSPolicy's `configmap://`) is no privileged
            # credential, so sidecars use it whatever the rule's selector
            if credentials or tls.credential_name.startswith("configmap://"):
                c.transport_socket.CopyFrom(transport_socket(
                    credential_upstream(tls, svc.hostname, http2, snapshot.mesh_config.tls_defaults)))
            return
        ctx = file_upstream(tls, svc.hostname, http2, snapshot.mesh_config.tls_defaults)
        if ctx is not None:
            c.transport_socket.CopyFrom(transport_socket(ctx))
        return
    if tls is not None and tls.mode == "ISTIO_MUTUAL":
        if not client_has_identity:
            return  # the proxy has no certificate to present (no SDS): nothing it could send
        sans = list(tls.subject_alt_names) if tls.subject_alt_names is not None else service_accounts(snapshot, svc)
        ctx_m = istio_mutual_upstream(sans, tls.sni or sni_for(port, subset, svc.hostname), http2,
                                      snapshot.mesh.metadata_exchange)
        c.transport_socket.CopyFrom(transport_socket(ctx_m))
        return
    if tls is not None and tls.mode == "DISABLE":
        return
    if (not client_has_identity or svc.mesh_external or not auto_mtls_enabled(snapshot)
            or service_mode == DISABLE):
        return
    ctx_a = istio_mutual_upstream(service_accounts(snapshot, svc), sni_for(port, subset, svc.hostname), http2,
                                  snapshot.mesh.metadata_exchange)
    match = struct_pb2.Struct()
    match.update({TLS_MODE_KEY: TLS_MODE_ISTIO})
    c.transport_socket_matches.add(name=f"{TLS_MODE_KEY}-{TLS_MODE_ISTIO}", match=match,
                                   transport_socket=transport_socket(ctx_a))
    c.transport_socket_matches.add(name=f"{TLS_MODE_KEY}-{TLS_MODE_DISABLED}", match=struct_pb2.Struct(),
                                   transport_socket=raw_buffer())


def endpoint_metadata(e: Endpoint) -> base_pb2.Metadata | None:
    """The LbEndpoint metadata auto mTLS matches on: `envoy.transport_socket_match: {tlsMode: istio}` for an
    endpoint whose workload has a sidecar (Istio's AppendLbEndpointMetadata), None otherwise."""
    mode = e.labels.get(TLS_MODE_LABEL, "")
    if not mode or mode == TLS_MODE_DISABLED:
        return None
    md = base_pb2.Metadata()
    md.filter_metadata[TRANSPORT_SOCKET_MATCH].update({TLS_MODE_KEY: mode})
    return md


# (transport protocol, ALPN values, terminate mTLS) per filter chain, as Istio's FilterChainMatchOptions.
ChainSpec = tuple[str, tuple[str, ...], bool]
_PERMISSIVE_HTTP: tuple[ChainSpec, ...] = (
    (TLS_TRANSPORT, ALL_ISTIO_MTLS_ALPNS, True),
    (RAW_BUFFER_TRANSPORT, (), False),
)
_PERMISSIVE_TCP: tuple[ChainSpec, ...] = (*_PERMISSIVE_HTTP, (TLS_TRANSPORT, (), False))  # + the app's own TLS
_STRICT: tuple[ChainSpec, ...] = ((TLS_TRANSPORT, (), True),)


def inbound_chains(mode: str, http: bool, has_identity: bool, network_filter: lc.Filter,
                   mtls: MeshMTLS = MeshMTLS(), mx: bool = True) -> list[lc.FilterChain]:
    """The filter chains of one inbound port under a PeerAuthentication mode (Istio's getFilterChainMatchOptions).

    PERMISSIVE: mTLS (tls + Istio ALPN) and plaintext on the same port (TCP ports also pass the app's own TLS);
    STRICT: only TLS, terminated with a client certificate required, so a plaintext connection matches no chain and
    Envoy closes it; DISABLE: plaintext only (one chain without a match: whatever arrives is the app's).
    A proxy without a mesh identity serves plaintext, and under STRICT refuses everything.
    """
    if not has_identity or mode == DISABLE:
        if has_identity or mode != STRICT:
            return [lc.FilterChain(filters=[network_filter])]
        blackhole = tcp_proxy_pb2.TcpProxy(stat_prefix=names.BLACKHOLE_CLUSTER, cluster=names.BLACKHOLE_CLUSTER)
        refuse = lc.Filter(name="envoy.filters.network.tcp_proxy", typed_config=pack(blackhole))
        return [lc.FilterChain(filter_chain_match=lc.FilterChainMatch(transport_protocol=TLS_TRANSPORT),
                               filters=[refuse])]
    specs = _STRICT if mode == STRICT else _PERMISSIVE_HTTP if http else _PERMISSIVE_TCP
    out = []
    for transport, alpns, terminate in specs:
        fc = lc.FilterChain(filter_chain_match=lc.FilterChainMatch(transport_protocol=transport,
                                                                   application_protocols=alpns),
                            filters=[network_filter])
        if terminate:
            fc.transport_socket.CopyFrom(transport_socket(istio_mutual_downstream(http, mtls, mx)))
        out.append(fc)
    return out


def needs_tls_inspector(chains: Iterable[lc.FilterChain]) -> bool:
    return any(fc.filter_chain_match.transport_protocol for fc in chains)


def tls_inspector() -> lc.ListenerFilter:
    return lc.ListenerFilter(name=TLS_INSPECTOR, typed_config=pack(tls_inspector_pb2.TlsInspector()))

