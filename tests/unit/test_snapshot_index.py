"""The SnapshotIndex is built with its snapshot by snapshot.build, from the previous snapshot's index."""

from __future__ import annotations

import gc
import weakref

from sailmesh.api.change import Change
from sailmesh.api.parse import parse_text
from sailmesh.api.resource import ResourceKey
from sailmesh.registry.workloads import LocalRegistry
from sailmesh.snapshot.build import build
from sailmesh.store.memory import MemoryStore
from tests.unit.test_generate_support import sidecar

CONFIG = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec: {selector: {app: ratings}, ports: [{name: http, port: 9080}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{sourceLabels: {app: productpage}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec: {host: reviews, subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]}
"""

RATINGS_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec: {hosts: [ratings], http: [{route: [{destination: {host: ratings}}]}]}
"""


def _store(text: str) -> MemoryStore:
    store = MemoryStore()
    store.apply(parse_text(text, "<test>").resources)
    return store


def test_the_index_belongs_to_its_snapshot_and_takes_over_what_did_not_change() -> None:
    store, reg = _store(CONFIG), LocalRegistry()
    s1 = build(None, store, reg, Change.everything())
    pp = sidecar("productpage-v1-0", "127.0.1.1", app="productpage", version="v1")
    reviews_vs = s1.of_kind("VirtualService")[0]
    reviews = s1.services["reviews.default.svc.cluster.local"]
    key1, dr1, hosts1 = s1.index.outbound_key(pp), s1.index.destination_rule("default", reviews), \
        s1.index.hosts_of(reviews_vs)
    assert dr1 is not None and dr1.name == "reviews" and hosts1 == ["reviews.default.svc.cluster.local"]

    # A VirtualService without sourceLabels is added: the facts of the unchanged objects carry over.
    res = store.apply(parse_text(RATINGS_VS, "<test>").resources)
    s2 = build(s1, store, reg, Change(frozenset(res.created)))
    assert s2.index is not s1.index
    assert s2.index.hosts_of(reviews_vs) is hosts1  # the same object: not recomputed
    assert s2.index.outbound_key(pp) == key1
    assert s2.index.destination_rule("default", reviews) is dr1
    assert s2.index.visible_services(pp) is s1.index.visible_services(pp)  # same services, Sidecars, selectors
    assert [vs.name for vs in s2.index.mesh_virtual_services(pp)] == ["reviews", "ratings"]  # oldest first

    # A changed DestinationRule is looked up anew.
    dr_text = CONFIG.split("---")[-1].replace("name: v2, labels: {version: v2}", "name: v3, labels: {version: v3}")
    res = store.apply(parse_text(dr_text, "<test>").resources)
    s3 = build(s2, store, reg, Change(frozenset(res.updated)))
    dr3 = s3.index.destination_rule("default", reviews)
    assert dr3 is not None and dr3 is not dr1 and [s["name"] for s in dr3.spec["subsets"]] == ["v1", "v3"]


def test_an_index_keeps_no_older_snapshot_alive() -> None:
    store, reg = _store(CONFIG), LocalRegistry()
    s1 = build(None, store, reg, Change.everything())
    s1.index.outbound_key(sidecar())
    s2 = build(s1, store, reg, Change.of(ResourceKey("VirtualService", "default", "reviews")))
    s2.index.outbound_key(sidecar())
    alive = weakref.ref(s1)
    del s1
    gc.collect()
    assert alive() is None and s2.index.outbound_key(sidecar())


def _dr(name: str, ns: str, host: str, extra: str = "") -> str:
    return f"""---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: {ns}}}
spec: {{host: {host}{extra}}}
"""


# a, b, c hold rules for their own services and for others'; e and f hold none, but a rule of b is exported to f by
# name; istio-system (the root) holds a wildcard rule for every service
VIEWS = "".join(f"""---
apiVersion: v1
kind: Service
metadata: {{name: s-{ns}, namespace: {ns}}}
spec: {{selector: {{app: s-{ns}}}, ports: [{{name: http, port: 80}}]}}
""" for ns in "abcdef") + "".join([
    _dr("a", "a", "s-a"), _dr("a-x", "a", "s-a", ", workloadSelector: {matchLabels: {app: x}}"),
    _dr("b-own", "b", "s-b", ', exportTo: ["."]'), _dr("b-to-f", "b", "s-b", ', exportTo: ["f"]'),
    _dr("c-to-a", "c", "s-c", ', exportTo: ["a"]'), _dr("c-for-b", "c", "s-b.b.svc.cluster.local"),
    _dr("root", "istio-system", "'*.svc.cluster.local'")])


def test_destination_rule_answers_are_kept_once_for_the_namespaces_that_see_the_same_rules() -> None:
    """Istio's PushContext.destinationRule + SidecarScope.DestinationRule (proxy namespace, service namespace, root;
    exportTo; workloadSelector rules private to their namespace), answered as the unmemoized lookup answers for
    every proxy namespace, service and labels; but a proxy namespace none of whose own rules is for a host and that
    no exportTo names (e, d, and a, b, c for hosts they hold no rule for) shares one memo entry per host: before,
    the memo held an entry per (proxy namespace, host), ~0.05 MB per proxy at 5,000 services (docs/benchmarks.md)."""
    snap = build(None, _store(VIEWS), LocalRegistry(), Change.everything())
    idx = snap.index
    namespaces = ["a", "b", "c", "d", "e", "f", "istio-system"]
    for ns in namespaces:
        for svc in snap.services.values():
            for labels in ({"app": "x"}, {"app": "y"}):
                selected, catch_all = idx._candidates(ns, svc)  # the lookup itself, no memo
                want = next((dr for sel, dr in selected if all(labels.get(k) == v for k, v in sel.items())),
                            catch_all)
                assert idx.destination_rule(ns, svc, labels) is want, (ns, svc.hostname, labels)
    name = {ns: {h: (idx.destination_rule(ns, s) or s).name for h, s in snap.services.items()} for ns in namespaces}
    assert name["e"]["s-b.b.svc.cluster.local"] == "root" and name["f"]["s-b.b.svc.cluster.local"] == "b-to-f"
    assert name["a"]["s-c.c.svc.cluster.local"] == "c-to-a" and name["b"]["s-c.c.svc.cluster.local"] == "root"
    assert name["c"]["s-b.b.svc.cluster.local"] == "c-for-b"
    # one shared entry per host; a namespace's own entries only for the hosts of its rules (a: s-a, b: s-b, c: s-c
    # and s-b) and of the rules exporting to it by name (a: s-c, f: s-b); the root's wildcard covers every host
    assert len(idx._dr_any) == len(snap.services)
    assert {ns: sorted(h.split(".")[0] for h in answers) for ns, answers in idx._dr.items()} == {
        "a": ["s-a", "s-c"], "b": ["s-b"], "c": ["s-b", "s-c"], "f": ["s-b"],
        "istio-system": ["s-a", "s-b", "s-c", "s-d", "s-e", "s-f"]}
