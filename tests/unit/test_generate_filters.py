"""The HTTP filter chain: one table, Istio's order, per direction; a new filter is one slot."""

from __future__ import annotations

import re

import pytest
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from sailmesh.errors import GenerationError
from sailmesh.generate.filters import HTTP_FILTERS, Direction, FilterContext, FilterSlot, http_filters
from sailmesh.generate.filters.basic import typed_filter
from tests.unit.test_generate_support import bookinfo, gateway_proxy, sidecar

FAULT, CORS = "envoy.filters.http.fault", "envoy.filters.http.cors"
DFP, ROUTER = "envoy.filters.http.dynamic_forward_proxy", "envoy.filters.http.router"
SFS = "envoy.filters.http.set_filter_state"  # an explicit sidecar's PASSTHROUGH short names (outbound only)
REQUEST_AUTHN = """
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: mesh, namespace: istio-system}
spec:
  jwtRules: [{issuer: "testing@secure.istio.io", jwks: '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'}]
"""
MX = ["istio.metadata_exchange.read", "istio.metadata_exchange.add"]  # Istio's metadata exchange, first
GRPC_STATS = "envoy.filters.http.grpc_stats"


def names_for(direction: Direction, table: tuple[FilterSlot, ...] = HTTP_FILTERS) -> list[str]:
    proxy = gateway_proxy() if direction is Direction.GATEWAY else sidecar()
    return [f.name for f in http_filters(FilterContext(bookinfo(), proxy, direction, 9080), table)]


def test_todays_chains_in_istios_order() -> None:
    # metadata exchange first (Istio's order), grpc_stats where gRPC arrives as HTTP/2 (Istio's place: after
    # RBAC, before fault), fault and CORS (configured per route), the forward proxy (after the host it resolves for
    # a PASSTHROUGH short name), the router last; inbound only exchanges metadata, counts gRPC messages and routes.
    assert names_for(Direction.OUTBOUND) == [*MX, FAULT, CORS, SFS, DFP, ROUTER]
    assert names_for(Direction.GATEWAY) == [*MX, GRPC_STATS, FAULT, CORS, DFP, ROUTER]
    assert names_for(Direction.INBOUND) == [*MX, GRPC_STATS, ROUTER]


# Slots that build nothing until a policy applies (AuthorizationPolicy); CUSTOM also builds its shadow RBAC filter.
POLICY_SLOTS = {"envoy.filters.http.ext_authz": {"envoy.filters.http.rbac", "envoy.filters.http.ext_authz"},
                "envoy.filters.http.rbac": {"envoy.filters.http.rbac"},
                # a gateway's ALPN override: only when some service port sniffs its protocol (none in Bookinfo)
                "istio.alpn": {"istio.alpn"},
                # RateLimit: header mutations around it for a sourcePrincipal key (none without a RateLimit)
                "envoy.filters.http.local_ratelimit": {"envoy.filters.http.local_ratelimit",
                                                       "envoy.filters.http.header_mutation"}}


def test_every_slot_builds_the_filter_it_names() -> None:
    # with a policy for every policy-driven filter (jwt_authn builds nothing without a RequestAuthentication)
    snap = bookinfo(REQUEST_AUTHN)
    for slot in HTTP_FILTERS:
        for direction in slot.directions:
            ctx = FilterContext(snap, sidecar(), direction, 9080)
            if slot.name in POLICY_SLOTS:
                assert {f.name for f in slot.build(ctx)} <= POLICY_SLOTS[slot.name]
            else:
                assert [f.name for f in slot.build(ctx)] == [slot.name]


def test_a_new_filter_is_one_slot_at_its_place() -> None:
    seen: list[FilterContext] = []

    def rbac(ctx: FilterContext) -> list[hcm_pb2.HttpFilter]:
        seen.append(ctx)
        return [typed_filter("envoy.filters.http.rbac", router_pb2.Router())] if ctx.port == 9080 else []

    slot = FilterSlot("envoy.filters.http.rbac", frozenset({Direction.INBOUND, Direction.GATEWAY}), rbac)
    at = [s.name for s in HTTP_FILTERS].index(FAULT) + 1
    table = (*HTTP_FILTERS[:at], slot, *HTTP_FILTERS[at:])  # right after fault
    assert names_for(Direction.INBOUND, table) == [*MX, GRPC_STATS, "envoy.filters.http.rbac", ROUTER]
    assert names_for(Direction.GATEWAY, table) == [*MX, GRPC_STATS, FAULT, "envoy.filters.http.rbac", CORS, DFP,
                                                   ROUTER]
    assert names_for(Direction.OUTBOUND, table) == [*MX, FAULT, CORS, SFS, DFP, ROUTER]  # not applied outbound
    assert {c.direction for c in seen} == {Direction.INBOUND, Direction.GATEWAY}
    # a builder with nothing to add (no policy for this port) leaves no trace
    ctx = FilterContext(bookinfo(), sidecar(), Direction.INBOUND, 7000)
    assert [f.name for f in http_filters(ctx, table)] == [*MX, GRPC_STATS, ROUTER]


def test_the_router_must_come_last() -> None:
    late = FilterSlot("envoy.filters.http.late", frozenset(Direction),
                      lambda _c: [typed_filter("envoy.filters.http.late", router_pb2.Router())])
    with pytest.raises(GenerationError, match="must end with " + re.escape(ROUTER)):
        names_for(Direction.OUTBOUND, (*HTTP_FILTERS, late))
