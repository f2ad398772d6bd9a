"""AuthorizationPolicy CUSTOM: Envoy ext_authz to the mesh config's `envoyExtAuthzHttp` / `envoyExtAuthzGrpc` providers.

Istio's pilot/pkg/security/authz/builder/extauthz.go + builder.go (istio/istio 86c9f01f), mirrored so the output
equals Istio's golden files. Only requests that match a CUSTOM policy go to the authorizer: per provider, an RBAC
filter evaluates the policies' rules as *shadow* rules (never enforced) and records the name of the matching rule in
its dynamic metadata (`istio_ext_authz_shadow_effective_policy_id`); the ext_authz filter right after it runs only
when that name starts with `istio-ext-authz-<provider>` (`filter_enabled_metadata`). Istio's failure handling:
a provider that is missing or invalid, or several providers on one workload (Istio's
PILOT_ENABLE_MULTIPLE_CUSTOM_AUTHZ_PROVIDERS is off by default), turn the CUSTOM rules into DENY rules named
`...-deny-due-to-bad-CUSTOM-action`, so a broken CUSTOM policy fails closed. On TCP ports only gRPC providers
apply (Istio's network ext_authz); HTTP providers are skipped there, as in Istio.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from envoy.config.core.v3 import config_source_pb2, grpc_service_pb2, http_uri_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2 as http_ea
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac
from envoy.extensions.filters.network.ext_authz.v3 import ext_authz_pb2 as net_ea
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as net_rbac
from envoy.type.matcher.v3 import metadata_pb2, string_pb2, value_pb2
from envoy.type.v3 import http_status_pb2

from sailmesh.api.meshconfig import EnvoyExtAuthzGrpc, EnvoyExtAuthzHttp, MeshConfig
from sailmesh.generate import authz, names
from sailmesh.generate.common import duration, pack
from sailmesh.generate.filters.context import FilterContext
from sailmesh.generate.filters.rbac import NETWORK_RBAC_FILTER, RBAC_FILTER, network_filters_for
from sailmesh.snapshot.model import MeshSnapshot, ProxyView

EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"  # Istio's wellknown.HTTPExternalAuthorization
NETWORK_EXT_AUTHZ_FILTER = "envoy.filters.network.ext_authz"
SHADOW_PREFIX = "istio_ext_authz_"  # Istio's RBACExtAuthzShadowRulesStatPrefix
EFFECTIVE_POLICY_KEY = SHADOW_PREFIX + "shadow_effective_policy_id"
BAD_CUSTOM_SUFFIX = "-deny-due-to-bad-CUSTOM-action"
DEFAULT_TIMEOUT_S = 600.0  # Istio's timeoutOrDefault
V3 = config_source_pb2.ApiVersion.V3


@dataclass(frozen=True)
class Provider:
    """A resolved provider: its HTTP ext_authz config, its TCP one (gRPC providers only), or why it is unusable."""

    http: http_ea.ExtAuthz | None = None
    tcp: net_ea.ExtAuthz | None = None
    error: str = ""


def lookup_cluster(snapshot: MeshSnapshot, service: str, port: int) -> tuple[str, str]:
    """Istio's LookupCluster: `ns/host` or `host` -> (hostname, `outbound|port||host`); ValueError if unknown."""
    if not service:
        raise ValueError("service must not be empty")
    ns, sep, host = service.partition("/")
    if not sep:
        ns, host = "", service
    svc = snapshot.services.get(host)
    if svc is None or (ns and svc.namespace != ns):
        raise ValueError(f"could not find service {service} in Istio service registry")
    return svc.hostname, names.outbound_cluster(port, "", svc.hostname)


def status_on_error(value: str) -> http_status_pb2.HttpStatus | None:
    """Istio's parseStatusOnError: an HTTP status Envoy's StatusCode names, or None when unset."""
    if not value:
        return None
    if not value.lstrip("-").isdigit():
        raise ValueError(f"invalid statusOnError {value!r}")
    code = int(value)
    if code not in http_status_pb2.StatusCode.values() or code == 0:
        raise ValueError(f"unsupported statusOnError {value}")
    return http_status_pb2.HttpStatus(code=code)


def header_patterns(headers: Sequence[str]) -> string_pb2.ListStringMatcher | None:
    """Istio's generateHeaders: case-insensitive exact, `x*` prefix or `*x` suffix."""
    if not headers:
        return None
    out = string_pb2.ListStringMatcher()
    for h in headers:
        if h.startswith("*"):
            out.patterns.add(suffix=h[1:], ignore_case=True)
        elif h.endswith("*"):
            out.patterns.add(prefix=h[:-1], ignore_case=True)
        else:
            out.patterns.add(exact=h, ignore_case=True)
    return out


def enabled_metadata(filter_name: str, provider: str | None = None) -> metadata_pb2.MetadataMatcher:
    """Run ext_authz only when the RBAC shadow rules matched a CUSTOM rule (of this provider)."""
    pfx = authz.EXT_AUTHZ_PREFIX + (f"-{provider}" if provider is not None else "")
    return metadata_pb2.MetadataMatcher(
        filter=filter_name, path=[metadata_pb2.MetadataMatcher.PathSegment(key=EFFECTIVE_POLICY_KEY)],
        value=value_pb2.ValueMatcher(string_match=string_pb2.StringMatcher(prefix=pfx)))


def _timeout(cfg: EnvoyExtAuthzHttp | EnvoyExtAuthzGrpc) -> float:
    return cfg.timeout.seconds if cfg.timeout is not None else DEFAULT_TIMEOUT_S


def _body(cfg: EnvoyExtAuthzHttp | EnvoyExtAuthzGrpc) -> http_ea.BufferSettings | None:
    b = cfg.include_request_body_in_check
    if b is None:
        return None
    return http_ea.BufferSettings(max_request_bytes=b.max_request_bytes, allow_partial_message=b.allow_partial_message,
                                  pack_as_bytes=b.pack_as_bytes)


def _check_common(cfg: EnvoyExtAuthzHttp | EnvoyExtAuthzGrpc, snapshot: MeshSnapshot,
                  errors: list[str]) -> tuple[str, str, http_status_pb2.HttpStatus | None]:
    host = cluster = ""
    if not 1 <= cfg.port <= 65535:
        errors.append(f"port must be in the range [1, 65535], found: {cfg.port}")
    else:
        try:
            host, cluster = lookup_cluster(snapshot, cfg.service, cfg.port)
        except ValueError as e:
            errors.append(str(e))
    status = None
    try:
        status = status_on_error(cfg.status_on_error)
    except ValueError as e:
        errors.append(str(e))
    return host, cluster, status


def http_provider(snapshot: MeshSnapshot, cfg: EnvoyExtAuthzHttp) -> Provider:
    """Istio's buildExtAuthzHTTP + generateHTTPConfig."""
    errors: list[str] = []
    host, cluster, status = _check_common(cfg, snapshot, errors)
    if cfg.path_prefix and not cfg.path_prefix.startswith("/"):
        errors.append(f"pathPrefix must begin with `/`, found: {cfg.path_prefix!r}")
    for fname, values in (("IncludeRequestHeadersInCheck", cfg.include_request_headers_in_check),
                          ("HeadersToDownstreamOnDeny", cfg.headers_to_downstream_on_deny),
                          ("HeadersToDownstreamOnAllow", cfg.headers_to_downstream_on_allow),
                          ("HeadersToUpstreamOnAllow", cfg.headers_to_upstream_on_allow)):
        if "*" in values:
            errors.append(f'a single wildcard ("*") is not supported, change it to either prefix or suffix match: '
                          f"{fname}")
    if errors:
        return Provider(error="; ".join(errors))
    service = http_ea.HttpService(path_prefix=cfg.path_prefix, server_uri=http_uri_pb2.HttpUri(
        uri=f"http://{host}", cluster=cluster, timeout=duration(_timeout(cfg))))
    for k in sorted(cfg.include_additional_headers_in_check or {}):
        service.authorization_request.headers_to_add.add(
            key=k, value=(cfg.include_additional_headers_in_check or {})[k])
    if cfg.headers_to_upstream_on_allow or cfg.headers_to_downstream_on_deny or cfg.headers_to_downstream_on_allow:
        resp = service.authorization_response
        resp.SetInParent()
        for target, values in ((resp.allowed_upstream_headers, cfg.headers_to_upstream_on_allow),
                               (resp.allowed_client_headers, cfg.headers_to_downstream_on_deny),
                               (resp.allowed_client_headers_on_success, cfg.headers_to_downstream_on_allow)):
            m = header_patterns(values)
            if m is not None:
                target.CopyFrom(m)
    out = http_ea.ExtAuthz(failure_mode_allow=cfg.fail_open, transport_api_version=V3, http_service=service,
                           filter_enabled_metadata=enabled_metadata(RBAC_FILTER))
    allowed = header_patterns(cfg.include_request_headers_in_check)
    if allowed is not None:
        out.allowed_headers.CopyFrom(allowed)
    if status is not None:
        out.status_on_error.CopyFrom(status)
    if (body := _body(cfg)) is not None:
        out.with_request_body.CopyFrom(body)
    return Provider(http=out)


def grpc_provider(snapshot: MeshSnapshot, cfg: EnvoyExtAuthzGrpc) -> Provider:
    """Istio's buildExtAuthzGRPC + generateGRPCConfig: HTTP and TCP ext_authz to the same gRPC service."""
    errors: list[str] = []
    host, cluster, status = _check_common(cfg, snapshot, errors)
    if errors:
        return Provider(error="; ".join(errors))
    grpc = grpc_service_pb2.GrpcService(
        envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=cluster, authority=host),
        timeout=duration(_timeout(cfg)))
    http = http_ea.ExtAuthz(failure_mode_allow=cfg.fail_open, grpc_service=grpc, transport_api_version=V3,
                            filter_enabled_metadata=enabled_metadata(RBAC_FILTER))
    if status is not None:
        http.status_on_error.CopyFrom(status)
    if (body := _body(cfg)) is not None:
        http.with_request_body.CopyFrom(body)
    tcp = net_ea.ExtAuthz(stat_prefix=authz.TCP_STAT_PREFIX, failure_mode_allow=cfg.fail_open,
                          transport_api_version=V3, grpc_service=grpc,
                          filter_enabled_metadata=enabled_metadata(NETWORK_RBAC_FILTER))
    return Provider(http=http, tcp=tcp)


def _valid_name(name: str) -> str:
    """Istio's validateProviderName: a DNS-1123 label (it ends up in metadata keys and rule names)."""
    if not name:
        return "provider name cannot be empty"
    if len(name) > 63:
        return f"provider name too long (max 63 characters): {len(name)}"
    if any(not (c.islower() or c.isdigit() or c == "-") or not c.isascii() for c in name):
        return "only lowercase letters, digits, and hyphens allowed"
    if name[0] == "-" or name[-1] == "-":
        return "provider name cannot start or end with hyphen"
    return ""


def resolve(snapshot: MeshSnapshot, mesh: MeshConfig, name: str) -> Provider:
    """Istio's getExtAuthz over processExtensionProvider: the named ext_authz provider, or why it cannot be used."""
    seen = [p for p in mesh.extension_providers if p.name == name]
    p = mesh.provider(name)
    if p is None or (p.envoy_ext_authz_http is None and p.envoy_ext_authz_grpc is None):
        available = [q.name for q in mesh.extension_providers]
        return Provider(error=f"available providers are {available} but found {name!r}")
    problems = [e for e in (_valid_name(name),) if e]
    if len(seen) > 1:
        problems.append(f"extension provider name must be unique, found duplicate: {name}")
    built = http_provider(snapshot, p.envoy_ext_authz_http) if p.envoy_ext_authz_http is not None \
        else grpc_provider(snapshot, p.envoy_ext_authz_grpc)  # type: ignore[arg-type]
    if built.error:
        problems.append(built.error)
    return Provider(error="; ".join(problems)) if problems else built


def bad_custom_deny(rules: rbac_pb2.RBAC) -> rbac_pb2.RBAC:
    """Istio's getBadCustomDenyRules: the CUSTOM rules as DENY rules (a broken CUSTOM policy fails closed)."""
    out = rbac_pb2.RBAC(action=rbac_pb2.RBAC.DENY)
    for key in rules.policies:
        out.policies[key + BAD_CUSTOM_SUFFIX].CopyFrom(rules.policies[key])
    return out


def _custom_rbac(built: authz.Built, for_tcp: bool,
                 snapshot: MeshSnapshot) -> list[tuple[str, rbac_pb2.RBAC | None, rbac_pb2.RBAC | None, Provider]]:
    """Per provider (sorted): (provider, enforced rules, dry-run rules, resolved provider); a bad setup yields
    deny-only entries (rules=None)."""
    providers = sorted(built.by_provider)
    out: list[tuple[str, rbac_pb2.RBAC | None, rbac_pb2.RBAC | None, Provider]] = []
    for name in providers:
        enforce, shadow = built.by_provider[name]
        if len(providers) > 1:
            out.append((name, None, bad_custom_deny(enforce), Provider(error="multiple CUSTOM providers")))
            continue
        provider = resolve(snapshot, snapshot.mesh_config, name)
        if provider.error:
            out.append((name, None, bad_custom_deny(enforce), provider))
        else:
            out.append((name, enforce, shadow, provider))
    return out


def custom(ctx: FilterContext) -> list[hcm_pb2.HttpFilter]:
    """The chain slot: per provider an RBAC filter in shadow mode, then the ext_authz filter it enables."""
    selected = authz.select(ctx.snapshot, ctx.proxy)
    return http_filters_for(ctx.snapshot, selected, authz.context(ctx.snapshot, ctx.proxy))


def http_filters_for(snapshot: MeshSnapshot, selected: authz.Selected,
                     ctx: authz.Context) -> list[hcm_pb2.HttpFilter]:
    """Istio's buildHTTP for the CUSTOM builder."""
    built = authz.build_custom(selected.custom, False, ctx)
    if built is None:
        return []
    out = []
    for name, enforce, shadow, provider in _custom_rbac(built, False, snapshot):
        if enforce is None or provider.http is None:
            deny = http_rbac.RBAC(rules=shadow)
            out.append(hcm_pb2.HttpFilter(name=RBAC_FILTER, typed_config=pack(deny)))
            continue
        cfg = http_rbac.RBAC(shadow_rules=enforce, shadow_rules_stat_prefix=SHADOW_PREFIX)
        if shadow is not None and shadow.policies:
            cfg.rules.CopyFrom(shadow)
        ea = http_ea.ExtAuthz()
        ea.CopyFrom(provider.http)
        ea.filter_enabled_metadata.CopyFrom(enabled_metadata(RBAC_FILTER, name))
        out.append(hcm_pb2.HttpFilter(name=RBAC_FILTER, typed_config=pack(cfg)))
        out.append(hcm_pb2.HttpFilter(name=EXT_AUTHZ_FILTER, typed_config=pack(ea)))
    return out


def network_filters(snapshot: MeshSnapshot, selected: authz.Selected,
                    ctx: authz.Context) -> list[lc.Filter]:
    """Istio's buildTCP for the CUSTOM builder: gRPC providers only (HTTP ones are skipped on TCP chains)."""
    built = authz.build_custom(selected.custom, True, ctx)
    if built is None:
        return []
    out = []
    for name, enforce, shadow, provider in _custom_rbac(built, True, snapshot):
        if enforce is None:
            deny = net_rbac.RBAC(rules=shadow, stat_prefix=authz.TCP_STAT_PREFIX)
            out.append(lc.Filter(name=NETWORK_RBAC_FILTER, typed_config=pack(deny)))
            continue
        if provider.tcp is None:
            continue
        cfg = net_rbac.RBAC(shadow_rules=enforce, stat_prefix=authz.TCP_STAT_PREFIX,
                            shadow_rules_stat_prefix=SHADOW_PREFIX)
        if shadow is not None and shadow.policies:
            cfg.rules.CopyFrom(shadow)
        ea = net_ea.ExtAuthz()
        ea.CopyFrom(provider.tcp)
        ea.filter_enabled_metadata.CopyFrom(enabled_metadata(NETWORK_RBAC_FILTER, name))
        out.append(lc.Filter(name=NETWORK_RBAC_FILTER, typed_config=pack(cfg)))
        out.append(lc.Filter(name=NETWORK_EXT_AUTHZ_FILTER, typed_config=pack(ea)))
    return out



def tcp_filters(snapshot: MeshSnapshot, proxy: ProxyView) -> list[lc.Filter]:
    """The network filters before tcp_proxy on a sidecar's TCP inbound port or a gateway's TCP server, in Istio's order
    (buildCompleteNetworkFilters): CUSTOM (gRPC providers), then AUDIT, DENY, ALLOW RBAC."""
    selected = authz.select(snapshot, proxy)
    if not selected:
        return []
    ctx = authz.context(snapshot, proxy)
    return [*network_filters(snapshot, selected, ctx), *network_filters_for(selected, ctx)]
