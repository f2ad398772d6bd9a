"""An endpoint change re-assembles the assignments of the services whose endpoints changed only; every scope's
assignments stay exactly what a fresh generator makes (issue 8: without Sidecar scoping each of 50 namespaces
re-derived the subsets, DestinationRule and locality of all 1,000 services for a change of three)."""

from __future__ import annotations

import dataclasses
import pathlib

from sailmesh.generate.generator import Generator
from sailmesh.snapshot.model import Endpoint, MeshSnapshot
from sailmesh.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE
from tests.unit.test_generate_support import (
    bookinfo,
    bookinfo_services,
    bookinfo_workloads,
    make_snapshot,
    service,
    sidecar,
)

REVIEWS = "reviews.default.svc.cluster.local"
RATINGS = "ratings.default.svc.cluster.local"


def without_first_endpoint(snap: MeshSnapshot, version: int, host: str) -> MeshSnapshot:
    """`snap` with one endpoint of `host` gone; every other endpoint tuple stays the same object."""
    endpoints = dict(snap.endpoints)
    for key, eps in snap.endpoints.items():
        if key[0] == host:
            endpoints[key] = eps[1:]
    return dataclasses.replace(snap, version=version, endpoints=endpoints)


PROXIES = [sidecar("details-v1-0", "127.0.1.4", app="details", version="v1"),
           sidecar("productpage-v1-0", "127.0.1.1", app="productpage", version="v1"),
           sidecar("client-v1-0", "127.0.9.1", ns="bar", app="client", version="v1")]


def test_assignments_after_endpoint_changes_are_what_a_fresh_generator_makes(conformance: pathlib.Path) -> None:
    s1 = bookinfo(conformance / "bookinfo" / "destination-rule-all.yaml")
    s2 = without_first_endpoint(s1, 2, REVIEWS)
    s3 = without_first_endpoint(s2, 3, RATINGS)  # ratings' only endpoint: an empty assignment
    s4 = dataclasses.replace(bookinfo(version=4), endpoints=s3.endpoints)  # the DestinationRules gone
    gen = Generator()
    for p in PROXIES:
        gen.resources(s1, p, ENDPOINT)
    for snap in (s2, s3, s4):
        gen.advance(snap, {ENDPOINT})
        for p in PROXIES:
            got, fresh = gen.resources(snap, p, ENDPOINT), Generator().resources(snap, p, ENDPOINT)
            assert got == fresh and list(got) == list(fresh), (snap.version, p.id)  # in the same order too


def test_an_endpoint_change_assembles_the_changed_services_assignments_only(conformance: pathlib.Path) -> None:
    s1 = bookinfo(conformance / "bookinfo" / "destination-rule-all.yaml")
    s2 = without_first_endpoint(s1, 2, REVIEWS)
    p = PROXIES[0]
    gen = Generator()
    everything = gen.resources(s1, p, ENDPOINT)
    looked_up: list[str] = []
    memo_get = gen.memos.assignments.get

    def counted(key, held):  # the assignment memo is asked once per cluster assembled
        looked_up.append(key[0])
        return memo_get(key, held)

    gen.memos.assignments.get = counted  # type: ignore[method-assign]
    gen.advance(s2, {ENDPOINT})
    after = gen.resources(s2, p, ENDPOINT)
    assert sorted(looked_up) == sorted(n for n in everything if n.endswith(REVIEWS)) and len(looked_up) == 4
    assert after.keys() == everything.keys()
    assert all(after[n] is everything[n] for n in everything if not n.endswith(REVIEWS))
    assert after[f"outbound|9080||{REVIEWS}"] != everything[f"outbound|9080||{REVIEWS}"]  # one endpoint fewer


def test_scopes_of_superseded_config_do_not_accumulate() -> None:
    """A scope's assignments pin the config and endpoints they were built from; scopes of superseded config are
    dropped now and then instead of piling up to the memo's bound."""
    gen = Generator()
    for k in range(150):  # each snapshot has new config objects, each proxy its own namespace (scope)
        gen.resources(bookinfo(version=k + 1), sidecar(f"c-{k}", "127.0.9.1", ns=f"ns-{k}", app="c"), ENDPOINT)
    assert len(gen.memos.endpoint_scopes) < 80


def test_a_route_change_before_an_endpoint_change_does_not_reassemble_every_service(conformance: pathlib.Path) -> None:
    """What a scope's assignments read of the config is the DestinationRules (and the mesh): a VirtualService change
    (pushed as routes only, so the scopes are not rebuilt then) made the next endpoint change re-assemble every
    service of every scope (1,000 services x 25 namespaces in the benchmark: its endpoint p99 was that push)."""
    rules = conformance / "bookinfo" / "destination-rule-all.yaml"
    s1 = bookinfo(rules)
    routed = bookinfo(conformance / "bookinfo" / "virtual-service-reviews-v3.yaml")
    s2 = dataclasses.replace(s1, version=2, config=dict(s1.config, VirtualService=routed.of_kind("VirtualService")))
    s3 = without_first_endpoint(s2, 3, REVIEWS)
    p = PROXIES[0]
    gen = Generator()
    before = gen.resources(s1, p, ENDPOINT)
    gen.advance(s2, {CLUSTER, LISTENER, ROUTE})  # routes only: the endpoint scopes are not asked for
    looked_up: list[str] = []
    memo_get = gen.memos.assignments.get

    def counted(key, held):
        looked_up.append(key[0])
        return memo_get(key, held)

    gen.memos.assignments.get = counted  # type: ignore[method-assign]
    gen.advance(s3, {ENDPOINT})
    after = gen.resources(s3, p, ENDPOINT)
    assert sorted(looked_up) == sorted(n for n in before if n.endswith(REVIEWS))
    assert after == Generator().resources(s3, p, ENDPOINT)


def test_a_service_that_gains_or_loses_its_clusters_assignments_on_an_endpoint_change() -> None:
    """A resolution NONE service without a selector forwards (no assignment) until it has endpoints, then uses EDS:
    an endpoint change can add or remove a service's assignments, and the scope's other services stay in place."""
    host = "ext.default.svc.cluster.local"
    services = [*bookinfo_services(), service("ext", selector={}, resolution="NONE")]
    s1 = make_snapshot((), services, bookinfo_workloads())
    ep = Endpoint(service=host, service_port=9080, address="127.0.7.1", port=9080)
    s2 = dataclasses.replace(s1, version=2, endpoints={**s1.endpoints, (host, 9080): (ep,)})
    s3 = dataclasses.replace(s2, version=3, endpoints={**s2.endpoints, (host, 9080): ()})
    gen = Generator()
    p = PROXIES[0]
    assert f"outbound|9080||{host}" not in gen.resources(s1, p, ENDPOINT)
    for snap in (s2, s3):
        gen.advance(snap, {ENDPOINT})
        got, fresh = gen.resources(snap, p, ENDPOINT), Generator().resources(snap, p, ENDPOINT)
        assert got == fresh and list(got) == list(fresh), snap.version
    assert f"outbound|9080||{host}" in Generator().resources(s2, p, ENDPOINT)
