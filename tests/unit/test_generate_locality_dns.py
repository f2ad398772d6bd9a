"""Locality load balancing on DNS clusters (STRICT_DNS / LOGICAL_DNS, endpoints inline in the cluster's
load_assignment), as Istio's cluster builder gives it: FromServiceEndpoints groups a DNS service's endpoints into
LocalityLbEndpoints by locality (pilot/pkg/xds/endpoints/endpoint_builder.go: generate, one group per
`ep.Locality.Label`, weighted by the sum of its endpoints' weights), and applyLoadBalancer's
applyLocalityLoadBalancer (pilot/pkg/networking/core/cluster_traffic_policy.go; LocalityLBSettings.ApplyToCluster
since 1.29) runs ApplyLocalityLoadBalancer on `c.LoadAssignment` when the cluster has one, with the same
distribute / failover / failoverPriority rules as EDS (failoverPriority on DNS clusters since Istio 1.30,
"add failover priority support for strict dns clusters", istio/istio#58674, TestFailoverPriorityWithDNSServiceEntry).
The ServiceEntries are built through the store and the registry, so the locality and weight come from the
ServiceEntry's own `endpoints`."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2

from sailmesh.api import locality as loc
from sailmesh.api.change import Change
from sailmesh.api.parse import parse_text
from sailmesh.generate.generator import Generator
from sailmesh.registry.workloads import LocalRegistry
from sailmesh.snapshot.build import build
from sailmesh.snapshot.model import MeshSnapshot, ProxyView
from sailmesh.store.memory import MemoryStore
from sailmesh.xds.types import CLUSTER
from tests.unit.test_generate_locality import dr
from tests.unit.test_generate_support import generated, sidecar

C = cluster_pb2.Cluster
HOST = "web.example.test"
NAME = f"outbound|80||{HOST}"
# one endpoint (a name) per locality, weights 1..4
PLACES = {"z1.example.test": "r1/z1", "z2.example.test": "r1/z2", "r2.example.test": "r2/z1",
          "r3.example.test": "r3/z1"}


def entry(resolution: str = "DNS", places: dict[str, str] | None = None, labels: bool = False) -> str:
    eps = "".join(
        f"  - {{address: {address}, locality: {place}, weight: {i + 1}"
        + (f", labels: {{tier: t{i + 1}}}" if labels else "") + "}\n"
        for i, (address, place) in enumerate((places or PLACES).items()))
    return (f"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: web, namespace: default}}\n"
            f"spec:\n  hosts: [{HOST}]\n  location: MESH_EXTERNAL\n  resolution: {resolution}\n"
            f"  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints:\n{eps}")


def rule(lb: str = "", outlier: bool = True) -> str:
    return "---\n" + dr(lb, outlier, HOST)


def snap(*texts: str) -> MeshSnapshot:
    store = MemoryStore()
    for text in texts:
        parsed = parse_text(text, "<test>")
        assert not parsed.errors, parsed.errors
        store.apply(parsed.resources)
    return build(None, store, LocalRegistry(), Change.everything())


def client(place: str = "r1/z1", **extra: str) -> ProxyView:
    return sidecar("client-0", "127.0.1.1", app="client", **loc.topology_labels(place), **extra)


def cluster(s: MeshSnapshot, proxy: ProxyView | None = None) -> C:
    c: C = generated(s, proxy or client(), CLUSTER, C)[NAME]
    return c


def layout(c: C) -> dict[str, tuple[str, int, int]]:
    """endpoint name -> (its group's locality, the group's priority, the group's weight)."""
    return {e.endpoint.address.socket_address.address: (
        "/".join(p for p in (g.locality.region, g.locality.zone, g.locality.sub_zone) if p), g.priority,
        g.load_balancing_weight.value) for g in c.load_assignment.endpoints for e in g.lb_endpoints}


def test_strict_dns_endpoints_are_grouped_by_locality_with_proximity_priorities() -> None:
    """Istio's default failover (outlier detection on, mesh localityLbSetting enabled by default): priorities by
    proximity to the proxy as for EDS, 0 same zone, 1 same region, 2 other regions (renumbered without gaps); each
    locality a LocalityLbEndpoints weighted by its endpoints' weights."""
    c = cluster(snap(entry(), rule()))
    assert c.type == C.STRICT_DNS
    assert layout(c) == {"z1.example.test": ("r1/z1", 0, 1), "z2.example.test": ("r1/z2", 1, 2),
                         "r2.example.test": ("r2/z1", 2, 3), "r3.example.test": ("r3/z1", 2, 4)}
    # a proxy in r2 sees r2 first
    assert layout(cluster(snap(entry(), rule()), client("r2/z1")))["r2.example.test"][1] == 0


def test_without_outlier_detection_or_a_proxy_locality_every_group_is_priority_zero() -> None:
    """ApplyLocalityLoadBalancer applies failover only with outlier detection; a proxy without a locality gets the
    groups as they are (still one per locality, with their weights)."""
    for s, proxy in ((snap(entry(), rule(outlier=False)), client()), (snap(entry()), client()),
                     (snap(entry(), rule()), sidecar("client-0", "127.0.1.1", app="client"))):
        got = layout(cluster(s, proxy))
        assert {p for _, p, _ in got.values()} == {0}
        assert got["r3.example.test"] == ("r3/z1", 0, 4)


def test_failover_pairs_put_other_regions_last() -> None:
    """applyLocalityFailover: a region the proxy's region does not fail over to comes after the `failover` one."""
    got = layout(cluster(snap(entry(), rule("{failover: [{from: r1, to: r3}]}"))))
    assert {k: p for k, (_, p, _) in got.items()} == {"z1.example.test": 0, "z2.example.test": 1,
                                                       "r3.example.test": 2, "r2.example.test": 3}


def test_distribute_reweights_localities_and_drops_the_others() -> None:
    """applyLocalityWeights on the inline assignment (no outlier detection needed) and the cluster's
    locality_weighted_lb_config."""
    c = cluster(snap(entry(), rule("{distribute: [{from: r1/z1/*, to: {r1/z1/*: 80, r1/z2/*: 20}}]}",
                                   outlier=False)))
    assert layout(c) == {"z1.example.test": ("r1/z1", 0, 80), "z2.example.test": ("r1/z2", 0, 20)}
    assert c.common_lb_config.HasField("locality_weighted_lb_config")


def test_failover_priority_labels_split_a_dns_locality() -> None:
    """Istio 1.30's TestFailoverPriorityWithDNSServiceEntry: two DNS endpoints in one locality, labels told apart
    by failoverPriority; the one whose label matches the proxy's is priority 0, the other 1."""
    one_place = {"z1.example.test": "r1/z1", "z2.example.test": "r1/z1"}
    s = snap(entry(places=one_place, labels=True), rule("{failoverPriority: [tier]}"))
    got = layout(cluster(s, client(tier="t2")))
    assert {k: p for k, (_, p, _) in got.items()} == {"z2.example.test": 0, "z1.example.test": 1}


def test_logical_dns_keeps_its_one_endpoint() -> None:
    """LOGICAL_DNS (DNS_ROUND_ROBIN): Envoy takes exactly one locality with one endpoint ("LOGICAL_DNS clusters
    must have a single locality_lb_endpoint and a single lb_endpoint"), Istio's validation one endpoint
    ("DNS_ROUND_ROBIN mode cannot have multiple endpoints"): it keeps its locality at priority 0, also under a
    `distribute` that does not name it (which would leave the cluster no endpoint)."""
    one = {"z2.example.test": "r1/z2"}
    for lb in ("", "{distribute: [{from: r1/z1/*, to: {r1/z1/*: 100}}]}"):
        c = cluster(snap(entry("DNS_ROUND_ROBIN", one), rule(lb)))
        assert c.type == C.LOGICAL_DNS
        assert layout(c) == {"z2.example.test": ("r1/z2", 0, 1)}, lb


def test_proxies_in_other_zones_do_not_share_dns_clusters() -> None:
    """The outbound cluster memo keys a DNS cluster on the proxy's locality shape: one Generator serving clients in
    two zones gives each its own priorities."""
    s, gen = snap(entry(), rule()), Generator()
    got = {}
    for place in ("r1/z1", "r1/z2"):
        c = C()
        gen.resources(s, client(place), CLUSTER)[NAME].Unpack(c)
        got[place] = {k: p for k, (_, p, _) in layout(c).items() if k.startswith("z")}
    assert got == {"r1/z1": {"z1.example.test": 0, "z2.example.test": 1},
                   "r1/z2": {"z1.example.test": 1, "z2.example.test": 0}}
