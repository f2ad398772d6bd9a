"""The standard metrics' HTTP filters: Istio's metadata exchange (first in the chain) and gRPC message counts.

Two slots for the exchange, one filter each: `read` keeps the peer's identity from requests (inbound, in filter
state) or responses (outbound, gateways: dynamic metadata); `add` puts this proxy's on responses (inbound) or
requests (outbound, gateways) and removes the peer's from the other direction. A third, `grpc_stats`, counts
each gRPC request's messages where gRPC arrives as HTTP/2 (inbound and gateways; the explicit outbound proxy
tunnels gRPC with CONNECT), when Istio's metrics are on for that side.
"""

from __future__ import annotations

from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from sailmesh.generate.filters.context import Direction, FilterContext
from sailmesh.telemetry import resolve
from sailmesh.telemetry.standard import MX_ADD_FILTER, grpc_stats_filter, metadata_exchange_filters, metrics_policy


def _filters(ctx: FilterContext) -> list[hcm_pb2.HttpFilter]:
    """Both of the exchange's filters; none when Istio's PILOT_ENABLE_METADATA_EXCHANGE is false (Istio's
    appendMxFilter: `if !features.MetadataExchange { return filters }`)."""
    if not ctx.snapshot.mesh.metadata_exchange:
        return []
    p = ctx.proxy
    return metadata_exchange_filters(ctx.direction == Direction.INBOUND, p.workload_name, p.namespace, p.labels, p.id)


def read_peer(ctx: FilterContext) -> list[hcm_pb2.HttpFilter]:
    """The peer's x-envoy-peer-metadata kept for the stats key: inbound set_filter_state (filter state), outbound
    header_to_metadata (dynamic metadata, removed from the response)."""
    return [f for f in _filters(ctx) if f.name != MX_ADD_FILTER]


def add_own(ctx: FilterContext) -> list[hcm_pb2.HttpFilter]:
    """header_mutation: this proxy's x-envoy-peer-metadata(-id), overwriting whatever the app set; the peer's
    removed from the other direction."""
    return [f for f in _filters(ctx) if f.name == MX_ADD_FILTER]


def grpc_stats(ctx: FilterContext) -> list[hcm_pb2.HttpFilter]:
    """envoy.filters.http.grpc_stats (message counts in filter state) when this side reports Istio's metrics.
    Istio adds it on ports declared gRPC; here on every inbound and gateway chain, where it passes any request
    that is not gRPC (so gRPC on a port declared HTTP is counted too)."""
    mode = resolve.SERVER if ctx.direction == Direction.INBOUND else resolve.CLIENT
    if metrics_policy(ctx.effective_telemetry(), ctx.snapshot.mesh_config, mode) is None:
        return []
    return [grpc_stats_filter()]
