"""Names shared by the generated telemetry config and the agent (kept free of heavy imports: the agent's start-up)."""

from __future__ import annotations

from collections.abc import Sequence

GRPC_STATS_FILTER = "envoy.filters.http.grpc_stats"  # its filter state carries a request's gRPC message counts
ALS_CLUSTER = "sailmesh_als"  # static cluster in the agent's bootstrap: its gRPC access-log server
LOG_PREFIX = "istio"
SOURCE, DESTINATION = "source", "destination"
# Custom tags of the source reporter's entries: the upstream TLS peer (Istio's source-side principals).
UPSTREAM_PEER_TAG, UPSTREAM_LOCAL_TAG = "istio.upstream_peer", "istio.upstream_local"

# Envoy's stats access logger (telemetry/stats_logger.py): its prefix on Envoy's page, its tags (short: Envoy formats
# and interns them per request and stat).
STAT_PREFIX = "sailmesh_istio"  # Envoy's page: envoy_sailmesh_istio_<metric>{tags}
ENVOY_PREFIX = "envoy_" + STAT_PREFIX + "_"
T_KEY, T_GRPC_MESSAGES, T_POLICY, T_EXPR = "k", "gm", "ov", "x"
# The key tag's fields, in order: reporter, services, peer metadata, upstream cluster, authority, content type,
# response code, gRPC status, response flags, the TLS peer's and our URI SANs.
KEY_SEPARATOR = "\n"
KEY_FIELDS = 11


def log_name(reporter: str, services: Sequence[str] = (), policy: str = "") -> str:
    """`istio|source`, `istio|destination|reviews.default.svc.cluster.local,...`, or either with the metric
    overrides (telemetry/overrides.py, JSON) as the last field: `istio|source||{...}`."""
    parts = [LOG_PREFIX, reporter]
    if services or policy:
        parts.append(",".join(services))
    if policy:
        parts.append(policy)
    return "|".join(parts)


def parse_stream(name: str) -> tuple[str, tuple[str, ...], str] | None:
    """(reporter, services, overrides JSON) from a log name, None when it is not one of ours."""
    parts = name.split("|", 3)
    if len(parts) < 2 or parts[0] != LOG_PREFIX or parts[1] not in (SOURCE, DESTINATION):
        return None
    services = tuple(s for s in (parts[2] if len(parts) > 2 else "").split(",") if s)
    return parts[1], services, parts[3] if len(parts) > 3 else ""


def parse_log_name(name: str) -> tuple[str, tuple[str, ...]] | None:
    """(reporter, services) from a log name, None when it is not one of ours."""
    parsed = parse_stream(name)
    return None if parsed is None else parsed[:2]
