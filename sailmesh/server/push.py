"""A connection's queued push: push requests merged while the connection is busy sending."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sailmesh.xds.push import PushRequest
from sailmesh.xds.types import PUSH_ORDER


@dataclass
class PendingPush:
    """Merged push requests for one connection: the union of their types, the earliest start time."""

    type_urls: set[str] | None  # None = every type
    started: float  # monotonic time of the earliest merged push request (for convergence time)
    version: str
    reasons: list[str] = field(default_factory=list)
    merged: int = 1

    @classmethod
    def of(cls, request: PushRequest, now: float) -> PendingPush:
        types = None if request.type_urls is None else set(request.type_urls)
        return cls(types, now, request.version, [request.reason] if request.reason else [])

    def merge(self, request: PushRequest) -> None:
        """Fold a later push request into this one (the start time stays the earliest)."""
        if self.type_urls is not None:
            if request.type_urls is None:
                self.type_urls = None
            else:
                self.type_urls |= request.type_urls
        self.version = request.version
        if request.reason and len(self.reasons) < 16:
            self.reasons.append(request.reason)
        self.merged += 1

    def wants(self, type_url: str) -> bool:
        return self.type_urls is None or type_url in self.type_urls


def ordered(type_urls: Iterable[str]) -> list[str]:
    """Type URLs in push order: PUSH_ORDER first (clusters, endpoints, listeners, routes, secrets), then others."""
    present = list(type_urls)
    known = [t for t in PUSH_ORDER if t in present]
    return known + sorted(t for t in present if t not in PUSH_ORDER)
