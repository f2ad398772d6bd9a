"""The Bookinfo mesh manifests parse cleanly and describe Istio's bookinfo.yaml topology and routing samples."""

from __future__ import annotations

import importlib.util
import pathlib

from sailmesh.api.parse import load_paths
from sailmesh.api.resource import Resource

BOOKINFO = pathlib.Path(__file__).resolve().parents[2] / "sailmesh" / "samples" / "bookinfo"
SERVICES = ("details", "ratings", "reviews", "productpage")
DEPLOYMENTS = {
    "details-v1": ("details", "v1"),
    "ratings-v1": ("ratings", "v1"),
    "reviews-v1": ("reviews", "v1"),
    "reviews-v2": ("reviews", "v2"),
    "reviews-v3": ("reviews", "v3"),
    "productpage-v1": ("productpage", "v1"),
}


def load(folder: str) -> list[Resource]:
    result = load_paths([str(BOOKINFO / folder)])
    assert not result.errors, result.errors
    return result.resources


def by_kind(resources: list[Resource], kind: str) -> dict[str, Resource]:
    return {r.name: r for r in resources if r.kind == kind}


def test_mesh_has_services_accounts_and_workloads_only() -> None:
    resources = load("mesh")
    assert {r.kind for r in resources} == {"Service", "ServiceAccount", "LocalWorkload"}
    assert all(r.namespace == "default" for r in resources)


def test_services_match_bookinfo_yaml() -> None:
    services = by_kind(load("mesh"), "Service")
    assert set(services) == set(SERVICES)
    for name, svc in services.items():
        assert svc.api_version == "v1"
        assert dict(svc.labels) == {"app": name, "service": name}
        assert svc.spec["selector"] == {"app": name}
        assert svc.spec["ports"] == [{"port": 9080, "name": "http"}]


def test_service_accounts() -> None:
    accounts = by_kind(load("mesh"), "ServiceAccount")
    assert set(accounts) == {f"bookinfo-{s}" for s in SERVICES}
    assert all(dict(a.labels) == {"account": a.name.removeprefix("bookinfo-")} for a in accounts.values())


def test_one_local_workload_per_original_deployment() -> None:
    workloads = by_kind(load("mesh"), "LocalWorkload")
    assert set(workloads) == set(DEPLOYMENTS)
    for name, (app, version) in DEPLOYMENTS.items():
        wl = workloads[name]
        assert wl.api_version == "local.sailmesh.io/v1alpha1"
        assert dict(wl.labels) == {"app": app, "version": version}
        spec = wl.spec
        assert spec["command"] == ["python", "-m", f"sailmesh.samples.bookinfo.{app}"]
        assert importlib.util.find_spec(spec["command"][2]) is not None
        assert spec["serviceAccount"] == f"bookinfo-{app}"
        assert spec["ports"] == [{"name": "http", "containerPort": 9080, "protocol": "HTTP"}]
        assert spec["replicas"] == 1 and spec["sidecar"] is True


def test_reviews_versions_select_their_stars() -> None:
    """v1: no ratings call; v2: black stars; v3: red stars (the original images' build arguments)."""
    from sailmesh.samples.bookinfo.reviews import ReviewsConfig

    workloads = by_kind(load("mesh"), "LocalWorkload")
    expect = {"reviews-v1": (False, "black"), "reviews-v2": (True, "black"), "reviews-v3": (True, "red")}
    for name, (enabled, color) in expect.items():
        env = {str(k): str(v) for k, v in workloads[name].spec["env"].items()}
        config = ReviewsConfig.from_env(env)
        assert (config.ratings_enabled, config.star_color) == (enabled, color), name


def test_gateway_and_virtual_service() -> None:
    """Istio's bookinfo-gateway.yaml: ingressgateway on 8080 for any host; the app's paths to productpage:9080."""
    resources = load("networking/bookinfo-gateway.yaml")
    (gw,) = by_kind(resources, "Gateway").values()
    assert gw.name == "bookinfo-gateway" and gw.api_version == "networking.istio.io/v1"
    assert gw.spec["selector"] == {"istio": "ingressgateway"}
    assert gw.spec["servers"] == [{"port": {"number": 8080, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]
    (vs,) = by_kind(resources, "VirtualService").values()
    assert vs.name == "bookinfo" and vs.spec["hosts"] == ["*"] and vs.spec["gateways"] == ["bookinfo-gateway"]
    (http,) = vs.spec["http"]
    assert http["match"] == [
        {"uri": {"exact": "/productpage"}},
        {"uri": {"prefix": "/static"}},
        {"uri": {"exact": "/login"}},
        {"uri": {"exact": "/logout"}},
        {"uri": {"prefix": "/api/v1/products"}},
    ]
    assert http["route"] == [{"destination": {"host": "productpage", "port": {"number": 9080}}}]


def test_destination_rules_cover_every_workload_version() -> None:
    rules = by_kind(load("networking/destination-rule-all.yaml"), "DestinationRule")
    assert set(rules) == set(SERVICES)
    for name, rule in rules.items():
        assert rule.spec["host"] == name
        for subset in rule.spec["subsets"]:
            assert subset["labels"] == {"version": subset["name"]}
    for app, version in DEPLOYMENTS.values():
        assert version in {s["name"] for s in rules[app].spec["subsets"]}
    assert [s["name"] for s in rules["reviews"].spec["subsets"]] == ["v1", "v2", "v3"]


def test_networking_folder_loads_alone() -> None:
    kinds = sorted(r.kind for r in load("networking"))
    assert kinds == ["DestinationRule"] * 4 + ["Gateway", "VirtualService"]


def test_task_virtual_services_use_defined_subsets() -> None:
    """tasks/ holds Istio's request-routing, fault-injection and traffic-shifting VirtualServices; each file stands
    alone (applied one at a time), every destination names a subset of destination-rule-all.yaml, weights total 100."""
    rules = by_kind(load("networking/destination-rule-all.yaml"), "DestinationRule")
    subsets = {host: {s["name"] for s in rule.spec["subsets"]} for host, rule in rules.items()}
    files = sorted((BOOKINFO / "tasks").glob("*.yaml"))
    assert {f.name for f in files} >= {
        "virtual-service-all-v1.yaml",
        "virtual-service-reviews-test-v2.yaml",
        "virtual-service-ratings-test-delay.yaml",
        "virtual-service-ratings-test-abort.yaml",
        "virtual-service-reviews-50-v3.yaml",
        "virtual-service-reviews-v3.yaml",
    }
    for f in files:
        services = load(f"tasks/{f.name}")
        assert services and all(vs.kind == "VirtualService" for vs in services), f.name
        assert len({vs.name for vs in services}) == len(services), f.name
        for vs in services:
            assert vs.spec["hosts"] == [vs.name]
            for http in vs.spec["http"]:
                routes = http["route"]
                for r in routes:
                    assert r["destination"]["host"] == vs.name
                    assert r["destination"]["subset"] in subsets[vs.name], (f.name, r)
                if len(routes) > 1:
                    assert sum(r["weight"] for r in routes) == 100, f.name
    delay = load("tasks/virtual-service-ratings-test-delay.yaml")[0].spec["http"][0]
    assert delay["match"] == [{"headers": {"end-user": {"exact": "jason"}}}]
    assert delay["fault"] == {"delay": {"percentage": {"value": 100.0}, "fixedDelay": "7s"}}
