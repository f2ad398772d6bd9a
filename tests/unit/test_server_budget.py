"""The ADS server's byte budget for responses in flight (bounds a push's memory to thousands of proxies)."""

from __future__ import annotations

import asyncio

import pytest

from sailmesh.server.budget import SendBudget


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_responses_wait_beyond_the_limit_and_go_in_arrival_order() -> None:
    budget = SendBudget(limit=100)
    order: list[str] = []
    gate = asyncio.Event()

    async def send(name: str, n: int) -> None:
        async with budget.hold(n):
            order.append(name)
            await gate.wait()

    tasks = [asyncio.create_task(send(name, n)) for name, n in (("a", 60), ("b", 60), ("c", 10))]
    await _settle()
    # b does not fit next to a; c would, but must not overtake b (first come, first served)
    assert order == ["a"] and budget.used == 60 and budget.waits == 2
    gate.set()
    await asyncio.gather(*tasks)
    assert order == ["a", "b", "c"] and budget.used == 0


async def test_a_response_larger_than_the_budget_is_sent_alone() -> None:
    budget = SendBudget(limit=10)
    async with budget.hold(1_000):
        assert budget.used == 1_000
        waiter = asyncio.create_task(budget.acquire(1))
        await _settle()
        assert not waiter.done()
    await asyncio.wait_for(waiter, 1)
    budget.release(1)
    assert budget.used == 0


async def test_a_cancelled_waiter_gives_nothing_away_and_blocks_nobody() -> None:
    budget = SendBudget(limit=10)
    await budget.acquire(10)
    cancelled = asyncio.create_task(budget.acquire(5))
    after = asyncio.create_task(budget.acquire(5))
    await _settle()
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    budget.release(10)
    await asyncio.wait_for(after, 1)
    assert budget.used == 5


async def test_a_blocked_write_gives_its_bytes_back_after_stall_s_and_only_once() -> None:
    budget = SendBudget(limit=100, stall_s=0.05)
    gate = asyncio.Event()

    async def blocked_send() -> None:
        async with budget.hold(100):  # a write to a proxy that does not read
            await gate.wait()

    blocked = asyncio.create_task(blocked_send())
    await _settle()
    assert budget.used == 100
    # another response waits only until the blocked write counts as stalled, not until it completes
    await asyncio.wait_for(budget.acquire(60), 5)
    assert budget.stalled == 1 and budget.used == 60
    gate.set()
    await blocked  # completing later gives nothing back twice
    assert budget.used == 60
    budget.release(60)
    assert budget.used == 0


async def test_stalled_writes_give_back_no_more_than_max_stalled_bytes() -> None:
    """Slow writes (10 MB clusters responses at 2,000 proxies, under load) must not each give their bytes back:
    past max_stalled bytes of stalled writes a response waits until one of them completes."""
    budget = SendBudget(limit=100, stall_s=0.05, max_stalled=150)
    gates = [asyncio.Event() for _ in range(3)]

    async def blocked_send(gate: asyncio.Event) -> None:
        async with budget.hold(100):
            await gate.wait()

    first = asyncio.create_task(blocked_send(gates[0]))
    await _settle()
    second = asyncio.create_task(blocked_send(gates[1]))  # goes once the first counts as stalled
    await asyncio.sleep(0.3)
    assert budget.stalled == 1 and budget.stalled_bytes == 100 and budget.used == 100
    third = asyncio.create_task(blocked_send(gates[2]))
    await asyncio.sleep(0.3)
    assert not third.done() and budget.used == 100  # the second's bytes are not given back: 200 > 150
    gates[0].set()  # the first completes: its stalled bytes are done, the second may stall now
    await first
    await asyncio.wait_for(_until(lambda: budget.stalled == 2), 5)
    assert budget.stalled_bytes == 100 and budget.used == 100  # the third holds the budget now
    for gate in gates[1:]:
        gate.set()
    await asyncio.gather(second, third)
    assert budget.used == 0 and budget.stalled_bytes == 0


async def _until(check) -> None:
    while not check():
        await asyncio.sleep(0.01)
