"""The HTTP filter chain of a connection manager, assembled in Istio's order from one table of slots.

Istio's order (pilot/pkg/networking/core/listener.go, buildHTTPConnectionManager): metadata exchange,
ext_authz (CUSTOM authorization), authn (jwt_authn, then istio_authn), RBAC (DENY, then ALLOW), grpc-web,
grpc-stats, ALPN (not inbound), fault, CORS, telemetry (stats), router last. sailmesh's dynamic forward
proxy (the explicit HTTP proxy's pass-through), after the set_filter_state naming the host it resolves for a
PASSTHROUGH service's short name (disabled unless the request's route enables it), sits just before the router.

A new filter is one slot at its place in `HTTP_FILTERS`: JWT authn and RBAC before fault, telemetry after
CORS, local rate limit before the router (where Istio's EnvoyFilter examples insert it). A builder returns
no filter when nothing applies to the proxy (no RequestAuthentication, no AuthorizationPolicy, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from sailmesh.errors import GenerationError
from sailmesh.generate.filters import basic, ext_authz, jwt, ratelimit, rbac, telemetry
from sailmesh.generate.filters.context import Direction, FilterContext
from sailmesh.telemetry.names import GRPC_STATS_FILTER
from sailmesh.telemetry.standard import MX_ADD_FILTER, MX_READ_FILTER

FilterBuilder = Callable[[FilterContext], Sequence[hcm_pb2.HttpFilter]]

ALL = frozenset(Direction)
OUTBOUND_AND_GATEWAY = frozenset({Direction.OUTBOUND, Direction.GATEWAY})
INBOUND_AND_GATEWAY = frozenset({Direction.INBOUND, Direction.GATEWAY})  # where Istio enforces authn and authz


@dataclass(frozen=True)
class FilterSlot:
    """One place in the chain: the Envoy filter it builds, where it applies, and its builder."""

    name: str
    directions: frozenset[Direction]
    build: FilterBuilder


HTTP_FILTERS: tuple[FilterSlot, ...] = (
    FilterSlot(MX_READ_FILTER, ALL, telemetry.read_peer),
    FilterSlot(MX_ADD_FILTER, ALL, telemetry.add_own),
    FilterSlot(ext_authz.EXT_AUTHZ_FILTER, INBOUND_AND_GATEWAY, ext_authz.custom),  # CUSTOM: rbac(shadow)+ext_authz
    FilterSlot(jwt.JWT_FILTER, INBOUND_AND_GATEWAY, jwt.jwt_authn),
    FilterSlot(rbac.RBAC_FILTER, INBOUND_AND_GATEWAY, rbac.rbac),  # AUDIT, DENY, ALLOW
    FilterSlot(GRPC_STATS_FILTER, INBOUND_AND_GATEWAY, telemetry.grpc_stats),  # Istio's grpc-stats place
    # Istio's ALPN place; sidecars' sniffed chains add theirs (sniffing.py), gateways enable it per route
    FilterSlot(basic.ALPN_FILTER, frozenset({Direction.GATEWAY}), basic.gateway_alpn),
    FilterSlot(basic.FAULT_FILTER, OUTBOUND_AND_GATEWAY, basic.fault),
    FilterSlot(basic.CORS_FILTER, OUTBOUND_AND_GATEWAY, basic.cors),
    FilterSlot(basic.SET_FILTER_STATE_FILTER, frozenset({Direction.OUTBOUND}), basic.passthrough_host),
    FilterSlot(basic.DFP_FILTER, OUTBOUND_AND_GATEWAY, basic.dynamic_forward_proxy),
    # sailmesh's RateLimit: where Istio's local rate-limit task inserts local_ratelimit (before the router)
    FilterSlot(ratelimit.LOCAL_RATELIMIT_FILTER, INBOUND_AND_GATEWAY, ratelimit.rate_limit_filters),
    FilterSlot(basic.ROUTER_FILTER, ALL, basic.router),
)


def http_filters(ctx: FilterContext, table: Sequence[FilterSlot] = HTTP_FILTERS) -> list[hcm_pb2.HttpFilter]:
    """The HTTP filters of one connection manager: each slot for ctx.direction, in table order.

    Raises GenerationError unless the router comes last (Envoy never runs a filter after it).
    """
    out: list[hcm_pb2.HttpFilter] = []
    for slot in table:
        if ctx.direction in slot.directions:
            out.extend(slot.build(ctx))
    if not out or out[-1].name != basic.ROUTER_FILTER:
        raise GenerationError(f"the {ctx.direction} HTTP filter chain must end with {basic.ROUTER_FILTER}: "
                              f"{[f.name for f in out]}")
    return out
