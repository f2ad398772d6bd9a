"""The ADS server against the fake Envoy-like client over real gRPC on loopback (SotW and delta)."""

from __future__ import annotations

import asyncio
import gc
import sys

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from sailmesh.server import ads
from sailmesh.server.ads import AdsServer
from sailmesh.testing.ads_client import AdsClient, start_fleet
from sailmesh.testing.static_source import StaticSource, pack
from sailmesh.testing.waiting import await_for
from sailmesh.xds.push import PushRequest
from sailmesh.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE

ADS = config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(),
                                     resource_api_version=config_source_pb2.V3)


def eds_cluster(name: str) -> cluster_pb2.Cluster:
    eds = cluster_pb2.Cluster.EdsClusterConfig(eds_config=ADS, service_name=name)
    return cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS, eds_cluster_config=eds)


def cla(name: str, port: int = 8080) -> endpoint_pb2.ClusterLoadAssignment:
    c = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    ep = c.endpoints.add().lb_endpoints.add().endpoint
    ep.address.socket_address.address = "127.0.0.1"
    ep.address.socket_address.port_value = port
    return c


def rds_listener(name: str, route: str, port: int = 10000) -> listener_pb2.Listener:
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix=name, rds=hcm_pb2.Rds(route_config_name=route, config_source=ADS))
    lis = listener_pb2.Listener(name=name)
    lis.address.socket_address.address = "127.0.0.1"
    lis.address.socket_address.port_value = port
    f = lis.filter_chains.add().filters.add(name="envoy.filters.network.http_connection_manager")
    f.typed_config.CopyFrom(pack(hcm))
    return lis


def route(name: str, body: str = "ok", cluster: str = "") -> route_pb2.RouteConfiguration:
    rc = route_pb2.RouteConfiguration(name=name)
    vh = rc.virtual_hosts.add(name="all", domains=["*"])
    r = vh.routes.add()
    r.match.prefix = "/"
    if cluster:
        r.route.cluster = cluster
    else:
        r.direct_response.status = 200
        r.direct_response.body.inline_string = body
    return rc


@pytest.fixture
def source() -> StaticSource:
    s = StaticSource(refuse=lambda node: "banned node" if node.id.startswith("banned") else None)
    s.set(CLUSTER, {"c1": eds_cluster("c1")})
    s.set(ENDPOINT, {"c1": cla("c1"), "c2": cla("c2")})
    s.set(LISTENER, {"l1": rds_listener("l1", "r1")})
    s.set(ROUTE, {"r1": route("r1"), "r2": route("r2", "two")})
    return s


@pytest.fixture
async def server(source: StaticSource):
    srv = AdsServer(source)
    await srv.serve("127.0.0.1", 0)
    try:
        yield srv
    finally:
        await srv.stop(0)


def target(server: AdsServer) -> str:
    return f"127.0.0.1:{server.port}"


def status(server: AdsServer, node_id: str):
    return next(c for c in server.connections() if c.node_id == node_id)


ALL = (CLUSTER, ENDPOINT, LISTENER, ROUTE)


async def synced_on_server(server: AdsServer, node_id: str, types: tuple[str, ...] = ALL):
    async def check() -> bool:
        conns = [c for c in server.connections() if c.node_id == node_id]
        return bool(conns) and all(t in conns[0].types and conns[0].types[t].synced for t in types)
    await await_for(check, timeout=5, what=f"{node_id} synced on the server")


async def idle(server: AdsServer, node_id: str) -> None:
    """The connection has no queued push left and every response sent is ACKed."""
    conn = server._connections[next(k for k, c in server._connections.items() if c.node_id == node_id)]

    async def check() -> bool:
        return conn.pending_push is None and all(t.synced or t.nack_detail for t in conn.status().types.values())
    await await_for(check, timeout=5, what="connection idle")


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_client_subscribes_follows_references_and_acks(server, delta):
    async with AdsClient(target(server), "p1", delta=delta) as client:
        await asyncio.wait_for(client.synced.wait(), 5)
        assert set(client.resources(CLUSTER)) == {"c1"}
        assert set(client.resources(ENDPOINT)) == {"c1"}  # only what the cluster references
        assert set(client.resources(LISTENER)) == {"l1"}
        assert set(client.resources(ROUTE)) == {"r1"}
        await synced_on_server(server, "p1")
        st = status(server, "p1")
        assert st.delta is delta
        assert st.types[CLUSTER].wildcard and st.types[LISTENER].wildcard
        assert not st.types[ROUTE].wildcard and st.types[ROUTE].names == ("r1",)
        for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE):
            assert st.types[t].acked_version == st.types[t].sent_version != ""
            assert st.types[t].resource_count == 1
            assert st.types[t].nack_detail == ""


async def test_push_sends_types_in_push_order(server, source):
    async with AdsClient(target(server), "p1") as client:
        await synced_on_server(server, "p1")
        before = len(client.log)
        source.set(ROUTE, {"r1": route("r1", "v2")})
        source.set(LISTENER, {"l1": rds_listener("l1", "r1", port=10001)})
        source.set(ENDPOINT, {"c1": cla("c1", 9090)})
        source.set(CLUSTER, {"c1": eds_cluster("c1"), "c9": cluster_pb2.Cluster(name="c9")})
        server.push(PushRequest(version=source.version()))
        await await_for(lambda: asyncio.sleep(0, len(client.log) >= before + 4), timeout=5, what="4 responses")
        order = [r.type_url for r in client.log[before:before + 4]]
        assert order == [CLUSTER, ENDPOINT, LISTENER, ROUTE]


async def test_ack_records_convergence_time_and_push_counters(server, source):
    async with AdsClient(target(server), "p1"):
        await synced_on_server(server, "p1")
        source.set(CLUSTER, {"c1": eds_cluster("c1"), "c3": cluster_pb2.Cluster(name="c3")})
        server.push(PushRequest(version=source.version(), type_urls=frozenset({CLUSTER})))
        await await_for(lambda: asyncio.sleep(0, server.metrics.convergence.count(type="cds") == 1), timeout=5)
        text = server.metrics.registry.render()
        assert 'pilot_proxy_convergence_time_bucket{le="0.1",type="cds"} 1.0' in text
        assert 'pilot_proxy_convergence_time_bucket{le="30.0",type="cds"} 1.0' in text
        assert server.metrics.pushes.value(type="cds") == 2  # the first response and the push
        assert "pilot_xds 1.0" in text


async def test_nack_is_recorded_and_the_same_version_is_not_resent(server, source):
    def reject_bad_routes(type_url, resources):
        if type_url == ROUTE and any(b"BAD" in a.value for a in resources.values()):
            return "route r1: invalid regex BAD"
        return None

    async with AdsClient(target(server), "p1", nack=reject_bad_routes) as client:
        await synced_on_server(server, "p1")
        good = client.resources(ROUTE)["r1"]
        source.set(ROUTE, {"r1": route("r1", "BAD")})
        server.push(PushRequest(version=source.version()))
        await await_for(lambda: asyncio.sleep(0, status(server, "p1").types[ROUTE].nack_detail), timeout=5)
        st = status(server, "p1").types[ROUTE]
        assert st.nack_detail == "route r1: invalid regex BAD"
        assert st.nacked_version == st.sent_version != st.acked_version
        assert st.state == "STALE" and status(server, "p1").types[CLUSTER].state == "SYNCED"
        assert server.metrics.rejects.value(type="rds") == 1
        assert client.resources(ROUTE)["r1"] == good  # the proxy keeps the last accepted config
        rds_before = len(client.responses(ROUTE))
        # Another push with the same (rejected) content: nothing is sent again.
        source.bump()
        server.push(PushRequest(version=source.version()))
        await idle(server, "p1")
        assert len(client.responses(ROUTE)) == rds_before
        # A fixed route is sent, ACKed, and the NACK detail clears.
        source.set(ROUTE, {"r1": route("r1", "fixed")})
        server.push(PushRequest(version=source.version()))
        await await_for(lambda: asyncio.sleep(0, status(server, "p1").types[ROUTE].synced), timeout=5)
        assert status(server, "p1").types[ROUTE].nack_detail == ""
        assert b"fixed" in client.resources(ROUTE)["r1"].value


async def test_stale_nonce_is_ignored(server):
    async with AdsClient(target(server), "p1") as client:
        await synced_on_server(server, "p1")
        before = len(client.log)
        # A request answering a nonce the server no longer considers current, asking for other names.
        await client.send(discovery_pb2.DiscoveryRequest(type_url=ROUTE, resource_names=["r1", "r2"],
                                                         response_nonce="stale-nonce", version_info="x"))
        await await_for(lambda: asyncio.sleep(0, server.metrics.expired_nonce.value(type="rds") == 1), timeout=5)
        await idle(server, "p1")
        assert len(client.log) == before
        assert status(server, "p1").types[ROUTE].names == ("r1",)


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_changed_subscription_is_answered(server, delta):
    async with AdsClient(target(server), "p1", delta=delta) as client:
        await synced_on_server(server, "p1")
        await client.subscribe(ROUTE, {"r1", "r2"})
        await await_for(lambda: asyncio.sleep(0, set(client.resources(ROUTE)) == {"r1", "r2"}), timeout=5)
        assert status(server, "p1").types[ROUTE].names == ("r1", "r2")
        await client.subscribe(ROUTE, {"r2"})
        await await_for(lambda: asyncio.sleep(0, status(server, "p1").types[ROUTE].names == ("r2",)), timeout=5)
        if not delta:  # SotW answers with the new set; delta just forgets the name
            await await_for(lambda: asyncio.sleep(0, set(client.resources(ROUTE)) == {"r2"}), timeout=5)


async def test_queued_pushes_merge_into_one(server, source):
    async with AdsClient(target(server), "p1") as client:
        await synced_on_server(server, "p1")
        pushes_before = status(server, "p1").pushes
        cds_before = len(client.responses(CLUSTER))
        for i in range(10):  # no await in between: the connection sees them as one queued push
            source.set(CLUSTER, {"c1": eds_cluster("c1"), f"x{i}": cluster_pb2.Cluster(name=f"x{i}")})
            server.push(PushRequest(version=source.version(), type_urls=frozenset({CLUSTER}), reason=f"change {i}"))
        await idle(server, "p1")
        assert status(server, "p1").pushes == pushes_before + 1
        assert len(client.responses(CLUSTER)) == cds_before + 1
        assert set(client.resources(CLUSTER)) == {"c1", "x9"}


async def test_byte_identical_resources_are_not_resent(server, source):
    async with AdsClient(target(server), "p1") as client:
        await synced_on_server(server, "p1")
        before = len(client.log)
        pushes = status(server, "p1").pushes
        source.set(CLUSTER, {"c1": eds_cluster("c1")})  # new version, same bytes
        server.push(PushRequest(version=source.version()))
        await await_for(lambda: asyncio.sleep(0, status(server, "p1").pushes == pushes + 1), timeout=5)
        await idle(server, "p1")
        assert len(client.log) == before


async def test_push_to_listed_proxies_only(server, source):
    async with AdsClient(target(server), "p1") as a, AdsClient(target(server), "p2") as b:
        await synced_on_server(server, "p1")
        await synced_on_server(server, "p2")
        source.set(ROUTE, {"r1": route("r1", "only-p2"), "r2": route("r2")})
        assert server.push(PushRequest(version=source.version(), proxies=frozenset({"p2"}))) == 1
        await await_for(lambda: asyncio.sleep(0, b"only-p2" in b.resources(ROUTE)["r1"].value), timeout=5)
        await idle(server, "p1")
        assert b"only-p2" not in a.resources(ROUTE)["r1"].value


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_refused_node_gets_a_grpc_error(server, source, delta):
    async with grpc.aio.insecure_channel(target(server)) as channel:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        if delta:
            call = stub.DeltaAggregatedResources()
            req = discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER)
        else:
            call = stub.StreamAggregatedResources()
            req = discovery_pb2.DiscoveryRequest(type_url=CLUSTER)
        req.node.id = "banned-1"
        await call.write(req)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.read()
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "banned node" in err.value.details()
        assert server.connection_count() == 0 and "banned-1" not in source.connected


async def test_disconnect_forgets_the_proxy(server, source):
    async with AdsClient(target(server), "p1"):
        await synced_on_server(server, "p1")
        assert "p1" in source.connected
    await await_for(lambda: asyncio.sleep(0, server.connection_count() == 0), timeout=5)
    assert "p1" not in source.connected
    assert server.metrics.connected.value() == 0


async def test_delta_sends_only_changes_and_removals(server, source):
    async with AdsClient(target(server), "p1", delta=True) as client:
        await synced_on_server(server, "p1")
        source.set(ENDPOINT, {"c1": cla("c1"), "c2": cla("c2", 9999)})
        source.set(CLUSTER, {"c2": eds_cluster("c2"), "c3": cluster_pb2.Cluster(name="c3")})
        before = len(client.log)
        server.push(PushRequest(version=source.version()))
        await await_for(lambda: asyncio.sleep(0, set(client.resources(ENDPOINT)) == {"c2"}), timeout=5)
        cds = next(r for r in client.log[before:] if r.type_url == CLUSTER)
        assert set(cds.names) == {"c2", "c3"} and cds.removed == ("c1",)
        assert set(client.resources(CLUSTER)) == {"c2", "c3"}
        # Only c3 changes: only c3 travels.
        before = len(client.log)
        source.set(CLUSTER, {"c2": eds_cluster("c2"), "c3": cluster_pb2.Cluster(name="c3", alt_stat_name="x")})
        server.push(PushRequest(version=source.version(), type_urls=frozenset({CLUSTER})))
        await await_for(lambda: asyncio.sleep(0, len(client.responses(CLUSTER)) > 0 and
                                              client.log[-1].type_url == CLUSTER and len(client.log) > before),
                        timeout=5)
        assert client.log[-1].names == ("c3",) and client.log[-1].removed == ()


async def test_delta_reconnect_honours_initial_resource_versions(server, source):
    async with AdsClient(target(server), "p1", delta=True) as first:
        await synced_on_server(server, "p1")
        held = {t: dict(first.record(t).versions) for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE)}
        resources = {t: first.resources(t) for t in held}
    source.set(LISTENER, {"l1": rds_listener("l1", "r1", port=10002)})  # changed while disconnected
    again = AdsClient(target(server), "p1", delta=True, initial_versions=held)
    for t, res in resources.items():  # a restarted Envoy keeps what it had
        again.record(t).resources.update(res)
    async with again:
        await synced_on_server(server, "p1")
        first_cds = again.responses(CLUSTER)[0]
        first_lds = again.responses(LISTENER)[0]
        assert first_cds.names == () and first_cds.removed == ()  # nothing changed: an empty answer
        assert first_lds.names == ("l1",)  # only the changed listener is sent again


async def test_delta_nack_is_recorded_and_not_resent(server, source):
    def reject(type_url, resources):
        return "bad route" if type_url == ROUTE and any(b"BAD" in a.value for a in resources.values()) else None

    async with AdsClient(target(server), "p1", delta=True, nack=reject) as client:
        await synced_on_server(server, "p1")
        source.set(ROUTE, {"r1": route("r1", "BAD"), "r2": route("r2")})
        server.push(PushRequest(version=source.version()))
        await await_for(lambda: asyncio.sleep(0, status(server, "p1").types[ROUTE].nack_detail == "bad route"),
                        timeout=5)
        n = len(client.responses(ROUTE))
        source.bump()
        server.push(PushRequest(version=source.version()))
        await idle(server, "p1")
        assert len(client.responses(ROUTE)) == n
        assert b"BAD" not in client.resources(ROUTE)["r1"].value


async def test_a_proxy_that_does_not_read_does_not_block_others(server, source):
    big = {f"big{i}": cluster_pb2.Cluster(name=f"big{i}", alt_stat_name="x" * 200_000) for i in range(10)}
    source.set(CLUSTER, big)
    async with grpc.aio.insecure_channel(target(server)) as channel:
        stuck = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
        req = discovery_pb2.DiscoveryRequest(type_url=CLUSTER)
        req.node.id = "stuck"
        await stuck.write(req)  # and never read: its window fills up, its sends block
        await await_for(lambda: asyncio.sleep(0, any(c.node_id == "stuck" for c in server.connections())), timeout=5)
        async with AdsClient(target(server), "p1") as client:
            await asyncio.wait_for(client.synced.wait(), 10)
            for i in range(3):
                source.set(CLUSTER, {**big, f"n{i}": cluster_pb2.Cluster(name=f"n{i}")})
                server.push(PushRequest(version=source.version(), type_urls=frozenset({CLUSTER})))
                await await_for(lambda i=i: asyncio.sleep(0, f"n{i}" in client.resources(CLUSTER)), timeout=10)
        stuck.cancel()


async def _raw_sotw(server: AdsServer, channel: grpc.aio.Channel, node_id: str):
    """A hand-driven SotW stream subscribed to CDS and LDS; returns the call and both first responses."""
    call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
    first = discovery_pb2.DiscoveryRequest(type_url=CLUSTER)
    first.node.id = node_id
    await call.write(first)
    cds = await call.read()
    await call.write(discovery_pb2.DiscoveryRequest(type_url=CLUSTER, version_info=cds.version_info,
                                                    response_nonce=cds.nonce))
    await call.write(discovery_pb2.DiscoveryRequest(type_url=LISTENER))
    lds = await call.read()
    await call.write(discovery_pb2.DiscoveryRequest(type_url=LISTENER, version_info=lds.version_info,
                                                    response_nonce=lds.nonce))
    return call, cds, lds


async def test_push_waits_for_the_cluster_ack_before_listeners(server, source):
    async with grpc.aio.insecure_channel(target(server)) as channel:
        call, _, lds = await _raw_sotw(server, channel, "p1")
        await synced_on_server(server, "p1", (CLUSTER, LISTENER))
        source.set(CLUSTER, {"c1": eds_cluster("c1"), "c2": eds_cluster("c2")})
        source.set(LISTENER, {"l1": rds_listener("l1", "r1"), "l2": rds_listener("l2", "r2", 10001)})
        server.push(PushRequest(version=source.version()))
        cds = await call.read()
        assert cds.type_url == CLUSTER and len(cds.resources) == 2
        st = status(server, "p1")
        assert st.awaiting_ack == "cds", st  # the loop holds the listeners back ...
        assert st.types[LISTENER].sent_nonce == lds.nonce
        await call.write(discovery_pb2.DiscoveryRequest(type_url=CLUSTER, version_info=cds.version_info,
                                                        response_nonce=cds.nonce))
        lds2 = await asyncio.wait_for(call.read(), 5)  # ... until the clusters are ACKed
        assert lds2.type_url == LISTENER and len(lds2.resources) == 2
        assert status(server, "p1").awaiting_ack == ""
        call.cancel()


async def _clusters_and_endpoints_of_c1(server: AdsServer, channel: grpc.aio.Channel, names: tuple[str, ...] = ("c1",),
                                        ack: bool = True):
    """A hand-driven SotW stream of "p1" with CDS and EDS (of c1, or `names`) ACKed (the EDS response only if
    `ack`); returns the call and the EDS response."""
    call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
    first = discovery_pb2.DiscoveryRequest(type_url=CLUSTER)
    first.node.id = "p1"
    await call.write(first)
    cds = await call.read()
    await call.write(discovery_pb2.DiscoveryRequest(type_url=CLUSTER, version_info=cds.version_info,
                                                    response_nonce=cds.nonce))
    await call.write(discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=names))
    eds = await call.read()
    if not ack:
        return call, eds
    await call.write(discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, version_info=eds.version_info,
                                                    resource_names=names, response_nonce=eds.nonce))
    await synced_on_server(server, "p1", (CLUSTER, ENDPOINT))
    return call, eds


async def test_a_changed_cluster_gets_its_unchanged_endpoints_again(server, source, monkeypatch):
    """Envoy keeps an updated EDS cluster warming until an EDS response names it (xDS protocol, "Resource
    warming") and ACKs the clusters only then; its EDS request repeats the names it has, an ACK to the server. So
    a push that sends clusters sends the endpoints right after them, unchanged, without waiting for the clusters'
    ACK; a push whose clusters are byte-identical sends neither."""
    monkeypatch.setattr("sailmesh.server.connection.CLUSTER_ACK_TIMEOUT_S", 60.0)
    async with grpc.aio.insecure_channel(target(server)) as channel:
        call, eds = await _clusters_and_endpoints_of_c1(server, channel)
        changed = eds_cluster("c1")
        changed.connect_timeout.seconds = 7  # a DestinationRule's connection pool, say; endpoints unchanged
        source.set(CLUSTER, {"c1": changed})
        server.push(PushRequest(version=source.version(), type_urls=frozenset({CLUSTER})))  # a PeerAuthentication's
        cds2 = await asyncio.wait_for(call.read(), 5)
        assert cds2.type_url == CLUSTER
        await call.write(discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, version_info=eds.version_info,
                                                        resource_names=["c1"], response_nonce=eds.nonce))
        eds2 = await asyncio.wait_for(call.read(), 5)  # the clusters are not ACKed yet
        assert eds2.type_url == ENDPOINT and eds2.nonce != eds.nonce
        assert [r.value for r in eds2.resources] == [r.value for r in eds.resources]
        await call.write(discovery_pb2.DiscoveryRequest(type_url=CLUSTER, version_info=cds2.version_info,
                                                        response_nonce=cds2.nonce))
        await call.write(discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, version_info=eds2.version_info,
                                                        resource_names=["c1"], response_nonce=eds2.nonce))
        await synced_on_server(server, "p1", (CLUSTER, ENDPOINT))
        sent = status(server, "p1").types[ENDPOINT].responses
        source.set(CLUSTER, {"c1": changed})  # same bytes: no clusters sent, so no endpoints either
        server.push(PushRequest(version=source.version()))
        await idle(server, "p1")
        assert status(server, "p1").types[ENDPOINT].responses == sent
        call.cancel()


async def test_clusters_added_beside_unchanged_ones_do_not_send_the_endpoints_again(server, source, monkeypatch):
    """Only an updated EDS cluster warms until an EDS response names it: a push that adds a cluster and leaves the
    proxy's EDS clusters byte-identical sends the clusters and no endpoints (the proxy's EDS request naming the
    new cluster is a subscription change and is answered)."""
    monkeypatch.setattr("sailmesh.server.connection.CLUSTER_ACK_TIMEOUT_S", 60.0)
    async with grpc.aio.insecure_channel(target(server)) as channel:
        call, eds = await _clusters_and_endpoints_of_c1(server, channel)
        sent = status(server, "p1").types[ENDPOINT].responses
        source.set(CLUSTER, {"c1": eds_cluster("c1"), "c2": eds_cluster("c2")})
        server.push(PushRequest(version=source.version(), type_urls=frozenset({CLUSTER})))
        cds2 = await asyncio.wait_for(call.read(), 5)
        assert cds2.type_url == CLUSTER and len(cds2.resources) == 2
        await call.write(discovery_pb2.DiscoveryRequest(type_url=CLUSTER, version_info=cds2.version_info,
                                                        response_nonce=cds2.nonce))
        await synced_on_server(server, "p1", (CLUSTER, ENDPOINT))
        await idle(server, "p1")
        assert status(server, "p1").types[ENDPOINT].responses == sent
        await call.write(discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, version_info=eds.version_info,
                                                        resource_names=["c1", "c2"], response_nonce=eds.nonce))
        eds2 = await asyncio.wait_for(call.read(), 5)
        assert eds2.type_url == ENDPOINT and sorted(
            endpoint_pb2.ClusterLoadAssignment.FromString(r.value).cluster_name for r in eds2.resources) == ["c1", "c2"]
        call.cancel()


async def test_push_goes_on_when_clusters_are_never_acked(server, source, monkeypatch):
    monkeypatch.setattr("sailmesh.server.connection.CLUSTER_ACK_TIMEOUT_S", 0.2)
    async with grpc.aio.insecure_channel(target(server)) as channel:
        call, _, _ = await _raw_sotw(server, channel, "p1")
        await synced_on_server(server, "p1", (CLUSTER, LISTENER))
        source.set(CLUSTER, {"c2": eds_cluster("c2")})
        source.set(LISTENER, {"l2": rds_listener("l2", "r2")})
        server.push(PushRequest(version=source.version()))
        assert (await call.read()).type_url == CLUSTER
        lds2 = await asyncio.wait_for(call.read(), 5)
        assert lds2.type_url == LISTENER
        call.cancel()


async def test_generation_error_keeps_the_last_config(server, source, monkeypatch):
    from sailmesh.errors import GenerationError

    async with AdsClient(target(server), "p1") as client:
        await synced_on_server(server, "p1")
        before = len(client.responses(CLUSTER))
        real = source.generate

        def failing(handle, type_url, names=None):
            if type_url == CLUSTER:
                raise GenerationError("cluster c1: broken config")
            return real(handle, type_url)
        monkeypatch.setattr(source, "generate", failing)
        source.set(CLUSTER, {"c2": eds_cluster("c2")})
        source.set(ROUTE, {"r1": route("r1", "new")})
        server.push(PushRequest(version=source.version()))
        await await_for(lambda: asyncio.sleep(0, b"new" in client.resources(ROUTE)["r1"].value), timeout=5)
        assert len(client.responses(CLUSTER)) == before and set(client.resources(CLUSTER)) == {"c1"}
        assert status(server, "p1").types[CLUSTER].synced


async def test_request_after_a_nack_is_not_taken_for_an_ack(server, source):
    async with grpc.aio.insecure_channel(target(server)) as channel:
        call, cds, _ = await _raw_sotw(server, channel, "p1")
        source.set(CLUSTER, {"c2": eds_cluster("c2")})
        server.push(PushRequest(version=source.version(), type_urls=frozenset({CLUSTER})))
        bad = await call.read()
        nack = discovery_pb2.DiscoveryRequest(type_url=CLUSTER, version_info=cds.version_info, response_nonce=bad.nonce)
        nack.error_detail.message = "rejected c2"
        await call.write(nack)
        await await_for(lambda: asyncio.sleep(0, status(server, "p1").types[CLUSTER].nack_detail), timeout=5)
        # Envoy's next request carries the same nonce and its old version, without error_detail.
        await call.write(discovery_pb2.DiscoveryRequest(type_url=CLUSTER, version_info=cds.version_info,
                                                        response_nonce=bad.nonce))
        await await_for(lambda: asyncio.sleep(0, server.metrics.pushes.value(type="cds") >= 2), timeout=5)
        await idle(server, "p1")
        st = status(server, "p1").types[CLUSTER]
        assert st.acked_version == cds.version_info != st.sent_version
        assert st.nack_detail == "rejected c2" and not st.synced
        assert server.metrics.convergence.count(type="cds") == 0
        call.cancel()


async def test_first_request_without_node_id_is_refused(server):
    async with grpc.aio.insecure_channel(target(server)) as channel:
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
        await call.write(discovery_pb2.DiscoveryRequest(type_url=CLUSTER))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.read()
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert server.connection_count() == 0


async def test_explicit_wildcard_and_named_subscriptions(server, source):
    async with grpc.aio.insecure_channel(target(server)) as channel:
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
        req = discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=["*"])
        req.node.id = "p1"
        await call.write(req)
        eds = await call.read()
        assert len(eds.resources) == 2  # "*" asks for every endpoint set
        await call.write(discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=["c2"],
                                                        version_info=eds.version_info, response_nonce=eds.nonce))
        eds2 = await call.read()
        assert [a.value for a in eds2.resources] == [pack(cla("c2")).value]
        assert status(server, "p1").types[ENDPOINT].names == ("c2",)
        assert not status(server, "p1").types[ENDPOINT].wildcard
        call.cancel()


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_a_fleet_of_simulated_proxies_syncs_and_gets_a_push(server, source, delta):
    fleet = await start_fleet(target(server), 60, delta=delta, per_channel=25)
    try:
        await fleet.wait_synced(timeout=20)
        assert server.connection_count() == 60 and len(fleet.sync_times()) == 60
        counts = [c.record(ROUTE).responses + 1 for c in fleet.clients]
        source.set(ROUTE, {"r1": route("r1", "fleet"), "r2": route("r2")})
        assert server.push(PushRequest(version=source.version(), type_urls=frozenset({ROUTE}))) == 60
        await fleet.wait_responses(ROUTE, counts, timeout=20)
        assert all(b"fleet" in c.resources(ROUTE)["r1"].value for c in fleet.clients)
        await await_for(lambda: asyncio.sleep(0, server.metrics.convergence.count(type="rds") == 60), timeout=5)
    finally:
        await fleet.close()


async def test_a_burst_of_streams_is_queued_not_cancelled(server):
    """2,500 streams opened at once all reach the handler (gRPC core cancels calls past 1,000 queued by default)."""
    n = 2_500
    async with grpc.aio.insecure_channel(target(server)) as channel:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        calls = [stub.StreamAggregatedResources() for _ in range(n)]

        async def start(i: int, call) -> None:
            req = discovery_pb2.DiscoveryRequest(type_url=CLUSTER)
            req.node.id = f"burst-{i}"
            await call.write(req)

        async def served_or_ended() -> bool:
            return server.connection_count() == n or any(c.done() for c in calls)
        try:
            # a write fails if the server already cancelled the call: the check below reports it
            await asyncio.gather(*(start(i, c) for i, c in enumerate(calls)), return_exceptions=True)
            await await_for(served_or_ended, timeout=60, what=f"{n} streams served")
            ended = [c for c in calls if c.done()]
            assert not ended, f"{len(ended)} of {n} streams ended, e.g. {await ended[0].code()}"
        finally:
            for c in calls:
                c.cancel()


async def test_a_request_is_not_held_once_it_is_handled(source, monkeypatch):
    """The server keeps no request it has handled while it waits for the next one. grpc.aio's request iterator
    holds the last request it yielded until the next arrives, and the reading loop's variables did too: one
    unscoped EDS ACK names every cluster (0.2 MB at 1,000 services, 1 MB at 5,000), held parsed and as bytes by
    every connection between pushes (the benchmark's control plane: 260 MB more at 500 proxies after its endpoint
    changes)."""
    seen: list[bytes] = []

    def keep(data: bytes) -> bytes:
        seen.append(data)
        return data

    monkeypatch.setattr(ads, "_sotw_request", keep)
    srv = AdsServer(source)
    await srv.serve("127.0.0.1", 0)
    try:
        async with grpc.aio.insecure_channel(target(srv)) as channel:
            call, _cds, _lds = await _raw_sotw(srv, channel, "p1")
            await synced_on_server(srv, "p1", (CLUSTER, LISTENER))
            assert len(seen) == 4  # CDS, its ACK, LDS, its ACK: the last one handled (an ACK)
            last = seen[-1]
            gc.collect()
            assert sys.getrefcount(last) == 3  # `seen`, `last` and getrefcount's argument: nothing in the server
            call.cancel()
    finally:
        await srv.stop(0)


async def test_each_connections_read_buffer_is_bounded_and_large_requests_are_still_read(source, monkeypatch):
    """The server's gRPC endpoint keeps at most MAX_READ_BUFFER_BYTES of read buffer per connection. Unbounded, it
    sizes its next read by the largest burst read and keeps the unused part: after an unscoped EDS ACK (1 MB at
    5,000 services) every connection kept ~1 MB of 64 KiB read slices between pushes (heaptrack at 2,000 services /
    200 proxies: 5-7 slices per connection, 60-86 MB). A request many times the bound is still read whole."""
    options: list[dict[str, object]] = []
    real = grpc.aio.server

    def server(*args, **kwargs):
        options.append(dict(kwargs.get("options") or ()))
        return real(*args, **kwargs)

    monkeypatch.setattr(grpc.aio, "server", server)
    srv = AdsServer(source)
    await srv.serve("127.0.0.1", 0)
    try:
        assert options and options[0].get("grpc.experimental.tcp_max_read_buffer_size") == ads.MAX_READ_BUFFER_BYTES
        assert ads.MAX_READ_BUFFER_BYTES <= 64 * 1024
        names = ["c1", *(f"outbound|8080||svc-{i}.ns-{i // 20}.svc.cluster.local" for i in range(20_000))]
        async with grpc.aio.insecure_channel(target(srv)) as channel:
            call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
            request = discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=names)
            request.node.id = "p1"
            assert request.ByteSize() > 8 * ads.MAX_READ_BUFFER_BYTES  # ~1 MB, like an unscoped EDS request
            await call.write(request)
            response = await asyncio.wait_for(call.read(), 10)
            assert response.type_url == ENDPOINT and len(response.resources) == 1  # c1: the one that exists
            assert len(status(srv, "p1").types[ENDPOINT].names) == len(names)
            call.cancel()
    finally:
        await srv.stop(0)
