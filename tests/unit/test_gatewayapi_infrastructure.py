"""A Gateway's `spec.infrastructure` labels and annotations, as Istio's deployment controller applies them
(extractInfrastructureMetadata and its kube-gateway.yaml template): on the gateway's Deployment, Service,
ServiceAccount and pods (Kubernetes) and on the gateway process's labels (embedded mesh), keys under
`gateway.networking.k8s.io/` skipped, the Gateway's own labels/annotations when unset, Istio's own labels winning."""

from __future__ import annotations

import asyncio
from typing import Any

from sailmesh.api.parse import resource_from_dict
from sailmesh.generate import enforcement
from sailmesh.generate.gatewayapi.convert import infrastructure
from sailmesh.platform.gateways import GatewayDeployments, Wanted
from sailmesh.platform.kube.gatewaydeploy import gateway_objects
from sailmesh.webhook.inject import InjectionConfig
from tests.unit.test_platform_gateways import FakeSupervisor


def gw(infra: dict[str, Any] | None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"gatewayClassName": "istio", "listeners": [{"name": "http", "port": 80,
                                                                        "protocol": "HTTP"}]}
    if infra is not None:
        spec["infrastructure"] = infra
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "edge", "namespace": "web", "uid": "u-1", "labels": labels or {},
                         "annotations": {"from-metadata": "yes"}},
            "spec": spec}


INFRA = {"labels": {"team": "edge", "gateway.networking.k8s.io/gateway-name": "spoof"},
         "annotations": {"example.com/owner": "edge-team"}}


def test_infrastructure_metadata_as_istio_extracts_it() -> None:
    assert infrastructure(gw(INFRA), "labels") == {"team": "edge"}  # the gateway.networking.k8s.io/ key skipped
    assert infrastructure(gw(INFRA), "annotations") == {"example.com/owner": "edge-team"}
    # unset: the Gateway's own (PILOT_ENABLE_GATEWAY_API_COPY_LABELS_ANNOTATIONS)
    assert infrastructure(gw(None, {"app": "shop"}), "labels") == {"app": "shop"}
    assert infrastructure(gw(None), "annotations") == {"from-metadata": "yes"}


def test_kubernetes_objects_and_pods_carry_them() -> None:
    objs = {o["kind"]: o for o in gateway_objects(resource_from_dict(gw(INFRA)), "istio-system", InjectionConfig())}
    for o in objs.values():
        assert o["metadata"]["labels"]["team"] == "edge"
        assert o["metadata"]["labels"]["gateway.networking.k8s.io/gateway-name"] == "edge"
        assert o["metadata"]["annotations"]["example.com/owner"] == "edge-team"
    pod = objs["Deployment"]["spec"]["template"]
    assert pod["metadata"]["labels"]["team"] == "edge"
    assert pod["metadata"]["annotations"]["example.com/owner"] == "edge-team"
    [proxy] = pod["spec"]["containers"]
    assert "team=edge" in proxy["command"][proxy["command"].index("--labels") + 1].split(",")
    with_ip = {**gw(INFRA), "spec": {**gw(INFRA)["spec"], "addresses": [{"type": "IPAddress", "value": "10.1.2.3"}]}}
    objs = {o["kind"]: o for o in gateway_objects(resource_from_dict(with_ip), "istio-system", InjectionConfig())}
    assert objs["Service"]["spec"]["loadBalancerIP"] == "10.1.2.3"


def test_embedded_gateway_process_gets_the_labels_and_restarts_when_they_change() -> None:
    started: list[tuple[str, dict[str, str]]] = []
    retired: list[Any] = []

    async def spawn(ns: str, name: str, labels: dict[str, str], ip: str) -> str:
        started.append((ip, labels))
        return f"proc-{len(started)}"

    deps = GatewayDeployments(FakeSupervisor(), spawn, retired.append, "127.0.0.1", lambda: set(), ())
    asyncio.run(deps.reconcile({("web", "edge"): Wanted({"team": "edge"})}))
    assert started[0][1]["team"] == "edge" and started[0][1]["gateway.networking.k8s.io/gateway-name"] == "edge"
    asyncio.run(deps.reconcile({("web", "edge"): Wanted({"team": "edge"})}))
    assert len(started) == 1 and retired == []  # unchanged: left running
    asyncio.run(deps.reconcile({("web", "edge"): Wanted({"team": "core"})}))
    assert retired == ["proc-1"] and started[1][1]["team"] == "core"


def test_only_parameters_ref_and_embedded_annotations_are_reported() -> None:
    note = enforcement.not_enforced(resource_from_dict(gw({"labels": {"team": "edge"}})))
    assert note == []
    (note,) = enforcement.not_enforced(resource_from_dict(gw({**INFRA, "parametersRef": {
        "group": "", "kind": "ConfigMap", "name": "params"}})))
    assert "spec.infrastructure.parametersRef" in note and "spec.infrastructure.annotations (set on" in note
    # the HPA / PDB keys are enforced on Kubernetes (platform/kube/gatewaydeploy.py), not in the embedded mesh
    assert "no horizontalPodAutoscaler / podDisruptionBudget" in note and "on Kubernetes every key applies" in note


def test_one_ip_address_is_the_gateway_address() -> None:
    """Istio's IsManaged: one IPAddress is a managed Gateway whose Service gets it as loadBalancerIP; here the
    gateway process listens on it (a free loopback address), otherwise on the next free one (said)."""
    from sailmesh.generate.gatewayapi.addresses import requested_address

    assert requested_address({"addresses": [{"value": "127.0.0.77"}]}) == "127.0.0.77"
    assert requested_address({"addresses": [{"type": "Hostname", "value": "ingress"}]}) == ""
    started: list[str] = []

    async def spawn(ns: str, name: str, labels: dict[str, str], ip: str) -> str:
        started.append(ip)
        return ip

    sup = FakeSupervisor()
    deps = GatewayDeployments(sup, spawn, lambda _: None, "127.0.0.1", lambda: {"127.0.0.2"}, ())
    asyncio.run(deps.reconcile({("web", "a"): Wanted(address="127.0.0.77"), ("web", "b"): Wanted(address="10.9.9.9"),
                                ("web", "c"): Wanted(address="127.0.0.2")}))
    assert started == ["127.0.0.77", "127.0.0.3", "127.0.0.4"]
    assert sum("not a free loopback address" in line for line in sup.said) == 2
    assert enforcement.not_enforced(resource_from_dict({**gw(None), "spec": {
        **gw(None)["spec"], "addresses": [{"value": "127.0.0.77"}]}})) == []
