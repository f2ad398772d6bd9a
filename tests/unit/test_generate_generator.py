"""The Generator: cache sharing by scope, what a change regenerates, unknown types and failing builders."""

from __future__ import annotations

import dataclasses

import pytest

from sailmesh.api.change import Change
from sailmesh.api.resource import ResourceKey
from sailmesh.errors import GenerationError
from sailmesh.generate import generator as generator_mod
from sailmesh.generate.affect import affected_types, push_request
from sailmesh.generate.generator import Generator, Part
from sailmesh.registry.workloads import workload_key
from sailmesh.xds.push import PushRequest
from sailmesh.xds.types import CLUSTER, ENDPOINT, EXTENSION_CONFIG, LISTENER, PUSH_ORDER, ROUTE, SECRET
from tests.unit.test_generate_support import (
    bookinfo,
    bookinfo_services,
    bookinfo_workloads,
    generate,
    make_snapshot,
    resources,
    sidecar,
    workload,
)

TYPES = (CLUSTER, ENDPOINT, LISTENER, ROUTE)


def test_cached_output_equals_fresh_generation() -> None:
    snap = bookinfo()
    gen = Generator()
    p = sidecar()
    for t in TYPES:
        gen.generate(snap, p, t)
        assert gen.resources(snap, p, t) == generate(snap, p, t)
    assert gen.hits >= len(TYPES)


def test_proxies_with_the_same_scope_share_outbound_resources() -> None:
    snap = bookinfo()
    gen = Generator()
    a = sidecar("reviews-v1-0", "127.0.1.3", app="reviews", version="v1")
    b = sidecar("reviews-v1-1", "127.0.1.7", app="reviews", version="v1")
    ra, rb = gen.resources(snap, a, ROUTE), gen.resources(snap, b, ROUTE)
    assert all(ra[n] is rb[n] for n in ra)  # the same packed bytes, generated once
    ca, cb = gen.resources(snap, a, CLUSTER), gen.resources(snap, b, CLUSTER)
    name = "outbound|9080||reviews.default.svc.cluster.local"
    assert ca[name] is cb[name]
    assert ca["inbound|9080||"] != cb["inbound|9080||"]  # per-proxy: different address
    la, lb = gen.resources(snap, a, LISTENER), gen.resources(snap, b, LISTENER)
    assert set(la) != set(lb)


def test_endpoint_only_change_regenerates_only_endpoints() -> None:
    s1 = bookinfo(version=1)
    gen = Generator()
    p = sidecar()
    before = {t: gen.resources(s1, p, t) for t in TYPES}
    more = [*bookinfo_workloads(), workload("reviews-v1-1", "127.0.1.9", app="reviews", version="v1")]
    s2 = dataclasses.replace(make_snapshot((), bookinfo_services(), more), version=2)
    change = Change.of(workload_key("reviews-v1-1", "default"))
    request = push_request(change, s1, s2)
    assert request is not None and request.type_urls == {ENDPOINT}
    gen.advance(s2, request.type_urls)
    misses = gen.misses
    after = {t: gen.resources(s2, p, t) for t in TYPES}
    assert gen.misses == misses + 1  # only the endpoints part was rebuilt
    for t in (CLUSTER, LISTENER, ROUTE):
        assert all(after[t][n] is before[t][n] for n in before[t])
    assert after[ENDPOINT] != before[ENDPOINT]
    assert after[ENDPOINT] == generate(s2, p, ENDPOINT)


def test_config_change_invalidates_everything() -> None:
    s1 = bookinfo(version=1)
    vs = ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n"
          "  hosts: [reviews]\n  http:\n  - route: [{destination: {host: reviews, subset: v2}}]\n")
    s2 = make_snapshot(resources(vs), bookinfo_services(), bookinfo_workloads(), version=2)
    gen = Generator()
    p = sidecar()
    gen.resources(s1, p, ROUTE)
    gen.advance(s2, None)  # every type
    assert gen.resources(s2, p, ROUTE) == generate(s2, p, ROUTE) != generate(s1, p, ROUTE)


def test_dns_endpoint_change_also_pushes_clusters() -> None:
    from sailmesh.snapshot.model import Service, ServicePort

    dns = Service("api.example.com", "api.example.com", "default", (ServicePort(443, "tls", "TLS"),),
                  resolution="DNS")
    s1 = make_snapshot(services=[dns], version=1)
    gen = Generator()
    gen.resources(s1, sidecar(), CLUSTER)
    from sailmesh.snapshot.model import Endpoint

    s2 = make_snapshot(services=[dns], version=2, extra_endpoints=[Endpoint("api.example.com", 443, "10.0.0.1", 443)])
    assert affected_types(Change.of(ResourceKey("WorkloadEntry", "default", "api")), s1, s2) == {CLUSTER, ENDPOINT}


def test_unannounced_snapshot_counts_as_full_change() -> None:
    gen = Generator()
    p = sidecar()
    r1 = gen.resources(bookinfo(version=1), p, ROUTE)
    misses = gen.misses
    r2 = gen.resources(bookinfo(version=2), p, ROUTE)
    # generated anew; the equal result is interned to the part it replaced (route configurations by content)
    assert gen.misses == misses + len(generator_mod.TYPES[ROUTE]) and r1 == r2
    assert len(gen) == len(generator_mod.TYPES[ROUTE])  # stale entries dropped


def test_generation_is_byte_identical_for_equal_input() -> None:
    # The server skips resources whose bytes did not change: equal snapshots must give equal bytes.
    vs = ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n"
          "  hosts: [reviews]\n  http:\n  - headers: {request: {set: {b: '2', a: '1'}}}\n"
          "    route: [{destination: {host: reviews, subset: v2}}]\n")
    dr = ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\nspec:\n"
          "  host: reviews\n  trafficPolicy: {connectionPool: {http: {idleTimeout: 5s}}}\n"
          "  subsets: [{name: v2, labels: {version: v2}}]\n")
    a = make_snapshot(resources(vs, dr), bookinfo_services(), bookinfo_workloads(), version=1)
    b = make_snapshot(resources(vs, dr), bookinfo_services(), bookinfo_workloads(), version=2)
    for t in TYPES:
        ga, gb = generate(a, sidecar(), t), generate(b, sidecar(), t)
        assert list(ga) == list(gb)
        assert all(ga[n].value == gb[n].value for n in ga), t


def test_resolution_none_endpoint_change_also_pushes_clusters() -> None:
    # The cluster of a NONE service forwards to the requested host without endpoints and is EDS with them: one
    # rule (generate.affect) decides this for the snapshot build and the push alike.
    from sailmesh.snapshot.model import Endpoint, Service, ServicePort

    svc = Service("db.example.com", "db.example.com", "default", (ServicePort(5432, "tcp", "TCP"),),
                  resolution="NONE")
    s1 = make_snapshot(services=[svc], version=1)
    s2 = make_snapshot(services=[svc], version=2, extra_endpoints=[Endpoint("db.example.com", 5432, "10.0.0.2", 5432)])
    assert affected_types(Change.of(ResourceKey("WorkloadEntry", "default", "db")), s1, s2) == {CLUSTER, ENDPOINT}


def test_push_request_per_kind() -> None:
    s1, s2 = bookinfo(version=1), bookinfo(version=2)
    vs = Change.of(ResourceKey("VirtualService", "default", "r"))
    assert push_request(vs, s1, s2) == PushRequest("2", frozenset({ROUTE}), reason="VirtualService")
    gw = Change.of(ResourceKey("Gateway", "default", "g"))
    assert affected_types(gw, s1, s2) == {LISTENER, ROUTE, SECRET}  # SECRET: the credentialName secrets it names
    assert affected_types(Change.of(ResourceKey("Sidecar", "default", "s")), s1, s2) == set(TYPES)
    assert affected_types(Change.everything(), s1, s2) == {*TYPES, SECRET, EXTENSION_CONFIG}
    ef = Change.of(ResourceKey("EnvoyFilter", "default", "f"))
    assert affected_types(ef, s1, s2) == {*TYPES, EXTENSION_CONFIG}  # ECDS: EXTENSION_CONFIG patches
    assert affected_types(Change.of(ResourceKey("Secret", "istio-system", "c")), s1, s2) == {SECRET}
    # a workload change that moved no endpoint pushes nothing
    assert push_request(Change.of(workload_key("reviews-v1-0", "default")), s1, s2) is None


def test_type_table_is_in_push_order_and_unknown_types_are_errors() -> None:
    assert tuple(generator_mod.TYPES) == PUSH_ORDER
    gen = Generator()
    assert gen.resources(bookinfo(), sidecar(), SECRET) == {}  # sidecars: secrets come over SDS from the agent
    with pytest.raises(GenerationError, match="not served"):
        gen.generate(bookinfo(), sidecar(), "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration")


def test_a_failing_builder_is_a_generation_error_naming_proxy_and_type(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_snapshot, _proxy, _memos) -> list:
        raise IndexError("list index out of range")

    monkeypatch.setitem(generator_mod.TYPES, ROUTE, (Part("routes", broken, generator_mod.outbound_scope),))
    p = sidecar()
    with pytest.raises(GenerationError) as err:
        Generator().generate(bookinfo(), p, ROUTE)
    assert "rds" in str(err.value) and p.id in str(err.value) and "IndexError" in str(err.value)


def test_scopes_that_see_the_same_resources_share_one_part_object() -> None:
    """Namespaces without Sidecar scoping see the same outbound clusters and endpoints: one part object for all
    of them, so the ADS server hashes and encodes it once (5,000 services x 100 namespaces did not fit before)."""
    snap = bookinfo()
    gen = Generator()
    a = sidecar("reviews-v1-0", "127.0.1.3", app="reviews", version="v1")
    b = sidecar("client-0", "127.0.9.1", ns="other", app="client", version="v1")
    assert snap.index.outbound_key(a) != snap.index.outbound_key(b)  # two scopes
    for t in (CLUSTER, ENDPOINT):
        assert gen.generate(snap, a, t)[0] is gen.generate(snap, b, t)[0], t
    # routes differ (short-name domains are per namespace): not merged
    assert gen.generate(snap, a, ROUTE)[0] is not gen.generate(snap, b, ROUTE)[0]


def test_a_part_rebuilt_unchanged_keeps_its_identity() -> None:
    """After a change regenerates a type, parts whose content did not change are the same objects as before
    (the server's digests and encoded bodies stay valid)."""
    s1 = bookinfo(version=1)
    gen = Generator()
    p = sidecar()
    before = gen.generate(s1, p, CLUSTER)
    s2 = dataclasses.replace(s1, version=2)
    gen.advance(s2, {CLUSTER})
    after = gen.generate(s2, p, CLUSTER)
    assert gen.misses >= 3  # rebuilt ...
    assert after[0] is before[0] and after[1] is not before[1]  # ... outbound interned; inbound is built anew
    assert after[1] == before[1]


def test_route_memo_entries_are_reused_by_identity_of_their_inputs() -> None:
    """A VirtualService change re-translates only the routes of its host; the other services' serialized routes
    are the same bytes objects (the memo key is the identity of inputs the entry keeps alive)."""
    from sailmesh.generate import routes

    vs = ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n"
          "  hosts: [reviews]\n  http:\n  - route: [{destination: {host: reviews, subset: v2}}]\n")
    s1 = bookinfo(version=1)
    s2 = dataclasses.replace(s1, version=2, config={**s1.config, "VirtualService": tuple(resources(vs))},
                             previous_index=s1.index)  # services, rules and mesh: the same objects
    gen = Generator()
    p = sidecar()
    gen.resources(s1, p, ROUTE)
    gen.advance(s2, {ROUTE})
    gen.resources(s2, p, ROUTE)
    ratings = s1.services["ratings.default.svc.cluster.local"]
    reviews = s1.services["reviews.default.svc.cluster.local"]
    assert routes._memo_entry(s1, p, ratings, 9080, gen.memos) is routes._memo_entry(s2, p, ratings, 9080, gen.memos)
    assert routes._memo_entry(s1, p, reviews, 9080, gen.memos) is not \
        routes._memo_entry(s2, p, reviews, 9080, gen.memos)


def test_route_memo_entries_of_superseded_config_are_dropped() -> None:
    """Issue 13's soak: every VirtualService change left a route memo entry behind (the old VirtualService, its
    parsed YAML and routes) until 100,000 entries. Entries holding superseded inputs can never be hit again (their
    key holds those objects' ids), so they are swept now and then; entries of current inputs stay and are reused."""
    from sailmesh.generate import routes

    def vs(i: int) -> str:
        return ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n"
                f"  hosts: [reviews]\n  http:\n  - route: [{{destination: {{host: reviews, subset: v{i % 3 + 1}}}}}]\n"
                f"    headers: {{response: {{set: {{x-change: '{i}'}}}}}}\n")

    gen, p = Generator(), sidecar()
    snap = bookinfo(version=1)
    gen.resources(snap, p, ROUTE)
    ratings = snap.services["ratings.default.svc.cluster.local"]
    first = routes._memo_entry(snap, p, ratings, 9080, gen.memos)
    changes = 300
    for i in range(2, changes + 2):
        snap = dataclasses.replace(snap, version=i, config={**snap.config, "VirtualService": tuple(resources(vs(i)))},
                                   previous_index=snap.index)
        gen.advance(snap, {ROUTE})
        gen.resources(snap, p, ROUTE)
    assert len(gen.memos.routes) < changes // 2  # one entry per change before: > 300
    assert routes._memo_entry(snap, p, ratings, 9080, gen.memos) is first  # unchanged inputs: still reused


HASH_DR_IN_BAR = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-hash, namespace: bar}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}
"""


def test_routes_are_translated_once_for_namespaces_that_read_them_alike() -> None:
    """Routes read the proxy only through client matches (sourceLabels/sourceNamespace) and the
    DestinationRules its namespace sees (hash policies): namespaces alike share one translation; a namespace
    whose rule adds a hash policy gets its own; and what every proxy gets equals a fresh translation."""
    from envoy.config.route.v3 import route_pb2

    from sailmesh.generate import routes

    snap = bookinfo(HASH_DR_IN_BAR)
    gen = Generator()
    other = sidecar("client-0", "127.0.9.1", ns="other", app="client", version="v1")
    bar = sidecar("client-1", "127.0.9.2", ns="bar", app="client", version="v1")
    reviews = snap.services["reviews.default.svc.cluster.local"]
    ratings = snap.services["ratings.default.svc.cluster.local"]
    for p in (other, bar, sidecar()):
        assert gen.resources(snap, p, ROUTE) == generate(snap, p, ROUTE), p.id
    assert routes._memo_entry(snap, other, ratings, 9080, gen.memos) is \
        routes._memo_entry(snap, sidecar(), ratings, 9080, gen.memos)  # two namespaces, one translation
    assert routes._memo_entry(snap, other, reviews, 9080, gen.memos) is not \
        routes._memo_entry(snap, bar, reviews, 9080, gen.memos)  # bar's rule hashes on x-user
    rc = route_pb2.RouteConfiguration()
    gen.resources(snap, bar, ROUTE)["9080"].Unpack(rc)
    vh = next(v for v in rc.virtual_hosts if v.name.startswith("reviews."))
    assert vh.routes[0].route.hash_policy[0].header.header_name == "x-user"
    # the short-name alias stays per namespace
    assert "reviews" not in vh.domains and "reviews.default" in vh.domains
