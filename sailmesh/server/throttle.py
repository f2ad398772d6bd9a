"""Push throttles, as Istio's: at most N connections send a push at once (PILOT_PUSH_THROTTLE), and new streams
are admitted at a bounded rate (PILOT_MAX_REQUESTS_PER_SECOND, a token bucket whose wait is capped at a second;
a stream that would wait longer is refused with RESOURCE_EXHAUSTED and the proxy reconnects with back-off)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

# How long a new stream may wait for its turn before it is refused (Istio's WaitForRequestLimit: one second).
ADMIT_WAIT_S = 1.0


class PushSlots:
    """At most `limit` holders at once (0: no limit); the others queue first come, first served.

    A holder is anything hashable with a wake-up callback: a connection that finds no slot free keeps serving its
    requests and is woken when a slot is granted to it (it never blocks in the queue).
    """

    def __init__(self, limit: int = 0) -> None:
        self.limit = limit
        self._holders: set[object] = set()
        self._queue: deque[tuple[object, Callable[[], None], float]] = deque()
        self._queued: set[object] = set()
        self.waits = 0  # how often a connection had to queue
        self.peak_queue = 0
        # called with the seconds a granted holder queued (pilot_proxy_queue_time)
        self.on_grant: Callable[[float], None] | None = None

    def claim(self, holder: object, wake: Callable[[], None], front: bool = False) -> bool:
        """True when `holder` holds a slot (now, or granted earlier); else it is queued and `wake` is called once
        a slot is granted to it. `front`: a push already under way (it gave its slot back while waiting for the
        proxy's ACK) finishes before new ones start, as if it had kept its slot (Istio's holds one per push)."""
        if self.limit <= 0 or holder in self._holders:
            return True
        if holder in self._queued:
            return False
        if len(self._holders) < self.limit and not self._queue:
            self._holders.add(holder)
            return True
        (self._queue.appendleft if front else self._queue.append)((holder, wake, time.monotonic()))
        self._queued.add(holder)
        self.waits += 1
        self.peak_queue = max(self.peak_queue, len(self._queue))
        return False

    def release(self, holder: object) -> None:
        """Give a held slot back (a queued holder stays queued); the next queued holder gets it."""
        if self.limit <= 0 or holder not in self._holders:
            return
        self._holders.discard(holder)
        while self._queue and len(self._holders) < self.limit:
            nxt, wake, since = self._queue.popleft()
            self._queued.discard(nxt)
            self._holders.add(nxt)
            if self.on_grant is not None:
                self.on_grant(time.monotonic() - since)
            wake()

    def leave(self, holder: object) -> None:
        """`holder` is gone: out of the queue, its slot (if any) to the next."""
        if holder in self._queued:
            self._queued.discard(holder)
            self._queue = deque(q for q in self._queue if q[0] is not holder)
        self.release(holder)

    @property
    def busy(self) -> int:
        return len(self._holders)

    @property
    def queued(self) -> int:
        return len(self._queue)


class StreamRate:
    """A token bucket for new streams: `rate` per second, `burst` at once (0 rate: no limit). As Go's
    rate.Limiter.Wait with a deadline (which Istio uses): a stream whose turn comes within ADMIT_WAIT_S reserves it
    and waits; one whose turn is further away is refused at once and takes no token."""

    def __init__(self, rate: float = 0.0, burst: int = 1, max_wait_s: float = ADMIT_WAIT_S) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.max_wait_s = max_wait_s
        self._tokens = float(self.burst)
        self._last = time.monotonic()
        self.admitted = 0
        self.refused = 0

    def reserve(self, now: float | None = None) -> float | None:
        """Seconds to wait for this stream's turn (reserved), or None: refused."""
        if self.rate <= 0:
            self.admitted += 1
            return 0.0
        now = time.monotonic() if now is None else now
        self._tokens = min(float(self.burst), self._tokens + max(0.0, now - self._last) * self.rate)
        self._last = now
        after = self._tokens - 1.0
        delay = 0.0 if after >= 0 else -after / self.rate
        if delay > self.max_wait_s:
            self.refused += 1
            return None
        self._tokens = after
        self.admitted += 1
        return delay

    async def admit(self) -> bool:
        """Wait for this stream's turn; False when it would come too late (refuse the stream)."""
        delay = self.reserve()
        if delay is None:
            return False
        if delay > 0:
            await asyncio.sleep(delay)
        return True
