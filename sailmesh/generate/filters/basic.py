"""The filters every HTTP connection manager has today: fault, CORS, dynamic forward proxy, router.

fault and CORS are always present (as in Istio) and configured per route, so a VirtualService that
adds a fault or CORS policy changes only routes (RDS), never the listener. The dynamic forward proxy
acts only on requests routed to forward-proxy clusters (PassthroughCluster, resolution NONE services).
"""

from __future__ import annotations

from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.dynamic_forward_proxy.v3 import dynamic_forward_proxy_pb2 as dfp
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from sailmesh.generate.clusters import dns_cache_config
from sailmesh.generate.common import pack
from sailmesh.generate.filters.context import FilterContext
from sailmesh.generate.httproute import CORS_FILTER as CORS_FILTER
from sailmesh.generate.httproute import FAULT_FILTER as FAULT_FILTER

ROUTER_FILTER = "envoy.filters.http.router"
DFP_FILTER = "envoy.filters.http.dynamic_forward_proxy"


def typed_filter(name: str, msg: object) -> hcm_pb2.HttpFilter:
    """An HTTP filter with its typed config."""
    return hcm_pb2.HttpFilter(name=name, typed_config=pack(msg))  # type: ignore[arg-type]


def fault(_ctx: FilterContext) -> list[hcm_pb2.HttpFilter]:
    """envoy.filters.http.fault, empty: the routes carry the VirtualService's fault policy."""
    return [typed_filter(FAULT_FILTER, fault_pb2.HTTPFault())]


def cors(_ctx: FilterContext) -> list[hcm_pb2.HttpFilter]:
    """envoy.filters.http.cors, empty: the routes carry the VirtualService's CORS policy."""
    return [typed_filter(CORS_FILTER, cors_pb2.Cors())]


def dynamic_forward_proxy(_ctx: FilterContext) -> list[hcm_pb2.HttpFilter]:
    """envoy.filters.http.dynamic_forward_proxy with the DNS cache PassthroughCluster shares."""
    return [typed_filter(DFP_FILTER, dfp.FilterConfig(dns_cache_config=dns_cache_config()))]


def router(_ctx: FilterContext) -> list[hcm_pb2.HttpFilter]:
    """envoy.filters.http.router: forwards the request; always the last filter."""
    return [typed_filter(ROUTER_FILTER, router_pb2.Router())]
