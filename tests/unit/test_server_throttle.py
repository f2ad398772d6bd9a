"""The push throttle (Istio's PILOT_PUSH_THROTTLE: connections sending a push at once) and the new-stream rate
limit (Istio's PILOT_MAX_REQUESTS_PER_SECOND: a token bucket, a wait of at most one second, RESOURCE_EXHAUSTED
beyond it), on their own and in the ADS server over real gRPC on loopback."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from envoy.config.core.v3 import base_pb2

from sailmesh.server.ads import AdsServer
from sailmesh.server.throttle import PushSlots, StreamRate
from sailmesh.testing.ads_client import start_fleet
from sailmesh.testing.waiting import await_for
from sailmesh.xds.push import PushRequest
from sailmesh.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE
from tests.unit.test_server_ads import cla, eds_cluster, rds_listener, route, source  # noqa: F401  (fixture)
from tests.unit.test_server_limits import Raw


def sample(server: AdsServer, name: str) -> float:
    """One unlabelled sample from the server's metrics registry (Prometheus text)."""
    lines = [x for x in server.metrics.registry.render().splitlines() if x.startswith(name + " ")]
    assert lines, f"{name} not exported"
    return float(lines[0].split()[-1])


def test_slots_queue_first_come_first_served_and_wake_the_next() -> None:
    slots, woken = PushSlots(2), []
    assert slots.claim("a", lambda: woken.append("a")) and slots.claim("b", lambda: woken.append("b"))
    assert not slots.claim("c", lambda: woken.append("c"))
    assert not slots.claim("d", lambda: woken.append("d"))
    assert not slots.claim("c", lambda: woken.append("c"))  # asking again keeps its place, queued once
    assert (slots.busy, slots.queued, slots.waits) == (2, 2, 2)
    slots.release("a")
    assert woken == ["c"] and slots.claim("c", lambda: None)
    slots.leave("d")  # gone while queued: never woken
    slots.release("b")
    slots.release("c")
    assert woken == ["c"] and (slots.busy, slots.queued) == (0, 0)


def test_slots_release_keeps_a_queued_holder_queued() -> None:
    slots, woken = PushSlots(1), []
    slots.claim("a", lambda: None)
    slots.claim("b", lambda: woken.append("b"))
    slots.release("b")  # b holds nothing: still queued
    slots.release("a")
    assert woken == ["b"]


def test_a_push_under_way_goes_first() -> None:
    slots, woken = PushSlots(1), []
    slots.claim("a", lambda: None)
    slots.claim("new", lambda: woken.append("new"))
    slots.claim("resumed", lambda: woken.append("resumed"), front=True)  # gave its slot back for an ACK
    slots.release("a")
    assert woken == ["resumed"]


def test_no_limit_never_queues() -> None:
    slots = PushSlots(0)
    assert all(slots.claim(i, lambda: None) for i in range(1000))
    assert slots.waits == 0


def test_stream_rate_is_a_token_bucket_with_a_one_second_wait() -> None:
    """Go's rate.Limiter.Wait under a one-second deadline (Istio's WaitForRequestLimit): a turn within the deadline
    is reserved, a later one is refused without taking a token."""
    rate = StreamRate(10, burst=1)
    delays = [rate.reserve(now=100.0) for _ in range(13)]
    assert delays[0] == 0.0
    assert delays[1:11] == pytest.approx([0.1 * i for i in range(1, 11)])
    assert delays[11] is None and delays[12] is None
    assert (rate.admitted, rate.refused) == (11, 2)
    assert rate.reserve(now=101.05) is not None  # time refills the bucket


def test_zero_rate_admits_everything() -> None:
    rate = StreamRate(0)
    assert all(rate.reserve(now=1.0) == 0.0 for _ in range(1000))


@pytest.fixture
async def throttled(source):  # noqa: F811  (the fixture above)
    srv = AdsServer(source, push_throttle=2)
    await srv.serve("127.0.0.1", 0)
    try:
        yield srv
    finally:
        await srv.stop(0)


async def test_a_push_reaches_every_proxy_through_two_slots(throttled, source):  # noqa: F811
    fleet = await start_fleet(f"127.0.0.1:{throttled.port}", 12)
    try:
        await fleet.wait_synced(30)
        source.set(ROUTE, {"r1": route("r1", "v2"), "r2": route("r2", "two")})
        source.set(CLUSTER, {"c1": eds_cluster("c1"), "c2": eds_cluster("c2")})
        source.set(ENDPOINT, {"c1": cla("c1"), "c2": cla("c2", 9090)})
        source.set(LISTENER, {"l1": rds_listener("l1", "r1", port=10001)})
        assert throttled.push(PushRequest(version=source.version())) == 12
        await fleet.wait_responses(ROUTE, [2] * 12, timeout=30)
        await fleet.wait_responses(CLUSTER, [2] * 12, timeout=30)
        assert throttled.slots.waits >= 10  # at most two sent at once: the others queued
        assert throttled.slots.busy == 0 and throttled.slots.queued == 0
        assert sample(throttled, "pilot_proxy_queue_time_count") == throttled.slots.waits
    finally:
        await fleet.close()
    await await_for(lambda: asyncio.sleep(0, throttled.connection_count() == 0), timeout=10, what="disconnects")
    assert throttled.slots.busy == 0 and throttled.slots.queued == 0


async def test_a_push_of_one_type_queues_nobody(source):  # noqa: F811
    """The slot is held while a response is generated, not while the push's last write completes: a push of one
    type (a VirtualService's routes) through one slot queues no connection (the writes' bytes are bounded by the
    send budget). Waiting for each write held 500 proxies in five waves behind 100 slots (session 8)."""
    srv = AdsServer(source, push_throttle=1)
    await srv.serve("127.0.0.1", 0)
    fleet = await start_fleet(f"127.0.0.1:{srv.port}", 12)
    try:
        await fleet.wait_synced(30)
        source.set(ROUTE, {"r1": route("r1", "v2"), "r2": route("r2", "two")})
        assert srv.push(PushRequest(version=source.version(), type_urls=frozenset({ROUTE}))) == 12
        await fleet.wait_responses(ROUTE, [2] * 12, timeout=30)
        assert srv.slots.waits == 0 and srv.slots.busy == 0
    finally:
        await fleet.close()
        await srv.stop(0)


async def test_streams_past_the_rate_are_refused_with_resource_exhausted(source):  # noqa: F811
    srv = AdsServer(source, streams_per_s=2)  # burst 1: 1 now, then one per 0.5 s, at most 1 s of waiting
    await srv.serve("127.0.0.1", 0)
    raws = [Raw(srv.port) for _ in range(8)]  # streams that send nothing: the limit applies before the first read
    try:
        raced: set[int] = set()
        for i, r in enumerate(raws):
            try:
                await r.send(node=base_pb2.Node(id="p"), type_url=CLUSTER)
            except asyncio.InvalidStateError:
                pass  # refused before this write (the limit applies before the first read): ended() reads why
            except grpc.aio.AioRpcError:
                raced.add(i)  # refused while this write was under way: the client's core ends the call INTERNAL
        ended = await asyncio.gather(*(r.ended(timeout=0.5) for r in raws), return_exceptions=True)
        refused = [e for e in ended if isinstance(e, tuple)]
        # at most 3-4 admitted (now, +0.5 s, +1 s, and one more if the clock moved): they stay open
        assert 4 <= len(refused) <= 5, ended
        assert all(e == (grpc.StatusCode.RESOURCE_EXHAUSTED, "request rate limit exceeded")
                   for i, e in enumerate(ended) if isinstance(e, tuple) and i not in raced), (ended, raced)
        assert srv.stream_rate.refused == len(refused)
        assert sample(srv, "sailmesh_xds_streams_rate_limited") == len(refused)
    finally:
        for r in raws:
            await r.close()
        await srv.stop(0)


def test_settings_read_istio_style_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    from sailmesh.settings import Settings

    monkeypatch.delenv("SAILMESH_PUSH_THROTTLE", raising=False)
    monkeypatch.delenv("SAILMESH_MAX_REQUESTS_PER_SECOND", raising=False)
    assert (Settings().push_throttle, Settings().xds_streams_per_s) == (100, 0.0)  # measured defaults
    monkeypatch.setenv("SAILMESH_PUSH_THROTTLE", "0")
    monkeypatch.setenv("SAILMESH_MAX_REQUESTS_PER_SECOND", "12.5")
    assert (Settings().push_throttle, Settings().xds_streams_per_s) == (0, 12.5)
