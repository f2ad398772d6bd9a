"""Pre-serialized SotW responses (the benchmark's fix for per-proxy copies) parse exactly as built messages."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from sailmesh.server.hashing import HashCache, length_delimited


def _any(name: str, timeout_s: int) -> any_pb2.Any:
    a = any_pb2.Any()
    c = cluster_pb2.Cluster(name=name)
    c.connect_timeout.seconds = timeout_s
    a.Pack(c)
    return a


def test_encoded_body_plus_fields_is_the_discovery_response() -> None:
    resources = {f"c{i}": _any(f"c{i}", i) for i in (3, 1, 200, 2)}  # a long one needs a 2-byte length varint
    resources["x" * 300] = _any("x" * 300, 9)
    hashes = HashCache()
    body = hashes.encoded(resources)
    again = hashes.encoded(resources)
    assert again == body and hashes.encoded(resources) is again  # cached from the second use on
    type_url = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    wire = length_delimited(1, b"7.2") + body + length_delimited(4, type_url.encode()) + length_delimited(5, b"ab12-3")
    want = discovery_pb2.DiscoveryResponse(version_info="7.2", type_url=type_url, nonce="ab12-3")
    want.resources.extend(resources[n] for n in sorted(resources))
    got = discovery_pb2.DiscoveryResponse.FromString(wire)
    assert got == want
    assert [a.value for a in got.resources] == [resources[n].value for n in sorted(resources)]


def test_a_different_mapping_gets_its_own_body() -> None:
    hashes = HashCache()
    a = {"c1": _any("c1", 1)}
    b = {"c1": a["c1"], "c2": _any("c2", 2)}
    assert hashes.encoded(a) != hashes.encoded(b)
    assert discovery_pb2.DiscoveryResponse.FromString(hashes.encoded(b)).resources[1] == b["c2"]


def test_the_cache_does_not_keep_old_generated_mappings_alive() -> None:
    """The benchmark saw RSS grow by gigabytes over 40 changes: old snapshots' mappings stayed in the cache."""
    import gc
    import weakref

    from sailmesh.generate.generator import PackedResources as Resources

    hashes = HashCache()
    m = Resources({"c1": _any("c1", 1), "c2": _any("c2", 2)})
    hashes.subset(m, None)
    hashes.subset(m, frozenset({"c1"}))
    hashes.encoded(m)
    hashes.encoded(m)
    alive = weakref.ref(m)
    assert len(hashes._subsets) == 2 and len(hashes._bodies) == 1
    del m
    gc.collect()
    assert alive() is None
    assert not hashes._subsets and not hashes._bodies


def test_field_bytes_are_bounded() -> None:
    hashes = HashCache(max_field_bytes=2000)
    for i in range(50):
        hashes.encoded({"c": _any("c" * 100, i)})
    assert hashes._field_bytes <= 2000


def test_equal_subscriptions_share_one_frozenset() -> None:
    """500 proxies subscribing to the same 3,500 EDS names hold one set of names, not 500."""
    hashes = HashCache()  # the server's one cache, shared by its connections (no module-level table)
    a = hashes.names([f"outbound|8080||svc-{i}" for i in range(100)] + ["*"])
    b = hashes.names([f"outbound|8080||svc-{i}" for i in reversed(range(100))])
    assert a is b and "*" not in a and len(a) == 100
    assert hashes.names(a) is a
    assert hashes.names(["x"]) is not a
    assert HashCache().names(a) == a  # another server's cache: equal names, its own set


def test_bodies_of_subsets_go_with_their_mapping_and_are_bounded_by_bytes() -> None:
    """RSS grew ~35 MB per change without Sidecar scoping: the encoded bodies of name subsets (EDS, RDS) were
    plain dicts, held strongly until 4,096 newer bodies came, whatever their size."""
    import gc

    from sailmesh.generate.generator import PackedResources as Resources

    hashes = HashCache(max_body_bytes=10_000)
    m = Resources({f"c{i}": _any(f"c{i}", i) for i in range(20)})
    names = frozenset({"c1", "c2"})
    for _ in range(2):  # cached from the second use on
        chosen, _ = hashes.subset(m, names)
        hashes.encoded(chosen)
    assert len(hashes._bodies) == 1 and hashes._body_bytes > 0
    del m, chosen
    gc.collect()
    assert not hashes._subsets and not hashes._bodies and hashes._body_bytes == 0
    big = [Resources({f"c{i}": _any("x" * 3000, i)}) for i in range(10)]
    for mapping in big:
        hashes.encoded(mapping)
        hashes.encoded(mapping)
    assert 0 < hashes._body_bytes <= 10_000 and len(hashes._bodies) < 10
