"""The filters every HTTP connection manager has today: fault, CORS, dynamic forward proxy, router.

fault and CORS are always present (as in Istio) and configured per route, so a VirtualService that
adds a fault or CORS policy changes only routes (RDS), never the listener. The dynamic forward proxy
acts only on requests routed to forward-proxy clusters (PassthroughCluster, resolution NONE services, PASSTHROUGH).
An explicit sidecar's outbound chain also sets the host the forward proxy resolves for a short name of a
PASSTHROUGH service (`passthrough_host`): the filter is disabled by default and enabled only by routes to such
clusters (httproute.enable_short_names), so no other request pays its CEL look-up; the name map lives in that
cluster's metadata, so a DestinationRule change pushes clusters and routes, never this listener.
"""

from __future__ import annotations

from envoy.extensions.filters.common.set_filter_state.v3 import value_pb2 as sfs_value
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.dynamic_forward_proxy.v3 import dynamic_forward_proxy_pb2 as dfp
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.http.set_filter_state.v3 import set_filter_state_pb2 as sfs
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from sailmesh.generate import capture, proxy_headers
from sailmesh.generate.alpn import ALPN_FILTER as ALPN_FILTER
from sailmesh.generate.alpn import MTLS_HTTP11_ALPN, alpn_override, is_sniffed
from sailmesh.generate.clusters import PASSTHROUGH_HOSTS, PASSTHROUGH_METADATA, dns_cache_config
from sailmesh.generate.common import pack
from sailmesh.generate.filters.context import Direction, FilterContext
from sailmesh.generate.httproute import CORS_FILTER as CORS_FILTER
from sailmesh.generate.httproute import FAULT_FILTER as FAULT_FILTER
from sailmesh.generate.httproute import SET_FILTER_STATE_FILTER as SET_FILTER_STATE_FILTER

ROUTER_FILTER = "envoy.filters.http.router"
DFP_FILTER = "envoy.filters.http.dynamic_forward_proxy"
DYNAMIC_HOST = "envoy.upstream.dynamic_host"  # Envoy's well-known key the forward proxy resolves instead of the Host
# The route's cluster's short-name map (clusters._short_names) looked up by the request's authority; "" (skipped)
# for any other authority or cluster, so the forward proxy resolves the Host as before
_HOSTS = f"xds.cluster_metadata.filter_metadata['{PASSTHROUGH_METADATA}']['{PASSTHROUGH_HOSTS}']"
PASSTHROUGH_HOST_CEL = (f"%CEL('{PASSTHROUGH_METADATA}' in xds.cluster_metadata.filter_metadata && "
                        f"request.host in {_HOSTS} ? {_HOSTS}[request.host] : '')%")


def typed_filter(name: str, msg: object) -> hcm_pb2.HttpFilter:
    """An HTTP filter with its typed config."""
    return hcm_pb2.HttpFilter(name=name, typed_config=pack(msg))  # type: ignore[arg-type]


def fault(_ctx: FilterContext) -> list[hcm_pb2.HttpFilter]:
    """envoy.filters.http.fault, empty: the routes carry the VirtualService's fault policy."""
    return [typed_filter(FAULT_FILTER, fault_pb2.HTTPFault())]


def cors(_ctx: FilterContext) -> list[hcm_pb2.HttpFilter]:
    """envoy.filters.http.cors, empty: the routes carry the VirtualService's CORS policy."""
    return [typed_filter(CORS_FILTER, cors_pb2.Cors())]


def _resolves_short_names(ctx: FilterContext) -> bool:
    """An explicit sidecar's outbound chain (captured sidecars' PASSTHROUGH is ORIGINAL_DST; gateways have no
    namespace search list)."""
    return ctx.direction == Direction.OUTBOUND and ctx.proxy.type != "router" and not capture.is_captured(ctx.proxy)


def gateway_alpn(ctx: FilterContext) -> list[hcm_pb2.HttpFilter]:
    """Istio's `istio.alpn` on a gateway's HCM (alpn.py), disabled: routes to a sniffed service port over mesh mTLS
    enable it (httproute.enable_alpn_override). Only when some service port sniffs its protocol, so other gateways'
    config is unchanged."""
    if not any(is_sniffed(p.protocol) for svc in ctx.snapshot.services.values() for p in svc.ports):
        return []
    return [alpn_override(MTLS_HTTP11_ALPN, disabled=True)]


def passthrough_host(ctx: FilterContext) -> list[hcm_pb2.HttpFilter]:
    """set_filter_state: a request by a short name (`reviews:9080`) of a PASSTHROUGH service makes the forward proxy
    resolve `<FQDN>:<port>`, as a pod's DNS search list would (Envoy's resolver has none). Disabled unless the
    request's route enables it."""
    if not _resolves_short_names(ctx):
        return []
    value = sfs_value.FilterStateValue(object_key=DYNAMIC_HOST, skip_if_empty=True)
    value.format_string.text_format_source.inline_string = PASSTHROUGH_HOST_CEL
    out = typed_filter(SET_FILTER_STATE_FILTER, sfs.Config(on_request_headers=[value]))
    out.disabled = True  # enabled per route (httproute.enable_short_names)
    return [out]


def dynamic_forward_proxy(ctx: FilterContext) -> list[hcm_pb2.HttpFilter]:
    """envoy.filters.http.dynamic_forward_proxy with the DNS cache PassthroughCluster shares (reading the host
    `passthrough_host` sets, where that filter is present)."""
    config = dfp.FilterConfig(dns_cache_config=dns_cache_config(),
                              allow_dynamic_host_from_filter_state=_resolves_short_names(ctx))
    return [typed_filter(DFP_FILTER, config)]


def router(ctx: FilterContext) -> list[hcm_pb2.HttpFilter]:
    """envoy.filters.http.router: forwards the request; always the last filter. proxyHeaders.envoyDebugHeaders
    disabled suppresses its `x-envoy-*` headers (Istio's BuildRouterFilter, every listener class)."""
    suppress = proxy_headers.for_class(ctx.snapshot.mesh_config, proxy_headers.ListenerClass.SIDECAR_OUTBOUND)
    return [typed_filter(ROUTER_FILTER, router_pb2.Router(suppress_envoy_headers=suppress.suppress_debug_headers))]
