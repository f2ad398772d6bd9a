"""Istio's Envoy names and virtual-host domain aliases (generate/names.py; host rules: test_api_hosts.py)."""

from __future__ import annotations

import pytest

from sailmesh.generate import names


def test_cluster_and_listener_names_match_istio() -> None:
    assert names.outbound_cluster(9080, "v1", "reviews.default.svc.cluster.local") == (
        "outbound|9080|v1|reviews.default.svc.cluster.local"
    )
    assert names.outbound_cluster(9080, "", "reviews.default.svc.cluster.local") == (
        "outbound|9080||reviews.default.svc.cluster.local"
    )
    assert names.inbound_cluster(9080) == "inbound|9080||"
    assert names.listener_name("127.0.1.2", 9080) == "127.0.1.2_9080"
    assert names.port_route(9080) == "9080"
    assert names.gateway_route(8080) == "http.8080"
    assert names.vhost_name("reviews.default.svc.cluster.local", 9080) == "reviews.default.svc.cluster.local:9080"
    assert (names.BLACKHOLE_CLUSTER, names.PASSTHROUGH_CLUSTER) == ("BlackHoleCluster", "PassthroughCluster")
    assert (names.VIRTUAL_OUTBOUND, names.VIRTUAL_INBOUND) == ("virtualOutbound", "virtualInbound")
    assert names.parse_cluster("outbound|9080|v1|reviews.default.svc.cluster.local") == (
        "outbound", 9080, "v1", "reviews.default.svc.cluster.local")


def test_aliases_same_namespace_include_short_name() -> None:
    # Istio generateVirtualHostDomains: the short name only for callers in the service's namespace.
    got = names.host_aliases("reviews.default.svc.cluster.local", "default", "default", "cluster.local")
    assert got == ["reviews.default.svc.cluster.local", "reviews", "reviews.default.svc", "reviews.default"]


def test_aliases_other_namespace_leave_out_short_name() -> None:
    got = names.host_aliases("reviews.default.svc.cluster.local", "default", "bar", "cluster.local")
    assert got == ["reviews.default.svc.cluster.local", "reviews.default.svc", "reviews.default"]


def test_service_entry_hosts_have_no_aliases() -> None:
    assert names.host_aliases("api.example.com", "default", "default", "cluster.local") == ["api.example.com"]


def test_domains_with_and_without_port() -> None:
    assert names.domains_with_port(["a", "b"], 9080, plain=True) == ["a", "a:9080", "b", "b:9080"]
    assert names.domains_with_port(["a"], 9080, plain=False) == ["a:9080"]



def test_config_the_models_cannot_read_never_reaches_a_snapshot() -> None:
    """A spec that validation let through but the typed model cannot read is refused by the store, naming the
    field, so generators only ever see readable models."""
    from sailmesh.api.parse import parse_text
    from sailmesh.errors import ValidationError
    from sailmesh.store.memory import MemoryStore

    bad = ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n"
           "  hosts: [reviews]\n  http:\n  - timeout: soon\n    route: [{destination: {host: reviews}}]\n")
    store = MemoryStore()
    with pytest.raises(ValidationError, match=r"spec\.http\[0\]\.timeout.*soon"):
        store.apply(parse_text(bad, "bad.yaml").resources)
    assert store.list() == []
