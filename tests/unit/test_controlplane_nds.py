"""The name-table stream (controlplane/nds.py) served over real gRPC: what a stream keeps between changes."""

from __future__ import annotations

import asyncio
import gc
import sys
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from sailmesh.controlplane import nds
from sailmesh.controlplane.nds import NameTableService
from sailmesh.xds.nds import NAME_TABLE_TYPE, NDS_FULL_METHOD, NameTable
from tests.unit.test_generate_support import make_snapshot, service

NODE_ID = "sidecar~10.0.0.5~app-0.default~default.svc.cluster.local"


async def _serve(names: NameTableService) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((names.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def test_a_stream_holds_no_table_response_or_request_between_changes(monkeypatch: Any) -> None:
    """Between changes a stream keeps only the digest of the table it sent: not the NameTable, not its bytes, not
    the response, not the agent's last request. grpc.aio's request iterator holds the last request it yielded and
    its loop over yielded responses the last response; the handler's variables held the table and its bytes too:
    every agent's table, three or four times, for as long as nothing changed."""
    tables: list[Any] = []
    requests: list[Any] = []
    build = nds.build_name_table

    def keep_table(snapshot: Any, proxy: Any) -> Any:
        tables.append(build(snapshot, proxy))
        return tables[-1]

    def keep_request(data: bytes) -> Any:
        requests.append(discovery_pb2.DiscoveryRequest.FromString(data))
        return requests[-1]

    monkeypatch.setattr(nds, "build_name_table", keep_table)
    monkeypatch.setattr(nds, "_parse_request", keep_request)
    snapshot = make_snapshot(services=[service("reviews", addresses=("10.96.0.10",))])
    names = NameTableService(lambda: snapshot)
    server, port = await _serve(names)
    outbox: asyncio.Queue[Any] = asyncio.Queue()
    await outbox.put(discovery_pb2.DiscoveryRequest(type_url=NAME_TABLE_TYPE, node={"id": NODE_ID}))

    async def send() -> Any:
        while True:
            yield await outbox.get()

    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.stream_stream(NDS_FULL_METHOD,
                                         request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
                                         response_deserializer=discovery_pb2.DiscoveryResponse.FromString)(send())
            response = await call.read()
            table = NameTable.FromString(response.resources[0].value)
            assert "reviews.default.svc.cluster.local" in table.table
            await outbox.put(discovery_pb2.DiscoveryRequest(
                type_url=NAME_TABLE_TYPE, version_info=response.version_info, response_nonce=response.nonce))
            async with asyncio.timeout(10):
                while len(requests) < 2:  # the ACK reached the server
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)  # the server's reader handled it and waits for the next request
            gc.collect()
            assert names.streams == 1 and len(tables) == 1
            # `tables` and getrefcount's argument, nothing in the stream (counted outside `assert`: pytest's
            # rewriting keeps its operands)
            refs = sys.getrefcount(tables[0]), sys.getrefcount(requests[-1])  # the table, the ACK
            assert refs == (2, 2)
            names.publish()  # a new snapshot with the same table: nothing sent, nothing kept
            async with asyncio.timeout(10):
                while len(tables) < 2:
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            gc.collect()
            refs = tuple(map(sys.getrefcount, tables))
            assert refs == (2, 2)
            call.cancel()
    finally:
        await server.stop(0)
