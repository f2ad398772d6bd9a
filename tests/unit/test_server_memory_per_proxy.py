"""What the ADS server keeps per connected proxy: shared bytes once, nothing for responses only one proxy gets.

Without Sidecar scoping (1,000 services / 500 proxies) the server held 0.6 MB per proxy, most of it copies:
every proxy's clusters response (its own, for its inbound cluster: 1.7 MB) in the shared-response cache, and each
namespace's route configuration three more times (the Any's serialized field, the encoded body, the response).
"""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Awaitable, Callable

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from sailmesh.controlplane.source import MeshSource
from sailmesh.generate.generator import PackedResources
from sailmesh.server.budget import SendBudget
from sailmesh.server.hashing import HashCache
from sailmesh.server.metrics import XdsMetrics
from sailmesh.server.sotw import SotwConnection
from sailmesh.xds.types import CLUSTER, ENDPOINT, ROUTE
from tests.unit.test_generate_support import bookinfo, sidecar


def test_a_response_asked_for_once_is_not_kept_and_a_shared_one_is_one_object() -> None:
    hashes = HashCache(max_probation_bytes=3 * 2**20)
    size = 2**20
    for k in range(20):  # twenty proxies, each its own 1 MB response
        hashes.response(("cds", "1", k), lambda k=k: bytes([k]) * size)
    assert hashes.held_bytes() <= 3 * size  # only the probation's few recent ones, not all twenty
    first = hashes.response(("rds", "1", "ns-0"), lambda: b"r" * size)
    second = hashes.response(("rds", "1", "ns-0"), lambda: b"r" * size)
    third = hashes.response(("rds", "1", "ns-0"), lambda: b"x")
    assert first is second is third  # built once, the same bytes object for every proxy that asks


def test_a_large_resource_is_kept_neither_as_its_encoded_field_nor_as_its_body() -> None:
    """A namespace's route configuration without Sidecar scoping is one large resource: while a version lasts its
    proxies share the response, and encoding it again is one copy of its bytes. Kept as an encoded body too, the 100
    namespaces' routes of the 5,000 / 2,000 run filled the body cache's 256 MB bound beside their Anys and
    responses. A mapping of many resources (a scope's clusters) is still kept from its second use on."""
    rc = route_pb2.RouteConfiguration(name="8080")
    for i in range(2000):  # ~200 kB, like a namespace's routes without Sidecar scoping
        rc.virtual_hosts.add(name=f"svc-{i}.ns-0.svc.cluster.local:8080", domains=[f"svc-{i}.ns-0"])
    anyp = any_pb2.Any()
    anyp.Pack(rc)
    hashes = HashCache()
    mapping = PackedResources({"8080": anyp})
    body = hashes.encoded(mapping)
    again = hashes.encoded(mapping)
    assert again == body and discovery_pb2.DiscoveryResponse.FromString(again).resources[0] == anyp
    assert hashes.held_bytes() == 0  # neither a field copy nor the body (the Any holds its bytes once)
    many = PackedResources({f"c{i}": anyp for i in range(2)})
    hashes.encoded(many)  # its first use: not kept yet
    kept = hashes.encoded(many)
    assert hashes.encoded(many) is kept and hashes.held_bytes() >= len(kept)  # several resources: kept


def test_proxies_of_one_scope_share_one_response_and_unique_ones_cost_nothing_per_proxy() -> None:
    """Sidecars of one namespace get one RDS response object; each has its own clusters response (its inbound
    cluster), which is sent but not kept: the server's bytes grow by far less than a response per proxy."""
    source = MeshSource(bookinfo())
    hashes = HashCache(max_probation_bytes=1)  # keeps only the most recent response until it is asked again
    sent: dict[str, dict[str, bytes]] = {}

    async def connect(k: int) -> None:
        p = sidecar(f"client-{k}-0", f"127.0.2.{k + 1}", app=f"client-{k}", version="v1")
        conn = SotwConnection(p.id, base_pb2.Node(id=p.id), p, source, XdsMetrics(), hashes)

        async def send(response: object) -> None:
            assert isinstance(response, bytes)
            type_url = discovery_pb2.DiscoveryResponse.FromString(response).type_url
            sent.setdefault(p.id, {})[type_url] = response

        await conn.handle_request(discovery_pb2.DiscoveryRequest(type_url=CLUSTER), send)
        names = sorted(source.generator.resources(source.snapshot, p, ROUTE))
        await conn.handle_request(discovery_pb2.DiscoveryRequest(type_url=ROUTE, resource_names=names), send)

    async def main() -> tuple[int, int]:
        for k in range(4):
            await connect(k)
        held4 = hashes.held_bytes()
        for k in range(4, 16):
            await connect(k)
        return held4, hashes.held_bytes()

    held4, held16 = asyncio.run(main())
    responses = list(sent.values())
    assert len(responses) == 16
    # one object (the first proxy's was dropped from probation by the next clusters response), not sixteen
    assert all(r[ROUTE] is responses[1][ROUTE] for r in responses[1:])
    assert len({r[CLUSTER] for r in responses}) == 16  # every proxy's clusters differ (its inbound cluster)
    cds_size = min(len(r[CLUSTER]) for r in responses)
    assert held16 - held4 < 12 * cds_size / 4  # not a clusters response kept per proxy


def _route_clients(source: MeshSource, hashes: HashCache,
                   routes: list[bytes]) -> Callable[[int, str], Awaitable[None]]:
    """connect(k, type_url): a sidecar client-k of one namespace asks for the type (RDS: by the names it needs);
    the route responses sent land in `routes`."""

    async def send(response: object) -> None:
        assert isinstance(response, bytes)
        if discovery_pb2.DiscoveryResponse.FromString(response).type_url == ROUTE:
            routes.append(response)

    async def connect(k: int, type_url: str) -> None:
        p = sidecar(f"client-{k}-0", f"127.0.2.{k + 1}", app=f"client-{k}", version="v1")
        conn = SotwConnection(p.id, base_pb2.Node(id=p.id), p, source, XdsMetrics(), hashes)
        names = sorted(source.generator.resources(source.snapshot, p, type_url)) if type_url == ROUTE else []
        await conn.handle_request(discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=names), send)

    return connect


def test_responses_of_an_older_version_are_dropped_once_the_source_moves_on() -> None:
    """Response versions never repeat, so once the source has a newer version no proxy can be sent a cached
    response of an older one: the cache keeps the current version's responses only. It kept 64 MB (its bound) of
    unreachable responses after 40 changes at 1,000 services / 500 proxies without Sidecar scoping: every
    namespace's routes of the last VirtualService change, after endpoint changes had moved the version on."""
    source = MeshSource(bookinfo())
    hashes = HashCache()
    routes: list[bytes] = []
    connect = _route_clients(source, hashes, routes)

    async def main() -> tuple[int, int]:
        for k in range(3):  # proxies of one namespace: one shared routes response, kept for the next
            await connect(k, ROUTE)
        assert routes[1] is routes[0] and routes[2] is routes[0]
        kept = sys.getrefcount(routes[0])
        source.update(bookinfo(version=2), None)  # e.g. an endpoint change: the version moves on
        await connect(3, CLUSTER)  # a response of the new version
        return kept, sys.getrefcount(routes[0])

    kept, now = asyncio.run(main())
    assert now == kept - 1  # the cache let go of it (the list's three references remain)


def test_shared_responses_are_let_go_of_once_the_pushes_are_quiet_and_built_once_again_if_asked() -> None:
    """Once a push is over, the responses it shared are a second copy of the generator's `Any`s (without Sidecar
    scoping, each namespace's route configuration: 1.1 MB at 1,000 services) until the version moves on: the control
    plane's idle trim tells the cache (`quiet`), which lets go of them. A proxy asking later at the same version gets
    equal bytes built again, and the next one shares them again (one build, not one per proxy)."""
    source = MeshSource(bookinfo())
    hashes = HashCache()
    routes: list[bytes] = []
    connect = _route_clients(source, hashes, routes)

    async def main() -> tuple[int, int]:
        for k in range(3):  # proxies of one namespace, one push: one shared response
            await connect(k, ROUTE)
        assert routes[1] is routes[0] and routes[2] is routes[0]
        kept = sys.getrefcount(routes[0])
        hashes.quiet()
        now = sys.getrefcount(routes[0])
        for k in range(3, 5):
            await connect(k, ROUTE)
        return kept, now

    kept, now = asyncio.run(main())
    assert now == kept - 1  # the cache let go of it (the list's three references remain)
    assert routes[3] == routes[0] and routes[3] is not routes[0]  # built again for a later proxy, same bytes
    assert routes[4] is routes[3]  # and shared again from the next one on


def test_a_request_is_not_held_while_its_response_waits_for_the_send_budget() -> None:
    """A connection lets go of a request, and of the names read from it, before its response waits for the send
    budget. An unscoped EDS request names every cluster (1 MB at 5,000 services, parsed, and 17,500 str objects
    read from it): a first push to 250 proxies held all of theirs while they waited, and once freed Python's
    allocator kept ~250 MB of them as empty pools it never gives back."""
    source = MeshSource(bookinfo())
    p = sidecar()
    names = sorted(source.generator.resources(source.snapshot, p, ENDPOINT))
    assert len(names) > 3
    budget = SendBudget(limit=1)
    conn = SotwConnection(p.id, base_pb2.Node(id=p.id), p, source, XdsMetrics(), HashCache(), budget)
    request = discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=names)
    sent: list[bytes] = []

    async def send(response: object) -> None:
        assert isinstance(response, bytes)
        sent.append(response)

    def copies_of_names() -> int:
        return sum(1 for o in gc.get_objects() if type(o) is list and o is not names and o == names)

    async def main() -> tuple[int, int, int]:
        held = budget.try_lease(1)  # the budget is taken: the response has to wait
        assert held is not None
        unheld = sys.getrefcount(request)
        conn.enqueue_request(request)
        task = asyncio.create_task(conn.run(send))
        while not budget.waits:  # the connection read the request and waits for the budget
            await asyncio.sleep(0)
        refs, copies = sys.getrefcount(request) - unheld, copies_of_names()
        held.release()
        while not sent:
            await asyncio.sleep(0)
        conn.close()
        await task
        return refs, copies, len(sent)

    refs, copies, n_sent = asyncio.run(main())
    assert n_sent == 1  # the response went out once the budget allowed
    assert refs == 0  # nothing in the connection holds the request while it waits
    assert copies == 0  # nor a list of its names
