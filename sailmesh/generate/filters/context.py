"""What a filter builder is given: the snapshot, the proxy, the listener's direction and port, its Telemetry."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sailmesh.snapshot.model import MeshSnapshot, ProxyView
from sailmesh.telemetry import resolve


class Direction(enum.StrEnum):
    """Which kind of HTTP connection manager a chain is for (Istio's ListenerClass)."""

    INBOUND = "inbound"  # a sidecar's inbound listener: traffic to its own workload
    OUTBOUND = "outbound"  # a sidecar's outbound listener: its workload's calls to others
    GATEWAY = "gateway"  # a gateway's server listener


@dataclass(frozen=True)
class FilterContext:
    """The input of every filter builder (builders are pure functions of it, like the generators)."""

    snapshot: MeshSnapshot
    proxy: ProxyView
    direction: Direction
    port: int  # the listener's port: the container port inbound, the server port on a gateway, 15001 outbound
    # the proxy's Telemetry, resolved once per proxy by the listener builder and shared by all its chains
    telemetry: resolve.EffectiveTelemetry | None = None

    def effective_telemetry(self) -> resolve.EffectiveTelemetry:
        """The Telemetry in effect for the proxy (resolved here only when the caller did not pass it)."""
        return self.telemetry if self.telemetry is not None else resolve.for_proxy(self.snapshot, self.proxy)
