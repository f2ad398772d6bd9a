"""Names shared by the generated telemetry config and the agent (kept free of heavy imports: the agent's start-up)."""

from __future__ import annotations

from collections.abc import Sequence

ALS_CLUSTER = "sailmesh_als"  # static cluster in the agent's bootstrap: its gRPC access-log server
LOG_PREFIX = "istio"
SOURCE, DESTINATION = "source", "destination"


def log_name(reporter: str, services: Sequence[str] = ()) -> str:
    """`istio|source` or `istio|destination|reviews.default.svc.cluster.local,...`."""
    return "|".join([LOG_PREFIX, reporter, ",".join(services)]) if services else f"{LOG_PREFIX}|{reporter}"


def parse_log_name(name: str) -> tuple[str, tuple[str, ...]] | None:
    """(reporter, services) from a log name, None when it is not one of ours."""
    parts = name.split("|")
    if len(parts) < 2 or parts[0] != LOG_PREFIX or parts[1] not in (SOURCE, DESTINATION):
        return None
    return parts[1], tuple(s for s in (parts[2] if len(parts) > 2 else "").split(",") if s)
