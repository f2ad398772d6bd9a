"""Locality load balancing as Istio's pilot/pkg/networking/core/loadbalancer applies it: a workload's locality (field,
topology labels, istio-locality), EDS priorities by proximity with outlier detection (default failover), `failover`
region pairs, `failoverPriority` labels, `distribute` weights, `enabled: false`, and retryRemoteLocalities."""

from __future__ import annotations

import dataclasses

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import previous_priorities_config_pb2 as pp

from sailmesh.api import locality as loc
from sailmesh.api.models import build
from sailmesh.api.models.networking import WorkloadEntry
from sailmesh.api.validate import errors_only, validate
from sailmesh.generate import enforcement
from sailmesh.generate.generator import Generator
from sailmesh.registry.workloads import workload_from_spec
from sailmesh.settings import MeshDefaults
from sailmesh.xds.types import CLUSTER, ENDPOINT, ROUTE
from tests.unit.test_generate_support import generated, make_snapshot, resources, service, sidecar, workload

CLUSTER_NAME = "outbound|9080||reviews.default.svc.cluster.local"
PLACES = {"127.0.1.3": "r1/z1", "127.0.1.4": "r1/z2", "127.0.1.5": "r2/z1", "127.0.1.6": "r3/z1"}


def dr(lb: str = "", outlier: bool = True, host: str = "reviews") -> str:
    policy = "    outlierDetection: {consecutive5xxErrors: 1}\n" if outlier else ""
    if lb:
        policy += f"    loadBalancer:\n      localityLbSetting: {lb}\n"
    return ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: default}\n"
            f"spec:\n  host: {host}\n  trafficPolicy:\n{policy}")


def snap(*config: str):  # type: ignore[no-untyped-def]
    wls = [dataclasses.replace(workload(f"reviews-{i}", ip, app="reviews", zone=place.split("/")[1]),
                               locality=place) for i, (ip, place) in enumerate(PLACES.items())]
    return make_snapshot(resources(*config), [service("reviews"), service("productpage")], wls)


def client(place: str = "r1/z1", **extra: str):  # type: ignore[no-untyped-def]
    return sidecar("productpage-v1-0", "127.0.1.1", app="productpage", version="v1",
                   **loc.topology_labels(place), **extra)


def priorities(snapshot, proxy=None) -> dict[str, tuple[int, int]]:  # type: ignore[no-untyped-def]
    """endpoint address -> (priority, locality weight) in the proxy's assignment for reviews."""
    cla = generated(snapshot, proxy or client(), ENDPOINT, endpoint_pb2.ClusterLoadAssignment)[CLUSTER_NAME]
    return {e.endpoint.address.socket_address.address: (g.priority, g.load_balancing_weight.value)
            for g in cla.endpoints for e in g.lb_endpoints}


def test_locality_helpers_follow_istio() -> None:
    assert loc.from_labels({"topology.kubernetes.io/region": "r", "topology.kubernetes.io/zone": "z",
                            "topology.istio.io/subzone": "s"}) == "r/z/s"
    assert loc.from_labels({"istio-locality": "r.z", "topology.kubernetes.io/region": "x"}) == "r/z"
    assert loc.from_labels({}) == "" and loc.topology_labels("r/z") == {
        "topology.kubernetes.io/region": "r", "topology.kubernetes.io/zone": "z"}
    assert loc.matches("r1/z1/s1", "r1/*") and loc.matches("r1/z1/s1", "*") and loc.matches("r1/z1", "r1")
    assert not loc.matches("r1/z1", "r1/z2") and not loc.matches("r2/z1", "r1/*")
    assert [loc.lb_priority("r/z/s", e) for e in ("r/z/s", "r/z/t", "r/y", "q/z")] == [0, 1, 2, 3]


def test_workload_locality_from_field_else_labels() -> None:
    labelled = workload_from_spec("vm", "default", build(WorkloadEntry, {
        "address": "10.0.0.1", "labels": {"topology.kubernetes.io/region": "r9", "topology.kubernetes.io/zone": "z9"}}),
        "test")
    assert labelled.locality == "r9/z9"
    explicit = workload_from_spec("vm", "default", build(WorkloadEntry, {
        "address": "10.0.0.1", "locality": "a/b", "labels": {"topology.kubernetes.io/region": "r9"}}), "test")
    assert explicit.locality == "a/b"


def test_outlier_detection_gives_proximity_priorities() -> None:
    # Istio's default failover: 0 same zone, then same region, then other regions (renumbered without gaps)
    assert priorities(snap(dr())) == {"127.0.1.3": (0, 1), "127.0.1.4": (1, 1), "127.0.1.5": (2, 1),
                                      "127.0.1.6": (2, 1)}
    # a proxy in r2 sees r2 first
    assert priorities(snap(dr()), client("r2/z1"))["127.0.1.5"][0] == 0


def test_without_outlier_detection_or_when_disabled_every_endpoint_is_priority_zero() -> None:
    assert {p for p, _ in priorities(snap(dr(outlier=False))).values()} == {0}
    assert {p for p, _ in priorities(snap(dr("{enabled: false}"))).values()} == {0}
    assert {p for p, _ in priorities(snap()).values()} == {0}  # no DestinationRule
    assert {p for p, _ in priorities(snap(dr()), sidecar()).values()} == {0}  # a proxy without a locality


def test_failover_pairs_put_other_regions_last() -> None:
    got = priorities(snap(dr("{failover: [{from: r1, to: r3}]}")))
    # r3 (the failover target) keeps priority 3 -> 2; r2 drops to 4 -> 3
    assert got == {"127.0.1.3": (0, 1), "127.0.1.4": (1, 1), "127.0.1.6": (2, 1), "127.0.1.5": (3, 1)}


def test_failover_priority_labels_first() -> None:
    # failoverPriority on the zone label: endpoints in the proxy's zone first, whatever their region
    got = priorities(snap(dr("{failoverPriority: [topology.kubernetes.io/zone]}")))
    assert got == {"127.0.1.3": (0, 1), "127.0.1.5": (0, 1), "127.0.1.6": (0, 1), "127.0.1.4": (1, 1)}
    # `label=value` compares with that value instead of the proxy's
    got = priorities(snap(dr("{failoverPriority: [topology.kubernetes.io/zone=z2]}")))
    assert got["127.0.1.4"] == (0, 1) and got["127.0.1.3"] == (1, 1)


def test_network_first_in_failover_priority_is_preferred_not_required() -> None:
    """Istio 1.31 (#60829, pilot/pkg/networking/core/loadbalancer/loadbalancer.go applyFailoverPriorityPerLocality):
    when `topology.istio.io/network` is the first failoverPriority label, a network mismatch does not end the
    comparison: the endpoint ranks by the remaining labels, N added, so every endpoint on the proxy's network comes
    first and those on other networks keep their own order (Istio's test "FailoverPriority including locality":
    network, region, zone for a proxy n1/r2/z2 gives n1 r2 z2 0, n1 other region 1, n2 r2 z2 2, n2 other region
    3). Before 1.31 (and with the network label anywhere else, or as `network=value`) a mismatch ends it."""
    net = loc.NETWORK_LABEL
    places = {"127.0.1.3": ("n1", "r1/z1"), "127.0.1.4": ("n2", "r1/z2"), "127.0.1.5": ("n1", "r2/z2"),
              "127.0.1.6": ("n2", "r3/z3"), "127.0.1.7": ("n2", "r2/z2"), "127.0.1.8": ("n1", "r3/z3")}
    wls = [dataclasses.replace(workload(f"reviews-{i}", ip, app="reviews", **{net: n}), locality=place)
           for i, (ip, (n, place)) in enumerate(places.items())]

    def ranks(labels: str, proxy_network: str = "n1") -> dict[str, int]:
        s = make_snapshot(resources(dr(f"{{failoverPriority: [{labels}]}}")),
                          [service("reviews"), service("productpage")], wls)
        return {ip: p for ip, (p, _) in priorities(s, client("r2/z2", **{net: proxy_network})).items()}

    both = f"{net}, topology.kubernetes.io/region, topology.kubernetes.io/zone"
    assert ranks(both) == {"127.0.1.5": 0, "127.0.1.3": 1, "127.0.1.8": 1, "127.0.1.7": 2, "127.0.1.4": 3,
                           "127.0.1.6": 3}
    assert ranks(both, "n2") == {"127.0.1.7": 0, "127.0.1.4": 1, "127.0.1.6": 1, "127.0.1.5": 2, "127.0.1.3": 3,
                                 "127.0.1.8": 3}
    # network alone: the proxy's network, then the rest (as before)
    assert ranks(net) == {ip: 0 if n == "n1" else 1 for ip, (n, _) in places.items()}
    # not first, or with a value: a mismatch still ends the comparison (Istio compares the entry as written)
    assert ranks(f"topology.kubernetes.io/region, {net}") == {
        "127.0.1.5": 0, "127.0.1.7": 1, "127.0.1.3": 2, "127.0.1.4": 2, "127.0.1.6": 2, "127.0.1.8": 2}
    assert ranks(f"{net}=n1, topology.kubernetes.io/region") == {
        "127.0.1.5": 0, "127.0.1.3": 1, "127.0.1.8": 1, "127.0.1.4": 2, "127.0.1.6": 2, "127.0.1.7": 2}
    # an endpoint's network (WorkloadEntry `network`, a pod's namespace) is its network label unless it has one
    # (Istio's AugmentLabels on endpoints)
    wls = [dataclasses.replace(w, labels={"app": "reviews"}, network=places[w.address][0]) for w in wls]
    assert ranks(both) == {"127.0.1.5": 0, "127.0.1.3": 1, "127.0.1.8": 1, "127.0.1.7": 2, "127.0.1.4": 3,
                           "127.0.1.6": 3}


def test_distribute_reweights_and_drops_unlisted_localities() -> None:
    s = snap(dr("{distribute: [{from: r1/z1/*, to: {r1/z1/*: 80, r1/z2/*: 20}}]}", outlier=False))
    assert priorities(s) == {"127.0.1.3": (0, 80), "127.0.1.4": (0, 20)}
    c = generated(s, client(), CLUSTER, cluster_pb2.Cluster)[CLUSTER_NAME]
    assert c.common_lb_config.HasField("locality_weighted_lb_config")
    # a proxy the rule does not cover gets the plain assignment
    assert len(priorities(s, client("r2/z1"))) == 4


def test_locality_weighted_lb_config_where_istio_sets_it() -> None:
    """Istio's applyLocalityLoadBalancer (pilot/pkg/networking/core/cluster_traffic_policy.go) sets the cluster's
    locality_weighted_lb_config with `distribute`, and with failover enabled (outlier detection) when `failover` or
    `failoverPriority` is set; otherwise not (it would change how LEAST_REQUEST picks hosts)."""
    def weighted(rule: str) -> bool:
        c = generated(snap(rule), client(), CLUSTER, cluster_pb2.Cluster)[CLUSTER_NAME]
        return c.common_lb_config.HasField("locality_weighted_lb_config")

    assert weighted(dr("{failover: [{from: r1, to: r2}]}"))
    assert weighted(dr("{failoverPriority: [topology.kubernetes.io/zone]}"))
    assert not weighted(dr("{failover: [{from: r1, to: r2}]}", outlier=False))  # failover needs outlier detection
    assert not weighted(dr())  # outlier detection alone: proximity priorities, no weighted config
    assert not weighted(dr("{enabled: true}"))


def test_enable_locality_weighted_lb_config_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    """Istio's ENABLE_LOCALITY_WEIGHTED_LB_CONFIG (pilot/pkg/features/experimental.go, default false; read in
    pilot/pkg/networking/core/loadbalancer/loadbalancer.go LocalityLBSettings.ApplyToCluster): on, every outbound
    cluster under a locality setting gets locality_weighted_lb_config, also with none (applyLoadBalancer falls back
    to an empty LocalityLBSettings when locality LB is off), the passthrough ones too (Istio's ORIGINAL_DST: the
    forward proxy cluster here); not a zone-aware one (zone_aware_lb_config instead), nor BlackHoleCluster. Off: as
    above."""
    monkeypatch.delenv("ENABLE_LOCALITY_WEIGHTED_LB_CONFIG", raising=False)
    assert MeshDefaults().locality_weighted_lb_config is False
    for raw, want in (("true", True), ("1", True), ("T", True), ("false", False), ("yes", False), ("", False)):
        monkeypatch.setenv("ENABLE_LOCALITY_WEIGHTED_LB_CONFIG", raw)
        assert MeshDefaults().locality_weighted_lb_config is want, raw
    monkeypatch.delenv("ENABLE_LOCALITY_WEIGHTED_LB_CONFIG")

    wls = [dataclasses.replace(workload(f"reviews-{i}", ip, app="reviews"), locality=place)
           for i, (ip, place) in enumerate(PLACES.items())]
    ext = service("ext", selector={}, resolution="NONE")  # no endpoints: Istio's ORIGINAL_DST (a forward proxy)

    def weighted(flag: bool, *rules: str) -> dict[str, bool]:
        s = make_snapshot(resources(*rules), [service("reviews"), service("productpage"), ext], wls)
        s = dataclasses.replace(s, mesh=dataclasses.replace(s.mesh, locality_weighted_lb_config=flag))
        cs = generated(s, client(), CLUSTER, cluster_pb2.Cluster)
        return {n.split("|")[-1].split(".")[0]: c.common_lb_config.HasField("locality_weighted_lb_config")
                for n, c in cs.items() if n.startswith("outbound|")}

    assert weighted(False) == {"reviews": False, "productpage": False, "ext": False}
    assert weighted(True) == {"reviews": True, "productpage": True, "ext": True}
    assert weighted(True, dr("{enabled: false}", outlier=False))["reviews"]
    assert weighted(True, dr("{failover: [{from: r1, to: r2}]}", outlier=False))["reviews"]
    assert not weighted(False, dr("{failover: [{from: r1, to: r2}]}", outlier=False))["reviews"]
    assert not weighted(True, zone_dr("{}"))["reviews"]
    cs = generated(dataclasses.replace(snap(), mesh=dataclasses.replace(snap().mesh, locality_weighted_lb_config=True)),
                   client(), CLUSTER, cluster_pb2.Cluster)
    assert not cs["BlackHoleCluster"].common_lb_config.HasField("locality_weighted_lb_config")


def test_proxies_in_other_zones_do_not_share_assignments() -> None:
    s, gen = snap(dr()), Generator()
    a, b = gen.resources(s, client("r1/z1"), ENDPOINT), gen.resources(s, client("r1/z2"), ENDPOINT)
    ca, cb = endpoint_pb2.ClusterLoadAssignment(), endpoint_pb2.ClusterLoadAssignment()
    a[CLUSTER_NAME].Unpack(ca)
    b[CLUSTER_NAME].Unpack(cb)
    first = {g.locality.zone: g.priority for g in ca.endpoints if g.locality.region == "r1"}
    second = {g.locality.zone: g.priority for g in cb.endpoints if g.locality.region == "r1"}
    assert first == {"z1": 0, "z2": 1} and second == {"z1": 1, "z2": 0}


def test_retry_remote_localities() -> None:
    vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
    retries: {attempts: 3, retryRemoteLocalities: true}
"""
    rcfg = generated(snap(vs), client(), ROUTE, route_pb2.RouteConfiguration)["9080"]
    rp = next(v for v in rcfg.virtual_hosts if v.name.startswith("reviews.")).routes[0].route.retry_policy
    assert rp.retry_priority.name == "envoy.retry_priorities.previous_priorities"
    cfg = pp.PreviousPrioritiesConfig()
    rp.retry_priority.typed_config.Unpack(cfg)
    assert cfg.update_frequency == 2  # Istio's buildPreviousPrioritiesConfig
    assert enforcement.not_enforced(resources(vs)[0]) == []
    assert enforcement.not_enforced(resources(dr("{failover: [{from: r1, to: r3}]}"))[0]) == []


def test_failover_priority_labels_and_locality_enter_the_outbound_key() -> None:
    """Proxies alike except in a label failoverPriority names (or their locality) must not share assignments."""
    a, b = client(team="x"), client(team="y")
    plain = snap(dr())
    assert plain.index.outbound_key(a) == plain.index.outbound_key(b)
    assert plain.index.outbound_key(a) != plain.index.outbound_key(client("r1/z2", team="x"))
    keyed = snap(dr("{failoverPriority: [team]}"))
    assert keyed.index.outbound_key(a) != keyed.index.outbound_key(b)


def zone_dr(setting: str, outlier: bool = False) -> str:
    policy = "    outlierDetection: {consecutive5xxErrors: 1}\n" if outlier else ""
    return ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: default}\n"
            f"spec:\n  host: reviews\n  trafficPolicy:\n{policy}    loadBalancer:\n"
            f"      zoneAwareLbSetting: {setting}\n")


def test_zone_aware_buckets_by_region_without_outlier_detection() -> None:
    """Istio's GetEffectiveLbSetting (zoneAwareLbSetting before localityLbSetting) and ApplyZoneAwareLoadBalancer:
    failover forced (no outlier detection needed), regions only: every zone of the proxy's region priority 0, a
    `failover` target of it next, any other region last; the cluster gets Envoy's zone_aware_lb_config
    (ZoneAwareLBSettings.ApplyToCluster: minClusterSize; `enabled: false` -> routing_enabled 0% and no priorities)."""
    assert priorities(snap(zone_dr("{}"))) == {"127.0.1.3": (0, 1), "127.0.1.4": (0, 1), "127.0.1.5": (1, 1),
                                               "127.0.1.6": (1, 1)}
    got = priorities(snap(zone_dr("{failover: [{from: r1, to: r3}]}", outlier=True)))
    assert got == {"127.0.1.3": (0, 1), "127.0.1.4": (0, 1), "127.0.1.6": (1, 1), "127.0.1.5": (2, 1)}
    # failoverPriority labels (not topology ones: validation refuses those for zone-aware) split first
    got = priorities(snap(zone_dr("{failoverPriority: [zone]}", outlier=True)), client(zone="z1"))
    assert got == {"127.0.1.3": (0, 1), "127.0.1.5": (1, 1), "127.0.1.6": (1, 1), "127.0.1.4": (2, 1)}
    for setting in ("{}", "{failover: [{from: r1, to: r3}]}", "{failoverPriority: [zone]}", "{minClusterSize: 2}",
                    "{enabled: false, failover: [{from: r1, to: r3}]}"):
        [rule] = resources(zone_dr(setting, outlier=True))
        assert errors_only(validate(rule)) == [], setting
    c = generated(snap(zone_dr("{minClusterSize: 2}")), client(), CLUSTER, cluster_pb2.Cluster)[CLUSTER_NAME]
    zone = c.common_lb_config.zone_aware_lb_config
    assert c.common_lb_config.HasField("zone_aware_lb_config") and zone.min_cluster_size.value == 2
    assert not zone.HasField("routing_enabled")
    off = snap(zone_dr("{enabled: false, failover: [{from: r1, to: r3}]}", outlier=True))
    assert {p for p, _ in priorities(off).values()} == {0}
    zone = generated(off, client(), CLUSTER, cluster_pb2.Cluster)[CLUSTER_NAME].common_lb_config.zone_aware_lb_config
    assert zone.HasField("routing_enabled") and zone.routing_enabled.value == 0 and not zone.HasField(
        "min_cluster_size")
    [rule] = resources(zone_dr("{}"))
    assert enforcement.not_enforced(rule) == []


def test_mesh_zone_aware_setting_applies_to_rules_without_their_own() -> None:
    """GetEffectiveLbSetting: the mesh's zoneAwareLbSetting comes after the rule's own settings and before the
    mesh's localityLbSetting; it applies to services without a DestinationRule too."""
    from sailmesh.api import meshconfig

    mesh = meshconfig.from_mapping({"zoneAwareLbSetting": {"minClusterSize": 3}})
    assert mesh.unmodelled == ()
    bare = dataclasses.replace(snap(), mesh_config=mesh)
    assert priorities(bare) == {"127.0.1.3": (0, 1), "127.0.1.4": (0, 1), "127.0.1.5": (1, 1), "127.0.1.6": (1, 1)}
    c = generated(bare, client(), CLUSTER, cluster_pb2.Cluster)[CLUSTER_NAME]
    assert c.common_lb_config.zone_aware_lb_config.min_cluster_size.value == 3
    own = dataclasses.replace(snap(dr("{enabled: false}")), mesh_config=mesh)  # the rule's locality setting wins
    assert {p for p, _ in priorities(own).values()} == {0}
    assert not generated(own, client(), CLUSTER, cluster_pb2.Cluster)[CLUSTER_NAME].common_lb_config.HasField(
        "zone_aware_lb_config")


def test_a_mesh_config_change_rebuilds_memoized_clusters() -> None:
    """The outbound cluster memo holds the mesh config too: a snapshot that changes only the mesh's
    zoneAwareLbSetting (everything else the same objects) gets clusters built from it, not the memoized ones."""
    from sailmesh.api import meshconfig

    gen = Generator()
    before = snap()
    after = dataclasses.replace(before, mesh_config=meshconfig.from_mapping({"zoneAwareLbSetting": {}}),
                                version=before.version + 1)
    again = dataclasses.replace(before, version=before.version + 2)
    for s, zone_aware in ((before, False), (after, True), (again, False)):
        c = cluster_pb2.Cluster()
        gen.resources(s, client(), CLUSTER)[CLUSTER_NAME].Unpack(c)
        assert c.common_lb_config.HasField("zone_aware_lb_config") is zone_aware
