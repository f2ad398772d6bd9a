"""Istio's MeshConfig (the subset sailmesh reads), typed: from a file and from the ConfigMap `istio`.

Where it comes from, as in Istio: defaults <- the control plane's mesh config file (`sailmesh controlplane
--mesh-config FILE`, Istio's `--meshConfig`) <- the `mesh` key of the ConfigMap `istio` in the root namespace
(`istio-system`), each document applied over the one before as Istio's mesh.ApplyMeshConfig applies it (`merge`: a
field given replaces the previous one whole, nested messages included, except `defaultConfig`, merged field by field
with its own nested messages replaced, `proxyMetadata` merged key by key). It reaches the generators as
`MeshSnapshot.mesh_config`; a change of it pushes every type to every proxy, as Istio's mesh-config change does.

Keys Istio defines that are not modelled here are kept in `MeshConfig.unmodelled` (dotted paths), so that whoever
shows the mesh config can say "accepted, not enforced" for them instead of dropping them silently.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import yaml

from sailmesh.api.models.base import Duration, Model, build
from sailmesh.api.tlsnames import ECDH_CURVES, valid_cipher_suite
from sailmesh.errors import ModelError, ParseError

MESH_CONFIGMAP = "istio"  # Istio's mesh ConfigMap: name `istio` in the root namespace, key `mesh`
MESH_KEY = "mesh"


class FileAccessLogFormat(Model, frozen=True):
    """envoyFileAccessLog.logFormat: text, or JSON labels (label -> Envoy command operator)."""

    text: str | None = None
    labels: Mapping[str, str] | None = None


class EnvoyFileAccessLog(Model, frozen=True):
    path: str = ""
    log_format: FileAccessLogFormat | None = None


class EnvoyOtelAls(Model, frozen=True):
    service: str = ""
    port: int = 0
    log_name: str = ""
    log_format: FileAccessLogFormat | None = None


class EnvoyAls(Model, frozen=True):
    """envoyHttpAls / envoyTcpAls: Envoy's gRPC access-log service."""

    service: str = ""
    port: int = 0
    log_name: str = ""
    filter_state_objects_to_log: tuple[str, ...] = ()
    additional_request_headers_to_log: tuple[str, ...] = ()
    additional_response_headers_to_log: tuple[str, ...] = ()
    additional_response_trailers_to_log: tuple[str, ...] = ()


class BodyInCheck(Model, frozen=True):
    max_request_bytes: int = 0
    allow_partial_message: bool = False
    pack_as_bytes: bool = False


class EnvoyExtAuthzHttp(Model, frozen=True):
    """An ext_authz server over HTTP (AuthorizationPolicy CUSTOM)."""

    service: str = ""
    port: int = 0
    timeout: Duration | None = None
    path_prefix: str = ""
    fail_open: bool = False
    status_on_error: str = ""
    headers_to_upstream_on_allow: tuple[str, ...] = ()
    headers_to_downstream_on_deny: tuple[str, ...] = ()
    headers_to_downstream_on_allow: tuple[str, ...] = ()
    include_request_headers_in_check: tuple[str, ...] = ()
    include_additional_headers_in_check: Mapping[str, str] | None = None
    include_request_body_in_check: BodyInCheck | None = None


class EnvoyExtAuthzGrpc(Model, frozen=True):
    """An ext_authz server over gRPC (AuthorizationPolicy CUSTOM)."""

    service: str = ""
    port: int = 0
    timeout: Duration | None = None
    fail_open: bool = False
    status_on_error: str = ""
    include_request_body_in_check: BodyInCheck | None = None


class EnvoyRateLimit(Model, frozen=True):
    """A rate-limit service speaking Envoy's RLS protocol (sailmesh's provider kind, no Istio counterpart): RateLimit
    resources naming it count their rules there, one count for every replica (docs/ratelimit.md)."""

    service: str = ""
    port: int = 0
    domain: str = "sailmesh"
    timeout: Duration | None = None
    fail_open: bool = False


class Zipkin(Model, frozen=True):
    service: str = ""
    port: int = 0
    max_tag_length: int = 0
    enable64bit_trace_id: bool = msgspec.field(default=False, name="enable64bitTraceId")
    trace_context_option: str = ""  # USE_B3 (default) | USE_B3_WITH_W3C_PROPAGATION


class OtelHttp(Model, frozen=True):
    path: str = ""
    timeout: Duration | None = None
    headers: tuple[Mapping[str, Any], ...] = ()


class OtelGrpc(Model, frozen=True):
    timeout: Duration | None = None
    initial_metadata: tuple[Mapping[str, Any], ...] = ()


class OpenTelemetry(Model, frozen=True):
    service: str = ""
    port: int = 0
    max_tag_length: int = 0
    http: OtelHttp | None = None
    grpc: OtelGrpc | None = None


class Prometheus(Model, frozen=True):
    """The `prometheus` metrics provider (no settings)."""


# Provider kinds Istio defines that sailmesh accepts but does not act on (reported, not dropped).
UNSUPPORTED_PROVIDER_KINDS = ("skywalking", "datadog", "stackdriver", "lightstep", "sds", "envoyExtAuthzHttpRef")


class ExtensionProvider(Model, frozen=True):
    """One entry of `extensionProviders`: a name and exactly one provider kind."""

    name: str = ""
    envoy_ext_authz_http: EnvoyExtAuthzHttp | None = None
    envoy_ext_authz_grpc: EnvoyExtAuthzGrpc | None = None
    envoy_rate_limit: EnvoyRateLimit | None = None
    zipkin: Zipkin | None = None
    opentelemetry: OpenTelemetry | None = None
    envoy_file_access_log: EnvoyFileAccessLog | None = None
    envoy_otel_als: EnvoyOtelAls | None = None
    envoy_http_als: EnvoyAls | None = None
    envoy_tcp_als: EnvoyAls | None = None
    prometheus: Prometheus | None = None

    @property
    def kind(self) -> str:
        """The provider kind as Istio spells it (`envoyExtAuthzHttp`, `zipkin`, ...); "" when none is set."""
        for f in msgspec.structs.fields(self):
            if f.name != "name" and getattr(self, f.name) is not None:
                return f.encode_name
        return ""


class DefaultProviders(Model, frozen=True):
    metrics: tuple[str, ...] = ()
    tracing: tuple[str, ...] = ()
    access_logging: tuple[str, ...] = ()


class ZipkinAddress(Model, frozen=True):
    address: str = ""


class ProxyTracing(Model, frozen=True):
    """defaultConfig.tracing (the legacy tracing settings)."""

    sampling: float | None = None
    max_path_tag_length: int | None = None
    custom_tags: Mapping[str, Any] | None = None
    zipkin: ZipkinAddress | None = None


class HeaderSwitch(Model, frozen=True):
    """proxyHeaders' requestId / attemptCount / envoyDebugHeaders: `disabled` (unset: the header is on)."""

    disabled: bool | None = None


class HeaderOptIn(Model, frozen=True):
    """proxyHeaders.xForwardedPort: `enabled` (unset: off)."""

    enabled: bool | None = None


class ServerHeader(Model, frozen=True):
    """proxyHeaders.server: `disabled` leaves the upstream's `server` header as it is; `value` replaces Istio's."""

    disabled: bool | None = None
    value: str = ""


class ClientCertDetails(Model, frozen=True):
    """proxyHeaders.setCurrentClientCertDetails: which client-certificate fields XFCC carries (unset: Istio's
    defaults, subject / URI / DNS on, cert / chain off)."""

    subject: bool | None = None
    cert: bool | None = None
    chain: bool | None = None
    dns: bool | None = None
    uri: bool | None = None


# Istio's ForwardClientCertDetails enum (mesh/v1alpha1/proxy.proto); UNDEFINED keeps APPEND_FORWARD
FORWARD_CLIENT_CERT = ("UNDEFINED", "SANITIZE", "FORWARD_ONLY", "APPEND_FORWARD", "SANITIZE_SET",
                       "ALWAYS_FORWARD_ONLY")


class ProxyHeaders(Model, frozen=True):
    """defaultConfig.proxyHeaders, the fields sailmesh acts on (generate/proxy_headers.py); the others
    (`metadataExchangeHeaders`, `preserveHttp1HeaderCase`, `xForwardedHost`) stay unmodelled, so they are reported
    "accepted, not enforced"."""

    forwarded_client_cert: str | int | None = None
    set_current_client_cert_details: ClientCertDetails | None = None
    request_id: HeaderSwitch | None = None
    server: ServerHeader | None = None
    attempt_count: HeaderSwitch | None = None
    envoy_debug_headers: HeaderSwitch | None = None
    x_forwarded_port: HeaderOptIn | None = None


# No tracer by default: Istio 1.22 removed DefaultProxyConfig's Zipkin tracer at zipkin.istio-system:9411 (upgrade
# notes: "Default tracing to zipkin.istio-system.svc removed"; `--set compatibilityVersion=1.21` or an explicit
# `defaultConfig.tracing.zipkin.address` brings it back). A mesh config's `defaultConfig.tracing` is taken whole, also
# over an earlier layer's (merge_proxy_config).
class ProxyConfig(Model, frozen=True):
    """defaultConfig: the proxies' defaults."""

    tracing: ProxyTracing | None = None
    proxy_metadata: Mapping[str, str] | None = None
    # Envoy worker threads (0: one per core), the lowest level of Istio's EffectiveProxyConfig (api/proxyconfig.py):
    # given to a proxy as it starts by the embedded platform and the injector
    concurrency: int | None = None
    drain_duration: Duration | None = None
    termination_drain_duration: Duration | None = None
    proxy_headers: ProxyHeaders | None = None


class OutboundTrafficPolicy(Model, frozen=True):
    mode: str = "ALLOW_ANY"  # or REGISTRY_ONLY


class TLSConfig(Model, frozen=True):
    """meshMTLS / tlsDefaults (Istio's MeshConfig.TLSConfig), only the keys Istio acts on for each: `meshMTLS`
    (ISTIO_MUTUAL, the server side) takes minProtocolVersion and cipherSuites ("Mesh mTLS does not respect ECDH
    curves"); `tlsDefaults` (every other TLS) takes ecdhCurves and cipherSuites only. A key Istio ignores is not
    declared, so it is reported with the other unmodelled keys."""

    cipher_suites: tuple[str, ...] = ()


class MeshMTLS(TLSConfig, frozen=True):
    min_protocol_version: str = "TLS_AUTO"  # TLS_AUTO (TLS 1.2) | TLSV1_2 | TLSV1_3


class TLSDefaults(TLSConfig, frozen=True):
    ecdh_curves: tuple[str, ...] = ()


TLS_PROTOCOLS = ("TLS_AUTO", "TLSV1_2", "TLSV1_3")


class MeshConfig(Model, frozen=True):
    """The mesh-wide settings, Istio's defaults where a field is unset (istio.io MeshConfig reference)."""

    trust_domain: str = "cluster.local"
    trust_domain_aliases: tuple[str, ...] = ()
    root_namespace: str = "istio-system"
    access_log_file: str = ""  # empty: no access log (Istio's default outside the demo profile)
    access_log_encoding: str = "TEXT"  # TEXT | JSON
    access_log_format: str = ""
    enable_tracing: bool = True
    enable_auto_mtls: bool = True
    connect_timeout: Duration | None = None
    outbound_traffic_policy: OutboundTrafficPolicy = OutboundTrafficPolicy()
    # Istio's mesh-wide LocalityLoadBalancerSetting (unset: enabled, default failover); read by generate/locality.py
    locality_lb_setting: Mapping[str, Any] | None = None
    # Istio's mesh-wide ZoneAwareLoadBalancerSetting (unset: off; set, it wins over localityLbSetting); locality.py
    zone_aware_lb_setting: Mapping[str, Any] | None = None
    default_config: ProxyConfig = ProxyConfig()
    extension_providers: tuple[ExtensionProvider, ...] = ()
    default_providers: DefaultProviders = DefaultProviders()
    mesh_mtls: MeshMTLS = msgspec.field(default=MeshMTLS(), name="meshMTLS")
    tls_defaults: TLSDefaults = TLSDefaults()
    # dotted paths of keys given but not modelled here ("accepted, not enforced"); not read from YAML
    unmodelled: tuple[str, ...] = msgspec.field(default=(), name="__unmodelled")

    def provider(self, name: str) -> ExtensionProvider | None:
        """The extension provider called `name` (the first, as Istio takes), None if there is none."""
        return next((p for p in self.extension_providers if p.name == name), None)


DEFAULT_MESH_CONFIG = MeshConfig()


def _unmodelled(raw: Any, cls: Any, path: str = "") -> list[str]:
    """Dotted paths of keys in `raw` that `cls` (a Model) does not declare, descending into declared models."""
    if not isinstance(raw, Mapping) or not (isinstance(cls, type) and issubclass(cls, Model)):
        return []
    fields = {f.encode_name: f for f in msgspec.structs.fields(cls)}
    out: list[str] = []
    for key, value in raw.items():
        here = f"{path}.{key}" if path else str(key)
        f = fields.get(key)
        if f is None:
            out.append(here)
            continue
        for tp in _model_types(f.type):
            if isinstance(value, list):
                for i, item in enumerate(value):
                    out.extend(_unmodelled(item, tp, f"{here}[{i}]"))
            else:
                out.extend(_unmodelled(value, tp, here))
    return out


def _model_types(tp: Any) -> list[type]:
    """The Model classes inside a field's type (`X | None`, `tuple[X, ...]`)."""
    if isinstance(tp, type) and issubclass(tp, Model):
        return [tp]
    return [t for arg in getattr(tp, "__args__", ()) for t in _model_types(arg)]


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """One mesh config document applied over the one before it, as Istio's mesh.ApplyMeshConfig ("all fields are
    overrides, except proxy config is a merge"). Its protomarshal.ApplyYAML is golang/protobuf's jsonpb, which
    unmarshals each field the YAML gives into a new value (decode.go: `m.NewField(fd)`, then `m.Set`): a field
    given replaces the previous one whole, a nested message (`localityLbSetting`, `meshMTLS`, ...) included, and a
    field given as null leaves it as it was. Then: `defaultConfig` merges (MergeProxyConfig, merge_proxy_config),
    `defaultProviders` per field (ApplyYAML over the previous ones), `extensionProviders` by name (one of a name
    already there takes its place, others are appended) and `trustDomainAliases` are the sorted union."""
    out = _apply(base, over, MESH_MERGES)
    before, given = base.get("trustDomainAliases") or [], out.get("trustDomainAliases") or []
    if (before or given) and isinstance(before, list) and isinstance(given, list) \
            and all(isinstance(x, str) for x in (*before, *given)):
        out["trustDomainAliases"] = sorted({*before, *given})
    return out


def merge_proxy_config(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Istio's mesh.MergeProxyConfig: `over`'s fields replace `base`'s whole (ApplyYAML: a nested message such as
    `tracing` is replaced, not merged key by key), except `proxyMetadata`, merged key by key (mergeMap), and
    `proxyHeaders`, whose fields `over` leaves empty keep `base`'s (correctProxyHeaders)."""
    return _apply(base, over, PROXY_CONFIG_MERGES)


Merge = Callable[[Any, Any], Any]


def _apply(base: Mapping[str, Any], over: Mapping[str, Any], merges: Mapping[str, Merge]) -> dict[str, Any]:
    """`over`'s fields replace `base`'s (a null one is skipped, as jsonpb skips it); a field named in `merges` is
    combined with the earlier value by its function instead when both are of the kind it merges."""
    out = dict(base)
    for key, value in over.items():
        prev = out.get(key)
        if value is None:
            continue
        how = merges.get(key)
        if how is not None and prev is not None:
            value = how(prev, value)
        out[key] = value
    return out


def _maps(how: Callable[[Mapping[str, Any], Mapping[str, Any]], Any]) -> Merge:
    """`how` for two maps; anything else: the new value (validation then names what is wrong)."""
    return lambda prev, new: how(prev, new) if isinstance(prev, Mapping) and isinstance(new, Mapping) else new


def _proxy_headers(prev: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """correctProxyHeaders: each of the new proxyHeaders' fields unless empty (a zero forwardedClientCert)."""
    return {**prev, **{k: v for k, v in new.items()
                       if v is not None and not (k == "forwardedClientCert" and v in ("UNDEFINED", 0))}}


def _providers_by_name(prev: Any, new: Any) -> Any:
    """ApplyMeshConfig's extension providers: each new one replaces the provider of the same name (the first, in
    its place), or is appended."""
    if not (isinstance(prev, list) and isinstance(new, list)):
        return new
    out = list(prev)
    for p in new:
        name = p.get("name") if isinstance(p, Mapping) else None
        at = next((i for i, e in enumerate(out) if isinstance(e, Mapping) and name is not None
                   and e.get("name") == name), None)
        if at is None:
            out.append(p)
        else:
            out[at] = p
    return out


PROXY_CONFIG_MERGES: Mapping[str, Merge] = {
    "proxyMetadata": _maps(lambda prev, new: {**prev, **new}),  # mergeMap
    "proxyHeaders": _maps(_proxy_headers),
}
MESH_MERGES: Mapping[str, Merge] = {
    "defaultConfig": _maps(merge_proxy_config),
    "defaultProviders": _maps(lambda prev, new: _apply(prev, new, {})),  # ApplyYAML over the previous ones
    "extensionProviders": _providers_by_name,
}


def from_mapping(raw: Mapping[str, Any], source: str = "mesh config") -> MeshConfig:
    """A MeshConfig from its camelCase mapping; ModelError names the source and the field."""
    if not isinstance(raw, Mapping):
        raise ModelError(source, "", f"mesh config must be a map, got {type(raw).__name__}")
    model = build(MeshConfig, {k: v for k, v in raw.items() if k != "__unmodelled"}, source)
    providers = [p for p in model.extension_providers if p.kind == ""]
    if providers:
        raise ModelError(source, "extensionProviders", f"provider {providers[0].name!r} sets no provider kind "
                         f"(or only one sailmesh does not support: {', '.join(UNSUPPORTED_PROVIDER_KINDS)})")
    if (model.default_config.concurrency or 0) < 0:
        raise ModelError(source, "defaultConfig.concurrency",
                         f"must be 0 (one worker per core) or more, got {model.default_config.concurrency}")
    fcc = model.default_config.proxy_headers.forwarded_client_cert if model.default_config.proxy_headers else None
    if fcc is not None and not (fcc in FORWARD_CLIENT_CERT or (isinstance(fcc, int) and 0 <= fcc < 6)):
        raise ModelError(source, "defaultConfig.proxyHeaders.forwardedClientCert",
                         f"must be one of {', '.join(FORWARD_CLIENT_CERT)}, got {fcc!r}")
    if model.access_log_encoding not in ("TEXT", "JSON"):
        raise ModelError(source, "accessLogEncoding", f"must be TEXT or JSON, got {model.access_log_encoding!r}")
    if model.outbound_traffic_policy.mode not in ("ALLOW_ANY", "REGISTRY_ONLY"):
        raise ModelError(source, "outboundTrafficPolicy.mode",
                         f"must be ALLOW_ANY or REGISTRY_ONLY, got {model.outbound_traffic_policy.mode!r}")
    if model.mesh_mtls.min_protocol_version not in TLS_PROTOCOLS:
        raise ModelError(source, "meshMTLS.minProtocolVersion",
                         f"must be one of {', '.join(TLS_PROTOCOLS)}, got {model.mesh_mtls.min_protocol_version!r}")
    for where, tlsc in (("meshMTLS", model.mesh_mtls), ("tlsDefaults", model.tls_defaults)):
        bad = [c for c in tlsc.cipher_suites if not valid_cipher_suite(c)]
        if bad:
            raise ModelError(source, f"{where}.cipherSuites", f"unknown cipher suite(s) {', '.join(bad)}")
    bad = [c for c in model.tls_defaults.ecdh_curves if c not in ECDH_CURVES]
    if bad:
        raise ModelError(source, "tlsDefaults.ecdhCurves",
                         f"unknown ECDH curve(s) {', '.join(bad)} (known: {', '.join(sorted(ECDH_CURVES))})")
    extra = tuple(_unmodelled(raw, MeshConfig))
    return msgspec.structs.replace(model, unmodelled=extra) if extra else model


def parse_yaml(text: str, source: str = "mesh config") -> dict[str, Any]:
    """The mapping of a mesh config YAML document (empty text: no settings)."""
    try:
        doc = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as e:
        raise ParseError(f"{source}: not valid YAML: {e}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ModelError(source, "", f"mesh config must be a map, got {type(doc).__name__}")
    return doc


def load_file(path: str) -> dict[str, Any]:
    """The mapping of a mesh config file (checked: a bad file raises naming it and the field)."""
    with open(path, encoding="utf-8") as f:
        raw = parse_yaml(f.read(), path)
    from_mapping(raw, path)
    return raw


def effective(base: Mapping[str, Any], configmaps: tuple[Any, ...], root_namespace: str) -> MeshConfig:
    """The mesh config from the file's mapping overlaid by the ConfigMap `istio` in the root namespace, if any.

    `configmaps` are the store's ConfigMap resources (anything with .name, .namespace and .raw). A ConfigMap
    whose mesh does not parse is refused when applied (api.rules), so here it can only be valid.
    """
    raw: Mapping[str, Any] = base
    for cm in configmaps:
        if cm.name == MESH_CONFIGMAP and cm.namespace == root_namespace:
            data = (cm.raw.get("data") or {}) if isinstance(cm.raw, Mapping) else {}
            text = data.get(MESH_KEY) if isinstance(data, Mapping) else None
            if isinstance(text, str):
                raw = merge(base, parse_yaml(text, f"ConfigMap {root_namespace}/{MESH_CONFIGMAP}"))
            break
    return from_mapping(raw) if raw else DEFAULT_MESH_CONFIG
