"""A Gateway's `spec.infrastructure.parametersRef`, Istio's customization of its automated deployment: a
ConfigMap of the Gateway's namespace whose `deployment`, `service` and `serviceAccount` keys are merged into the
generated objects as strategic merge patches, and whose `horizontalPodAutoscaler` / `podDisruptionBudget` keys add
those objects (Istio's kube-gateway template); a bad reference is the Gateway API's InvalidParameters (the Gateway
not Accepted, its deployment left alone); the embedded gateway process takes the pod template labels."""

from __future__ import annotations

import asyncio
import pathlib
from typing import Any

from sailmesh.api.parse import resource_from_dict
from sailmesh.api.resource import Resource, ResourceKey
from sailmesh.generate.gatewayapi.parameters import merge, overlays, pod_labels
from sailmesh.platform.gateways import GatewayDeployments
from sailmesh.platform.kube.gatewaydeploy import GatewayDeployer, gateway_objects
from sailmesh.webhook.inject import InjectionConfig
from tests.unit.test_gatewayapi_convert import run
from tests.unit.test_platform_gateways import FakeSupervisor

PARAMS = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "gw-options", "namespace": "infra"},
          "data": {"deployment": "spec:\n  replicas: 3\n  template:\n    metadata:\n      labels: {tier: edge}\n"
                                 "    spec:\n      containers:\n      - name: istio-proxy\n"
                                 "        resources: {requests: {cpu: 500m}}\n",
                   "service": "metadata:\n  annotations: {example.com/lb: internal}\nspec:\n  type: ClusterIP\n",
                   "serviceAccount": "metadata:\n  annotations: {example.com/role: gateway}\n",
                   "horizontalPodAutoscaler": "spec: {minReplicas: 2}\n"}}


def gateway(ref: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "infra", "uid": "u-1"},
            "spec": {"gatewayClassName": "istio", "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}],
                     "infrastructure": {"parametersRef": ref or {"group": "", "kind": "ConfigMap",
                                                                 "name": "gw-options"}}}}


def config_map(ns: str, name: str) -> Resource | None:
    return resource_from_dict(PARAMS) if (ns, name) == ("infra", "gw-options") else None


def test_strategic_merge_as_kubernetes_merges_what_overlays_touch() -> None:
    base = {"spec": {"containers": [{"name": "istio-proxy", "image": "proxy", "ports": [{"containerPort": 15021}]}],
                     "ports": [{"port": 80, "name": "http"}], "tolerations": [{"key": "a"}], "keep": 1, "drop": 2}}
    patch = {"spec": {"containers": [{"name": "istio-proxy", "ports": [{"containerPort": 15090}]},
                                     {"name": "extra", "image": "x"}],
                      "ports": [{"port": 80, "targetPort": 8080}], "tolerations": [{"key": "b"}], "drop": None}}
    out = merge(base, patch)
    assert out["spec"]["containers"] == [
        {"name": "istio-proxy", "image": "proxy", "ports": [{"containerPort": 15021}, {"containerPort": 15090}]},
        {"name": "extra", "image": "x"}]
    assert out["spec"]["ports"] == [{"port": 80, "name": "http", "targetPort": 8080}]  # merged by port
    assert out["spec"]["tolerations"] == [{"key": "b"}]  # no merge key: replaced
    assert "drop" not in out["spec"] and out["spec"]["keep"] == 1  # null removes
    assert base["spec"]["keep"] == 1 and "drop" in base["spec"]  # the base is not changed


def test_kubernetes_objects_get_the_overlays() -> None:
    found, bad = overlays(resource_from_dict(gateway()), config_map)
    assert bad == "" and set(found) == {"deployment", "service", "serviceAccount", "horizontalPodAutoscaler"}
    objs = {o["kind"]: o for o in gateway_objects(resource_from_dict(gateway()), "istio-system", InjectionConfig(),
                                                  found)}
    deployment = objs["Deployment"]
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["template"]["metadata"]["labels"]["tier"] == "edge"
    # Istio's own labels stay (the overlay adds to the pod template)
    assert deployment["spec"]["template"]["metadata"]["labels"]["gateway.networking.k8s.io/gateway-name"] == "gw"
    [proxy] = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "istio-proxy"]
    assert proxy["resources"]["requests"]["cpu"] == "500m" and proxy.get("image")  # merged into the container
    assert objs["Service"]["spec"]["type"] == "ClusterIP"
    assert objs["Service"]["metadata"]["annotations"]["example.com/lb"] == "internal"
    assert objs["Service"]["metadata"]["name"] == "gw-istio"
    assert objs["ServiceAccount"]["metadata"]["annotations"]["example.com/role"] == "gateway"
    assert pod_labels(found) == {"tier": "edge"}


def test_autoscaler_and_disruption_budget_only_when_their_keys_are_set() -> None:
    """Istio's kube-gateway template: an autoscaling/v2 HorizontalPodAutoscaler on the gateway's Deployment with
    maxReplicas 1 and a policy/v1 PodDisruptionBudget selecting its pods, both `<gateway>-istio` and owned by the
    Gateway, each created only when the ConfigMap has its key; the overlay is merged in."""
    gw = resource_from_dict(gateway())
    both = {"horizontalPodAutoscaler": {"spec": {"minReplicas": 2, "maxReplicas": 5}},
            "podDisruptionBudget": {"spec": {"minAvailable": 1}}}
    objs = {o["kind"]: o for o in gateway_objects(gw, "istio-system", InjectionConfig(), both)}
    hpa, pdb = objs["HorizontalPodAutoscaler"], objs["PodDisruptionBudget"]
    assert hpa["apiVersion"] == "autoscaling/v2" and pdb["apiVersion"] == "policy/v1"
    assert hpa["spec"] == {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gw-istio"},
                           "minReplicas": 2, "maxReplicas": 5}
    assert pdb["spec"] == {"selector": {"matchLabels": {"gateway.networking.k8s.io/gateway-name": "gw"}},
                           "minAvailable": 1}
    for obj in (hpa, pdb):
        meta = obj["metadata"]
        assert (meta["name"], meta["namespace"]) == ("gw-istio", "infra")
        assert meta["ownerReferences"][0]["kind"] == "Gateway"
        assert meta["labels"]["gateway.networking.k8s.io/gateway-name"] == "gw"
    assert "replicas" not in objs["Deployment"]["spec"]  # the autoscaler owns it (Istio's template sets none)
    # without the keys: neither object, and the Deployment keeps its replica count
    plain = {o["kind"]: o for o in gateway_objects(gw, "istio-system", InjectionConfig(), {})}
    assert set(plain) == {"ServiceAccount", "Deployment", "Service"}
    assert plain["Deployment"]["spec"]["replicas"] == 1
    only_pdb = [o["kind"] for o in gateway_objects(gw, "istio-system", InjectionConfig(), {"podDisruptionBudget": {}})]
    assert "PodDisruptionBudget" in only_pdb and "HorizontalPodAutoscaler" not in only_pdb


def test_the_deployer_applies_them_and_deletes_a_removed_one() -> None:
    """Server-side apply to autoscaling/v2 and policy/v1; a key no longer in the ConfigMap deletes its object."""
    sent: list[tuple[str, str]] = []

    class Conn:
        async def send_json(self, method: str, path: str, body: Any, *args: Any) -> dict[str, Any]:
            sent.append((method, path))
            return {}

        async def delete(self, path: str) -> None:
            sent.append(("DELETE", path))

    data = {"horizontalPodAutoscaler": "spec: {maxReplicas: 3}\n"}

    class Store:
        def list(self, kind: str) -> list[Any]:
            return [resource_from_dict(gateway())]

        def get(self, kind: str, ns: str, name: str) -> Any:
            if kind == "ConfigMap":
                return resource_from_dict({**PARAMS, "data": data})
            return object() if kind == "GatewayClass" else None

    deployer = GatewayDeployer(Conn(), Store(), "istio-system", InjectionConfig(), lambda: True)  # type: ignore[arg-type]
    deployer.controller_of = lambda name: "istio.io/gateway-controller"  # type: ignore[method-assign]
    asyncio.run(deployer.reconcile())
    assert ("PATCH", "/apis/autoscaling/v2/namespaces/infra/horizontalpodautoscalers/gw-istio") in sent
    assert ("DELETE", "/apis/policy/v1/namespaces/infra/poddisruptionbudgets/gw-istio") in sent
    sent.clear()
    data.pop("horizontalPodAutoscaler")
    data["podDisruptionBudget"] = "spec: {maxUnavailable: 1}\n"
    asyncio.run(deployer.reconcile())
    assert ("PATCH", "/apis/policy/v1/namespaces/infra/poddisruptionbudgets/gw-istio") in sent
    assert ("DELETE", "/apis/autoscaling/v2/namespaces/infra/horizontalpodautoscalers/gw-istio") in sent
    assert deployer.applies == 2


def test_a_refused_delete_does_not_fail_the_gateway() -> None:
    """A ClusterRole installed before these kinds may refuse the delete (403): the gateway's own objects are
    applied all the same, and not again and again."""
    from sailmesh.platform.kube.client import KubeApiError

    class Conn:
        async def send_json(self, *args: Any) -> dict[str, Any]:
            return {}

        async def delete(self, path: str) -> None:
            raise KubeApiError(403, "Forbidden", "poddisruptionbudgets is forbidden")

    class Store:
        def list(self, kind: str) -> list[Any]:
            return [resource_from_dict(gateway())]

        def get(self, kind: str, ns: str, name: str) -> Any:
            return resource_from_dict(PARAMS) if kind == "ConfigMap" else object() if kind == "GatewayClass" else None

    deployer = GatewayDeployer(Conn(), Store(), "istio-system", InjectionConfig(), lambda: True)  # type: ignore[arg-type]
    deployer.controller_of = lambda name: "istio.io/gateway-controller"  # type: ignore[method-assign]
    asyncio.run(deployer.reconcile())
    asyncio.run(deployer.reconcile())
    assert deployer.applies == 1


def test_bad_references_are_invalid_parameters() -> None:
    cases = {"missing": ({"group": "", "kind": "ConfigMap", "name": "nothere"}, "not found"),
             "kind": ({"group": "", "kind": "Secret", "name": "gw-options"}, "only ConfigMap")}
    for what, (ref, words) in cases.items():
        _, bad = overlays(resource_from_dict(gateway(ref)), config_map)
        assert words in bad, what
    broken = {**PARAMS, "data": {"deployment": "- a list"}}
    _, bad = overlays(resource_from_dict(gateway()), lambda ns, n: resource_from_dict(broken))
    assert "deployment is not a mapping" in bad
    out = run("""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: istio
  infrastructure: {parametersRef: {group: "", kind: ConfigMap, name: nothere}}
  listeners: [{name: http, port: 80, protocol: HTTP}]
""")
    accepted = {c["type"]: c for c in out.status[ResourceKey("KubernetesGateway", "infra", "gw")]["conditions"]}
    assert (accepted["Accepted"]["status"], accepted["Accepted"]["reason"]) == ("False", "InvalidParameters")


def test_the_deployer_leaves_a_gateway_with_bad_parameters_alone() -> None:
    class Store:
        def list(self, kind: str) -> list[Any]:
            return [resource_from_dict(gateway({"group": "", "kind": "ConfigMap", "name": "nothere"}))]

        def get(self, kind: str, ns: str, name: str) -> Any:
            return object() if kind == "GatewayClass" else None

    deployer = GatewayDeployer(None, Store(), "istio-system", InjectionConfig(), lambda: True)  # type: ignore[arg-type]
    deployer.controller_of = lambda name: "istio.io/gateway-controller"  # type: ignore[method-assign]
    asyncio.run(deployer.reconcile())
    assert deployer.applies == 0  # nothing applied (its connection is None: an apply would fail loudly)


def test_the_embedded_gateway_process_gets_the_pod_template_labels(tmp_path: pathlib.Path) -> None:
    item = {**gateway(), "status": {"conditions": []}}
    asked: list[dict[str, str]] = []

    class Resp:
        def __init__(self, body: dict[str, Any]) -> None:
            self.status, self.body = 200, body

        async def json(self) -> dict[str, Any]:
            return self.body

        async def __aenter__(self) -> Resp:
            return self

        async def __aexit__(self, *exc: object) -> None:
            return None

    class Session:
        def get(self, url: str, params: dict[str, str] | None = None, **kwargs: object) -> Resp:
            if params:
                asked.append(params)
                return Resp({"items": [PARAMS]})
            return Resp({"items": [item]})

    sup = FakeSupervisor()
    (tmp_path / "token").write_text("t")
    sup.api_token_file = str(tmp_path / "token")
    deps = GatewayDeployments(sup, None, lambda _: None, "127.0.0.1", lambda: (), ())  # type: ignore[arg-type]
    wanted = asyncio.run(deps.wanted(Session()))  # type: ignore[arg-type]
    assert wanted is not None and wanted[("infra", "gw")].labels == {"tier": "edge"}
    assert asked == [{"kind": "ConfigMap", "namespace": "infra", "name": "gw-options"}]
