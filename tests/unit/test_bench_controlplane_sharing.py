"""Outbound config is shared by sidecars whose labels select the same Sidecar and sourceLabels (the cache key).

The control-plane benchmark showed that keying outbound config by (namespace, labels) regenerated the whole
mesh for every deployment; these tests pin what the narrower key may and may not merge.
"""

from __future__ import annotations

from sailmesh.api.change import Change
from sailmesh.api.resource import ResourceKey
from sailmesh.generate.affect import affected_types
from sailmesh.generate.generator import Generator
from sailmesh.xds.types import CLUSTER, ENDPOINT, EXTENSION_CONFIG, LISTENER, ROUTE, SECRET
from tests.unit.test_generate_support import bookinfo, generate, sidecar

SOURCE_LABELS_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{sourceLabels: {app: productpage}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
"""

SELECTED_SIDECAR = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: ratings-only, namespace: default}
spec:
  workloadSelector: {labels: {app: ratings}}
  egress: [{hosts: ["./ratings.default.svc.cluster.local"]}]
"""


def test_sidecars_of_different_deployments_in_a_namespace_share_outbound_config() -> None:
    snap = bookinfo()
    gen = Generator()
    a = sidecar("reviews-v1-0", "127.0.1.3", app="reviews", version="v1")
    b = sidecar("details-v1-0", "127.0.1.4", app="details", version="v1")
    for t in (ROUTE, ENDPOINT):
        ra, rb = gen.resources(snap, a, t), gen.resources(snap, b, t)
        assert ra.keys() == rb.keys() and all(ra[n] is rb[n] for n in ra)
    ca, cb = gen.resources(snap, a, CLUSTER), gen.resources(snap, b, CLUSTER)
    name = "outbound|9080||ratings.default.svc.cluster.local"
    assert ca[name] is cb[name]
    for p in (a, b):  # sharing never changes what a proxy gets
        for t in (CLUSTER, ENDPOINT, ROUTE):
            assert gen.resources(snap, p, t) == generate(snap, p, t)


def test_source_labels_keep_matching_sidecars_apart() -> None:
    snap = bookinfo(SOURCE_LABELS_VS)
    gen = Generator()
    pp = sidecar("productpage-v1-0", "127.0.1.1", app="productpage", version="v1")
    other = sidecar("details-v1-0", "127.0.1.4", app="details", version="v1")
    other2 = sidecar("ratings-v1-0", "127.0.1.5", app="ratings", version="v1")
    r_pp, r_other, r_other2 = (gen.resources(snap, p, ROUTE) for p in (pp, other, other2))
    assert r_pp != r_other  # productpage's routes carry the sourceLabels match
    assert all(r_other[n] is r_other2[n] for n in r_other)  # neither matches: shared
    for p in (pp, other, other2):
        assert gen.resources(snap, p, ROUTE) == generate(snap, p, ROUTE)


def test_a_sidecar_with_a_workload_selector_keeps_its_proxies_apart() -> None:
    snap = bookinfo(SELECTED_SIDECAR)
    gen = Generator()
    ratings = sidecar("ratings-v1-0", "127.0.1.5", app="ratings", version="v1")
    details = sidecar("details-v1-0", "127.0.1.4", app="details", version="v1")
    c_r, c_d = gen.resources(snap, ratings, CLUSTER), gen.resources(snap, details, CLUSTER)
    assert {n for n in c_r if n.startswith("outbound|")} == {"outbound|9080||ratings.default.svc.cluster.local"}
    assert "outbound|9080||reviews.default.svc.cluster.local" in c_d
    for p in (ratings, details):
        assert gen.resources(snap, p, CLUSTER) == generate(snap, p, CLUSTER)


def test_a_virtual_service_change_regenerates_routes_only() -> None:
    import dataclasses

    s1 = bookinfo(version=1)
    s2 = dataclasses.replace(bookinfo(SOURCE_LABELS_VS), version=2)
    gen = Generator()
    p = sidecar("details-v1-0", "127.0.1.4", app="details", version="v1")
    before = {t: gen.resources(s1, p, t) for t in (CLUSTER, ENDPOINT, ROUTE)}
    vs_change = Change.of(ResourceKey("VirtualService", "default", "reviews"))
    assert affected_types(vs_change, s1, s2) == {ROUTE}
    gen.advance(s2, {ROUTE})
    after = {t: gen.resources(s2, p, t) for t in (CLUSTER, ENDPOINT, ROUTE)}
    for t in (CLUSTER, ENDPOINT):
        assert all(after[t][n] is before[t][n] for n in before[t])
    assert after[ROUTE] == generate(s2, p, ROUTE) != before[ROUTE]
    # kinds the generators may read anywhere (or unknown) still regenerate every type
    s3 = dataclasses.replace(s2, version=3)
    sidecar_change = Change.of(ResourceKey("Sidecar", "default", "x"))
    assert affected_types(sidecar_change, s2, s3) == {CLUSTER, ENDPOINT, LISTENER, ROUTE}
    assert affected_types(Change.everything(), s2, s3) == {CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, EXTENSION_CONFIG}


def test_the_same_parts_are_returned_until_their_type_changes() -> None:
    """The ADS server caches digests by mapping identity: a stable part is hashed once, not per push."""
    import dataclasses

    s1 = bookinfo(version=1)
    gen = Generator()
    p = sidecar("details-v1-0", "127.0.1.4", app="details", version="v1")

    def same(a: tuple, b: tuple) -> bool:
        return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))

    first = {t: gen.generate(s1, p, t) for t in (CLUSTER, ENDPOINT, ROUTE)}
    assert all(same(gen.generate(s1, p, t), first[t]) for t in first)
    s2 = dataclasses.replace(bookinfo(SOURCE_LABELS_VS), version=2)
    gen.advance(s2, {ROUTE})
    assert same(gen.generate(s2, p, CLUSTER), first[CLUSTER])
    assert not same(gen.generate(s2, p, ROUTE), first[ROUTE])


OTHER_SOURCE_LABELS_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: aaa-ratings, namespace: default}
spec:
  hosts: [ratings]
  http:
  - match: [{sourceLabels: {app: details}}]
    route: [{destination: {host: ratings, subset: v1}}]
  - route: [{destination: {host: ratings}}]
"""


def _routes_without_memo(snapshot, proxy):
    return Generator().resources(snapshot, proxy, ROUTE)  # a new Generator has empty memos


def test_route_memo_reuses_unchanged_services_and_stays_exact_across_snapshots() -> None:
    """A VirtualService change rebuilds the routes of its host only; sourceLabels stay per proxy."""
    import dataclasses

    from envoy.config.route.v3 import route_pb2

    from sailmesh.generate import routes
    from tests.unit.test_generate_support import resources

    reviews_vs = resources(SOURCE_LABELS_VS)
    s1 = bookinfo(SOURCE_LABELS_VS)
    s1 = dataclasses.replace(s1, config={**s1.config, "VirtualService": tuple(reviews_vs)})
    # s2: the same objects plus an older VirtualService whose sourceLabels sort before reviews'
    s2 = dataclasses.replace(s1, version=2,
                             config={**s1.config, "VirtualService": (*resources(OTHER_SOURCE_LABELS_VS), *reviews_vs)})
    pp = sidecar("productpage-v1-0", "127.0.1.1", app="productpage", version="v1")
    details = sidecar("details-v1-0", "127.0.1.4", app="details", version="v1")
    gen = Generator()
    got1 = {p.id: gen.resources(s1, p, ROUTE) for p in (pp, details)}
    got2 = {p.id: gen.resources(s2, p, ROUTE) for p in (pp, details)}
    for snap, got in ((s1, got1), (s2, got2)):
        for p in (pp, details):
            assert got[p.id] == _routes_without_memo(snap, p), p.id
    # reviews' routes for productpage (sourceLabels matched) were reused from s1 in s2
    services = s1.services
    svc = services["reviews.default.svc.cluster.local"]
    a = routes._memo_entry(s1, pp, svc, 9080, gen.memos)
    b = routes._memo_entry(s2, pp, svc, 9080, gen.memos)
    assert a.routes is b.routes
    rc = route_pb2.RouteConfiguration()
    got2[details.id]["http_proxy"].Unpack(rc)
    ratings = next(v for v in rc.virtual_hosts if v.name.startswith("ratings."))
    assert ratings.routes[0].route.cluster == "outbound|9080|v1|ratings.default.svc.cluster.local"


BAR_DR = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-from-bar, namespace: bar}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
"""


def test_clusters_and_endpoints_are_shared_across_namespaces_unless_their_rule_differs() -> None:
    from envoy.config.cluster.v3 import cluster_pb2

    snap = bookinfo(BAR_DR)
    gen = Generator()
    d = sidecar("details-v1-0", "127.0.1.4", app="details", version="v1")
    b = sidecar("client-v1-0", "127.0.9.1", ns="bar", app="client", version="v1")
    cd, cb = gen.resources(snap, d, CLUSTER), gen.resources(snap, b, CLUSTER)
    ratings = "outbound|9080||ratings.default.svc.cluster.local"
    reviews = "outbound|9080||reviews.default.svc.cluster.local"
    assert cd[ratings] is cb[ratings]  # no namespace-specific rule: one packed cluster for both namespaces
    assert cd[reviews] is not cb[reviews]  # bar's DestinationRule applies to bar's sidecars only
    rb = cluster_pb2.Cluster()
    cb[reviews].Unpack(rb)
    assert rb.lb_policy == cluster_pb2.Cluster.RANDOM
    ed, eb = gen.resources(snap, d, ENDPOINT), gen.resources(snap, b, ENDPOINT)
    assert ed[ratings] is eb[ratings]
    fresh = {}
    for p in (d, b):  # a fresh Generator (new memos) for each
        for t in (CLUSTER, ENDPOINT):
            fresh[p.id, t] = generate(snap, p, t)
    assert fresh[d.id, CLUSTER] == cd and fresh[b.id, CLUSTER] == cb
    assert fresh[d.id, ENDPOINT] == ed and fresh[b.id, ENDPOINT] == eb


def test_sotw_clusters_come_in_parts_shared_by_a_scope_and_parse_as_their_union() -> None:
    """Clusters are an outbound part (shared by the proxies of a scope) plus a small inbound part per proxy.

    Without Sidecar scoping the benchmark's proxies held a merged copy of 3,500 clusters each (2.1 MB per proxy)
    and hashed and encoded it per proxy; the server now hashes and encodes each part once and sends their union.
    """
    import asyncio

    from envoy.config.core.v3 import base_pb2
    from envoy.service.discovery.v3 import discovery_pb2

    from sailmesh.controlplane.source import MeshSource
    from sailmesh.server.hashing import HashCache
    from sailmesh.server.metrics import XdsMetrics
    from sailmesh.server.sotw import SotwConnection

    source = MeshSource(bookinfo())
    hashes = HashCache()
    sent: list[bytes] = []

    async def send(response: object) -> None:
        assert isinstance(response, bytes)
        sent.append(response)

    async def connect(name: str, ip: str, app: str) -> SotwConnection:
        p = sidecar(name, ip, app=app, version="v1")
        source.proxies[id(p)] = p
        conn = SotwConnection(p.id, base_pb2.Node(id=p.id), p, source, XdsMetrics(), hashes)
        await conn.handle_request(discovery_pb2.DiscoveryRequest(type_url=CLUSTER), send)
        return conn

    async def main() -> list[SotwConnection]:
        return [await connect("details-v1-0", "127.0.1.4", "details"),
                await connect("ratings-v1-0", "127.0.1.6", "ratings")]

    conns = asyncio.run(main())
    parts = [source.generate(c.handle, CLUSTER).parts for c in conns]
    assert len(parts[0]) == 2 and parts[0][0] is parts[1][0]  # one outbound part for both
    assert parts[0][1] is not parts[1][1]  # each its own inbound clusters
    for conn, wire, (outbound, inbound) in zip(conns, sent, parts, strict=True):
        got = discovery_pb2.DiscoveryResponse.FromString(wire)
        want = generate(source.snapshot, conn.handle, CLUSTER)
        assert sorted(a.value for a in got.resources) == sorted(a.value for a in want.values())
        assert len(got.resources) == len(outbound) + len(inbound) == conn.types[CLUSTER].resource_count
    # the outbound part's body was encoded for the first proxy and kept for the second
    assert hashes._bodies[id(parts[0][0])][1] is not None


def test_a_snapshot_index_does_not_outlive_its_snapshot() -> None:
    """A module-level table of indexes kept every snapshot ever built alive (each index holds its snapshot)."""
    import gc
    import weakref

    s = bookinfo(version=1)
    gen = Generator()
    gen.resources(s, sidecar("details-v1-0", "127.0.1.4", app="details", version="v1"), ROUTE)
    s2 = type(s)(version=2, mesh=s.mesh, config=s.config, services=s.services, endpoints=s.endpoints,
                 previous_index=s.index)  # the next snapshot takes facts over from s's index
    gen.resources(s2, sidecar("details-v1-0", "127.0.1.4", app="details", version="v1"), ROUTE)
    alive = weakref.ref(s)
    del s
    gc.collect()
    assert alive() is None


def test_proxies_of_a_scope_get_one_shared_response_and_nonces_never_repeat_on_a_stream() -> None:
    """A response was joined per proxy (a copy of every resource's bytes each); proxies that get the same
    resources at the same version now share one, so its nonce is derived from the version and the resources,
    and versions are made unique per stream (a resend at the same snapshot gets `<version>.<n>`)."""
    import asyncio

    from envoy.config.core.v3 import base_pb2
    from envoy.service.discovery.v3 import discovery_pb2

    from sailmesh.controlplane.source import MeshSource
    from sailmesh.server.hashing import HashCache
    from sailmesh.server.metrics import XdsMetrics
    from sailmesh.server.sotw import SotwConnection

    source = MeshSource(bookinfo())
    hashes = HashCache()
    sent: dict[str, list[bytes]] = {}

    def connection(name: str, ip: str) -> SotwConnection:
        p = sidecar(name, ip, app="reviews", version=name.split("-")[1])
        return SotwConnection(p.id, base_pb2.Node(id=p.id), p, source, XdsMetrics(), hashes)

    async def main() -> list[SotwConnection]:
        conns = [connection("reviews-v1-0", "127.0.1.3"), connection("reviews-v2-0", "127.0.1.4")]
        for c in conns:
            async def send(response: object, c: SotwConnection = c) -> None:
                assert isinstance(response, bytes)
                sent.setdefault(c.conn_id, []).append(response)
            await c.handle_request(discovery_pb2.DiscoveryRequest(type_url=ROUTE, resource_names=["9080"]), send)
            await c.respond(c.types[ROUTE], send, force=True, started=None)  # a resend at the same snapshot
        return conns

    a, b = asyncio.run(main())
    first_a, again_a = sent[a.conn_id]
    first_b, again_b = sent[b.conn_id]
    assert first_a is first_b and again_a is again_b  # the same bytes objects, not equal copies
    r1, r2 = (discovery_pb2.DiscoveryResponse.FromString(x) for x in (first_a, again_a))
    assert (r1.version_info, r2.version_info) == ("1", "1.2")
    assert r1.nonce != r2.nonce and r1.resources == r2.resources
    assert a.types[ROUTE].sent_nonce == r2.nonce
