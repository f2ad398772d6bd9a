"""Leader election on a Lease with client-go's rules, against an in-memory API that checks resourceVersions
(an update with a stale one gets 409, as the API server answers)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from typing import Any

import pytest

from sailmesh.errors import PlatformError
from sailmesh.platform.kube.client import KubeApiError, KubeConnection
from sailmesh.platform.kube.lease import LeaderElector, LeaseTimings
from sailmesh.testing.waiting import await_for

FAST = LeaseTimings(lease_duration=0.6, renew_deadline=0.4, retry_period=0.05)
STEADY = LeaseTimings(lease_duration=3.0, renew_deadline=2.0, retry_period=0.1)  # loaded machines renew late


class FakeApi:
    """One Lease object behind get_json/send_json; `down` makes every call fail (a partitioned replica)."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.writes: list[str] = []

    def conn(self, down: list[bool]) -> KubeConnection:
        api = self

        class Conn:
            async def get_json(self, path: str, params: Any = None) -> dict[str, Any]:
                if down[0]:
                    raise KubeApiError(503, "ServiceUnavailable", "partitioned")
                if api.lease is None:
                    raise KubeApiError(404, "NotFound", "lease not found")
                return copy.deepcopy(api.lease)

            async def send_json(self, method: str, path: str, body: dict[str, Any], *a: Any, **k: Any
                                ) -> dict[str, Any]:
                if down[0]:
                    raise KubeApiError(503, "ServiceUnavailable", "partitioned")
                if method == "POST" and api.lease is not None:
                    raise KubeApiError(409, "AlreadyExists", "exists")
                if method == "PUT" and body["metadata"].get("resourceVersion") != str(api.version):
                    raise KubeApiError(409, "Conflict", "the object has been modified")
                api.version += 1
                api.lease = copy.deepcopy(body)
                api.lease["metadata"]["resourceVersion"] = str(api.version)
                api.writes.append(f"{method} {body['spec']['holderIdentity']}")
                return copy.deepcopy(api.lease)

        return Conn()  # type: ignore[return-value]


def elector(api: FakeApi, name: str, down: list[bool] | None = None, timings: LeaseTimings = FAST
            ) -> LeaderElector:
    return LeaderElector(api.conn(down or [False]), "istio-system", identity=name, timings=timings)


@contextlib.asynccontextmanager
async def running(e: LeaderElector):  # type: ignore[no-untyped-def]
    task = asyncio.create_task(e.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _true(v: bool) -> bool:
    return v


async def test_one_leads_the_other_waits_and_a_clean_stop_hands_over_at_once() -> None:
    api = FakeApi()
    frozen: list[float] = []  # once set, b's clock stands still: b can then only take a lease that was released
    a, b = elector(api, "a", timings=STEADY), elector(api, "b", timings=STEADY)
    b.clock = lambda: frozen[0] if frozen else time.monotonic()
    started: list[str] = []

    async def task() -> None:
        started.append("a")
        await asyncio.Event().wait()

    a.add_task("work", task)
    async with running(a) as ta:
        await await_for(lambda: _true(a.is_leader), timeout=5)
        async with running(b):
            await asyncio.sleep(STEADY.lease_duration * 1.5)  # a renews: b never takes over
            assert a.is_leader and not b.is_leader and started == ["a"]
            assert api.lease is not None and api.lease["spec"]["leaseTransitions"] == 0
            frozen.append(time.monotonic())  # from here on, a's lease never expires by b's clock
            ta.cancel()  # clean stop: a releases (holder "", 1 s)
            with contextlib.suppress(asyncio.CancelledError):
                await ta
            assert not a.is_leader and "PUT " in api.writes  # the release: an update with no holder
            # b takes over although, by its clock, a's lease has not expired: only the release lets it in (a
            # generous deadline: a loaded machine can stall the loop for seconds; the frozen clock keeps the meaning)
            await await_for(lambda: _true(b.is_leader), timeout=30, interval=0.01,
                            what="b takes the released lease")
            assert api.lease["spec"]["holderIdentity"] == "b" and api.lease["spec"]["leaseTransitions"] == 1


async def test_a_partitioned_leader_stops_leading_before_another_takes_over() -> None:
    api = FakeApi()
    down = [False]
    a, b = elector(api, "a", down), elector(api, "b")
    async with running(a):
        await await_for(lambda: _true(a.is_leader), timeout=5)
        async with running(b):
            await asyncio.sleep(FAST.retry_period * 3)
            down[0] = True  # a can no longer renew
            lost_at = took_at = 0.0
            loop = asyncio.get_running_loop()
            while not (lost_at and took_at):
                if not lost_at and not a.is_leader:
                    lost_at = loop.time()
                if not took_at and b.is_leader:
                    took_at = loop.time()
                await asyncio.sleep(0.005)
            # the renew deadline (0.4 s) ends a's term before the lease duration (0.6 s) lets b in
            assert lost_at < took_at
            assert api.lease is not None and api.lease["spec"]["holderIdentity"] == "b"


def test_client_gos_timing_checks() -> None:
    assert LeaseTimings.scaled(15.0) == LeaseTimings(15.0, 10.0, 2.0)
    with pytest.raises(PlatformError):
        LeaseTimings(lease_duration=5, renew_deadline=5, retry_period=1)
    with pytest.raises(PlatformError):
        LeaseTimings(lease_duration=15, renew_deadline=2, retry_period=2)
