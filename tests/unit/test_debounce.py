"""Debouncer: leading-edge push after quiet, bursts merged, max delay, pushes serialised, failures survived."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from sailmesh.controlplane.debounce import Debouncer
from sailmesh.settings import Debounce
from sailmesh.testing.waiting import await_for


class Recorder:
    def __init__(self) -> None:
        self.pushes: list[tuple[float, frozenset[str]]] = []
        self.gate: asyncio.Event | None = None
        self.fail_next = False

    async def push(self, item: frozenset[str]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.pushes.append((time.monotonic(), item))
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("push failed on purpose")

    def items(self) -> list[frozenset[str]]:
        return [i for _, i in self.pushes]


def union(a: frozenset[str], b: frozenset[str]) -> frozenset[str]:
    return a | b


@pytest.fixture
async def rec_and(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Recorder, Debouncer[frozenset[str]]]]:
    after, max_s = request.param
    rec = Recorder()
    d: Debouncer[frozenset[str]] = Debouncer(rec.push, union, Debounce(after_s=after, max_s=max_s))
    d.start()
    try:
        yield rec, d
    finally:
        await d.close()


async def pushed(rec: Recorder, n: int) -> bool:
    return len(rec.pushes) >= n


@pytest.mark.parametrize("rec_and", [(1.0, 10.0)], indirect=True)
async def test_first_change_after_quiet_is_pushed_at_once(rec_and: tuple[Recorder, Debouncer[frozenset[str]]]) -> None:
    rec, d = rec_and
    t0 = time.monotonic()
    d.submit(frozenset({"a"}))
    await await_for(lambda: pushed(rec, 1), timeout=5, what="leading push")
    assert rec.pushes[0][0] - t0 < 0.5  # well before after_s (1 s)
    assert rec.items() == [frozenset({"a"})]


@pytest.mark.parametrize("rec_and", [(0.3, 10.0)], indirect=True)
async def test_burst_is_merged_after_quiet(rec_and: tuple[Recorder, Debouncer[frozenset[str]]]) -> None:
    rec, d = rec_and
    d.submit(frozenset({"a"}))
    await await_for(lambda: pushed(rec, 1), timeout=5, what="leading push")
    t_last = 0.0
    for x in "bcde":
        d.submit(frozenset({x}))
        t_last = time.monotonic()
        await asyncio.sleep(0.01)  # creates the burst (not synchronisation)
    await await_for(lambda: pushed(rec, 2), timeout=5, what="merged push")
    assert rec.items() == [frozenset({"a"}), frozenset("bcde")]
    assert rec.pushes[1][0] - t_last >= 0.3 - 0.02  # waited for the quiet period
    await await_for(lambda: _true(d.idle), timeout=5)
    assert d.pushes == 2 and d.submitted == 5


@pytest.mark.parametrize("rec_and", [(0.2, 0.4)], indirect=True)
async def test_max_delay_bounds_a_continuous_stream(rec_and: tuple[Recorder, Debouncer[frozenset[str]]]) -> None:
    rec, d = rec_and
    sent: set[str] = set()
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < 1.3:  # a change every 50 ms: never 200 ms of quiet
        d.submit(frozenset({str(i)}))
        sent.add(str(i))
        i += 1
        await asyncio.sleep(0.05)
    during = len(rec.pushes)
    assert during >= 3  # leading push + at least two forced by max_s (0.4 s) within 1.3 s
    await await_for(lambda: _true(d.idle), timeout=5, what="last push")
    assert frozenset().union(*rec.items()) == sent
    assert len(rec.pushes) < i / 2  # still merged


@pytest.mark.parametrize("rec_and", [(0.05, 10.0)], indirect=True)
async def test_pushes_are_serialised_and_survive_failures(rec_and: tuple[Recorder, Debouncer[frozenset[str]]]) -> None:
    rec, d = rec_and
    rec.gate = asyncio.Event()
    rec.fail_next = True
    d.submit(frozenset({"a"}))
    await await_for(lambda: _true(not d.idle and d._pending is None), timeout=5, what="push started")
    d.submit(frozenset({"b"}))
    d.submit(frozenset({"c"}))
    assert rec.pushes == []  # the first push is still running: nothing else starts
    rec.gate.set()
    await await_for(lambda: pushed(rec, 2), timeout=5, what="second push after the failed first one")
    assert rec.items() == [frozenset({"a"}), frozenset({"b", "c"})]


async def _true(value: bool) -> bool:
    return value


@pytest.mark.parametrize("steps", range(8))
async def test_close_while_a_change_wakes_the_settling_wait_still_stops(steps: int) -> None:
    """A cancellation that arrives in the same loop step as the wake-up is not lost.

    Python 3.11's asyncio.wait_for swallows a cancellation that arrives as the awaited event completes; the
    settle loop would then wait again and close() would never return. The race depends on how far the
    settle loop got, so it is tried after each number of loop steps.
    """
    rec = Recorder()
    d: Debouncer[frozenset[str]] = Debouncer(rec.push, union, Debounce(after_s=30.0, max_s=60.0))
    d.start()
    d.submit(frozenset({"a"}))  # leading edge: pushed at once

    async def leading_pushed() -> bool:
        return rec.items() == [frozenset({"a"})]

    await await_for(leading_pushed, timeout=5.0, what="the leading push")
    d.submit(frozenset({"b"}))  # within after_s of the last change: settles for 30 s
    for _ in range(steps):
        await asyncio.sleep(0)
    d.submit(frozenset({"c"}))  # wakes the settle loop ...
    closing = asyncio.create_task(d.close())  # ... in the same step as the cancellation
    done, _ = await asyncio.wait({closing}, timeout=5.0)  # a hang detector, not a timing goal
    if closing not in done:
        await d.close()  # cancel once more so the loop does not outlive the test
    assert closing in done, "close() hung: the settle loop lost its cancellation"
    assert rec.items() == [frozenset({"a"})]
