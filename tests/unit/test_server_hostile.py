"""Hostile and slow xDS clients against the ADS server, over real gRPC on loopback (issue 13).

Probed on main: 60 streams that never read their responses stalled every push to every proxy (the shared
in-flight byte budget was held while their writes blocked); a request with 100k names was stored whole; a node id
with a newline forged log lines. Here: a blocked write stops holding the budget after `SendBudget.stall_s` and the
stream is cut after the write timeout (DEADLINE_EXCEEDED, Istio's status for PILOT_XDS_SEND_TIMEOUT, counted in
Istio's pilot_xds_write_timeout); requests over a bound end their stream with a gRPC status naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from sailmesh.server.ads import AdsServer
from sailmesh.server.budget import SendBudget
from sailmesh.testing.ads_client import AdsClient
from sailmesh.testing.static_source import StaticSource
from sailmesh.testing.waiting import await_for
from sailmesh.xds.push import PushRequest
from sailmesh.xds.types import CLUSTER

# 400 ServiceEntries' worth of clusters: one CDS response is ~0.8 MB, so a few pushes fill a non-reading client's
# HTTP/2 window and socket buffers and the server's next write blocks.
CLUSTERS = 400


def clusters(version: int) -> dict[str, cluster_pb2.Cluster]:
    out = {}
    for i in range(CLUSTERS):
        c = cluster_pb2.Cluster(name=f"outbound|80||svc{i}.ns.svc.cluster.local", type=cluster_pb2.Cluster.STRICT_DNS)
        c.load_assignment.cluster_name = f"v{version}-" + "x" * 2000
        out[c.name] = c
    return out


class Silent:
    """A client that opens an ADS stream, asks for clusters and never reads a response."""

    def __init__(self, target: str, node_id: str, *, delta: bool = False) -> None:
        self.channel = grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self.call = stub.DeltaAggregatedResources() if delta else stub.StreamAggregatedResources()
        self.node_id = node_id

    async def ask(self, type_url: str = CLUSTER, **fields: object) -> None:
        await self.call.write(discovery_pb2.DiscoveryRequest(node={"id": self.node_id}, type_url=type_url,
                                                             **fields))  # type: ignore[arg-type]

    async def status(self, timeout: float = 10.0) -> grpc.StatusCode:
        """Read until the stream ends; the status code it ended with."""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    if await self.call.read() is grpc.aio.EOF:
                        return await self.call.code()
                except grpc.aio.AioRpcError as e:
                    return e.code()

    async def close(self) -> None:
        self.call.cancel()
        await self.channel.close()


@pytest.fixture
def source() -> StaticSource:
    s = StaticSource()
    s.set(CLUSTER, clusters(0))
    return s


async def _stall(server: AdsServer, source: StaticSource, good: AdsClient, silent: list[Silent], pushes: int) -> None:
    """Push new clusters `pushes` times; after each, the well-behaved client must get them (poll with deadline)."""
    for k in range(1, pushes + 1):
        server.push(PushRequest(source.set(CLUSTER, clusters(k))))
        # the deadline is far below the write timeout: the stalled streams are all still connected meanwhile
        await good.wait_responses(CLUSTER, k + 1, timeout=20)
        assert server.connection_count() == len(silent) + 1


@pytest.mark.parametrize("throttle", [0, 2])
async def test_streams_that_never_read_do_not_delay_pushes_to_a_well_behaved_proxy(source: StaticSource,
                                                                                   throttle: int) -> None:
    # A budget of 2 MB (64 MB in production): two blocked ~0.8 MB writes held it all before the fix. With a push
    # throttle of 2 slots, the 4 stalled streams would hold both slots, but a stalled write gives its slot back.
    server = AdsServer(source, write_timeout=120, budget=SendBudget(2 * 2**20), push_throttle=throttle)
    await server.serve("127.0.0.1", 0)
    target = f"127.0.0.1:{server.port}"
    silent = [Silent(target, f"silent-{i}") for i in range(4)]
    try:
        for s in silent:
            await s.ask()
        async with AdsClient(target, "good", keep_log=False) as good:
            await good.wait_responses(CLUSTER, 1, timeout=20)
            await _stall(server, source, good, silent, pushes=10)
            # the silent streams did stall (their writes blocked and gave the budget back), and were not cut
            assert server.budget.stalled >= len(silent)
            versions = {c.node_id: c.types[CLUSTER].sent_version for c in server.connections()}
            assert all(versions[s.node_id] != versions["good"] for s in silent)
            assert server.metrics.write_timeouts.value() == 0
    finally:
        for s in silent:
            await s.close()
        await server.stop(0)


async def test_a_stream_whose_write_blocks_past_the_write_timeout_is_cut(source: StaticSource, caplog) -> None:
    server = AdsServer(source, write_timeout=2, budget=SendBudget(2 * 2**20))
    await server.serve("127.0.0.1", 0)
    target = f"127.0.0.1:{server.port}"
    silent = [Silent(target, f"silent-{i}\nFORGED proxy connected") for i in range(2)]
    caplog.set_level(logging.INFO, logger="sailmesh")
    try:
        for s in silent:
            await s.ask()
        async with AdsClient(target, "good", keep_log=False) as good:
            await good.wait_responses(CLUSTER, 1, timeout=20)
            pushes = 0
            while server.connection_count() > 1:  # push until both silent streams block and are cut
                pushes += 1
                assert pushes < 200, "the silent streams were never cut"
                server.push(PushRequest(source.set(CLUSTER, clusters(pushes))))
                await good.wait_responses(CLUSTER, pushes + 1, timeout=20)
            assert server.metrics.write_timeouts.value() == 2
            for s in silent:  # reading again, the client learns why (after what was already buffered)
                assert await s.status() == grpc.StatusCode.DEADLINE_EXCEEDED
            # the good proxy still gets pushes
            server.push(PushRequest(source.set(CLUSTER, clusters(pushes + 1))))
            await good.wait_responses(CLUSTER, pushes + 2, timeout=20)
        cut = [r.getMessage() for r in caplog.records if "ending the stream" in r.getMessage()]
        assert len(cut) == 2 and all("blocked for 2s" in m for m in cut)
        assert not [r for r in caplog.records if r.name.startswith("sailmesh") and "\n" in r.getMessage()]
    finally:
        for s in silent:
            await s.close()
        await server.stop(0)


async def test_a_client_flooding_requests_is_held_back_by_flow_control(source: StaticSource) -> None:
    """A client that never reads and sends requests as fast as it can: the server stops reading once its queue
    is full (before: every request read was queued, without bound), so the client's writes block instead."""
    server = AdsServer(source, write_timeout=120, budget=SendBudget(2 * 2**20))
    await server.serve("127.0.0.1", 0)
    flood = Silent(f"127.0.0.1:{server.port}", "flood")
    limit = server.limits.queued_requests
    names = [f"outbound|80||svc{i}.ns.svc.cluster.local" for i in range(50)]

    async def write_all() -> None:
        await flood.ask()
        for i in range(5_000):  # each a new subscription (no nonce): each must be answered
            await flood.call.write(discovery_pb2.DiscoveryRequest(type_url=CLUSTER, resource_names=[*names, str(i)]))

    writer = asyncio.create_task(write_all())
    try:
        async def full() -> bool:
            conns = server.connections()
            return writer.done() or (bool(conns) and conns[0].queued_requests >= limit)
        await await_for(full, timeout=60, what="the server's request queue full")
        assert not writer.done(), "every request was read: nothing held the client back"
        for _ in range(20):  # it stays at the limit while the writer is blocked
            assert server.connections()[0].queued_requests <= limit
            await asyncio.sleep(0.05)
        assert not writer.done()
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError, asyncio.InvalidStateError):
            await writer
        await flood.close()
        await server.stop(0)
