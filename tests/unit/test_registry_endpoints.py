"""Endpoints: Service selectors over Bookinfo workloads, named targetPort, ServiceEntry endpoints and selectors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sailmesh.api.parse import load_file, parse_text
from sailmesh.api.resource import Resource
from sailmesh.registry import endpoints
from sailmesh.registry.model import Workload
from sailmesh.registry.services import build_index
from sailmesh.registry.workloads import all_workloads
from sailmesh.settings import MeshDefaults
from tests.unit.test_registry_services import conformance_dir

MESH = MeshDefaults()


def pods_of(deployment: Resource, first_ip: int) -> list[Workload]:
    """One Workload per replica of a Deployment, as the embedded platform would register them."""
    tpl: Mapping[str, Any] = deployment.spec["template"]
    ports = {
        str(p["name"]): int(p["containerPort"])
        for c in tpl["spec"]["containers"]
        for p in c.get("ports", [])
        if "name" in p
    }
    return [
        Workload(
            name=f"{deployment.name}-{i}",
            namespace=deployment.namespace,
            address=f"127.0.1.{first_ip + i}",
            labels=dict(tpl["metadata"]["labels"]),
            service_account=tpl["spec"].get("serviceAccountName", "default"),
            ports=ports,
            origin=f"LocalWorkload {deployment.namespace}/{deployment.name}",
        )
        for i in range(int(deployment.spec.get("replicas", 1)))
    ]


def parse(text: str) -> list[Resource]:
    r = parse_text(text)
    assert not r.errors, r.errors
    return r.resources


def test_bookinfo_endpoints() -> None:
    loaded = load_file(str(conformance_dir() / "bookinfo" / "platform-kube" / "bookinfo.yaml"))
    workloads: list[Workload] = []
    for i, d in enumerate(r for r in loaded.resources if r.kind == "Deployment"):
        workloads += pods_of(d, 10 * (i + 1))
    eps = endpoints.compute(build_index(loaded.resources, MESH).records, workloads)
    reviews = eps[("reviews.default.svc.cluster.local", 9080)]
    assert sorted(e.labels["version"] for e in reviews) == ["v1", "v2", "v3"]
    assert {e.port for e in reviews} == {9080} and {e.service_account for e in reviews} == {"bookinfo-reviews"}
    assert all(e.workload.startswith("default/reviews-v") and e.healthy for e in reviews)
    assert [e.workload for e in eps[("details.default.svc.cluster.local", 9080)]] == ["default/details-v1-0"]
    assert len(eps) == 4


def test_named_target_port_resolved_per_workload() -> None:
    [svc] = parse("""
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: web}]
""")
    a = Workload("web-a", "default", "127.0.2.1", {"app": "web"}, ports={"web": 8080})
    b = Workload("web-b", "default", "127.0.2.2", {"app": "web"}, ports={"web": 9090})
    c = Workload("web-c", "default", "127.0.2.3", {"app": "web"})  # no port named "web": not an endpoint
    other_ns = Workload("web-d", "other", "127.0.2.4", {"app": "web"}, ports={"web": 1})  # Service selects its ns
    eps = endpoints.compute(build_index([svc], MESH).records, [a, b, c, other_ns])
    assert [(e.address, e.port) for e in eps[("web.default.svc.cluster.local", 80)]] == [
        ("127.0.2.1", 8080),
        ("127.0.2.2", 9090),
    ]


SE_STATIC = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: default}
spec:
  hosts: [legacy.internal]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 80, name: http, protocol: HTTP, targetPort: 8000}
  - {number: 5432, name: tcp-db, protocol: TCP}
  endpoints:
  - {address: 10.1.0.1, labels: {version: a}, ports: {http: 8081}, weight: 3, locality: eu/west/1, network: n1}
  - {address: 10.1.0.2, serviceAccount: legacy-sa}
"""


def test_service_entry_static_inline_endpoints() -> None:
    eps = endpoints.compute(build_index(parse(SE_STATIC), MESH).records, [])
    http = eps[("legacy.internal", 80)]
    # Inline endpoint `ports` are keyed by service port name; else targetPort, else the port number (Istio).
    assert [(e.address, e.port, e.weight, e.locality, e.network) for e in http] == [
        ("10.1.0.1", 8081, 3, "eu/west/1", "n1"),
        ("10.1.0.2", 8000, 1, "", ""),
    ]
    assert dict(http[0].labels) == {"version": "a"} and http[1].service_account == "legacy-sa"
    assert [(e.address, e.port) for e in eps[("legacy.internal", 5432)]] == [("10.1.0.1", 5432), ("10.1.0.2", 5432)]


def test_service_entry_dns_without_endpoints_resolves_its_host() -> None:
    records = build_index(load_file(str(conformance_dir() / "bookinfo" / "egress-rule-google-apis.yaml")).resources,
                          MESH).records
    eps = endpoints.compute(records, [])
    assert [(e.address, e.port) for e in eps[("www.googleapis.com", 443)]] == [("www.googleapis.com", 443)]


def test_service_entry_workload_selector_picks_workload_entries_and_local_workloads() -> None:
    resources = parse("""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: mysql-vm, namespace: vm}
spec:
  hosts: [mysqldb.vm.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 3306, name: tcp, protocol: TCP, targetPort: 3307}]
  workloadSelector: {labels: {app: mysqldb}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: mysql-1, namespace: vm}
spec: {address: 10.2.0.1, labels: {app: mysqldb, version: v1}, serviceAccount: mysql, ports: {tcp: 13306}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: mysql-2, namespace: vm}
spec: {address: 10.2.0.2, labels: {app: mysqldb}, weight: 5, locality: us/east}
status:
  conditions: [{type: Healthy, status: "False"}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: other-app, namespace: vm}
spec: {address: 10.2.0.3, labels: {app: other}}
""")
    local = Workload("mysql-local-0", "vm", "127.0.3.1", {"app": "mysqldb"}, ports={"tcp": 1})
    workloads = all_workloads([local], resources)
    eps = endpoints.compute(build_index(resources, MESH).records, workloads)
    got = [(e.address, e.port, e.workload, e.weight, e.healthy) for e in eps[("mysqldb.vm.svc.cluster.local", 3306)]]
    assert got == [
        ("10.2.0.1", 13306, "vm/mysql-1", 1, True),  # WorkloadEntry ports map by service port name
        ("10.2.0.2", 3307, "vm/mysql-2", 5, False),  # else the targetPort; Healthy=False condition
        ("127.0.3.1", 3307, "vm/mysql-local-0", 1, True),  # a local workload: its names are container ports
    ]


def test_kube_service_selects_workload_entries() -> None:
    resources = parse("""
apiVersion: v1
kind: Service
metadata: {name: ratings}
spec: {selector: {app: ratings}, ports: [{name: http, port: 9080}]}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ratings-vm}
spec: {address: 10.3.0.1, labels: {app: ratings, version: vm}, serviceAccount: ratings-vm, ports: {http: 19080}}
""")
    eps = endpoints.compute(build_index(resources, MESH).records, all_workloads([], resources))
    [ep] = eps[("ratings.default.svc.cluster.local", 9080)]
    assert (ep.address, ep.port, ep.service_account, dict(ep.labels)) == (
        "10.3.0.1", 19080, "ratings-vm", {"app": "ratings", "version": "vm"})


def test_unvalidated_garbage_never_raises() -> None:
    # Stores may run without a validator: the registry must survive any shape of spec.
    import random

    from sailmesh.api.parse import resource_from_dict

    rnd = random.Random(3)
    values: list[Any] = [None, "x", "a,b", 0, -1, 70000, 9080, True, [], {}, ["a"], {"a": 1}, [{"x": 1}],
                         [{"port": "http", "number": "80", "targetPort": ""}], {"app": "web"}]
    fields = {
        "Service": ["ports", "selector", "clusterIP", "clusterIPs", "type", "externalName"],
        "ServiceEntry": ["hosts", "ports", "resolution", "location", "addresses", "exportTo", "endpoints",
                         "workloadSelector"],
        "WorkloadEntry": ["address", "labels", "ports", "weight", "serviceAccount", "locality", "network"],
    }
    for _ in range(300):
        docs = []
        for kind, names in fields.items():
            spec: Any = {n: rnd.choice(values) for n in names if rnd.random() < 0.7}
            if rnd.random() < 0.1:
                spec = rnd.choice(["str", [1, 2], 5])
            docs.append(resource_from_dict({"apiVersion": "v1", "kind": kind,
                                            "metadata": {"name": f"n{rnd.randrange(3)}"}, "spec": spec}))
        index = build_index(docs, MESH)
        endpoints.compute(index.records, all_workloads([], docs))
