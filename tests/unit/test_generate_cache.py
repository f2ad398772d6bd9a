"""The generated-resource cache: scope sharing, endpoint-only changes, invalidation on config changes."""

from __future__ import annotations

import dataclasses

from sailmesh.generate.cache import ChangeSet, GeneratedCache
from sailmesh.generate.proxy import CLUSTER, ENDPOINT, LISTENER, ROUTE, generate_for
from tests.unit.test_generate_support import (
    bookinfo,
    bookinfo_services,
    bookinfo_workloads,
    make_snapshot,
    resources,
    sidecar,
    workload,
)

TYPES = (CLUSTER, ENDPOINT, LISTENER, ROUTE)


def test_cache_output_equals_direct_generation() -> None:
    snap = bookinfo()
    cache = GeneratedCache()
    p = sidecar()
    for t in TYPES:
        assert cache.get(snap, p, t) == generate_for(snap, p, t)


def test_proxies_with_the_same_scope_share_outbound_resources() -> None:
    snap = bookinfo()
    cache = GeneratedCache()
    a = sidecar("reviews-v1-0", "127.0.1.3", app="reviews", version="v1")
    b = sidecar("reviews-v1-1", "127.0.1.7", app="reviews", version="v1")
    ra, rb = cache.get(snap, a, ROUTE), cache.get(snap, b, ROUTE)
    assert all(ra[n] is rb[n] for n in ra)  # the same packed bytes, generated once
    ca, cb = cache.get(snap, a, CLUSTER), cache.get(snap, b, CLUSTER)
    name = "outbound|9080||reviews.default.svc.cluster.local"
    assert ca[name] is cb[name]
    assert ca["inbound|9080||"] != cb["inbound|9080||"]  # per-proxy: different address
    la, lb = cache.get(snap, a, LISTENER), cache.get(snap, b, LISTENER)
    assert set(la) != set(lb)


def test_endpoint_only_change_regenerates_only_endpoints() -> None:
    s1 = bookinfo(version=1)
    cache = GeneratedCache()
    p = sidecar()
    before = {t: cache.get(s1, p, t) for t in TYPES}
    more = [*bookinfo_workloads(), workload("reviews-v1-1", "127.0.1.9", app="reviews", version="v1")]
    s2 = dataclasses.replace(make_snapshot((), bookinfo_services(), more), version=2)
    pushed = cache.advance(s2, ChangeSet.endpoints_only({"reviews.default.svc.cluster.local"}))
    assert pushed == {ENDPOINT}
    misses = cache.misses
    after = {t: cache.get(s2, p, t) for t in TYPES}
    assert cache.misses == misses + 1  # only the endpoints part was rebuilt
    for t in (CLUSTER, LISTENER, ROUTE):
        assert all(after[t][n] is before[t][n] for n in before[t])
    assert after[ENDPOINT] != before[ENDPOINT]
    assert after[ENDPOINT] == generate_for(s2, p, ENDPOINT)


def test_config_change_invalidates_everything() -> None:
    s1 = bookinfo(version=1)
    vs = ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n"
          "  hosts: [reviews]\n  http:\n  - route: [{destination: {host: reviews, subset: v2}}]\n")
    s2 = make_snapshot(resources(vs), bookinfo_services(), bookinfo_workloads(), version=2)
    cache = GeneratedCache()
    p = sidecar()
    cache.get(s1, p, ROUTE)
    assert cache.advance(s2, ChangeSet()) == {CLUSTER, ENDPOINT, LISTENER, ROUTE}
    assert cache.get(s2, p, ROUTE) == generate_for(s2, p, ROUTE) != generate_for(s1, p, ROUTE)


def test_dns_endpoint_change_also_pushes_clusters() -> None:
    from sailmesh.snapshot.model import Service, ServicePort

    dns = Service("api.example.com", "api.example.com", "default", (ServicePort(443, "tls", "TLS"),),
                  resolution="DNS")
    s1 = make_snapshot(services=[dns], version=1)
    cache = GeneratedCache()
    cache.get(s1, sidecar(), CLUSTER)
    s2 = dataclasses.replace(s1, version=2)
    assert cache.advance(s2, ChangeSet.endpoints_only({"api.example.com"})) == {CLUSTER, ENDPOINT}


def test_unannounced_snapshot_counts_as_full_change() -> None:
    cache = GeneratedCache()
    p = sidecar()
    r1 = cache.get(bookinfo(version=1), p, ROUTE)
    r2 = cache.get(bookinfo(version=2), p, ROUTE)
    assert r1 == r2 and all(r1[n] is not r2[n] for n in r1)
    assert len(cache) == 1  # stale entries dropped


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
        ga, gb = generate_for(a, sidecar(), t), generate_for(b, sidecar(), t)
        assert list(ga) == list(gb)
        assert all(ga[n].value == gb[n].value for n in ga), t
