"""Polling with a deadline (never sleep to synchronise) and free loopback ports/addresses."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class DeadlineExceeded(AssertionError):
    """A condition did not become true before its deadline."""


def wait_for(check: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> T:
    """Call check() until it returns a truthy value (returned) or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception as e:
            last_exc = e
        if time.monotonic() > deadline:
            raise DeadlineExceeded(f"timed out after {timeout}s waiting for {what or check}: {last_exc!r}")
        time.sleep(interval)


async def await_for(
    check: Callable[[], Awaitable[T]], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Async form of wait_for."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = await check()
            if value:
                return value
        except Exception as e:
            last_exc = e
        if time.monotonic() > deadline:
            raise DeadlineExceeded(f"timed out after {timeout}s waiting for {what or check}: {last_exc!r}")
        await asyncio.sleep(interval)


def random_loopback_block() -> str:
    """A random 127.x.y prefix for one test's pod addresses, so parallel tests rarely collide."""
    return f"127.{random.randint(10, 250)}.{random.randint(1, 250)}"
