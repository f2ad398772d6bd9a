"""snapshot.build: immutable results, Istio's oldest-first order, reuse of unchanged parts, change classification."""

from __future__ import annotations

import dataclasses

import pytest

from sailmesh.api.change import Change
from sailmesh.api.parse import load_file, parse_text
from sailmesh.api.resource import ResourceKey
from sailmesh.generate.affect import affected_types
from sailmesh.registry.model import Workload
from sailmesh.registry.workloads import LocalRegistry, workload_key
from sailmesh.settings import MeshDefaults
from sailmesh.snapshot.build import build, changed_endpoints
from sailmesh.store.memory import MemoryStore
from sailmesh.xds.types import CLUSTER, ENDPOINT, ROUTE
from tests.unit.test_registry_services import conformance_dir

REVIEWS = "reviews.default.svc.cluster.local"


def bookinfo() -> tuple[MemoryStore, LocalRegistry]:
    store = MemoryStore()
    kube = load_file(str(conformance_dir() / "bookinfo" / "platform-kube" / "bookinfo.yaml")).resources
    store.apply(r for r in kube if r.kind == "Service")
    store.apply(load_file(str(conformance_dir() / "bookinfo" / "destination-rule-all.yaml")).resources)
    store.apply(load_file(str(conformance_dir() / "bookinfo" / "virtual-service-all-v1.yaml")).resources)
    reg = LocalRegistry()
    for i, (app, version) in enumerate([("productpage", "v1"), ("details", "v1"), ("ratings", "v1"),
                                        ("reviews", "v1"), ("reviews", "v2"), ("reviews", "v3")]):
        reg.register(Workload(f"{app}-{version}-0", "default", f"127.0.1.{i + 1}",
                              {"app": app, "version": version}, service_account=f"bookinfo-{app}"))
    return store, reg


def test_full_build_is_grouped_sorted_and_immutable() -> None:
    store, reg = bookinfo()
    snap = build(None, store, reg, Change.everything())
    assert snap.version == 1 and snap.mesh == MeshDefaults()
    assert set(snap.config) == {"Service", "DestinationRule", "VirtualService"}
    # Oldest first (apply order here): the Services were applied first, in file order.
    assert [r.name for r in snap.of_kind("Service")] == ["details", "ratings", "reviews", "productpage"]
    assert len(snap.services) == 4 and len(snap.endpoints[(REVIEWS, 9080)]) == 3
    with pytest.raises(TypeError):
        snap.config["VirtualService"] = ()  # type: ignore[index]
    with pytest.raises(TypeError):
        snap.services["x"] = snap.services[REVIEWS]  # type: ignore[index]
    with pytest.raises(TypeError):
        snap.endpoints[(REVIEWS, 1)] = ()  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.version = 9  # type: ignore[misc]
    assert isinstance(snap.of_kind("VirtualService"), tuple) and isinstance(snap.workloads, tuple)


def test_endpoint_only_change_reuses_config_and_services() -> None:
    store, reg = bookinfo()
    s1 = build(None, store, reg, Change.everything())
    reg.unregister("reviews-v3-0", "default")
    change = Change(frozenset({workload_key("reviews-v3-0", "default")}))
    s2 = build(s1, store, reg, change)
    assert s2.version == 2
    assert s2.config is s1.config and s2.services is s1.services
    assert len(s2.endpoints[(REVIEWS, 9080)]) == 2
    # Unchanged endpoint lists are the same objects; only reviews' changed.
    ratings = ("ratings.default.svc.cluster.local", 9080)
    assert s2.endpoints[ratings] is s1.endpoints[ratings]
    assert changed_endpoints(s1, s2) == {(REVIEWS, 9080)}
    assert affected_types(change, s1, s2) == {ENDPOINT}
    # The first snapshot is untouched.
    assert len(s1.endpoints[(REVIEWS, 9080)]) == 3


def test_config_change_rebuilds_only_its_kind() -> None:
    store, reg = bookinfo()
    s1 = build(None, store, reg, Change.everything())
    res = store.apply(load_file(str(conformance_dir() / "bookinfo" / "virtual-service-reviews-50-v3.yaml")).resources)
    change = Change(frozenset(res.updated))
    s2 = build(s1, store, reg, change)
    assert affected_types(change, s1, s2) == {ROUTE}
    assert s2.of_kind("DestinationRule") is s1.of_kind("DestinationRule")
    assert s2.services is s1.services and s2.endpoints is s1.endpoints and s2.workloads is s1.workloads
    [reviews_vs] = [r for r in s2.of_kind("VirtualService") if r.name == "reviews"]
    assert reviews_vs.generation == 2 and len(reviews_vs.spec["http"][0]["route"]) == 2
    # A Service change recomputes services and endpoints.
    store.delete([ResourceKey("Service", "default", "details")])
    s3 = build(s2, store, reg, Change(frozenset({ResourceKey("Service", "default", "details")})))
    assert "details.default.svc.cluster.local" not in s3.services
    assert ("details.default.svc.cluster.local", 9080) not in s3.endpoints
    assert s3.of_kind("VirtualService") is s2.of_kind("VirtualService")


def test_incremental_equals_full_rebuild() -> None:
    store, reg = bookinfo()
    s1 = build(None, store, reg, Change.everything())
    reg.register(Workload("reviews-v2-1", "default", "127.0.1.9", {"app": "reviews", "version": "v2"}))
    store.apply(load_file(str(conformance_dir() / "bookinfo" / "egress-rule-google-apis.yaml")).resources)
    keys = frozenset({workload_key("reviews-v2-1", "default"), ResourceKey("ServiceEntry", "default", "googleapis"),
                      ResourceKey("VirtualService", "default", "rewrite-port-for-googleapis"),
                      ResourceKey("DestinationRule", "default", "originate-tls-for-googleapis")})
    inc = build(s1, store, reg, Change(keys))
    full = build(None, store, reg, Change.everything())
    assert (inc.config, inc.services, inc.endpoints, inc.workloads) == (
        full.config, full.services, full.endpoints, full.workloads)


def test_dns_endpoint_change_is_not_eds_only() -> None:
    # Endpoints of DNS services live inside their clusters (STRICT_DNS load_assignment): CDS must be pushed.
    store = MemoryStore()
    store.apply(parse_text("""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vms}
spec:
  hosts: [vms.internal]
  location: MESH_INTERNAL
  resolution: DNS
  ports: [{number: 80, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: vm}}
""").resources)
    reg = LocalRegistry()
    s1 = build(None, store, reg, Change.everything())
    reg.register(Workload("vm-0", "default", "127.0.4.1", {"app": "vm"}))
    change = Change(frozenset({workload_key("vm-0", "default")}))
    s2 = build(s1, store, reg, change)
    assert affected_types(change, s1, s2) == {CLUSTER, ENDPOINT}  # the service resolves by DNS


def test_no_change_and_mesh_change() -> None:
    store, reg = bookinfo()
    s1 = build(None, store, reg, Change.everything())
    s2 = build(s1, store, reg, Change())
    assert s2.version == 2 and s2.config is s1.config and s2.endpoints is s1.endpoints
    s3 = build(s2, store, reg, Change(), MeshDefaults(domain_suffix="mesh.local"))
    assert "reviews.default.svc.mesh.local" in s3.services


def test_workload_churn_incremental_matches_full() -> None:
    # Random registrations, relabels (a workload moving between services), health flips and removals:
    # every incremental snapshot equals a from-scratch build.
    import random

    rnd = random.Random(7)
    store, reg = bookinfo()
    snap = build(None, store, reg, Change.everything())
    apps = ["productpage", "details", "ratings", "reviews", "nothing"]
    for step in range(60):
        name = f"w{rnd.randrange(12)}"
        op = rnd.random()
        if op < 0.2:
            reg.unregister(name, "default")
        elif op < 0.4 and reg.get(name, "default") is not None:
            reg.set_healthy(name, "default", not reg.get(name, "default").healthy)  # type: ignore[union-attr]
        else:
            reg.register(Workload(name, "default", f"127.0.9.{step + 1}", {"app": rnd.choice(apps)}))
        prev = snap
        snap = build(prev, store, reg, Change(frozenset({workload_key(name, "default")})))
        full = build(None, store, reg, Change.everything())
        assert snap.endpoints == full.endpoints and snap.workloads == full.workloads, step
        assert snap.services is prev.services and snap.config is prev.config
