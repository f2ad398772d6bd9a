"""platform/kube without a server: watch events, the store and registry the informers feed, endpoints from them.

The same code against the real kube-apiserver is tests/e2e/test_kube_apiserver.py.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from sailmesh.api.resource import ResourceKey
from sailmesh.platform.kube.client import Gone, KubeApiError, KubeConnection, api_error
from sailmesh.platform.kube.informer import BackOff, Informer, KubeResource
from sailmesh.platform.kube.platform import istio_kinds
from sailmesh.platform.kube.registry import KubeRegistry, node_locality
from sailmesh.platform.kube.store import KubeStore
from sailmesh.registry import endpoints
from sailmesh.registry.services import build_index
from sailmesh.settings import MeshDefaults

VS = KubeResource("networking.istio.io", "v1", "virtualservices", "VirtualService")
PODS = KubeResource("", "v1", "pods", "Pod")
SLICES = KubeResource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")
NODES = KubeResource("", "v1", "nodes", "Node", False)


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def listed(self, resource: KubeResource, objs: list[dict[str, Any]]) -> None:
        self.seen.append(("listed", str(len(objs))))

    def upserted(self, resource: KubeResource, obj: dict[str, Any]) -> None:
        self.seen.append(("upserted", obj["metadata"]["name"]))

    def deleted(self, resource: KubeResource, obj: dict[str, Any]) -> None:
        self.seen.append(("deleted", obj["metadata"]["name"]))


def _informer(handler: Any) -> Informer:
    return Informer(KubeConnection.__new__(KubeConnection), VS, handler)  # no connection: events only


def vs(name: str, rv: str, host: str = "reviews") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default", "resourceVersion": rv,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"hosts": [host], "http": [{"route": [{"destination": {"host": host}}]}]}}


def test_watch_events_reach_the_handler_and_move_the_resource_version() -> None:
    rec = Recorder()
    inf = _informer(rec)
    inf.handle_event({"type": "ADDED", "object": vs("a", "10")})
    inf.handle_event({"type": "MODIFIED", "object": vs("a", "11")})
    inf.handle_event({"type": "DELETED", "object": vs("a", "12")})
    assert rec.seen == [("upserted", "a"), ("upserted", "a"), ("deleted", "a")]
    assert inf.resource_version == "12"


def test_a_bookmark_moves_the_version_without_an_event() -> None:
    # Kubernetes API concepts, "Watch bookmarks": a BOOKMARK carries only metadata.resourceVersion.
    rec = Recorder()
    inf = _informer(rec)
    inf.handle_event({"type": "BOOKMARK", "object": {"kind": "VirtualService",
                                                     "metadata": {"resourceVersion": "99"}}})
    assert rec.seen == [] and inf.resource_version == "99" and inf.stats.bookmarks == 1


def test_an_expired_watch_is_gone_and_other_errors_are_api_errors() -> None:
    # The API server ends a watch from a compacted version with an ERROR event holding a 410 Status.
    inf = _informer(Recorder())
    with pytest.raises(Gone):
        inf.handle_event({"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired",
                                                      "message": "too old resource version: 5 (120)"}})
    err = api_error(403, {"code": 403, "reason": "Forbidden", "message": "no"})
    assert isinstance(err, KubeApiError) and not isinstance(err, Gone) and err.code == 403


def test_backoff_grows_and_is_capped() -> None:
    b = BackOff(initial_s=1.0, max_s=8.0)
    delays = [b.next_delay() for _ in range(6)]
    assert 0.5 <= delays[0] <= 1.0 and all(d <= 8.0 for d in delays) and delays[-1] >= 4.0
    b.reset()
    assert b.next_delay() <= 1.0


def test_store_follows_list_and_events_and_a_relist_drops_what_is_gone() -> None:
    store = KubeStore()
    objs = [dict(vs("a", "1"), kind="VirtualService", apiVersion="networking.istio.io/v1"),
            dict(vs("b", "2"), kind="VirtualService", apiVersion="networking.istio.io/v1")]
    store.listed(VS, copy.deepcopy(objs))
    assert {r.name for r in store.list("VirtualService")} == {"a", "b"}
    store.deleted(VS, copy.deepcopy(objs[0]))
    assert [r.name for r in store.list("VirtualService")] == ["b"]
    # a re-list (after 410 Gone) is the whole truth: "b" went away while nobody watched, "c" came
    store.listed(VS, [dict(vs("c", "9"), kind="VirtualService", apiVersion="networking.istio.io/v1")])
    assert [r.name for r in store.list("VirtualService")] == ["c"]
    assert store.get("VirtualService", "default", "c") is not None


def test_store_keeps_what_its_validator_refuses_out_and_says_why() -> None:
    store = KubeStore(validator=lambda r: ["spec.hosts: bad"] if r.name == "bad" else [])
    store.upserted(VS, dict(vs("bad", "3"), kind="VirtualService", apiVersion="networking.istio.io/v1"))
    assert store.list("VirtualService") == []
    [rej] = store.rejected()
    assert rej.key == ResourceKey("VirtualService", "default", "bad") and "spec.hosts: bad" in str(rej)


def pod(name: str, ip: str, ready: bool = True, labels: dict[str, str] | None = None,
        node: str = "n1") -> dict[str, Any]:
    return {"kind": "Pod", "metadata": {"name": name, "namespace": "default", "labels": labels or {"app": "web"}},
            "spec": {"nodeName": node, "serviceAccountName": "web-sa",
                     "containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_pods_are_workloads_with_node_locality_and_readiness() -> None:
    reg = KubeRegistry()
    node = {"metadata": {"name": "n1", "labels": {"topology.kubernetes.io/region": "us-east",
                                                  "topology.kubernetes.io/zone": "us-east-1a"}}}
    reg.listed(NODES, [node])
    reg.listed(PODS, [pod("web-1", "10.0.0.5"), pod("web-2", "10.0.0.6", ready=False),
                      {**pod("pending", ""), "status": {"phase": "Pending"}}])
    ws = {w.name: w for w in reg.workloads()}
    assert set(ws) == {"web-1", "web-2"}
    assert ws["web-1"].locality == "us-east/us-east-1a" and ws["web-1"].healthy
    assert not ws["web-2"].healthy and ws["web-1"].service_account == "web-sa"
    assert ws["web-1"].ports == {"http": 8080}
    assert node_locality({"metadata": {"labels": {}}}) == ""


def test_registry_publishes_a_change_only_when_workloads_change() -> None:
    reg = KubeRegistry()
    sub = reg.watch()
    reg.listed(PODS, [pod("web-1", "10.0.0.5")])
    rev = reg.revision
    reg.upserted(PODS, pod("web-1", "10.0.0.5"))  # same object again: nothing
    assert reg.revision == rev
    reg.deleted(PODS, pod("web-1", "10.0.0.5"))
    assert reg.revision == rev + 1 and reg.workloads() == ()
    sub.close()


def _svc(selector: dict[str, str] | None) -> Any:
    from sailmesh.api.parse import resource_from_dict

    spec: dict[str, Any] = {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    if selector:
        spec["selector"] = selector
    return resource_from_dict({"apiVersion": "v1", "kind": "Service",
                               "metadata": {"name": "web", "namespace": "default"}, "spec": spec})


def test_endpoints_of_a_service_without_selector_come_from_its_endpointslices() -> None:
    reg = KubeRegistry()
    sl = {"metadata": {"name": "web-abc", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
          "addressType": "IPv4", "ports": [{"name": "http", "port": 9090}],
          "endpoints": [{"addresses": ["192.0.2.10"], "conditions": {"ready": True}},
                        {"addresses": ["192.0.2.11"], "conditions": {"ready": False}}]}
    reg.listed(SLICES, [sl])
    index = build_index([_svc(None)], MeshDefaults())
    eps = endpoints.compute(index.records, reg.workloads())[("web.default.svc.cluster.local", 80)]
    assert [(e.address, e.port, e.healthy) for e in eps] == [("192.0.2.10", 9090, True), ("192.0.2.11", 9090, False)]


def test_pod_backed_endpoints_come_from_the_pod_through_the_selector() -> None:
    reg = KubeRegistry()
    reg.listed(PODS, [pod("web-1", "10.0.0.5")])
    sl = {"metadata": {"name": "web-x", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
          "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
          "endpoints": [{"addresses": ["10.0.0.5"], "targetRef": {"kind": "Pod", "name": "web-1"}}]}
    reg.listed(SLICES, [sl])  # names the pod: the pod is the workload, not a second one from the slice
    index = build_index([_svc({"app": "web"})], MeshDefaults())
    eps = endpoints.compute(index.records, reg.workloads())[("web.default.svc.cluster.local", 80)]
    assert [(e.address, e.port, e.workload) for e in eps] == [("10.0.0.5", 8080, "default/web-1")]


def test_istio_crds_are_read_at_v1_else_their_storage_version_and_others_are_ignored() -> None:
    crd = {"spec": {"group": "networking.istio.io", "scope": "Namespaced",
                    "names": {"plural": "virtualservices", "kind": "VirtualService"},
                    "versions": [{"name": "v1", "served": True, "storage": False},
                                 {"name": "v1beta1", "served": True, "storage": True}]}}
    assert istio_kinds(crd) == KubeResource("networking.istio.io", "v1", "virtualservices", "VirtualService")
    crd["spec"]["versions"] = [{"name": "v1alpha1", "served": True, "storage": True}]
    assert istio_kinds(crd) == KubeResource("networking.istio.io", "v1alpha1", "virtualservices", "VirtualService")
    assert istio_kinds({"spec": {"group": "example.com", "names": {"plural": "x", "kind": "X"},
                                 "versions": [{"name": "v1", "served": True, "storage": True}]}}) is None
    assert VS.path("default", "a") == "/apis/networking.istio.io/v1/namespaces/default/virtualservices/a"
    assert PODS.path() == "/api/v1/pods"


def test_kube_build_caches_outside_the_repo_and_reports_what_is_missing(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from sailmesh.testing import kube_build

    monkeypatch.setenv("SAILMESH_KUBE_CACHE", str(tmp_path))
    assert kube_build.cache_dir().parent == tmp_path
    assert kube_build.cached() is None and "not built" in kube_build.missing_reason()
    (kube_build.cache_dir()).mkdir(parents=True)
    (kube_build.cache_dir() / "build-error.txt").write_text("go: module k8s.io/x: not found")
    assert "module k8s.io/x: not found" in kube_build.missing_reason()
    gomod = ("replace (\n\tk8s.io/api => ./staging/src/k8s.io/api\n"
             "\tk8s.io/apiserver => ./staging/src/k8s.io/apiserver\n")
    assert kube_build.staging_modules(gomod + "\tk8s.io/x => k8s.io/x v1.0.0\n)") == ["k8s.io/api", "k8s.io/apiserver"]


def test_a_pod_with_a_subdomain_carries_its_dns_name_parts() -> None:
    """Kubernetes names a pod `<hostname>.<subdomain>...` when spec.subdomain is set (hostname: spec.hostname, else
    the pod name); the name table of its headless Service uses them (Istio's endpoint builder reads the same)."""
    reg = KubeRegistry()
    sts = pod("mysql-0", "10.0.0.7")
    sts["spec"] = {**sts["spec"], "subdomain": "mysql"}
    named = pod("db", "10.0.0.8")
    named["spec"] = {**named["spec"], "subdomain": "mysql", "hostname": "primary"}
    reg.listed(PODS, [sts, named, pod("web-1", "10.0.0.5")])
    ws = {w.name: (w.hostname, w.subdomain) for w in reg.workloads()}
    assert ws == {"mysql-0": ("mysql-0", "mysql"), "db": ("primary", "mysql"), "web-1": ("", "")}
