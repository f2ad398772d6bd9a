"""Istio's metadata exchange (first in the chain, as in Istio): the peer-metadata headers of the standard metrics.

Two slots, one filter each: `read` takes the peer's identity off requests (inbound) or responses (outbound,
gateways) into dynamic metadata; `add` puts this proxy's on responses (inbound) or requests (outbound, gateways).
"""

from __future__ import annotations

from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from sailmesh.generate.filters.context import Direction, FilterContext
from sailmesh.telemetry.standard import MX_ADD_FILTER, metadata_exchange_filters


def _filters(ctx: FilterContext) -> list[hcm_pb2.HttpFilter]:
    p = ctx.proxy
    return metadata_exchange_filters(ctx.direction == Direction.INBOUND, p.workload_name, p.namespace, p.labels, p.id)


def read_peer(ctx: FilterContext) -> list[hcm_pb2.HttpFilter]:
    """header_to_metadata: the peer's x-envoy-peer-metadata into dynamic metadata, removed from the message."""
    return [f for f in _filters(ctx) if f.name != MX_ADD_FILTER]


def add_own(ctx: FilterContext) -> list[hcm_pb2.HttpFilter]:
    """header_mutation: this proxy's x-envoy-peer-metadata(-id), overwriting whatever the app set."""
    return [f for f in _filters(ctx) if f.name == MX_ADD_FILTER]
