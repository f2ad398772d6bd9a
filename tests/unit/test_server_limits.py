"""Bounded memory per xDS client and no client input ending a stream with an exception (issue 13).

Real gRPC on loopback, raw requests as a hostile client would send them. On main a request with 100k names was
stored whole (20 of them kept 200 MB), any number of type URLs each got a watch, a NACK's message was kept whatever
its size, an unserved type URL counted as an internal error and a client-chosen metric label, and a node id with a
newline forged log lines. Over-bound requests now end the stream with INVALID_ARGUMENT or RESOURCE_EXHAUSTED and a
message naming the bound; the server goes on serving everyone else.
"""

from __future__ import annotations

import asyncio
import json
import logging

import grpc
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

from sailmesh.controlplane.source import MeshSource
from sailmesh.server.ads import AdsServer
from sailmesh.server.limits import MAX_NACK_DETAIL, MAX_NAMES, MAX_NODE_ID, MAX_TYPES
from sailmesh.testing.ads_client import AdsClient
from sailmesh.testing.static_source import StaticSource
from sailmesh.testing.waiting import await_for
from sailmesh.xds.types import CLUSTER, ENDPOINT, LISTENER
from tests.unit.test_generate_support import bookinfo
from tests.unit.test_server_ads import cla, eds_cluster


@pytest.fixture
async def server():
    s = StaticSource()
    s.set(CLUSTER, {"c1": eds_cluster("c1")})
    s.set(ENDPOINT, {"c1": cla("c1")})
    srv = AdsServer(s)
    await srv.serve("127.0.0.1", 0)
    try:
        yield srv
    finally:
        await srv.stop(0)


class Raw:
    """One raw ADS stream: write any request, read responses, learn how the stream ended."""

    def __init__(self, port: int, *, delta: bool = False) -> None:
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self.call = stub.DeltaAggregatedResources() if delta else stub.StreamAggregatedResources()
        self.request = discovery_pb2.DeltaDiscoveryRequest if delta else discovery_pb2.DiscoveryRequest

    async def send(self, **fields: object) -> None:
        await self.call.write(self.request(**fields))

    async def read(self, timeout: float = 10.0) -> object:
        return await asyncio.wait_for(self.call.read(), timeout)

    async def ended(self, timeout: float = 10.0) -> tuple[grpc.StatusCode, str]:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    if await self.call.read() is grpc.aio.EOF:
                        return await self.call.code(), await self.call.details()
                except grpc.aio.AioRpcError as e:
                    return e.code(), e.details() or ""

    async def close(self) -> None:
        self.call.cancel()
        await self.channel.close()


async def _refused(server: AdsServer, *requests: dict, delta: bool = False) -> tuple[grpc.StatusCode, str]:
    raw = Raw(server.port, delta=delta)
    try:
        for r in requests:
            await raw.send(**r)
        code, details = await raw.ended()
    finally:
        await raw.close()
    # everyone else is still served
    async with AdsClient(f"127.0.0.1:{server.port}", "after") as ok:
        await asyncio.wait_for(ok.synced.wait(), 10)
    return code, details


NODE = {"id": "p1"}


async def test_too_many_names_in_one_request(server: AdsServer) -> None:
    names = [f"n{i}" for i in range(MAX_NAMES + 1)]
    code, details = await _refused(server, {"node": NODE, "type_url": ENDPOINT, "resource_names": names})
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"{MAX_NAMES + 1} resource names" in details and f"over {MAX_NAMES}" in details


async def test_too_many_names_after_the_first_request(server: AdsServer) -> None:
    names = [f"n{i}" for i in range(MAX_NAMES + 1)]
    code, _ = await _refused(server, {"node": NODE, "type_url": CLUSTER},
                             {"type_url": ENDPOINT, "resource_names": names})
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_delta_subscriptions_are_bounded_across_requests(server: AdsServer) -> None:
    half = MAX_NAMES // 2 + 1
    code, details = await _refused(
        server, {"node": NODE, "type_url": ENDPOINT, "resource_names_subscribe": [f"a{i}" for i in range(half)]},
        {"type_url": ENDPOINT, "resource_names_subscribe": [f"b{i}" for i in range(half)]}, delta=True)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "names subscribed" in details


async def test_a_long_node_id_and_large_metadata_are_refused(server: AdsServer) -> None:
    code, details = await _refused(server, {"node": {"id": "x" * (MAX_NODE_ID + 1)}, "type_url": CLUSTER})
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "node.id" in details
    md = struct_pb2.Struct()
    md.update({"BIG": "y" * 300_000})
    code, details = await _refused(server, {"node": {"id": "p1", "metadata": md}, "type_url": CLUSTER})
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "node.metadata" in details


async def test_too_many_type_urls_on_one_stream(server: AdsServer) -> None:
    requests = [{"node": NODE, "type_url": "type.googleapis.com/t0"}]
    requests += [{"type_url": f"type.googleapis.com/t{i}"} for i in range(1, MAX_TYPES + 1)]
    code, details = await _refused(server, *requests)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "type URLs" in details


async def test_a_huge_nack_message_is_stored_cut_and_the_stream_lives_on(server: AdsServer) -> None:
    raw = Raw(server.port)
    try:
        await raw.send(node=NODE, type_url=CLUSTER)
        resp = await raw.read()
        await raw.send(type_url=CLUSTER, response_nonce=resp.nonce,
                       error_detail={"code": 3, "message": "bad cluster\n" * 100_000})

        async def nacked() -> str:
            return next((c.types[CLUSTER].nack_detail for c in server.connections() if c.node_id == "p1"), "")
        detail = await await_for(nacked, timeout=10, what="the NACK recorded")
        assert len(detail) < MAX_NACK_DETAIL + 100 and "1200000 characters, cut" in detail
        await raw.send(type_url=ENDPOINT, resource_names=["c1"])  # the stream still answers
        assert (await raw.read()).type_url == ENDPOINT
    finally:
        await raw.close()


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_an_unserved_type_url_gets_no_answer_and_keeps_the_stream(delta: bool, caplog) -> None:
    """Istio answers nothing for a type it has no generator for (the proxy's initial fetch times out); the real
    Generator is behind this server, and the stream goes on serving the types it knows."""
    server = AdsServer(MeshSource(bookinfo(version=1)))
    await server.serve("127.0.0.1", 0)
    raw = Raw(server.port, delta=delta)
    caplog.set_level(logging.INFO, logger="sailmesh")
    node = {"id": "sidecar~10.0.0.9~x.default~default.svc.cluster.local",
            "metadata": struct_pb2.Struct(fields={"LABELS": struct_pb2.Value(string_value=json.dumps({"app": "x"}))})}
    try:
        await raw.send(node=node, type_url="type.googleapis.com/foo.Bar\nFORGED line")
        await raw.send(type_url="")
        await raw.send(type_url="type.googleapis.com/foo.Bar\nFORGED line", response_nonce="stale")
        await raw.send(type_url=LISTENER)
        resp = await raw.read()
        assert resp.type_url == LISTENER  # the first answer is for the served type
        st = next(c for c in server.connections())
        assert server.metrics.internal_errors.value() == 0
        assert st.types["type.googleapis.com/foo.Bar\nFORGED line"].error == "resource type not served"
        # a client-chosen type URL never becomes a metric label (the registry would grow with every one)
        metrics = server.metrics.registry.render()
        assert "Bar" not in metrics and 'pilot_xds_expired_nonce{type="other"} 1' in metrics
    finally:
        await raw.close()
        await server.stop(0)
    assert not [r for r in caplog.records if r.name.startswith("sailmesh") and "\n" in r.getMessage()]


async def test_a_node_id_with_control_characters_cannot_forge_log_lines(caplog) -> None:
    server = AdsServer(MeshSource(bookinfo(version=1)))
    await server.serve("127.0.0.1", 0)
    caplog.set_level(logging.DEBUG, logger="sailmesh")
    forged = "sidecar~10.0.0.9~x\nERROR forged.default~default.svc.cluster.local\r\x1b[2J"
    try:
        async with AdsClient(f"127.0.0.1:{server.port}", forged) as client:
            await asyncio.wait_for(client.synced.wait(), 10)
    finally:
        await server.stop(0)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("sailmesh")]
    assert any("x\\nERROR forged" in m for m in lines)  # logged, escaped
    assert not [m for m in lines if any(c in m for c in "\n\r\x1b")]
