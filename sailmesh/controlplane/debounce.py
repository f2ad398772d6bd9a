"""Merge bursts of change sets into few pushes: leading edge after quiet, then `after_s` of quiet, at most `max_s`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from sailmesh.settings import Debounce

log = logging.getLogger(__name__)
T = TypeVar("T")


class Debouncer(Generic[T]):
    """Calls `push(merged)` one at a time (never concurrently).

    - A change arriving after a quiet period (no change for `after_s`, nothing pending or being pushed) is
      pushed at once.
    - Otherwise changes are merged with `merge` and pushed when `after_s` passed without a new change, or
      `max_s` after the first of them, whichever comes first (Istio's PILOT_DEBOUNCE_AFTER / _MAX).
    - Changes arriving during a push wait for it, then follow the rule above.
    Submit from the event loop's thread.
    """

    def __init__(
        self,
        push: Callable[[T], Awaitable[None]],
        merge: Callable[[T, T], T],
        settings: Debounce | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._push = push
        self._merge = merge
        self.settings = settings or Debounce()
        self._clock = clock
        self._pending: T | None = None
        self._leading = False
        self._first_at = 0.0
        self._last_at = 0.0
        self._last_event_at: float | None = None
        self._pushing = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.pushes = 0
        self.submitted = 0

    def submit(self, item: T) -> None:
        now = self._clock()
        self.submitted += 1
        if self._pending is None:
            quiet = self._last_event_at is None or now - self._last_event_at >= self.settings.after_s
            self._leading = quiet and not self._pushing
            self._pending, self._first_at = item, now
        else:
            self._pending = self._merge(self._pending, item)
        self._last_at = self._last_event_at = now
        self._wake.set()

    @property
    def idle(self) -> bool:
        """Nothing pending and no push running."""
        return self._pending is None and not self._pushing

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="debounce")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            while self._pending is None:
                self._wake.clear()
                await self._wake.wait()
            if not self._leading:
                await self._settle()
            item, self._pending, self._leading = self._pending, None, False
            if item is None:
                continue
            self._pushing = True
            try:
                await self._push(item)
            except asyncio.CancelledError:
                raise
            except Exception:  # a failed push must not stop later ones; the pusher logs its own details
                log.exception("push failed")
            finally:
                self._pushing = False
                self.pushes += 1

    async def _settle(self) -> None:
        """Wait until `after_s` passed since the last change, or `max_s` since the first pending one."""
        while True:
            deadline = min(self._last_at + self.settings.after_s, self._first_at + self.settings.max_s)
            remaining = deadline - self._clock()
            if remaining <= 0:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._wake.wait()
