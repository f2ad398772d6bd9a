"""What a filter builder is given: the snapshot, the proxy, the listener's direction and port."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sailmesh.snapshot.model import MeshSnapshot, ProxyView


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
