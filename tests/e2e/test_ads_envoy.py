"""A real Envoy configured only over ADS by the sailmesh server: traffic, pushes, NACKs, server restarts."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from aiohttp import web
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from sailmesh.processes import free_port
from sailmesh.server.ads import AdsServer
from sailmesh.testing.envoy_proc import ads_bootstrap, running_envoy
from sailmesh.testing.static_source import StaticSource, pack
from sailmesh.testing.waiting import await_for
from sailmesh.xds.push import PushRequest
from sailmesh.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE

pytestmark = pytest.mark.e2e

ADS = config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(),
                                     resource_api_version=config_source_pb2.V3)
ROUTE_NAME = "local_route"
STAT_PREFIX = "ingress_http"


def backend_cluster() -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster(name="backend", type=cluster_pb2.Cluster.EDS)
    c.connect_timeout.FromMilliseconds(1000)
    c.eds_cluster_config.eds_config.CopyFrom(ADS)
    c.eds_cluster_config.service_name = "backend-eds"
    return c


def backend_endpoints(port: int) -> endpoint_pb2.ClusterLoadAssignment:
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name="backend-eds")
    sa = cla.endpoints.add().lb_endpoints.add().endpoint.address.socket_address
    sa.address, sa.port_value = "127.0.0.1", port
    return cla


def http_listener(port: int) -> listener_pb2.Listener:
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix=STAT_PREFIX,
                                        rds=hcm_pb2.Rds(route_config_name=ROUTE_NAME, config_source=ADS))
    hcm.http_filters.add(name="envoy.filters.http.router").typed_config.CopyFrom(pack(router_pb2.Router()))
    lis = listener_pb2.Listener(name="listener_0")
    lis.address.socket_address.address = "127.0.0.1"
    lis.address.socket_address.port_value = port
    lis.filter_chains.add().filters.add(name="envoy.filters.network.http_connection_manager").typed_config.CopyFrom(
        pack(hcm))
    return lis


def routes(*, direct: str = "", bad_regex: bool = False) -> route_pb2.RouteConfiguration:
    """/ goes to the backend, or answers `direct` itself; bad_regex adds a route Envoy must reject."""
    rc = route_pb2.RouteConfiguration(name=ROUTE_NAME)
    vh = rc.virtual_hosts.add(name="all", domains=["*"])
    if bad_regex:
        r = vh.routes.add()
        r.match.safe_regex.regex = "(unclosed"
        r.direct_response.status = 418
    r = vh.routes.add()
    r.match.prefix = "/"
    if direct:
        r.direct_response.status = 200
        r.direct_response.body.inline_string = direct
    else:
        r.route.cluster = "backend"
    return rc


async def start_backend(label: str) -> tuple[web.AppRunner, int]:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(text=f"{label} {request.path}")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)  # aiohttp's server sets TCP_NODELAY on its sockets
    await site.start()
    sock: socket.socket = site._server.sockets[0]  # type: ignore[union-attr]
    return runner, sock.getsockname()[1]


@pytest.fixture
async def backend_port():
    runner, port = await start_backend("backend")
    try:
        yield port
    finally:
        await runner.cleanup()


@pytest.fixture
def source(backend_port) -> StaticSource:
    s = StaticSource()
    s.listener_port = free_port()  # type: ignore[attr-defined]
    s.set(CLUSTER, {"backend": backend_cluster()})
    s.set(ENDPOINT, {"backend-eds": backend_endpoints(backend_port)})
    s.set(LISTENER, {"listener_0": http_listener(s.listener_port)})  # type: ignore[attr-defined]
    s.set(ROUTE, {ROUTE_NAME: routes()})
    return s


@pytest.fixture
async def server(source):
    srv = AdsServer(source)
    await srv.serve("127.0.0.1", 0)
    try:
        yield srv
    finally:
        await srv.stop(0)


async def get(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        async with session.get(f"http://127.0.0.1:{port}{path}") as resp:
            return resp.status, await resp.text()


async def body_becomes(port: int, path: str, expected: str, timeout: float = 10) -> None:
    async def check() -> bool:
        return await get(port, path) == (200, expected)
    await await_for(check, timeout=timeout, what=f"GET {path} -> {expected!r}")


async def server_synced(server: AdsServer, node_id: str) -> None:
    async def check() -> bool:
        conns = [c for c in server.connections() if c.node_id == node_id]
        return bool(conns) and all(
            t in conns[0].types and conns[0].types[t].synced for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE))
    await await_for(check, timeout=10, what=f"{node_id} ACKed every type")


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_envoy_serves_traffic_configured_over_ads_and_follows_a_pushed_route(tmp_path, server, source, delta):
    port = source.listener_port
    async with running_envoy(ads_bootstrap("sidecar~127.0.0.1~e1.default~default.svc.cluster.local", server.port,
                                           delta=delta), tmp_path) as envoy:
        await envoy.wait_ready()
        await body_becomes(port, "/hello", "backend /hello")
        await server_synced(server, "sidecar~127.0.0.1~e1.default~default.svc.cluster.local")
        conn = server.connections()[0]
        assert conn.delta is delta and conn.cluster == "sailmesh-test"
        assert {t: s.resource_count for t, s in conn.types.items()} == {CLUSTER: 1, ENDPOINT: 1, LISTENER: 1,
                                                                        ROUTE: 1}
        dump = await envoy.config_dump()
        dumped = " ".join(str(c) for c in dump["configs"])
        assert "listener_0" in dumped and ROUTE_NAME in dumped
        # A pushed route change is served.
        source.set(ROUTE, {ROUTE_NAME: routes(direct="v2")})
        server.push(PushRequest(version=source.version(), type_urls=frozenset({ROUTE}), reason="route changed"))
        await body_becomes(port, "/hello", "v2")
        await server_synced(server, conn.node_id)
        assert server.metrics.convergence.count(type="rds") >= 1


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_envoy_nack_is_recorded_and_traffic_keeps_the_old_config(tmp_path, server, source, delta):
    port = source.listener_port
    async with running_envoy(ads_bootstrap("nack-test", server.port, delta=delta), tmp_path) as envoy:
        await envoy.wait_ready()
        await body_becomes(port, "/x", "backend /x")
        await server_synced(server, "nack-test")
        source.set(ROUTE, {ROUTE_NAME: routes(direct="never", bad_regex=True)})
        server.push(PushRequest(version=source.version()))

        async def nacked() -> str:
            return server.connections()[0].types[ROUTE].nack_detail
        detail = await await_for(nacked, timeout=10, what="the NACK recorded")
        assert "unclosed" in detail or "regex" in detail.lower()
        st = server.connections()[0].types[ROUTE]
        assert st.nacked_version == st.sent_version and st.acked_version != st.sent_version
        assert await envoy.stat(f"http.{STAT_PREFIX}.rds.{ROUTE_NAME}.update_rejected") == 1
        assert await get(port, "/x") == (200, "backend /x")  # still the last good config
        assert server.metrics.rejects.value(type="rds") == 1
        # The same rejected content is not sent again on the next push.
        source.bump()
        server.push(PushRequest(version=source.version()))
        source.set(CLUSTER, {"backend": backend_cluster(), "extra": cluster_pb2.Cluster(name="extra")})
        server.push(PushRequest(version=source.version(), type_urls=frozenset({CLUSTER})))

        async def extra_cluster() -> bool:
            return "extra" in (await envoy.admin_get("/clusters"))[1]
        await await_for(extra_cluster, timeout=10, what="a later push applied")
        assert await envoy.stat(f"http.{STAT_PREFIX}.rds.{ROUTE_NAME}.update_rejected") == 1
        assert await get(port, "/x") == (200, "backend /x")


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_server_restart_keeps_traffic_and_envoy_resyncs(tmp_path, server, source, delta):
    port = source.listener_port
    xds_port = server.port
    async with running_envoy(ads_bootstrap("restart-test", xds_port, delta=delta), tmp_path) as envoy:
        await envoy.wait_ready()
        await body_becomes(port, "/a", "backend /a")
        await server_synced(server, "restart-test")
        await server.stop(0)
        assert await get(port, "/a") == (200, "backend /a")  # Envoy keeps its config without a control plane
        source.set(ROUTE, {ROUTE_NAME: routes(direct="after restart")})
        again = AdsServer(source)
        await again.serve("127.0.0.1", xds_port)
        try:
            await server_synced(again, "restart-test")
            await body_becomes(port, "/a", "after restart")
            assert await envoy.stat("control_plane.connected_state") == 1
        finally:
            await again.stop(0)


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_new_cluster_and_route_in_one_push_never_fail_requests(tmp_path, server, source, backend_port, delta):
    """Clusters (and their endpoints) reach Envoy before the route that uses them: no 503 while switching."""
    port = source.listener_port
    async with running_envoy(ads_bootstrap("order-test", server.port, delta=delta), tmp_path) as envoy:
        await envoy.wait_ready()
        await body_becomes(port, "/p", "backend /p")
        await server_synced(server, "order-test")
        c2 = backend_cluster()
        c2.name, c2.eds_cluster_config.service_name = "backend2", "backend2-eds"
        e2 = backend_endpoints(backend_port)
        e2.cluster_name = "backend2-eds"
        rc = routes()
        rc.virtual_hosts[0].routes[0].route.cluster = "backend2"
        rc.virtual_hosts[0].routes[0].route.prefix_rewrite = "/via2/"
        source.set(CLUSTER, {"backend": backend_cluster(), "backend2": c2})
        source.set(ENDPOINT, {"backend-eds": backend_endpoints(backend_port), "backend2-eds": e2})
        source.set(ROUTE, {ROUTE_NAME: rc})
        server.push(PushRequest(version=source.version()))
        seen: list[tuple[int, str]] = []

        async def switched() -> bool:
            seen.append(await get(port, "/p"))
            return seen[-1] == (200, "backend /via2/p")
        await await_for(switched, timeout=10, interval=0.001, what="traffic on the new cluster")
        assert all(s in ((200, "backend /p"), (200, "backend /via2/p")) for s in seen), seen


async def test_endpoint_only_push_moves_traffic_to_a_new_backend(tmp_path, server, source):
    port = source.listener_port
    runner, other = await start_backend("other")
    try:
        async with running_envoy(ads_bootstrap("eds-test", server.port), tmp_path) as envoy:
            await envoy.wait_ready()
            await body_becomes(port, "/e", "backend /e")
            await server_synced(server, "eds-test")
            source.set(ENDPOINT, {"backend-eds": backend_endpoints(other)})
            server.push(PushRequest(version=source.version(), type_urls=frozenset({ENDPOINT}), reason="endpoints"))
            await body_becomes(port, "/e", "other /e")
            st = server.connections()[0].types
            assert st[ENDPOINT].responses == 2 and st[CLUSTER].responses == 1 and st[ROUTE].responses == 1
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_removed_listener_stops_serving_and_comes_back(tmp_path, server, source, delta):
    """SotW removes by omission from the full set, delta by removed_resources: Envoy closes the port either way."""
    port = source.listener_port
    async with running_envoy(ads_bootstrap("removal-test", server.port, delta=delta), tmp_path) as envoy:
        await envoy.wait_ready()
        await body_becomes(port, "/r", "backend /r")
        source.set(LISTENER, {})
        server.push(PushRequest(version=source.version(), type_urls=frozenset({LISTENER})))

        async def refused() -> bool:
            try:
                await get(port, "/r")
            except aiohttp.ClientConnectionError:
                return True
            return False
        await await_for(refused, timeout=10, what="the listener removed")
        assert "listener_0" not in (await envoy.admin_get("/listeners"))[1]
        source.set(LISTENER, {"listener_0": http_listener(port)})
        server.push(PushRequest(version=source.version(), type_urls=frozenset({LISTENER})))
        await body_becomes(port, "/r", "backend /r")
