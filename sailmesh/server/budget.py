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


class SendBudget:
    """Grants bytes first come, first served; a response larger than the whole budget goes alone."""

    def __init__(self, limit: int = MAX_INFLIGHT_BYTES) -> None:
        self.limit = limit
        self.used = 0
        self.waits = 0  # how often a response had to wait (for tests and the debug endpoints)
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def _fits(self, n: int) -> bool:
        return self.used == 0 or self.used + n <= self.limit

    def try_acquire(self, n: int) -> bool:
        """Take `n` bytes now if nobody waits and they fit (the common case: no coroutine, no await)."""
        if not self._waiters and self._fits(n):
            self.used += n
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
            fut.set_result(None)

    @contextlib.asynccontextmanager
    async def hold(self, n: int) -> AsyncIterator[None]:
        """Wait for `n` bytes of budget, keep them for the block (build and send the response inside it)."""
        await self.acquire(n)
        try:
            yield
        finally:
            self.release(n)
