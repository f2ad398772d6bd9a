"""Route configurations are shared by scopes that assemble the same bytes (issue 8: unscoped memory per proxy).

Without Sidecar scoping a namespace's route configurations differ from another's only where a client's namespace
changes them: Istio's generateVirtualHostDomains lists a service's short name (`reviews`) only for clients in the
service's namespace. Scopes that see the same virtual hosts (namespaces without a service of their own, sidecars
of one namespace whose outbound keys differ only by what routes do not read, such as their locality) get one
resource object; scopes that see different ones never do.
"""

from __future__ import annotations

from envoy.config.route.v3.route_pb2 import RouteConfiguration

from sailmesh.generate.generator import Generator
from sailmesh.snapshot.model import MeshSnapshot
from sailmesh.xds.types import CLUSTER, ROUTE
from tests.unit.test_generate_support import (
    bookinfo_services,
    bookinfo_workloads,
    generate,
    make_snapshot,
    service,
    sidecar,
    unpacked,
)


def mesh() -> MeshSnapshot:
    """Bookinfo in `default`, plus client-only namespaces `team-a`, `team-b` and `team-c` with one service."""
    return make_snapshot((), [*bookinfo_services(), service("web", ns="team-c")], bookinfo_workloads())


def test_namespaces_with_the_same_visible_virtual_hosts_share_one_route_configuration() -> None:
    snap, gen = mesh(), Generator()
    a = sidecar("client-a-0", "127.0.2.1", ns="team-a", app="client-a")
    b = sidecar("client-b-0", "127.0.2.2", ns="team-b", app="client-b")
    assert snap.index.outbound_key(a) != snap.index.outbound_key(b)  # two scopes, built separately
    pa, pb = gen.generate(snap, a, ROUTE), gen.generate(snap, b, ROUTE)
    assert len(pa) == len(pb) == 2 and all(x is y for x, y in zip(pa, pb, strict=True))  # hashed, encoded once
    ra, rb = gen.resources(snap, a, ROUTE), gen.resources(snap, b, ROUTE)
    assert ra.keys() == rb.keys() and all(ra[n] is rb[n] for n in ra)
    for p in (a, b):  # sharing never changes what a proxy gets
        assert gen.resources(snap, p, ROUTE) == generate(snap, p, ROUTE)
    # clusters were already shared by content (the outbound part), route configurations now too
    ca, cb = gen.generate(snap, a, CLUSTER), gen.generate(snap, b, CLUSTER)
    assert ca[0] is cb[0]


def test_a_namespace_with_its_own_service_does_not_share_its_route_configuration() -> None:
    snap, gen = mesh(), Generator()
    a = sidecar("client-a-0", "127.0.2.1", ns="team-a", app="client-a")
    c = sidecar("web-0", "127.0.2.3", ns="team-c", app="web")
    ra, rc = gen.resources(snap, a, ROUTE), gen.resources(snap, c, ROUTE)
    assert ra.keys() == rc.keys()
    assert all(ra[n] is not rc[n] and ra[n].value != rc[n].value for n in ra)  # `web` is a domain in team-c only
    assert rc == generate(snap, c, ROUTE) and ra == generate(snap, a, ROUTE)
    domains = {ns: {d for vh in unpacked(r, RouteConfiguration)["9080"].virtual_hosts for d in vh.domains}
               for ns, r in (("team-a", ra), ("team-c", rc))}
    assert "web" in domains["team-c"] and "web" not in domains["team-a"]
    assert domains["team-c"] - domains["team-a"] == {"web", "web:9080"}


def test_sidecars_of_a_namespace_in_other_localities_share_their_route_configuration() -> None:
    snap, gen = mesh(), Generator()
    zone = "topology.kubernetes.io/zone"
    a = sidecar("reviews-v1-0", "127.0.1.3", app="reviews", version="v1", **{zone: "z1"})
    b = sidecar("reviews-v1-1", "127.0.1.7", app="reviews", version="v1", **{zone: "z2"})
    assert snap.index.outbound_key(a) != snap.index.outbound_key(b)  # endpoints' priorities read the locality
    ra, rb = gen.resources(snap, a, ROUTE), gen.resources(snap, b, ROUTE)
    assert all(ra[n] is rb[n] for n in ra)
    assert rb == generate(snap, b, ROUTE)


def test_a_subscription_to_http_proxy_alone_builds_no_per_port_configuration() -> None:
    # An uncaptured sidecar's only outbound listener is the explicit HTTP proxy (RDS `http_proxy`): the per-port
    # configurations (megabytes per namespace without Sidecar scoping) are built when someone subscribes to one.
    snap, gen = mesh(), Generator()
    p = sidecar("client-a-0", "127.0.2.1", ns="team-a", app="client-a")
    parts = gen.generate(snap, p, ROUTE, frozenset({"http_proxy"}))
    assert [set(part) for part in parts] == [{"http_proxy"}] and gen.misses == 1
    full = gen.resources(snap, p, ROUTE)  # every configuration (config dumps, proxy-config): the rest built now
    assert set(full) == {"9080", "http_proxy"} and full["http_proxy"] is parts[0]["http_proxy"]
    assert full == generate(snap, p, ROUTE)
    both = gen.generate(snap, p, ROUTE, frozenset({"http_proxy", "9080"}))
    assert sorted(n for part in both for n in part) == ["9080", "http_proxy"]
    assert [set(part) for part in gen.generate(snap, p, ROUTE, frozenset({"9080"}))] == [{"9080"}]
