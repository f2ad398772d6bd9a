"""A byte budget for responses being sent at once, so a push to thousands of proxies does not build them all."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

# Istio throttles pushes by count (PILOT_PUSH_THROTTLE, 100 at once); responses here are bytes built per proxy
# (one copy of the shared parts' bytes each), so the limit is on bytes: a first push of 3 MB per proxy to 500
# proxies built every response before gRPC sent the first, and the allocator kept the 1.5 GB peak as RSS.
MAX_INFLIGHT_BYTES = 64 * 2**20

# A write still blocked after this long (the proxy does not read: its flow-control window is full) gives its
# bytes back to the budget: otherwise 60 streams that never read held the whole budget and stalled every push
# to every well-behaved proxy until they were cut. The stalled bytes stay in memory until the write completes or
# the stream's write timeout (server/ads.py) cuts it; `stalled` counts such leases.
STALL_S = 1.0
# ... but only while the bytes of stalled writes still under way stay under STALLED_LIMITS budgets: at 5,000
# services / 2,000 proxies every clusters response is its own 10 MB, a write under load takes longer than STALL_S,
# and giving every slow write's bytes back let the first push put gigabytes in gRPC's buffers (and in the
# proxies' receive buffers). Past it a slow write keeps its bytes until it completes or its stream's write timeout
# cuts it.
STALLED_LIMITS = 4  # max stalled bytes = this x the budget's limit


class Lease:
    """Bytes taken from a budget for one response; given back by release(), or early when the write stalls."""

    __slots__ = ("_budget", "_n", "_stalled_in", "_timer")

    def __init__(self, budget: SendBudget, n: int, stall_s: float) -> None:
        self._budget: SendBudget | None = budget
        self._n = n
        self._stalled_in: SendBudget | None = None  # the budget counting this lease's bytes as stalled
        self._timer = asyncio.get_running_loop().call_later(stall_s, self._stalled)

    def _stalled(self) -> None:
        budget = self._budget
        if budget is None:
            return
        if budget.stalled_bytes and budget.stalled_bytes + self._n > budget.max_stalled:
            # too many bytes stalled already: keep these until the write completes (or another stalled one
            # does: look again then)
            self._timer = asyncio.get_running_loop().call_later(budget.stall_s, self._stalled)
            return
        budget.stalled += 1
        budget.stalled_bytes += self._n
        self._stalled_in = budget
        self._give_back()

    def _give_back(self) -> None:
        budget, self._budget = self._budget, None
        if budget is not None:
            budget.release(self._n)

    def release(self) -> None:
        """The write is done (or failed): give the bytes back unless the stall timer already did."""
        self._timer.cancel()
        stalled, self._stalled_in = self._stalled_in, None
        if stalled is not None:
            stalled.stalled_bytes -= self._n
        self._give_back()


class SendBudget:
    """Grants bytes first come, first served; a response larger than the whole budget goes alone."""

    def __init__(self, limit: int = MAX_INFLIGHT_BYTES, stall_s: float = STALL_S,
                 max_stalled: int | None = None) -> None:
        self.limit = limit
        self.stall_s = stall_s
        self.max_stalled = STALLED_LIMITS * limit if max_stalled is None else max_stalled
        self.used = 0
        self.granted = 0  # bytes granted so far (how much the server has built: the control plane's idle trim)
        self.waits = 0  # how often a response had to wait (for tests and the debug endpoints)
        self.stalled = 0  # how often a blocked write gave its bytes back before it completed
        self.stalled_bytes = 0  # the bytes of those writes while they are still under way
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def _fits(self, n: int) -> bool:
        return self.used == 0 or self.used + n <= self.limit

    def try_acquire(self, n: int) -> bool:
        """Take `n` bytes now if nobody waits and they fit (the common case: no coroutine, no await)."""
        if not self._waiters and self._fits(n):
            self.used += n
            self.granted += n
            return True
        return False

    async def acquire(self, n: int) -> None:
        if self.try_acquire(n):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        self.waits += 1
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # granted, but the waiter went away: give it back
                self.release(n)
            raise

    def release(self, n: int) -> None:
        self.used -= n
        while self._waiters:
            m, fut = self._waiters[0]
            if fut.cancelled():
                self._waiters.popleft()
                continue
            if not self._fits(m):
                break
            self._waiters.popleft()
            self.used += m
            self.granted += m
            fut.set_result(None)

    def try_lease(self, n: int) -> Lease | None:
        """A lease of `n` bytes now if they fit and nobody waits (no coroutine: this runs once per proxy per push)."""
        return Lease(self, n, self.stall_s) if self.try_acquire(n) else None

    async def lease(self, n: int) -> Lease:
        """Wait for `n` bytes; the lease gives them back on release() or once the write stalls past stall_s."""
        await self.acquire(n)
        return Lease(self, n, self.stall_s)

    @contextlib.asynccontextmanager
    async def hold(self, n: int) -> AsyncIterator[None]:
        """Wait for `n` bytes of budget, keep them for the block (build and send the response inside it)."""
        lease = self.try_lease(n) or await self.lease(n)
        try:
            yield
        finally:
            lease.release()
