"""SotW endpoint pushes send only the assignments they update (xDS "Grouping Resources into Responses")."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2

from sailmesh.server.ads import AdsServer
from sailmesh.testing.ads_client import AdsClient
from sailmesh.testing.static_source import StaticSource
from sailmesh.testing.waiting import await_for
from sailmesh.xds.push import PushRequest
from sailmesh.xds.types import CLUSTER, ENDPOINT
from tests.unit import test_server_ads as ads

NAMES = ("c1", "c2", "c3")
server = ads.server  # the ADS server fixture, serving this module's `source`


@pytest.fixture
def source() -> StaticSource:
    s = StaticSource()
    s.set(CLUSTER, {n: ads.eds_cluster(n) for n in NAMES})
    s.set(ENDPOINT, {n: ads.cla(n) for n in NAMES})
    return s


def _ports(resp: discovery_pb2.DiscoveryResponse) -> dict[str, int]:
    out = {}
    for r in resp.resources:
        c = endpoint_pb2.ClusterLoadAssignment.FromString(r.value)
        out[c.cluster_name] = c.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value
    return out


def _held(server: AdsServer) -> int:
    """proxy-status's resource count of p1's endpoints: what the proxy holds."""
    return ads.status(server, "p1").types[ENDPOINT].resource_count


async def _push(server: AdsServer, source: StaticSource, endpoints: dict[str, int]) -> None:
    source.set(ENDPOINT, {n: ads.cla(n, port) for n, port in endpoints.items()})
    server.push(PushRequest(version=source.version(), type_urls=frozenset({ENDPOINT})))


async def test_an_endpoint_push_sends_only_the_updated_assignments(server, source):
    """The xDS protocol: over SotW only Listener and Cluster responses hold the whole state; an EDS response may
    carry a subset, and the proxy keeps the assignments left out. Istio's incremental EDS push sends only the
    updated services' assignments; so does this one once the proxy ACKed the last response."""
    async with grpc.aio.insecure_channel(ads.target(server)) as channel:
        call, eds = await ads._clusters_and_endpoints_of_c1(server, channel, NAMES)
        assert sorted(_ports(eds)) == list(NAMES)
        await _push(server, source, {"c1": 8080, "c2": 9090, "c3": 8080})
        eds2 = await asyncio.wait_for(call.read(), 5)
        assert _ports(eds2) == {"c2": 9090}
        assert _held(server) == 3
        await call.write(discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, version_info=eds2.version_info,
                                                        resource_names=NAMES, response_nonce=eds2.nonce))
        await ads.synced_on_server(server, "p1", (CLUSTER, ENDPOINT))
        call.cancel()


async def test_an_unacked_response_is_followed_by_every_assignment(server, source):
    """What the proxy holds is not known while the last response is not ACKed (or was rejected): all are sent."""
    async with grpc.aio.insecure_channel(ads.target(server)) as channel:
        call, _eds = await ads._clusters_and_endpoints_of_c1(server, channel, NAMES, ack=False)
        await _push(server, source, {"c1": 8080, "c2": 9090, "c3": 8080})
        eds2 = await asyncio.wait_for(call.read(), 5)
        assert _ports(eds2) == {"c1": 8080, "c2": 9090, "c3": 8080}
        call.cancel()


async def test_an_added_or_removed_assignment_sends_every_assignment(server, source):
    """A push that removes a subscribed assignment cannot say so in a subset: the whole set goes out."""
    async with grpc.aio.insecure_channel(ads.target(server)) as channel:
        call, _eds = await ads._clusters_and_endpoints_of_c1(server, channel, NAMES)
        await _push(server, source, {"c1": 8080, "c2": 9090})
        eds2 = await asyncio.wait_for(call.read(), 5)
        assert _ports(eds2) == {"c1": 8080, "c2": 9090}
        call.cancel()


async def test_a_simulated_proxy_keeps_the_assignments_left_out(server, source):
    """The test client behaves like Envoy: after a subset push it holds every subscribed assignment, new and old."""
    client = AdsClient(ads.target(server), "p2")
    await client.start()
    try:
        await asyncio.wait_for(client.synced.wait(), 5)
        await await_for(lambda: asyncio.sleep(0, len(client.resources(ENDPOINT)) == 3), timeout=5)
        await _push(server, source, {"c1": 7070, "c2": 8080, "c3": 8080})

        def ports() -> dict[str, int]:
            return {n: _ports(discovery_pb2.DiscoveryResponse(resources=[a]))[n]
                    for n, a in client.resources(ENDPOINT).items()}
        await await_for(lambda: asyncio.sleep(0, ports() == {"c1": 7070, "c2": 8080, "c3": 8080}), timeout=5)
    finally:
        await client.close()


def test_the_names_part_of_a_request_is_what_lies_between_its_version_and_its_type_and_nonce():
    from sailmesh.server.sotw import _names_part

    req = discovery_pb2.DiscoveryRequest(version_info="v1", resource_names=["a", "b"], type_url=ENDPOINT,
                                         response_nonce="n1")
    names = discovery_pb2.DiscoveryRequest(resource_names=["a", "b"]).SerializeToString()
    assert _names_part(req, req.SerializeToString()) == names
    other = discovery_pb2.DiscoveryRequest(version_info="v2", resource_names=["a", "b"], type_url=ENDPOINT,
                                           response_nonce="n2")
    assert _names_part(other, other.SerializeToString()) == names  # another ACK of the same names
    assert _names_part(req, other.SerializeToString()) is None  # bytes of another layout: not recognised


async def test_an_ack_with_other_names_of_the_same_length_is_a_subscription_change(server, source):
    """ACKs whose names repeat the last verified ACK byte for byte are taken without reading the names; a request
    answering the same nonce with other names (same count, same byte length) must still be answered."""
    async with grpc.aio.insecure_channel(ads.target(server)) as channel:
        call, _eds = await ads._clusters_and_endpoints_of_c1(server, channel, ("c1", "c2"))
        await _push(server, source, {"c1": 8080, "c2": 9090, "c3": 8080})
        eds2 = await asyncio.wait_for(call.read(), 5)
        assert _ports(eds2) == {"c2": 9090}
        await call.write(discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, version_info=eds2.version_info,
                                                        resource_names=["c1", "c3"], response_nonce=eds2.nonce))
        eds3 = await asyncio.wait_for(call.read(), 5)
        assert _ports(eds3) == {"c1": 8080, "c3": 8080}
        assert ads.status(server, "p1").types[ENDPOINT].names == ("c1", "c3")
        call.cancel()


async def test_an_ack_repeating_the_verified_names_is_taken_from_its_bytes_and_anything_else_is_not(server, source):
    """An ACK of the current response whose names repeat, byte for byte, the last ACK found to keep the subscription
    is recorded without parsing it (an unscoped EDS ACK names every cluster); a NACK, a stale nonce, other names or
    another type's bytes are left to the parsed path."""
    async with grpc.aio.insecure_channel(ads.target(server)) as channel:
        call, _eds = await ads._clusters_and_endpoints_of_c1(server, channel, NAMES)
        conn = next(c for c in server._connections.values() if c.node_id == "p1")
        await _push(server, source, {"c1": 8080, "c2": 9090, "c3": 8080})
        eds2 = await asyncio.wait_for(call.read(), 5)

        def ack(**fields: object) -> bytes:
            req = dict(type_url=ENDPOINT, version_info=eds2.version_info, resource_names=NAMES,
                       response_nonce=eds2.nonce)
            req.update(fields)
            return discovery_pb2.DiscoveryRequest(**req).SerializeToString()

        nack = discovery_pb2.DiscoveryRequest.FromString(ack())
        nack.error_detail.message = "rejected"
        for other in (nack.SerializeToString(), ack(response_nonce="stale"), ack(resource_names=["c1", "c2"]),
                      ack(type_url=CLUSTER), ack(version_info="other"), ack() + b"\x10\x01"):
            assert not conn.try_ack_bytes(other)
        st = conn.types[ENDPOINT]
        assert st.acked_nonce != eds2.nonce
        assert conn.try_ack_bytes(ack())
        assert (st.acked_version, st.acked_nonce) == (eds2.version_info, eds2.nonce)
        await ads.synced_on_server(server, "p1", (CLUSTER, ENDPOINT))
        call.cancel()
