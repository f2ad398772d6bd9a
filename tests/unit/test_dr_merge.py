"""Several DestinationRules for one host merged as Istio's PushContext.mergeDestinationRule merges them
(snapshot/drmerge.py): subsets concatenated by name (the first rule's subset wins a duplicate name), the top-level
trafficPolicy of the first rule that has one, the first rule's name; rules with different exportTo kept apart
(ENABLE_ENHANCED_DESTINATIONRULE_MERGE) and rules with a workloadSelector only merged with the same selector."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2

from sailmesh.api.resource import Resource
from sailmesh.generate.generator import Generator
from sailmesh.snapshot import drmerge
from sailmesh.xds.types import CLUSTER
from tests.unit.test_generate_support import make_snapshot, resources, service, sidecar, unpacked

C = cluster_pb2.Cluster
HOST = "reviews.default.svc.cluster.local"
SLEEP = sidecar("sleep-0", ip="127.0.1.5", app="sleep")


def rule(name: str, body: str, ts: str, ns: str = "default") -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: {ns}, creationTimestamp: "{ts}"}}
spec:
  host: reviews
{body}"""


FIRST = rule("first", """  subsets: [{name: v1, labels: {version: v1}}]
""", "2024-01-01T00:00:00Z")
SECOND = rule("second", """  trafficPolicy: {loadBalancer: {simple: RANDOM}}
  subsets: [{name: v1, labels: {version: other}}, {name: v2, labels: {version: v2}}]
""", "2024-01-02T00:00:00Z")
THIRD = rule("third", """  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
  subsets: [{name: v3, labels: {version: v3}}]
""", "2024-01-03T00:00:00Z")


def merged(*texts: str) -> list[Resource]:
    return drmerge.consolidate(resources(*texts))


def test_subsets_concatenated_first_policy_and_name_kept() -> None:
    (one,) = merged(FIRST, SECOND, THIRD)
    assert one.name == "first"
    assert [(s["name"], s["labels"]["version"]) for s in one.spec["subsets"]] == [("v1", "v1"), ("v2", "v2"),
                                                                                  ("v3", "v3")]
    # the first rule has no trafficPolicy: the next one that has one gives it, later ones do not replace it
    assert one.spec["trafficPolicy"] == {"loadBalancer": {"simple": "RANDOM"}}


def test_different_export_to_is_not_merged_and_the_last_catch_all_applies() -> None:
    private = rule("private", """  exportTo: ["."]
  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
  subsets: [{name: v3, labels: {version: v3}}]
""", "2024-01-03T00:00:00Z")
    assert [r.name for r in merged(FIRST, SECOND, private)] == ["first", "private"]


def test_selector_rules_merge_only_with_the_same_selector() -> None:
    sel = """  workloadSelector: {matchLabels: {app: sleep}}
"""
    a = rule("sel-a", sel + "  subsets: [{name: s1, labels: {version: v1}}]\n", "2024-01-04T00:00:00Z")
    b = rule("sel-b", sel + "  subsets: [{name: s2, labels: {version: v2}}]\n", "2024-01-05T00:00:00Z")
    c = rule("sel-c", "  workloadSelector: {matchLabels: {app: other}}\n", "2024-01-06T00:00:00Z")
    out = merged(FIRST, a, b, c)
    # Istio's order: rules with a selector first (by creation time), then the others
    assert [r.name for r in out] == ["sel-a", "sel-c", "first"]
    assert [s["name"] for s in out[0].spec["subsets"]] == ["s1", "s2"]


def test_the_mesh_serves_the_subsets_of_both_rules() -> None:
    """Through the generator: a sidecar gets the v1, v2 and v3 subset clusters of three rules and the second rule's
    load balancer (before, only the oldest rule applied: v2 and v3 did not exist, routes to them answered 503)."""
    snap = make_snapshot(resources(FIRST, SECOND, THIRD), services=[service("reviews")])
    clusters = unpacked(Generator().resources(snap, SLEEP, CLUSTER), C)
    for subset in ("v1", "v2", "v3"):
        assert f"outbound|9080|{subset}|{HOST}" in clusters
    assert clusters[f"outbound|9080||{HOST}"].lb_policy == C.RANDOM  # type: ignore[attr-defined]
    assert snap.index.destination_rule("default", snap.services[HOST]) is \
        snap.index.destination_rule("default", snap.services[HOST])  # one merged object per snapshot
