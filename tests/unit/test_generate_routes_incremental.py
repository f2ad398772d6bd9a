"""A VirtualService change rebuilds its own hosts' virtual hosts only; every route configuration stays exactly what
a fresh generator makes (issue 8's push cost: without Sidecar scoping each of 25 namespaces re-derived the routes
of all 1,000 services for one changed VirtualService, 25,000 memo look-ups per push)."""

from __future__ import annotations

import dataclasses
import functools

import pytest

from sailmesh.api.resource import Resource
from sailmesh.generate.generator import Generator
from sailmesh.snapshot.model import MeshSnapshot
from sailmesh.xds.types import ROUTE
from tests.unit.test_bench_controlplane_sharing import BAR_DR, SOURCE_LABELS_VS
from tests.unit.test_generate_delegate import DELEGATE, ROOT
from tests.unit.test_generate_support import bookinfo, resources, sidecar


def vs(host: str, subset: str, name: str = "", extra_host: str = "") -> str:
    hosts = f"[{host}{', ' + extra_host if extra_host else ''}]"
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name or host}, namespace: default}}
spec:
  hosts: {hosts}
  http:
  - route: [{{destination: {{host: {host}, subset: {subset}}}}}]
"""


BASE = (vs("reviews", "v1"), vs("ratings", "v1"))


@functools.cache
def parsed(text: str) -> tuple[Resource, ...]:
    """The same Resource objects for the same text: a VirtualService not edited stays the same object."""
    return tuple(resources(text))


def with_config(snap: MeshSnapshot, version: int, vss: tuple[str, ...], *others: str) -> MeshSnapshot:
    config = dict(snap.config)
    config["VirtualService"] = tuple(r for text in vss for r in parsed(text))
    for r in (r for text in others for r in parsed(text)):
        config[r.kind] = (*config.get(r.kind, ()), r)
    return dataclasses.replace(snap, version=version, config=config)


CHANGES = {
    "a VirtualService's routes": ((vs("reviews", "v2"), BASE[1]), ()),
    "a VirtualService added": ((*BASE, vs("details", "v1")), ()),
    "a VirtualService removed": ((BASE[1],), ()),
    "a VirtualService with a host that is no service": ((*BASE, vs("reviews", "v3", "r2", "www.example.com")), ()),
    "a DestinationRule (not only VirtualServices)": (BASE, (BAR_DR,)),
    "sourceLabels matching some proxies": ((SOURCE_LABELS_VS, BASE[1]), ()),
    "a delegating root VirtualService": ((ROOT, DELEGATE, BASE[1]), ()),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_routes_after_a_change_are_what_a_fresh_generator_makes(change: str) -> None:
    s1 = with_config(bookinfo(), 1, BASE)
    vss, others = CHANGES[change]
    s2 = with_config(s1, 2, vss, *others)
    proxies = [sidecar("details-v1-0", "127.0.1.4", app="details", version="v1"),
               sidecar("productpage-v1-0", "127.0.1.1", app="productpage", version="v1"),
               sidecar("client-v1-0", "127.0.9.1", ns="bar", app="client", version="v1")]
    gen = Generator()
    for p in proxies:
        gen.resources(s1, p, ROUTE)
    gen.advance(s2, {ROUTE})
    for p in proxies:
        assert gen.resources(s2, p, ROUTE) == Generator().resources(s2, p, ROUTE), p.id
    s3 = with_config(s2, 3, BASE)  # and back
    gen.advance(s3, {ROUTE})
    for p in proxies:
        assert gen.resources(s3, p, ROUTE) == Generator().resources(s3, p, ROUTE), p.id


def test_a_virtual_service_change_keeps_the_other_hosts_virtual_hosts() -> None:
    s1 = with_config(bookinfo(), 1, BASE)
    s2 = with_config(s1, 2, (vs("reviews", "v2"), BASE[1]))
    p = sidecar("details-v1-0", "127.0.1.4", app="details", version="v1")
    gen = Generator()
    gen.resources(s1, p, ROUTE)
    okey = s1.index.outbound_key(p)
    before = {(i[0], i[1]): i for i in gen.memos.route_scopes[okey].items}
    gen.advance(s2, {ROUTE})
    gen.resources(s2, p, ROUTE)
    after = {(i[0], i[1]): i for i in gen.memos.route_scopes[s2.index.outbound_key(p)].items}
    assert before.keys() == after.keys()
    for key, item in after.items():
        if key[0].startswith("reviews."):
            assert item[3] != before[key][3]  # rebuilt: its VirtualService changed
        else:
            assert item is before[key]  # reused as it was, not looked up again


def test_scopes_of_superseded_services_do_not_accumulate() -> None:
    """A scope's virtual hosts pin the services and config they were built from; scopes whose inputs were
    superseded are dropped now and then instead of piling up to the memo's bound (the soak's kind of leak)."""
    gen = Generator()
    for k in range(150):  # each snapshot has new services objects, each proxy its own namespace (scope)
        gen.resources(bookinfo(version=k + 1), sidecar(f"c-{k}", "127.0.9.1", ns=f"ns-{k}", app="c"), ROUTE)
    assert len(gen.memos.route_scopes) < 80


def test_the_virtual_services_a_change_touched_are_found_once_for_every_scope() -> None:
    """Which VirtualServices a change added or removed depends on the two snapshots only: every scope (a namespace
    without Sidecar scoping, 25 in the benchmark) compared the two lists of 1,000 VirtualServices on each push."""
    s1 = with_config(bookinfo(), 1, BASE)
    s2 = with_config(s1, 2, (vs("reviews", "v2"), BASE[1]))
    proxies = [sidecar("details-v1-0", "127.0.1.4", app="details", version="v1"),
               sidecar("client-v1-0", "127.0.9.1", ns="bar", app="client", version="v1"),
               sidecar("client-v1-0", "127.0.9.2", ns="baz", app="client", version="v1")]
    gen = Generator()
    for p in proxies:
        gen.resources(s1, p, ROUTE)
    assert len({s1.index.outbound_key(p) for p in proxies}) == 3  # three scopes
    found: list[object] = []
    put = gen.memos.changes.put
    gen.memos.changes.put = lambda key, held, value: (found.append(value), put(key, held, value))  # type: ignore
    gen.advance(s2, {ROUTE})
    for p in proxies:
        assert gen.resources(s2, p, ROUTE) == Generator().resources(s2, p, ROUTE), p.id
    old, new = s1.of_kind("VirtualService"), s2.of_kind("VirtualService")
    assert found == [[old[0], new[0]]]  # once, for the three scopes: the old reviews VirtualService and the new one
