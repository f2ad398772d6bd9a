"""The gRPC service: envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit over the configured limits."""

from __future__ import annotations

import logging

import grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from sailmesh.samples.ratelimit.limits import Counter, Node, find

log = logging.getLogger("ratelimit")


class RateLimitService(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]
    """OVER_LIMIT when any descriptor of the request is over its limit; descriptors without a limit are OK."""

    def __init__(self, domain: str, nodes: list[Node], counter: Counter | None = None) -> None:
        self.domain = domain
        self.nodes = nodes
        self.counter = counter or Counter()

    async def ShouldRateLimit(self, request: rls_pb2.RateLimitRequest,
                              context: grpc.aio.ServicerContext[object, object]) -> rls_pb2.RateLimitResponse:
        response = rls_pb2.RateLimitResponse(overall_code=rls_pb2.RateLimitResponse.OK)
        hits = request.hits_addend or 1
        for d in request.descriptors:
            entries = [(e.key, e.value) for e in d.entries]
            status = response.statuses.add(code=rls_pb2.RateLimitResponse.OK)
            node = find(self.nodes, entries) if request.domain == self.domain else None
            if node is None or node.unlimited or node.limit is None:
                continue
            over, remaining = self.counter.hit(request.domain, entries, node.limit, hits)
            status.current_limit.requests_per_unit = node.limit.requests_per_unit
            status.current_limit.unit = rls_pb2.RateLimitResponse.RateLimit.Unit.Value(node.limit.unit.upper())
            status.limit_remaining = remaining
            if over:
                status.code = rls_pb2.RateLimitResponse.OVER_LIMIT
                response.overall_code = rls_pb2.RateLimitResponse.OVER_LIMIT
        log.info("domain=%s descriptors=%d -> %s", request.domain, len(request.descriptors),
                 rls_pb2.RateLimitResponse.Code.Name(response.overall_code))
        return response
