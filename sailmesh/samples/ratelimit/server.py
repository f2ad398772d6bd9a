"""The gRPC service: envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit over the configured limits."""

from __future__ import annotations

import logging

import grpc
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from envoy.type.v3 import ratelimit_unit_pb2

from sailmesh.samples.ratelimit.limits import UNIT_SECONDS, Counter, Limit, Node, find

log = logging.getLogger("ratelimit")


def _override(d: ratelimit_pb2.RateLimitDescriptor) -> Limit | None:
    """The descriptor's own limit (RateLimitDescriptor.limit), None without one or with a unit not counted here."""
    if not d.HasField("limit"):
        return None
    unit = ratelimit_unit_pb2.RateLimitUnit.Name(d.limit.unit).lower()
    return Limit(d.limit.requests_per_unit, unit) if unit in UNIT_SECONDS else None


class RateLimitService(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]
    """OVER_LIMIT when any descriptor of the request is over its limit; descriptors without a limit are OK. A
    descriptor carrying its own limit (Envoy's limit override, what sailmesh's RateLimit global mode sends) is
    counted against that limit in any domain, as envoyproxy/ratelimit does."""

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
            limit = _override(d)
            if limit is None:
                node = find(self.nodes, entries) if request.domain == self.domain else None
                if node is None or node.unlimited or node.limit is None:
                    continue
                limit = node.limit
            over, remaining = self.counter.hit(request.domain, entries, limit, hits)
            status.current_limit.requests_per_unit = limit.requests_per_unit
            status.current_limit.unit = rls_pb2.RateLimitResponse.RateLimit.Unit.Value(limit.unit.upper())
            status.limit_remaining = remaining
            if over:
                status.code = rls_pb2.RateLimitResponse.OVER_LIMIT
                response.overall_code = rls_pb2.RateLimitResponse.OVER_LIMIT
        log.info("domain=%s descriptors=%d -> %s", request.domain, len(request.descriptors),
                 rls_pb2.RateLimitResponse.Code.Name(response.overall_code))
        return response
