"""Rate limits for the control plane's doors: token buckets per key (a caller's address, an identity).

`wait(key)` says how long a caller must wait (0: it may go on); `take(key)` spends one token. Buckets that have
refilled are forgotten, and the table is bounded, so a flood of distinct keys cannot grow memory without end.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    """`rate` tokens a second up to `burst`; a rate of 0 means no limit."""

    rate: float
    burst: float

    @property
    def unlimited(self) -> bool:
        return self.rate <= 0


# Defaults. CSRs: per identity (a namespace/service account), enough for a hundred replicas starting together and
# every one renewing again soon after; a caller looping faster is refused. Failed authentication: per address,
# on the CA port and the HTTP API: ten wrong credentials at once, then one a second.
CSR_PER_IDENTITY = Limit(rate=20.0, burst=100.0)
FAILED_AUTH_PER_ADDRESS = Limit(rate=1.0, burst=10.0)
MAX_KEYS = 10_000


class RateLimiter:
    """Token buckets per key."""

    def __init__(self, limit: Limit, clock: Callable[[], float] = time.monotonic, max_keys: int = MAX_KEYS) -> None:
        self.limit = limit
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self.refused = 0

    def __len__(self) -> int:
        """How many keys have a bucket (bounded by max_keys)."""
        return len(self._buckets)

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.limit.burst, now))
        return min(self.limit.burst, tokens + (now - at) * self.limit.rate)

    def wait(self, key: str) -> float:
        """Seconds until `key` has a token (0 when it has one now)."""
        if self.limit.unlimited:
            return 0.0
        tokens = self._tokens(key, self._clock())
        return 0.0 if tokens >= 1 else (1 - tokens) / self.limit.rate

    def take(self, key: str) -> float:
        """Spend a token of `key`: 0 if there was one, else the seconds to wait (nothing spent, counted refused)."""
        if self.limit.unlimited:
            return 0.0
        now = self._clock()
        tokens = self._tokens(key, now)
        if tokens < 1:
            self.refused += 1
            return (1 - tokens) / self.limit.rate
        if len(self._buckets) >= self._max_keys and key not in self._buckets:
            self._forget_full(now)
        self._buckets[key] = (tokens - 1, now)
        return 0.0

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled (they are the same as no bucket); if none has, the oldest half."""
        full = [k for k in self._buckets if self._tokens(k, now) >= self.limit.burst]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= self._max_keys:
            for k in sorted(self._buckets, key=lambda k: self._buckets[k][1])[: self._max_keys // 2]:
                del self._buckets[k]


def retry_after(seconds: float) -> str:
    """An HTTP Retry-After value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


def peer_address(peer: str) -> str:
    """The address of a gRPC peer string (`ipv4:127.0.0.1:5000`, `ipv6:[::1]:5000`, `unix:...`), without port."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]")
    return peer
