"""A connection's request intake: plain ACKs are recorded by the reader, anything else goes through the loop."""

from __future__ import annotations

import asyncio

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from sailmesh.server.connection import Wakeup
from sailmesh.server.metrics import XdsMetrics
from sailmesh.server.sotw import SotwConnection
from sailmesh.testing.static_source import StaticSource
from sailmesh.xds.types import CLUSTER, ENDPOINT


async def _subscribed() -> tuple[SotwConnection, list[bytes]]:
    source = StaticSource()
    conn = SotwConnection("p-1", base_pb2.Node(id="p"), source.proxy_connected(base_pb2.Node(id="p")), source,
                          XdsMetrics())
    sent: list[bytes] = []

    async def send(response: object) -> None:
        assert isinstance(response, bytes)
        sent.append(response)

    await conn.handle_request(discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=["a"]), send)
    return conn, sent


async def test_a_plain_ack_is_recorded_without_waking_the_loop() -> None:
    conn, sent = await _subscribed()
    st = conn.types[ENDPOINT]
    response = discovery_pb2.DiscoveryResponse.FromString(sent[0])
    conn.receive(discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=["a"],
                                                version_info=response.version_info,
                                                response_nonce=response.nonce))
    assert not conn._requests and st.acked_nonce == response.nonce and st.acked_version == st.sent_version


async def test_a_changed_subscription_a_nack_or_a_stale_nonce_go_through_the_loop() -> None:
    conn, sent = await _subscribed()
    nonce = discovery_pb2.DiscoveryResponse.FromString(sent[0]).nonce
    for request in (
        discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=["a", "b"], response_nonce=nonce),
        discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=["a"], response_nonce=nonce,
                                       error_detail={"message": "bad"}),
        discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=["a"], response_nonce="old"),
        discovery_pb2.DiscoveryRequest(type_url=CLUSTER),  # a new type
    ):
        conn.receive(request)
    assert len(conn._requests) == 4 and not conn.types[ENDPOINT].acked_nonce


async def test_an_ack_naming_the_same_resources_in_another_order_is_an_ack_and_one_swapped_name_is_not() -> None:
    """An ACK is compared with the subscription without building a set of its names (the reader does this for every
    ACK of thousands of EDS names); the answer must be the set comparison's: same names in any order = an ACK, as
    many names with one of them different = a subscription change (xDS SotW: the request's names are the whole
    subscription)."""
    conn, sent = await _subscribed()
    nonce = discovery_pb2.DiscoveryResponse.FromString(sent[0]).nonce
    conn.receive(discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=["a", "b"], response_nonce=nonce))
    await conn.handle_request(conn._requests.popleft(), _collect(sent))  # subscribe to a and b
    st = conn.types[ENDPOINT]
    assert st.names == {"a", "b"} and len(sent) == 2
    response = discovery_pb2.DiscoveryResponse.FromString(sent[1])
    conn.receive(discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=["b", "a"],
                                                version_info=response.version_info, response_nonce=response.nonce))
    assert not conn._requests and st.acked_nonce == response.nonce
    conn.receive(discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=["a", "c"],
                                                version_info=response.version_info, response_nonce=response.nonce))
    assert len(conn._requests) == 1
    await conn.handle_request(conn._requests.popleft(), _collect(sent))
    assert st.names == {"a", "c"} and len(sent) == 3


def _collect(sent: list[bytes]):
    async def send(response: object) -> None:
        assert isinstance(response, bytes)
        sent.append(response)
    return send


async def test_wakeup_wakes_its_waiter_and_stays_set_until_cleared() -> None:
    wake = Wakeup()
    waiter = asyncio.create_task(wake.wait())
    await asyncio.sleep(0)
    assert not waiter.done()
    wake.set()
    await asyncio.wait_for(waiter, 1)
    await asyncio.wait_for(wake.wait(), 1)  # still set
    wake.clear()
    late = asyncio.create_task(wake.wait())
    await asyncio.sleep(0)
    assert not late.done()
    late.cancel()
    await asyncio.gather(late, return_exceptions=True)
    assert wake._fut is None
